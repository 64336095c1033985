"""Byte-level checks the row readers cannot make: what a file looks like before it is parsed.

`files.read.read_rows` already turns a JSONL/CSV line that is not UTF-8 or not JSON into a reject with
its line and byte offset; it also, silently, skips blank lines, drops a UTF-8 BOM and transcodes
UTF-16. This pass reports those (a peer's loader would fail on them), finds NUL bytes (the mark
of a binary or UTF-16 file read as UTF-8), and for a JSON array file, whose reader stops at the
first undecodable byte, gives that byte's offset and line.
"""

from __future__ import annotations

import codecs
import gzip
import os
import re
import zlib
from dataclasses import dataclass, field

import numpy as np

from prep.core.findings import Finding, PrepError, finding
from prep.files.streams import open_binary

_UTF8_BOM = codecs.BOM_UTF8
_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
_CHUNK = 1 << 20
_READER_HEAD = 64  # read_rows refuses a file with a NUL byte this near its start
_BLANK_LINE = re.compile(rb"\n[ \t\r\x0b\x0c]*\n")  # a whole line of whitespace (bytes.isspace) after a line


@dataclass
class Scan:
    """What the byte pass found. `nul_lines` (JSONL): the finding to report instead of the parse error
    the NUL bytes cause on that line. `readable`: False when the rows cannot be read at all."""

    findings: list[Finding] = field(default_factory=list)
    nul_lines: dict[int, Finding] = field(default_factory=dict)
    readable: bool = True
    size: int = 0
    container: str | None = None


def _at(f: Finding, name: str, line: int) -> Finding:
    return Finding(f.code, f.message, f.hint, f.path, f.severity, name, line)


def _looks_utf16(head: bytes) -> bool:
    """UTF-16 without a BOM: JSON/CSV text whose first character is ASCII with a NUL byte beside it."""
    return len(head) >= 4 and ((head[0] == 0 and head[1] and head[2] == 0) or (head[1] == 0 and head[0] and head[3] == 0))


def scan(path: str, name: str, container: str | None) -> Scan:
    """Check the raw (decompressed) bytes of `path`, reported as file `name`, read as `container`
    (None: tell JSON from JSONL by the first character, as the reader does for stdin)."""
    out = Scan(size=os.path.getsize(path), container=container)
    if container == "parquet":
        return out
    try:
        _scan(path, name, container, out)
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise PrepError(f"{name}: the compressed file is truncated or corrupt ({e}); get a whole copy") from None
    return out


def _scan(path: str, name: str, container: str | None, out: Scan) -> None:
    with open_binary(path) as stream:
        head = stream.read(_CHUNK)
        if container is None:
            first = head.lstrip(_UTF8_BOM).lstrip()[:1]
            out.container = container = {b"[": "json", b"{": "jsonl"}.get(first)
            if container is None and head.strip():
                out.findings.append(_at(finding("unreadable_file", "cannot tell the file type from its name or first "
                                                "bytes", hint="give a .jsonl/.json/.csv/.tsv/.parquet/.txt name or "
                                                "pass --input-type"), name, 0))
                out.readable = False
                return
        if not head.strip():
            out.findings.append(_at(finding("empty_file", "the file is empty" if not head else
                                            "the file holds only whitespace"), name, 0))
            out.readable = False
            return
        if head.startswith(_UTF16_BOMS) or _looks_utf16(head):
            bom = head.startswith(_UTF16_BOMS)
            out.findings.append(_at(finding("utf16_encoding", "the file is UTF-16 " + (
                "(with a byte-order mark), not UTF-8" if bom else "without a byte-order mark; its rows cannot be "
                "read")), name, 1))
            out.readable = bom  # read_rows transcodes UTF-16 that has a BOM
            return
        if b"\x00" in head[:_READER_HEAD]:
            at = head.index(b"\x00")
            out.findings.append(_at(finding("nul_byte", f"NUL byte at byte {at} of the file: binary or UTF-32 "
                                            "text; its rows cannot be read"), name, 1 + head.count(b"\n", 0, at)))
            out.readable = False
            return
        if head.startswith(_UTF8_BOM):
            out.findings.append(_at(finding("utf8_bom", "the file starts with a UTF-8 byte-order mark"), name, 1))
        if container == "jsonl":
            _scan_lines(head, stream, name, out)
        elif container == "json":
            _scan_document(head, stream, name, out)


def _scan_lines(head: bytes, stream: object, name: str, out: Scan) -> None:
    """JSONL: blank lines and NUL bytes, line by line. A line that spans chunks is followed by its length, first
    NUL and blankness, never joined: a 200 MB line costs what its chunks cost."""
    offset, lineno = 0, 0
    size, nul, blank = 0, -1, True  # the line the last chunk ended inside

    def part(piece: bytes) -> None:
        nonlocal size, nul, blank
        if nul < 0 and (k := piece.find(b"\x00")) >= 0:
            nul = size + k
        blank = blank and (not piece or piece.isspace())
        size += len(piece)

    for chunk in _chunks(head, stream):
        end = chunk.rfind(b"\n")  # the chunk's last newline; what follows it is a line the next chunk goes on with
        if end < 0:
            part(chunk)
            continue
        first_end = chunk.find(b"\n")
        first = 0
        if size:  # the line the last chunk ended inside ends here
            lineno += 1
            part(chunk[:first_end])
            _line(lineno, offset, size, nul, blank, name, out)
            offset += size + 1
            size, nul, blank, first = 0, -1, True, 1
        after = _after_newlines(chunk)
        if b"\x00" not in chunk and not (_BLANK_START[after].any() and _BLANK_LINE.search(chunk)) and \
                (first or chunk[:first_end].strip()):
            # most chunks: no NUL, no blank line (every line but the first follows a newline): counted, not walked
            lineno += len(after) + (chunk[-1] == 10) - first
            offset += end + 1 - (first_end + 1 if first else 0)
        else:
            for raw in chunk[:end].split(b"\n")[first:]:
                lineno += 1
                _line(lineno, offset, len(raw), raw.find(b"\x00"), not raw or raw.isspace(), name, out)
                offset += len(raw) + 1
        part(chunk[end + 1:])
    if size:
        _line(lineno + 1, offset, size, nul, blank, name, out)


def _after_newlines(chunk: bytes) -> np.ndarray:
    """The byte after each of the chunk's newlines but a last one (numpy: the chunk is looked at once, where
    `_BLANK_LINE` would stop at every newline): a blank line can begin only after a newline followed by whitespace."""
    codes = np.frombuffer(chunk, np.uint8)
    return codes[np.flatnonzero(codes[:-1] == 10) + 1]


_BLANK_START = np.zeros(256, bool)  # the bytes a blank line's rest can start with: whitespace, or its newline
_BLANK_START[list(b" \t\r\x0b\x0c\n")] = True


def _line(lineno: int, offset: int, size: int, nul: int, blank: bool, name: str, out: Scan) -> None:
    if not size or blank:
        out.findings.append(_at(finding("blank_line", "the line is blank"), name, lineno))
    elif nul >= 0:
        out.nul_lines[lineno] = _at(finding("nul_byte", f"NUL byte at byte {offset + nul} of the file"), name, lineno)


def _scan_document(head: bytes, stream: object, name: str, out: Scan) -> None:
    """A JSON document is read as a whole: report the first NUL byte or invalid UTF-8, with its line."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset, lines = 0, 1
    for chunk in _chunks(head, stream):
        nul = chunk.find(b"\x00")
        carried = len(decoder.getstate()[0])  # bytes of a character split across the chunk boundary
        try:
            decoder.decode(chunk if nul < 0 else chunk[:nul], final=False)
        except UnicodeDecodeError as e:
            bad = e.start - carried
            line = lines + chunk.count(b"\n", 0, max(bad, 0))
            out.findings.append(_at(finding("invalid_utf8", f"invalid UTF-8 at byte {offset + bad} of the file; "
                                            "rows from here on cannot be read"), name, line))
            out.readable = False
            return
        if nul >= 0:
            line = lines + chunk.count(b"\n", 0, nul)
            out.findings.append(_at(finding("nul_byte", f"NUL byte at byte {offset + nul} of the file; rows from "
                                            "here on cannot be read"), name, line))
            out.readable = False
            return
        offset += len(chunk)
        lines += chunk.count(b"\n")
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        out.findings.append(_at(finding("invalid_utf8", f"the file ends inside a UTF-8 character (byte {offset})"),
                                name, lines))
        out.readable = False


def _chunks(head: bytes, stream: object):  # noqa: ANN202 - a plain generator of bytes
    yield head
    while chunk := stream.read(_CHUNK):  # type: ignore[attr-defined]
        yield chunk
