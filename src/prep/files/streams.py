"""Files as streams of bytes and lines: plain, .gz, .zst or standard input; a BOM dropped, UTF-16 transcoded,
a line over the row limit read past instead of kept, invalid UTF-8 found. Arrow is loaded here on first use."""

from __future__ import annotations

import codecs
import gzip
import io
import sys
from collections.abc import Iterator
from typing import IO, Any

from prep.core.findings import Finding, PrepError
from prep.core.options import MAX_ROW_BYTES
from prep.files.paths import split_suffix

UTF8_BOM = codecs.BOM_UTF8
_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
ENCODING_HINT = "re-encode the file as UTF-8, e.g. `iconv -f latin1 -t utf-8 IN > OUT`"
PREVIEW = 200  # characters of a row kept to show it


def arrow() -> Any:
    """pyarrow, imported on first use: it costs a quarter second at start-up, and plain
    JSONL/CSV runs never need it."""
    import pyarrow  # noqa: PLC0415 - start-up time: Arrow only for Parquet and zstd

    return pyarrow


def arrow_errors() -> tuple[type[Exception], ...]:
    """Arrow's exceptions, if Arrow is in use (it cannot have raised anything otherwise)."""
    return (sys.modules["pyarrow"].ArrowException,) if "pyarrow" in sys.modules else ()


def open_binary(path: str) -> IO[bytes]:
    if path == "-":
        return sys.stdin.buffer
    _, compression = split_suffix(path)
    try:
        if compression == "gzip":
            return gzip.open(path, "rb")
        if compression == "zstd":
            pa = arrow()
            return io.BufferedReader(pa.CompressedInputStream(pa.OSFile(path, "rb"), "zstd"))
        return open(path, "rb")  # noqa: SIM115 - closed by the caller's ExitStack
    except OSError as e:
        raise PrepError(f"{path}: cannot open: {e.strerror or e}") from None


def text_encoding(head: bytes, name: str) -> str:
    """"utf-8" or "utf-16" (with a BOM) from a file's first bytes; refuse text in other encodings
    that would otherwise come out as a column of garbage rows (UTF-16/32 without a BOM: every second or fourth byte
    of ASCII text is NUL). A stray NUL in UTF-8 text is the row's problem (a per-row finding), not the file's."""
    if head.startswith(_UTF16_BOMS):
        return "utf-16"
    if head.count(b"\x00") * 4 >= len(head) > 0:
        raise PrepError(f"{name}: NUL bytes throughout the start: this is UTF-16 or UTF-32 without a byte-order mark, "
                        f"or not a text file; {ENCODING_HINT.replace('latin1', 'utf-16le')}")
    return "utf-8"


def _head(stream: IO[bytes]) -> bytes:
    return stream.peek(64)[:64] if hasattr(stream, "peek") else b""


class TooLarge:
    """A line longer than the row limit, in place of its bytes (which were skipped, not kept): its size and start."""

    def __init__(self, head: bytes, size: int, limit: int) -> None:
        self.head, self.size, self.limit = head, size, limit

    def finding(self) -> Finding:
        return Finding("too_large", f"the row is {self.size:,} bytes, over the limit of {self.limit:,}; it was not "
                       "read", "split the row, or raise --max-row-bytes if rows this large are meant")

    def preview(self) -> str:
        return self.head.decode("utf-8", "replace") + f"… ({self.size:,} bytes, not kept)"


def binary_lines(stream: IO[bytes], name: str, limit: int = MAX_ROW_BYTES, start: bool = True
                  ) -> Iterator[bytes | TooLarge]:
    """Lines as UTF-8 bytes: a UTF-8 BOM is dropped, a UTF-16 file (with BOM) is transcoded as it streams. A line
    longer than `limit` bytes comes as a TooLarge, read past in 1 MB pieces: memory stays within the limit.
    `start=False`: the stream is mid-file (a JSONL piece), where neither a BOM nor UTF-16 is looked for."""
    if start and text_encoding(_head(stream), name) == "utf-16":
        text = io.TextIOWrapper(stream, encoding="utf-16", newline=None)
        try:
            for line in text:
                yield line.encode("utf-8")
        except UnicodeDecodeError as e:
            raise PrepError(f"{name}: invalid UTF-16 ({e.reason}); {ENCODING_HINT.replace('latin1', 'utf-16')}") \
                from None
        finally:
            text.detach()  # the caller owns (and closes) the stream
        return
    first = start
    while line := stream.readline(limit + 1):
        if first:
            first = False
            line = line.removeprefix(UTF8_BOM)
        if len(line) <= limit or line.endswith(b"\n"):
            yield line
            continue
        size, head = len(line), line[:PREVIEW]
        del line
        while more := stream.readline(1 << 20):
            size += len(more)
            if more.endswith(b"\n"):
                break
        yield TooLarge(head, size, limit)


def decoded(raw: bytes, offset: int, where: str) -> tuple[str, Finding | None]:
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as e:
        return raw.decode("utf-8", "replace"), Finding(
            "invalid_utf8", f"invalid UTF-8 at byte {offset + e.start} of the file ({where})", ENCODING_HINT)

