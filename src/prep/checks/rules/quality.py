"""Quality warnings, as the legacy OpenAI data tool gave them and a little further: exact duplicate
rows, near-duplicates between a training and a validation file, rows longer than a character
limit, answers in capitals, and (over a whole file) answers that are all identical or all share a
prefix or suffix.

Near-duplicates: the validation rows' MinHash sketches and band keys (prep.overlap, the code and
settings of `prep dedup` and `prep split`: every turn, NFKC, case and whitespace ignored, word
bigrams, similarity at least 0.8); a training row that nearly repeats a validation row makes that
validation row a near-duplicate. Memory grows with the validation file (about 1 KB a row) and with
one 8-byte key per row for the exact-duplicate check.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import repeat
from typing import TYPE_CHECKING

from prep.checks.locate import Loc
from prep.core.codes import CODES
from prep.core.findings import Finding, Source, finding
from prep.core.records import Record, kind_of
from prep.formats.chat_lines import PlainMessage
from prep.overlap.text import Compare, compared

if TYPE_CHECKING:
    from prep.overlap.near import NearIndex

NEAR = 0.8  # prep dedup's and prep split's default
_COMPARE = Compare()
MIN_ROWS_FOR_PATTERNS = 5
MIN_AFFIX = 4
_UPPER = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_LOWER = _UPPER.lower()
_SIDES = ("messages", "prompt", "chosen", "rejected", "completion")
_ANSWER_SIDE = {"chat": "messages", "preference": "chosen", "feedback": "completion"}
_DUPLICATE = CODES["duplicate_row"]


def content_key(record: Record) -> int:
    """A 64-bit key for the record's content (its id left out): equal rows, equal keys, within one run. A chat of
    messages of role and text alone is keyed by the hash of its `PlainMessage` tuple (the key `checks.plain` takes
    from the rows it decodes, in C), any other record by its pickle (7x faster than JSON)."""
    messages = record.get("messages")
    if len(record) == 2 and messages is not None and all(len(m) == 2 for m in messages):  # "id" and "messages"
        return hash(tuple(PlainMessage(m["role"], m["content"]) for m in messages))
    return hash(pickle.dumps([(k, v) for k, v in record.items() if k != "id"], protocol=5))


def all_text(record: Record) -> str:
    text = record.get("text")
    if isinstance(text, str):
        return text
    return "\n".join([m["content"] for key in _SIDES if key in record for m in record[key]])


def answer(record: Record) -> str | None:
    """The text the model is trained to produce last: what the legacy tool called the completion."""
    side = _ANSWER_SIDE.get(kind_of(record))
    if side is None:
        return None
    texts = [m["content"] for m in record[side] if m["role"] == "assistant" and m["content"]]
    return texts[-1] if texts else None


def row_checks(record: Record, locs: Mapping[str, list[Loc]], max_chars: int, whole: str) -> list[Finding]:
    out = []
    if len(whole) > max_chars:
        out.append(finding("too_long_text", f"the row holds {len(whole):,} characters (limit {max_chars:,})", "$"))
    for key in ("messages", "chosen", "completion"):
        for i, m in enumerate(record.get(key, ())):
            if m["role"] == "assistant" and shouting(m["content"]):
                loc = locs[key][i]
                out.append(finding("mostly_uppercase", "the answer is mostly in capitals", loc[0] + loc[2]))
    return out


def shouting(text: str) -> bool:
    """An answer mostly in capitals: over 70% of its ASCII letters, at least 20 of them (row_checks, checks.plain).
    Counted in integers, so the early answers below and the last agree exactly."""
    if len(text) < 20:
        return False
    # UTF-8 copies an ASCII text at once; the ascii codec with "ignore" goes character by character (a tenth of
    # validating a plain file)
    ascii_text = text.encode() if text.isascii() else text.encode("ascii", "ignore")
    n, half = len(ascii_text), len(ascii_text) // 2
    # Lower case letters in the first half already leave no room for 70% capitals in most text, and the count
    # over the whole text can only be larger: the second half is counted only when the first does not settle it.
    lower = half - len(ascii_text[:half].translate(None, _LOWER))
    if 3 * (n - lower) <= 7 * lower:
        return False
    lower += n - half - len(ascii_text[half:].translate(None, _LOWER))
    if 3 * (n - lower) <= 7 * lower:  # not enough room left for 70% capitals
        return False
    upper = len(ascii_text) - len(ascii_text.translate(None, _UPPER))
    return upper + lower >= 20 and 10 * upper > 7 * (upper + lower)


class Duplicates:
    """Exact duplicates within one split (the training files, or the validation files)."""

    def __init__(self) -> None:
        self.first: dict[int, tuple[str, int]] = {}  # key -> (file, line): a tuple is made faster than a Source

    def check(self, key: int, source: Source) -> Finding | None:
        return self._seen(key, source.file, source.line)

    def check_lines(self, keys: list[int], file: str, line: int) -> list[Finding]:
        """`check` for rows on consecutive lines from `line` on (`checks.plain`'s blocks), in row order: the keys
        first seen here are taken in one dict update, the rows repeating a key one by one."""
        new = dict(zip(keys, zip(repeat(file), range(line, line + len(keys)), strict=False), strict=True))
        if len(new) == len(keys) and self.first.keys().isdisjoint(new):  # most blocks: no row repeats another
            self.first.update(new)
            return []
        return [f for k, key in enumerate(keys, line) if (f := self._seen(key, file, k))]

    def _seen(self, key: int, file: str, line: int) -> Finding | None:
        here = (file, line)
        earlier = self.first.setdefault(key, here)
        if earlier is here:
            return None
        where = f"line {earlier[1]}" if earlier[0] == file else f"{earlier[0]}:{earlier[1]}"
        # finding(...).at(source) in one step: in replicated data this runs for most rows
        return Finding("duplicate_row", f"the row repeats {where}", _DUPLICATE.hint, "$", _DUPLICATE.severity,
                       file, line)


@dataclass
class Answers:
    """Running state over a file's answers: are they all the same, and what do they all start/end with."""

    rows: int = 0
    first: str | None = None
    same: bool = True
    prefix: str = ""
    suffix: str = ""

    def add_all(self, texts: list[str]) -> None:
        """`add` for a block's answers (none of them None): once the answers differ and share no prefix or suffix,
        nothing more is looked at but their number."""
        if self.first is None and texts:
            self.add(texts[0])
            texts = texts[1:]
        self.rows += len(texts)
        self.same = self.same and texts.count(self.first) == len(texts)
        if self.prefix and texts:  # a set of strings shares what its least and greatest (in order) share
            self.prefix = _common(self.prefix, _common(min(texts), max(texts)))
        for text in texts if self.suffix else ():
            if not text.endswith(self.suffix):
                self.suffix = _common(self.suffix[::-1], text[::-1])[::-1]
                if not self.suffix:
                    break

    def add(self, text: str | None) -> None:
        if text is None:
            return
        self.rows += 1
        if self.first is None:
            self.first = self.prefix = self.suffix = text
            return
        self.same = self.same and text == self.first
        if not text.startswith(self.prefix):
            self.prefix = _common(self.prefix, text)
        if not text.endswith(self.suffix):
            self.suffix = _common(self.suffix[::-1], text[::-1])[::-1]

    def findings(self, name: str) -> list[Finding]:
        if self.rows < MIN_ROWS_FOR_PATTERNS:
            return []
        where = Source(name, 0, 0)
        if self.same:
            return [finding("identical_completions", f"all {self.rows} answers are the same text").at(where)]
        out = []
        if len(self.prefix.strip()) >= MIN_AFFIX:
            out.append(finding("common_prefix", f"all {self.rows} answers start with "
                               f"{json.dumps(self.prefix[:40])}").at(where))
        if len(self.suffix.strip()) >= MIN_AFFIX:
            out.append(finding("common_suffix", f"all {self.rows} answers end with "
                               f"{json.dumps(self.suffix[-40:])}").at(where))
        return out


def _common(a: str, b: str) -> str:
    """The common prefix of two strings (bisection on C-speed comparisons)."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return a[:lo]


@dataclass
class NearDuplicates:
    """Validation rows held by their MinHash band keys (prep.overlap.near, with dedup's and split's text,
    normalisation and threshold); training rows are looked up as they stream by, so a split made by
    `prep split` has no near duplicate here."""

    index: NearIndex | None = None  # made by the first validation row: numpy and rensa load only then
    reported: set[int] = field(default_factory=set)

    def add(self, record: Record, key: int, source: Source) -> None:
        from prep.overlap.near import NearIndex, sketch  # noqa: PLC0415 - start-up time: without validation rows, unused

        if self.index is None:
            self.index = NearIndex(NEAR)
        self.index.add(sketch([compared(record, _COMPARE)], NEAR), [(len(self.index.refs), key, source)])

    def check(self, record: Record, key: int, source: Source) -> Finding | None:
        """A finding placed at the validation row this training row (nearly) repeats, once per such row."""
        if self.index is None or len(self.reported) == len(self.index.refs):
            return None
        from prep.overlap.near import sketch  # noqa: PLC0415 - loaded by add() already

        for (held, held_key, where), score in self.index.query(sketch([compared(record, _COMPARE)], NEAR), 0):
            if held not in self.reported:
                self.reported.add(held)
                how = "repeats" if held_key == key else f"is ~{score:.0%} similar to"
                return finding("near_duplicate", f"this validation row {how} training row {source}", "$").at(where)
        return None
