"""The encoder: canonical records -> token ids and labels as Arrow rows of a shard kind (design §4).

Each row's text is rendered once (prep.render.templates) and tokenized once, whole, with offsets, in
batches on the Rust side (`add_special_tokens=False`, as `apply_chat_template` does); labels come
from the rendered spans: a token is trained when its characters overlap a trained span. Labels are
aligned with `input_ids` (not shifted) and -100 means no loss.

Too long rows (`max_len`): `drop` rejects them (`too_long`); `truncate` cuts at the end and closes
the cut answer with the template's end-of-turn token, trained (or, when the cut falls outside an
answer, ends at the last whole answer); `turns` drops whole trailing turns while at least one
trained turn remains. Cut rows are written and counted as altered.

Rows with media (design §2a) are rendered with each placeholder as a content part (the tokenizer's template) or
as the family's marker (a built-in template), then every marker in the rendered text is expanded into the
processor's text for that medium (prep.render.vision), the spans shifted with it. Media blocks never carry loss,
and a cut never falls inside one. The `media` column says where each block's feature run landed in `input_ids`;
the table's schema metadata (`prep.media`) names the roots its `root` indexes and the files it references, which
the shard writer maps onto the manifest's `media_roots` and `media`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from prep.core.codes import ERROR
from prep.core.columns import ACCEPTS, KIND_OF_RECORD, MEDIA_COLUMN, MEDIA_META, schema
from prep.core.findings import (
    Altered,
    Batch,
    Finding,
    PrepError,
    RowError,
    Source,
    finding,
    per_row,
    row_error,
)
from prep.core.media import PLACEHOLDERS, Item, location, pieces, placeholders
from prep.core.records import Message, Record, kind_of
from prep.files.media_out import MEDIA_DIR, extension
from prep.render.builtin import Template
from prep.render.segments import Segments, Tokens
from prep.render.spans import Rendered, Span, Specials, Turn, nothing_to_train, resolve_train_on
from prep.render.templates import AnyTemplate, document, prompt_record, prompt_text, render_pair
from prep.render.tokenizer import Tokenizer
from prep.render.vision import Expansion, Scheme, Unknown, load_scheme


@dataclass(frozen=True)
class Settings:
    kind: str
    train_on: str = "auto"
    max_len: int | None = None
    overflow: str = "drop"
    train_on_reasoning: bool = True  # False: an answer's think block carries no loss (an empty one never does)
    carried: tuple[str, ...] = ()  # input columns written beside the ids (--keep-columns)


@dataclass(slots=True)
class _Row:
    """One output row before it becomes Arrow: id lists and, for sft/pretrain, trained token ranges."""

    parts: list[list[int]]
    ranges: list[tuple[int, int]] = field(default_factory=list)
    label: bool | None = None
    id: str = ""
    columns: dict[str, Any] = field(default_factory=dict)  # the record's carried columns
    media: list[dict[str, Any]] = field(default_factory=list)  # the media column's entries, root as a folder
    prompt: str | None = None  # prompt shards: what the prompt was rendered from, as JSON (see prompt_record)


@dataclass(slots=True)
class _Block:
    """One medium in the expanded text: the item, its expansion, and its block and feature run (characters)."""

    item: Item
    expansion: Expansion
    block: Span
    feature: Span


@dataclass(slots=True)
class _Chat:
    """A chat rendered for training: the rendering, its trained spans, and its media blocks."""

    rendered: Rendered
    spans: list[Span]
    blocks: list[_Block]


@dataclass(slots=True)
class _Job:
    """A record on its way through the encoder: how it was rendered, its texts, then their encodings."""

    record: Record
    plan: Any
    texts: list[str]
    encodings: list[Any] = field(default_factory=list)


def build_encoder(tok: Tokenizer, template: AnyTemplate | None, settings: Settings) -> Encoder:
    """The encoder of `settings.kind` with `tok` and `template` (`templates.chat_template`: name or file, its
    arguments and day); plain text (pretrain) takes no template. tokenize, mix --by tokens and validate
    --tokenizer all encode through here, so they count the same tokens."""
    return Encoder(tok.backend, None if settings.kind == "pretrain" else template, tok.specials, settings,
                   load_scheme(tok.path), tok.files_key())


class Encoder:
    """Record batches -> shard rows: everything a worker process needs, and nothing it has to import."""

    def __init__(self, backend: Any, template: AnyTemplate | None, specials: Specials, settings: Settings,
                 scheme: Scheme | Unknown | None = None, tokenizer_key: str | None = None) -> None:
        self.backend, self.template, self.specials, self.settings = backend, template, specials, settings
        # repeated stretches between special tokens (system prompts, tools) once; `tokenizer_key`: Segments'
        self.segments = Segments(backend, tokenizer_key)
        self.scheme = scheme or Unknown("no processor folder given")
        # sft shards of a model with a media scheme carry the media column (empty lists for text-only rows)
        self.media = settings.kind == "sft" and isinstance(self.scheme, Scheme)
        if isinstance(self.scheme, Scheme):
            for token in self.scheme.tokens():
                self.single_token(token, f"{self.scheme.family} media token")
        self.eos_id = self.single_token(specials.eos, "EOS") if specials.eos else None
        self.eot_id = self.single_token(template.eot, f"end-of-turn token of template {template.name}") \
            if template else self.eos_id
        if settings.kind == "pretrain" and self.eos_id is None:
            raise PrepError("pretraining text ends with the tokenizer's EOS token, and this tokenizer has none")
        self.schema = schema(settings.kind, settings.carried, self.media)
        self.train_on = resolve_train_on(settings.train_on, "chat")

    def single_token(self, text: str, what: str) -> int:
        ids = self.backend.encode(text, add_special_tokens=False).ids
        if len(ids) != 1:
            raise PrepError(f"the {what} {text!r} is not one token of this tokenizer (it becomes {len(ids)}): "
                            "choose the template that matches the model")
        return ids[0]

    def __call__(self, batch: Batch[Record]) -> tuple[Batch[str], pa.Table]:
        """Tokenize a batch: its rows as an Arrow table and a batch of their ids, sources and rejects."""
        return self.encode(self.prepare(batch))

    def prepare(self, batch: Batch[Record]) -> Batch[_Job]:
        """The Python half: render every record (a row that cannot be rendered is rejected here; one whose rendering
        changed something, such as a developer message in the system slot, goes on as altered)."""
        return per_row(self._job)(batch)

    def _job(self, record: Record, source: Source) -> _Job | Altered:
        plan, texts, notes = self._render(record)
        job = _Job(record, plan, texts)
        return Altered(job, notes[0]) if notes else job

    def tokenize(self, jobs: Batch[_Job]) -> Batch[_Job]:
        """The Rust half (the GIL is released while it runs): each job's encodings. Separate from `encode` so a
        pipeline can tokenize one batch while it labels and writes the one before (stages.tokenize)."""
        self._hand_out(jobs, self.segments.start([t for job in jobs.items for t in job.texts]))
        return jobs

    @staticmethod
    def _hand_out(jobs: Batch[_Job], encodings: list[Any]) -> None:
        k = 0
        for job in jobs.items:
            job.encodings = encodings[k:k + len(job.texts)]
            k += len(job.texts)

    def encode(self, jobs: Batch[_Job], tokenized: bool = False) -> tuple[Batch[str], pa.Table]:
        """`tokenize` (unless done), then labels and the Arrow table. Each job keeps its encodings
        (`encode_measured` reads their lengths)."""
        if not tokenized:
            self.tokenize(jobs)
        # what the tokenizer made without offsets, read here (in a pipeline, beside the tokenizer's next batch)
        self._hand_out(jobs, self.segments.finish([e for job in jobs.items for e in job.encodings]))
        table = self._at_once(jobs)
        if table is not None:
            return Batch([job.record["id"] for job in jobs.items], jobs.sources, jobs.rejects, jobs.altered,
                         jobs.dropped), table
        done = per_row(self._finish, keep=lambda job: job.record)(jobs)
        ids = Batch([job_row.id for job_row in done.items], done.sources, done.rejects, done.altered, done.dropped)
        return ids, self._table(done.items, ids.items)

    def encode_measured(self, jobs: Batch[_Job], tokenized: bool = False) -> tuple[Batch[str], pa.Table,
                                                                                  list[tuple[str, int]]]:
        """`encode`, and the file and length of every row tokenized, before `max_len` cut or dropped it (for
        a pair: the longer side with the prompt, the length `max_len` bounds), for the per-source histograms."""
        ids, table = self.encode(jobs, tokenized)
        lengths = [(source.file, max(map(len, job.encodings)))  # len(): no list of the ids made
                   for job, source in zip(jobs.items, jobs.sources, strict=True)]
        return ids, table, lengths

    # rendering -----------------------------------------------------------------------------------------------

    def _render(self, record: Record) -> tuple[Any, list[str], list[Finding]]:
        kind = kind_of(record)
        if kind not in ACCEPTS[self.settings.kind]:
            raise row_error("wrong_kind", f"a {kind} record cannot go into {self.settings.kind} shards",
                            hint=f"tokenize {kind} records with --kind {KIND_OF_RECORD[kind]}")
        media = record.get("media") or []
        if media and (kind != "chat" or self.settings.kind != "sft"):
            raise row_error("unsupported_media", f"a {kind} row with media: prep tokenizes media into sft shards of "
                            "conversations", "$.media")
        if kind == "text":
            return None, [document(record["text"], self.specials)], []
        if self.template is None:
            raise PrepError("conversations need a chat template: give --template (see `prep template --list`)")
        tools = record.get("tools")
        kwargs = record.get("chat_template_kwargs")
        if self.settings.kind == "prompt":
            return None, [prompt_text(self.template, record, kwargs)], []
        if kind == "chat":
            chat = self._chat(record["messages"], tools, kwargs, self._items(media))
            if not chat.spans:
                raise nothing_to_train(self.train_on)
            return chat, [chat.rendered.text], chat.rendered.notes
        sides = ("chosen", "rejected") if kind == "preference" else ("completion",)
        pairs = [render_pair(self.template, record["prompt"], record[s], tools, f"$.{s}", kwargs) for s in sides]
        return [start for start, _ in pairs], [text for _, text in pairs], []

    def _items(self, media: list[Item]) -> list[tuple[Item, Expansion]]:
        """Each medium, probed where its size is unknown, with the text its processor puts for it."""
        if not media:
            return []
        scheme = self.scheme
        if isinstance(scheme, Unknown):
            raise scheme.refuse(media[0])
        out = []
        for item in media:
            refused = scheme.unsupported(item)
            if refused:
                raise refused
            if not item.get("url", "data:").startswith("data:"):
                raise row_error("media_not_local", f"{location(item)} is a URL; prep does not fetch it", item["at"],
                                severity=ERROR)
            item = _probed(item)
            out.append((item, scheme.expand(item)))
        return out

    def _chat(self, messages: Sequence[Message], tools: Any, kwargs: Any,
              items: list[tuple[Item, Expansion]]) -> _Chat:
        """Render a conversation (its media as content parts or markers), then expand the markers."""
        assert self.template is not None
        if not items:
            rendered = self.template.render(messages, tools, kwargs)
            return _Chat(rendered, rendered.spans(self.train_on, self.settings.train_on_reasoning), [])
        scheme = self.scheme
        assert isinstance(scheme, Scheme)
        as_parts = not isinstance(self.template, Template)  # a JinjaTemplate takes content parts
        given = [_for_template(m, scheme, as_parts) for m in messages]
        rendered, blocks = _expand(self.template.render(given, tools, kwargs), items, scheme)
        spans = rendered.spans(self.train_on, self.settings.train_on_reasoning)
        return _Chat(rendered, spans, blocks)

    # tokens and labels ---------------------------------------------------------------------------------------

    def _finish(self, job: _Job, source: Source) -> _Row | Altered:
        row, altered = self._tokens(job.record, job.plan, job.encodings)
        row.id = job.record["id"]
        row.columns = job.record.get("columns", {})
        return Altered(row, altered) if altered else row

    def _tokens(self, record: Record, plan: Any, encs: list[Any]) -> tuple[_Row, Finding | None]:
        if self.settings.kind in ("dpo", "kto"):
            return self._pair(record, plan, encs)
        if self.settings.kind == "prompt":
            ids = encs[0].ids
            if self.settings.max_len and len(ids) > self.settings.max_len:
                raise _too_long(len(ids), self.settings.max_len, "a prompt is not cut")
            return _Row([ids], prompt=json.dumps(prompt_record(record), ensure_ascii=False)), None
        enc = encs[0]
        ids = enc.ids
        blocks: list[tuple[int, int, int, int]] = []
        if plan is None:  # plain text: every token trained
            ranges = [(0, len(ids))]
            eot = self.eos_id
        else:
            blocks = _block_tokens(enc, plan.blocks)
            trained = _token_ranges(enc, plan.spans)
            ranges = _without(trained, [(a, b) for a, b, _, _ in blocks])
            eot = self.eot_id
        if not ranges:
            raise nothing_to_train(self.train_on)
        max_len = self.settings.max_len
        if not max_len or len(ids) <= max_len:
            return self._with_media(_Row([ids], ranges), plan, blocks), None
        if self.settings.overflow == "drop":
            raise _too_long(len(ids), max_len)
        if plan is None:
            return _truncate(ids, ranges, ranges, max_len, eot)
        if self.settings.overflow == "turns":
            return self._drop_turns(record, plan, enc, len(ids))
        answers = [r for r in _token_ranges(enc, plan.rendered.answer_spans()) if _covered(r, trained)]
        row, note = _truncate(ids, ranges, answers, max_len, eot, [(a, b) for a, b, _, _ in blocks])
        return self._with_media(row, plan, blocks), note

    def _with_media(self, row: _Row, chat: _Chat | None, blocks: list[tuple[int, int, int, int]]) -> _Row:
        """The row with its media entries: each block kept whole in the row's ids (a cut drops the blocks after it)."""
        if chat is None:
            return row
        n = len(row.parts[0])
        for b, (_, end, fa, fb) in zip(chat.blocks, blocks, strict=True):
            if end > n:
                break
            row.media.append(_entry(b, fa, fb - fa))
        return row

    def _drop_turns(self, record: Record, chat: _Chat, enc: Any, n: int) -> tuple[_Row, Finding | None]:
        max_len = self.settings.max_len or 0
        messages = record["messages"]
        items = [(b.item, b.expansion) for b in chat.blocks]
        for turn in reversed([t for t in chat.rendered.turns if t.answer]):
            end = enc.char_to_token(turn.answer[1] - 1)  # type: ignore[index]
            if end is None or end >= max_len or turn.index == len(messages) - 1:
                continue
            kept = messages[:turn.index + 1]
            shorter = self._chat(kept, record.get("tools"), record.get("chat_template_kwargs"),
                                 items[:sum(len(placeholders(m["content"])) for m in kept)] if items else [])
            if not shorter.spans:
                continue
            enc2 = self.backend.encode(shorter.rendered.text, add_special_tokens=False)
            if len(enc2.ids) <= max_len:
                dropped = len(messages) - turn.index - 1
                blocks = _block_tokens(enc2, shorter.blocks)
                ranges = _without(_token_ranges(enc2, shorter.spans), [(a, b) for a, b, _, _ in blocks])
                return self._with_media(_Row([enc2.ids], ranges), shorter, blocks), finding(
                    "turns_dropped", f"{n} tokens > --max-len {max_len}: dropped the last {dropped} messages",
                    "$.messages")
        raise _too_long(n, max_len, "no shorter conversation ending with a trained turn fits")

    def _pair(self, record: Record, boundaries: list[int], encs: list[Any]) -> tuple[_Row, Finding | None]:
        """dpo/kto: the prompt ids (with the generation prompt) and each completion's ids, split where the
        completion starts in the one tokenization of prompt + completion."""
        splits = [e.char_to_token(b) for e, b in zip(encs, boundaries, strict=True)]
        if any(s is None for s in splits):
            raise row_error("empty_value", "a completion renders to no tokens", hint="give every answer some text")
        prompt = encs[0].ids[:splits[0]]
        for e, s in zip(encs[1:], splits[1:], strict=True):
            if e.ids[:s] != prompt:
                raise row_error("prompt_mismatch", "the prompt tokenizes differently before the chosen and the "
                                "rejected answer", "$.prompt")
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
        return _Row([prompt, *cut], label=label), finding(
            "truncated", f"{longest} tokens > --max-len {max_len}: answers cut to {room} tokens, ending with "
            f"{self.template.eot if self.template else 'EOS'}", hint="raise --max-len to keep them whole")

    def _at_once(self, jobs: Batch[_Job]) -> pa.Table | None:
        """The sft table of a batch without media, none of its rows longer than `max_len`, each with a span to train,
        its labels found at once: for the rows encoded without offsets (`segments.Tokens`), where each span's first
        and last characters fall in their `encode_batch_fast` call's bytes, searched for all of them together
        (`_token_ranges` asks row by row); for the others, their encoding's offsets. None for any other batch (the
        rows go one by one, to be cut, dropped or rejected)."""
        items = jobs.items
        if self.settings.kind != "sft" or self.media or self.settings.carried or not items:
            return None
        # per encode_batch_fast call: its token starts, and for each span its row, the row's first token in the call
        # and where the span's first and last characters start in the call's bytes
        by_call: dict[int, tuple[np.ndarray, list[int], list[int], list[int], list[int]]] = {}
        others: list[tuple[int, int, int]] = []  # (row, first token, last token + 1) of the rows with offsets
        for row, job in enumerate(items):
            enc = job.encodings[0]
            spans = [(a, b) for a, b in job.plan.spans if b > a]
            if job.plan.blocks or not spans:
                return None
            if isinstance(enc, Tokens):
                _, rows, los, first, last = by_call.setdefault(id(enc.starts), (enc.starts, [], [], [], []))
                rows += [row] * len(spans)
                los += [enc.lo] * len(spans)
                first += [enc.bytes_at(a) for a, _ in spans]
                last += [enc.bytes_at(b - 1) for _, b in spans]
            else:
                ranges = _token_ranges(enc, spans)
                if not ranges:
                    return None
                others += [(row, a, b) for a, b in ranges]
        values, offsets, lengths = _flat_ids([job.encodings[0] for job in items])
        if self.settings.max_len and lengths.max() > self.settings.max_len:
            return None
        edges = np.zeros(len(values) + 1, dtype=np.int32)
        for starts, rows, los, first, last in by_call.values():
            shift = offsets[rows] - np.asarray(los)  # a row's tokens start at lo in its call, at offsets[row] here
            np.add.at(edges, starts.searchsorted(first, side="right") - 1 + shift, 1)
            np.add.at(edges, starts.searchsorted(last, side="right") + shift, -1)
        for row, a, b in others:
            edges[offsets[row] + a] += 1
            edges[offsets[row] + b] -= 1
        return self._sft_table(values, offsets, lengths, np.cumsum(edges[:-1]) > 0, [job.record["id"] for job in items])

    # Arrow ---------------------------------------------------------------------------------------------------

    def _table(self, rows: list[_Row], ids: list[str]) -> pa.Table:
        table = self._own_columns(rows, ids)
        if self.media:
            column, meta = _media_column(rows, self.schema.field(MEDIA_COLUMN).type)
            table = table.append_column(self.schema.field(MEDIA_COLUMN), column)
        for name in self.schema.names[table.num_columns:]:  # the carried columns the shard schema holds
            values = [r.columns.get(name) for r in rows]
            table = table.append_column(name, pa.array(
                [v if v is None or isinstance(v, str) else json.dumps(v, ensure_ascii=False, sort_keys=True)
                 for v in values], type=pa.string()))
        return table.replace_schema_metadata({MEDIA_META: json.dumps(meta)}) if self.media else table

    def _sft_table(self, values: np.ndarray, offsets: np.ndarray, lengths: np.ndarray, trained: np.ndarray,
                   ids: list[str]) -> pa.Table:
        """The columns of sft/pretrain shards: the rows' ids flat (`values`, cut at `offsets`), which carry loss."""
        n = len(lengths)
        labels = np.where(trained, values, np.int32(-100))
        # int32 as the schema's column (an int64 sum would be cast by pyarrow.compute: 50 ms of start-up)
        loss = np.add.reduceat(trained.astype(np.int32), offsets[:-1], dtype=np.int32) if len(values) else \
            np.zeros(n, np.int32)
        loss[lengths == 0] = 0  # reduceat gives an empty row the next row's first value
        columns = [_list(offsets, values), _list(offsets, labels),
                   _list(np.arange(n + 1, dtype=np.int32), lengths), _int32(lengths), _int32(loss), _doc_ids(ids)]
        return pa.Table.from_arrays(columns, schema=schema(self.settings.kind))

    def _own_columns(self, rows: list[_Row], ids: list[str]) -> pa.Table:
        if self.settings.kind in ("sft", "pretrain"):
            values, offsets, lengths = _flatten([r.parts[0] for r in rows])
            return self._sft_table(values, offsets, lengths, _trained(rows, offsets, len(values)), ids)
        sides = {"prompt": 1, "kto": 2, "dpo": 3}[self.settings.kind]
        flat = [_flatten([r.parts[j] for r in rows]) for j in range(sides)]
        columns = [_list(off, val) for val, off, _ in flat]
        if self.settings.kind == "prompt":
            columns.append(pa.array([r.prompt for r in rows], type=pa.string()))
        total = np.sum([lens for _, _, lens in flat], axis=0, dtype=np.int32)
        if self.settings.kind == "kto":
            columns.append(pa.array([r.label for r in rows], type=pa.bool_()))
        columns += [_int32(total), _doc_ids(ids)]
        return pa.Table.from_arrays(columns, schema=schema(self.settings.kind))


def _trained(rows: list[_Row], offsets: np.ndarray, size: int) -> np.ndarray:
    """Which tokens of the flattened batch carry loss: +1 where a trained range starts, -1 where it ends, summed."""
    starts = [offsets[i] + a for i, r in enumerate(rows) for a, _ in r.ranges]
    ends = [offsets[i] + b for i, r in enumerate(rows) for _, b in r.ranges]
    edges = np.zeros(size + 1, dtype=np.int32)
    np.add.at(edges, np.asarray(starts, dtype=np.int64), 1)
    np.add.at(edges, np.asarray(ends, dtype=np.int64), -1)
    return np.cumsum(edges[:-1]) > 0


def _flatten(lists: list[list[int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    lengths = np.fromiter(map(len, lists), dtype=np.int32, count=len(lists))
    offsets = np.zeros(len(lists) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    values = np.fromiter(chain.from_iterable(lists), dtype=np.int32, count=int(offsets[-1]))
    return values, offsets, lengths


def _flat_ids(encodings: list[Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`_flatten` of the encodings' ids. When they are the `Tokens` of one `encode_batch_fast` call, one after the
    other (a batch encoded whole, in order), the ids are a slice of the array that call's were read into: no second
    pass over every id in Python (a fifth of a million per batch)."""
    first = encodings[0]
    if type(first) is Tokens and all(type(e) is Tokens and e.flat is first.flat for e in encodings):
        lengths = np.fromiter(map(len, encodings), dtype=np.int32, count=len(encodings))
        los = np.fromiter((e.lo for e in encodings), dtype=np.int64, count=len(encodings))
        if (los[1:] == los[:-1] + lengths[:-1]).all():
            offsets = np.zeros(len(encodings) + 1, dtype=np.int32)
            np.cumsum(lengths, out=offsets[1:])
            return first.flat[los[0]:los[0] + offsets[-1]], offsets, lengths
    return _flatten([e.ids for e in encodings])


def _doc_ids(ids: list[str]) -> pa.Array:
    return pa.array([[i] for i in ids], type=pa.list_(pa.string()))


def _list(offsets: np.ndarray, values: np.ndarray) -> pa.Array:
    return pa.ListArray.from_arrays(_int32(offsets), _int32(values))


def _int32(values: np.ndarray) -> pa.Array:
    """An int32 Arrow array over the numpy array's memory, as `pa.array` makes it; `pa.array` looks for numpy.ma
    first, which costs a one-row `prep tokenize` 15 ms of start-up."""
    values = np.ascontiguousarray(values, dtype=np.int32)
    return pa.Array.from_buffers(pa.int32(), len(values), [None, pa.py_buffer(values)])


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
              eot: int | None, blocks: Sequence[tuple[int, int]] = ()) -> tuple[_Row, Finding]:
    """Cut to `max_len`: through a trained answer (closed with its end-of-turn token, trained), else at the
    end of the last trained answer that fits whole. A cut never falls inside a media block: it moves before it."""
    n = len(ids)
    keep = next((a for a, b in blocks if a < max_len - 1 < b), max_len - 1)
    cut = next(((a, b) for a, b in answers if a < keep and b > max_len), None)
    if cut is not None and eot is not None:
        kept = [(a, min(b, keep)) for a, b in ranges if a < keep] + [(keep, keep + 1)]
        return _Row([[*ids[:keep], eot]], kept), finding(
            "truncated", f"{n} tokens > --max-len {max_len}: cut to {keep + 1}, the cut answer closed with its "
            "end-of-turn token" + (" (before a media block, which is never cut)" if keep < max_len - 1 else ""))
    whole = [b for _, b in answers if b <= max_len and not any(a < b < e for a, e in blocks)]
    if not whole:
        raise _too_long(n, max_len, "no trained answer fits")
    keep = whole[-1]
    kept = [(a, min(b, keep)) for a, b in ranges if a < keep]
    return _Row([ids[:keep]], kept), finding(
        "truncated", f"{n} tokens > --max-len {max_len}: cut to {keep}, after the last answer that fits")


def _too_long(n: int, max_len: int, why: str = "") -> RowError:
    return row_error("too_long", f"{n} tokens > --max-len {max_len}" + (f" ({why})" if why else ""), severity=ERROR)


def _probed(item: Item) -> Item:
    """The item with what its header tells (prep.files.media.probe reads it) when its size or hash is unknown."""
    wanted = ("sha256", "width", "height", *(("frames", "fps") if item["type"] == "video" else ()))
    if all(item.get(k) is not None for k in wanted):
        return item
    from prep.files.media import probe  # noqa: PLC0415 - start-up time: Pillow/PyAV only for rows with media

    return probe(item)


def _for_template(m: Message, scheme: Scheme, as_parts: bool) -> Message:
    """A message of a row with media as the template is given it. The tokenizer's own template gets content parts
    (`{"type": "image"}`, `{"type": "text", "text": ...}`), every message of the row, as transformers' processors
    are given them (LLaVA's templates read text from parts only), and places each medium's marker itself; a
    built-in template gets each placeholder as the family's marker text."""
    content = m.get("content")
    if not isinstance(content, str):
        return m
    if as_parts:
        parts = [{"type": "text", "text": chunk} if kind == "text" else {"type": kind} for kind, chunk in pieces(content)]
        return {**m, "content": parts}
    return {**m, "content": "".join(chunk if kind == "text" else scheme.builtin[kind] for kind, chunk in pieces(content))}


def _expand(rendered: Rendered, items: list[tuple[Item, Expansion]], scheme: Scheme) -> tuple[Rendered, list[_Block]]:
    """Every marker of the rendered text replaced by its medium's expansion, in order, as the processor replaces
    them; every span shifted to the expanded text."""
    text = rendered.text
    kind_of_marker = {marker: kind for kind, marker in scheme.markers.items()}
    found = list(re.finditer("|".join(map(re.escape, sorted(kind_of_marker, key=len, reverse=True))), text))
    kinds = [kind_of_marker[m.group()] for m in found]
    if kinds != [item["type"] for item, _ in items]:
        raise row_error("media_count_mismatch", f"the chat text holds {len(kinds)} media marker(s) "
                        f"({', '.join(kinds) or 'none'}) for {len(items)} item(s) "
                        f"({', '.join(item['type'] for item, _ in items)})", "$.messages",
                        hint=f"write one {'/'.join(PLACEHOLDERS.values())} placeholder per item, and no "
                             f"{scheme.family} marker token in the text")
    out, blocks, at, edges = [], [], 0, []
    size = 0
    for m, (item, exp) in zip(found, items, strict=True):
        out.append(text[at:m.start()])
        size += m.start() - at
        start = size
        out.append(exp.text)
        size += len(exp.text)
        at = m.end()
        edges.append((m.end(), size - m.end()))  # a position at or after the marker's end moves by this much
        blocks.append(_Block(item, exp, (start + exp.block[0], start + exp.block[1]),
                             (start + exp.feature[0], start + exp.feature[1])))
    out.append(text[at:])
    new = "".join(out)
    for b in blocks:  # the begin/end tokens the template wrote around a marker belong to its block
        a, e = b.block
        before, after = scheme.wrap
        if before and a >= len(before) and new.startswith(before, a - len(before)):
            a -= len(before)
        if after and new.startswith(after, e):
            e += len(after)
        b.block = (a, e)

    def move(p: int) -> int:
        shift = 0
        for end, delta in edges:
            if end > p:
                break
            shift = delta
        return p + shift

    def span(s: Span | None) -> Span | None:
        return None if s is None else (move(s[0]), move(s[1]))

    turns = [Turn(t.index, t.role, span(t.content), span(t.answer), t.weight,  # type: ignore[arg-type]
                  span(t.think)) for t in rendered.turns]
    return Rendered(new, turns, rendered.notes), blocks


def _block_tokens(enc: Any, blocks: list[_Block]) -> list[tuple[int, int, int, int]]:
    """Each block's token range and its feature run's, checked against the expansion's token count."""
    out = []
    for b in blocks:
        a, e = _char_token(enc, b.block[0], b.block[1], 1), _char_token(enc, b.block[1] - 1, b.block[0] - 1, -1)
        fa, fe = _char_token(enc, b.feature[0], b.feature[1], 1), _char_token(enc, b.feature[1] - 1,
                                                                               b.feature[0] - 1, -1)
        if None in (a, e, fa, fe) or fe + 1 - fa != b.expansion.tokens:  # type: ignore[operator]
            raise PrepError(f"the tokenizer does not keep the media tokens whole ({b.expansion.tokens} expected, "
                            f"{(fe or 0) + 1 - (fa or 0)} made): is it the model's own tokenizer?")
        out.append((a, e + 1, fa, fe + 1))  # type: ignore[operator]
    return out


def _without(ranges: list[tuple[int, int]], holes: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Token ranges with the holes cut out (media tokens never carry loss)."""
    for ha, hb in holes:
        ranges = [piece for a, b in ranges for piece in ((a, min(b, ha)), (max(a, hb), b)) if piece[1] > piece[0]]
    return ranges


def _entry(b: _Block, start: int, length: int) -> dict[str, Any]:
    """One entry of the media column, its root still a folder ("." for a data URL, written into the shards)."""
    item = b.item
    data = item.get("url", "").startswith("data:")
    return {"type": item["type"], "sha256": item.get("sha256"), "root": "." if data else item.get("root"),
            "path": _media_name(item) if data else item.get("path"), "start": start, "length": length,
            "grid": list(b.expansion.grid) if b.expansion.grid else None, "width": item.get("width"),
            "height": item.get("height"), "bytes": item.get("bytes"), "url": item["url"] if data else None}


def _media_name(item: Item) -> str:
    """Where a data-URL medium is written in a shard folder: media/<sha256>.<ext>, named as writers name it."""
    return f"{MEDIA_DIR}/{item['sha256']}{extension(item)}"


def _media_column(rows: list[_Row], kind: pa.DataType) -> tuple[pa.Array, dict[str, Any]]:
    """The media column (root as an index into the batch's roots) and the metadata naming those roots and the files,
    which the shard writer maps onto the manifest."""
    roots: dict[str, int] = {}
    files: dict[str, dict[str, Any]] = {}  # by root and path: the writer lists one per sha256, writes every data URL
    column = []
    for row in rows:
        entries = []
        for e in row.media:
            root = e["root"] if e["root"] == "." else str(Path(e["root"] or ".").resolve())
            index = roots.setdefault(root, len(roots))
            files.setdefault(f"{index}/{e['path']}", {"sha256": e["sha256"], "root": index, "path": e["path"],
                                                      "bytes": e["bytes"], "type": e["type"],
                                                      **({"url": e["url"]} if e["url"] else {})})
            entries.append({**{k: e[k] for k in ("type", "sha256", "path", "start", "length", "grid", "width",
                                                 "height")}, "root": index})
        column.append(entries)
    return pa.array(column, type=kind), {"roots": list(roots), "files": list(files.values()),
                                         "items": sum(len(r.media) for r in rows)}
