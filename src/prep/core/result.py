"""What every verb returns and how it says where it is (design §8).

Every verb returns a `Result`: its tally (rows read = written + rejected), where its outputs went,
and `to_dict()`; the verbs' own results add what only they know (a manifest, findings, a training
report). Every verb that works through rows takes `progress`, a function called with a `Progress`
after each batch (or training step): cumulative counts since the work started, so a caller can
draw a bar or a rate without keeping state."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prep.core.findings import Tally


@dataclass(frozen=True, slots=True)
class Progress:
    """Where a verb is: rows read and tokens made so far, seconds since its work started (loading left
    out); training adds the step, the number of steps and the last loss."""

    rows: int = 0
    tokens: int = 0
    seconds: float = 0.0
    step: int | None = None
    steps: int | None = None
    loss: float | None = None

    def line(self) -> str:
        """The progress in words, for a progress bar."""
        def rate(n: int) -> float:
            return n / self.seconds if self.seconds else 0.0

        if self.step is not None:
            return f"step {self.step}/{self.steps} loss {self.loss:.4f} {rate(self.tokens):,.0f} tokens/s"
        return f"{self.rows:,} rows {self.tokens:,} tokens  {rate(self.rows):,.0f} rows/s {rate(self.tokens):,.0f} tokens/s"


ProgressFn = Callable[[Progress], None]


@dataclass(kw_only=True)
class Result:
    """What a verb did: `tally` accounts for every row, `outputs` names the files and folders it wrote
    (output, rejects, report, ...), `to_dict()` is all of it as JSON."""

    tally: Tally = field(default_factory=Tally)
    outputs: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what the user should know (e.g. a slower way a tokenizer loaded)
    engine: dict[str, Any] = field(default_factory=dict)  # under --engine ray: parts, workers and nodes that ran

    @property
    def exit_code(self) -> int:
        """0: every row went through; 1: some were rejected (the CLI exits with this)."""
        return 1 if self.tally.rejected_total else 0

    def details(self) -> dict[str, Any]:
        """What only this verb knows, for `to_dict`."""
        return {}

    def summary(self) -> str:
        """What the verb did, in one line: the CLI prints it, and `prep run` shows it as the stage's line."""
        return self.tally.summary()

    def breakdown(self) -> list[str]:
        """Lines the CLI prints before the summary: each source's or benchmark's share of it."""
        return []

    def where(self) -> str:
        """Under --engine ray, how many parts, workers and nodes ran (" (ray: 8 parts on 2 workers, 1 node)")."""
        e = self.engine
        if not e:
            return ""
        return (f" ({e['name']}: {e['parts']} parts on {e['workers']} worker{'s' * (e['workers'] != 1)}, "
                f"{e['nodes']} node{'s' * (e['nodes'] != 1)})")

    def to_dict(self) -> dict[str, Any]:
        notes = {"notes": list(self.notes)} if self.notes else {}
        engine = {"engine": dict(self.engine)} if self.engine else {}
        return {"tally": self.tally.to_dict(), "outputs": dict(self.outputs), **notes, **engine, **self.details()}


class Meter:
    """A verb's running count, handed to its `progress` function (if any) as a `Progress` after each batch."""

    def __init__(self, progress: ProgressFn | None) -> None:
        self.progress = progress
        self.rows = self.tokens = 0
        self.started = time.perf_counter()

    def start(self) -> None:
        """The work starts now (after loading): rates leave the loading out."""
        self.started = time.perf_counter()
        if self.progress:
            self.progress(Progress(0, 0, 0.0))

    def add(self, rows: int, tokens: int = 0) -> None:
        self.rows += rows
        self.tokens += tokens
        if self.progress:
            self.progress(Progress(self.rows, self.tokens, time.perf_counter() - self.started))


def outputs(**paths: object) -> dict[str, str]:
    """A result's `outputs`: the paths given, leaving out those not written (None or empty)."""
    return {name: str(path) for name, path in paths.items() if path}
