"""`prep convert`: rows of any known format in, rows of one format out, every row accounted for."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any

from prep.core.findings import PrepError, Tally
from prep.files import RowWriter
from prep.formats import WRITABLE, from_records, make_options
from prep.formats.inputs import Inputs, read_inputs


@dataclass
class ConvertResult:
    tally: Tally
    formats: dict[str, str]
    output: str


def convert(inputs: Inputs, to: str, output: str = "-", *, rejects: str | None = None,
            settings: dict[str, Any] | None = None, ids: bool = True) -> ConvertResult:
    """Convert `inputs` to format `to` in `output` (`-`: stdout); refused rows go to `rejects`.

    `settings` are the writer's options (e.g. AutoTrain column names); output files appear only
    when the whole run succeeds."""
    if to not in WRITABLE:
        raise PrepError(f"cannot write {to!r}; one of {', '.join(WRITABLE)}")
    if rejects and os.path.abspath(rejects) == os.path.abspath(output):
        raise PrepError(f"{rejects}: the output and the rejects file must differ")
    result = ConvertResult(Tally(), {}, output)
    records = read_inputs(inputs, result.formats)
    rows = from_records(records, to, make_options(to, settings if settings is not None else inputs.settings), ids)
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(RowWriter(output))
        bad = stack.enter_context(RowWriter(rejects, "jsonl")) if rejects else None
        for batch in rows:
            out.write(batch.items)
            batch.rejects.sort(key=lambda r: r.source.row)  # unreadable lines first otherwise: keep file order
            if bad:
                bad.write(r.to_dict() for r in batch.rejects)
            result.tally.count(batch)
    return result
