"""Dataset statistics in the OpenAI cookbook's shape: rows missing a system or user message, and
distributions (min, max, mean, median, p10, p90) of messages and characters per row (tokens too,
with a tokenizer). Quantiles interpolate linearly between ranks, as numpy.quantile does."""

from __future__ import annotations

import math
from array import array
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from prep.core.records import Record, kind_of


def quantile(ordered: list[int] | list[float], q: float) -> float:
    """Linear-interpolation quantile of sorted values (numpy's default method)."""
    pos = (len(ordered) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return float(ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo))


@dataclass
class Distribution:
    """Integers seen one at a time, kept in a compact array (8 bytes each) for exact quantiles."""

    values: array = field(default_factory=lambda: array("q"))

    def add(self, value: int) -> None:
        self.values.append(value)

    def extend(self, values: np.ndarray) -> None:
        """Many values at once (int64)."""
        self.values.frombytes(values.astype(np.int64).tobytes())

    def merge(self, other: Distribution) -> None:
        """Take another's values too (the quantiles do not depend on the order values came in)."""
        self.values.extend(other.values)

    def summary(self) -> dict[str, float] | None:
        if not self.values:
            return None
        ordered = sorted(self.values)
        return {"count": len(ordered), "min": ordered[0], "max": ordered[-1],
                "mean": sum(ordered) / len(ordered), "median": quantile(ordered, 0.5),
                "p10": quantile(ordered, 0.1), "p90": quantile(ordered, 0.9)}


def conversation(record: Record) -> list[dict[str, Any]]:
    """The messages a row trains on: the chat, or the prompt with the chosen (or judged) answer."""
    kind = kind_of(record)
    if kind == "chat":
        return record["messages"]
    if kind == "preference":
        return record["prompt"] + record["chosen"]
    if kind == "feedback":
        return record["prompt"] + record["completion"]
    return []


@dataclass
class Stats:
    """Statistics over every row that could be read as a record, errors or not (as the cookbook counts)."""

    kinds: Counter[str] = field(default_factory=Counter)
    missing_system: int = 0
    missing_user: int = 0
    messages: Distribution = field(default_factory=Distribution)
    characters: Distribution = field(default_factory=Distribution)
    assistant_characters: Distribution = field(default_factory=Distribution)
    media: Counter[str] = field(default_factory=Counter)  # media checked by type, and "<type> errors"
    extra: dict[str, Any] = field(default_factory=dict)

    def add(self, record: Record, whole: str) -> None:
        """`whole`: the record's text (`quality.all_text`)."""
        kind = kind_of(record)
        self.kinds[kind] += 1
        self.characters.add(len(whole))
        if kind == "text":
            return
        messages = conversation(record)
        roles = set()
        answers = 0
        for m in messages:  # one loop for both: most rows hold a few messages, and a generator costs more
            role = m["role"]
            roles.add(role)
            if role == "assistant":
                answers += len(m["content"])
        self.missing_system += "system" not in roles
        self.missing_user += "user" not in roles
        self.messages.add(len(messages))
        self.assistant_characters.add(answers)

    def add_chats(self, messages: np.ndarray, characters: np.ndarray, assistant_characters: np.ndarray,
                  missing_system: int, missing_user: int) -> None:
        """What `add` counts of many chat rows, given per row (validate's proved blocks, `checks.plain`)."""
        self.kinds["chat"] += len(messages)
        self.missing_system += missing_system
        self.missing_user += missing_user
        self.messages.extend(messages)
        self.characters.extend(characters)
        self.assistant_characters.extend(assistant_characters)

    def merge(self, other: Stats) -> None:
        """Add the statistics of other rows (a Ray worker's batch) to these."""
        self.kinds.update(other.kinds)
        self.media.update(other.media)
        self.missing_system += other.missing_system
        self.missing_user += other.missing_user
        for mine, theirs in ((self.messages, other.messages), (self.characters, other.characters),
                             (self.assistant_characters, other.assistant_characters)):
            mine.merge(theirs)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rows_by_kind": dict(sorted(self.kinds.items()))}
        if self.messages.values:
            out.update(rows_missing_system=self.missing_system, rows_missing_user=self.missing_user,
                       messages_per_row=self.messages.summary(),
                       assistant_characters_per_row=self.assistant_characters.summary())
        out["characters_per_row"] = self.characters.summary()
        if self.media:
            out["media_checked"] = {kind: {"items": n, "with_errors": self.media[f"{kind} errors"]}
                                    for kind, n in self.media.items() if not kind.endswith(" errors")}
        out.update(self.extra)
        return out


class LengthCounts:
    """Token lengths counted in bins of a power-of-two width, the narrowest that keeps the range in at most
    `bins` bins: exact counts of any number of rows in a few hundred bytes of JSON (the manifest's
    per-source histograms), the same whatever order the lengths come in, and two of them re-binned to
    a common width bin for bin (`prep report` draws before and after overflow on one axis)."""

    def __init__(self, width: int = 1, counts: dict[int, int] | None = None, bins: int = 64) -> None:
        self.width, self.bins = width, bins
        self.counts: Counter[int] = Counter(counts or {})  # bin start -> rows

    def add(self, lengths: Iterable[int] | np.ndarray) -> None:
        values = np.asarray(lengths if isinstance(lengths, np.ndarray) else list(lengths), dtype=np.int64)
        if not len(values):
            return
        low, high = int(values.min()), int(values.max())
        if self.counts:
            low, high = min(low, min(self.counts)), max(high, max(self.counts))
        width = self.width
        while high // width - low // width >= self.bins:
            width *= 2
        if width != self.width:
            self.widen(width)
        starts, counts = np.unique(values - values % width, return_counts=True)
        self.counts.update(dict(zip(starts.tolist(), counts.tolist(), strict=True)))

    def merge(self, other: LengthCounts) -> None:
        """Add another's counts (a Ray worker's part): the bins adding its lengths here would give, since bins of
        power-of-two widths nest and the width is the narrowest that keeps the whole range in `bins` bins."""
        if not other.counts:
            return
        width = max(self.width, other.width)
        if width != self.width:
            self.widen(width)
        for start, count in other.counts.items():
            self.counts[start - start % width] += count
        while max(self.counts) // width - min(self.counts) // width >= self.bins:
            width *= 2
        if width != self.width:
            self.widen(width)

    def widen(self, width: int) -> None:
        """Re-bin to `width` (a power-of-two multiple of the current width): exact, bins only merge."""
        merged: Counter[int] = Counter()
        for start, count in self.counts.items():
            merged[start - start % width] += count
        self.width, self.counts = width, merged

    @property
    def rows(self) -> int:
        return sum(self.counts.values())

    def to_dict(self) -> dict[str, Any]:
        return {"width": self.width, "bins": [[start, self.counts[start]] for start in sorted(self.counts)]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LengthCounts:
        return cls(data["width"], {start: count for start, count in data["bins"]})
