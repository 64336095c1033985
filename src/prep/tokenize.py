"""`prep tokenize`: canonical records -> token ids and labels in unpacked shards (DESIGN §4, §5).

Each row's text is rendered once (templates.py) and tokenized once, whole, with offsets, in
batches on the Rust side (`add_special_tokens=False`, as `apply_chat_template` does); labels
come from the rendered spans: a token is trained when its characters overlap a trained span.
Labels are aligned with `input_ids` (not shifted) and -100 means no loss.

Too long rows (`--max-len`): `drop` rejects them (`too_long`); `truncate` cuts at the end and
closes the cut answer with the template's end-of-turn token, trained (or, when the cut falls
outside an answer, ends at the last whole answer); `turns` drops whole trailing turns while at
least one trained turn remains. Cut rows are written and kept in --rejects as altered.

With `workers > 1` a process pool tokenizes batches while the parent reads and writes; batches
come back in order, so the shards are byte-identical to a one-worker run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import hashlib
import json
import multiprocessing
import os
import queue
import re
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from prep.convert import Inputs, read_inputs
from prep.files import sha256_file
from prep.findings import Batch, Finding, PrepError, RowError, Source, Tally, row_error
from prep.records import Record, kind_of
from prep.shards import KINDS, SCHEMAS, ShardWriter
from prep.templates import (
    OVERFLOW,
    AnyTemplate,
    JinjaTemplate,
    Rendered,
    Span,
    Specials,
    document,
    get_template,
    nothing_to_train,
    render_pair,
    resolve_train_on,
    text_only,
)

KIND_OF_RECORD = {"chat": "sft", "text": "pretrain", "preference": "dpo", "feedback": "kto"}
ACCEPTS = {"sft": ("chat", "text"), "pretrain": ("text",), "dpo": ("preference",), "kto": ("feedback",)}
# The files that decide how a folder tokenizes (never model weights), hashed into the fingerprint.
_TOKENIZER_FILES = re.compile(r"^(tokenizer.*|special_tokens_map\.json|added_tokens\.json|vocab\..*|merges\.txt|"
                              r".*\.tiktoken|chat_template.*|spiece\.model)$")


@dataclass
class Tokenizer:
    """A loaded tokenizer: transformers' own (`hf`, for its chat template and special tokens) and
    its Rust backend, which does the batched tokenizing and can be handed to worker processes."""

    path: Path
    hf: Any
    backend: Any
    specials: Specials

    @property
    def name(self) -> str:
        return self.path.name

    def token_id(self, token: str | None) -> int | None:
        return None if token is None else self.backend.token_to_id(token)

    def jinja(self) -> JinjaTemplate:
        """The tokenizer's own chat template (tool-use variant when it has one)."""
        try:
            source = self.hf.get_chat_template()
        except ValueError:
            raise PrepError(f"the tokenizer at {self.path} has no chat template; choose one with --template "
                            "(see `prep template --list`)") from None
        tool_source = self.hf.get_chat_template(tools=[])
        added = [t.content for t in self.hf.added_tokens_decoder.values()]
        return JinjaTemplate(source, tool_source, dict(self.hf.special_tokens_map), self.name, added)

    @property
    def has_chat_template(self) -> bool:
        return bool(self.hf.chat_template)

    def fingerprint(self) -> dict[str, Any]:
        return fingerprint(self.hf, self.path)


def fingerprint(tokenizer: Any, folder: Path | None = None) -> dict[str, Any]:
    """What shards record about a (transformers) tokenizer so a trainer can refuse another one: its name
    and folder, the sha256 of its files, the sha256 of its vocabulary (token -> id, added tokens included:
    what the ids in the shards mean), the vocabulary size and the special token ids."""
    if folder is None:
        try:
            folder = _tokenizer_folder(str(tokenizer.name_or_path))
        except PrepError:
            folder = None
    files = {p.name: sha256_file(p) for p in sorted(folder.iterdir())
             if p.is_file() and _TOKENIZER_FILES.match(p.name)} if folder else {}
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    return {
        "name": folder.name if folder else str(tokenizer.name_or_path),
        "path": str(folder) if folder else None,
        "sha256": hashlib.sha256("".join(f"{n}\0{h}\n" for n, h in files.items()).encode()).hexdigest(),
        "files": files,
        "vocab_sha256": hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode()).hexdigest(),
        "vocab_size": len(tokenizer),
        "special_ids": {k: getattr(tokenizer, f"{k}_token_id") for k in ("bos", "eos", "pad", "unk")},
        "class": type(tokenizer).__name__,
    }


def same_tokenizer(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Two fingerprints name the same tokenizer for training purposes: the same files, or the same
    vocabulary and special ids (the same tokenizer saved again by another library version)."""
    if a.get("sha256") and a.get("sha256") == b.get("sha256") and a.get("files"):
        return True
    return (a.get("vocab_sha256") is not None and a.get("vocab_sha256") == b.get("vocab_sha256")
            and a.get("vocab_size") == b.get("vocab_size") and a.get("special_ids") == b.get("special_ids"))


def describe_tokenizer(fp: dict[str, Any]) -> str:
    """A fingerprint in a few words, for messages that name two tokenizers that differ."""
    return (f"{fp.get('name', '?')} (sha256 {str(fp.get('sha256'))[:12]}, vocab {fp.get('vocab_size')}, "
            f"special ids {fp.get('special_ids')})")


def load_tokenizer(path: str) -> Tokenizer:
    """A tokenizer from a local folder (or a hub id already in the local cache; nothing is downloaded)."""
    folder = _tokenizer_folder(path)
    try:
        from transformers import AutoTokenizer

        hf = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as e:  # noqa: BLE001 - transformers raises many kinds for a folder it cannot read
        raise PrepError(f"cannot load the tokenizer in {folder}: {e}") from None
    backend = getattr(hf, "_tokenizer", None)
    if backend is None or not hasattr(backend, "encode_batch"):
        raise PrepError(f"{folder}: prep needs a fast (Rust) tokenizer (tokenizer.json); this one is "
                        f"{type(hf).__name__}")
    bos_id = hf.bos_token_id
    adds_bos = bos_id is not None and hf("a")["input_ids"][:1] == [bos_id]
    return Tokenizer(folder, hf, backend, Specials(hf.bos_token, hf.eos_token, adds_bos))


def _tokenizer_folder(path: str) -> Path:
    folder = Path(path).expanduser()
    if folder.is_dir():
        return folder.resolve()
    if folder.exists():
        raise PrepError(f"--tokenizer {path}: give the folder that holds tokenizer.json, not a file")
    if path.count("/") == 1 and not path.startswith((".", "/", "~")):
        try:
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(path, local_files_only=True))
        except Exception:  # noqa: BLE001 - any failure means: not in the local cache
            pass
    raise PrepError(f"tokenizer {path!r} not found: give a local folder with tokenizer.json and "
                    "tokenizer_config.json (prep never downloads)")


@dataclass(frozen=True)
class Settings:
    kind: str
    train_on: str = "auto"
    max_len: int | None = None
    overflow: str = "drop"


@dataclass(slots=True)
class _Row:
    """One output row before it becomes Arrow: id lists and, for sft/pretrain, trained token ranges."""

    parts: list[list[int]]
    ranges: list[tuple[int, int]] = field(default_factory=list)
    label: bool | None = None


_Prepared = tuple[Batch[str], list[tuple[Record, Source, Any, list[str]]]]


class Encoder:
    """Record batches -> shard rows: everything a worker process needs, and nothing it has to import."""

    def __init__(self, backend: Any, template: AnyTemplate | None, specials: Specials, settings: Settings) -> None:
        self.backend, self.template, self.specials, self.settings = backend, template, specials, settings
        self.eos_id = self._single_token(specials.eos, "EOS") if specials.eos else None
        self.eot_id = self._single_token(template.eot, f"end-of-turn token of template {template.name}") \
            if template else self.eos_id
        if settings.kind == "pretrain" and self.eos_id is None:
            raise PrepError("pretraining text ends with the tokenizer's EOS token, and this tokenizer has none")
        self.schema = SCHEMAS[settings.kind]
        self.train_on = resolve_train_on(settings.train_on, "chat")

    def _single_token(self, text: str, what: str) -> int:
        ids = self.backend.encode(text, add_special_tokens=False).ids
        if len(ids) != 1:
            raise PrepError(f"the {what} {text!r} is not one token of this tokenizer (it becomes {len(ids)}): "
                            "choose the template that matches the model")
        return ids[0]

    def __call__(self, batch: Batch[Record]) -> tuple[Batch[str], pa.Table]:
        """Tokenize a batch: its rows as an Arrow table and a batch of their ids, sources and rejects."""
        return self.encode(self.prepare(batch))

    def prepare(self, batch: Batch[Record]) -> _Prepared:
        """The Python half: render every record (a row that cannot be rendered is rejected here)."""
        out: Batch[str] = batch.carry()
        jobs: list[tuple[Record, Source, Any, list[str]]] = []
        for record, source in zip(batch.items, batch.sources, strict=True):
            try:
                plan, texts = self._render(record)
            except RowError as e:
                out.reject(source, e.findings, record)
                continue
            jobs.append((record, source, plan, texts))
        return out, jobs

    def encode(self, prepared: _Prepared) -> tuple[Batch[str], pa.Table]:
        """The Rust half (the GIL is released while it runs), then labels and the Arrow table."""
        out, jobs = prepared
        encodings = self.backend.encode_batch([t for job in jobs for t in job[3]], add_special_tokens=False)
        rows: list[_Row] = []
        k = 0
        for record, source, plan, texts in jobs:
            encs = encodings[k:k + len(texts)]
            k += len(texts)
            try:
                row, altered = self._finish(record, plan, encs)
            except RowError as e:
                out.reject(source, e.findings, record)
                continue
            if altered:
                out.alter(source, [altered], record)
            out.add(record["id"], source)
            rows.append(row)
        return out, self._table(rows, out.items)

    # rendering -----------------------------------------------------------------------------------------------

    def _render(self, record: Record) -> tuple[Any, list[str]]:
        kind = kind_of(record)
        if kind not in ACCEPTS[self.settings.kind]:
            raise row_error("wrong_kind", f"a {kind} record cannot go into {self.settings.kind} shards",
                            f"tokenize {kind} records with --kind {KIND_OF_RECORD[kind]}")
        text_only(record)
        if kind == "text":
            return None, [document(record["text"], self.specials)]
        if self.template is None:
            raise PrepError("conversations need a chat template: give --template (see `prep template --list`)")
        tools = record.get("tools")
        if kind == "chat":
            rendered = self.template.render(record["messages"], tools)
            spans = rendered.spans(self.train_on)
            if not spans:
                raise nothing_to_train(self.train_on)
            return (rendered, spans), [rendered.text]
        sides = ("chosen", "rejected") if kind == "preference" else ("completion",)
        pairs = [render_pair(self.template, record["prompt"], record[s], tools, f"$.{s}") for s in sides]
        return [start for start, _ in pairs], [text for _, text in pairs]

    # tokens and labels ---------------------------------------------------------------------------------------

    def _finish(self, record: Record, plan: Any, encs: list[Any]) -> tuple[_Row, Finding | None]:
        if self.settings.kind in ("dpo", "kto"):
            return self._pair(record, plan, encs)
        enc = encs[0]
        ids = enc.ids
        if plan is None:  # plain text: every token trained
            ranges = [(0, len(ids))]
            eot = self.eos_id
        else:
            ranges = _token_ranges(enc, plan[1])
            eot = self.eot_id
        if not ranges:
            raise nothing_to_train(self.train_on)
        max_len = self.settings.max_len
        if not max_len or len(ids) <= max_len:
            return _Row([ids], ranges), None
        if self.settings.overflow == "drop":
            raise _too_long(len(ids), max_len)
        if plan is None:
            return _truncate(ids, ranges, ranges, max_len, eot)
        if self.settings.overflow == "turns":
            return self._drop_turns(record, plan[0], enc, len(ids))
        answers = [r for r in _token_ranges(enc, plan[0].answer_spans()) if _covered(r, ranges)]
        return _truncate(ids, ranges, answers, max_len, eot)

    def _drop_turns(self, record: Record, rendered: Rendered, enc: Any, n: int) -> tuple[_Row, Finding | None]:
        max_len = self.settings.max_len or 0
        messages = record["messages"]
        for turn in reversed([t for t in rendered.turns if t.answer]):
            end = enc.char_to_token(turn.answer[1] - 1)  # type: ignore[index]
            if end is None or end >= max_len or turn.index == len(messages) - 1:
                continue
            shorter = self.template.render(messages[:turn.index + 1], record.get("tools"))  # type: ignore[union-attr]
            spans = shorter.spans(self.train_on)
            if not spans:
                continue
            enc2 = self.backend.encode(shorter.text, add_special_tokens=False)
            if len(enc2.ids) <= max_len:
                dropped = len(messages) - turn.index - 1
                return _Row([enc2.ids], _token_ranges(enc2, spans)), Finding(
                    "turns_dropped", f"{n} tokens > --max-len {max_len}: dropped the last {dropped} messages",
                    "raise --max-len to keep them", "$.messages")
        raise _too_long(n, max_len, "no shorter conversation ending with a trained turn fits")

    def _pair(self, record: Record, boundaries: list[int], encs: list[Any]) -> tuple[_Row, Finding | None]:
        """dpo/kto: the prompt ids (with the generation prompt) and each completion's ids, split where the
        completion starts in the one tokenization of prompt + completion."""
        splits = [e.char_to_token(b) for e, b in zip(encs, boundaries, strict=True)]
        if any(s is None for s in splits):
            raise row_error("empty_value", "a completion renders to no tokens", "give every answer some text")
        prompt = encs[0].ids[:splits[0]]
        for e, s in zip(encs[1:], splits[1:], strict=True):
            if e.ids[:s] != prompt:
                raise row_error("prompt_mismatch", "the prompt tokenizes differently before the chosen and the "
                                "rejected answer", "check that both answers start the same way", "$.prompt")
        sides = [e.ids[s:] for e, s in zip(encs, splits, strict=True)]
        label = bool(record["label"]) if "label" in record else None
        max_len = self.settings.max_len
        longest = len(prompt) + max(map(len, sides))
        if not max_len or longest <= max_len:
            return _Row([prompt, *sides], label=label), None
        room = max_len - len(prompt)
        if self.settings.overflow == "drop" or room < 2:
            raise _too_long(longest, max_len, "" if self.settings.overflow == "drop" else "the prompt alone fills it")
        cut = [s if len(s) <= room else [*s[:room - 1], self.eot_id] for s in sides]
        return _Row([prompt, *cut], label=label), Finding(
            "truncated", f"{longest} tokens > --max-len {max_len}: answers cut to {room} tokens, ending with "
            f"{self.template.eot if self.template else 'EOS'}", "raise --max-len to keep them whole", "$")

    # Arrow ---------------------------------------------------------------------------------------------------

    def _table(self, rows: list[_Row], ids: list[str]) -> pa.Table:
        n = len(rows)
        doc_ids = pa.array([[i] for i in ids], type=pa.list_(pa.string()))
        if self.settings.kind in ("sft", "pretrain"):
            values, offsets, lengths = _flatten([r.parts[0] for r in rows])
            labels = np.full(len(values), -100, dtype=np.int32)
            loss = np.zeros(n, dtype=np.int32)
            for i, r in enumerate(rows):
                base = offsets[i]
                for a, b in r.ranges:
                    labels[base + a:base + b] = values[base + a:base + b]
                    loss[i] += b - a
            columns = [_list(offsets, values), _list(offsets, labels),
                       _list(np.arange(n + 1, dtype=np.int32), lengths), pa.array(lengths), pa.array(loss), doc_ids]
            return pa.Table.from_arrays(columns, schema=self.schema)
        flat = [_flatten([r.parts[j] for r in rows]) for j in range(2 if self.settings.kind == "kto" else 3)]
        columns = [_list(off, val) for val, off, _ in flat]
        total = np.sum([lens for _, _, lens in flat], axis=0, dtype=np.int32)
        if self.settings.kind == "kto":
            columns.append(pa.array([r.label for r in rows], type=pa.bool_()))
        columns += [pa.array(total, type=pa.int32()), doc_ids]
        return pa.Table.from_arrays(columns, schema=self.schema)


def _flatten(lists: list[list[int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    lengths = np.fromiter(map(len, lists), dtype=np.int32, count=len(lists))
    offsets = np.zeros(len(lists) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    values = np.fromiter(chain.from_iterable(lists), dtype=np.int32, count=int(offsets[-1]))
    return values, offsets, lengths


def _list(offsets: np.ndarray, values: np.ndarray) -> pa.Array:
    return pa.ListArray.from_arrays(pa.array(offsets, type=pa.int32()), pa.array(values, type=pa.int32()))


def _token_ranges(enc: Any, spans: Iterable[Span]) -> list[tuple[int, int]]:
    """Half-open token ranges whose characters overlap the spans, merged. A token that straddles a
    span's edge is trained: its characters are part of what the span's text tokenizes to."""
    out: list[tuple[int, int]] = []
    for s, e in spans:
        a, b = _char_token(enc, s, e, 1), _char_token(enc, e - 1, s - 1, -1)
        if a is None or b is None or b < a:
            continue
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b + 1))
        else:
            out.append((a, b + 1))
    return out


def _char_token(enc: Any, pos: int, stop: int, step: int) -> int | None:
    """The token holding character `pos`, moving towards `stop` past characters no token covers."""
    while pos != stop:
        t = enc.char_to_token(pos)
        if t is not None:
            return t
        pos += step
    return None


def _covered(r: tuple[int, int], ranges: list[tuple[int, int]]) -> bool:
    return any(a <= r[0] and r[1] <= b for a, b in ranges)


def _truncate(ids: list[int], ranges: list[tuple[int, int]], answers: list[tuple[int, int]], max_len: int,
              eot: int | None) -> tuple[_Row, Finding]:
    """Cut to `max_len`: through a trained answer (closed with its end-of-turn token, trained), else at the
    end of the last trained answer that fits whole."""
    n = len(ids)
    cut = next(((a, b) for a, b in answers if a < max_len - 1 and b > max_len), None)
    if cut is not None and eot is not None:
        keep = max_len - 1
        kept = [(a, min(b, keep)) for a, b in ranges if a < keep] + [(keep, keep + 1)]
        return _Row([[*ids[:keep], eot]], kept), Finding(
            "truncated", f"{n} tokens > --max-len {max_len}: cut to {max_len}, the cut answer closed with its "
            "end-of-turn token", "raise --max-len to keep the whole row", "$")
    whole = [b for _, b in answers if b <= max_len]
    if not whole:
        raise _too_long(n, max_len, "no trained answer fits")
    keep = whole[-1]
    kept = [(a, min(b, keep)) for a, b in ranges if a < keep]
    return _Row([ids[:keep]], kept), Finding(
        "truncated", f"{n} tokens > --max-len {max_len}: cut to {keep}, after the last answer that fits",
        "raise --max-len to keep the whole row", "$")


def _too_long(n: int, max_len: int, why: str = "") -> RowError:
    return row_error("too_long", f"{n} tokens > --max-len {max_len}" + (f" ({why})" if why else ""),
                     "raise --max-len, or use --overflow truncate / turns")


# running ---------------------------------------------------------------------------------------------------------

_worker: Encoder | None = None


def _init_worker(encoder: Encoder) -> None:
    global _worker
    _worker = encoder


def _work(batch: Batch[Record]) -> tuple[Batch[str], pa.Table]:
    assert _worker is not None
    return _worker(batch)


def run_encoder(batches: Iterable[Batch[Record]], encoder: Encoder, workers: int = 1) -> Iterator[
        tuple[Batch[str], pa.Table]]:
    """Encode batches in order, in this process or in a pool of `workers` processes (a bounded window
    of batches in flight, so memory stays flat however long the input)."""
    if workers <= 1:
        yield from map(encoder.encode, _prefetch(map(encoder.prepare, batches)))
        return
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    # One Rust thread per worker (the workers are the parallelism), and no fork warning from tokenizers.
    saved = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        pool = multiprocessing.get_context(method).Pool(workers, _init_worker, (encoder,))
    finally:
        if saved is None:
            del os.environ["TOKENIZERS_PARALLELISM"]
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = saved
    with pool:
        pending: deque[Any] = deque()
        for batch in batches:
            pending.append(pool.apply_async(_work, (batch,)))
            if len(pending) >= 2 * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


def _prefetch(items: Iterator[Any], depth: int = 4) -> Iterator[Any]:
    """`items`, computed `depth` ahead in a thread: reading and rendering (Python) overlap the Rust
    tokenizer, which releases the GIL. Errors are raised where the item would have been."""
    q: queue.Queue[tuple[Any, BaseException | None]] = queue.Queue(depth)
    stop = threading.Event()
    end = object()

    def put(entry: tuple[Any, BaseException | None]) -> bool:
        while not stop.is_set():
            try:
                q.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((end, None))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, which raises it
            put((end, e))

    thread = threading.Thread(target=produce, name="prep-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, error = q.get()
            if item is end:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        thread.join()


def tokenize_stage(batches: Iterable[Batch[Record]], encoder: Encoder) -> Iterator[Batch[dict[str, Any]]]:
    """The stage as DESIGN §1 has it: record batches in, batches of shard rows (dicts) out."""
    for meta, table in map(encoder, batches):
        out: Batch[dict[str, Any]] = meta.carry()
        for row, source in zip(table.to_pylist(), meta.sources, strict=True):
            out.add(row, source)
        yield out


@contextlib.contextmanager
def _steady_gc() -> Iterator[None]:
    """Keep the cyclic garbage collector from rescanning, batch after batch, the millions of long-lived
    objects transformers and torch leave behind (measured: up to a third of a run): they are frozen out
    of its sight and young collections run less often. Restored afterwards; forked workers inherit it."""
    threshold, frozen = gc.get_threshold(), gc.get_freeze_count()
    gc.freeze()
    gc.set_threshold(max(threshold[0], 50_000), *threshold[1:])
    try:
        yield
    finally:
        gc.set_threshold(*threshold)
        if not frozen:  # a caller that froze objects itself keeps them frozen
            gc.unfreeze()


def _first_kind(batches: Iterator[Batch[Record]]) -> tuple[str, Iterator[Batch[Record]]]:
    """The shard kind the first record calls for (sft when there is none), without losing a batch."""
    seen: list[Batch[Record]] = []
    for batch in batches:
        seen.append(batch)
        if batch.items:
            return KIND_OF_RECORD[kind_of(batch.items[0])], chain(seen, batches)
    return "sft", iter(seen)


@dataclass
class TokenizeResult:
    tally: Tally
    manifest: dict[str, Any]
    formats: dict[str, str]


def tokenize(inputs: Inputs, tokenizer: str | Tokenizer, outdir: str, *, template: str | None = None,
             kind: str | None = None, train_on: str = "auto", max_len: int | None = None, overflow: str = "drop",
             workers: int = 1, rejects: str | None = None,
             progress: Callable[[int, int], None] | None = None) -> TokenizeResult:
    """Tokenize `inputs` into unpacked shards in `outdir` (DESIGN §5) and return the counts and manifest.

    `kind` defaults to the first record's (chat -> sft, text -> pretrain, preference -> dpo, feedback
    -> kto); `template` to the tokenizer's own. `progress(rows, tokens)` is called after each batch."""
    if overflow not in OVERFLOW:
        raise PrepError(f"unknown --overflow {overflow!r}; one of {', '.join(OVERFLOW)}")
    if max_len is not None and max_len < 2:
        raise PrepError("--max-len must be at least 2")
    if kind is not None and kind not in KINDS:
        raise PrepError(f"unknown --kind {kind!r}; one of {', '.join(KINDS)}")
    resolve_train_on(train_on, "chat")
    formats: dict[str, str] = {}
    batches = read_inputs(inputs, formats)
    if kind is None:
        kind, batches = _first_kind(batches)
    if overflow == "turns" and kind != "sft":
        raise PrepError(f"--overflow turns drops conversation turns; {kind} rows can be dropped or truncated")
    tok = tokenizer if isinstance(tokenizer, Tokenizer) else load_tokenizer(tokenizer)
    if kind == "pretrain":
        if template:
            raise PrepError("--kind pretrain takes plain text, which no template applies to; to train on whole "
                            "conversations use --kind sft --train-on all")
        tmpl = None
    else:
        if template is None and not tok.has_chat_template:
            raise PrepError(f"the tokenizer at {tok.path} has no chat template and no --template was given; "
                            "choose one (see `prep template --list`)")
        tmpl = get_template(template or "tokenizer", tok.specials, tok.jinja)
    settings = Settings(kind, train_on, max_len, overflow)
    encoder = Encoder(tok.backend, tmpl, tok.specials, settings)
    meta: dict[str, Any] = {
        "tokenizer": tok.fingerprint(),
        "template": {"name": tmpl.name, "sha256": tmpl.sha256} if tmpl else None,
        "train_on": {"sft": resolve_train_on(train_on, "chat"), "pretrain": "all"}.get(kind),
        "max_len": max_len, "overflow": overflow,
        "inputs": [], "options": {"kind": kind, **{k: v for k, v in dataclasses.asdict(inputs).items() if k != "files"}},
    }
    with _steady_gc(), ShardWriter(outdir, kind, meta, rejects=rejects) as writer:
        if progress:
            progress(0, 0)
        for out, table in run_encoder(batches, encoder, workers):
            writer.account(out)
            writer.add(table)
            if progress:
                progress(len(out.items) + len(out.rejects), int(table["num_tokens"].to_numpy().sum()))
        meta["inputs"] = [{"path": p, "sha256": sha256_file(p) if p != "-" else None} for p in formats]
    return TokenizeResult(writer.tally, writer.manifest(), formats)
