"""Plain chat rows read in bulk: the fast lane of a verb that keeps or drops whole rows (dedup), and the typed row
validate's fast path decodes too (checks.plain).

Most chat JSONL is OpenAI's `messages` of role and text and nothing else. For such rows the careful path (a dict
per row, the reader's field tracking, a record, the writer's JSON) costs several times the work a verb does on
them. `read_chats` gives a plain JSONL file's blocks (`files.read.jsonl_blocks`: the reader's batches, cut where it
cuts them) as `ChatLines`; `plain()` decodes a block with msgspec into typed rows (`PlainChat`) in one step, and
says whether every line is such a row: a JSON object of `messages`, one or more, each exactly a `role` (system,
developer, user or assistant) and a string `content`, and at most an `id`, with no key repeated. Then the block's
records, sources, ids and written lines are those the careful path gives, made straight from the typed rows.

A block with anything else in it (another field, a tool message, a broken line, a repeated key, text that msgspec
refuses) is read the careful way (`careful()`: `read_part` of its lines), so its findings, rejects and counts are
the ones it always had; so is the rest of a file from its first blank line, non-object or over-long line on (a BOM
opening it is skipped), every file that is not plain JSONL read as openai, and every input the options ask more of
(columns kept, `<think>` split, tool calls in the text, rows skipped).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from itertools import chain, compress, repeat
from operator import attrgetter
from typing import Literal, NamedTuple

import msgspec
import numpy as np

from prep.core.findings import Batch, Source
from prep.core.records import Record, own_id
from prep.files.paths import display_name, split_suffix
from prep.files.read import jsonl_blocks, read_rows
from prep.formats import Fields, detect_file, make_options, media_root, openai
from prep.formats.inputs import Inputs, Part, read_inputs, read_part


class PlainMessage(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A message of role and text alone (a tool message carries more: its call id). Frozen: hashable, for
    validate's content keys (checks.plain)."""

    role: Literal["system", "developer", "user", "assistant"]
    content: str


class PlainChat(msgspec.Struct, forbid_unknown_fields=True):
    """A row of `messages` of role and text alone, and at most an id: what dedup's fast lane (here) and validate's
    (checks.plain) decode in bulk. An empty `messages` decodes; the readers refuse it."""

    messages: tuple[PlainMessage, ...]
    id: str | int | None | msgspec.UnsetType = msgspec.UNSET


_decode = msgspec.json.Decoder(PlainChat).decode
_MESSAGES, _ID, _ROLE, _CONTENT = attrgetter("messages"), attrgetter("id"), attrgetter("role"), attrgetter("content")
_encode = msgspec.json.Encoder().encode


class Plain(NamedTuple):
    """A block's typed rows and, made once for whoever reads them next, their messages row by row and flat, the
    flat messages' texts, the lines' bytes one after the other (each ends with its object's `}`, so no escape
    straddles two), and whether they hold an escape that can spell a control or zero-width character or a colon
    (`\\b`, `\\f`, `\\u`)."""

    rows: list[PlainChat]
    messages: list[tuple[PlainMessage, ...]]
    flat: list[PlainMessage]
    texts: list[str]
    data: bytes
    escaped: bool


_ESCAPE = re.compile(rb"\\[bfu]")


def plain_rows(lines: list[bytes]) -> Plain | None:
    """The lines as typed rows when every one is a plain chat row with at least one message and no key repeated,
    which the typed decoding would hide: the lines' colons (escaped ones counted) must be exactly those of their
    keys and their text. None otherwise. Dedup's lane (`ChatLines.plain`) and validate's proof (checks.plain)."""
    try:
        rows = list(map(_decode, lines))
    except (msgspec.DecodeError, RecursionError):
        return None
    messages = list(map(_MESSAGES, rows))  # C loops throughout: a million rows in a fraction of a second
    if not all(messages):
        return None
    data = b"".join(lines)
    ids = list(map(_ID, rows))
    unset = ids.count(msgspec.UNSET)
    flat = list(chain.from_iterable(messages))
    texts = list(map(_CONTENT, flat))
    keys = 2 * len(rows) - unset + 2 * len(flat)
    colons = int(np.count_nonzero(np.frombuffer(data, np.uint8) == ord(":")))  # numpy: 5x bytes.count
    escaped = _ESCAPE.search(data) is not None
    if escaped and b"\\u003" in data:
        colons += data.count(b"\\u003a") + data.count(b"\\u003A")
    in_ids = "".join(i for i in ids if type(i) is str).count(":") if unset < len(rows) else 0
    if colons != keys + "".join(texts).count(":") + in_ids:
        return None
    return Plain(rows, messages, flat, texts, data, escaped)


@dataclass
class ChatLines:
    """A block of lines that may all be plain chat rows (see the module): what `part` (exactly these lines) reads.
    `plain()` decodes them; when it says no, `careful()` reads them."""

    part: Part
    lines: list[bytes]  # without their newlines
    rows: list[PlainChat] | None = None
    decoded: Plain | None = None
    file: str = field(init=False, default="")  # as Source.file names it
    base: str = field(init=False, default="")  # the file's name, the ids' head

    def __post_init__(self) -> None:
        self.file = display_name(self.part.piece.path)
        self.base = os.path.basename(self.file)

    def __len__(self) -> int:
        return len(self.lines)

    def plain(self) -> bool:
        """Decode the lines (`plain_rows`); False when one of them is no plain chat row."""
        self.decoded = plain_rows(self.lines)
        self.rows = self.decoded.rows if self.decoded else None
        return self.rows is not None

    def careful(self) -> Iterator[Batch[Record]]:
        """The lines read the careful way (records, findings, rejects), as `read_inputs` reads them."""
        return read_part(self.part)

    def turns(self) -> tuple[list[str], list[str], list[int]]:
        """Every row's turns flat (after `plain`): their roles and texts in order, and each row's number of turns."""
        assert self.decoded is not None
        return list(map(_ROLE, self.decoded.flat)), self.decoded.texts, list(map(len, self.decoded.messages))

    def source(self, k: int) -> Source:
        return Source(self.file, self.part.piece.line + k + 1, self.part.piece.row + k + 1)

    def ids(self) -> list[str] | None:
        """Each row's id, as `core.records.record_id` gives it (after `plain`); None when no row has an id field
        (then each row's is its place, `<file name>:<row number>`)."""
        assert self.rows is not None
        if list(map(_ID, self.rows)).count(msgspec.UNSET) == len(self.rows):
            return None
        row = self.part.piece.row
        return [own_id(r.id) or f"{self.base}:{row + k}" for k, r in enumerate(self.rows, 1)]

    def record(self, k: int) -> Record:
        """Row k's record (decoded again when the lines were decoded elsewhere)."""
        row = self.rows[k] if self.rows is not None else _decode(self.lines[k])
        return {"id": own_id(row.id) or f"{self.base}:{self.part.piece.row + k + 1}",
                "messages": [{"role": m.role, "content": m.content} for m in row.messages]}

    def written(self, ids: list[str] | None, gone: list[int]) -> bytes:
        """The rows but those at `gone` as JSONL lines of openai or trl rows, as `files.write.dumps` writes their
        records (after `plain`; `ids` from `ids`). msgspec encodes the rows' messages in one call with the escapes of
        json's own string encoder (the same bytes for every character) and spaces them as json does
        (`json.format`, indent 0); the rows are cut apart at `"}], [{"`, which holds a quote after `{`, which no
        string holds unescaped, so it is found only between rows, and joined again with their ids and the keys
        between, all in C loops."""
        assert self.rows is not None
        keep = bytearray(b"\x01") * len(self.rows)
        for k in gone:
            keep[k] = 0
        if not any(keep):
            return b""
        spaced = msgspec.json.format(_encode(list(compress(map(_MESSAGES, self.rows), keep))), indent=0)
        bodies = spaced[4:-4].split(b'"}], [{"')  # [[{" "}]]
        if ids is None:  # "<file name>:<row number>": the heads made by one join of the numbers
            row, head = self.part.piece.row, _encode(self.base)[:-1].decode() + ":"
            numbers = map(str, compress(range(row + 1, row + len(keep) + 1), keep))
            heads = (('", "messages": [{"\x00"}]}\n{"id": ' + head).join(numbers) + '", "messages": [{"').encode() \
                .split(b"\x00")
            heads[0] = b'{"id": ' + head.encode() + heads[0]
        else:
            heads = list(map(b"".join, zip(chain([b'{"id": '], repeat(b'"}]}\n{"id": ')),
                                           map(_encode, compress(ids, keep)), repeat(b', "messages": [{"'))))
        return b"".join(chain.from_iterable(zip(heads, bodies, strict=True))) + b'"}]}\n'


def read_chats(inputs: Inputs, formats_seen: dict[str, str] | None = None) -> Iterator[Batch[Record] | ChatLines]:
    """`read_inputs`, with each batch of plain chat rows as `ChatLines` (the fast lane) and every other batch the
    records `read_inputs` gives: the same rows, findings and counts, in the same batches."""
    if not _lane_open(inputs):
        yield from read_inputs(inputs, formats_seen)
        return
    for path in inputs.files:
        fmt = _plain_format(path, inputs.format)
        if fmt is None:
            yield from read_inputs(replace(inputs, files=[path], datasets=()), formats_seen)
            continue
        if formats_seen is not None:
            formats_seen[display_name(path)] = fmt
        yield from _chat_batches(path, inputs)
    if inputs.datasets:
        yield from read_inputs(replace(inputs, files=[]), formats_seen)


def _lane_open(inputs: Inputs) -> bool:
    """Whether the options leave the rows as read (no kept columns, no text rewritten, no rows skipped)."""
    return (not inputs.skip and inputs.container is None and inputs.format in ("auto", openai.NAME)
            and inputs.fields in (Fields(), Fields(strict=True))
            and make_options(openai.NAME, inputs.settings) == openai.Options())


def _plain_format(path: str, fmt: str) -> str | None:
    """"openai" for a plain JSONL file read as OpenAI rows, else None (read the careful way)."""
    if path == "-" or split_suffix(path) != ("jsonl", None) or not os.path.isfile(path):
        return None
    if fmt == "auto":
        batches = read_rows(path)
        try:
            fmt, _ = detect_file(batches, path)
        finally:
            batches.close()
    return fmt if fmt == openai.NAME else None


def _chat_batches(path: str, inputs: Inputs) -> Iterator[Batch[Record] | ChatLines]:
    """One file's batches: a `ChatLines` for each block of lines that may be plain rows (`files.read.jsonl_blocks`),
    the careful reader's batches for the rest."""
    settings = {**inputs.settings, "media_root": media_root(path, inputs.media_root)}  # as read_inputs reads it
    for block in jsonl_blocks(path, limit=inputs.max_row_bytes):
        part = Part(block.piece, openai.NAME, settings, max_row_bytes=inputs.max_row_bytes, fields=inputs.fields)
        if block.lines is None:
            yield from read_part(part)
        else:
            yield ChatLines(part, block.lines)
