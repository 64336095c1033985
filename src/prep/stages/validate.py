"""`prep validate`: every check the peers make (Together's client, the OpenAI cookbook and legacy
tool, AutoTrain, LLaMA-Factory), per row, with file, line, JSON path, code, severity, message and
hint; it never stops at the first bad row. Rows read = rows accepted + rows rejected, always.

Per file: a byte pass (`filechecks`), the streaming reader (`files.read_rows`), then the stage
`FileCheck.stage`: each raw row is checked against its format's JSON Schema, read into a canonical
record by the format's own reader, and the record checked by the Python rules (`rules/`). A row
with an error is rejected (kept with its findings by `--rejects`); warnings do not reject.
"""

from __future__ import annotations

import contextlib
import gc
import json
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any

from prep.checks import filechecks
from prep.checks.codes import CODES, ERROR, finding
from prep.checks.filecheck import MAX_CHARS, MAX_FINDINGS, Context, FileCheck, FileReport, Findings
from prep.checks.stats import Stats
from prep.core.findings import Batch, Finding, PrepError, Reject, Source
from prep.core.options import check
from prep.core.result import Meter, ProgressFn, Result, outputs
from prep.files import BATCH_ROWS, RowWriter, display_name, read_rows, readable_file, split_suffix
from prep.formats import detect
from prep.formats.inputs import Inputs

DETECT_ROWS = 8 * BATCH_ROWS
_VALIDATION_NAME = re.compile(r"(^|[._-])(val|valid|validation|dev|eval|test)([._-]|$)", re.IGNORECASE)


@dataclass
class Report(Result):
    """The outcome of `validate`: per file and in all, rows read, accepted (the tally's written) and
    rejected; every finding; the statistics. `to_dict()` is the `--report` JSON."""

    files: list[FileReport] = field(default_factory=list)
    findings: Findings = field(default_factory=Findings)
    stats: Stats = field(default_factory=Stats)
    strict: bool = False

    @property
    def rows_read(self) -> int:
        return sum(f.tally.read for f in self.files)

    @property
    def rows_accepted(self) -> int:
        return sum(f.tally.written for f in self.files)

    @property
    def rows_rejected(self) -> int:
        return sum(f.tally.rejected_total for f in self.files)

    @property
    def balanced(self) -> bool:
        return all(f.tally.balanced for f in self.files)

    @property
    def exit_code(self) -> int:
        return 1 if self.findings.errors or (self.strict and self.findings.warnings) else 0

    def to_dict(self) -> dict[str, Any]:
        f = self.findings
        order = {fr.path: i for i, fr in enumerate(self.files)}
        stored = sorted(f.stored, key=lambda x: (order.get(x.file, len(order)), x.line))
        return {
            "version": 1,
            "ok": self.exit_code == 0,
            "exit_code": self.exit_code,
            "strict": self.strict,
            "summary": {
                "files": len(self.files), "rows_read": self.rows_read, "rows_accepted": self.rows_accepted,
                "rows_rejected": self.rows_rejected, "errors": f.errors, "warnings": f.warnings,
                "findings_by_code": {code: {"severity": CODES[code].severity if code in CODES else ERROR, "count": n}
                                     for code, n in sorted(f.counts.items())},
                "findings_stored": len(f.stored), "findings_total": f.total,
            },
            "files": [fr.to_dict() for fr in self.files],
            "stats": self.stats.to_dict(),
            "findings": [x.to_dict() for x in stored],
        }


# ---------------------------------------------------------------- the verb


def split_roles(inputs: Sequence[str], validation: Sequence[str] = ()) -> list[tuple[str, str]]:
    """(path, "train"|"validation") for each input: files given as validation, or, when both kinds are
    given together, files whose name says val/valid/validation/dev/eval/test."""
    named = [p for p in inputs if _VALIDATION_NAME.search(Path(p).stem)]
    inferred = named if len(named) < len(inputs) else []
    return [(p, "validation" if p in inferred else "train") for p in inputs] + [(p, "validation") for p in validation]


def validate(inputs: Inputs, *, validation: Sequence[str] = (), kind: str | None = None, strict: bool = False,
             rejects: str | None = None, min_rows: int = 1, max_findings: int | None = MAX_FINDINGS,
             max_chars: int = MAX_CHARS, tokenizer: Any = None, template: str | None = None,
             max_len: int | None = None, progress: ProgressFn | None = None) -> Report:
    """Check every row of every input file; raise PrepError only when the run cannot start (missing file, bad
    option).

    `validation` files are checked like the others and also for near-duplicates of the training rows.
    With `tokenizer` (a folder, or a loaded prep.render.tokenizer.Tokenizer) rows are also rendered with
    `template` (default: the tokenizer's own) and tokenized, for token statistics and token checks."""
    check("inputs", {"format": inputs.format, "input_type": inputs.container, "txt_split": inputs.txt_split})
    check("validate", {"validation": list(validation), "kind": kind, "strict": strict, "rejects": rejects,
                       "min_rows": min_rows, "max_findings": max_findings, "max_chars": max_chars,
                       "template": template, "max_len": max_len})
    if inputs.datasets:
        raise PrepError("validate checks files: convert the dataset_info entries first (prep convert --dataset-info "
                        "... --to openai -o FILE), then validate FILE")
    roles = split_roles(inputs.files, validation)
    if not roles:
        raise PrepError("nothing to validate: give input files")
    for path, _ in roles:
        if path != "-" and (problem := readable_file(path)):
            raise PrepError(f"{path}: {problem}")
    if max_len is not None and tokenizer is None:
        raise PrepError("--max-len counts tokens: give --tokenizer too")
    ctx = Context(inputs.format, kind, dict(inputs.settings), inputs.container, inputs.txt_split, min_rows, max_chars,
                  Findings(max_findings), meter=Meter(progress), max_row_bytes=inputs.max_row_bytes)
    if tokenizer is not None:
        from prep.checks.tokens import TokenCheck  # noqa: PLC0415 - start-up time: Arrow and numpy only to count tokens

        ctx.tokens = TokenCheck(tokenizer, template, max_len)
    reports = {path: FileReport(display_name(path), role) for path, role in roles}
    with contextlib.ExitStack() as stack:
        stack.enter_context(_heap_frozen())
        ctx.rejects = stack.enter_context(RowWriter(rejects, "jsonl")) if rejects else None
        # Validation files first: their rows are indexed before the training rows stream past them.
        for path, _ in sorted(roles, key=lambda pr: pr[1] != "validation"):
            with _local(path) as local:
                _validate_file(local, reports[path], ctx)
    if ctx.tokens:
        ctx.stats.extra.update(ctx.tokens.stats())
    result = Report(outputs=outputs(rejects=rejects), notes=ctx.tokens.tok.notes if ctx.tokens else [],
                    files=list(reports.values()),
                    findings=ctx.findings, stats=ctx.stats, strict=strict)
    for fr in result.files:
        result.tally.add(fr.tally)
    return result


@contextlib.contextmanager
def _heap_frozen() -> Iterator[None]:
    """The objects alive before the run (imported modules, mostly) left out of the cyclic GC's passes while rows
    stream, and given back after: full collections then walk only the rows in flight (~8% of a run's time).
    Left alone when the caller froze objects itself, whose freeze this would otherwise undo."""
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@contextlib.contextmanager
def _local(path: str) -> Iterator[str]:
    """A path that can be read twice (byte pass, then rows): stdin is spooled to a temporary file."""
    if path != "-":
        yield path
        return
    with tempfile.NamedTemporaryFile(prefix="prep-stdin-") as tmp:
        shutil.copyfileobj(sys.stdin.buffer, tmp)
        tmp.flush()
        yield tmp.name


def _validate_file(path: str, report: FileReport, ctx: Context) -> None:
    name = report.path
    scan = filechecks.scan(path, name, ctx.container or split_suffix(path)[0])
    report.container, report.size = scan.container, scan.size
    for f in scan.findings:
        ctx.findings.add(f)
    if not scan.readable:
        return
    batches: Iterator[Batch[Any]] = _named(read_rows(path, scan.container, ctx.txt_split, BATCH_ROWS,
                                                                  ctx.max_row_bytes), name, path)
    fmt: str | None = ctx.format
    try:
        if scan.container == "txt" and fmt == "auto":
            fmt = "text"
        elif fmt == "auto":
            fmt, batches = _detect(batches)
        report.format = fmt
        check = FileCheck(ctx, report, fmt, scan)
        for batch in check.stage(batches):
            report.tally.count(batch)
            ctx.meter.add(len(batch.items) + len(batch.rejects))
            if ctx.rejects:
                ctx.rejects.write(_encodable(r.to_dict()) for r in sorted(batch.rejects, key=lambda r: r.source.row))
    except PrepError as e:
        message = str(e).removeprefix(f"{name}:").removeprefix(f"{path}:")
        line = re.match(r"(\d+):\s*", message)
        ctx.findings.add(finding("unreadable_file", message[line.end():] if line else message.strip())
                         .at(Source(name, int(line.group(1)) if line else 0, 0)))
        return
    check.finish()
    if report.tally.read and report.tally.written < ctx.min_rows:
        ctx.findings.add(finding("too_few_rows", f"{report.tally.written} usable row(s); at least {ctx.min_rows} "
                                 "needed").at(Source(name, 0, 0)))
    elif not report.tally.read:
        ctx.findings.add(finding("empty_file", "the file holds no rows").at(Source(name, 0, 0)))


def _named(batches: Iterator[Batch[Any]], name: str, path: str) -> Iterator[Batch[Any]]:
    """Rows of a spooled stdin carry the name `<stdin>`, not the temporary file's."""
    if name == path:
        yield from batches
        return
    for batch in batches:
        batch.sources = [Source(name, s.line, s.row) for s in batch.sources]
        batch.rejects = [Reject(Source(name, r.source.line, r.source.row),
                                [Finding(f.code, f.message, f.hint, f.path, f.severity, name, f.line)
                                 for f in r.findings], r.row) for r in batch.rejects]
        yield batch


def _detect(batches: Iterator[Batch[Any]]) -> tuple[str | None, Iterator[Batch[Any]]]:
    """The format of the first row any format recognizes (looking some rows ahead, keeping them)."""
    seen: list[Batch[Any]] = []
    rows = 0
    for batch in batches:
        seen.append(batch)
        rows += len(batch.items) + len(batch.rejects)
        fmt = next((f for f in map(detect, batch.items) if f), None)
        if fmt or rows >= DETECT_ROWS:
            return fmt, chain(seen, batches)
    return None, iter(seen)


def _encodable(value: Any) -> Any:
    """A reject as JSON can hold it: values JSON has no type for (Parquet bytes, dates) as their repr. (An
    unpaired surrogate stays: the RowWriter spells it as a JSON escape, which reads back as the same value.)"""
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return json.loads(json.dumps(value, default=repr))
