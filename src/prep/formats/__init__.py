"""The format registry: which module reads or writes which layout, detection, and the two
conversion stages (rows -> canonical records -> rows) every verb builds on."""

from __future__ import annotations

import dataclasses
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from types import ModuleType
from typing import Any

from prep.core.findings import Batch, PrepError, Reject, Source, per_row, row_error
from prep.core.options import MAX_ROW_BYTES
from prep.core.records import Record, collecting, json_value, not_expressible, record_id, split_think
from prep.files.media_out import MediaOut
from prep.files.paths import split_suffix
from prep.files.read import read_rows
from prep.formats import alpaca, autotrain, coqa, lf_parts, openai, sharegpt, text, toolcalls, trl

# Detection order matters: the most specific layouts first (LLaMA-Factory's parts before OpenAI's messages), bare
# `text` last.
FORMATS: dict[str, ModuleType] = {m.NAME: m for m in (coqa, lf_parts, openai, sharegpt, alpaca, autotrain, trl, text)}
READABLE = tuple(FORMATS)
WRITABLE = ("openai", "lf_parts", *(name for name, m in FORMATS.items()
                                    if hasattr(m, "write") and name not in ("openai", "lf_parts")))


def module(name: str) -> ModuleType:
    if name not in FORMATS:
        raise PrepError(f"unknown format {name!r}; one of {', '.join(FORMATS)}")
    return FORMATS[name]


def make_options(name: str, settings: dict[str, Any] | None = None) -> Any:
    """The format's Options, filled from whichever `settings` it has fields for (None: column unused)."""
    cls = module(name).Options
    known = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in (settings or {}).items() if k in known})


def media_root(path: str, given: str | None = None) -> str:
    """Where the media paths of the rows of file `path` are resolved: `--media-root` when given, else the folder of
    the file (standard input: the current folder), absolute, as LLaMA-Factory resolves them against `media_dir`."""
    if given:
        return os.path.abspath(given)
    return os.path.abspath(os.path.dirname(path) if path != "-" else ".")


def reader_options(name: str, settings: dict[str, Any] | None, path: str, given_root: str | None = None) -> Any:
    """The format's Options for reading file `path`: `settings`, and the root its media paths are resolved from."""
    return make_options(name, {**(settings or {}), "media_root": media_root(path, given_root)})


def detect(row: Any) -> str | None:
    """The first format whose `detect` accepts this row, or None."""
    if not isinstance(row, dict):
        return None
    return next((name for name, m in FORMATS.items() if m.detect(row)), None)


@dataclasses.dataclass(frozen=True)
class Fields:
    """What becomes of the fields no reader maps: `keep` carries them (into `record["columns"]`, the written rows
    and the shards), the rest are counted as dropped, or with `strict` rejected; `split_think` takes an answer's
    leading `<think>…</think>` as its reasoning; `tool_calls` names the text dialect of tool calls to read
    (`formats.toolcalls`)."""

    keep: tuple[str, ...] = ()
    strict: bool = False
    split_think: bool = False
    tool_calls: str | None = None


class Seen(dict):  # type: ignore[type-arg]
    """A row that remembers which of its keys the reader looked at: the others were not mapped."""

    __slots__ = ("seen",)

    def __init__(self, row: dict[str, Any]) -> None:
        dict.__init__(self, row)
        self.seen: set[Any] = {"id"}

    # dict's own methods called directly: a zero-argument super() builds an object per call, and readers call
    # these a few times per row
    def get(self, key: Any, default: Any = None) -> Any:
        self.seen.add(key)
        return dict.get(self, key, default)

    def __getitem__(self, key: Any) -> Any:
        self.seen.add(key)
        return dict.__getitem__(self, key)

    def __contains__(self, key: Any) -> bool:
        self.seen.add(key)
        return dict.__contains__(self, key)


def _dropped_stage(fn: Any, fields: Fields) -> Any:
    """A batch stage from `fn(item, source) -> (output, dropped field names)`: the names are counted on the batch
    (one per row and field), or with `fields.strict` the row is rejected naming them."""

    def stage(batch: Batch[Any]) -> Batch[Any]:
        counts: Counter[str] = Counter()

        def one(item: Any, source: Source) -> Any:
            out, dropped = fn(item, source)
            if dropped:
                names = sorted(set(dropped))
                if fields.strict:
                    raise row_error("dropped_field", f"field{'s' if len(names) > 1 else ''} {', '.join(names)} "
                                    "would be dropped", f"$.{names[0]}")
                counts.update(names)
            return out

        out = per_row(one)(batch)
        out.dropped.update(counts)
        return out

    return stage


def unread(row: Seen) -> list[str]:
    """The keys of a row its reader never looked at (a null one is absent: Arrow fills absent fields with null)."""
    if len(row) <= len(row.seen) and row.seen.issuperset(row):
        return []
    return [k for k, v in row.items() if k not in row.seen and v is not None]


def to_records(batches: Iterable[Batch[Any]], fmt: str, options: Any,
               fields: Fields = Fields()) -> Iterator[Batch[Record]]:
    """Stage: raw rows -> canonical records; a row the reader refuses becomes a reject, and every field the reader
    does not map is kept (`fields.keep`) or counted as dropped."""
    read = module(fmt).read

    def one(row: Any, source: Source) -> tuple[Record, list[str]]:
        if not isinstance(row, dict):
            return {"id": record_id(row, source), **read(row, options)}, []
        seen = Seen(row)
        record, dropped = collecting(read, seen, options)
        record = {"id": record_id(row, source), **record}
        if row.get("chat_template_kwargs") is not None and ("messages" in record or "prompt" in record):
            record["chat_template_kwargs"] = json_value(row["chat_template_kwargs"], "$.chat_template_kwargs", dict)
            seen.seen.add("chat_template_kwargs")
        if fields.keep and (kept := {k: row[k] for k in fields.keep if row.get(k) is not None}):
            record["columns"] = kept
            seen.seen.update(kept)
        dropped += unread(seen)
        if fields.tool_calls:
            toolcalls.read_calls(record, fields.tool_calls)
        if fields.split_think:
            read_think(record)
        return record, dropped

    return map(repeated_keys(fields.strict), map(_dropped_stage(one, fields), batches))


def repeated_keys(strict: bool) -> Callable[[Batch[Any]], Batch[Any]]:
    """A batch stage for the rows whose objects repeat a key (the reader's `duplicate_key` alterations): the values
    left behind are counted as dropped fields, or with `strict` the row is rejected; a row rejected for another
    reason carries the finding too, and is no longer counted as altered."""

    def stage(batch: Batch[Any]) -> Batch[Any]:
        if not batch.altered:
            return batch
        repeated = {r.source: r for r in batch.altered if r.reason == "duplicate_key"}
        if not repeated:
            return batch
        batch.altered = [r for r in batch.altered if r.source not in repeated]
        for reject in batch.rejects:
            if (r := repeated.pop(reject.source, None)) is not None:
                reject.findings += r.findings
        if not strict:
            for r in repeated.values():
                batch.dropped.update(r.details["dropped_values"])
                batch.altered.append(r)
            return batch
        out: Batch[Any] = batch.carry()
        for item, source in zip(batch.items, batch.sources, strict=True):
            if (r := repeated.get(source)) is not None:
                out.rejects.append(Reject(source, [dataclasses.replace(f, severity="error") for f in r.findings],
                                          r.row, r.details))
            else:
                out.add(item, source)
        return out

    return stage


def read_think(record: Record) -> None:
    """Each answer's leading think block read as its reasoning_content (`--split-think`), in place."""
    for key in ("messages", "prompt", "chosen", "rejected", "completion"):
        for i, m in enumerate(record.get(key) or ()):
            if m["role"] == "assistant" and "reasoning_content" not in m:
                reasoning, content = split_think(m["content"])
                if reasoning is not None:
                    record[key][i] = {**m, "content": content, "reasoning_content": reasoning}


def from_records(batches: Iterable[Batch[Record]], fmt: str, options: Any, ids: bool = True,
                 media: MediaOut | None = None, tool_calls: str | None = None) -> Iterator[Batch[Any]]:
    """Stage: canonical records -> rows of `fmt`, with the carried columns beside them; a record the format cannot
    express becomes a reject, and what it has no place for (a developer role in sharegpt, tool-call ids in lf_parts)
    is counted as a dropped field. A record's media are first put as the format takes them (its `MEDIA`: inlined as
    data URLs, or files relative to `media.folder`; default: rows written in the current folder); a format without
    `MEDIA` refuses a record that has media. With `tool_calls` (a dialect of `formats.toolcalls`) structured tool
    calls and results are written into the text first."""
    mod = module(fmt)
    if not hasattr(mod, "write"):
        raise PrepError(f"{fmt} is read-only; write one of {', '.join(WRITABLE)}")
    spelling = getattr(mod, "MEDIA", None)

    def write(record: Record, source: Source) -> tuple[Any, list[str]]:
        dropped: list[str] = []
        if tool_calls:
            record, dropped = collecting(toolcalls.write_calls, record, tool_calls)
        if record.get("media"):
            if spelling is None:
                raise not_expressible(fmt, "images, videos or audio", "$.media",
                                      hint="convert multimodal rows to openai, trl, sharegpt, alpaca or lf_parts")
            record = {**record, "media": (media or MediaOut.beside("-")).place(record["media"], spelling)}
        row, more = collecting(mod.write, record, options)
        dropped += more
        if "chat_template_kwargs" in record or "columns" in record:
            extra = {**({"chat_template_kwargs": record["chat_template_kwargs"]} if "chat_template_kwargs" in record
                        else {}), **record.get("columns", {})}
            row = {**row, **{k: v for k, v in extra.items() if k not in row}}
        return ({"id": record["id"], **row} if ids else row), dropped

    return map(_dropped_stage(write, Fields()), batches)


def detect_file(batches: Iterator[Batch[Any]], name: str) -> tuple[str, Iterator[Batch[Any]]]:
    """Detect a file's format from its first object row, without losing the batches read to find it."""
    seen: list[Batch[Any]] = []
    for batch in batches:
        seen.append(batch)
        row = next((x for x in batch.items if isinstance(x, dict)), None)
        if row is not None:
            fmt = detect(row)
            if fmt is None:
                raise PrepError(f"{name}: cannot tell the format from the first row (fields: "
                                f"{', '.join(sorted(row)[:12])}); name it, e.g. `prep convert alpaca {name} ...`")
            return fmt, _chain(seen, batches)
    return "text", iter(seen)  # nothing but unreadable lines: every row is already a reject


def _chain(first: list[Batch[Any]], rest: Iterator[Batch[Any]]) -> Iterator[Batch[Any]]:
    yield from first
    yield from rest


def read_records(paths: Iterable[str], fmt: str = "auto", settings: dict[str, Any] | None = None,
                 container: str | None = None, txt_split: str = "file",
                 on_file: Any = None, max_row_bytes: int = MAX_ROW_BYTES,
                 fields: Fields = Fields(), root: str | None = None) -> Iterator[Batch[Record]]:
    """Canonical records from files, detecting each file's format unless `fmt` names one; media paths are resolved
    from `root` (`--media-root`), else from each file's folder.

    `on_file(path, fmt)` is told which format each file was read as."""
    for path in paths:
        batches = read_rows(path, container, txt_split, max_row_bytes=max_row_bytes)
        name = fmt
        if fmt == "auto" and (container or split_suffix(path)[0]) == "txt":
            name = "text"
        elif fmt == "auto":
            name, batches = detect_file(batches, path)
        if on_file:
            on_file(path, name)
        yield from to_records(batches, name, reader_options(name, settings, path, root), fields)
