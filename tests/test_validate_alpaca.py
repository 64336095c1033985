"""`prep validate`, Alpaca rules (as LLaMA-Factory reads the format): required instruction and
output, optional strings, history pairs, empty prompts and answers. One planted defect per row."""

from __future__ import annotations

from pathlib import Path

from validate_util import assert_exactly, run, write_rows

ROWS = [
    {"instruction": "Give a synonym for happy.", "input": "", "output": "Glad."},                        # 1
    {"instruction": "Continue the list.", "input": "red, green", "output": "blue", "system": "Terse.",
     "history": [["Name a primary colour.", "Red."]]},                                                   # 2
    {"instruction": "Translate to French.", "input": "cat"},                                            # 3
    {"instruction": 5, "output": "Five."},                                                              # 4
    {"instruction": "Add the numbers.", "input": "2 3", "output": "5", "history": [["only a question"]]},  # 5
    {"instruction": "Say something.", "output": ""},                                                    # 6
    {"instruction": "", "input": "", "output": "There was no question."},                               # 7
    {"instruction": "Be polite.", "output": "Please.", "system": ["polite"]},                          # 8
    {"instruction": "Next?", "output": "Three.", "history": [["One?", 1]]},                             # 9
    {"instruction": "Opposite of up?", "input": None, "output": "Down.", "history": None},              # 10
]

EXPECTED = {
    (3, "missing_field", "$.output"),
    (4, "wrong_type", "$.instruction"),
    (5, "bad_history", "$.history[0]"),
    (6, "empty_content", "$.output"),
    (7, "empty_content", "$.instruction"),
    (8, "wrong_type", "$.system"),
    (9, "wrong_type", "$.history[0][1]"),
}


def test_each_planted_alpaca_defect_once(tmp_path: Path) -> None:
    path = tmp_path / "alpaca.json"
    write_rows(tmp_path / "rows.jsonl", ROWS)
    # A JSON array file, one element per line, as LLaMA-Factory's data files are.
    path.write_text("[\n" + ",\n".join((tmp_path / "rows.jsonl").read_text().splitlines()) + "\n]\n")
    report = run(path)
    assert_exactly(report, {(line + 1, code, where) for line, code, where in EXPECTED})
    assert report.files[0].format == "alpaca"
    assert report.rows_rejected == len(EXPECTED)
