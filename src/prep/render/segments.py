"""Tokenizing each repeated stretch of text between special tokens once (design §4): system prompts and tool schemas
that many rows share.

The Rust tokenizer cuts a text at its added tokens before it normalizes and pre-tokenizes anything, so a stretch
between two special tokens tokenizes the same alone as inside its row. A row whose long stretch (at least
`MIN_CHARS`) was seen before is encoded in pieces: that stretch's encoding from the cache, the text around it
encoded as usual, the pieces merged with their offsets moved on (`Encoding.merge`), which gives the ids, offsets and
`char_to_token` of the whole row's encoding. A stretch is cached on its second sighting (a stretch seen once costs a
hash), and a run whose first batches repeat a stretch in fewer than one row in 20 stops looking (a look costs
every row a scan; a rare hit saves little). Tokenizers for which a stretch alone may
tokenize otherwise (an added token that strips the space beside it or matches only whole words; a pre-tokenizer
that marks only the first word of the text) are always encoded whole, as is any row whose pieces do not join up.

A tokenizer whose normalizer is one Unicode normal form alone (Qwen2's NFC) changes nothing in a text already in
that form, yet its pass over every character (with an alignment kept for each) costs about a tenth of the work. So
the texts already in the form (`unicodedata.is_normalized`: nearly all) are encoded by a copy of the tokenizer
without the normalizer (the same model, pre-tokenizer, post-processor and added tokens, shared, not copied), the
others by the tokenizer itself: the same ids and offsets.

A BPE model keeps the merges of at most 10,000 words it has seen and never evicts one, so a long run fills it early
and merges most later words again: the cache is made larger (`_BPE_CACHE_WORDS`). A BPE model told to merge even the
words its vocabulary holds whole (transformers 5's Qwen2Tokenizer: `ignore_merges` false) merges every word, where
one that ignores the merges looks a whole word up; the two give the same tokens for every text when the merges of
every vocabulary word give back that word, one token. That is checked once per tokenizer (its files' sha256, the
class it loads as), on a run's second batch (0.4 s for Qwen2's 151,643 words), and kept in the cache; a tokenizer
shown to merge its words back is then run with `ignore_merges` set (on the loaded tokenizer itself, whose ids it
does not change).

The tokenizer's offsets cost about a seventh of its work (a map of every byte of the text to its character), and
the encoder only asks where a few characters fall (`char_to_token` at each trained span's edges). A byte-level BPE
(Qwen2, Llama 3, SmolLM3: tokens are runs of the text's UTF-8 bytes, in order, each vocabulary token one character
per byte) tells that from its ids alone: each token's byte count, summed, gives where each token ends in the text's
bytes. So in a long run (a batch of `_FAST_TEXTS` texts or more), a byte-level tokenizer that adds, strips and
normalizes nothing (the copy without the normalizer, for texts in its form) encodes without offsets
(`encode_batch_fast`), and each text's tokens are `Tokens`: its ids, where they end, and `char_to_token` as the
tokenizer's offsets answer it. A text whose token bytes do not add up to its own is encoded again with offsets.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import unicodedata
from itertools import chain
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from prep.files.atomic import replaced
from prep.files.hashing import cache_path, read_cache, write_cache

MIN_CHARS = 256  # shorter stretches cost more to look up and join than to tokenize again
_PROBE_BATCHES = 2  # a run whose first batches repeat few long stretches stops looking
_FEW = 20  # few: fewer than one row in this many (a row's look costs more than a rare hit saves)
_MOST = 4096  # stretches cached (and twice as many remembered as seen once), then the memory starts again
_BPE_CACHE_WORDS = 1 << 17  # words whose merges a BPE model keeps (tokenizers' default: 10,000)
_MERGES_PROOF = 1  # version of the kept proof that a vocabulary's words merge back to themselves
_WIDTHS_VERSION = 1  # version of the kept token widths
_FAST_TEXTS = 256  # a batch at least this long turns on encoding without offsets (a one-row run never pays its set-up)


class _Call(NamedTuple):
    """One `encode_batch_fast` call: its tokenizer, texts and encodings, not yet read into `Tokens`."""

    tokenizer: Any
    texts: list[str]
    encodings: list[Any]


class _Later(NamedTuple):
    """A text's place in its `_Call`, until `Segments.finish` makes its `Tokens`."""

    call: _Call
    index: int


def _later(tokenizer: Any, texts: list[str]) -> list[_Later]:
    call = _Call(tokenizer, texts, tokenizer.encode_batch_fast(texts, add_special_tokens=False))
    return [_Later(call, k) for k in range(len(texts))]


class Tokens:
    """A text's tokens from a byte-level BPE, without the tokenizer's offsets: the ids, and where they lie among
    their `encode_batch_fast` call's: `starts`, shared by the call's texts, is where each of its tokens starts in
    their UTF-8, one text after the other (from 0, the total last); this text's are tokens `lo:lo + len(ids)`, its
    bytes from `base`. `flat` is the call's ids in one array, as `starts` is laid out."""

    __slots__ = ("base", "flat", "ids", "lo", "starts", "text")

    def __init__(self, ids: list[int], flat: np.ndarray, starts: np.ndarray, lo: int, base: int, text: str) -> None:
        self.ids, self.flat, self.starts, self.lo, self.base, self.text = ids, flat, starts, lo, base, text

    def __len__(self) -> int:
        return len(self.ids)

    def bytes_at(self, pos: int) -> int:
        """Where the text's character `pos` starts in its run's bytes."""
        text = self.text
        return self.base + (pos if text.isascii() else len(text[:pos].encode("utf-8")))

    def char_to_token(self, pos: int) -> int | None:
        """The token holding the character's first byte, as `Encoding.char_to_token` answers (a character whose bytes
        two tokens share belongs to the first); None past the end."""
        if not 0 <= pos < len(self.text):
            return None
        return int(self.starts.searchsorted(self.bytes_at(pos), side="right")) - 1 - self.lo


class Segments:
    """`encode_batch` for the encoder: whole texts, or texts in pieces with their repeated stretches from a cache."""

    def __init__(self, backend: Any, key: str | None = None) -> None:
        """`key` names the tokenizer's files (`Tokenizer.files_key`): with it, a BPE model that merges whole
        vocabulary words may be shown not to need to (see the module's docstring)."""
        self.backend = backend
        self.pattern = _splitter(backend)
        self.cache: dict[str, Any] = {}
        self.seen: set[int] = set()
        self.batches = self.hits = self.looked = 0  # batches encoded, rows with a repeated stretch, rows looked at
        self.form, self.bare = _without_normalizer(backend)
        # byte-level and adding, stripping and normalizing nothing (the copy without the normalizer, when there is one)
        self.byte_level = _byte_level(backend) and (self.bare is not None or backend.normalizer is None)
        self.widths: np.ndarray | None = None  # each token's length in bytes, once encoding without offsets is on
        self.files = key
        self.key = key if _merges_words(backend.model) else None  # None: nothing (more) to show
        _larger_cache(backend.model)
        kept = read_cache(self._proof()) if self.key is not None else None
        if kept is not None:
            self._look_up_words(kept)

    def __getstate__(self) -> dict[str, Any]:
        """Sent to a worker process without what it has cached (each worker fills its own) or the copy without the
        normalizer (made again there, sharing the worker's tokenizer)."""
        return {**self.__dict__, "cache": {}, "seen": set(), "bare": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.form, self.bare = _without_normalizer(self.backend)
        _larger_cache(self.backend.model)  # a model comes out of its JSON with the default cache

    def encode_batch(self, texts: list[str]) -> list[Any]:
        """Each text's encoding (`add_special_tokens=False`), equal to encoding it whole."""
        return self.finish(self.start(texts))

    def finish(self, encoded: list[Any]) -> list[Any]:
        """`start`'s encodings with those made without offsets read into `Tokens` (Python work: a pipeline does it
        in another thread, while the tokenizer encodes the next batch)."""
        calls = {id(e.call): e.call for e in encoded if type(e) is _Later}
        if not calls:
            return encoded
        made = {key: self._tokens(*call) for key, call in calls.items()}
        return [made[id(e.call)][e.index] if type(e) is _Later else e for e in encoded]

    def start(self, texts: list[str]) -> list[Any]:
        """The Rust half of `encode_batch`: each text's encoding, or a `_Later` for `finish`."""
        self.batches += 1
        if self.key is not None and self.batches == _PROBE_BATCHES:  # a long run: worth the check
            kept = _merged_back(self.backend)
            write_cache(self._proof(), kept)
            self._look_up_words(kept)
        if self.byte_level and self.widths is None and len(texts) >= _FAST_TEXTS:
            self.widths = self._widths()
            self.byte_level = self.widths is not None
        if self.pattern is None:
            return self._encode(texts)
        plans = [self._plan(t) for t in texts]
        self.looked += len(texts)
        self.hits += len(texts) - plans.count(None)
        if self.batches >= _PROBE_BATCHES and self.hits * _FEW < self.looked:
            self.pattern = None  # (next batch on) little repeats here: stop looking
        if not any(plans):
            return self._encode(texts)
        new = [s for s in dict.fromkeys(s for plan in plans if plan for kind, s in plan if kind)
               if s not in self.cache]
        whole_texts = iter(self._encode([t for t, plan in zip(texts, plans, strict=True) if not plan]))
        whole = [next(whole_texts) if not plan else None for plan in plans]
        # pieces are joined by their offsets (Encoding.merge)
        encoded = iter(self._encode([s for plan in plans if plan for kind, s in plan if not kind] + new, offsets=True))
        pieces = [[(kind, s, None if kind else next(encoded)) for kind, s in plan] if plan else None for plan in plans]
        if len(self.cache) + len(new) > _MOST:
            self.cache.clear()
        for s in new:
            self.cache[s] = next(encoded)
        return [w if w is not None else self._merge(t, p) for t, w, p in zip(texts, whole, pieces, strict=True)]

    def _proof(self) -> Path:
        return cache_path("merges", f"{self.key}-{_MERGES_PROOF}.json")

    def _widths(self) -> np.ndarray | None:
        """`_token_widths`, kept in the cache per tokenizer (its files, and its added tokens as loaded): reading the
        vocabulary costs a worker a tenth of a second or more at its first batch."""
        if self.files is None:
            return _token_widths(self.backend)
        added = hashlib.sha256(repr(_described(self.backend.get_added_tokens_decoder())).encode()).hexdigest()[:16]
        path = cache_path("widths", f"{self.files}-{added}-{_WIDTHS_VERSION}.npy")
        try:
            kept = np.load(path)
            return kept if len(kept) else None  # empty: not in the byte alphabet
        except (OSError, ValueError, EOFError):
            pass
        widths = _token_widths(self.backend)
        with contextlib.suppress(OSError):  # a cache that cannot be written only costs the next run time
            path.parent.mkdir(parents=True, exist_ok=True)
            with replaced(path) as new, new.open("wb") as f:
                np.save(f, widths if widths is not None else np.zeros(0, dtype=np.int64))
        return widths

    def _look_up_words(self, merged_back: bool) -> None:
        """Whole vocabulary words looked up, not merged, when that was shown to give the same tokens."""
        if merged_back is True:
            self.backend.model.ignore_merges = True
        self.key = None

    def _encode(self, texts: list[str], offsets: bool = False) -> list[Any]:
        """Each text's encoding, or its `Tokens` once encoding without offsets is on (unless `offsets`); those
        already in the normalizer's form by the copy without it."""
        fast = self.widths is not None and not offsets

        def encode(tokenizer: Any, some: list[str]) -> list[Any]:
            return _later(tokenizer, some) if fast else tokenizer.encode_batch(some, add_special_tokens=False)

        if self.bare is None:
            return encode(self.backend, texts)
        normal = [unicodedata.is_normalized(self.form, t) for t in texts]
        if all(normal):
            return encode(self.bare, texts)
        done = iter(encode(self.bare, [t for t, n in zip(texts, normal, strict=True) if n]))
        rest = iter(self.backend.encode_batch([t for t, n in zip(texts, normal, strict=True) if not n],
                                              add_special_tokens=False))
        return [next(done) if n else next(rest) for n in normal]

    def _tokens(self, tokenizer: Any, texts: list[str], encodings: list[Any]) -> list[Any]:
        """The texts' encodings without offsets as `Tokens`; a text whose tokens' bytes do not add up to its own
        (never seen) is encoded with the tokenizer's offsets instead."""
        assert self.widths is not None
        ids = [e.ids for e in encodings]
        flat = np.fromiter(chain.from_iterable(ids), dtype=np.int32, count=sum(map(len, ids)))
        starts = np.zeros(len(flat) + 1, dtype=np.int64)
        np.cumsum(self.widths[flat], out=starts[1:])
        lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        his = np.cumsum(lengths)  # each text's tokens: los[i]:his[i] of the run
        los = his - lengths
        out: list[Any] = []
        for text, row, lo, base, top in zip(texts, ids, los.tolist(), starts[los].tolist(), starts[his].tolist(),
                                           strict=True):
            if top - base == (len(text) if text.isascii() else len(text.encode("utf-8"))):
                out.append(Tokens(row, flat, starts, lo, base, text))
            else:
                out.append(tokenizer.encode(text, add_special_tokens=False))
        return out

    def _plan(self, text: str) -> list[tuple[bool, str]] | None:
        """The row as pieces, (True, stretch) for a cached or repeated stretch and (False, text) between them;
        None to encode it whole."""
        assert self.pattern is not None
        plan: list[tuple[bool, str]] = []
        done = start = 0
        for m in self.pattern.finditer(text):
            if m.start() - start >= MIN_CHARS:
                done = self._piece(text, start, m.start(), done, plan)
            start = m.end()
        if len(text) - start >= MIN_CHARS:
            done = self._piece(text, start, len(text), done, plan)
        if not plan:
            return None
        if done < len(text):
            plan.append((False, text[done:]))
        return plan

    def _piece(self, text: str, a: int, b: int, done: int, plan: list[tuple[bool, str]]) -> int:
        """Add the stretch text[a:b] to the plan when it repeats (and the text before it); remember it otherwise."""
        stretch = text[a:b]
        if stretch not in self.cache:
            key = hash(stretch)
            if key not in self.seen:
                if len(self.seen) >= 2 * _MOST:
                    self.seen.clear()
                self.seen.add(key)
                return done
        if a > done:
            plan.append((False, text[done:a]))
        plan.append((True, stretch))
        return b

    def _merge(self, text: str, pieces: list[tuple[bool, str, Any]]) -> Any:
        """The pieces' encodings as one, offsets moved on piece by piece; the text encoded whole when a piece's
        tokens do not end where its text does (then the offsets would not join up)."""
        from tokenizers import Encoding  # noqa: PLC0415 - the Rust library is loaded with the tokenizer

        encodings = [e if e is not None else self.cache[s] for kind, s, e in pieces]
        if any(not e.offsets or e.offsets[-1][1] != len(s) for (_, s, _), e in zip(pieces, encodings, strict=True)):
            return self.backend.encode(text, add_special_tokens=False)
        merged = Encoding.merge(encodings, growing_offsets=True)
        merged.set_sequence_id(0)  # as a single text's encoding: char_to_token reads sequence 0
        return merged


def _byte_level(backend: Any) -> bool:
    """Whether the tokenizer's tokens are runs of the text's bytes, in order, with nothing added, stripped or moved:
    byte-level BPE, its pre-tokenizer only splits (Split keeping every piece, ByteLevel adding no prefix space),
    its post-processor keeps the offsets whole, and its added tokens match their content as written."""
    if type(backend.model).__name__ != "BPE" or backend.pre_tokenizer is None:
        return False
    pre = json.loads(backend.pre_tokenizer.__getstate__())
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    if not any(step.get("type") == "ByteLevel" for step in steps) or any(
            step.get("type") not in ("Split", "ByteLevel", "Digits", "Punctuation") or step.get("add_prefix_space")
            or str(step.get("behavior", "Isolated")).lower() == "removed" for step in steps):
        return False
    post = backend.post_processor
    if post is not None and b'"trim_offsets":true' in post.__getstate__():
        return False
    return not any(t.lstrip or t.rstrip or t.single_word or t.normalized
                   for t in backend.get_added_tokens_decoder().values())


def _token_widths(backend: Any) -> np.ndarray | None:
    """Each token's length in bytes (a vocabulary token is one byte-level character per byte; an added token its
    content's UTF-8), or None when a vocabulary token holds a character outside the byte-level alphabet."""
    vocab = backend.get_vocab(with_added_tokens=False)
    if not set("".join(vocab)) <= _BYTE_ALPHABET:
        return None
    widths = np.zeros(backend.get_vocab_size(with_added_tokens=True), dtype=np.int64)
    widths[np.fromiter(vocab.values(), dtype=np.int64, count=len(vocab))] = \
        np.fromiter(map(len, vocab), dtype=np.int64, count=len(vocab))
    for index, token in backend.get_added_tokens_decoder().items():
        widths[index] = len(token.content.encode("utf-8"))
    return widths


def _byte_alphabet() -> frozenset[str]:
    """The 256 characters byte-level BPE writes bytes as (GPT-2's table: printable bytes as themselves, the rest
    moved past 255)."""
    kept = [*range(ord("!"), ord("~") + 1), *range(ord("\u00a1"), ord("\u00ac") + 1),
            *range(ord("\u00ae"), ord("\u00ff") + 1)]
    moved = [256 + n for n in range(256 - len(kept))]
    return frozenset(map(chr, kept + moved))


_BYTE_ALPHABET = _byte_alphabet()


def _larger_cache(model: Any) -> None:
    if type(model).__name__ == "BPE" and hasattr(model, "_resize_cache"):
        model._resize_cache(_BPE_CACHE_WORDS)


def _merges_words(model: Any) -> bool:
    """Whether a model is BPE merging every word, even those its vocabulary holds whole (and drops no merges at
    random)."""
    return type(model).__name__ == "BPE" and not model.ignore_merges and not model.dropout


def _merged_back(backend: Any) -> bool:
    """Whether the merges of every word of the BPE model's vocabulary give back that word, one token: then looking
    whole words up gives the same tokens as merging them."""
    tokenize = backend.model.tokenize
    for word, index in backend.get_vocab(with_added_tokens=False).items():
        tokens = tokenize(word)
        if len(tokens) != 1 or tokens[0].id != index:
            return False
    return True


def _splitter(backend: Any) -> re.Pattern[str] | None:
    """The pattern of the added tokens the tokenizer cuts texts at, or None when a stretch between them might
    tokenize otherwise alone (see the module's docstring)."""
    added = list(backend.get_added_tokens_decoder().values())
    if not added or any(t.lstrip or t.rstrip or t.single_word or t.normalized for t in added):
        return None
    pre = backend.pre_tokenizer  # its JSON, compact, at any depth of a Sequence
    if pre is not None and b'"prepend_scheme":"first"' in pre.__getstate__():
        return None
    return re.compile("|".join(re.escape(t.content) for t in sorted(added, key=lambda t: -len(t.content))))


_FORMS = frozenset({"NFC", "NFD", "NFKC", "NFKD"})  # the normalizer classes that are a Unicode normal form, by name


def _without_normalizer(backend: Any) -> tuple[str, Any | None]:
    """The Unicode normal form the tokenizer's normalizer applies and a copy of the tokenizer without it (sharing its
    model, pre-tokenizer, decoder and post-processor, with the same added tokens), or ("", None) when the normalizer
    is anything else (or there is none), an added token it normalizes is not in the form (the tokenizer matches the
    token's normalized content, the copy would match its content as written) or the copy's added tokens do not come
    out the same."""
    form = type(backend.normalizer).__name__
    if form not in _FORMS or backend.padding or backend.truncation:
        return "", None
    added = sorted(backend.get_added_tokens_decoder().items())
    if any(t.normalized and not unicodedata.is_normalized(form, t.content) for _, t in added):
        return "", None
    from tokenizers import AddedToken, Tokenizer  # noqa: PLC0415 - the Rust library is loaded with the tokenizer

    bare = Tokenizer(backend.model)
    for part in ("pre_tokenizer", "decoder", "post_processor"):
        if getattr(backend, part) is not None:
            setattr(bare, part, getattr(backend, part))
    bare.encode_special_tokens = backend.encode_special_tokens
    for _, t in added:
        token = AddedToken(t.content, single_word=t.single_word, lstrip=t.lstrip, rstrip=t.rstrip,
                           normalized=t.normalized, special=t.special)
        (bare.add_special_tokens if t.special else bare.add_tokens)([token])
    if _described(bare.get_added_tokens_decoder()) != _described(dict(added)):
        return "", None
    return form, bare


def _described(added: dict[int, Any]) -> list[tuple[Any, ...]]:
    return [(i, t.content, t.single_word, t.lstrip, t.rstrip, t.normalized, t.special) for i, t in sorted(added.items())]
