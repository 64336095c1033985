"""LLaMA-Factory's v1 parts format (prep.formats.lf_parts) and round trips that keep reasoning_content:
openai -> openai, openai -> sharegpt -> openai (the think block, read back with --split-think) and
openai -> lf_parts -> openai."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import fixture, run_prep
from prep.core.findings import Batch, Source
from prep.formats import Fields, detect, from_records, make_options, to_records

# Text without the think tags (a think block inside the reasoning cannot be told apart from its end).
_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="<>"), max_size=40)


@st.composite
def conversations(draw: Any) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    if draw(st.booleans()):  # (sharegpt's reader, as LLaMA-Factory's, takes an empty system column as none)
        messages.append({"role": "system", "content": draw(_TEXT.filter(bool))})
    for _ in range(draw(st.integers(1, 3))):
        messages.append({"role": "user", "content": draw(_TEXT)})
        answer = {"role": "assistant", "content": draw(_TEXT)}
        if draw(st.booleans()):
            answer["reasoning_content"] = draw(_TEXT)
        messages.append(answer)
    return {"id": "x", "messages": messages}


def _through(record: dict[str, Any], fmt: str, split_think: bool = False) -> dict[str, Any]:
    """A record written as `fmt` and read back."""
    batch: Batch[Any] = Batch([record], [Source("f", 1, 1)])
    written = next(from_records(iter([batch]), fmt, make_options(fmt)))
    assert not written.rejects and not written.dropped, written.rejects
    read = next(to_records(iter([written]), fmt, make_options(fmt), Fields(split_think=split_think)))
    assert not read.rejects and not read.dropped, (read.rejects, read.dropped)
    return read.items[0]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conversations())
def test_round_trips_keep_reasoning_content(record: dict[str, Any]) -> None:
    assert _through(record, "openai") == record
    assert _through(record, "lf_parts") == record
    sharegpt = _through(record, "sharegpt", split_think=True)
    assert _through(sharegpt, "openai") == record


def test_sft_row_with_reasoning_tool_calls_tool_results_and_loss_weight(tmp_path) -> None:
    row = {"messages": [
        {"role": "system", "content": [{"type": "text", "value": "Use tools."}], "loss_weight": 0.0},
        {"role": "user", "content": [{"type": "text", "value": "Weather in Paris?"}], "loss_weight": 0.0},
        {"role": "assistant", "content": [
            {"type": "reasoning", "value": "I should call the tool."},
            {"type": "tool_call", "value": json.dumps({"name": "weather", "arguments": {"city": "Paris"}})}],
         "loss_weight": 0.0},
        {"role": "tool", "content": [{"type": "text", "value": "18C"}], "loss_weight": 0.0},
        {"role": "assistant", "content": [{"type": "text", "value": "It is 18C."}], "loss_weight": 1.0}],
        "tools": json.dumps([{"name": "weather", "parameters": {"type": "object"}}])}
    assert detect(row) == "lf_parts"
    data = tmp_path / "lf.jsonl"
    data.write_text(json.dumps(row) + "\n")
    out = tmp_path / "o.jsonl"
    done = run_prep("convert", str(data), "--to", "openai", "-o", str(out), "--no-ids")
    assert done.returncode == 0 and b"read as lf_parts" in done.stderr, done.stderr.decode()
    got = json.loads(out.read_text())
    assert got["messages"][2] == {"role": "assistant", "content": "", "weight": 0,
                                  "reasoning_content": "I should call the tool.",
                                  "tool_calls": [{"id": "call_0", "type": "function", "function": {
                                      "name": "weather", "arguments": "{\"city\": \"Paris\"}"}}]}
    assert got["messages"][3] == {"role": "tool", "content": "18C", "tool_call_id": "call_0"}
    assert got["tools"] == [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]
    back = tmp_path / "back.jsonl"
    assert run_prep("convert", str(out), "--to", "lf_parts", "-o", str(back), "--no-ids").returncode == 0
    again = json.loads(back.read_text())
    assert again["messages"] == row["messages"]


def test_dpo_rows_and_refusals(tmp_path) -> None:
    def conv(answer: str) -> list[dict[str, Any]]:
        return [{"role": "user", "content": [{"type": "text", "value": "2+2?"}], "loss_weight": 0.0},
                {"role": "assistant", "content": [{"type": "text", "value": answer}], "loss_weight": 1.0}]

    rows = [{"chosen_messages": conv("4"), "rejected_messages": conv("5")},
            {"messages": [{"role": "user", "content": [{"type": "file", "value": "x.pdf"}]}]},
            {"messages": [{"role": "assistant", "content": [{"type": "text", "value": "a"}], "loss_weight": 0.5}]}]
    data = tmp_path / "dpo.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out, rejects = tmp_path / "o.jsonl", tmp_path / "rej.jsonl"
    done = run_prep("convert", "lf_parts", str(data), "--to", "trl", "-o", str(out), "--rejects", str(rejects))
    assert done.returncode == 1
    got = json.loads(out.read_text())
    assert (got["prompt"], got["chosen"], got["rejected"]) == (
        [{"role": "user", "content": "2+2?"}], [{"role": "assistant", "content": "4"}],
        [{"role": "assistant", "content": "5"}])
    codes = [json.loads(line)["reasons"][0]["code"] for line in rejects.read_text().splitlines()]
    assert codes == ["unsupported_content", "bad_weight"]
    back = tmp_path / "back.jsonl"
    assert run_prep("convert", str(out), "--to", "lf_parts", "-o", str(back), "--no-ids").returncode == 0
    assert json.loads(back.read_text()) == rows[0]


def test_usable_from_dataset_info(tmp_path) -> None:
    rows = [{"messages": [{"role": "user", "content": [{"type": "text", "value": f"q{i}"}], "loss_weight": 0.0},
                          {"role": "assistant", "content": [{"type": "text", "value": f"a{i}"}], "loss_weight": 1.0}],
             "extra_info": "from v1"} for i in range(4)]
    (tmp_path / "v1.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "dataset_info.json").write_text(json.dumps({"v1": {"file_name": "v1.jsonl", "formatting": "lf_parts",
                                                                   "num_samples": 3}}))
    out = tmp_path / "o.jsonl"
    done = run_prep("convert", "--dataset-info", str(tmp_path), "--dataset", "v1", "--to", "openai", "-o", str(out),
                    "--keep-columns", "extra_info")
    assert done.returncode == 0, done.stderr.decode()
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(got) == 3 and all(g["extra_info"] == "from v1" for g in got)
    tok = fixture("tokenizers", "qwen2.5")
    done = run_prep("tokenize", "--dataset-info", str(tmp_path), "--dataset", "v1", "--tokenizer", str(tok),
                    "-o", str(tmp_path / "s"))
    assert done.returncode == 0 and b"dropped fields: extra_info 3" in done.stderr, done.stderr.decode()


@pytest.mark.parametrize("fmt", ["sharegpt", "alpaca"])
def test_formats_without_a_reasoning_field_write_the_think_block(tmp_path, fmt: str) -> None:
    record = {"messages": [{"role": "user", "content": "q"},
                           {"role": "assistant", "content": "a", "reasoning_content": "r"}]}
    data = tmp_path / "r.jsonl"
    data.write_text(json.dumps(record) + "\n")
    out = tmp_path / f"o.{fmt}.jsonl"
    assert run_prep("convert", str(data), "--to", fmt, "-o", str(out)).returncode == 0
    assert "<think>\\nr\\n</think>\\n\\na" in out.read_text()
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"messages": [record["messages"][0], {**record["messages"][1],
                                                                    "reasoning_content": "x</think>y"}]}) + "\n")
    done = run_prep("convert", str(bad), "--to", fmt, "-o", str(out))
    assert done.returncode == 1 and b"not_expressible" in done.stderr


def test_validate_checks_lf_parts_rows(tmp_path) -> None:
    good = {"messages": [{"role": "user", "content": [{"type": "text", "value": "q"}], "loss_weight": 0.0},
                         {"role": "assistant", "content": [{"type": "reasoning", "value": "r"},
                                                           {"type": "text", "value": "a"}], "loss_weight": 1.0}]}
    bad = {"messages": [{"role": "user", "content": [{"type": "file", "value": "x"}], "loss_weight": 0.5},
                        {"role": "assistant", "content": [{"type": "text", "value": "a"}]}]}
    data = tmp_path / "lf.jsonl"
    data.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    report = tmp_path / "r.json"
    done = run_prep("validate", str(data), "--report", str(report), "-q")
    assert done.returncode == 1
    got = json.loads(report.read_text())
    assert got["files"][0]["format"] == "lf_parts" and got["summary"]["rows_accepted"] == 1
    assert set(got["summary"]["findings_by_code"]) == {"bad_weight", "unsupported_content"}


@pytest.mark.parametrize("name", ["glaive_toolcall_en_demo", "dpo_en_demo", "alpaca_en_demo"])
def test_fixture_data_through_lf_parts_is_unchanged(tmp_path, name: str) -> None:
    """LLaMA-Factory's demo data (tool calls and results, tools, preference pairs) written as lf_parts and read
    back gives the same records as read directly."""
    source = fixture("data", "llamafactory", f"{name}.json")
    direct, parts, back = tmp_path / "direct.jsonl", tmp_path / "parts.jsonl", tmp_path / "back.jsonl"
    for args in ((str(source), "--to", "openai", "-o", str(direct)), (str(source), "--to", "lf_parts", "-o", str(parts)),
                 (str(parts), "--to", "openai", "-o", str(back))):
        done = run_prep("convert", *args)
        assert done.returncode == 0 and b"dropped fields" not in done.stderr, done.stderr.decode()
    assert direct.read_bytes() == back.read_bytes()
