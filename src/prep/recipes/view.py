"""`prep run` in the terminal: one live line per stage while it runs, the plan of `--dry-run`, and the summary
of where everything went."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import IO, Any

from prep.core.result import Progress
from prep.recipes.recipe import relative
from prep.recipes.runner import RunResult, Stage, View


class RichView(View):
    """One live progress view on stderr: a line per stage, filled in as the stages run or are skipped."""

    def __init__(self, stages: list[Stage], console: Any) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: PLC0415 - start-up time: rich only for the terminal view
        from rich.table import Column  # noqa: PLC0415 - start-up time: rich only for the terminal view

        self.bar = Progress(TextColumn("{task.fields[mark]}", table_column=Column(width=1)),
                            TextColumn("[bold]{task.description}", table_column=Column(width=8, no_wrap=True)),
                            BarColumn(bar_width=10), TimeElapsedColumn(),
                            TextColumn("{task.fields[info]}", table_column=Column(ratio=1)), console=console,
                            expand=True, transient=True)
        self.tasks = {s.name: self.bar.add_task(s.name, total=None, start=False, mark=" ",
                                                info="skip (done earlier)" if s.status == "skip" else "waiting")
                      for s in stages}

    def __enter__(self) -> RichView:
        self.bar.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self.bar.stop()

    def start(self, stage: Stage) -> None:
        self.bar.start_task(self.tasks[stage.name])
        if stage.status == "run":
            self.bar.update(self.tasks[stage.name], mark="…", info="running")

    def progress(self, stage: Stage, progress: Progress) -> None:
        self.bar.update(self.tasks[stage.name], info=progress.line(), completed=progress.step or 0,
                        total=progress.steps)

    def finish(self, stage: Stage) -> None:
        from rich.markup import escape  # noqa: PLC0415 - start-up time: rich only for the terminal view

        mark = {"ran": "[green]✓", "skipped": "[cyan]=", "stopped": "[red]✗", "failed": "[red]✗"}[stage.status]
        word = {"ran": "", "skipped": "skipped, unchanged: ", "stopped": "stopped: ", "failed": "failed: "}[
            stage.status]
        self.bar.update(self.tasks[stage.name], mark=mark, info=word + escape(stage.summary.get("line", "")),
                        completed=1, total=1)
        self.bar.stop_task(self.tasks[stage.name])


class EventsView(View):
    """`prep run --events FILE`: each stage's start, progress and end as one JSON line, flushed as it happens, so a
    reader (prep ui, a script) follows the run while it goes; progress lines at most every EVERY seconds. `inner`, a
    terminal view, is told the same."""

    EVERY = 0.25

    def __init__(self, stages: list[Stage], out: IO[str], inner: View | None = None) -> None:
        self.out, self.inner, self.last = out, inner, 0.0
        self._write({"event": "plan", "stages": [{"stage": s.name, "status": s.status, "key": s.key,
                                                  "folder": str(s.folder)} for s in stages]})

    def _write(self, event: dict[str, Any]) -> None:
        self.out.write(json.dumps(event, ensure_ascii=False) + "\n")
        self.out.flush()

    def start(self, stage: Stage) -> None:
        self._write({"event": "start", "stage": stage.name, "status": stage.status})
        if self.inner:
            self.inner.start(stage)

    def progress(self, stage: Stage, progress: Progress) -> None:
        if time.monotonic() - self.last >= self.EVERY:
            self.last = time.monotonic()
            self._write({"event": "progress", "stage": stage.name, "line": progress.line(), "rows": progress.rows,
                         "tokens": progress.tokens, "step": progress.step, "steps": progress.steps})
        if self.inner:
            self.inner.progress(stage, progress)

    def finish(self, stage: Stage) -> None:
        self._write({"event": "finish", "stage": stage.name, "status": stage.status,
                     "line": stage.summary.get("line", "")})
        if self.inner:
            self.inner.finish(stage)


def print_plan(result: RunResult, console: Any) -> None:
    """`--dry-run`: the stages, their keys and which would run."""
    from rich.table import Table  # noqa: PLC0415 - start-up time: rich only for the terminal view

    table = Table(title=f"prep run {result.recipe.path} (dry run: nothing is run)", title_justify="left")
    for col in ("stage", "would", "key", "folder"):
        table.add_column(col)
    for s in result.stages:
        would = "skip" if s.status == "skip" else "[bold]run"
        table.add_row(s.name, would, s.key[:16], relative(s.folder))
    console.print(table)


def print_summary(result: RunResult, console: Any, run_json: Path, page: tuple[Path | None, str | None] = (None, None)
                  ) -> None:
    """Where everything went: each stage's folder, its rejects, and the files a user opens next."""
    from rich.markup import escape  # noqa: PLC0415 - start-up time: rich only for the terminal view
    from rich.table import Table  # noqa: PLC0415 - start-up time: rich only for the terminal view

    table = Table(title=f"prep run {result.recipe.name}: {result.seconds:.1f} s", title_justify="left")
    table.add_column("stage")
    table.add_column("status")
    table.add_column("result and where it went", overflow="fold")
    for s in result.stages:
        if s.status in ("run", "skip"):
            continue  # not reached: the run stopped before
        where = "" if s.status == "failed" else f"\n[dim]-> {relative(s.folder)}[/]"
        if s.summary.get("rejects"):
            where += f"\n[dim]rejected rows -> {relative(s.folder / s.summary['rejects'])}[/]"
        line = "could not run (below)" if s.status == "failed" else escape(s.summary.get("line", ""))
        table.add_row(s.name, s.status, line + where)
    console.print(table)
    last = next((s for s in reversed(result.stages) if s.status in ("ran", "skipped")), None)
    if last is not None and last.name == "train":
        console.print(f"adapter:         {relative(last.folder / last.summary['adapter'])}\n"
                      f"training report: {relative(last.folder / last.summary['report'])}\n"
                      f"loss curve:      {relative(last.folder / 'loss_curve.png')}")
    elif last is not None and last.name in ("tokenize", "pack"):
        console.print(f"shards:          {relative(last.folder)}")
    console.print(f"run record:      {relative(run_json)}")
    if page[0] is not None:
        console.print(f"report:          {relative(page[0])}")
    if page[1]:
        console.print(f"[yellow]report note:[/] {escape(page[1])}")
    if result.stopped:
        console.print(f"[red]stopped:[/] {escape(result.stopped)}")
    if result.failed:
        console.print(f"[red]failed:[/] {escape(result.failed)}")
