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
import dataclasses
import gc
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

from prep.files import BATCH_ROWS, RowWriter, display_name, read_rows, split_suffix
from prep.findings import Batch, Finding, PrepError, Reject, RowError, Source, Tally
from prep.formats import FORMATS, READABLE, detect, make_options, module
from prep.records import Record, kind_of, record_id, type_name
from prep.validate import filechecks, schemas
from prep.validate.codes import CODES, ERROR, finding, normalized
from prep.validate.locate import Lazy, canonical, raw_path, text_path
from prep.validate.rules import content, conversation, quality, text
from prep.validate.schemas import show
from prep.validate.stats import Stats

if TYPE_CHECKING:
    from prep.validate.tokens import TokenCheck

# The record kinds each --kind takes: prep.tokenize.ACCEPTS (a test keeps them equal), not imported from
# there because prep.tokenize loads numpy and pyarrow, which validate does not otherwise need.
KINDS = {"sft": ("chat", "text"), "dpo": ("preference",), "kto": ("feedback",), "pretrain": ("text",)}
EXAMPLES_PER_CODE = 5
MAX_FINDINGS = 10_000
MAX_CHARS = 32_000
DETECT_ROWS = 8 * BATCH_ROWS
# AutoTrain's configurable columns, mapped onto the names its schema uses.
_AUTOTRAIN_COLUMNS = {"text_column": "text", "rejected_text_column": "rejected_text", "prompt_text_column": "prompt"}
_VALIDATION_NAME = re.compile(r"(^|[._-])(val|valid|validation|dev|eval|test)([._-]|$)", re.IGNORECASE)


@dataclass
class Findings:
    """All findings of a run: exact counts per code, the first few of each code for the table, and
    the first `limit` overall for the report (None: keep all)."""

    limit: int | None = MAX_FINDINGS
    stored: list[Finding] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[Finding]] = field(default_factory=dict)
    errors: int = 0
    warnings: int = 0

    def add(self, f: Finding) -> None:
        self.counts[f.code] = self.counts.get(f.code, 0) + 1
        if f.severity == ERROR:
            self.errors += 1
        else:
            self.warnings += 1
        shown = self.examples.setdefault(f.code, [])
        if len(shown) < EXAMPLES_PER_CODE:
            shown.append(f)
        if self.limit is None or len(self.stored) < self.limit:
            self.stored.append(f)

    @property
    def total(self) -> int:
        return self.errors + self.warnings


@dataclass
class FileReport:
    path: str
    role: str
    format: str | None = None
    container: str | None = None
    size: int = 0
    tally: Tally = field(default_factory=Tally)

    def to_dict(self) -> dict[str, Any]:
        t = self.tally
        return {"path": self.path, "role": self.role, "format": self.format, "container": self.container,
                "bytes": self.size, "rows_read": t.read, "rows_accepted": t.written, "rows_rejected": t.rejected_total,
                "rejected_by_reason": dict(sorted(t.rejected.items()))}


@dataclass
class Report:
    """The outcome of `validate`; `exit_code` is what the CLI exits with."""

    files: list[FileReport]
    findings: Findings
    stats: Stats
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


@dataclass
class Context:
    """What every file of a run shares: options, the findings, duplicates seen, the rejects file."""

    format: str = "auto"
    kind: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    container: str | None = None
    txt_split: str = "file"
    min_rows: int = 1
    max_chars: int = MAX_CHARS
    findings: Findings = field(default_factory=Findings)
    stats: Stats = field(default_factory=Stats)
    duplicates: dict[str, quality.Duplicates] = field(default_factory=dict)
    near: quality.NearDuplicates = field(default_factory=quality.NearDuplicates)
    rejects: RowWriter | None = None
    tokens: TokenCheck | None = None


class FileCheck:
    """The checks for one file: `check(row, source)` for one row, `stage(batches)` for a stream."""

    def __init__(self, ctx: Context, report: FileReport, fmt: str | None, scan: filechecks.Scan) -> None:
        self.ctx, self.report, self.fmt, self.scan = ctx, report, fmt, scan
        self.options = make_options(fmt, ctx.settings) if fmt else None
        self.read = module(fmt).read if fmt else None
        self.renames = self._renames()
        self.ending = "unpaired_turn" if fmt == "sharegpt" else "ends_without_answer"
        self.raw_messages = fmt in conversation.RAW_MESSAGE_FORMATS  # formats content.check looks into
        self.text_path = text_path(fmt, self.options) if fmt else "$.text"
        self.first_kind: str | None = None
        self.first_row = True
        self.answers = quality.Answers()
        self.duplicates = ctx.duplicates.setdefault(report.role, quality.Duplicates())

    def _renames(self) -> dict[str, str]:
        """Custom AutoTrain column names -> the names in its schema (paths are mapped back in findings)."""
        if self.fmt != "autotrain":
            return {}
        return {getattr(self.options, opt): default for opt, default in _AUTOTRAIN_COLUMNS.items()
                if getattr(self.options, opt) != default}

    # ---- one row

    def check(self, row: Any, source: Source) -> tuple[Record | None, list[Finding], Lazy | None]:
        """The row's canonical record (None if it cannot be read), every finding about it, and where its
        messages are in the raw row (None when the record was not checked)."""
        if not isinstance(row, dict):
            return None, [finding("not_an_object", f"a row must be a JSON object, got {type_name(row)}")], None
        if self.fmt is None:
            fields = ", ".join(show(k, 20) for k in list(row)[:8]) or "none"
            return None, [finding("unknown_format", f"no known format has these fields ({fields})")], None
        if self.report.container in ("csv", "tsv"):
            row = _csv_cells(row)
        if self.first_row:
            self.first_row = False
            self._columns(row, source)
        found = self._structure(row)
        errors = _has_error(found)
        if errors:
            other = detect(row)
            if other and other != self.fmt:
                return None, [finding("mixed_formats", f"this row is {other} but the file is {self.fmt} (read from "
                                      f"its first rows)", "$", f"keep one format per file; split the file or "
                                      f"convert these rows with `prep convert {other}`")], None
        elif self.raw_messages:
            found += content.check(row, self.fmt)
            errors = _has_error(found)
        record, locs = None, None
        try:
            record = {"id": record_id(row, source), **self.read(row, self.options)}
        except RowError as e:
            if not errors:
                found += [normalized(f) for f in e.findings]
        if record is not None:
            whole = quality.all_text(record)
            self.ctx.stats.add(record, whole)
            if not errors:
                locs = Lazy(self.fmt, row, record, self.options)
                found += self._semantics(record, locs, whole)
        return record, _unique(found) if len(found) > 1 else found, locs

    def _structure(self, row: dict[str, Any]) -> list[Finding]:
        if not self.renames:
            return schemas.check(self.fmt, row)
        back = {v: k for k, v in self.renames.items()}
        renamed = {self.renames.get(k, k): v for k, v in row.items() if k not in back or k in self.renames}
        out = []
        for f in schemas.check(self.fmt, renamed):
            head = re.match(r"\$\.(\w+)", f.path)
            if head and head.group(1) in back:
                f = Finding(f.code, f.message.replace(repr(head.group(1)), repr(back[head.group(1)])), f.hint,
                            f"$.{back[head.group(1)]}{f.path[head.end():]}", f.severity)
            out.append(f)
        return out

    def _columns(self, row: dict[str, Any], source: Source) -> None:
        """AutoTrain silently ignores a mapped column that is not in the file; prep says so, once per file."""
        for column in self.renames:
            if column not in row:
                self.ctx.findings.add(finding("missing_column", f"the column {column!r} given in the options is "
                                              f"not in the file (first row's fields: {', '.join(list(row)[:8])})",
                                              f"$.{column}").at(source))

    def _semantics(self, record: Record, locs: Lazy, whole: str) -> list[Finding]:
        found = conversation.check(record, locs, self.ending) + text.check(record, locs, self.text_path, whole)
        kind = kind_of(record)
        if self.ctx.kind and kind not in KINDS[self.ctx.kind]:
            found.append(finding("wrong_kind", f"the row is {kind} data; --kind {self.ctx.kind} takes "
                                 f"{' or '.join(KINDS[self.ctx.kind])} rows"))
        elif not self.ctx.kind:
            self.first_kind = self.first_kind or kind
            if kind != self.first_kind:
                found.append(finding("mixed_kinds", f"the row is {kind} data but the file started with "
                                     f"{self.first_kind} rows"))
        if not _has_error(found):
            found += quality.row_checks(record, locs, self.ctx.max_chars, whole)
        return found

    # ---- the stage

    def stage(self, batches: Iterable[Batch[Any]]) -> Iterator[Batch[Record]]:
        """Raw row batches in, accepted records out; rows with an error ride along as rejects."""
        sink = self.ctx.findings
        for batch in batches:
            out: Batch[Record] = batch.carry()
            out.rejects = [self._reader_reject(r) for r in batch.rejects]
            for r in out.rejects:
                for f in r.findings:
                    sink.add(f)
            passed: list[tuple[Any, Record, Source, Lazy, list[Finding]]] = []
            for row, source in zip(batch.items, batch.sources, strict=True):
                record, found, locs = self.check(row, source)
                placed = [f.at(source) for f in found] if found else []
                if record is None or locs is None or _has_error(placed):
                    out.rejects.append(Reject(source, placed, row))
                    for f in placed:
                        sink.add(f)
                else:
                    passed.append((row, record, source, locs, placed))
            tokens = self.ctx.tokens
            counted = tokens.count([p[1] for p in passed], [p[2] for p in passed]) if tokens and passed else None
            for k, (row, record, source, locs, placed) in enumerate(passed):
                if counted and counted[k].errors:
                    placed += [dataclasses.replace(f, path=raw_path(f.path, locs)).at(source) for f in counted[k].errors]
                    out.rejects.append(Reject(source, placed, row))
                else:
                    if counted:
                        placed += [f.at(source) for f in tokens.check(record, counted[k], locs)]  # type: ignore[union-attr]
                    placed += self._accepted(record, source)
                    out.add(record, source)
                for f in placed:
                    sink.add(f)
            yield out

    def _reader_reject(self, reject: Reject) -> Reject:
        """The reader's reject, its codes given their registry severity; NUL bytes named as the cause."""
        nul = self.scan.nul_lines.get(reject.source.line)
        findings = [nul] if nul else [normalized(f) for f in reject.findings]
        return Reject(reject.source, findings, reject.row)

    def _accepted(self, record: Record, source: Source) -> list[Finding]:
        self.answers.add(quality.answer(record))
        key = quality.content_key(record)
        out = []
        if dup := self.duplicates.check(key, source):
            out.append(dup)
        if self.report.role == "validation":
            self.ctx.near.add(record, key, source)
        elif near := self.ctx.near.check(record, key, source):
            self.ctx.findings.add(near)  # placed at the validation row it repeats
        return out

    def finish(self) -> None:
        for f in self.answers.findings(self.report.path):
            self.ctx.findings.add(f)


def _has_error(found: list[Finding]) -> bool:
    return bool(found) and any(f.severity == ERROR for f in found)  # most lists are empty: no generator then


def _unique(found: list[Finding]) -> list[Finding]:
    seen: set[tuple[str, str]] = set()
    out = []
    for f in found:
        if (f.code, f.path) not in seen:
            seen.add((f.code, f.path))
            out.append(f)
    return out


_CSV_STRUCTURED = ("history", "tools", "images", "videos", "audios", "conversations", "messages", "questions",
                   "answers", "input", "preferred_output", "non_preferred_output", "prompt", "chosen", "rejected",
                   "completion")
_CSV_LABELS = ("kto_tag", "label")


def _csv_cells(row: dict[str, Any]) -> dict[str, Any]:
    """CSV cells are text. As the readers do, a cell holding a JSON list or object is read as one, an empty
    cell of a structured column is absent, and a label cell "true"/"false" is a boolean."""
    out = dict(row)
    for k, v in row.items():
        if not isinstance(v, str):
            continue
        if k in _CSV_STRUCTURED and v.strip()[:1] in ("[", "{"):
            with contextlib.suppress(ValueError):
                out[k] = json.loads(v)
        elif k in _CSV_STRUCTURED + _CSV_LABELS and not v.strip():
            del out[k]
        elif k in _CSV_LABELS and v.strip().lower() in ("true", "false"):
            out[k] = v.strip().lower() == "true"
    return out


def check_records(batches: Iterable[Batch[Record]]) -> Iterator[Batch[Record]]:
    """Stage for the later verbs (records -> validate -> records): the conversation and text rules on
    canonical records, at the records' own paths; a record with an error becomes a reject, warnings pass."""
    for batch in batches:
        out: Batch[Record] = batch.carry()
        for record, source in zip(batch.items, batch.sources, strict=True):
            locs = canonical(record)
            found = conversation.check(record, locs) + text.check(record, locs, "$.text", quality.all_text(record))
            errors = [f for f in found if f.severity == ERROR]
            if errors:
                out.reject(source, errors, record)
            else:
                out.add(record, source)
        yield out


# ---------------------------------------------------------------- the verb


def split_roles(inputs: Sequence[str], validation: Sequence[str] = ()) -> list[tuple[str, str]]:
    """(path, "train"|"validation") for each input: files given as validation, or, when both kinds are
    given together, files whose name says val/valid/validation/dev/eval/test."""
    named = [p for p in inputs if _VALIDATION_NAME.search(Path(p).stem)]
    inferred = named if len(named) < len(inputs) else []
    return [(p, "validation" if p in inferred else "train") for p in inputs] + [(p, "validation") for p in validation]


def validate(inputs: Sequence[str], *, validation: Sequence[str] = (), format: str = "auto", kind: str | None = None,
             settings: dict[str, Any] | None = None, container: str | None = None, txt_split: str = "file",
             strict: bool = False, rejects: str | None = None, min_rows: int = 1,
             max_findings: int | None = MAX_FINDINGS, max_chars: int = MAX_CHARS, tokenizer: Any = None,
             template: str | None = None, max_len: int | None = None) -> Report:
    """Check every row of every input; raise PrepError only when the run cannot start (missing file, bad option).

    `validation` files are checked like the others and also for near-duplicates of the training rows.
    With `tokenizer` (a folder, or a loaded prep.tokenize.Tokenizer) rows are also rendered with
    `template` (default: the tokenizer's own) and tokenized, for token statistics and token checks."""
    if format != "auto" and format not in READABLE:
        raise PrepError(f"unknown format {format!r}; one of auto, {', '.join(READABLE)}")
    if kind is not None and kind not in KINDS:
        raise PrepError(f"unknown kind {kind!r}; one of {', '.join(KINDS)}")
    if min_rows < 0 or (max_findings is not None and max_findings < 0) or max_chars < 1:
        raise PrepError("--min-rows and --max-findings must be >= 0, --max-chars >= 1")
    roles = split_roles(inputs, validation)
    if not roles:
        raise PrepError("nothing to validate: give input files")
    for path, _ in roles:
        if path != "-" and not os.path.isfile(path):
            raise PrepError(f"{path}: no such file")
    if max_len is not None and tokenizer is None:
        raise PrepError("--max-len counts tokens: give --tokenizer too")
    ctx = Context(format, kind, dict(settings or {}), container, txt_split, min_rows, max_chars,
                  Findings(max_findings))
    if tokenizer is not None:
        from prep.validate.tokens import TokenCheck

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
    return Report(list(reports.values()), ctx.findings, ctx.stats, strict)


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
    batches: Iterator[Batch[Any]] = _named(read_rows(path, scan.container, ctx.txt_split, BATCH_ROWS), name, path)
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


__all__ = ["FORMATS", "KINDS", "Context", "FileCheck", "FileReport", "Findings", "Report", "check_records", "split_roles",
           "validate"]
