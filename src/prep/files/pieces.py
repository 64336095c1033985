"""Work planning for `--engine ray`: an input cut into pieces of whole batches that workers read on their own,
each row keeping the line, row number and id it has when the whole file is read."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import IO

from prep.core.options import MAX_ROW_BYTES
from prep.files.paths import split_suffix
from prep.files.streams import UTF8_BOM, TooLarge, binary_lines, text_encoding

BATCH_ROWS = 1024  # rows in a batch the readers yield; a piece holds whole batches


@dataclass(frozen=True, slots=True)
class Piece:
    """A part of one input file that a worker reads on its own (`--engine ray`): the whole file, or for a plain
    JSONL file a run of whole lines from byte `seek` on, with the lines, rows and bytes before it, so every row
    keeps the line, row number and id it has when the whole file is read. A file's pieces end where one of the
    reader's batches ends (a multiple of `BATCH_ROWS` rows), so the batches, and what each stage makes of them,
    are the whole file's."""

    path: str
    seek: int = 0  # where the piece starts in the file
    lines: int | None = None  # lines in the piece (None: to the end of the file)
    line: int = 0  # lines before the piece
    row: int = 0  # rows (non-blank lines) before the piece
    offset: int = 0  # bytes before the piece as the reader counts them (a UTF-8 BOM left out), for its findings


def pieces(path: str, container: str | None = None, rows: int = BATCH_ROWS,
           limit: int = MAX_ROW_BYTES) -> list[Piece]:
    """`path` as pieces of `rows` rows (a multiple of BATCH_ROWS): one piece unless it is plain UTF-8 JSONL,
    which is cut after every `rows`-th row. One pass over the bytes, line by line as the reader takes them (a
    line over `limit` is one row, skipped past), parsing nothing."""
    if rows % BATCH_ROWS:
        raise ValueError(f"pieces hold whole batches: {rows} is not a multiple of {BATCH_ROWS}")
    kind, compression = split_suffix(path) if path != "-" else (None, None)
    if path == "-" or (container or kind) != "jsonl" or compression or not os.path.isfile(path):
        return [Piece(path)]
    found: list[Piece] = []
    start = Piece(path)
    offset = line = row = 0
    with open(path, "rb") as f:
        head = f.peek(64)[:64]
        if text_encoding(head, path) == "utf-16":
            return [Piece(path)]
        seek = len(UTF8_BOM) if head.startswith(UTF8_BOM) else 0  # the reader drops a BOM: not in its offsets
        for line, raw in enumerate(binary_lines(f, path, limit), 1):  # noqa: B007 - the last line ends the piece
            size = raw.size if isinstance(raw, TooLarge) else len(raw)
            seek += size
            offset += size
            if not isinstance(raw, TooLarge) and (not raw or raw.isspace()):
                continue
            row += 1
            if row % rows == 0:
                found.append(replace(start, lines=line - start.line))
                start = Piece(path, seek, None, line, row, offset)
    if start.line < line or not found:
        found.append(start)
    return found


def joined(run: Sequence[Piece]) -> Piece:
    """Consecutive pieces of one file as one."""
    lines = None if run[-1].lines is None else sum(p.lines or 0 for p in run)
    return replace(run[0], lines=lines)


def cut(files: Sequence[Sequence[Piece]], parts: int, most: int = 16) -> list[list[Piece]]:
    """Each file's pieces joined into runs of whole batches so that all the files make about `parts` parts, none
    of more than `most` batches (a piece holds one batch)."""
    batches = sum(len(run) for run in files)
    size = max(1, min(most, batches // max(parts, 1)))
    return [[joined(run[k:k + size]) for k in range(0, len(run), size)] for run in files]


def piece_lines(stream: IO[bytes], name: str, piece: Piece, limit: int) -> Iterator[bytes | TooLarge]:
    """The piece's lines: from the file's start (BOM and UTF-16 handled there), else from its byte on."""
    if piece.seek:
        stream.seek(piece.seek)
    lines = binary_lines(stream, name, limit, start=not piece.seek)
    return lines if piece.lines is None else itertools.islice(lines, piece.lines)

