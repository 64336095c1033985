"""`prep validate`, conversation rules (OpenAI messages): role order, content, weights, tool calls and the
legacy function-call spelling. One planted defect per row (rows 24, 25, 27, 31: none; images are media,
tests/test_validate_media.py)."""

from __future__ import annotations

from pathlib import Path

from validate_util import assert_exactly, chat, run, write_rows

TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]


def call(cid: str, name: str = "get_weather", arguments: str = '{"city": "Paris"}') -> dict:
    return {"id": cid, "type": "function", "function": {"name": name, "arguments": arguments}}


def tool_row(calls: list[dict], results: list[dict], tools: list | None = TOOLS, answer: str = "Mild today.") -> dict:
    row = {"messages": [{"role": "user", "content": "Weather in Paris?"},
                        {"role": "assistant", "content": None, "tool_calls": calls}, *results,
                        {"role": "assistant", "content": answer}]}
    if tools is not None:
        row["tools"] = tools
    return row


def result(cid: str, text: str = "18C") -> dict:
    return {"role": "tool", "tool_call_id": cid, "content": text}


def user_parts(*parts: dict) -> dict:
    return {"messages": [{"role": "user", "content": [{"type": "text", "text": "What is this?"}, *parts]},
                         {"role": "assistant", "content": "A picture of a cat."}]}


ROWS = [
    chat("Hello there.", "Hi, how can I help?", system="Be brief."),                                   # 1
    chat("What is 2+2?", "Four.", "And 3+3?", "Six."),                                                 # 2
    {"messages": [{"role": "user", "content": "Name a colour."}, {"role": "bot", "content": "Red."}]},  # 3
    {"messages": [{"role": "user"}, {"role": "assistant", "content": "Nothing to answer."}]},           # 4
    {"messages": [{"role": "user", "content": "Capital of Peru?"},
                  {"role": "assistant", "content": "Lima.", "confidence": 0.9}]},                      # 5
    {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hey."},
                  {"role": "system", "content": "Be kind."}, {"role": "user", "content": "Bye"},
                  {"role": "assistant", "content": "See you."}]},                                      # 6
    {"messages": [{"role": "user", "content": "Tell a joke."}, {"role": "assistant", "content": "Knock knock."},
                  {"role": "assistant", "content": "Who is there?"}]},                                  # 7
    {"messages": [{"role": "system", "content": "Poet."}, {"role": "assistant", "content": "Roses are red."},
                  {"role": "user", "content": "More."}, {"role": "assistant", "content": "Violets blue."}]},  # 8
    {"messages": [{"role": "user", "content": "Is anyone there?"}]},                                   # 9
    chat("   ", "I did not catch that."),                                                              # 10
    {"messages": [{"role": "user", "content": "Spell cat."},
                  {"role": "assistant", "content": "C-A-T.", "weight": 2}]},                          # 11
    {"messages": [{"role": "user", "content": "Spell dog.", "weight": 1.0},
                  {"role": "assistant", "content": "D-O-G."}]},                                        # 12
    {"messages": [{"role": "user", "content": "Spell cow."},
                  {"role": "assistant", "content": "C-O-W.", "weight": 0}]},                          # 13
    chat("Count to two.", "1, 2.", "Now to three?"),                                                   # 14
    tool_row([call("c1")], [result("c1")]),                                                            # 15
    tool_row([call("c1", arguments="{not json")], [result("c1")], answer="Sunny."),                    # 16
    tool_row([call("c1")], [result("c9")], answer="Rainy."),                                           # 17
    {"messages": [{"role": "user", "content": "Weather?"},
                  {"role": "assistant", "content": None, "tool_calls": [call("c1")]},
                  {"role": "user", "content": "Never mind."},
                  {"role": "assistant", "content": "All right."}], "tools": TOOLS},                   # 18
    tool_row([call("c1", name="get_time")], [result("c1")], answer="Noon."),                           # 19
    tool_row([call("c1")], [result("c1")], tools=None, answer="Windy."),                               # 20
    tool_row([call("c1"), call("c1")], [result("c1"), result("c1", "19C")], answer="Warm."),          # 21
    tool_row([call("c1")], [{"role": "tool", "content": "18C"}], answer="Cloudy."),                   # 22
    {"messages": [{"role": "user", "content": "Weather in Oslo?"},
                  {"role": "assistant", "content": None,
                   "function_call": {"name": "get_weather", "arguments": "{}"}},
                  {"role": "function", "name": "get_weather", "content": "-2C"},
                  {"role": "assistant", "content": "Freezing."}], "tools": TOOLS},                    # 23
    chat("Name a small cat.", "A kitten."),                                                            # 24
    chat("Name a big cat.", "A lion."),                                                                # 25
    user_parts({"type": "file", "file": {"file_id": "file-1"}}),                                       # 26
    chat("Name a wild cat.", "A lynx."),                                                               # 27
    {"messages": []},                                                                                  # 28
    {"messages": "Hello, assistant."},                                                                 # 29
    {"messages": [{"role": "user", "content": 42}, {"role": "assistant", "content": "Forty-two."}]},   # 30
    chat("Name a striped cat.", "A tiger."),                                                           # 31
]

EXPECTED = {
    (3, "bad_role", "$.messages[1].role"),
    (4, "missing_field", "$.messages[0].content"),
    (5, "unknown_key", "$.messages[1].confidence"),
    (6, "misplaced_system", "$.messages[2].role"),
    (7, "role_order", "$.messages[2].role"),
    (8, "role_order", "$.messages[1].role"),
    (9, "no_assistant", "$.messages"),
    (10, "empty_content", "$.messages[0].content"),
    (11, "bad_weight", "$.messages[1].weight"),
    (12, "bad_weight", "$.messages[0].weight"),
    (13, "nothing_to_train", "$.messages"),
    (14, "ends_without_answer", "$.messages[2].role"),
    (16, "bad_tool_arguments", "$.messages[1].tool_calls[0].function.arguments"),
    (17, "unknown_tool_call_id", "$.messages[2].tool_call_id"),
    (18, "unanswered_tool_call", "$.messages[1].tool_calls"),
    (19, "unknown_tool", "$.messages[1].tool_calls[0].function.name"),
    (20, "no_tools_declared", "$.messages[1].tool_calls[0].function.name"),
    (21, "duplicate_tool_call_id", "$.messages[1].tool_calls[1].id"),
    (22, "missing_field", "$.messages[2].tool_call_id"),
    (23, "legacy_function_call", "$.messages[1].function_call"),
    (23, "legacy_function_call", "$.messages[2].role"),
    (26, "bad_content_part", "$.messages[0].content[1].type"),
    (28, "empty_conversation", "$.messages"),
    (29, "wrong_type", "$.messages"),
    (30, "wrong_type", "$.messages[0].content"),
}


def test_each_planted_conversation_defect_once(tmp_path: Path) -> None:
    report = run(write_rows(tmp_path / "chat.jsonl", ROWS))
    assert_exactly(report, EXPECTED)
    assert report.files[0].format == "openai"
    warnings_only = {5, 14, 20, 23}
    rejected_lines = {line for line, _, _ in EXPECTED} - warnings_only
    assert report.rows_rejected == len(rejected_lines)
    assert report.rows_accepted == len(ROWS) - len(rejected_lines)


def test_a_good_tool_conversation_passes(tmp_path: Path) -> None:
    report = run(write_rows(tmp_path / "tools.jsonl", [tool_row([call("c1")], [result("c1")])]))
    assert report.findings.total == 0 and report.exit_code == 0


