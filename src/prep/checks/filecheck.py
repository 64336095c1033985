"""Every check on the rows of one file (`FileCheck`), and what a whole validate run shares (`Context`).

Each raw row is checked against its format's JSON Schema, read into a canonical record by the
format's own reader, and the record checked by the Python rules (`rules/`). A row with an error is
rejected (kept with its findings); warnings do not reject.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prep.checks import bytescan, schemas
from prep.checks.dataset_stats import Stats
from prep.checks.locate import Lazy, raw_path, text_path
from prep.checks.rules import content, conversation, media, quality, text
from prep.checks.schemas import show
from prep.core.codes import ERROR
from prep.core.columns import ACCEPTS
from prep.core.findings import Batch, Finding, Reject, RowError, Source, Tally, finding, normalized
from prep.core.options import MAX_ROW_BYTES
from prep.core.records import Record, kind_of, record_id, type_name
from prep.core.result import Meter
from prep.files.media import LIMITS, Limits
from prep.files.write import RowWriter
from prep.formats import Seen, detect, module, read_think, reader_options, toolcalls, unread

if TYPE_CHECKING:
    from prep.checks.tokens import TokenCheck

EXAMPLES_PER_CODE = 5
MAX_FINDINGS = 10_000
MAX_CHARS = 32_000
# AutoTrain's configurable columns, mapped onto the names its schema uses.
_AUTOTRAIN_COLUMNS = {"text_column": "text", "rejected_text_column": "rejected_text", "prompt_text_column": "prompt"}


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
        out = {"path": self.path, "role": self.role, "format": self.format, "container": self.container,
               "bytes": self.size, "rows_read": t.read, "rows_accepted": t.written, "rows_rejected": t.rejected_total,
               "rejected_by_reason": dict(sorted(t.rejected.items()))}
        if t.dropped:  # the top-level columns no reader maps, by the rows that have them
            out["unknown_columns"] = dict(t.dropped.most_common())
        return out


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
    meter: Meter = field(default_factory=lambda: Meter(None))
    max_row_bytes: int = MAX_ROW_BYTES
    media_limits: Limits = LIMITS
    media_root: str | None = None  # where relative media paths are resolved (default: each file's folder)
    tool_calls: str | None = None  # the text dialect of tool calls read into tool_calls (--tool-calls)
    strict_fields: bool = False  # a repeated key's dropped value is an error (the row rejected), not a warning
    keep_columns: tuple[str, ...] = ()  # input columns carried (--keep-columns): not unknown
    split_think: bool = False  # an answer's leading think block read as its reasoning (--split-think)


@dataclass
class Checked:
    """A batch after `FileCheck.rows`: the batch so far (rows rejected by their own checks), the findings of those
    rows in the order they are reported, and the rows that passed with their findings and whether the tokenizer
    refused them."""

    out: Batch[Record]
    early: list[Finding]
    passed: list[tuple[Any, Record, Source, list[Finding], bool]] = field(default_factory=list)


class FileCheck:
    """The checks for one file: `check(row, source)` for one row, `stage(batches)` for a stream."""

    def __init__(self, ctx: Context, report: FileReport, fmt: str | None, scan: bytescan.Scan, path: str) -> None:
        self.ctx, self.report, self.fmt, self.scan, self.path = ctx, report, fmt, scan, path
        self.options = reader_options(fmt, ctx.settings, path, ctx.media_root) if fmt else None
        self.read = module(fmt).read if fmt else None
        self.renames = self._renames()
        self.paired = fmt == "sharegpt"
        self.raw_messages = fmt in conversation.RAW_MESSAGE_FORMATS  # formats content.check looks into
        self.text_path = text_path(fmt, self.options) if fmt else "$.text"
        self.first_kind: str | None = None
        self.first_row = True
        self.answers = quality.Answers()
        self.duplicates = ctx.duplicates.setdefault(report.role, quality.Duplicates())
        self.early: list[Finding] = []  # findings about the file met while checking a row, reported before it

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
                                      f"its first rows)", hint=f"keep one format per file; split the file or "
                                      f"convert these rows with `prep convert {other}`")], None
        elif self.raw_messages:
            found += content.check(row, self.fmt)
            errors = _has_error(found)
        record, locs = None, None
        seen = Seen(row)
        try:
            record = {"id": record_id(row, source), **self.read(seen, self.options)}
            if self.ctx.tool_calls:  # as every other verb reads the row: its calls checked as calls
                toolcalls.read_calls(record, self.ctx.tool_calls)
            if self.ctx.split_think:  # and its think blocks as reasoning
                read_think(record)
        except RowError as e:
            if not errors:
                found += [normalized(f) for f in e.findings]
        if record is not None:
            found += self._unknown_columns(seen)
            whole = quality.all_text(record)
            self.ctx.stats.add(record, whole)
            if not errors:
                locs = Lazy(self.fmt, row, record, self.options)
                found += self._semantics(record, locs, whole)
        return record, _unique(found) if len(found) > 1 else found, locs

    def _unknown_columns(self, row: Seen) -> list[Finding]:
        """A warning per top-level column the format's reader does not map: convert, tokenize and the other verbs
        drop it (counted), unless it is kept."""
        names = [k for k in unread(row) if k not in self.ctx.keep_columns and k != "chat_template_kwargs"]
        return [finding("unknown_column", f"the {self.fmt} reader does not read the column {show(k, 40)}: it is "
                        "dropped (and counted) when the rows are converted or tokenized",
                        f"$.{k}", hint=f"keep it with --keep-columns {k}, map it, or remove it") for k in names]

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
                self.early.append(finding("missing_column", f"the column {column!r} given in the options is "
                                              f"not in the file (first row's fields: {', '.join(list(row)[:8])})",
                                              f"$.{column}").at(source))

    def _semantics(self, record: Record, locs: Lazy, whole: str) -> list[Finding]:
        found = conversation.check(record, locs, self.paired, self.ctx.kind == "prompt") + \
            text.check(record, locs, self.text_path, whole)
        kind = kind_of(record)
        if self.ctx.kind and kind not in ACCEPTS[self.ctx.kind]:
            found.append(finding("wrong_kind", f"the row is {kind} data; --kind {self.ctx.kind} takes "
                                 f"{' or '.join(ACCEPTS[self.ctx.kind])} rows"))
        elif not self.ctx.kind:
            self.first_kind = self.first_kind or kind
            if kind != self.first_kind:
                found.append(finding("mixed_kinds", f"the row is {kind} data but the file started with "
                                     f"{self.first_kind} rows"))
        if not _has_error(found):
            found += quality.row_checks(record, locs, self.ctx.max_chars, whole)
        if "media" in record:
            found += media.check(record, self.fmt, self.ctx.media_limits, self.ctx.stats.media)
        return found

    # ---- the stage

    def stage(self, batches: Iterable[Batch[Any]]) -> Iterator[Batch[Record]]:
        """Raw row batches in, accepted records out; rows with an error ride along as rejects."""
        return map(self.settle, map(self.rows, batches))

    def rows(self, batch: Batch[Any]) -> Checked:
        """The checks of each row on its own (schema, reader, rules, tokens): what a Ray worker runs."""
        out: Batch[Record] = batch.carry()
        out.rejects = [self._reader_reject(r) for r in batch.rejects]
        early = [f for r in out.rejects for f in r.findings]
        passed: list[tuple[Any, Record, Source, Lazy, list[Finding]]] = []
        # Rows whose objects repeat a key: the reader read the last value and kept the row as written.
        repeated = {r.source: r for r in batch.altered if r.reason == "duplicate_key"} if batch.altered else {}
        for row, source in zip(batch.items, batch.sources, strict=True):
            record, found, locs = self.check(row, source)
            if self.early:
                early += self.early
                self.early = []
            placed = [f.at(source) for f in found] if found else []
            for f in placed:
                if f.code == "unknown_column":  # the file's count per column, beside the findings
                    out.dropped[f.path[2:]] += 1
            said = repeated.get(source) if repeated else None
            if said:
                placed += [dataclasses.replace(f, severity=ERROR) if self.ctx.strict_fields else f
                           for f in said.findings]
            if record is None or locs is None or _has_error(placed):
                out.rejects.append(Reject(source, placed, said.row if said else row))
                if said:  # rejected: no longer a row that went on altered
                    out.altered = [a for a in out.altered if a.source != source]
                early += placed
            else:
                passed.append((row, record, source, locs, placed))
        tokens = self.ctx.tokens
        counted = tokens.count([p[1] for p in passed], [p[2] for p in passed]) if tokens and passed else None
        checked = Checked(out, early)
        for k, (row, record, source, locs, placed) in enumerate(passed):
            if counted and counted[k].errors:
                placed += [dataclasses.replace(f, path=raw_path(f.path, locs)).at(source) for f in counted[k].errors]
            elif counted:
                placed += [f.at(source) for f in tokens.check(record, counted[k], locs)]  # type: ignore[union-attr]
            checked.passed.append((row, record, source, placed, bool(counted and counted[k].errors)))
        return checked

    def settle(self, checked: Checked) -> Batch[Record]:
        """The checks across rows (duplicates, near duplicates of validation rows, answers) and the findings, in
        row order: what the driver runs under Ray, on the batches in input order."""
        sink = self.ctx.findings
        for f in checked.early:
            sink.add(f)
        out = checked.out
        for row, record, source, placed, rejected in checked.passed:
            if rejected:
                out.rejects.append(Reject(source, placed, row))
            else:
                placed += self._accepted(record, source)
                out.add(record, source)
            for f in placed:
                sink.add(f)
        return out

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
