"""TRL dataset types: language modeling (`text` or `messages`), prompt-completion,
preference (`prompt`/`chosen`/`rejected`, or implicit prompt) and unpaired preference
(`prompt`/`completion`/`label`). Standard (string) fields become a user prompt and an assistant
answer; conversational fields are message lists. Written out conversational, arguments as objects.

A row and the record it becomes:

    >>> read({"prompt": "2+2?", "chosen": "4", "rejected": "5"}, Options())
    {'prompt': [{'role': 'user', 'content': '2+2?'}], 'chosen': [{'role': 'assistant', 'content': '4'}],
     'rejected': [{'role': 'assistant', 'content': '5'}]}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prep.core import records as r

NAME = "trl"
KINDS = ("chat", "preference", "feedback", "text")


@dataclass
class Options:
    pass


def detect(row: dict[str, Any]) -> bool:
    return "prompt" in row and any(k in row for k in ("completion", "chosen")) or ("chosen" in row and "rejected" in row)


def _side(value: Any, path: str, role: str) -> list[r.Message]:
    if isinstance(value, str):
        return [r.message(role, value)]
    return r.parse_messages(value, path)


def read(row: Any, options: Options) -> r.Record:
    row = r.require_object(row, "trl")
    tools = r.tools(row.get("tools"), "$.tools")
    if row.get("messages") is not None:
        messages = r.require_messages(r.parse_messages(row["messages"], "$.messages"), "$.messages")
        return {**r.with_tools({"messages": messages}, tools), **r.media(row)}
    if row.get("chosen") is not None or row.get("rejected") is not None:
        chosen = _side(r.get(row, "chosen"), "$.chosen", "assistant")
        rejected = _side(r.get(row, "rejected"), "$.rejected", "assistant")
        if row.get("prompt") is not None:
            prompt = _side(row["prompt"], "$.prompt", "user")
        elif isinstance(row["chosen"], list) and isinstance(row["rejected"], list):
            prompt, chosen, rejected = r.split_common_prefix(chosen, rejected)
        else:
            raise r.row_error("missing_field", "required field 'prompt' is missing", "$.prompt",
                              hint="string chosen/rejected need a prompt; an implicit prompt needs conversations")
        return r.with_tools({"prompt": prompt, "chosen": chosen, "rejected": rejected}, tools)
    if row.get("completion") is not None:
        prompt = _side(r.get(row, "prompt"), "$.prompt", "user")
        completion = _side(row["completion"], "$.completion", "assistant")
        if row.get("label") is not None:
            return r.with_tools({"prompt": prompt, "completion": completion,
                                 "label": r.boolean(row["label"], "$.label")}, tools)
        return r.with_tools({"messages": r.require_messages(prompt + completion, "$")}, tools)
    if row.get("text") is not None:
        return {"text": r.text(row["text"], "$.text")}
    raise r.row_error("missing_field", "no TRL fields (messages, text, prompt/completion, prompt/chosen/rejected)",
                      "$", hint="give the row one of the TRL dataset layouts")


def write(record: r.Record, options: Options) -> dict[str, Any]:
    out = {k: record[k] for k in ("messages", "text", "prompt", "chosen", "rejected", "completion", "label")
           if k in record}
    out.update({k: record[k] for k in ("tools", *r.MEDIA) if record.get(k)})
    return out
