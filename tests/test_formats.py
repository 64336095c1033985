"""Each format's reader and writer on concrete rows: what a row becomes, and what is refused."""

from __future__ import annotations

import json
from typing import Any

import pytest

from conftest import SAMPLES
from prep.core.findings import Batch, PrepError, RowError, Source
from prep.core.records import Record
from prep.formats import detect, detect_file, make_options, module, read_records


def read(fmt: str, row: Any, **settings: Any) -> Record:
    return module(fmt).read(row, make_options(fmt, settings))


def write(fmt: str, record: Record, **settings: Any) -> dict[str, Any]:
    return module(fmt).write(record, make_options(fmt, settings))


def refused(fn: Any, *args: Any, **kw: Any) -> tuple[str, str]:
    """(code, path) of the RowError `fn` raises."""
    with pytest.raises(RowError) as e:
        fn(*args, **kw)
    return e.value.findings[0].code, e.value.findings[0].path


def user(content: str) -> dict[str, str]:
    return {"role": "user", "content": content}


def bot(content: str, **extra: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": content, **extra}


# ---------------------------------------------------------------- detection


@pytest.mark.parametrize(("name", "fmt"), [
    ("alpaca.json", "alpaca"), ("alpaca_preference.json", "alpaca"), ("alpaca_kto.json", "alpaca"),
    ("alpaca_ko.json", "alpaca"), ("sharegpt.jsonl", "sharegpt"), ("sharegpt_preference.jsonl", "sharegpt"),
    ("openai.jsonl", "openai"), ("openai_dpo.jsonl", "openai"), ("trl_prompt_completion.jsonl", "trl"),
    ("trl_preference.jsonl", "trl"), ("trl_kto.jsonl", "trl"), ("autotrain.csv", "autotrain"),
    ("autotrain_dpo.csv", "autotrain"), ("coqa.json", "coqa"), ("coqa_hf.jsonl", "coqa"), ("text.jsonl", "text"),
    ("text.txt", "text"),
])
def test_each_sample_is_detected(name: str, fmt: str) -> None:
    seen: dict[str, str] = {}
    list(read_records([str(SAMPLES / name)], on_file=lambda path, f: seen.update({path: f})))
    assert seen == {str(SAMPLES / name): fmt}


def test_detection_needs_a_known_layout() -> None:
    assert detect({"foo": 1}) is None and detect([1, 2]) is None
    rows = Batch(items=[{"question": "q", "answer": "a"}], sources=[Source("x.jsonl", 1, 1)])
    with pytest.raises(PrepError, match=r"cannot tell the format .*fields: answer, question.*prep convert alpaca"):
        detect_file(iter([rows]), "x.jsonl")


def test_detection_skips_leading_unparsable_lines() -> None:
    """A bad first line does not decide the format: the first object row does."""
    first = Batch(sources=[], items=[])
    first.reject(Source("x.jsonl", 1, 1), [], "garbage")
    second = Batch(items=[{"messages": []}], sources=[Source("x.jsonl", 2, 2)])
    fmt, batches = detect_file(iter([first, second]), "x.jsonl")
    assert fmt == "openai" and len(list(batches)) == 2


# ---------------------------------------------------------------- alpaca


def test_alpaca_joins_instruction_and_input_and_keeps_system_and_history() -> None:
    row = {"instruction": "Translate.", "input": "Hallo", "output": "Hello", "system": "Be exact.",
           "history": [["Hi", "Hey"], ["Who are you?", "A bot."]]}
    assert read("alpaca", row) == {"messages": [
        {"role": "system", "content": "Be exact."}, user("Hi"), bot("Hey"), user("Who are you?"), bot("A bot."),
        user("Translate.\nHallo"), bot("Hello")]}
    assert read("alpaca", {"instruction": "", "input": "only input", "output": "x"})["messages"][0] == user("only input")


def test_alpaca_empty_system_means_none_as_in_llamafactory() -> None:
    assert read("alpaca", {"instruction": "q", "output": "a", "system": ""}) == {"messages": [user("q"), bot("a")]}


def test_alpaca_preference_feedback_and_legacy_ranking() -> None:
    assert read("alpaca", {"instruction": "q", "chosen": "good", "rejected": "bad"}) == {
        "prompt": [user("q")], "chosen": [bot("good")], "rejected": [bot("bad")]}
    assert read("alpaca", {"instruction": "q", "output": "a", "kto_tag": "false"}) == {
        "prompt": [user("q")], "completion": [bot("a")], "label": False}
    assert read("alpaca", {"instruction": "q", "output": ["good", "bad"]})["chosen"] == [bot("good")]


def finding(fn: Any, *args: Any, **kw: Any) -> str:
    """The RowError `fn` raises, as a user sees it."""
    with pytest.raises(RowError) as e:
        fn(*args, **kw)
    return str(e.value.findings[0])


def test_messages_read_well() -> None:
    assert finding(read, "sharegpt", {"conversations": [{"from": "human"}]}) == (
        "$.conversations[0].value missing_field: required field 'value' is missing (add 'value' to $.conversations[0])")
    assert finding(read, "openai", {"other": 1}) == (
        "$.messages missing_field: required field 'messages' is missing (add 'messages' to the row)")
    assert finding(write, "autotrain", {"id": "1", "messages": [{"role": "system", "content": "s"}]}) == (
        "$.messages[0] not_expressible: autotrain cannot express a message with role 'system' or fields beyond "
        "role/content (convert to openai or trl, which hold every record kind but text)")


def test_alpaca_reader_refusals() -> None:
    assert refused(read, "alpaca", {"input": "x", "output": "y"}) == ("missing_field", "$.instruction")
    assert refused(read, "alpaca", {"instruction": "q"}) == ("missing_field", "$.output")
    assert refused(read, "alpaca", {"instruction": 3, "output": "y"}) == ("wrong_type", "$.instruction")
    assert refused(read, "alpaca", {"instruction": "q", "output": "a", "history": [["only one"]]}) == (
        "wrong_type", "$.history[0]")
    assert refused(read, "alpaca", {"instruction": "q", "output": "a", "kto_tag": "yes"}) == ("wrong_type", "$.kto_tag")
    assert refused(read, "alpaca", {"instruction": "q", "chosen": "a"}) == ("missing_field", "$.rejected")
    assert refused(read, "alpaca", ["instruction"]) == ("not_an_object", "$")


def test_alpaca_writer_round_trips_history_and_refuses_what_it_cannot_hold() -> None:
    record = {"id": "1", "messages": [{"role": "system", "content": "S"}, user("a"), bot("b"), user("c"), bot("d")]}
    row = write("alpaca", record)
    assert row == {"system": "S", "instruction": "c", "input": "", "history": [["a", "b"]], "output": "d"}
    assert read("alpaca", row) == {"messages": record["messages"]}
    assert refused(write, "alpaca", {"id": "1", "messages": [user("a")]})[0] == "not_expressible"
    assert refused(write, "alpaca", {"id": "1", "messages": [user("a"), user("b"), bot("c")]})[0] == "not_expressible"
    assert refused(write, "alpaca", {"id": "1", "text": "plain"})[0] == "not_expressible"
    assert refused(write, "alpaca", {"id": "1", "messages": [user("a"), bot("b")],
                                     "tools": [{"type": "function", "function": {"name": "f"}}]}) == (
        "not_expressible", "$.tools")


def test_alpaca_writer_refuses_an_untrained_answer() -> None:
    """Alpaca trains every output: a weight-0 answer must not silently become a trained one."""
    assert refused(write, "alpaca", {"id": "1", "messages": [user("q"), bot("a", weight=0)]}) == (
        "not_expressible", "$.messages[1].weight")
    assert refused(write, "alpaca", {"id": "1", "prompt": [user("q")], "chosen": [bot("a", weight=0)],
                                     "rejected": [bot("b")]})[0] == "not_expressible"
    assert write("alpaca", {"id": "1", "messages": [user("q"), bot("a", weight=1)]})["output"] == "a"


# ---------------------------------------------------------------- sharegpt

GLAIVE_ROW = {
    "conversations": [
        {"from": "human", "value": "Convert 10 USD to EUR and GBP."},
        {"from": "function_call", "value": json.dumps([
            {"name": "convert", "arguments": {"amount": 10, "to": "EUR"}},
            {"name": "convert", "arguments": {"amount": 10, "to": "GBP"}}])},
        {"from": "observation", "value": '{"EUR": 9.3}'},
        {"from": "gpt", "value": "10 USD is 9.30 EUR."},
        {"from": "human", "value": "And yen?"},
        {"from": "function_call", "value": '{"name": "convert", "arguments": "{\\"amount\\": 10, \\"to\\": \\"JPY\\"}"}'},
        {"from": "observation", "value": '{"JPY": 1500}'},
        {"from": "gpt", "value": "1500 yen."}],
    "tools": json.dumps([{"name": "convert", "description": "Convert money", "parameters": {"type": "object"}}]),
}


def test_sharegpt_function_calls_become_tool_calls_answered_in_order() -> None:
    record = read("sharegpt", GLAIVE_ROW)
    m = record["messages"]
    assert [x["role"] for x in m] == ["user", "assistant", "tool", "assistant", "user", "assistant", "tool", "assistant"]
    assert m[1] == bot("", tool_calls=[
        {"id": "call_0", "type": "function", "function": {"name": "convert", "arguments": {"amount": 10, "to": "EUR"}}},
        {"id": "call_1", "type": "function", "function": {"name": "convert", "arguments": {"amount": 10, "to": "GBP"}}}])
    assert m[2]["tool_call_id"] == "call_0"
    # the second call of the parallel pair is still open, so the next result answers it
    assert m[5]["tool_calls"][0]["function"]["arguments"] == {"amount": 10, "to": "JPY"}
    assert m[6]["tool_call_id"] == "call_1"
    assert record["tools"] == [{"type": "function", "function": {
        "name": "convert", "description": "Convert money", "parameters": {"type": "object"}}}]


def test_sharegpt_system_preference_kto_and_media() -> None:
    assert read("sharegpt", {"system": "S", "conversations": [{"from": "human", "value": "q"}],
                             "chosen": {"from": "gpt", "value": "a"}, "rejected": {"from": "gpt", "value": "b"}}) == {
        "prompt": [{"role": "system", "content": "S"}, user("q")], "chosen": [bot("a")], "rejected": [bot("b")]}
    assert read("sharegpt", {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}],
                             "label": True}) == {"prompt": [user("q")], "completion": [bot("a")], "label": True}
    row = {"conversations": [{"from": "human", "value": "<image>What is it?"}, {"from": "gpt", "value": "A cat."}],
           "images": ["cat.jpg"]}
    assert read("sharegpt", row, media_root="/d")["media"] == [
        {"type": "image", "path": "cat.jpg", "root": "/d", "at": "$.images[0]"}]
    assert write("sharegpt", {"id": "1", **read("sharegpt", row)})["images"] == ["cat.jpg"]


def test_sharegpt_tags_from_a_registry_and_lenient_spellings() -> None:
    row = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    strict = dict(messages="messages", role_tag="role", content_tag="content", user_tag="user",
                  assistant_tag="assistant", lenient=False)
    assert read("sharegpt", row, **strict) == {"messages": [user("q"), bot("a")]}
    odd = {"conversations": [{"from": "user", "value": "q"}, {"from": "chatgpt", "value": "a"}]}
    assert read("sharegpt", odd) == {"messages": [user("q"), bot("a")]}
    assert refused(read, "sharegpt", odd, lenient=False) == ("bad_role", "$.conversations[0].from")


def test_sharegpt_reader_refusals() -> None:
    def conv(*turns: tuple[str, Any], **extra: Any) -> dict[str, Any]:
        return {"conversations": [{"from": f, "value": v} for f, v in turns], **extra}

    assert refused(read, "sharegpt", conv(("human", "q"), ("function_call", "{not json"))) == (
        "bad_tool_call", "$.conversations[1].value")
    assert refused(read, "sharegpt", conv(("human", "q"), ("function_call", '{"arguments": {}}'))) == (
        "bad_tool_call", "$.conversations[1].value")
    assert refused(read, "sharegpt", conv(("human", "q"), ("function_call", '{"name": "f", "arguments": "[1]"}')))[0] \
        == "bad_tool_arguments"
    assert refused(read, "sharegpt", conv(("human", "q"), tools='[{"description": "no name"}]')) == (
        "bad_tools", "$.tools[0]")
    assert refused(read, "sharegpt", conv(("human", 5))) == ("wrong_type", "$.conversations[0].value")
    assert refused(read, "sharegpt", conv(("wizard", "q"))) == ("bad_role", "$.conversations[0].from")
    assert refused(read, "sharegpt", {"conversations": []}) == ("empty_value", "$.conversations")
    assert refused(read, "sharegpt", conv(("human", "q"), ("human", "again"), label=True))[0] == "bad_feedback"
    assert refused(read, "sharegpt", conv(("human", "q"), chosen={"from": "human", "value": "x"},
                                          rejected={"from": "gpt", "value": "y"}))[0] == "bad_preference"


def test_sharegpt_writer() -> None:
    record = {"id": "1", **read("sharegpt", GLAIVE_ROW)}
    row = write("sharegpt", record)
    assert json.loads(row["tools"]) == json.loads(GLAIVE_ROW["tools"])
    assert [t["from"] for t in row["conversations"]] == [t["from"] for t in GLAIVE_ROW["conversations"]]
    assert read("sharegpt", row) == read("sharegpt", GLAIVE_ROW)
    assert refused(write, "sharegpt", {"id": "1", "messages": [user("q"), bot("a", weight=0)]}) == (
        "not_expressible", "$.messages[1].weight")
    calls = [{"id": "c", "type": "function", "function": {"name": "f", "arguments": {}}}]
    assert refused(write, "sharegpt", {"id": "1", "messages": [user("q"), bot("text", tool_calls=calls)]})[0] \
        == "not_expressible"
    assert refused(write, "sharegpt", {"id": "1", "text": "t"})[0] == "not_expressible"


# ---------------------------------------------------------------- openai


def test_openai_tool_calls_arguments_are_parsed_and_written_back_as_text() -> None:
    row = {"messages": [user("q"), {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c9", "type": "function", "function": {"name": "f", "arguments": '{"x": [1, 2]}'}}]},
        {"role": "tool", "tool_call_id": "c9", "content": "ok"}, bot("done")]}
    record = read("openai", row)
    assert record["messages"][1] == bot("", tool_calls=[
        {"id": "c9", "type": "function", "function": {"name": "f", "arguments": {"x": [1, 2]}}}])
    out = write("openai", {"id": "1", **record})
    assert json.loads(out["messages"][1]["tool_calls"][0]["function"]["arguments"]) == {"x": [1, 2]}
    assert read("openai", out) == record


def test_openai_legacy_function_calls_content_parts_and_missing_ids() -> None:
    row = {"messages": [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "assistant", "content": None, "function_call": {"name": "f", "arguments": "{}"}},
        {"role": "function", "name": "f", "content": "r"},
        {"role": "assistant", "content": "x"}]}
    m = read("openai", row)["messages"]
    assert m[0] == user("ab")
    assert m[1]["tool_calls"][0]["id"] == "call_0"
    assert m[2] == {"role": "tool", "content": "r", "tool_call_id": "call_0", "name": "f"}


def test_openai_dpo_and_kto_layouts() -> None:
    dpo = {"input": {"messages": [user("q")], "tools": []},
           "preferred_output": [bot("good")], "non_preferred_output": [bot("bad")]}
    record = read("openai", dpo)
    assert record == {"prompt": [user("q")], "chosen": [bot("good")], "rejected": [bot("bad")]}
    assert write("openai", {"id": "1", **record}) == {"input": {"messages": [user("q")]},
                                                     "preferred_output": [bot("good")],
                                                     "non_preferred_output": [bot("bad")]}
    kto = {"messages": [user("q"), bot("a")], "label": False}
    assert read("openai", kto) == {"prompt": [user("q")], "completion": [bot("a")], "label": False}
    assert refused(read, "openai", {**dpo, "preferred_output": [bot("a"), bot("b")]}) == (
        "bad_preference", "$.preferred_output")
    assert refused(read, "openai", {"messages": [bot("a"), user("q")], "label": True}) == (
        "bad_feedback", "$.messages[1]")


def test_openai_writer_refuses_text() -> None:
    assert refused(write, "openai", {"id": "1", "text": "t"})[0] == "not_expressible"


# ---------------------------------------------------------------- trl


def test_trl_layouts() -> None:
    assert read("trl", {"text": "t"}) == {"text": "t"}
    assert read("trl", {"prompt": "The sky is", "completion": " blue."}) == {
        "messages": [user("The sky is"), bot(" blue.")]}
    assert read("trl", {"prompt": [user("q")], "completion": [bot("a")], "label": "true"}) == {
        "prompt": [user("q")], "completion": [bot("a")], "label": True}
    implicit = {"chosen": [user("q"), bot("a")], "rejected": [user("q"), bot("b")]}
    assert read("trl", implicit) == {"prompt": [user("q")], "chosen": [bot("a")], "rejected": [bot("b")]}
    assert refused(read, "trl", {"chosen": "a", "rejected": "b"}) == ("missing_field", "$.prompt")
    assert refused(read, "trl", {"other": 1}) == ("missing_field", "$")


def test_trl_writer_keeps_the_canonical_record() -> None:
    record = {"id": "1", "prompt": [user("q")], "completion": [bot("a", weight=0)], "label": True,
              "tools": [{"type": "function", "function": {"name": "f"}}]}
    assert write("trl", record) == {k: v for k, v in record.items() if k != "id"}


# ---------------------------------------------------------------- autotrain


def test_autotrain_dialogues_with_literal_and_real_newlines() -> None:
    expected = {"messages": [user("hello"), bot("hi there"), user("bye"), bot("see you")]}
    assert read("autotrain", {"text": "human: hello \\n bot: hi there \\n human: bye \\n bot: see you"}) == expected
    assert read("autotrain", {"text": "human: hello\nbot: hi there\nhuman: bye\nbot: see you"}) == expected
    multi = read("autotrain", {"text": "human: list?\nbot: Sure:\n- one\n- two"})
    assert multi["messages"][1] == bot("Sure:\n- one\n- two")
    assert read("autotrain", {"text": "no prefixes here"}) == {"text": "no prefixes here"}


def test_autotrain_options_name_columns_and_prefixes() -> None:
    row = {"chat": "### User: hi \\n ### Bot: hello"}
    assert read("autotrain", row, text_column="chat", human_prefix="### User:", bot_prefix="### Bot:") == {
        "messages": [user("hi"), bot("hello")]}
    assert refused(read, "autotrain", row) == ("missing_field", "$.text")
    assert refused(read, "autotrain", {"text": "hello\nhuman: hi"})[0] == "bad_dialogue"
    assert read("autotrain", {"text": "hello human: hi"}) == {"text": "hello human: hi"}  # prefixes start a line


def test_autotrain_preference_rows() -> None:
    assert read("autotrain", {"prompt": "q", "text": "good", "rejected_text": "bad"}) == {
        "prompt": [user("q")], "chosen": [bot("good")], "rejected": [bot("bad")]}
    reward = {"text": "human: q \\n bot: good", "rejected_text": "human: q \\n bot: bad"}
    assert read("autotrain", reward) == {"prompt": [user("q")], "chosen": [bot("good")], "rejected": [bot("bad")]}
    assert refused(read, "autotrain", {"text": "a", "rejected_text": "b"})[0] == "bad_dialogue"
    assert refused(read, "autotrain", {"prompt": "q", "text": "a"}) == ("missing_field", "$.rejected_text")


def test_autotrain_writer() -> None:
    assert write("autotrain", {"id": "1", "messages": [user("a"), bot("b")]}) == {"text": "human: a\nbot: b"}
    assert write("autotrain", {"id": "1", "prompt": [user("q")], "chosen": [bot("g")], "rejected": [bot("b")]}) == {
        "prompt": "q", "text": "g", "rejected_text": "b"}
    code, path = refused(write, "autotrain", {"id": "1", "messages": [{"role": "system", "content": "s"}, user("a")]})
    assert (code, path) == ("not_expressible", "$.messages[0]")
    assert refused(write, "autotrain", {"id": "1", "prompt": [user("q")], "completion": [bot("a")],
                                        "label": True})[0] == "not_expressible"


# ---------------------------------------------------------------- coqa

ORIGINAL = {"source": "mctest", "id": "s1", "story": "Ann has a red kite.",
            "questions": [{"input_text": "What colour?", "turn_id": 2}, {"input_text": "Who has a kite?", "turn_id": 1}],
            "answers": [{"input_text": "red", "span_text": "a red kite", "span_start": 8, "span_end": 18, "turn_id": 2},
                        {"input_text": "Ann", "span_text": "Ann", "span_start": 0, "span_end": 3, "turn_id": 1}]}
SYSTEM = "Read the story and extract answers for the questions.\nStory: Ann has a red kite."


def test_coqa_original_layout_orders_turns_by_turn_id() -> None:
    assert read("coqa", ORIGINAL) == {"messages": [
        {"role": "system", "content": SYSTEM}, user("Who has a kite?"), bot("Ann"), user("What colour?"), bot("red")]}


def test_coqa_hf_layout_and_system_override() -> None:
    row = {"story": "Ann has a red kite.", "questions": ["Who has a kite?", "What colour?"],
           "answers": {"input_text": ["Ann", "red"], "answer_start": [0, 8], "answer_end": [3, 18]}}
    assert read("coqa", row) == read("coqa", ORIGINAL)
    assert read("coqa", row, system="Story: {story}")["messages"][0]["content"] == "Story: Ann has a red kite."


def test_coqa_refusals() -> None:
    assert refused(read, "coqa", {**ORIGINAL, "answers": ORIGINAL["answers"][:1]})[0] == "count_mismatch"
    assert refused(read, "coqa", {**ORIGINAL, "story": " "}) == ("empty_value", "$.story")
    dup = [{"input_text": "a", "turn_id": 1}, {"input_text": "b", "turn_id": 1}]
    assert refused(read, "coqa", {**ORIGINAL, "questions": dup})[0] == "bad_turns"
    assert refused(read, "coqa", {**ORIGINAL, "questions": [], "answers": []})[0] == "empty_value"


# ---------------------------------------------------------------- text


def test_text_reader_and_writer() -> None:
    assert read("text", {"text": "hello"}) == {"text": "hello"}
    assert refused(read, "text", {"text": 5}) == ("wrong_type", "$.text")
    assert write("text", {"id": "1", "text": "t"}) == {"text": "t"}
    assert refused(write, "text", {"id": "1", "messages": [user("q")]})[0] == "not_expressible"


def test_option_names_that_a_format_does_not_know_are_ignored() -> None:
    """Shared settings (e.g. --system for CoQA) go only to the formats that have them."""
    assert make_options("text", {"system": "x", "column": "body"}).column == "body"
