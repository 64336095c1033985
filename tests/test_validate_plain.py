"""validate's fast path (checks.plain over files.read.jsonl_blocks) gives the row path's report, finding for finding,
on the LLaMA-Factory demo data as OpenAI JSONL, clean and with defects its proof must not miss."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import fixture
from prep.checks import plain
from prep.files.pieces import BATCH_ROWS
from prep.files.read import jsonl_blocks, read_rows
from prep.formats.inputs import Inputs
from prep.stages import validate as stage
from prep.stages.convert import convert


def test_blocks_are_the_row_readers_batches(tmp_path: Path) -> None:
    """Each plain block holds the lines the row reader reads as one batch from its piece; from a blank line, a line
    not starting with `{` or one over the limit on, the rest is one block without lines, read by the row reader. A
    BOM opening the file is skipped: the blocks' rows, and the byte offsets in their findings, are the reader's."""
    rows = [json.dumps({"n": i}) for i in range(11)]
    broken = "\n".join(rows[:6] + ['{"n": "\udcff"}'] + rows[6:]) + "\n"  # a byte that is not UTF-8 in line 7
    cases = {"clean.jsonl": "\n".join(rows) + "\n", "no_newline.jsonl": "\r\n".join(rows),
             "blank.jsonl": "\n".join(rows[:5] + [" "] + rows[5:]) + "\n",
             "long.jsonl": "\n".join(rows[:9] + [json.dumps({"n": "x" * 60})] + rows[9:]) + "\n",
             "bom.jsonl": "\ufeff" + "\n".join(rows) + "\n", "bom_broken.jsonl": "\ufeff" + broken}
    expect = {"clean.jsonl": [4, 4, 3, None], "no_newline.jsonl": [4, 4, 3, None], "blank.jsonl": [4, -1],
              "long.jsonl": [4, 4, -1], "bom.jsonl": [4, 4, 3, None], "bom_broken.jsonl": [4, 4, 4]}
    for name, text in cases.items():
        path = tmp_path / name
        path.write_bytes(text.encode("utf-8", "surrogateescape"))
        whole = [(s.line, s.row, v) for b in read_rows(str(path), "jsonl", batch_rows=4, max_row_bytes=50)
                 for s, v in zip(b.sources, b.items, strict=True)] + [
                 (r.source.line, r.source.row, r.findings[0].message) for b in read_rows(str(path), "jsonl",
                                                                                     batch_rows=4, max_row_bytes=50)
                 for r in b.rejects]
        got, sizes = [], []
        for block in jsonl_blocks(str(path), rows=4, limit=50, chunk=16):
            sizes.append(len(block.lines) if block.lines is not None else -1)
            again = list(read_rows(str(path), "jsonl", batch_rows=4, max_row_bytes=50, piece=block.piece))
            if block.lines is not None:
                assert len(again) == 1 and again[0].items == [json.loads(x) for x in block.lines if x.isascii()]
                assert sorted([s.line for s in again[0].sources] + [r.source.line for r in again[0].rejects]) == [
                    block.piece.line + k + 1 for k in range(len(block.lines))]
            got += [(s.line, s.row, v) for b in again for s, v in zip(b.sources, b.items, strict=True)]
            got += [(r.source.line, r.source.row, r.findings[0].message) for b in again for r in b.rejects]
        assert sorted(got, key=str) == sorted(whole, key=str), name
        assert sizes == [s for s in expect[name] if s is not None], name


def _chats(tmp: Path, name: str, ids: bool = False) -> list[str]:
    """A fixture file's rows as OpenAI JSONL lines (prep convert)."""
    out = tmp / f"{name}.{ids}.openai.jsonl"
    convert(Inputs([str(fixture("data", "llamafactory", name))]), "openai", str(out), ids=ids)
    return out.read_text(encoding="utf-8").splitlines()


_DEFECTS: dict[str, Any] = {  # a row's change, the finding it must give
    "mostly_uppercase": lambda m: m[-1].update(content="THIS ANSWER IS WRITTEN IN CAPITAL LETTERS ONLY"),
    "control_char": lambda m: m[0].update(content=m[0]["content"] + "\u0001"),
    "zero_width_run": lambda m: m[-1].update(content="a\u200b\u200b\u200bb"),
    "role_order": lambda m: m.append({"role": "assistant", "content": "again"}),
    "empty_content": lambda m: m[0].update(content=" "),
    "too_long_text": lambda m: m.insert(0, {"role": "system", "content": "x" * 40_000}),
    "bad_role": lambda m: m[0].update(role="robot"),
    "missing_field": lambda m: m[0].update(role="tool"),
    "misplaced_system": lambda m: m.insert(1, {"role": "system", "content": "late"}),
    "ends_without_answer": lambda m: m.append({"role": "user", "content": "and?"}),
    "no_assistant": lambda m: m.pop(),
    "duplicate_key": '"role": "user", "role": "user"',
    "unknown_column": ', "source": 7}',
    "duplicate_key_id": ', "id": "a", "id": "b"}',
    "legacy_function_call": lambda m: m[-1].update(function_call={"name": "f", "arguments": "{}"}),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("plain")
    alpaca = _chats(tmp, "alpaca_en_demo.json")
    rows = (alpaca * 5)[:4 * BATCH_ROWS + 100]  # replicated: duplicates across proved and row-path blocks
    out = {}

    def write(name: str, lines: list[str]) -> None:
        out[name] = tmp / f"{name}.jsonl"
        out[name].write_text("\n".join(lines) + "\n", encoding="utf-8")

    at = BATCH_ROWS + 10  # the second block holds the defect: the first is proved, the second must not be
    for code, change in _DEFECTS.items():
        lines = rows[:BATCH_ROWS + 50]
        if isinstance(change, str) and change.endswith("}"):
            lines[at] = lines[at][:-1] + change
        elif isinstance(change, str):
            lines[at] = lines[at].replace('"role": "user"', change, 1)
        else:
            row = json.loads(lines[at])
            change(row["messages"])
            lines[at] = json.dumps(row, ensure_ascii=False)
        write(code, lines)
    mixed = list(rows)
    mixed[BATCH_ROWS + 3] = mixed[BATCH_ROWS + 3].replace('"content": "', '"content": "\\u0041\\u003a', 1)
    mixed[2 * BATCH_ROWS + 7] = mixed[2 * BATCH_ROWS + 7].replace('"messages"', '"MESSAGES"')  # no messages
    mixed[3 * BATCH_ROWS + 5] = ""  # a blank line: from this block on, the row path
    write("clean", rows[:2 * BATCH_ROWS + 100])
    write("bom", ["\ufeff" + rows[0], *rows[1:2 * BATCH_ROWS + 100]])  # a UTF-8 BOM opening the file
    write("mixed", mixed)
    write("escaped", [json.dumps(json.loads(x)) for x in alpaca])  # ensure_ascii: \u escapes throughout
    write("ids", _chats(tmp, "alpaca_en_demo.json", ids=True) * 2)  # "id": "alpaca_en_demo.json:1", ...
    for name in ("glaive_toolcall_en_demo.json", "kto_en_demo.json", "dpo_en_demo.json"):
        write(name, _chats(tmp, name))
    return out


def _report(paths: list[Path], **options: Any) -> dict[str, Any]:
    report = stage.validate(Inputs([str(p) for p in paths]), **options)
    out = report.to_dict()
    out["examples"] = {code: [f.to_dict() for f in shown] for code, shown in report.findings.examples.items()}
    return out


@pytest.mark.parametrize("names", [["clean"], ["bom"], ["mixed"], ["escaped"], ["ids"], ["glaive_toolcall_en_demo.json"],
                                   ["kto_en_demo.json", "dpo_en_demo.json"], ["ids", "escaped"],
                                   *[[c] for c in _DEFECTS]])
def test_fast_path_reports_as_the_row_path(files: dict[str, Path], names: list[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    paths = [files[n] for n in names]
    proved = []
    prove = plain.prove
    monkeypatch.setattr(plain, "prove", lambda *a: proved.append(prove(*a)) or proved[-1])
    fast = _report(paths, max_findings=50)
    monkeypatch.setattr(stage, "_plain_run", lambda *a: False)
    slow = _report(paths, max_findings=50)
    assert fast == slow
    taken = sum(p is not None for p in proved)
    clean = [n for n in names if n in ("clean", "bom", "escaped", "ids")]
    if clean:  # every block of the plain chat files proved, none of the others
        assert taken == sum(-(-len(files[n].read_bytes().splitlines()) // BATCH_ROWS) for n in clean)
        assert ("utf8_bom" in fast["summary"]["findings_by_code"]) == (names == ["bom"])
    elif names == ["mixed"]:  # blocks 1 and 2 (with an escaped colon) proved, 3 (a bad row) and 4 on (a blank line) not
        assert [p is not None for p in proved] == [True, True, False]
        assert {"duplicate_row", "missing_field", "blank_line"} <= set(fast["summary"]["findings_by_code"])
    elif names[0] in _DEFECTS:
        assert [p is not None for p in proved] == [True, False]
        assert names[0].removesuffix("_id") in fast["summary"]["findings_by_code"]


def test_cli_loads_pyarrow_only_when_used(files: dict[str, Path], tmp_path: Path) -> None:
    """Start-up (design §11): validating JSONL with -q loads no pyarrow and no rich; a verb that loads pyarrow later
    (convert to Parquet) still keeps it from importing pandas, by the hook on its import."""
    # main(), not the command's run(): a data verb run by that ends its process when it is done
    script = ("import sys\nfrom prep.cli import main\n"
              "def run(*args):\n"
              "    try:\n        main(list(args))\n"
              "    except SystemExit as e:\n        assert not e.code, e.code\n"
              "    print(sorted(m for m in ('pandas', 'pyarrow', 'rich') if m in sys.modules))\n"
              f"run('validate', {str(files['clean'])!r}, '-q')\n"
              f"run('convert', {str(files['clean'])!r}, '--to', 'sharegpt', '-o', {str(tmp_path / 'x.parquet')!r}, '-q')\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-2:] == ["[]", "['pyarrow']"], done.stdout


@pytest.mark.parametrize("options", [{"kind": "sft"}, {"kind": "dpo"}, {"max_chars": 1000}, {"min_rows": 10**6}])
def test_fast_path_reports_as_the_row_path_with_options(files: dict[str, Path], options: dict[str, Any],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    fast = _report([files["ids"]], **options)
    monkeypatch.setattr(stage, "_plain_run", lambda *a: False)
    assert fast == _report([files["ids"]], **options)


_ROLES = ["system", "developer", "user", "assistant", "tool", "robot"]
_TEXTS = st.one_of(st.sampled_from(["", " ", "A: b", "SHOUTING IN CAPITAL LETTERS NOW", "x\x00", "\x01", "\x7f",
                                    "a\u200b\u200b\u200bb", "\ud800", "é: ü", "\\u0041"]), st.text(max_size=30))
_BENDS = ["role", "content", "weight", "name", "id", "drop", "repeat", "blank", "cut", "colon", "none"]


@st.composite
def _plain_file(draw: st.DrawFn) -> str:
    """A few plain chats (system?, user/assistant turns), one of them bent at most: another role, odd text, a field
    beside role and content, an id, a message left out, a repeated key, an escaped colon, a blank or broken line."""
    rows = []
    for _ in range(draw(st.integers(1, 6))):
        turns = draw(st.integers(1, 3))
        rows.append({"messages": ([{"role": "system", "content": "be brief"}] if draw(st.booleans()) else []) + [
            {"role": role, "content": f"question {k}" if role == "user" else f"answer {k}"}
            for k in range(turns) for role in ("user", "assistant")]})
    at = draw(st.integers(0, len(rows) - 1))
    row, bend = rows[at], draw(st.sampled_from(_BENDS))
    m = draw(st.sampled_from(row["messages"]))
    if bend == "role":
        m["role"] = draw(st.sampled_from(_ROLES))
    elif bend == "content":
        m["content"] = draw(_TEXTS)
    elif bend in ("weight", "name"):
        m[bend] = 0 if bend == "weight" else "bob"
    elif bend == "id":
        row["id"] = draw(st.one_of(st.text(max_size=8), st.integers(), st.none(), st.booleans()))
    elif bend == "drop":
        row["messages"].remove(m)
    lines = [json.dumps(r, ensure_ascii=draw(st.booleans())) for r in rows]
    if bend == "repeat":
        lines[at] = lines[at].replace('"role": ', '"role": "user", "role": ', 1)
    elif bend in ("blank", "cut"):
        lines[at] = lines[at] + "\n" if bend == "blank" else lines[at][:-1]
    elif bend == "colon":
        lines[at] = lines[at].replace('"content": "', '"content": "\\u003a', 1)
    return "\n".join(lines) + "\n"


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=_plain_file())
def test_fast_path_reports_as_the_row_path_on_bent_chats(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "rows.jsonl")
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        fast = _report([path])
        with mock.patch.object(stage, "_plain_run", lambda *a: False):
            assert fast == _report([path])
