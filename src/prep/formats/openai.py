"""OpenAI chat fine-tuning JSONL: `messages` (+ `tools`), the DPO layout
(`input` / `preferred_output` / `non_preferred_output`), and `messages` + `label` for KTO rows
(LLaMA-Factory's kto_en_demo layout). Tool-call arguments are JSON strings on disk.

A row and the record it becomes:

    >>> read({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}, Options())
    {'messages': [{'role': 'user', 'content': 'Hi'}, {'role': 'assistant', 'content': 'Hello!'}]}
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from prep.core import records as r

NAME = "openai"
KINDS = ("chat", "preference", "feedback")


@dataclass
class Options:
    messages: str = "messages"
    tools: str = "tools"
    label: str = "label"


def detect(row: dict[str, Any]) -> bool:
    return isinstance(row.get("messages"), list) or ("input" in row and "preferred_output" in row)


def read(row: Any, options: Options) -> r.Record:
    row = r.require_object(row, "openai")
    if options.messages not in row and "preferred_output" in row:
        return _read_dpo(row)
    messages = r.require_messages(r.parse_messages(r.get(row, options.messages), f"$.{options.messages}"),
                                  f"$.{options.messages}")
    tools = r.tools(row.get(options.tools), f"$.{options.tools}")
    if row.get(options.label) is not None:
        label = r.boolean(row[options.label], f"$.{options.label}")
        if messages[-1]["role"] != "assistant":
            raise r.row_error("bad_feedback", "the last message of a labelled row must be the assistant's completion",
                              f"$.{options.messages}[{len(messages) - 1}]")
        record = {"prompt": messages[:-1], "completion": messages[-1:], "label": label}
    else:
        record = {"messages": messages}
    return {**r.with_tools(record, tools), **r.media(row)}


def _read_dpo(row: dict[str, Any]) -> r.Record:
    given = r.json_value(r.get(row, "input"), "$.input", dict)
    prompt = r.parse_messages(r.get(given, "messages", "$.input"), "$.input.messages")
    sides = {}
    for key in ("preferred_output", "non_preferred_output"):
        side = r.parse_messages(r.get(row, key), f"$.{key}")
        if len(side) != 1 or side[0]["role"] != "assistant":
            raise r.row_error("bad_preference", f"{key} must hold exactly one assistant message", f"$.{key}",
                              hint="give one {\"role\": \"assistant\", \"content\": ...} per side")
        sides[key] = side
    return r.with_tools({"prompt": prompt, "chosen": sides["preferred_output"],
                         "rejected": sides["non_preferred_output"]}, r.tools(given.get("tools"), "$.input.tools"))


def dump_messages(messages: list[r.Message]) -> list[dict[str, Any]]:
    """Canonical messages as OpenAI writes them: tool-call arguments encoded as JSON text."""
    out = []
    for m in messages:
        if "tool_calls" in m:
            m = {**m, "tool_calls": [{**c, "function": {**c["function"],
                                                          "arguments": json.dumps(c["function"]["arguments"],
                                                                                  ensure_ascii=False)}}
                                     for c in m["tool_calls"]]}
        out.append(m)
    return out


def write(record: r.Record, options: Options) -> dict[str, Any]:
    kind = r.kind_of(record)
    tools = {options.tools: record["tools"]} if record.get("tools") else {}
    tools.update({k: record[k] for k in r.MEDIA if record.get(k)})
    if kind == "chat":
        return {options.messages: dump_messages(record["messages"]), **tools}
    if kind == "preference":
        return {"input": {"messages": dump_messages(record["prompt"]), **tools},
                "preferred_output": dump_messages(record["chosen"]),
                "non_preferred_output": dump_messages(record["rejected"])}
    if kind == "feedback":
        return {options.messages: dump_messages(record["prompt"] + record["completion"]),
                options.label: record["label"], **tools}
    raise r.not_expressible(NAME, "plain text (pretraining) records", hint="convert text records to trl or text")
