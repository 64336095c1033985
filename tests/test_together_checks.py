"""Together's own file checks, run against `prep validate`: the cases of together-python's
tests/unit/test_files_checks.py and tests/unit/test_preference_openai.py (github.com/togethercomputer/together-python
at eba5e5f, "VLM Finetuning support (#411)"), reconstructed here, each with the verdict Together's test asserts
(`report["is_check_passed"]`). prep must agree on every case that is not a rule of Together's service only."""

from __future__ import annotations

import copy
import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from conftest import fixture
from media_util import data_url, make_image
from prep.core.findings import PrepError
from prep.formats.inputs import Inputs
from prep.render.templates import get_template
from prep.render.tokenizer import load_tokenizer
from prep.stages.tokenize import tokenize
from test_media_formats import together_files
from validate_util import run

PASS, FAIL = True, False


def _m(role: str, content: Any, **extra: Any) -> dict[str, Any]:
    return {"role": role, "content": content, **extra}


def _chat(*messages: dict[str, Any]) -> dict[str, Any]:
    return {"messages": list(messages)}


# test_preference_openai.py: _TEST_PREFERENCE_OPENAI_CONTENT (the answers shortened)
PREFERENCE = [
    {"input": {"messages": [_m("user", "Hi there, I have a question."), _m("assistant", "Hello, how is your day going?"),
                            _m("user", "Hello, can you tell me how cold San Francisco is today?")]},
     "preferred_output": [_m("assistant", "Today in San Francisco, it is not quite cold as expected.")],
     "non_preferred_output": [_m("assistant", "It is not particularly cold in San Francisco today.")]},
    {"input": {"messages": [_m("user", "What's the best way to learn programming?")]},
     "preferred_output": [_m("assistant", "Consistent practice on real projects.")],
     "non_preferred_output": [_m("assistant", "Just read some books and you'll be fine.")]},
]


def _preference(change: Callable[[dict[str, Any]], Any]) -> list[Any]:
    """Together's preference file with its first row changed (as its parametrized tests change it)."""
    rows = copy.deepcopy(PREFERENCE)
    change(rows[0])
    return rows


def _without(key: str) -> Callable[[dict[str, Any]], Any]:
    return lambda row: row.pop(key)


def _set(**values: Any) -> Callable[[dict[str, Any]], Any]:
    return lambda row: row.update(values)


IMAGE = {"type": "image_url", "image_url": {"url": "<malformed_base64_image>"}}
# name -> (lines of the .jsonl file, or its bytes, Together's verdict)
CASES: dict[str, tuple[list[Any] | bytes, bool]] = {
    # test_files_checks.py
    "valid_general": ([{"text": "Hello, world!"}, {"text": "How are you?"}], PASS),
    "valid_instruction": ([{"prompt": "Translate the following sentence.", "completion": "Hello, world!"},
                           {"prompt": "Summarize the text.",
                            "completion": "Weyland-Yutani Corporation creates advanced AI."}], PASS),
    "valid_conversational_single_turn": ([
        _chat(_m("user", "Hello"), _m("assistant", "Hi there!")),
        _chat(_m("user", "How are you?"), _m("assistant", "I am fine.")),
        _chat(_m("system", "You are a kind AI"), _m("user", "How are you?"), _m("assistant", "I am fine."))], PASS),
    "valid_conversational_multiple_turns": ([
        _chat(_m("user", "Is it going to rain today?"), _m("assistant", "Yes, expect showers in the afternoon."),
              _m("user", "What is the weather like in Tokyo?"), _m("assistant", "It is sunny with a chance of rain.")),
        _chat(_m("system", "You are a kind AI"), _m("user", "Who won the game last night?"),
              _m("assistant", "The home team won by two points."),
              _m("user", "What is the weather like in Amsterdam?"),
              _m("assistant", "It is cloudy with a chance of snow."))], PASS),
    "empty": (b"", FAIL),
    "non_utf8": (b"\xff\xfe\xfd", FAIL),
    "invalid_json": ([{"text": "Hello, world!"}, "Invalid JSON Line"], FAIL),  # the second line: a JSON string
    "missing_field": ([{"prompt": "Translate the following sentence.", "completion": "Hello, world!"},
                       {"prompt": "Summarize the text."}], FAIL),
    "inconsistent_format": ([_chat(_m("user", "Hi"), _m("assistant", "Hi! How can I help you?")),
                             {"text": "How are you?"}], FAIL),
    "invalid_role": ([_chat(_m("invalid_role", "Hi"))], FAIL),
    "non_alternating_roles": ([_chat(_m("user", "Hi"), _m("user", "Hello again"))], FAIL),
    "assistant_role_exists": ([_chat(_m("user", "Hi"))], FAIL),
    "invalid_value_type": ([{"text": 123}], FAIL),
    "missing_field_in_conversation": ([_chat(_m("user", "Hi"), {"role": "assistant"})], FAIL),
    "wrong_turn_type": ([{"messages": ["Hi!", _m("user", "Hi"), {"role": "assistant"}]}], FAIL),
    "extra_column": ([{"text": "Hello, world!", "extra_column": "extra"}], FAIL),
    "empty_messages": ([{"messages": []}], FAIL),
    "valid_weights_all": ([
        _chat(_m("user", "Hello", weight=1), _m("assistant", "Hi there!", weight=0),
              _m("user", "How are you?", weight=1), _m("assistant", "I'm doing well!", weight=1)),
        _chat(_m("system", "You are helpful", weight=0), _m("user", "What's the weather?", weight=1),
              _m("assistant", "It's sunny today!", weight=1))], PASS),
    "valid_weights_mixed": ([
        _chat(_m("user", "Hello", weight=1), _m("assistant", "Hi there!", weight=0), _m("user", "How are you?"),
              _m("assistant", "I'm doing well!")),
        _chat(_m("user", "What's the weather?"), _m("assistant", "It's sunny today!"))], PASS),
    "invalid_weight_float": ([_chat(_m("user", "Hello", weight=1.0), _m("assistant", "Hi there!", weight=0))], FAIL),
    "invalid_weight": ([_chat(_m("user", "Hello", weight=2), _m("assistant", "Hi there!", weight=0))], FAIL),
    "invalid_multimodal_content": ([_chat(_m("user", [{"type": "text", "text": "Hello"}, IMAGE]),
                                          _m("assistant", [{"type": "text", "text": "Hi there!"}]))], FAIL),
    # test_preference_openai.py
    "valid_preference_openai": (PREFERENCE, PASS),
    **{f"preference_missing_{key}": (_preference(_without(key)), FAIL)
       for key in ("input", "preferred_output", "non_preferred_output")},
    **{f"preference_{name}": (_preference(change), FAIL) for name, change in {
        "empty_messages": _set(input={"messages": []}),
        "missing_role_preferred": _set(preferred_output=[{"content": "Missing role field"}]),
        "missing_role_non_preferred": _set(non_preferred_output=[{"content": "Missing role field"}]),
        "missing_content_preferred": _set(preferred_output=[{"role": "assistant"}]),
        "missing_content_non_preferred": _set(non_preferred_output=[{"role": "assistant"}]),
        "wrong_output_format_preferred": _set(preferred_output="Not an array but a string"),
        "wrong_output_format_non_preferred": _set(non_preferred_output="Not an array but a string"),
        "missing_content": _set(input={"messages": [{"role": "user"}]}),
        "multiple_preferred_outputs": _set(preferred_output=[_m("assistant", "First response"),
                                                             _m("assistant", "Second response")]),
        "multiple_non_preferred_outputs": _set(non_preferred_output=[_m("assistant", "First response"),
                                                                     _m("assistant", "Second response")]),
        "empty_preferred_output": _set(preferred_output=[]),
        "empty_non_preferred_output": _set(non_preferred_output=[]),
        "non_string_content_in_messages": _set(input={"messages": [_m("user", 123)]}),
        "invalid_role_in_messages": _set(input={"messages": [_m("invalid_role", "Hello")]}),
        "non_alternating_roles": _set(input={"messages": [_m("user", "Hello"), _m("user", "How are you?")]}),
        "invalid_weight_type": _set(input={"messages": [_m("user", "Hello", weight="not_an_integer")]}),
        "invalid_weight_value": _set(input={"messages": [_m("user", "Hello", weight=2)]}),
        "non_dict_message": _set(input={"messages": ["Not a dictionary"]}),
        "non_dict_input": _set(input="Not a dictionary"),
        "missing_messages_in_input": _set(input={}),
        "non_assistant_role_in_preferred": _set(preferred_output=[_m("user", "This should be assistant")]),
        "non_assistant_role_in_non_preferred": _set(non_preferred_output=[_m("user", "This should be assistant")]),
    }.items()},
}


# test_files_checks.py's CSV files (Together reads CSV for evaluations): header and rows, as csv.DictWriter writes them
CSV: dict[str, tuple[list[str], list[dict[str, str]], bool]] = {
    "csv_valid_general": (["text"], [{"text": "Hello, world!"}, {"text": "How are you?"}], PASS),
    "csv_empty": ([], [], FAIL),
    "csv_valid_completion": (["prompt", "completion"], [{"prompt": "Translate the following sentence.",
                                                         "completion": "Hello, world!"}], PASS),
    "csv_invalid_column": (["asfg"], [], FAIL),
}
# Rules of Together's service that prep does not share, with prep's own verdict and why.
SERVICE = {
    # Together accepts exactly its own columns; prep reads a dozen formats, and a column it has no place for is
    # counted as dropped (or carried with --keep-columns), never a reason to refuse the row.
    "extra_column": PASS,
}


def prep_passes(path: Path) -> bool:
    """`prep validate`'s verdict: exit 0 (no error); a file it cannot read at all fails."""
    try:
        return run(path).exit_code == 0
    except PrepError:
        return False


@pytest.mark.parametrize("name", [*CASES, *CSV])
def test_prep_validate_agrees_with_togethers_check_file(tmp_path: Path, name: str) -> None:
    if name in CSV:
        header, rows, together = CSV[name]
        path = tmp_path / f"{name}.csv"
        with path.open("w", newline="", encoding="utf-8") as f:
            if header:
                writer = csv.DictWriter(f, fieldnames=header)
                writer.writeheader()
                writer.writerows(rows)
    else:
        lines, together = CASES[name]
        path = tmp_path / f"{name}.jsonl"
        if isinstance(lines, bytes):
            path.write_bytes(lines)
        else:  # as Together's tests write them: one JSON value a line, no final newline
            path.write_text("\n".join(json.dumps(item) for item in lines), encoding="utf-8")
    assert prep_passes(path) == SERVICE.get(name, together)


@pytest.mark.parametrize("name", together_files("", ""))
def test_togethers_valid_multimodal_files_agree(tmp_path: Path, name: str) -> None:
    """Together's two valid multimodal files (test_media_formats.together_files: two real JPEGs in place of the
    elided `data:image/jpeg;base64,...` payloads), as its tests write them."""
    jpegs = [data_url(make_image(tmp_path / f"{n}.jpg", (32 + n, 24)), "image/jpeg") for n in range(2)]
    path = tmp_path / name
    path.write_text("\n".join(json.dumps(item) for item in together_files(*jpegs)[name]), encoding="utf-8")
    assert prep_passes(path)


def test_weights_on_any_role_train_exactly_those_messages() -> None:
    """Together's valid weights file under chatml: weight 1 trains a message's content (a user's too), 0 masks it
    (an assistant's too), an assistant message without a weight is trained and any other is not."""
    rows = CASES["valid_weights_all"][0] + CASES["valid_weights_mixed"][0]
    template = get_template("chatml")
    expected = [["Hello", "How are you?", "I'm doing well!<|im_end|>"],
                ["What's the weather?", "It's sunny today!<|im_end|>"],
                ["Hello", "I'm doing well!<|im_end|>"],
                ["It's sunny today!<|im_end|>"]]
    for row, want in zip(rows, expected, strict=True):
        rendered = template.render(row["messages"])
        assert [rendered.text[a:b] for a, b in rendered.spans("assistant")] == want
    # --train-on content: every content but those with weight 0 (the system message of the second row)
    got = [template.render(rows[k]["messages"]) for k in (1, 2)]
    assert [[r.text[a:b] for a, b in r.spans("content")] for r in got] == [
        ["What's the weather?", "It's sunny today!<|im_end|>"], ["Hello", "How are you?", "I'm doing well!<|im_end|>"]]


def test_weights_on_any_role_through_tokenize_and_llamafactorys_loss_weight(tmp_path: Path) -> None:
    """The same through `prep tokenize` with the qwen2.5 fixture's own template, from OpenAI `weight` and from
    LLaMA-Factory's `loss_weight` (1.0 on a user message trains it, 0.0 on an assistant message masks it)."""
    tok_dir = fixture("tokenizers", "qwen2.5")
    openai = tmp_path / "weights.jsonl"
    openai.write_text("\n".join(json.dumps(row) for row in CASES["valid_weights_all"][0][:1]), encoding="utf-8")
    parts = tmp_path / "weights_lf.jsonl"
    parts.write_text(json.dumps({"messages": [
        {"role": role, "content": [{"type": "text", "value": m["content"]}], "loss_weight": float(m["weight"])}
        for m in CASES["valid_weights_all"][0][0]["messages"] for role in (m["role"],)]}), encoding="utf-8")
    tok = load_tokenizer(str(tok_dir))
    for path, fmt in ((openai, "openai"), (parts, "lf_parts")):
        result = tokenize(Inputs([str(path)], format=fmt), tok, str(tmp_path / fmt))
        assert result.tally.written == 1
        row = pq.read_table(tmp_path / fmt / "data").to_pylist()[0]
        trained = [t for t, label in zip(row["input_ids"], row["labels"], strict=True) if label != -100]
        assert tok.backend.decode(trained, skip_special_tokens=False) == "HelloHow are you?I'm doing well!<|im_end|>"
