"""JSON values as rows: the strict decoder every reader shares, unpaired surrogates found, and a `.json` document
(an array of rows, or an object holding one) read one value at a time, so a large file never sits in memory."""

from __future__ import annotations

import codecs
import json
import re
from collections import Counter
from collections.abc import Iterator
from typing import IO, Any, NamedTuple

import msgspec

from prep.core.findings import Finding, PrepError, Source, finding
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


class RepeatedKeys(NamedTuple):
    """What a reader yields in place of a finding for a row whose objects repeat a key: the row goes on with the
    last value (as every JSON reader keeps it), and this says so (`finding`, a warning), keeps the row as written
    (`raw`, every value in it) and names the values left behind (`dropped`: field paths without indexes)."""

    finding: Finding
    raw: str
    dropped: Counter[str]


Item = tuple[Source, Any, "Finding | RepeatedKeys | None"]

# An upper bound on the keys a row's text holds, cheap enough for every row: each key is followed by one colon
# outside strings, so the text's colons less those inside its decoded strings and keys bound them from above. The
# decoded value encoded again (compact, in C) holds exactly one colon per key plus those inside, so a row whose
# text has no more colons than that repeats no key; only the others are parsed again with their pairs
# (`repeated_keys`). A colon written as the escape \u003a is inside a decoded string but not among the text's
# colons, so those escapes are counted in.
_encode = msgspec.json.Encoder().encode


def _keys_and_colons(value: Any) -> int:
    """The keys of every object in a decoded value plus the colons in its strings and keys: what `_encode` counts,
    for a value it cannot encode (an integer past 64 bits from a .json file)."""
    total = 0
    stack = [value]
    while stack:
        v = stack.pop()
        for x in (v if type(v) is list else (*v, *v.values())):
            if type(x) is str:
                total += x.count(":")
            elif type(x) is dict or type(x) is list:
                stack.append(x)
        total += len(v) if type(v) is dict else 0
    return total


def may_repeat_keys(raw: str | bytes, value: Any) -> bool:
    """Whether the text `raw`, decoded as `value`, may hold an object with a repeated key (False: it holds none);
    the cheap test of every row, `repeated_keys` the exact one. A flat row without colons in its text stops at the
    first count."""
    if type(value) is dict:
        top = len(value)
    elif type(value) is list:
        top = 0
    else:
        return False
    data = raw if isinstance(raw, bytes) else raw.encode("utf-8", "surrogatepass")
    colons = data.count(b":")
    if colons <= top:
        return False
    if b"\\" in data:
        colons += data.count(b"\\u003a") + data.count(b"\\u003A")
    try:
        return colons > _encode(value).count(b":")
    except (msgspec.EncodeError, OverflowError, TypeError):
        return colons > _keys_and_colons(value)


def _pairs_walk(value: Any, repeats: dict[int, tuple[Any, Counter[str]]], path: str, shape: str,
                out: list[tuple[str, str, str, int]]) -> None:
    if isinstance(value, dict):
        if id(value) in repeats:
            out += [(path, shape, k, n) for k, n in repeats[id(value)][1].items()]
        for k, v in value.items():
            _pairs_walk(v, repeats, f"{path}.{k}", f"{shape}.{k}", out)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _pairs_walk(v, repeats, f"{path}[{i}]", f"{shape}[]", out)


def repeated_keys(text: str) -> RepeatedKeys | None:
    """The exact test, on a row `may_repeat_keys` let through: the row's text parsed again with its key/value
    pairs, a warning naming each repeated key and the values dropped (None: no key repeats)."""
    repeats: dict[int, tuple[Any, Counter[str]]] = {}  # the object kept too, so its id stays its own

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        obj = dict(items)
        if len(obj) < len(items):
            repeats[id(obj)] = (obj, Counter(k for k, _ in items) - Counter(obj.keys()))
        return obj

    try:
        value = json.JSONDecoder(object_pairs_hook=pairs, parse_constant=_no_constant).decode(text)
    except (ValueError, RecursionError):
        return None  # the fast reader took it; what the exact one cannot read has no pairs to tell
    if not repeats:
        return None
    found: list[tuple[str, str, str, int]] = []
    _pairs_walk(value, repeats, "$", "", found)
    path, _, key, _ = found[0]
    total = sum(n for *_, n in found)
    where = "the row" if path == "$" else path
    more = f" (and {len(found) - 1} more repeated key{'s' if len(found) > 2 else ''})" if len(found) > 1 else ""
    said = finding("duplicate_key", f"key {key!r} is given more than once in {where}{more}; the last value is read, "
                   f"{total} earlier value{'s' if total > 1 else ''} dropped", f"{path}.{key}")
    return RepeatedKeys(said, text, Counter({f"{shape}.{k}"[1:]: n for _, shape, k, n in found}))


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
        self.repeated: RepeatedKeys | None = None  # the last value's repeated keys
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
                    self.repeated = None
                    if type(value) is dict or type(value) is list:
                        text = self.buf[self.pos:end]
                        if may_repeat_keys(text, value):
                            self.repeated = repeated_keys(text)
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


def _repeated_in(whole: dict[str, Any], written: list[tuple[str, Any, RepeatedKeys | None]]) -> RepeatedKeys | None:
    """The repeated keys of a document that is one row, read pair by pair: its text rebuilt from the pairs (a
    value with repeats of its own as written) and tested as any row is."""
    if len(written) == len(whole) and not any(r for *_, r in written):
        return None
    return repeated_keys("{" + ", ".join(f"{json.dumps(k)}: {r.raw if r else json.dumps(v, ensure_ascii=False)}"
                                         for k, v, r in written) + "}")


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
                yield Source(name, line, row), value, lone_surrogate(value) if doc.escapes else doc.repeated
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
        written: list[tuple[str, Any, RepeatedKeys | None]] = []  # the row's pairs as written, repeats and all
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
                written.append((key, whole[key], doc.repeated))
        doc.take("}")
        if not streamed:
            yield Source(name, 1, 1), whole, lone_surrogate(whole) or _repeated_in(whole, written)
    elif first:
        doc.fail("a .json file must hold an array of rows or an object")
    if doc.peek():
        doc.fail("extra data after the end of the JSON document")

