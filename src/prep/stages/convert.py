"""`prep convert`: rows of any known format in, rows of one format out, every row accounted for."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
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


@dataclass(frozen=True)
class _ConvertAndWrite:
    """The stage a Ray worker runs over one part when it writes the part itself (design §13): `_Convert`'s rows
    written as JSONL into a folder beside the output being made (`PART.jsonl`, its rejects `PART.rejects.jsonl`),
    as the driver would write them. It hands back the files, their rows and the part's tallies, never a row."""

    convert: _Convert
    folder: str
    rejects: bool

    def __call__(self, job: tuple[int, Part]) -> Iterator[_WrittenRows]:
        index, part = job
        tally, files = Tally(), {}
        with contextlib.ExitStack() as stack:
            out = stack.enter_context(RowWriter(f"{self.folder}/{index:06d}.jsonl", "jsonl"))
            bad = stack.enter_context(RowWriter(f"{self.folder}/{index:06d}.rejects.jsonl", "jsonl")) \
                if self.rejects else None
            for batch in self.convert(part):
                _take(batch, out, bad, tally, files)
        yield _WrittenRows(out.path, out.rows, bad.path if bad else None, bad.rows if bad else 0, tally, files)


@dataclass
class _WrittenRows:
    """A part a Ray worker wrote: its rows file and rejects file (with their row counts), its tally and each
    input file's."""

    rows: str
    written: int
    rejects: str | None
    rejected: int
    tally: Tally
    files: dict[str, Tally]


def _take(batch: Batch[Any], out: RowWriter, bad: RowWriter | None, tally: Tally, files: dict[str, Tally]) -> None:
    """A converted batch written, its rejects kept in file order (with the rows that went on altered), counted."""
    out.write(batch.items)
    batch.rejects.sort(key=lambda r: r.source.row)  # unreadable lines first otherwise: keep file order
    keep_rejects(batch, bad)  # with the rows that went on altered
    tally.count(batch)
    count_by_file(batch, files)


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
    stage = _Convert(to, options, ids, inputs.skip, media, write_tool_calls)
    parts: list[Part] = []
    if where.ray:
        from_records([], to, options, ids)  # a read-only format is refused before anything runs
        parts = plan_inputs(inputs, result.formats, parts_wanted(where))
    meter = Meter(progress)
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(RowWriter(output))
        bad = stack.enter_context(RowWriter(rejects, "jsonl")) if rejects else None
        if where.ray and out.container == "jsonl" and out.staged is not None:  # the workers write their parts
            folder = str(out.staged.scratch(folder=True).resolve())
            written = stack.enter_context(contextlib.closing(run_parts(
                list(enumerate(parts)), _ConvertAndWrite(stage, folder, bad is not None), where, ran)))
            for part in written:  # in input order: the files' lines copied, the counts added
                out.append(part.rows, part.written)
                if bad is not None and part.rejects is not None:
                    bad.append(part.rejects, part.rejected)
                result.tally.follow(part.tally)
                for file, tally in part.files.items():
                    result.files.setdefault(file, Tally()).follow(tally)
                meter.add(part.tally.read)
        else:
            rows = run_parts(parts, stage, where, ran) if where.ray else \
                from_records(read_inputs(inputs, result.formats), to, options, ids, media, write_tool_calls)
            for batch in rows:
                _take(batch, out, bad, result.tally, result.files)
                meter.add(len(batch.items) + len(batch.rejects))
    if where.ray:
        result.engine = ran.to_dict()
    return result
