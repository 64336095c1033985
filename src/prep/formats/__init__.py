"""The format registry: which module reads or writes which layout, detection, and the two
conversion stages (rows -> canonical records -> rows) every verb builds on."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from types import ModuleType
from typing import Any

from prep.core.findings import Batch, PrepError, Source, per_row
from prep.core.options import MAX_ROW_BYTES
from prep.core.records import Record, record_id
from prep.files import read_rows, split_suffix
from prep.formats import alpaca, autotrain, coqa, openai, sharegpt, text, trl

# Detection order matters: the most specific layouts first, bare `text` last.
FORMATS: dict[str, ModuleType] = {m.NAME: m for m in (coqa, openai, sharegpt, alpaca, autotrain, trl, text)}
READABLE = tuple(FORMATS)
WRITABLE = tuple(name for name, m in FORMATS.items() if hasattr(m, "write"))


def module(name: str) -> ModuleType:
    if name not in FORMATS:
        raise PrepError(f"unknown format {name!r}; one of {', '.join(FORMATS)}")
    return FORMATS[name]


def make_options(name: str, settings: dict[str, Any] | None = None) -> Any:
    """The format's Options, filled from whichever `settings` it has fields for (None: column unused)."""
    cls = module(name).Options
    known = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in (settings or {}).items() if k in known})


def detect(row: Any) -> str | None:
    """The first format whose `detect` accepts this row, or None."""
    if not isinstance(row, dict):
        return None
    return next((name for name, m in FORMATS.items() if m.detect(row)), None)


def to_records(batches: Iterable[Batch[Any]], fmt: str, options: Any) -> Iterator[Batch[Record]]:
    """Stage: raw rows -> canonical records; a row the reader refuses becomes a reject."""
    read = module(fmt).read
    return map(per_row(lambda row, source: {"id": record_id(row, source), **read(row, options)}), batches)


def from_records(batches: Iterable[Batch[Record]], fmt: str, options: Any, ids: bool = True) -> Iterator[Batch[Any]]:
    """Stage: canonical records -> rows of `fmt`; a record the format cannot express becomes a reject."""
    mod = module(fmt)
    if not hasattr(mod, "write"):
        raise PrepError(f"{fmt} is read-only; write one of {', '.join(WRITABLE)}")

    def write(record: Record, source: Source) -> Any:
        row = mod.write(record, options)
        return {"id": record["id"], **row} if ids else row

    return map(per_row(write), batches)


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
                 on_file: Any = None, max_row_bytes: int = MAX_ROW_BYTES) -> Iterator[Batch[Record]]:
    """Canonical records from files, detecting each file's format unless `fmt` names one.

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
        yield from to_records(batches, name, make_options(name, settings))
