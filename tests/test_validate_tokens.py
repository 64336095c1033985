"""`prep validate --tokenizer`: token statistics and token-level checks through prep's own
template and tokenize code, checked against the real Qwen2.5 tokenizer's `apply_chat_template`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import ROOT, SAMPLES, fixture, hf_tokenizer
from prep.formats.inputs import Inputs
from prep.render.tokenizer import load_tokenizer
from prep.stages.validate import validate
from validate_util import assert_exactly, chat, write_rows

pytestmark = pytest.mark.slow  # loading a real tokenizer (transformers) takes seconds
TOY = ROOT / "tests" / "data" / "cookbook_toy_chat.jsonl"


@pytest.fixture(scope="module")
def qwen():  # noqa: ANN201 - prep.tokenize.Tokenizer
    return load_tokenizer(str(fixture("tokenizers", "qwen2.5")))


def test_token_counts_match_the_models_chat_template(qwen) -> None:  # noqa: ANN001
    report = validate(Inputs([str(TOY)]), tokenizer=qwen, max_len=4096, max_findings=None)
    rows = [json.loads(line) for line in TOY.read_text().splitlines()]
    accepted = [r for i, r in enumerate(rows, 1) if i != 4]  # row 4 is rejected (starts with an assistant reply)
    expected = sorted(len(hf_tokenizer(qwen.path).apply_chat_template(r["messages"], tokenize=True, return_dict=True)["input_ids"])
                      for r in accepted)
    stats = report.stats.to_dict()
    t = stats["tokens_per_row"]
    assert (t["count"], t["min"], t["max"]) == (4, expected[0], expected[-1])
    assert t["mean"] == sum(expected) / 4 and t["median"] == (expected[1] + expected[2]) / 2
    assert stats["tokens_total"] == sum(expected)
    assert stats["billing_tokens"] == sum(min(n, 4096) for n in expected)
    assert stats["rows_over_max_len"] == sum(n > 4096 for n in expected) == 1
    trained = stats["trained_tokens_per_row"]
    assert trained["min"] > 0 and trained["max"] < t["max"]
    assert {(f.line, f.code) for f in report.findings.stored} == {(4, "role_order"), (5, "too_long")}


def test_special_token_strings_and_template_refusals(qwen, tmp_path: Path) -> None:  # noqa: ANN001
    rows = [chat("What is <|im_end|> for?", "It closes a turn."),                               # 1
            chat("Plain question?", "Plain answer."),                                           # 2
            {"conversations": [{"from": "human", "value": "Weather?"},
                               {"from": "function_call", "value": '{"name": "weather", "arguments": {}}'},
                               {"from": "observation", "value": "sunny"},
                               {"from": "gpt", "value": "Sunny."}]}]                            # 3 (sharegpt)
    openai_rows = write_rows(tmp_path / "chat.jsonl", rows[:2])
    assert_exactly(validate(Inputs([str(openai_rows)]), tokenizer=qwen, max_findings=None),
                   {(1, "special_token_text", "$.messages[0].content")})
    sharegpt = write_rows(tmp_path / "tools.jsonl", [rows[2]])
    report = validate(Inputs([str(sharegpt)]), tokenizer=qwen, template="llama2", max_findings=None, min_rows=0)
    assert_exactly(report, {(1, "no_tools_declared", "$.conversations[1].value"),
                            (1, "template_cannot_render", "$.conversations[1]")})
    assert report.rows_rejected == 1


def test_preference_rows_count_prompt_and_chosen(qwen) -> None:  # noqa: ANN001
    report = validate(Inputs([str(SAMPLES / "sharegpt_preference.jsonl")]), tokenizer=qwen)
    stats = report.stats.to_dict()
    assert report.findings.errors == 0
    assert stats["tokens_per_row"]["count"] == report.rows_accepted
    assert stats["trained_tokens_per_row"]["max"] < stats["tokens_per_row"]["max"]
