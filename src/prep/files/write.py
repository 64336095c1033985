"""Rows out to files: .jsonl .json .csv .tsv .parquet, optionally .gz/.zst, and `-`, written whole or not at all
(atomic.Staged). CSV and Parquet need every column first, so their rows are spooled as JSONL."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from prep.core.findings import PrepError
from prep.core.options import CONTAINERS
from prep.files.atomic import AllOrNothing, Staged
from prep.files.paths import split_suffix
from prep.files.pieces import BATCH_ROWS
from prep.files.streams import arrow

if TYPE_CHECKING:
    import pyarrow as pa


# One C encoder for every row (json.dumps builds a JSONEncoder per call when given options): the same text as
# json.dumps(row, ensure_ascii=False), about 1.6x faster. No circular-reference check: rows are JSON values.
_encode = json.encoder.c_make_encoder(  # type: ignore[attr-defined]
    None, json.JSONEncoder().default, json.encoder.encode_basestring, None, ": ", ", ", False, False, True,
) if json.encoder.c_make_encoder else None  # type: ignore[attr-defined]


def dumps(row: Any) -> str:
    """`json.dumps(row, ensure_ascii=False)`, as rows are written."""
    return "".join(_encode(row, 0)) if _encode else json.dumps(row, ensure_ascii=False)


def _cell(value: Any) -> str:
    """A CSV cell: strings as they are, everything else as JSON (so lists and booleans round-trip)."""
    if isinstance(value, str):
        return value
    return "" if value is None else json.dumps(value, ensure_ascii=False)


class RowWriter(AllOrNothing):
    """Writes rows to a temporary file beside `path` (or to standard output for `-`); `close()` puts it in place,
    `abort()` drops it (see atomic.Staged)."""

    def __init__(self, path: str, container: str | None = None) -> None:
        self.path = path
        suffix_container, self.compression = split_suffix(path) if path != "-" else (None, None)
        self.container = container or suffix_container or "jsonl"
        if self.container not in CONTAINERS or self.container == "txt":
            raise PrepError(f"{path}: cannot write {self.container!r}; write .jsonl, .json, .csv, .tsv or .parquet")
        if path == "-" and self.container == "parquet":
            raise PrepError("Parquet cannot be written to stdout; give -o FILE.parquet")
        if path != "-" and os.path.isdir(path):
            raise PrepError(f"{path}: is a folder; give a file name to write")
        self.rows = 0
        self.staged = None if path == "-" else Staged(path)
        # CSV needs every column before the header, Parquet one schema: both spool rows as JSONL first.
        spooled = self.container in ("csv", "tsv", "parquet")
        self.spool = self.staged.scratch() if self.staged and spooled else None
        if self.staged is None:
            self.out: IO[bytes] = sys.stdout.buffer
        else:
            self.out = self._open_out(self.spool or self.staged.path, compress=self.spool is None)
        if self.container == "json":
            self.out.write(b"[")

    def _open_out(self, path: Path, compress: bool) -> IO[bytes]:
        if compress and self.compression:
            # Arrow's gzip header has no file name and no time (Python's gzip would record the
            # temporary name): same rows, same bytes.
            pa = arrow()
            return pa.CompressedOutputStream(pa.OSFile(str(path), "wb"), self.compression)
        return open(path, "wb")  # noqa: SIM115 - closed in close()/abort()

    def write(self, rows: Iterable[Any]) -> None:
        lines = [dumps(r) for r in rows]
        if not lines:
            return
        try:
            data = self._joined(lines).encode("utf-8")
        except UnicodeEncodeError:
            data = self._joined([_utf8_line(line, self.rows + k + 1, self) for k, line in enumerate(lines)]).encode()
        with self._named():
            self.out.write(data)
        self.rows += len(lines)

    def append(self, path: str | Path, rows: int) -> None:
        """Copy the `rows` JSONL lines another RowWriter wrote to `path` (a Ray worker's part) after the rows here:
        the bytes writing those rows here would give."""
        if self.container != "jsonl":
            raise PrepError(f"{self.path}: only JSONL lines can be appended")
        with open(path, "rb") as f, self._named():
            shutil.copyfileobj(f, self.out)
        self.rows += rows

    def write_lines(self, data: bytes, rows: int) -> None:
        """`rows` rows already encoded as `write` encodes them, UTF-8 JSONL lines with their newlines (a fast
        lane's rows, formats.chat_lines): written as they are. JSONL only."""
        if self.container != "jsonl":
            raise PrepError(f"{self.path}: only JSONL lines can be written as they are")
        with self._named():
            self.out.write(data)
        self.rows += rows

    @contextlib.contextmanager
    def _named(self) -> Iterator[None]:
        """An OS error without a file name (a full disk on write or close) names this writer's output, so a verb
        writing rows and rejects says which of them the disk refused."""
        try:
            yield
        except OSError as e:
            if e.filename is None and self.path != "-":
                e.filename = self.path
            raise

    def _joined(self, lines: list[str]) -> str:
        if self.container == "json":
            return ("\n" if self.rows == 0 else ",\n") + ",\n".join(lines)
        return "\n".join(lines) + "\n"

    def close(self) -> None:
        """Finish the file and move it into place; if that fails (a full disk), nothing half-written is left."""
        if self.staged is None:  # stdout
            self._end()
            self.out.flush()
            return
        staged = self.staged
        try:
            with self._named():
                staged.close(lambda: self._finish(staged.path))
        except BaseException:
            self.abort()
            raise

    def _end(self) -> None:
        if self.container == "json":
            self.out.write(b"\n]\n" if self.rows else b"]\n")

    def _finish(self, tmp: Path) -> None:
        self._end()
        self.out.close()
        if self.spool:
            if self.container == "parquet":
                _spool_to_parquet(self.spool, tmp)
            else:
                with self._open_out(tmp, compress=True) as out:
                    _spool_to_csv(self.spool, out, "," if self.container == "csv" else "\t")

    def abort(self) -> None:
        """Drop whatever was written: no half-written output is left behind."""
        if self.staged is not None:
            with contextlib.suppress(Exception):
                self.out.close()
            self.staged.abort()


def _utf8_line(line: str, row: int, writer: RowWriter) -> str:
    """A row's JSON that UTF-8 can hold. A string with an unpaired surrogate (JSON can spell one, UTF-8
    cannot; readers reject such rows, so it is a caller's own value or a kept reject) is written with JSON
    escapes, which read back as the same value; CSV and Parquet have no way to hold it."""
    try:
        line.encode("utf-8")
        return line
    except UnicodeEncodeError as e:
        if writer.spool:
            raise PrepError(f"{writer.path}: row {row} holds an unpaired surrogate ({line[e.start]!r}), which "
                            f"{writer.container.upper()} cannot hold; reject the row or write JSON/JSONL") from None
        return json.dumps(json.loads(line), ensure_ascii=True)


def _spooled(spool: Path) -> Iterator[list[dict[str, Any]]]:
    with open(spool, "rb") as f:
        chunk: list[dict[str, Any]] = []
        for line in f:
            chunk.append(json.loads(line))
            if len(chunk) >= BATCH_ROWS * 8:
                yield chunk
                chunk = []
        if chunk:
            yield chunk


def _spool_to_csv(spool: Path, out: IO[bytes], delimiter: str) -> None:
    columns: dict[str, None] = {}
    for chunk in _spooled(spool):
        for row in chunk:
            columns.update(dict.fromkeys(row))
    text = io.TextIOWrapper(out, encoding="utf-8", newline="")
    writer = csv.writer(text, delimiter=delimiter, lineterminator="\n")
    writer.writerow(columns)
    for chunk in _spooled(spool):
        writer.writerows([_cell(row.get(c)) for c in columns] for row in chunk)
    text.flush()
    text.detach()


def _spool_to_parquet(spool: Path, out: Path) -> None:
    """One schema for all rows: every column any row has (absent: null), each column's Arrow
    type unified over all rows; a column whose values cannot share a type (tool arguments of
    different shapes, numbers beside strings) is stored as JSON text instead."""
    pa = arrow()
    columns: dict[str, None] = {}
    for chunk in _spooled(spool):
        for row in chunk:
            columns.update(dict.fromkeys(row))
    types: dict[str, pa.DataType | None] = {}  # None: JSON text
    for chunk in _spooled(spool):
        for c in columns:
            if c in types and types[c] is None:
                continue
            try:
                found = pa.array([row.get(c) for row in chunk]).type
                if c in types:
                    found = pa.unify_schemas([pa.schema([(c, types[c])]), pa.schema([(c, found)])],
                                             promote_options="permissive").field(c).type
                types[c] = found
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError):
                types[c] = None
    schema = pa.schema([(c, types.get(c) or pa.string()) for c in columns])

    def table(chunk: list[dict[str, Any]]) -> pa.Table:
        arrays = [pa.array([row.get(c) if types.get(c) else _json_text(row.get(c)) for row in chunk],
                           type=schema.field(c).type) for c in columns]
        return pa.Table.from_arrays(arrays, schema=schema)

    _write_parquet((table(chunk) for chunk in _spooled(spool)), schema, out)


def _json_text(value: Any) -> str | None:
    return value if value is None or isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _write_parquet(tables: Iterable[pa.Table], schema: pa.Schema, out: Path) -> None:
    import pyarrow.parquet as pq  # noqa: PLC0415 - start-up time: Arrow only for Parquet and zstd

    with pq.ParquetWriter(out, schema, compression="zstd") as writer:
        for table in tables:
            writer.write_table(table)
