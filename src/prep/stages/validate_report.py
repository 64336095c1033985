"""How a validation `Report` is shown: a rich table grouped by code (count, first lines, message,
hint), the cookbook-style statistics, and the JSON report written by `--report`."""

from __future__ import annotations

import json
from typing import IO, TYPE_CHECKING, Any

from prep.core.codes import ERROR
from prep.core.findings import Finding
from prep.files.atomic import write_text_atomic
from prep.stages.validate import Report

if TYPE_CHECKING:
    from rich.table import Table

SHOW_LINES = 5


def _where(f: Finding, single_file: bool) -> str:
    if not f.line:
        return "file" if single_file else f"{f.file} (file)"
    return f"{f.line}" if single_file else f"{f.file}:{f.line}"


def table(report: Report) -> Table:
    """One row per code: errors first, then by count."""
    from rich.table import Table  # noqa: PLC0415 - start-up time: rich only to draw (not with -q)
    from rich.text import Text  # noqa: PLC0415 - start-up time: rich only to draw (not with -q)

    single = len(report.files) == 1
    t = Table(title=f"findings in {report.files[0].path}" if single else "findings", title_justify="left",
              show_lines=False, expand=False)
    for name, style in (("code", "bold"), ("severity", ""), ("count", ""), ("lines" if single else "where", ""),
                        ("first finding / what to do", "")):
        t.add_column(name, style=style, justify="right" if name == "count" else "left", overflow="fold")
    counts = report.findings.counts
    order = sorted(counts, key=lambda c: (report.findings.examples[c][0].severity != ERROR, -counts[c], c))
    for code in order:
        shown = report.findings.examples[code]
        severity = shown[0].severity  # the code's, unless the run made it stricter (--strict-fields: duplicate_key)
        lines = ", ".join(_where(f, single) for f in shown[:SHOW_LINES])
        if counts[code] > len(shown[:SHOW_LINES]):
            lines += ", …"
        first = shown[0]
        message = f"{first.path}: {first.message}" if first.path != "$" else first.message
        text = Text(message)
        text.append(f"\n→ {first.hint}" if first.hint else "", style="dim")
        t.add_row(code, f"[red]{severity}[/]" if severity == ERROR else f"[yellow]{severity}[/]",
                  f"{counts[code]:,}", lines, text)
    return t


def _num(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.4g}"


def _dist(d: dict[str, float] | None) -> str:
    if not d:
        return "-"
    return ", ".join(f"{k} {_num(d[k])}" for k in ("min", "max", "mean", "median", "p10", "p90"))


def summary_lines(report: Report) -> list[str]:
    f = report.findings
    files = len(report.files)
    lines = [f"read {report.rows_read:,} rows from {files} file{'s' if files != 1 else ''}: "
             f"{report.rows_accepted:,} accepted, {report.rows_rejected:,} rejected; "
             f"{f.errors:,} error{'s' if f.errors != 1 else ''}, {f.warnings:,} warning{'s' if f.warnings != 1 else ''}"]
    if f.total > len(f.stored):
        lines.append(f"(the report holds the first {len(f.stored):,} of {f.total:,} findings; raise --max-findings "
                     "for more)")
    for fr in report.files:
        if files > 1 or fr.role != "train":
            lines.append(f"  {fr.path}: {fr.format or '?'} ({fr.role}), {fr.tally.read:,} rows, "
                         f"{fr.tally.rejected_total:,} rejected")
    for fr in report.files:
        if fr.tally.dropped:
            lines.append(f"columns no reader maps (dropped unless --keep-columns){f' in {fr.path}' if files > 1 else ''}"
                         ": " + ", ".join(f"{name} {n:,} rows" for name, n in fr.tally.dropped.most_common()))
    stats = report.stats.to_dict()
    kinds = ", ".join(f"{k} {n:,}" for k, n in stats["rows_by_kind"].items())
    if kinds:
        lines.append(f"rows by kind: {kinds}")
    if "messages_per_row" in stats:
        lines.append(f"rows missing a system message: {stats['rows_missing_system']:,}; missing a user message: "
                     f"{stats['rows_missing_user']:,}")
        lines.append(f"messages per row: {_dist(stats['messages_per_row'])}")
    lines.append(f"characters per row: {_dist(stats['characters_per_row'])}")
    if media := stats.get("media_checked"):
        checked = ", ".join(f"{c['items']:,} {kind}{'s' if c['items'] != 1 else ''}" for kind, c in media.items())
        bad = sum(c["with_errors"] for c in media.values())
        lines.append(f"media opened and decoded: {checked}; {bad:,} with errors")
    for key, label in (("tokens_per_row", "tokens per row"), ("trained_tokens_per_row", "trained tokens per row")):
        if key in stats:
            lines.append(f"{label}: {_dist(stats[key])}")
    for key, label in (("rows_over_max_len", "rows over --max-len"), ("billing_tokens", "tokens (each row capped "
                                                                                          "at --max-len)")):
        if key in stats:
            lines.append(f"{label}: {stats[key]:,}")
    return lines


def show(report: Report, out: IO[str], quiet: bool = False) -> None:
    """The table and statistics; with `quiet` the summary line alone, written as it is (no rich to load)."""
    if quiet:
        out.write(summary_lines(report)[0] + "\n")
        return
    from rich.console import Console  # noqa: PLC0415 - start-up time: rich only to draw (not with -q)

    console = Console(file=out, soft_wrap=False, highlight=False)
    if report.findings.total:
        console.print(table(report))
    for line in summary_lines(report):
        console.print(line, markup=False)


def write_json(report: Report, path: str) -> None:
    """The JSON report, written to a temporary name and renamed, so it is whole or absent."""
    write_text_atomic(path, dumps(report))


def dumps(report: Report) -> str:
    """The report as JSON text."""
    return encode(report.to_dict())


def encode(data: dict[str, Any]) -> str:
    """A report's dict as the JSON text `--report` writes (one space of indent; a lone surrogate escaped)."""
    text = json.dumps(data, ensure_ascii=False, indent=1) + "\n"
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:  # a lone surrogate quoted in a message: escape it
        return json.dumps(data, ensure_ascii=True, indent=1) + "\n"
