"""Where a row came from, what is wrong with it, and the tally that proves no row was lost.

Every stage speaks this vocabulary: a row that cannot go on becomes a `Reject` carrying its
`Finding`s, and `Tally` checks rows read = rows written + rows rejected at the end of a run.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from itertools import chain
from typing import Any, Generic, NamedTuple, TypeVar

from prep.core.codes import CODES

T = TypeVar("T")
U = TypeVar("U")
EXAMPLES_PER_REASON = 3


class PrepError(Exception):
    """The run cannot go on (missing file, bad option, unreadable input): exit code 2."""


@dataclass(frozen=True, slots=True)
class Source:
    """A row's place: its file, the line it starts on, and its 1-based ordinal in the file."""

    file: str
    line: int
    row: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem: a stable snake_case `code`, where it is, and what to do about it."""

    code: str
    message: str
    hint: str = ""
    path: str = "$"
    severity: str = "error"
    file: str = ""
    line: int = 0

    def at(self, source: Source) -> Finding:
        """The same finding placed at `source` (readers raise findings before they know the file)."""
        return Finding(self.code, self.message, self.hint, self.path, self.severity, source.file, source.line)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.file else ""
        text = f"{where} {self.path} {self.code}: {self.message}".strip()
        return f"{text} ({self.hint})" if self.hint else text


class RowError(Exception):
    """Raised by a format reader or writer: this row cannot be converted, for these reasons."""

    def __init__(self, *findings: Finding) -> None:
        super().__init__("; ".join(str(f) for f in findings))
        self.findings = list(findings)


def finding(code: str, message: str, path: str = "$", *, hint: str | None = None, severity: str | None = None
            ) -> Finding:
    """A finding of `code` with the severity and hint of its entry in `core.codes.CODES`; a raise site gives
    `hint` only where it knows more, `severity` only where it drops a row validate merely warns about."""
    spec = CODES[code]
    return Finding(code, message, spec.hint if hint is None else hint, path, severity or spec.severity)


def row_error(code: str, message: str, path: str = "$", *, hint: str | None = None,
              severity: str | None = None) -> RowError:
    """Shorthand for the common case of one finding."""
    return RowError(finding(code, message, path, hint=hint, severity=severity))


def normalized(f: Finding) -> Finding:
    """A finding with its code's severity as validate reports it (a stage's reject may say error where
    validate warns), and the code's hint when it has none."""
    spec = CODES[f.code]
    if f.severity == spec.severity and f.hint:
        return f
    return Finding(f.code, f.message, f.hint or spec.hint, f.path, spec.severity, f.file, f.line)


@dataclass(slots=True)
class Reject:
    """A row that did not make it, the raw value (so it can be fixed and fed again) and why."""

    source: Source
    findings: list[Finding]
    row: Any
    details: dict[str, Any] = field(default_factory=dict)  # what the reasons point at (duplicate_of, benchmark)

    @property
    def reason(self) -> str:
        return self.findings[0].code

    def to_dict(self, written: bool = False) -> dict[str, Any]:
        return {
            "written": written,
            "file": self.source.file,
            "line": self.source.line,
            "row_number": self.source.row,
            "reasons": [{k: v for k, v in f.to_dict().items() if k not in ("file", "line")} for f in self.findings],
            **self.details,
            "row": self.row,
        }


@dataclass(slots=True)
class Batch(Generic[T]):
    """What flows between stages: items with their sources, and the rows rejected so far."""

    items: list[T] = field(default_factory=list)
    sources: list[Source] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    # Rows that went on but were changed on the way (truncated, trailing turns dropped): counted and kept
    # beside the rejects so nothing is altered silently.
    altered: list[Reject] = field(default_factory=list)
    # Input fields left behind, by name: the rows that had them (design §7: every field is accounted for).
    dropped: Counter[str] = field(default_factory=Counter)

    def add(self, item: T, source: Source) -> None:
        self.items.append(item)
        self.sources.append(source)

    def reject(self, source: Source, findings: list[Finding], row: Any) -> None:
        self.rejects.append(Reject(source, [f.at(source) for f in findings], row))

    def alter(self, source: Source, findings: list[Finding], row: Any) -> None:
        self.altered.append(Reject(source, [f.at(source) for f in findings], row))

    def carry(self) -> Batch[Any]:
        """An empty batch for the next stage that keeps this one's rejects and alterations."""
        return Batch(rejects=self.rejects, altered=self.altered, dropped=self.dropped)


class Altered(NamedTuple):
    """What a per-row function returns for a row it changed on the way (cut, turns dropped): the row goes
    on, and the change is counted and kept beside the rejects."""

    value: Any
    finding: Finding


def per_row(fn: Callable[[T, Source], U | Altered], keep: Callable[[T], Any] | None = None) -> Callable[
        [Batch[T]], Batch[U]]:
    """A batch stage from a per-row function: `fn(item, source)` returns the row's output, raises `RowError`
    (the row is rejected; the reject keeps `keep(item)`, by default the item itself) or returns `Altered`.
    Rejects and alterations of earlier stages ride along, so the last stage accounts for every row."""

    def stage(batch: Batch[T]) -> Batch[U]:
        out: Batch[U] = batch.carry()
        for item, source in zip(batch.items, batch.sources, strict=True):
            try:
                result = fn(item, source)
            except RowError as e:
                out.reject(source, e.findings, item if keep is None else keep(item))
                continue
            if isinstance(result, Altered):
                out.alter(source, [result.finding], item if keep is None else keep(item))
                result = result.value
            out.add(result, source)
        return out

    return stage


@dataclass(slots=True)
class Tally:
    """Counts for the end-of-run line; `balanced` is the invariant every command checks."""

    read: int = 0
    written: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    altered: Counter[str] = field(default_factory=Counter)
    examples: list[Reject] = field(default_factory=list)  # the first few rejects of each reason, to show
    dropped: Counter[str] = field(default_factory=Counter)  # fields not carried, by name: rows that had them

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    @property
    def balanced(self) -> bool:
        return self.read == self.written + self.rejected_total

    def count(self, batch: Batch[Any]) -> None:
        """Account for a batch at the end of a pipeline: its items were written, its rejects not."""
        self.read += len(batch.items) + len(batch.rejects)
        self.written += len(batch.items)
        for reject in batch.rejects:
            self.rejected[reject.reason] += 1
            if self.rejected[reject.reason] <= EXAMPLES_PER_REASON:
                self.examples.append(reject)
        self.altered.update(a.reason for a in batch.altered)
        self.dropped.update(batch.dropped)

    def add(self, other: Tally) -> None:
        """Add another tally's counts to this one (the files of a run, the stages of a recipe)."""
        self.read += other.read
        self.written += other.written
        self.rejected.update(other.rejected)
        self.altered.update(other.altered)
        self.examples += other.examples
        self.dropped.update(other.dropped)

    def follow(self, other: Tally) -> None:
        """Add the tally of the rows that came next (a Ray worker's part): the same as counting their batches here,
        the first few examples of each reason included."""
        shown = Counter(e.reason for e in self.examples)
        self.add(replace(other, examples=[]))
        for example in other.examples:
            shown[example.reason] += 1
            if shown[example.reason] <= EXAMPLES_PER_REASON:
                self.examples.append(example)

    def summary(self) -> str:
        text = f"read {self.read}, wrote {self.written}, rejected {self.rejected_total}"
        if self.rejected:
            text += " (" + ", ".join(f"{code}: {n}" for code, n in sorted(self.rejected.items())) + ")"
        if self.altered:
            text += "; altered " + ", ".join(f"{code}: {n}" for code, n in sorted(self.altered.items()))
        if self.dropped:
            text += "; dropped fields: " + ", ".join(f"{name} {n}" for name, n in self.dropped.most_common())
        return text

    def to_dict(self) -> dict[str, Any]:
        out = {"read": self.read, "written": self.written, "rejected": dict(sorted(self.rejected.items())),
               "altered": dict(sorted(self.altered.items()))}
        if self.dropped:  # only when some were: manifests of data without loose fields stay as they were
            out["dropped_fields"] = dict(sorted(self.dropped.items()))
        return out


def count_by_file(batch: Batch[Any], files: dict[str, Tally]) -> None:
    """Account for each row of a batch in the tally of its own input file (the per-source figures of
    convert and tokenize; the stage's own tally counts the batch as a whole)."""
    named = {s.file for s in batch.sources} | {r.source.file for r in chain(batch.rejects, batch.altered)}
    if len(named) == 1:  # one file (nearly always): the batch as it is, less what a batch split by file leaves out
        files.setdefault(named.pop(), Tally()).count(Batch(batch.items, batch.sources, batch.rejects, batch.altered))
        return
    parts: dict[str, Batch[Any]] = {}
    for item, source in zip(batch.items, batch.sources, strict=True):
        parts.setdefault(source.file, Batch()).add(item, source)
    for r in batch.rejects:
        parts.setdefault(r.source.file, Batch()).rejects.append(r)
    for r in batch.altered:
        parts.setdefault(r.source.file, Batch()).altered.append(r)
    for file, part in parts.items():
        files.setdefault(file, Tally()).count(part)
