"""`prep convert`: rows of any known format in, rows of one format out, every row accounted for."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

from prep.core.findings import Tally, count_by_file
from prep.core.options import check
from prep.core.result import Meter, ProgressFn, Result, outputs
from prep.files import RowWriter, check_outputs
from prep.formats import from_records, make_options
from prep.formats.inputs import Inputs, read_inputs


@dataclass
class ConvertResult(Result):
    formats: dict[str, str] = field(default_factory=dict)  # each file read, and the format it was read as
    files: dict[str, Tally] = field(default_factory=dict)  # each file's rows: read, written, rejected by reason

    def details(self) -> dict[str, Any]:
        return {"formats": self.formats, "files": {f: t.to_dict() for f, t in self.files.items()}}


def convert(inputs: Inputs, to: str, output: str = "-", *, rejects: str | None = None,
            settings: dict[str, Any] | None = None, ids: bool = True,
            progress: ProgressFn | None = None) -> ConvertResult:
    """Convert `inputs` to format `to` in `output` (`-`: stdout); refused rows go to `rejects`.

    `settings` are the writer's options (e.g. AutoTrain column names); output files appear only
    when the whole run succeeds."""
    check("convert", {"to": to, "output": output, "rejects": rejects, "ids": ids})
    check_outputs(inputs.files, {"-o": output, "--rejects": rejects})
    result = ConvertResult(outputs=outputs(output=output, rejects=rejects))
    records = read_inputs(inputs, result.formats)
    rows = from_records(records, to, make_options(to, settings if settings is not None else inputs.settings), ids)
    meter = Meter(progress)
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(RowWriter(output))
        bad = stack.enter_context(RowWriter(rejects, "jsonl")) if rejects else None
        for batch in rows:
            out.write(batch.items)
            batch.rejects.sort(key=lambda r: r.source.row)  # unreadable lines first otherwise: keep file order
            if bad:
                bad.write(r.to_dict() for r in batch.rejects)
            result.tally.count(batch)
            count_by_file(batch, result.files)
            meter.add(len(batch.items) + len(batch.rejects))
    return result
