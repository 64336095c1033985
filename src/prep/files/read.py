"""Rows in from files: .jsonl .json .csv .tsv .parquet .txt, optionally .gz/.zst, and `-`.

Readers stream (a 2 GB JSONL never sits in memory) and turn a broken line into a `Reject` with its
line number instead of stopping.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import json
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import repeat
from typing import IO, Any

import msgspec

from prep.core.findings import Batch, Finding, PrepError, Reject, Source
from prep.core.options import CONTAINERS, MAX_CONFIG_BYTES, MAX_ROW_BYTES
from prep.files.errors import ERRNO_WORDS, looping
from prep.files.jsondoc import (
    STRICT_JSON,
    SURROGATE_ESCAPE,
    Item,
    RepeatedKeys,
    lone_surrogate,
    may_repeat_keys,
    read_json,
    repeated_keys,
)
from prep.files.paths import display_name, split_suffix
from prep.files.pieces import BATCH_ROWS, Piece, piece_lines
from prep.files.streams import (
    PREVIEW,
    UTF8_BOM,
    TooLarge,
    arrow_errors,
    binary_lines,
    decoded,
    open_binary,
)

# msgspec refuses NaN/Infinity, lone surrogates, invalid UTF-8 and numbers out of float range, which the careful
# path turns into findings (or, for out-of-range numbers, reads as json does); what it takes, it reads as json does.
_decode_fast = msgspec.json.Decoder().decode

csv.field_size_limit(2**31 - 1)


def config_file(path: str | os.PathLike[str], what: str) -> int:
    """The size of a file prep reads whole as configuration (a template, registry, recipe, tokenizer file), or a
    PrepError when it is no regular file (`/dev/zero`, a FIFO) or larger than MAX_CONFIG_BYTES."""
    st = os.stat(path)  # an OSError (missing, a symlink loop) is the CLI's one line naming the path
    if not stat.S_ISREG(st.st_mode):
        raise PrepError(f"{path}: the {what} must be a regular file" + ("" if stat.S_ISDIR(st.st_mode) else
                        ", not a device, FIFO or socket"))
    if st.st_size > MAX_CONFIG_BYTES:
        raise PrepError(f"{path}: the {what} is {st.st_size / 2**20:.0f} MB; prep reads at most "
                        f"{MAX_CONFIG_BYTES >> 20} MB of configuration")
    return st.st_size


def read_config(path: str | os.PathLike[str], what: str) -> str:
    """A configuration file's text (see config_file), read as UTF-8 and never past the limit (a file that grows
    while read is cut off there and refused)."""
    config_file(path, what)
    with open(path, "rb") as f:
        data = f.read(MAX_CONFIG_BYTES + 1)
    if len(data) > MAX_CONFIG_BYTES:
        raise PrepError(f"{path}: the {what} grew past {MAX_CONFIG_BYTES >> 20} MB while it was read")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise PrepError(f"{path}: the {what} is not UTF-8 text (byte {e.start})") from None


def _sniff_container(stream: IO[bytes], name: str) -> str:
    """For stdin or a file without a known suffix: `[` means a JSON array, `{` means JSONL."""
    head = stream.peek(4096)[:4096] if hasattr(stream, "peek") else b""
    text = head.lstrip(UTF8_BOM).lstrip()
    if text.startswith(b"["):
        return "json"
    if text.startswith(b"{"):
        return "jsonl"
    raise PrepError(f"{name}: cannot tell the file type from its name or first bytes; "
                    "give a .jsonl/.json/.csv/.tsv/.parquet/.txt name or pass --input-type")


def _read_jsonl(stream: IO[bytes], name: str, limit: int = MAX_ROW_BYTES, piece: Piece | None = None
                ) -> Iterator[Item]:
    piece = piece or Piece(name)
    offset, row = piece.offset, piece.row
    for lineno, raw in enumerate(piece_lines(stream, name, piece, limit), piece.line + 1):
        if isinstance(raw, TooLarge):
            offset += raw.size
            row += 1
            yield Source(name, lineno, row), raw.preview(), raw.finding()
            continue
        start, offset = offset, offset + len(raw)
        if not raw or raw.isspace():  # not .strip(): no copy of every line
            continue
        row += 1
        source = Source(name, lineno, row)
        try:  # the fast path: msgspec takes only lines json takes too, and gives the same values (the last of a key)
            value = _decode_fast(raw)
        except (msgspec.MsgspecError, RecursionError):
            pass  # the careful path below says what is wrong with the line (or takes what json takes and msgspec not)
        else:
            repeated = may_repeat_keys(raw, value) and repeated_keys(raw.rstrip(b"\r\n").decode("utf-8"))
            yield source, value, repeated or None
            continue
        text, bad = decoded(raw.rstrip(b"\r\n"), start, f"line {lineno}")
        if bad:
            yield source, text, bad
            continue
        try:
            value = STRICT_JSON.decode(text)
        except RecursionError:
            yield source, text[:PREVIEW], Finding(
                "too_deep", "the line nests arrays or objects deeper than can be read", "flatten the row")
            continue
        except ValueError as e:
            msg = f"{e.msg} at column {e.colno}" if isinstance(e, json.JSONDecodeError) else str(e)
            yield source, text, Finding(
                "bad_json", f"line is not valid JSON: {msg}", "fix or remove the line; each line must hold one JSON object")
            continue
        escaped = b"\\u" in raw and SURROGATE_ESCAPE.search(text)  # bytes first: a faster search than in text
        yield source, value, (lone_surrogate(value) if escaped else None) or (
            repeated_keys(text) if may_repeat_keys(raw, value) else None)


def _read_csv(stream: IO[bytes], name: str, delimiter: str, limit: int = MAX_ROW_BYTES) -> Iterator[Item]:
    """Rows as {column: cell}; a record that cannot be read is rejected with its raw lines.

    Strict quoting: a stray quote must not silently swallow the records after it into one cell."""
    bad: dict[int, Finding] = {}
    pending: dict[int, str] = {}  # the raw lines of the record being read, for rejects

    def text_lines() -> Iterator[str]:
        offset = 0
        for lineno, raw in enumerate(binary_lines(stream, name, limit), 1):
            if isinstance(raw, TooLarge):  # a one-cell placeholder the record's finding replaces
                bad[lineno], offset, pending[lineno] = raw.finding(), offset + raw.size, raw.preview()
                yield "…\n"
                continue
            text, finding = decoded(raw, offset, f"line {lineno}")
            offset += len(raw)
            if finding:
                bad[lineno] = finding
            pending[lineno] = text
            yield text

    def raw_record(first: int, last: int) -> str:
        text = "".join(pending.pop(n, "") for n in range(first, last + 1))
        pending.clear()
        return text

    reader = csv.reader(text_lines(), delimiter=delimiter, strict=True)
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as e:
        raise PrepError(f"{name}:1: cannot read the header: {e}") from None
    if len(set(header)) != len(header) or "" in header:
        raise PrepError(f"{name}:1: the header must name each column once, without blanks: {header}")
    end, row = reader.line_num, 0
    pending.clear()
    while True:
        start = end + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            row += 1
            end = reader.line_num
            if str(e) == "unexpected end of data":
                finding = Finding("bad_csv", f"a quoted field opened in this record is never closed, so lines "
                                  f"{start}-{end} (the rest of the file) were read as one record",
                                  "close the quote, or double a quote that is part of the text (\"\")")
            else:
                finding = Finding("bad_csv", f"unreadable record: {e}",
                                  "quote the whole field, and double quotes inside it (\"\")")
            yield Source(name, start, row), raw_record(start, end), finding
            continue
        end = reader.line_num
        if not cells:
            pending.clear()
            continue
        row += 1
        source = Source(name, start, row)
        broken = next((bad.pop(n) for n in range(start, end + 1) if n in bad), None)
        if not broken and sum(pending.get(n, "").count('"') for n in range(start, end + 1)) % 2:
            # Quotes come in pairs in a well-formed record; an odd count is the tail of a record a stray quote
            # broke (or a stray quote itself): what it holds is a fragment, never a row.
            broken = Finding("bad_csv", "an odd number of quote characters: this record is the rest of a broken "
                             "one, or holds a stray quote", "quote the whole field, and double quotes inside it (\"\")")
        if broken:
            yield source, raw_record(start, end), broken
        elif len(cells) != len(header):
            yield source, raw_record(start, end), Finding(
                "csv_field_count", f"record has {len(cells)} fields but the header has {len(header)}",
                "quote fields that contain the delimiter or a line break")
        else:
            pending.clear()
            yield source, dict(zip(header, cells, strict=True)), None


def drop_nulls(value: Any) -> Any:
    """Arrow structs give every row every field; a null field in a Parquet row means 'absent'."""
    if isinstance(value, dict):
        return {k: drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [drop_nulls(v) for v in value]
    return value


def _read_parquet(path: str, name: str) -> Iterator[Item]:
    if path == "-" or split_suffix(path)[1]:
        raise PrepError(f"{name}: Parquet is read from a plain file (it is compressed inside already)")
    try:
        import pyarrow.parquet as pq  # noqa: PLC0415 - start-up time: Arrow only for Parquet and zstd

        pfile = pq.ParquetFile(path)
    except (OSError, *arrow_errors()) as e:
        raise PrepError(f"{name}: not a readable Parquet file: {e}") from None
    row = 0
    for table in pfile.iter_batches(batch_size=BATCH_ROWS):
        for value in table.to_pylist():
            row += 1
            yield Source(name, row, row), drop_nulls(value), None


def _read_txt(stream: IO[bytes], name: str, split: str, limit: int = MAX_ROW_BYTES) -> Iterator[Item]:
    if split == "file":
        lines: list[bytes] | None = []
        size = 0
        for line in binary_lines(stream, name, limit):
            size += line.size if isinstance(line, TooLarge) else len(line)
            if isinstance(line, TooLarge) or size > limit:
                lines = None  # the document is too large: counted on, not kept
            elif lines is not None:
                lines.append(line)
        if lines is None:
            yield Source(name, 1, 1), f"({size:,} bytes, not kept)", TooLarge(b"", size, limit).finding()
            return
        raw = b"".join(lines)
        text, bad = decoded(raw, 0, "text file")
        if text.strip():
            yield Source(name, 1, 1), text if bad else {"text": text}, bad
        return
    block: list[str] = []
    block_start, offset, row = 0, 0, 0
    problem: Finding | None = None

    def flush() -> Iterator[Item]:
        nonlocal row, problem
        if block:
            row += 1
            text = "".join(block).rstrip("\r\n")
            yield Source(name, block_start, row), text if problem else {"text": text}, problem
        block.clear()
        problem = None

    for lineno, raw in enumerate(binary_lines(stream, name, limit), 1):
        if isinstance(raw, TooLarge):
            yield from flush()
            row += 1
            offset += raw.size
            yield Source(name, lineno, row), raw.preview(), raw.finding()
            continue
        text, bad = decoded(raw, offset, f"line {lineno}")
        offset += len(raw)
        if not text.strip():
            yield from flush()
            continue
        if not block:
            block_start = lineno
        block.append(text)
        problem = problem or bad
        if split == "line":
            yield from flush()
    yield from flush()


def readable_file(path: str) -> str | None:
    """Why `path` cannot be read as a file of rows (None: it can; pipes and /dev/stdin can)."""
    if os.path.isdir(path):
        return "is a folder; give the files in it"
    if not os.path.exists(path):
        return ERRNO_WORDS[errno.ELOOP] if looping(path) else "no such file"
    return None


def read_rows(path: str, container: str | None = None, txt_split: str = "file",
              batch_rows: int = BATCH_ROWS, max_row_bytes: int = MAX_ROW_BYTES,
              piece: Piece | None = None) -> Iterator[Batch[Any]]:
    """Stream one file (or one `piece` of it, see `pieces`) as batches of parsed rows; rows that do not parse come
    as rejects, and so do rows (lines) of more than `max_row_bytes`, which are not read."""
    name = display_name(path)
    if path != "-" and (problem := readable_file(path)):
        raise PrepError(f"{name}: {problem}")
    container = container or split_suffix(path)[0]
    with contextlib.ExitStack() as stack:
        if container == "parquet":
            items = _read_parquet(path, name)
        else:
            stream = stack.enter_context(open_binary(path)) if path != "-" else open_binary(path)
            container = container or _sniff_container(stream, name)
            if container == "jsonl":
                items = _read_jsonl(stream, name, max_row_bytes, piece)
            elif container == "json":
                items = read_json(stream, name)
            elif container in ("csv", "tsv"):
                items = _read_csv(stream, name, "," if container == "csv" else "\t", max_row_bytes)
            elif container == "txt":
                items = _read_txt(stream, name, txt_split, max_row_bytes)
            else:
                raise PrepError(f"{name}: unknown input type {container!r}; one of {', '.join(CONTAINERS)}")
        stack.callback(items.close)  # before the stream closes: a reader closed early leaves no line reader behind
        batch: Batch[Any] = Batch()
        try:
            for source, value, finding in items:
                if finding is None:
                    batch.add(value, source)
                elif isinstance(finding, RepeatedKeys):  # the row goes on, the values left behind are kept and said
                    batch.add(value, source)
                    batch.altered.append(Reject(source, [finding.finding.at(source)], finding.raw,
                                                {"dropped_values": dict(finding.dropped)}))
                else:
                    batch.reject(source, [finding], value)
                if len(batch.items) + len(batch.rejects) >= batch_rows:
                    yield batch
                    batch = Batch()
        except (PrepError, OSError, EOFError, *arrow_errors()) as e:
            # The file broke off (a JSON document that goes wrong, a corrupt .gz): the rows parsed before
            # the break still reach whoever catches the error (validate counts and checks them).
            if batch.items or batch.rejects:
                yield batch
            if isinstance(e, PrepError):
                raise
            raise PrepError(f"{name}: read failed: {e}") from None
        if batch.items or batch.rejects:
            yield batch




@dataclass(frozen=True, slots=True)
class Block:
    """A run of whole lines of a JSONL file for readers that parse many rows at once (validate's proof of clean
    rows; typed or columnar decoders). `piece` says where it is, so the row reader (`read_rows(..., piece=)`) can
    read it again line by line. `lines` holds its lines (without their newlines) when each is one row: non-blank,
    starting with `{`, within the byte limit (a UTF-8 BOM opening the file is left out, as the reader drops it);
    then `lines[k]` is row piece.row + k + 1 at line piece.line + k + 1. Otherwise `lines` is None and the piece
    runs to the end of the file."""

    piece: Piece
    lines: list[bytes] | None


def jsonl_blocks(path: str, rows: int = BATCH_ROWS, limit: int = MAX_ROW_BYTES, chunk: int = 1 << 22
                 ) -> Iterator[Block]:
    """A plain (uncompressed) JSONL file as blocks of `rows` lines, cut where `read_rows` cuts its batches (a block
    the row reader reads again makes the same batch). From the first line that is not a plain row on (a blank
    line, a line that does not start with `{` or is over `limit` bytes), the rest of the file is one block
    without lines, for the row reader. A UTF-8 BOM opening the file is skipped, and left out of the pieces' offsets
    as the reader leaves it out of its own. The lines are split in C, a chunk at a time; memory: a chunk and a
    block."""
    lines: list[bytes] = []  # whole lines read and not yet given out
    tail, eof, line = b"", False, 0
    with open(path, "rb") as f:
        bom = seek = len(UTF8_BOM) if f.read(len(UTF8_BOM)) == UTF8_BOM else 0
        f.seek(seek)
        while True:
            while len(lines) < rows and not eof:
                more = f.read(chunk)
                if not more or len(tail) > limit:  # the end, or a line too long to hold: the row reader reads on
                    eof = True
                    if tail and len(tail) <= limit:
                        lines.append(tail)
                        tail = b""
                    break
                parts = more.split(b"\n")  # not (tail + more): no copy of the chunk
                parts[0] = tail + parts[0]
                lines += parts
                tail = lines.pop()
            block, lines = lines[:rows], lines[rows:]
            if not block and not tail:
                return
            size = sum(map(len, block)) + len(block)  # with the newlines
            if not block or len(block) < rows and tail or size > limit and max(map(len, block)) >= limit or \
                    not all(map(bytes.startswith, block, repeat(b"{"))):
                yield Block(Piece(path, seek, None, line, line, seek - bom), None)
                return
            yield Block(Piece(path, seek, len(block), line, line, seek - bom), block)
            seek += size
            line += len(block)
