"""Broken rows of every kind: the run goes on, exits 1 without a traceback, its summary adds up
(read = wrote + rejected) and the rejects file holds each bad row with file, line and reason."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import run_prep
from prep.core.findings import RowError
from prep.formats import FORMATS, WRITABLE, make_options, module

GOOD_OPENAI = b'{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}'

# (file name, FROM, content, {line: reason code}) - every other line of each file is a good row.
CASES: list[tuple[str, str, bytes, dict[int, str]]] = [
    ("openai.jsonl", "openai", b"\n".join([
        GOOD_OPENAI,
        b'{"messages": "not a list"}',                                                     # 2 wrong type
        b'{"messages": [{"role": "user", "content": 42}]}',                                 # 3 wrong type
        b'{"messages": [{"content": "no role"}]}',                                          # 4 missing key
        b'{"messages": [{"role": "wizard", "content": "x"}]}',                              # 5 unknown role
        b'{"messages": []}',                                                                # 6 empty
        b'{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": null, "tool_calls": '
        b'[{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{not json"}}]}]}',  # 7
        b'{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y", "weight": 2}]}',
        b'{"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function", "function": {}}]}',
        b'{"messages": [{"role": "user", "content": [{"type": "file", "file": {"file_id": "f"}}]}]}',
        b'{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}], "label": "maybe"}',
        b"{not json at all",                                                                # 12 bad JSON line
        b"[1, 2]",                                                                          # 13 not an object
        b'"a string"',                                                                      # 14 not an object
        b'{"messages": [{"role": "user", "content": "caf\xe9"}]}',                          # 15 invalid UTF-8
        b'{"messages": [{"role": "user", "content": "x"}], "label": NaN}',                  # 16 NaN
        b'{"messages": [{"role": "user", "content": "x", "tool_calls": [{"function": {"name": "f"}}]}]}',
        b'{"messages": [{"role": "user", "content": "x\\ud800"}, {"role": "assistant", "content": "y"}]}',  # 18
        b'{"messages": [{"role": "user", "content": "\\ud83d\\ude00"}, {"role": "assistant", "content": "y"}]}',
        GOOD_OPENAI,
    ]), {2: "wrong_type", 3: "wrong_type", 4: "missing_field", 5: "bad_role", 6: "empty_value",
         7: "bad_tool_arguments", 8: "bad_weight", 9: "bad_tools", 10: "unsupported_content", 11: "wrong_type",
         12: "bad_json", 13: "not_an_object", 14: "not_an_object", 15: "invalid_utf8", 16: "bad_json",
         17: "bad_tool_call", 18: "lone_surrogate"}),
    ("alpaca.json", "alpaca", b"""[
  {"instruction": "q", "output": "a"},
  {"instruction": "q"},
  {"instruction": ["q"], "output": "a"},
  {"instruction": "q", "output": "a", "history": [["only the question"]]},
  {"instruction": "q", "output": "a", "kto_tag": "maybe"},
  {"instruction": "q", "chosen": "a"},
  "not an object",
  {"instruction": "q", "output": 3},
  {"instruction": "q", "output": "a", "history": "[[\\"q\\", \\"a\\"]"},
  {"instruction": "q", "output": "a", "history": [["q", "\\udfff"]]},
  {"instruction": "\\ud83d\\ude00", "output": "a"},
  {"instruction": "q", "output": "a"}
]""", {3: "missing_field", 4: "wrong_type", 5: "wrong_type", 6: "wrong_type", 7: "missing_field",
       8: "not_an_object", 9: "wrong_type", 10: "bad_json", 11: "lone_surrogate"}),
    ("sharegpt.jsonl", "sharegpt", b"\n".join([
        b'{"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}',
        b'{"conversations": [{"from": "human", "value": "q"}, {"from": "function_call", "value": "{broken"}]}',
        b'{"conversations": [{"from": "human", "value": "q"}, {"from": "function_call", "value": '
        b'"{\\"name\\": \\"f\\", \\"arguments\\": \\"[1]\\"}"}]}',
        b'{"conversations": [{"from": "alien", "value": "q"}]}',
        b'{"conversations": [{"from": "human"}]}',
        b'{"conversations": [{"from": "human", "value": "q"}], "chosen": {"from": "human", "value": "a"}, '
        b'"rejected": {"from": "gpt", "value": "b"}}',
        b'{"conversations": [{"from": "human", "value": "q"}], "tools": "{not a list"}',
        b'{"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}], "label": "perhaps"}',
        b'{"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}',
        b'{"conversations": [{"from": {}, "value": "q"}, {"from": "gpt", "value": "a"}]}',
    ]), {2: "bad_tool_call", 3: "bad_tool_arguments", 4: "bad_role", 5: "missing_field", 6: "bad_preference",
         7: "bad_json", 8: "wrong_type", 10: "bad_role"}),
    ("autotrain.csv", "autotrain", (
        b'text,rejected_text,prompt\n'
        b'"human: hi \\n bot: hello",,\n'
        b'one,two,three,four\n'
        b'"broken "quote,x,y\n'
        b'"human: caf\xe9 \\n bot: x",,\n'
        b'"preamble\nhuman: q\nbot: a",,\n'
        b'good,,"q"\n'
        b'short\n'
        b'"human: a\nbot: b",,\n'
    ), {3: "csv_field_count", 4: "bad_csv", 5: "invalid_utf8", 6: "bad_dialogue", 10: "csv_field_count"}),
    ("coqa.json", "coqa", json.dumps({"version": "1.0", "data": [
        {"id": "ok1", "story": "A b.", "questions": [{"input_text": "q", "turn_id": 1}],
         "answers": [{"input_text": "a", "turn_id": 1}]},
        {"id": "bad1", "story": "A b.", "questions": [{"input_text": "q", "turn_id": 1}], "answers": []},
        {"id": "bad2", "story": "", "questions": ["q"], "answers": {"input_text": ["a"]}},
        {"id": "bad3", "story": "A b.", "questions": [{"input_text": "q", "turn_id": 1},
                                                     {"input_text": "r", "turn_id": 1}],
         "answers": [{"input_text": "a", "turn_id": 1}, {"input_text": "b", "turn_id": 2}]},
        {"id": "bad4", "story": "A b.", "questions": [{"turn_id": 1}], "answers": [{"input_text": "a"}]},
        {"id": "ok2", "story": "A b.", "questions": ["q"], "answers": {"input_text": ["a"]}},
    ]}, indent=None).replace('}, {"id"', '},\n{"id"').encode(),
        {2: "count_mismatch", 3: "empty_value", 4: "bad_turns", 5: "missing_field"}),
    ("trl.jsonl", "trl", b"\n".join([
        b'{"prompt": "p", "completion": "c"}',
        b'{"chosen": "a", "rejected": "b"}',
        b'{"prompt": "p", "completion": "c", "label": 1}',
        b'{"prompt": [{"role": "user"}], "completion": "c"}',
        b'{"unrelated": true}',
        b'{"text": ["not", "a", "string"]}',
        b'{"prompt": "p", "chosen": "a", "rejected": "b"}',
    ]), {2: "missing_field", 3: "wrong_type", 4: "missing_field", 5: "missing_field", 6: "wrong_type"}),
    ("text.txt", "text", b"Fine paragraph.\n\nBroken caf\xe9\nparagraph.\n\nAnother fine one.\n",
     {3: "invalid_utf8"}),
]

SUMMARY = re.compile(rb"read (\d+), wrote (\d+), rejected (\d+)")


def run(path: Path, fmt: str, to: str = "trl", *extra: str) -> tuple[Any, tuple[int, int, int], list[dict[str, Any]]]:
    rejects = path.with_suffix(".rejects.jsonl")
    done = run_prep("convert", fmt, str(path), "--to", to, "-o", str(path.with_suffix(".out.jsonl")),
                    "--rejects", str(rejects), "--txt-split", "paragraph", *extra)
    assert b"Traceback" not in done.stderr and b"internal error" not in done.stderr, done.stderr.decode()
    match = SUMMARY.search(done.stderr)
    assert match, done.stderr.decode()
    counts = tuple(int(x) for x in match.groups())
    bad = [json.loads(line) for line in rejects.read_text(encoding="utf-8").splitlines()] if rejects.exists() else []
    return done, counts, bad


@pytest.mark.parametrize(("name", "fmt", "content", "expected"), CASES, ids=[c[0] for c in CASES])
def test_broken_rows_are_rejected_and_accounted_for(tmp_path: Path, name: str, fmt: str, content: bytes,
                                                     expected: dict[int, str]) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    done, (read, wrote, rejected), bad = run(path, fmt)
    assert done.returncode == 1
    assert read == wrote + rejected and rejected == len(expected) and wrote >= 1
    assert {r["line"]: r["reasons"][0]["code"] for r in bad} == expected
    for r in bad:
        assert r["file"] == str(path) and r["row"] not in (None, "")
        assert all(reason["message"] and reason["path"].startswith("$") for reason in r["reasons"])
    written = path.with_suffix(".out.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(written) == wrote


def test_rejects_file_is_in_file_order_and_keeps_the_raw_row(tmp_path: Path) -> None:
    path = tmp_path / "openai.jsonl"
    path.write_bytes(CASES[0][2])
    _, _, bad = run(path, "openai")
    assert [r["line"] for r in bad] == sorted(r["line"] for r in bad)
    by_line = {r["line"]: r for r in bad}
    assert by_line[12]["row"] == "{not json at all"
    assert by_line[2]["row"] == {"messages": "not a list"}
    assert by_line[7]["reasons"][0]["path"] == "$.messages[1].tool_calls[0].function.arguments"


def test_rows_a_target_format_cannot_hold_are_rejected_as_not_expressible(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    path.write_text("\n".join(json.dumps(r) for r in [
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": None, "tool_calls": [call]},
                      {"role": "tool", "tool_call_id": "c1", "content": "r"}, {"role": "assistant", "content": "a"}]},
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "weight": 0}]},
    ]))
    done, counts, bad = run(path, "openai", "alpaca")
    assert done.returncode == 1 and counts == (3, 1, 2)
    assert [(r["line"], r["reasons"][0]["code"]) for r in bad] == [(2, "not_expressible"), (3, "not_expressible")]
    assert b"alpaca cannot express" in done.stderr


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-16-le-bom", "utf-16-be-bom"])
@pytest.mark.parametrize("name", ["data.jsonl", "data.json", "data.csv"])
def test_byte_order_marks_and_utf16_are_not_errors(tmp_path: Path, encoding: str, name: str) -> None:
    text = {"data.jsonl": '{"text": "café ☃"}\n{"text": "b"}\n', "data.json": '[{"text": "café ☃"}, {"text": "b"}]',
            "data.csv": 'text\n"café ☃"\nb\n'}[name]
    bom = {"utf-16-le-bom": ("utf-16-le", b"\xff\xfe"), "utf-16-be-bom": ("utf-16-be", b"\xfe\xff")}
    data = bom[encoding][1] + text.encode(bom[encoding][0]) if encoding in bom else text.encode(encoding)
    path = tmp_path / name
    path.write_bytes(data)
    done, counts, _ = run(path, "text", "text")
    assert done.returncode == 0 and counts == (2, 2, 0)
    rows = [json.loads(line) for line in path.with_suffix(".out.jsonl").read_text(encoding="utf-8").splitlines()]
    assert rows[0]["text"] == "café ☃"


def test_quiet_run_prints_only_errors(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'{"text": "ok"}\nbroken\n')
    done = run_prep("convert", str(path), "--to", "text", "-o", str(tmp_path / "o.jsonl"), "-q")
    assert done.returncode == 1 and done.stderr == b""


# ---------------------------------------------------------------- any row, any record

_text = st.sampled_from(["", "x", "hi there", "human: a \\n bot: b", '{"name": "f", "arguments": {}}', "[1]", "{bad"])
_scalar = st.one_of(st.none(), st.booleans(), st.integers(-1, 2), st.floats(allow_nan=False), _text,
                    st.sampled_from(["user", "assistant", "tool", "system", "function", "human", "gpt",
                                     "function_call", "observation", "true"]))
_value = st.recursive(_scalar, lambda c: st.one_of(st.lists(c, max_size=3), st.dictionaries(_text, c, max_size=3)),
                      max_leaves=10)
_call = st.fixed_dictionaries({}, optional={"id": _scalar, "type": _scalar, "function": st.one_of(
    _scalar, st.fixed_dictionaries({}, optional={"name": _scalar, "arguments": _value}))})
_message = st.fixed_dictionaries({"role": _scalar, "content": st.one_of(_text, _value)}, optional={
    "tool_calls": st.one_of(_scalar, st.lists(_call, max_size=2)), "tool_call_id": _scalar, "weight": _scalar,
    "name": _scalar, "function_call": _call})
_messages = st.one_of(_value, st.lists(_message, min_size=1, max_size=4))
_turn = st.one_of(_value, st.fixed_dictionaries({"from": _scalar, "value": _text}))
_field_values = {
    "messages": _messages, "conversations": st.one_of(_value, st.lists(_turn, min_size=1, max_size=4)),
    "prompt": st.one_of(_text, _messages), "completion": st.one_of(_text, _messages),
    "chosen": st.one_of(_text, _turn, _messages), "rejected": st.one_of(_text, _turn, _messages),
    "tools": _value, "label": _scalar, "kto_tag": _scalar, "instruction": _text, "input": _scalar,
    "output": _value, "history": _value, "system": _scalar, "text": _scalar, "rejected_text": _scalar,
    "story": _text, "questions": _value, "answers": _value, "images": _value,
    "preferred_output": _messages, "non_preferred_output": _messages,
    "input_": st.fixed_dictionaries({"messages": _messages}),
}
_row = st.lists(st.sampled_from(sorted(_field_values)), min_size=1, max_size=5, unique=True).flatmap(
    lambda keys: st.fixed_dictionaries({k.rstrip("_"): _field_values[k] for k in keys}))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(_row, _value))
def test_any_row_is_read_or_refused_with_a_finding(row: Any) -> None:
    """No row, however odd, makes a reader or writer fail with anything but a RowError."""
    for name, mod in FORMATS.items():
        try:
            record = {"id": "r", **mod.read(row, make_options(name))}
        except RowError as e:
            assert all(f.code and f.message for f in e.findings)
            continue
        json.dumps(record)
        for target in WRITABLE:
            try:
                json.dumps(module(target).write(record, make_options(target)))
            except RowError as e:
                assert e.findings[0].code == "not_expressible"
