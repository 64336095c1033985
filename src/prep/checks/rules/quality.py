"""Quality warnings, as the legacy OpenAI data tool gave them and a little further: exact duplicate
rows, near-duplicates between a training and a validation file, rows longer than a character
limit, answers in capitals, and (over a whole file) answers that are all identical or all share a
prefix or suffix.

Near-duplicates: word-bigram shingles of the row's text, a bottom-k MinHash sketch (k=64) per row,
and an inverted index over the validation rows' sketches; a training row whose estimated Jaccard
similarity to a validation row is at least 0.7 makes that validation row a near-duplicate.
Memory grows with the validation file (64 hashes per row) and with one 8-byte key per row for the
exact-duplicate check.
"""

from __future__ import annotations

import json
import pickle
import string
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from prep.checks.codes import CODES, finding
from prep.checks.locate import Loc
from prep.core.findings import Finding, Source
from prep.core.records import Record, kind_of

SKETCH = 64
NEAR = 0.7
STOP = 20
MIN_ROWS_FOR_PATTERNS = 5
MIN_AFFIX = 4
_PUNCTUATION = str.maketrans(dict.fromkeys(string.punctuation, " "))
_UPPER = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_LOWER = _UPPER.lower()
_SIDES = ("messages", "prompt", "chosen", "rejected", "completion")
_ANSWER_SIDE = {"chat": "messages", "preference": "chosen", "feedback": "completion"}
_DUPLICATE = CODES["duplicate_row"]


def content_key(record: Record) -> int:
    """A 64-bit key for the record's content (its id left out): equal rows, equal keys, within one run."""
    return hash(pickle.dumps([(k, v) for k, v in record.items() if k != "id"], protocol=5))  # 7x faster than JSON


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
            if m["role"] == "assistant" and _shouting(m["content"]):
                loc = locs[key][i]
                out.append(finding("mostly_uppercase", "the answer is mostly in capitals", loc[0] + loc[2]))
    return out


def _shouting(text: str) -> bool:
    if len(text) < 20:
        return False
    ascii_text = text.encode("ascii", "ignore")
    n, half = len(ascii_text), len(ascii_text) // 2
    # Lower case letters in the first half already leave no room for 70% capitals in most text, and the count
    # over the whole text can only be larger: the second half is counted only when the first does not settle it.
    lower = half - len(ascii_text[:half].translate(None, _LOWER))
    if n - lower <= 2.34 * lower:
        return False
    lower += n - half - len(ascii_text[half:].translate(None, _LOWER))
    if n - lower <= 2.34 * lower:  # not enough room left for 70% capitals
        return False
    upper = len(ascii_text) - len(ascii_text.translate(None, _UPPER))
    return upper + lower >= 20 and upper > 0.7 * (upper + lower)


class Duplicates:
    """Exact duplicates within one split (the training files, or the validation files)."""

    def __init__(self) -> None:
        self.first: dict[int, Source] = {}

    def check(self, key: int, source: Source) -> Finding | None:
        earlier = self.first.setdefault(key, source)
        if earlier is source:
            return None
        where = f"line {earlier.line}" if earlier.file == source.file else str(earlier)
        # finding(...).at(source) in one step: in replicated data this runs for most rows
        return Finding("duplicate_row", f"the row repeats {where}", _DUPLICATE.hint, "$", _DUPLICATE.severity,
                       source.file, source.line)


@dataclass
class Answers:
    """Running state over a file's answers: are they all the same, and what do they all start/end with."""

    rows: int = 0
    first: str | None = None
    same: bool = True
    prefix: str = ""
    suffix: str = ""

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


def sketch(text: str) -> list[int]:
    """Bottom-k MinHash sketch over word bigrams (single words for one-word texts), sorted. Python's own
    hash of a tuple: fast, and stable within the run, which is all the sketches are compared in."""
    words = text.casefold().translate(_PUNCTUATION).split()
    grams = {hash(g) for g in zip(words, words[1:], strict=False)} if len(words) > 1 else {hash(tuple(words))}
    return sorted(grams)[:SKETCH]


def similarity(a: list[int], b: list[int]) -> float:
    """Estimated Jaccard similarity of two texts from their sketches."""
    union = sorted(set(a) | set(b))[:SKETCH]
    both = set(a) & set(b)
    return sum(1 for h in union if h in both) / len(union)


@dataclass
class _Entry:
    sketch: list[int]
    key: int
    source: Source
    reported: bool = False


@dataclass
class NearDuplicates:
    """Validation rows indexed by sketch; training rows are looked up as they stream by. A sketch value
    shared by more than STOP validation rows (a stock phrase) is not used to find candidates."""

    entries: list[_Entry] = field(default_factory=list)
    index: dict[int, list[int]] = field(default_factory=dict)
    unreported: int = 0

    def add(self, record: Record, key: int, source: Source) -> None:
        entry = _Entry(sketch(all_text(record)), key, source)
        for h in entry.sketch:
            self.index.setdefault(h, []).append(len(self.entries))
        self.entries.append(entry)
        self.unreported += 1

    def check(self, record: Record, key: int, source: Source) -> Finding | None:
        """A finding placed at the validation row this training row (nearly) repeats, once per such row."""
        if not self.unreported:
            return None
        mine = sketch(all_text(record))
        hits = Counter(i for h in mine if len(posting := self.index.get(h, ())) <= STOP for i in posting)
        for i, shared in hits.most_common():
            entry = self.entries[i]
            if shared < 0.5 * min(len(mine), len(entry.sketch)):
                break
            if entry.reported:
                continue
            score = 1.0 if entry.key == key else similarity(mine, entry.sketch)
            if score >= NEAR:
                entry.reported = True
                self.unreported -= 1
                how = "repeats" if entry.key == key else f"is ~{score:.0%} similar to"
                return finding("near_duplicate", f"this validation row {how} training row {source}",
                               "$").at(entry.source)
        return None
