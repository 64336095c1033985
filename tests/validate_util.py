"""Helpers for the `prep validate` tests: write a file of rows with planted defects, validate it,
and compare every finding (file, line, code, path) with the defects planted."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prep.formats.inputs import Inputs
from prep.stages.validate import Report, validate


def write_rows(path: Path, rows: list[Any]) -> Path:
    """One JSON value per line; a `str` row is written as it is (raw text, e.g. broken JSON)."""
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


INPUT_KEYS = {"format": "format", "settings": "settings", "container": "container", "txt_split": "txt_split"}


def inputs(paths: list[str], options: dict[str, Any]) -> Inputs:
    """The Inputs of `paths`, with the input options (format, settings, container, txt_split) taken out of `options`."""
    return Inputs(paths, **{k: options.pop(k) for k in INPUT_KEYS if k in options})


def run(path: Path | list[Path], **options: Any) -> Report:
    paths = [str(p) for p in (path if isinstance(path, list) else [path])]
    report = validate(inputs(paths, options), max_findings=None, **options)
    assert report.balanced, "rows read must equal rows accepted + rows rejected"
    return report


def found(report: Report, with_file: bool = False) -> set[tuple[Any, ...]]:
    """Every finding as (line, code, path), or (file name, line, code, path)."""
    out = set()
    for f in report.findings.stored:
        key = (f.line, f.code, f.path)
        out.add((Path(f.file).name, *key) if with_file else key)
    assert len(report.findings.stored) == report.findings.total
    return out


def assert_exactly(report: Report, expected: set[tuple[Any, ...]], with_file: bool = False) -> None:
    """Each planted defect reported once, at its line and path, with its code; nothing else."""
    got = found(report, with_file)
    assert report.findings.total == len(got), f"some defect was reported twice: {sorted(report.findings.stored)}"
    missing, extra = expected - got, got - expected
    assert not missing and not extra, f"missing: {sorted(missing)}\nunexpected: {sorted(extra)}"


def chat(*turns: str, system: str | None = None, **extra: Any) -> dict[str, Any]:
    """{"messages": [...]} from alternating user/assistant texts."""
    messages = [{"role": "system", "content": system}] if system else []
    messages += [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(turns)]
    return {"messages": messages, **extra}
