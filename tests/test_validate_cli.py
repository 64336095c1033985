"""`prep validate` as a user runs it: exit codes, the table, `--report` JSON, `--rejects`, stdin,
`--strict`, `--min-rows`, `--max-findings`."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import SAMPLES, run_prep
from validate_util import chat, write_rows

GOOD = [chat("Hello?", "Hi."), chat("Day?", "Monday."), chat("Colour?", "Teal.")]


def test_exit_codes(tmp_path: Path) -> None:
    good = write_rows(tmp_path / "good.jsonl", GOOD)
    assert run_prep("validate", str(good)).returncode == 0
    bad = write_rows(tmp_path / "bad.jsonl", [*GOOD, "not json"])
    assert run_prep("validate", str(bad)).returncode == 1
    missing = run_prep("validate", str(tmp_path / "nope.jsonl"))
    assert missing.returncode == 2 and b"no such file" in missing.stderr
    assert run_prep("validate", str(good), "--kind", "nonsense").returncode == 2
    warned = write_rows(tmp_path / "warned.jsonl", [*GOOD, chat("Day?", "Monday.")])  # a duplicate: warning
    assert run_prep("validate", str(warned)).returncode == 0
    assert run_prep("validate", "--strict", str(warned)).returncode == 1
    assert run_prep("validate", "--min-rows", "10", str(good)).returncode == 1


def test_table_groups_by_code(tmp_path: Path) -> None:
    rows = [*GOOD, "x", "y", chat("Only a question?")]
    out = run_prep("validate", str(write_rows(tmp_path / "t.jsonl", rows))).stdout.decode()
    assert "bad_json" in out and "no_assistant" in out
    assert "4, 5" in out  # the lines of the two bad_json rows, in one row of the table
    assert "read 6 rows from 1 file: 3 accepted, 3 rejected; 3 errors, 0 warnings" in out


def test_report_json_shape(tmp_path: Path) -> None:
    rows = [*GOOD, "oops", chat("Only a question?"), chat("Day?", "Monday.")]
    path = write_rows(tmp_path / "r.jsonl", rows)
    report_file = tmp_path / "report.json"
    result = run_prep("validate", str(path), "--report", str(report_file))
    assert result.returncode == 1
    report = json.loads(report_file.read_text())
    assert set(report) == {"version", "ok", "exit_code", "strict", "summary", "files", "stats", "findings"}
    s = report["summary"]
    assert (s["rows_read"], s["rows_accepted"], s["rows_rejected"]) == (6, 4, 2)
    assert s["rows_read"] == s["rows_accepted"] + s["rows_rejected"]
    assert (s["errors"], s["warnings"]) == (2, 1)
    assert s["findings_by_code"] == {"bad_json": {"severity": "error", "count": 1},
                                     "duplicate_row": {"severity": "warning", "count": 1},
                                     "no_assistant": {"severity": "error", "count": 1}}
    assert report["files"][0] | {"path": None} == {
        "path": None, "role": "train", "format": "openai", "container": "jsonl", "bytes": path.stat().st_size,
        "rows_read": 6, "rows_accepted": 4, "rows_rejected": 2,
        "rejected_by_reason": {"bad_json": 1, "no_assistant": 1}}
    assert [(f["line"], f["code"]) for f in report["findings"]] == [(4, "bad_json"), (5, "no_assistant"),
                                                                    (6, "duplicate_row")]
    assert set(report["findings"][0]) == {"file", "line", "path", "code", "severity", "message", "hint"}
    assert report["stats"]["messages_per_row"]["max"] == 2


def test_report_to_stdout_and_table_to_stderr(tmp_path: Path) -> None:
    path = write_rows(tmp_path / "r.jsonl", [*GOOD, "oops"])
    result = run_prep("validate", str(path), "--report", "-")
    assert json.loads(result.stdout)["summary"]["errors"] == 1
    assert b"bad_json" in result.stderr


def test_max_findings_caps_what_is_kept_not_the_counts(tmp_path: Path) -> None:
    path = write_rows(tmp_path / "many.jsonl", [*GOOD, *(["bad"] * 30)])
    report_file = tmp_path / "report.json"
    run_prep("validate", str(path), "--max-findings", "5", "--report", str(report_file))
    report = json.loads(report_file.read_text())
    assert len(report["findings"]) == 5
    assert report["summary"]["findings_by_code"]["bad_json"]["count"] == 30
    assert report["summary"]["findings_total"] == 30 and report["summary"]["rows_rejected"] == 30


def test_rejects_and_stdin(tmp_path: Path) -> None:
    data = "".join(json.dumps(r) + "\n" for r in GOOD) + "broken\n"
    rejects = tmp_path / "rejects.jsonl"
    result = run_prep("validate", "-", "--rejects", str(rejects), "--report", str(tmp_path / "r.json"),
                      input=data.encode())
    assert result.returncode == 1
    kept = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert [(r["file"], r["line"], r["row"]) for r in kept] == [("<stdin>", 4, "broken")]
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["findings"][0]["file"] == "<stdin>" and report["files"][0]["path"] == "<stdin>"


def test_every_sample_file_is_clean() -> None:
    files = [str(p) for p in sorted(SAMPLES.iterdir())
             if p.suffix in (".json", ".jsonl", ".csv", ".txt") and p.name != "dataset_info.json"]
    assert len(files) >= 10
    result = run_prep("validate", *files, "--report", "-")
    report = json.loads(result.stdout)
    assert report["summary"]["errors"] == 0, result.stderr.decode()
    assert result.returncode == 0
