"""`prep convert`: rows of any known format in, rows of one format out, every row accounted for."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prep.core.findings import Batch, Tally, count_by_file
from prep.core.heap import streaming
from prep.core.options import checked
from prep.core.result import Meter, ProgressFn, Result, outputs
from prep.files.guard import check_outputs
from prep.files.media_out import MediaOut
from prep.files.write import RowWriter
from prep.formats import from_records, make_options
from prep.formats.inputs import Inputs, Part, plan_inputs, read_inputs, read_part
from prep.stages.engine import Engine, Ran, parts_wanted, run_parts
from prep.stages.record_writer import keep_rejects


@dataclass
class ConvertResult(Result):
    formats: dict[str, str] = field(default_factory=dict)  # each file read, and the format it was read as
    files: dict[str, Tally] = field(default_factory=dict)  # each file's rows: read, written, rejected by reason
    to: str = ""  # the format written

    def summary(self) -> str:
        return f"{self.tally.summary()} ({', '.join(sorted(set(self.formats.values())))} -> {self.to})"

    def details(self) -> dict[str, Any]:
        return {"formats": self.formats, "files": {f: t.to_dict() for f, t in self.files.items()}}


@dataclass(frozen=True)
class _Convert:
    """The stage a Ray worker runs over one part: the local engine's reader and writer functions."""

    to: str
    options: Any
    ids: bool
    skip: dict[str, list[int]]
    media: MediaOut
    tool_calls: str | None

    def __call__(self, part: Part) -> Iterator[Batch[Any]]:
        return from_records(read_part(part, self.skip), self.to, self.options, self.ids, self.media, self.tool_calls)


@checked("convert")
@streaming()
def convert(inputs: Inputs, to: str, output: str = "-", *, rejects: str | None = None,
            settings: dict[str, Any] | None = None, ids: bool = True, media_dir: str | None = None,
            write_tool_calls: str | None = None, progress: ProgressFn | None = None, engine: str = "local", ray_address: str | None = None,
            ray_workers: int = 0) -> ConvertResult:
    """Convert `inputs` to format `to` in `output` (`-`: stdout); refused rows go to `rejects`.

    `settings` are the writer's options (e.g. AutoTrain column names); output files appear only
    when the whole run succeeds. Media go as the format takes them (design §2a): inlined as data URLs, or as paths
    relative to the output's folder, with the files outside it and data URLs written into `media_dir` (default
    `media/` beside the output). `engine="ray"` converts the parts of the inputs on a Ray cluster (design §13):
    the same output. `write_tool_calls` writes structured tool calls and results as text in that dialect
    (`formats.toolcalls`)."""
    check_outputs(inputs.files, {"-o": output, "--rejects": rejects})
    media = MediaOut.beside(output, media_dir)
    result = ConvertResult(outputs=outputs(output=output, rejects=rejects), to=to)
    options = make_options(to, settings if settings is not None else inputs.settings)
    where = Engine(engine, ray_address, ray_workers)
    ran = Ran()
    if where.ray:
        from_records([], to, options, ids)  # a read-only format is refused before anything runs
        rows: Iterable[Batch[Any]] = run_parts(plan_inputs(inputs, result.formats, parts_wanted(where)),
                                               _Convert(to, options, ids, inputs.skip, media, write_tool_calls),
                                               where, ran)
    else:
        rows = from_records(read_inputs(inputs, result.formats), to, options, ids, media, write_tool_calls)
    meter = Meter(progress)
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(RowWriter(output))
        bad = stack.enter_context(RowWriter(rejects, "jsonl")) if rejects else None
        for batch in rows:
            out.write(batch.items)
            batch.rejects.sort(key=lambda r: r.source.row)  # unreadable lines first otherwise: keep file order
            keep_rejects(batch, bad)  # with the rows that went on altered
            result.tally.count(batch)
            count_by_file(batch, result.files)
            meter.add(len(batch.items) + len(batch.rejects))
    if where.ray:
        result.engine = ran.to_dict()
    return result
