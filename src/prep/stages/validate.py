"""`prep validate`: every check the peers make (Together's client, the OpenAI cookbook and legacy
tool, AutoTrain, LLaMA-Factory), per row, with file, line, JSON path, code, severity, message and
hint; it never stops at the first bad row. Rows read = rows accepted + rows rejected, always.

Per file: a byte pass (`bytescan`), the streaming reader (`files.read.read_rows`), then the stage
`FileCheck.stage`: each raw row is checked against its format's JSON Schema, read into a canonical
record by the format's own reader, and the record checked by the Python rules (`rules/`). A row
with an error is rejected (kept with its findings by `--rejects`); warnings do not reject.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prep.checks import bytescan, plain
from prep.checks.dataset_stats import Stats
from prep.checks.filecheck import MAX_CHARS, MAX_FINDINGS, Checked, Context, FileCheck, FileReport, Findings
from prep.checks.rules import quality
from prep.core.columns import ACCEPTS
from prep.core.findings import Batch, Finding, PrepError, Reject, Source, finding
from prep.core.heap import streaming
from prep.core.options import DEFAULT_DATE, MAX_MEDIA_BYTES, MAX_MEDIA_PIXELS, MAX_MEDIA_SECONDS, checked
from prep.core.result import Meter, ProgressFn, Result, outputs
from prep.files.media import Limits
from prep.files.paths import display_name, split_suffix
from prep.files.pieces import BATCH_ROWS, Piece, cut, pieces
from prep.files.read import jsonl_blocks, read_rows, readable_file
from prep.files.write import RowWriter
from prep.formats import detect, openai
from prep.formats.inputs import Inputs, refuse_read_once
from prep.stages.engine import Engine, Ran, parts_wanted, run_parts

if TYPE_CHECKING:
    from prep.checks.tokens import TokenCounts

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

    def summary(self) -> str:
        return (f"read {self.rows_read}, accepted {self.rows_accepted}, rejected {self.rows_rejected}; "
                f"{self.findings.errors} errors, {self.findings.warnings} warnings")

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
                "findings_by_code": {code: {"severity": f.examples[code][0].severity, "count": n}
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


@checked("validate")
def validate(inputs: Inputs, *, validation: Sequence[str] = (), kind: str | None = None, strict: bool = False,
             rejects: str | None = None, min_rows: int = 1, max_findings: int | None = MAX_FINDINGS,
             max_chars: int = MAX_CHARS, tokenizer: Any = None, template: str | None = None,
             max_len: int | None = None, progress: ProgressFn | None = None, engine: str = "local",
             ray_address: str | None = None, ray_workers: int = 0, template_kwargs: Iterable[str] = (),
             date: str = DEFAULT_DATE, max_media_pixels: int = MAX_MEDIA_PIXELS,
             max_media_bytes: int = MAX_MEDIA_BYTES, max_media_seconds: float = MAX_MEDIA_SECONDS) -> Report:
    """Check every row of every input file; raise PrepError only when the run cannot start (missing file, bad
    option).

    `validation` files are checked like the others and also for near-duplicates of the training rows.
    `engine="ray"` runs each row's own checks on a Ray cluster and the checks across rows here (design §13): the
    same report.
    With `tokenizer` (a folder, or a loaded prep.render.tokenizer.Tokenizer) rows are also rendered with
    `template` (default: the tokenizer's own; its arguments `template_kwargs` and day `date`, as prep tokenize
    takes them) and tokenized, for token statistics and token checks.
    Every image, video and audio of a row is opened and decoded; `max_media_*` bound its pixels, bytes and
    seconds."""
    if inputs.datasets:
        raise PrepError("validate checks files: convert the dataset_info entries first (prep convert --dataset-info "
                        "... --to openai -o FILE), then validate FILE")
    roles = split_roles(inputs.files, validation)
    if not roles:
        raise PrepError("nothing to validate: give input files")
    where, ran = Engine(engine, ray_address, ray_workers), Ran()
    for path, _ in roles:
        if path != "-" and (problem := readable_file(path)):
            raise PrepError(f"{path}: {problem}")
    if where.ray:  # locally, what can be read once is spooled (_local)
        refuse_read_once([path for path, _ in roles], "--engine ray reads each input in parts")
    if max_len is not None and tokenizer is None:
        raise PrepError("--max-len counts tokens: give --tokenizer too")
    ctx = Context(inputs.format, kind, dict(inputs.settings), inputs.container, inputs.txt_split, min_rows, max_chars,
                  Findings(max_findings), meter=Meter(progress), max_row_bytes=inputs.max_row_bytes,
                  media_limits=Limits(max_media_pixels, max_media_bytes, max_media_seconds),
                  media_root=inputs.media_root, tool_calls=inputs.tool_calls, strict_fields=inputs.strict_fields,
                  keep_columns=inputs.fields.keep, split_think=inputs.split_think)
    if tokenizer is not None:
        from prep.checks.tokens import TokenCheck  # noqa: PLC0415 - start-up time: Arrow and numpy only to count tokens

        ctx.tokens = TokenCheck(tokenizer, template, max_len, template_kwargs=template_kwargs, date=date)
    reports = {path: FileReport(display_name(path), role) for path, role in roles}
    with contextlib.ExitStack() as stack:
        stack.enter_context(streaming())
        ctx.rejects = stack.enter_context(RowWriter(rejects, "jsonl")) if rejects else None
        # Validation files first: their rows are indexed before the training rows stream past them.
        ordered = [path for path, _ in sorted(roles, key=lambda pr: pr[1] != "validation")]
        if where.ray:
            _validate_on_ray(ordered, reports, ctx, where, ran)
        for path in ordered if not where.ray else ():
            with _local(path) as local:
                _validate_file(local, reports[path], ctx)
    if ctx.tokens:
        ctx.stats.extra.update(ctx.tokens.stats())
    result = Report(outputs=outputs(rejects=rejects), notes=ctx.tokens.tok.notes if ctx.tokens else [],
                    files=list(reports.values()),
                    findings=ctx.findings, stats=ctx.stats, strict=strict, engine=ran.to_dict() if where.ray else {})
    for fr in result.files:
        result.tally.add(fr.tally)
    return result


@contextlib.contextmanager
def _local(path: str) -> Iterator[str]:
    """A path that can be read twice (byte pass, then rows): stdin, a pipe or a FIFO (read once: the rows would find
    it drained, an empty file) is spooled to a temporary file, with the name's suffixes (they tell its format)."""
    if path != "-" and os.path.isfile(path):
        yield path
        return
    suffix = "" if path == "-" else "".join(Path(path).suffixes)
    with tempfile.NamedTemporaryFile(prefix="prep-stdin-", suffix=suffix) as tmp, \
            contextlib.nullcontext(sys.stdin.buffer) if path == "-" else open(path, "rb") as source:  # noqa: SIM115
        shutil.copyfileobj(source, tmp)
        tmp.flush()
        yield tmp.name


def _validate_file(path: str, report: FileReport, ctx: Context) -> None:
    scan = _scan(path, report, ctx)
    if scan is None or _validate_plain(path, scan, report, ctx):
        return
    opened = _open(path, scan, report, ctx)
    if opened is None:
        return
    check, batches = opened
    try:
        for batch in check.stage(batches):
            _count(batch, report, ctx)
    except PrepError as e:
        _unreadable(e, path, report, ctx)
        return
    _finish(check, report, ctx)


def _validate_plain(path: str, scan: bytescan.Scan, report: FileReport, ctx: Context) -> bool:
    """A plain JSONL file whose first block `checks.plain` proves clean (the row path checks nothing first), read
    in blocks: each proved block counted in bulk, each other one checked by the row path, in file order, so the
    findings, counts and statistics are the row path's. False (nothing read): the file is not such a file."""
    if not _plain_run(path, scan, report, ctx):
        return False
    blocks = jsonl_blocks(path, BATCH_ROWS, ctx.max_row_bytes)
    first = next(blocks, None)
    proved = plain.prove(first.lines, ctx.max_chars) if first and first.lines else None
    if first is None or proved is None:
        return False
    report.format = "openai"
    check = FileCheck(ctx, report, "openai", scan, path)
    if check.options != openai.Options(media_root=check.options.media_root):  # columns renamed: the row path
        return False
    try:
        for block in chain([first], blocks):
            if block is not first:
                proved = plain.prove(block.lines, ctx.max_chars) if block.lines else None
            if proved is None:
                rows = read_rows(path, scan.container, ctx.txt_split, BATCH_ROWS, ctx.max_row_bytes, block.piece)
                for batch in check.stage(_named(rows, report.path, path)):
                    _count(batch, report, ctx)
                continue
            rows = len(proved.keys)
            check.first_row = False
            check.first_kind = check.first_kind or (None if ctx.kind else "chat")
            ctx.stats.add_chats(proved.messages, proved.characters, proved.assistant_characters,
                                proved.missing_system, proved.missing_user)
            check.answers.add_all(proved.answers)
            for f in check.duplicates.check_lines(proved.keys, report.path, block.piece.line + 1):
                ctx.findings.add(f)
            report.tally.read += rows
            report.tally.written += rows
            ctx.meter.add(rows)
    except PrepError as e:
        _unreadable(e, path, report, ctx)
        return True
    _finish(check, report, ctx)
    return True


def _plain_run(path: str, scan: bytescan.Scan, report: FileReport, ctx: Context) -> bool:
    """Whether the fast path may take the file: plain JSONL read as openai rows, and nothing asked that needs each
    record (tokens, tool calls or think blocks read from text, near duplicates of validation rows, a kind that takes no chat)."""
    return (scan.container == "jsonl" and split_suffix(path)[1] is None and ctx.format in ("auto", "openai")
            and ctx.tokens is None and not ctx.tool_calls and not ctx.split_think and report.role != "validation"
            and ctx.near.index is None and (ctx.kind is None or "chat" in ACCEPTS[ctx.kind]))


def _scan(path: str, report: FileReport, ctx: Context) -> bytescan.Scan | None:
    """A file's byte pass, its findings reported (None: it cannot be read as rows, which its findings say)."""
    scan = bytescan.scan(path, report.path, ctx.container or split_suffix(path)[0])
    report.container, report.size = scan.container, scan.size
    for f in scan.findings:
        ctx.findings.add(f)
    return scan if scan.readable else None


def _open(path: str, scan: bytescan.Scan, report: FileReport, ctx: Context
          ) -> tuple[FileCheck, Iterator[Batch[Any]]] | None:
    """A file's format (detected from its first rows unless given): its FileCheck and its row batches (None: it
    cannot be read as rows, which its findings say)."""
    name = report.path
    batches: Iterator[Batch[Any]] = _named(read_rows(path, scan.container, ctx.txt_split, BATCH_ROWS,
                                                     ctx.max_row_bytes), name, path)
    fmt: str | None = ctx.format
    try:
        if scan.container == "txt" and fmt == "auto":
            fmt = "text"
        elif fmt == "auto":
            fmt, batches = _detect(batches)
    except PrepError as e:
        _unreadable(e, path, report, ctx)
        return None
    report.format = fmt
    return FileCheck(ctx, report, fmt, scan, "-" if name == display_name("-") else path), batches


def _count(batch: Batch[Any], report: FileReport, ctx: Context) -> None:
    report.tally.count(batch)
    ctx.meter.add(len(batch.items) + len(batch.rejects))
    if ctx.rejects:
        ctx.rejects.write(_encodable(r.to_dict()) for r in sorted(batch.rejects, key=lambda r: r.source.row))


def _unreadable(e: PrepError, path: str, report: FileReport, ctx: Context) -> None:
    """The file broke off where `e` says (the rows before it were checked)."""
    name = report.path
    message = str(e).removeprefix(f"{name}:").removeprefix(f"{path}:")
    line = re.match(r"(\d+):\s*", message)
    ctx.findings.add(finding("unreadable_file", message[line.end():] if line else message.strip())
                     .at(Source(name, int(line.group(1)) if line else 0, 0)))


def _finish(check: FileCheck, report: FileReport, ctx: Context) -> None:
    check.finish()
    if report.tally.read and report.tally.written < ctx.min_rows:
        ctx.findings.add(finding("too_few_rows", f"{report.tally.written} usable row(s); at least {ctx.min_rows} "
                                 "needed").at(Source(report.path, 0, 0)))
    elif not report.tally.read:
        ctx.findings.add(finding("empty_file", "the file holds no rows").at(Source(report.path, 0, 0)))


# ---------------------------------------------------------------- under Ray (design §13)


@dataclass(frozen=True)
class _FilePart:
    """A piece of one file for a Ray worker, with what the driver learnt of the file: its format, byte pass and
    the kind of its first record (which `mixed_kinds` compares every row with)."""

    path: str
    name: str
    role: str
    piece: Piece
    format: str | None
    scan: bytescan.Scan
    first_kind: str | None


@dataclass
class _Rows:
    """A worker's batch: its rows checked, and the statistics and token counts of its rows."""

    checked: Checked
    stats: Stats
    tokens: TokenCounts | None


@dataclass(frozen=True)
class _End:
    """A part is done; `error`: the file broke off in it (the local engine stops reading the file there)."""

    error: str | None = None


def _quiet(ctx: Context, tokens: bool = True) -> Context:
    """`ctx` without what only the driver keeps (findings, statistics, duplicates, the rejects file, progress)."""
    return dataclasses.replace(ctx, findings=Findings(None), stats=Stats(), duplicates={},
                               near=quality.NearDuplicates(), rejects=None, meter=Meter(None),
                               tokens=ctx.tokens if tokens else None)


@dataclass
class _Validate:
    """What a Ray worker runs over a part: the rows' own checks (`FileCheck.rows`); the driver runs the rest."""

    ctx: Context

    def __call__(self, part: _FilePart) -> Iterator[_Rows | _End]:
        ctx = self.ctx
        check = FileCheck(ctx, FileReport(part.name, part.role), part.format, part.scan, part.path)
        check.first_kind, check.first_row = part.first_kind, part.piece.row == 0
        try:
            rows = read_rows(part.path, part.scan.container, ctx.txt_split, BATCH_ROWS, ctx.max_row_bytes, part.piece)
            for batch in _named(rows, part.name, part.path):
                yield _Rows(check.rows(batch), ctx.stats, ctx.tokens.take() if ctx.tokens else None)
                ctx.stats = Stats()
        except PrepError as e:
            yield _End(str(e))
            return
        yield _End()


def _first_kind(check: FileCheck, batches: Iterator[Batch[Any]]) -> str | None:
    """The kind of a file's first record that `mixed_kinds` compares with (checked aside: no finding counts)."""
    if check.ctx.kind:
        return None
    probe = FileCheck(_quiet(check.ctx, tokens=False), FileReport(check.report.path, check.report.role), check.fmt,
                      check.scan, check.path)
    with contextlib.suppress(PrepError):
        for batch in batches:
            for row, source in zip(batch.items, batch.sources, strict=True):
                probe.check(row, source)
                if probe.first_kind:
                    return probe.first_kind
    return None


def _validate_on_ray(paths: list[str], reports: dict[str, FileReport], ctx: Context, engine: Engine,
                     ran: Ran) -> None:
    """The files' byte passes, formats and first kinds here; the rows' own checks on the workers, part by part;
    the checks across rows, the findings and the counts here again, in input order: the local report."""
    jobs: list[tuple[FileCheck, list[_FilePart]]] = []
    for path in paths:
        report = reports[path]
        scan = _scan(path, report, ctx)
        opened = _open(path, scan, report, ctx) if scan else None
        if opened is None:
            continue
        check, batches = opened
        kind = _first_kind(check, batches)
        jobs.append((check, [_FilePart(path, report.path, report.role, p, check.fmt, check.scan, kind)
                             for p in pieces(path, check.scan.container, limit=ctx.max_row_bytes)]))
    runs = cut([[p.piece for p in parts] for _, parts in jobs], parts_wanted(engine))
    work = [dataclasses.replace(parts[0], piece=piece) for (_, parts), run in zip(jobs, runs, strict=True)
            for piece in run]
    results = run_parts(work, _Validate(_quiet(ctx)), engine, ran)
    for (check, _), run in zip(jobs, runs, strict=True):
        error: str | None = None
        left = len(run)
        while left:
            item = next(results)
            if isinstance(item, _End):
                left -= 1
                error = error or item.error
            elif error is None:  # rows after a break are not read, as locally
                ctx.stats.merge(item.stats)
                if ctx.tokens and item.tokens:
                    ctx.tokens.merge(item.tokens)
                _count(check.settle(item.checked), check.report, ctx)
        if error is not None:
            _unreadable(PrepError(error), check.report.path, check.report, ctx)
        else:
            _finish(check, check.report, ctx)


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
