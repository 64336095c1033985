"""JSON values as rows: the strict decoder every reader shares, unpaired surrogates found, and a `.json` document
(an array of rows, or an object holding one) read one value at a time, so a large file never sits in memory."""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterator
from typing import IO, Any

from prep.core.findings import Finding, PrepError, Source
from prep.files.streams import ENCODING_HINT, PREVIEW, UTF8_BOM, text_encoding

# A top-level JSON object whose value under one of these keys is an array is a container of rows
# (CoQA's {"version", "data": [...]}, exports with "rows"/"examples"); any other object is one row.
CONTAINER_KEYS = ("data", "rows", "examples", "records", "instances", "items", "train")

_BLANKS = re.compile(r"[ \t\r\n]*")
# UTF-8 text cannot hold a UTF-16 surrogate, so a decoded JSON value holds one only through an escape like
# \ud800: rows whose text has none (nearly all) are not walked.
SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_BLANK_CHARS = " \t\r\n"
# After a value in an array: the comma and the blanks around it, so the next value can be read at once.
_NEXT_ELEMENT = re.compile(r"[ \t\r\n]*,[ \t\r\n]*")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


STRICT_JSON = json.JSONDecoder(parse_constant=_no_constant)
Item = tuple[Source, Any, "Finding | None"]


def lone_surrogate(value: Any, path: str = "$") -> Finding | None:
    """A finding for the first string (or key) in `value` holding an unpaired UTF-16 surrogate, which
    JSON can spell (\\ud800) but UTF-8 cannot hold: no output file or tokenizer could take the row."""
    if isinstance(value, str):
        if m := _SURROGATE.search(value):
            return Finding("lone_surrogate", f"an unpaired surrogate at character {m.start()}",
                           "remove the unpaired UTF-16 surrogate escape (\\ud800-\\udfff); it cannot be written "
                           "as UTF-8", path)
        return None
    if isinstance(value, dict):
        for k, v in value.items():
            if found := lone_surrogate(k, path) or lone_surrogate(v, f"{path}.{k}"):
                return found
    elif isinstance(value, list):
        for i, v in enumerate(value):
            if found := lone_surrogate(v, f"{path}[{i}]"):
                return found
    return None


class TooDeep(Exception):
    """A value nested deeper than the decoder can follow."""


class JsonDocument:
    """Incremental reader over a JSON document: decodes one value at a time, counting lines."""

    def __init__(self, stream: IO[bytes], name: str) -> None:
        self.stream, self.name = stream, name
        self.encoding = "utf-8"
        self.decoder = codecs.getincrementaldecoder(self.encoding)()
        self.buf, self.pos, self.line, self.bytes, self.eof = "", 0, 1, 0, False
        self.started = False
        self.escapes = False  # whether the last value's text holds a surrogate escape
        self.escape_at = -1  # where the buffer's next "\\u" is (-1: none ahead)

    def _fill(self, size: int = 1 << 20) -> bool:
        if self.eof:
            return False
        chunk = self.stream.read(max(size, 1 << 20))
        try:
            if not self.started:
                self.started = True
                self.encoding = text_encoding(chunk[:64], self.name)
                self.decoder = codecs.getincrementaldecoder(self.encoding)()
                chunk = chunk.removeprefix(UTF8_BOM)
            text = self.decoder.decode(chunk, final=not chunk)
        except UnicodeDecodeError as e:
            raise PrepError(f"{self.name}: invalid {self.encoding.upper()} at byte {self.bytes + e.start}; "
                            f"{ENCODING_HINT}") from None
        self.bytes += len(chunk)
        self.eof = not chunk
        self._carry_escape(chunk)
        self.buf = self.buf[self.pos:] + text
        self.pos = 0
        if self.escape_at == -2:
            self.escape_at = self.buf.find("\\u")
        return bool(chunk)

    def _carry_escape(self, chunk: bytes) -> None:
        """`escape_at` for the buffer about to be buf[pos:] + the chunk's text; -2: search the new buffer. A
        chunk of UTF-8 holds "\\u" exactly where its text does, and bytes are searched many times faster."""
        if 0 <= self.escape_at < self.pos:  # passed: nothing is known about the rest of the part kept
            self.escape_at = self.buf.find("\\u", self.pos)
        if self.escape_at >= 0:
            self.escape_at -= self.pos
        elif self.encoding != "utf-8" or b"\\u" in chunk or (chunk[:1] == b"u" and self.buf.endswith("\\")):
            self.escape_at = -2

    def _escaped(self, start: int, end: int) -> bool:
        """Whether buf[start:end] spells a surrogate escape. The buffer's next "\\u" is looked for once and
        kept, not per value: most files have none, and a search per value costs as much as decoding it."""
        if 0 <= self.escape_at < start:
            self.escape_at = self.buf.find("\\u", start)
        return 0 <= self.escape_at < end and SURROGATE_ESCAPE.search(self.buf, start, end) is not None

    def _advance(self, end: int) -> None:
        self.line += self.buf.count("\n", self.pos, end)
        self.pos = end

    def peek(self) -> str:
        """The next non-blank character ('' at the end), consuming the blanks before it."""
        if self.pos < len(self.buf) and self.buf[self.pos] not in _BLANK_CHARS:  # no blanks to skip (most calls)
            return self.buf[self.pos]
        while True:
            self._advance(_BLANKS.match(self.buf, self.pos).end())
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self._fill():
                return ""

    def take(self, char: str) -> None:
        found = self.peek()
        if found != char:
            self.fail(f"expected {char!r} but found {found!r}" if found else f"expected {char!r} but the file ended")
        self._advance(self.pos + 1)

    def value(self) -> Any:
        """The next value; one nested too deep to decode is a PrepError for the file (see `element`)."""
        try:
            return self.element()
        except TooDeep:
            self.fail("a value nests arrays or objects deeper than can be read")
            raise

    def element(self) -> Any:
        """The next value, or TooDeep (the caller may `skip` it and read on)."""
        self.peek()
        while True:
            try:
                value, end = STRICT_JSON.raw_decode(self.buf, self.pos)
                if end < len(self.buf) or self.eof:
                    self.escapes = self._escaped(self.pos, end)
                    self._advance(end)
                    return value
            except ValueError as e:
                if self.eof:
                    self.fail(e.msg if isinstance(e, json.JSONDecodeError) else str(e))
            except RecursionError:
                raise TooDeep from None
            self._fill(len(self.buf))  # a value may end past the buffer: read on and try again

    def skip(self) -> None:
        """Move past the value at `pos` without decoding it (one nested too deep to decode): its brackets counted
        outside strings, the buffer refilled as it goes, so the value is never held whole."""
        depth, in_string, escaped = 0, False, False
        while True:
            buf, i = self.buf, self.pos
            while i < len(buf):
                c = buf[i]
                if in_string:
                    if escaped:
                        escaped = False
                    elif c == "\\":
                        escaped = True
                    elif c == '"':
                        in_string = False
                elif c == '"':
                    in_string = True
                elif c in "[{":
                    depth += 1
                elif c in "]}":
                    depth -= 1
                    if depth == 0:
                        self._advance(i + 1)
                        return
                i += 1
            self._advance(i)
            if not self._fill():
                self.fail("the file ends inside a value")

    def fail(self, message: str) -> None:
        raise PrepError(f"{self.name}:{self.line}: invalid JSON ({message}); the rest of the file cannot be read, "
                        "fix it there or convert the file to JSONL so bad lines can be skipped")


def read_json(stream: IO[bytes], name: str) -> Iterator[Item]:
    doc = JsonDocument(stream, name)
    first = doc.peek()
    row = 0

    def elements() -> Iterator[Item]:
        nonlocal row
        doc.take("[")
        if doc.peek() == "]":
            doc.take("]")
            return
        while True:
            row += 1
            doc.peek()
            line = doc.line
            try:
                value = doc.element()
            except TooDeep:  # this row is a reject; the rows after it are read on
                preview = doc.buf[doc.pos:doc.pos + PREVIEW]
                doc.skip()
                yield Source(name, line, row), preview, Finding(
                    "too_deep", "the value nests arrays or objects deeper than can be read", "flatten the row")
            else:
                yield Source(name, line, row), value, lone_surrogate(value) if doc.escapes else None
            sep = _NEXT_ELEMENT.match(doc.buf, doc.pos)
            if sep and sep.end() < len(doc.buf):  # the next value starts in the buffer: skip the comma at once
                doc._advance(sep.end())
            elif doc.peek() == ",":
                doc.take(",")
            else:
                doc.take("]")
                return

    if first == "[":
        yield from elements()
    elif first == "{":
        doc.take("{")
        whole: dict[str, Any] = {}
        streamed = False
        while doc.peek() != "}":
            if whole or streamed:
                doc.take(",")
            key = doc.value()
            doc.take(":")
            if key in CONTAINER_KEYS and not streamed and doc.peek() == "[":
                streamed = True
                yield from elements()
            else:
                whole[key] = doc.value()
        doc.take("}")
        if not streamed:
            yield Source(name, 1, 1), whole, lone_surrogate(whole)
    elif first:
        doc.fail("a .json file must hold an array of rows or an object")
    if doc.peek():
        doc.fail("extra data after the end of the JSON document")

