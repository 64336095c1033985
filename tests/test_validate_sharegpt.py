"""`prep validate`, ShareGPT rules (as LLaMA-Factory reads the format): turn tags, the human/gpt
positions, turns that do not pair up, function calls and observations. One planted defect per row."""

from __future__ import annotations

import json
from pathlib import Path

from validate_util import assert_exactly, run, write_rows

TOOLS = json.dumps([{"name": "lookup", "description": "Look a word up", "parameters": {"type": "object"}}])


def conv(*turns: tuple[str, str], **extra: object) -> dict:
    return {"conversations": [{"from": f, "value": v} for f, v in turns], **extra}


CALL = json.dumps({"name": "lookup", "arguments": {"word": "sonder"}})

ROWS = [
    conv(("human", "Hi!"), ("gpt", "Hello, what can I do?")),                                              # 1
    conv(("human", "Define sonder."), ("function_call", CALL), ("observation", '{"meaning": "..."}'),
         ("gpt", "Sonder is the sense that strangers have lives as vivid as yours."),
         system="You can look words up.", tools=TOOLS),                                                    # 2
    conv(("human", "Name a fruit."), ("bot", "Pear.")),                                                    # 3
    {"conversations": [{"from": "human"}, {"from": "gpt", "value": "You said nothing."}]},                 # 4
    conv(("human", "One."), ("human", "Two."), ("gpt", "Three.")),                                         # 5
    conv(("human", "Ping."), ("gpt", "Pong."), ("human", "Ping again.")),                                  # 6
    conv(("human", "Look it up."), ("gpt", "Looking."), ("observation", "found"), ("gpt", "Found it.")),   # 7
    conv(("human", "Define petrichor."), ("function_call", "lookup(petrichor)"),
         ("observation", "smell of rain"), ("gpt", "The smell of rain."), tools=TOOLS),                    # 8
    conv(("human", "Hello."), ("gpt", "Hi."), ("system", "Now be formal."), ("human", "Greetings."),
         ("gpt", "Good day.")),                                                                            # 9
    {"conversations": []},                                                                                 # 10
    conv(("human", "Say nothing."), ("gpt", "")),                                                          # 11
    conv(("human", "Define hygge."), ("function_call", json.dumps({"name": "search", "arguments": {}})),
         ("observation", "cosiness"), ("gpt", "Cosiness."), tools=TOOLS),                                  # 12
    conv(("human", "Colour of the sky?"), ("gpt", "Blue."), system=["not", "a", "string"]),                # 13
]

EXPECTED = {
    (3, "bad_role", "$.conversations[1].from"),
    (4, "missing_field", "$.conversations[0].value"),
    (5, "role_order", "$.conversations[1].from"),
    (6, "unpaired_turn", "$.conversations[2].from"),
    (7, "role_order", "$.conversations[2].from"),
    (8, "bad_tool_call", "$.conversations[1].value"),
    (9, "misplaced_system", "$.conversations[2].from"),
    (10, "empty_conversation", "$.conversations"),
    (11, "empty_content", "$.conversations[1].value"),
    (12, "unknown_tool", "$.conversations[1].value"),
    (13, "wrong_type", "$.system"),
}


def test_each_planted_sharegpt_defect_once(tmp_path: Path) -> None:
    report = run(write_rows(tmp_path / "sharegpt.jsonl", ROWS))
    assert_exactly(report, EXPECTED)
    assert report.files[0].format == "sharegpt"
    assert report.rows_rejected == len(EXPECTED) and report.rows_accepted == len(ROWS) - len(EXPECTED)


def test_lenient_role_content_keys_point_at_their_own_fields(tmp_path: Path) -> None:
    rows = [{"conversations": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hey"}]},
            {"conversations": [{"role": "user", "content": "A"}, {"role": "user", "content": "B"},
                               {"role": "assistant", "content": "C"}]}]
    report = run(write_rows(tmp_path / "sharegpt_roles.jsonl", rows), format="sharegpt")
    assert_exactly(report, {(2, "role_order", "$.conversations[1].role")})
