"""Tokenizing each repeated stretch of text between special tokens once (design §4): system prompts and tool schemas
that many rows share.

The Rust tokenizer cuts a text at its added tokens before it normalizes and pre-tokenizes anything, so a stretch
between two special tokens tokenizes the same alone as inside its row. A row whose long stretch (at least
`MIN_CHARS`) was seen before is encoded in pieces: that stretch's encoding from the cache, the text around it
encoded as usual, the pieces merged with their offsets moved on (`Encoding.merge`), which gives the ids, offsets and
`char_to_token` of the whole row's encoding. A stretch is cached on its second sighting (a stretch seen once costs a
hash), and a run whose first batches repeat no stretch stops looking. Tokenizers for which a stretch alone may
tokenize otherwise (an added token that strips the space beside it or matches only whole words; a pre-tokenizer
that marks only the first word of the text) are always encoded whole, as is any row whose pieces do not join up.

A tokenizer whose normalizer is one Unicode normal form alone (Qwen2's NFC) changes nothing in a text already in
that form, yet its pass over every character (with an alignment kept for each) costs about a tenth of the work. So
the texts already in the form (`unicodedata.is_normalized`: nearly all) are encoded by a copy of the tokenizer
without the normalizer (the same model, pre-tokenizer, post-processor and added tokens, shared, not copied), the
others by the tokenizer itself: the same ids and offsets.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

MIN_CHARS = 256  # shorter stretches cost more to look up and join than to tokenize again
_PROBE_BATCHES = 2  # a run that repeats no long stretch in its first batches stops looking
_MOST = 4096  # stretches cached (and twice as many remembered as seen once), then the memory starts again


class Segments:
    """`encode_batch` for the encoder: whole texts, or texts in pieces with their repeated stretches from a cache."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.pattern = _splitter(backend)
        self.cache: dict[str, Any] = {}
        self.seen: set[int] = set()
        self.batches = self.hits = 0
        self.form, self.bare = _without_normalizer(backend)

    def __getstate__(self) -> dict[str, Any]:
        """Sent to a worker process without what it has cached (each worker fills its own) or the copy without the
        normalizer (made again there, sharing the worker's tokenizer)."""
        return {**self.__dict__, "cache": {}, "seen": set(), "bare": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.form, self.bare = _without_normalizer(self.backend)

    def encode_batch(self, texts: list[str]) -> list[Any]:
        """Each text's encoding (`add_special_tokens=False`), equal to encoding it whole."""
        if self.pattern is None:
            return self._encode(texts)
        plans = [self._plan(t) for t in texts]
        self.batches += 1
        if not any(plans):
            if self.batches >= _PROBE_BATCHES and not self.hits:
                self.pattern = None  # nothing repeats here: stop looking
            return self._encode(texts)
        self.hits += 1
        new = [s for s in dict.fromkeys(s for plan in plans if plan for kind, s in plan if kind)
               if s not in self.cache]
        inputs = [t for t, plan in zip(texts, plans, strict=True) if not plan] + \
                 [s for plan in plans if plan for kind, s in plan if not kind] + new
        encoded = iter(self._encode(inputs))
        whole = [next(encoded) if not plan else None for plan in plans]
        pieces = [[(kind, s, None if kind else next(encoded)) for kind, s in plan] if plan else None for plan in plans]
        if len(self.cache) + len(new) > _MOST:
            self.cache.clear()
        for s in new:
            self.cache[s] = next(encoded)
        return [w if w is not None else self._merge(t, p) for t, w, p in zip(texts, whole, pieces, strict=True)]

    def _encode(self, texts: list[str]) -> list[Any]:
        """`encode_batch` of the texts, those already in the normalizer's form by the copy without it."""
        if self.bare is None:
            return self.backend.encode_batch(texts, add_special_tokens=False)
        normal = [unicodedata.is_normalized(self.form, t) for t in texts]
        if all(normal):
            return self.bare.encode_batch(texts, add_special_tokens=False)
        done = iter(self.bare.encode_batch([t for t, n in zip(texts, normal, strict=True) if n],
                                           add_special_tokens=False))
        rest = iter(self.backend.encode_batch([t for t, n in zip(texts, normal, strict=True) if not n],
                                              add_special_tokens=False))
        return [next(done) if n else next(rest) for n in normal]

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
