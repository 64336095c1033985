"""LLaMA-Factory's v1 data format: each message's `content` is a list of parts
`{"type": "text" | "reasoning" | "tool_call", "value": str}` with a per-message `loss_weight`, tool
results are `tool` messages of text parts, `tools` is a JSON string of tool definitions, and a
preference row is two whole conversations, `chosen_messages` and `rejected_messages`, that share
their prompt.

`reasoning` parts are the message's `reasoning_content`; a `tool_call` part's value is the JSON of
`{"name", "arguments"}` (ids `call_<n>`, since the format has none; a tool message answers the oldest
open call). `loss_weight` is OpenAI's `weight`: 1.0 or 0.0 on any message (0.0 keeps it out
of the loss); without one an assistant message is trained (1.0) and any other is not (0.0), as LLaMA-Factory's
own converters write them.

Media are parts too, as LLaMA-Factory v1's converters write them from the `images`/`videos`/`audios` columns:
`{"type": "image_url" | "video_url" | "audio_url", "value": path or URL}` (`image`, `video`, `audio` are read as
well). Each becomes a placeholder in the message text and an item of `record["media"]`, and is written back as
the part it was.

A row and the record it becomes:

    >>> read({"messages": [
    ...     {"role": "user", "content": [{"type": "text", "value": "2+2?"}], "loss_weight": 0.0},
    ...     {"role": "assistant", "content": [{"type": "reasoning", "value": "Add them."},
    ...                                       {"type": "text", "value": "4"}], "loss_weight": 1.0}]}, Options())
    {'messages': [{'role': 'user', 'content': '2+2?'},
                  {'role': 'assistant', 'content': '4', 'reasoning_content': 'Add them.'}]}
    >>> record = read({"messages": [
    ...     {"role": "user", "content": [{"type": "image_url", "value": "1.jpg"}, {"type": "text", "value": "Who?"}]},
    ...     {"role": "assistant", "content": [{"type": "text", "value": "Messi."}]}]}, Options(media_root="/data"))
    >>> record["messages"][0], record["media"]
    ({'role': 'user', 'content': '<image>Who?'},
     [{'type': 'image', 'path': '1.jpg', 'root': '/data', 'at': '$.messages[0].content[0].value'}])
    >>> write(record, Options())["messages"][0]["content"]
    [{'type': 'image_url', 'value': '1.jpg'}, {'type': 'text', 'value': 'Who?'}]
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from prep.core import media as md
from prep.core import records as r

NAME = "lf_parts"
KINDS = ("chat", "preference")
MEDIA = "files"  # how the writer takes media (formats.from_records): paths relative to the output's folder
_ROLES = ("system", "user", "assistant", "tool")
_KEYS = frozenset({"role", "content", "loss_weight"})
# LLaMA-Factory v1's media part types (and the bare type names), and the part each type is written as.
_MEDIA_PARTS = {"image_url": "image", "video_url": "video", "audio_url": "audio", **{k: k for k in md.MEDIA_TYPES}}
_PART_OF = {"image": "image_url", "video": "video_url", "audio": "audio_url"}


@dataclass
class Options:
    media_root: str | None = None  # where relative media paths are resolved


def detect(row: dict[str, Any]) -> bool:
    if isinstance(row.get("chosen_messages"), list):
        return True
    messages = row.get("messages")
    if not isinstance(messages, list) or not messages or not isinstance(messages[0], dict):
        return False
    content = messages[0].get("content")
    return isinstance(content, list) and bool(content) and isinstance(content[0], dict) and "value" in content[0]


def read(row: Any, options: Options) -> r.Record:
    row = r.require_object(row, NAME)
    tools = r.tools(row.get("tools"), "$.tools")
    root = options.media_root
    if row.get("chosen_messages") is not None or row.get("rejected_messages") is not None:
        got: dict[str, list[md.Item]] = {"chosen_messages": [], "rejected_messages": []}
        chosen = _messages(r.get(row, "chosen_messages"), "$.chosen_messages", got["chosen_messages"], root)
        rejected = _messages(r.get(row, "rejected_messages"), "$.rejected_messages", got["rejected_messages"], root)
        prompt, chosen, rejected = r.split_common_prefix(chosen, rejected)
        for key, side in (("chosen_messages", chosen), ("rejected_messages", rejected)):
            if not side or side[0]["role"] != "assistant":
                raise r.row_error("bad_preference",
                                  f"{key} must continue the shared prompt with an assistant answer", f"$.{key}",
                                  hint="give both conversations the same prompt and a different answer")
        record = r.with_tools({"prompt": prompt, "chosen": chosen, "rejected": rejected}, tools)
        if got["chosen_messages"] or got["rejected_messages"]:  # the shared prompt's media once, then each answer's
            shared = len(md.used({"prompt": prompt}))
            record["media"] = got["chosen_messages"] + got["rejected_messages"][shared:]
            md.agree(record, record["media"])
        return record
    items: list[md.Item] = []
    messages = r.require_messages(_messages(r.get(row, "messages"), "$.messages", items, root), "$.messages")
    record = r.with_tools({"messages": messages}, tools)
    if items:
        record["media"] = items
        md.agree(record, items)
    return record


def _messages(value: Any, path: str, media: list[md.Item], root: str | None) -> list[r.Message]:
    items = r.json_value(value, path, list)
    out: list[r.Message] = []
    calls = 0
    open_calls: list[str] = []
    for i, item in enumerate(items):
        where = f"{path}[{i}]"
        item = r.json_value(item, where, dict)
        role = r.get(item, "role", where)
        if role not in _ROLES:
            words, hint = r.unknown_role(role, _ROLES)
            raise r.row_error("bad_role", words, f"{where}.role", hint=hint)
        for key in item:
            if key not in _KEYS:
                r.note_dropped(key)
        parts = r.json_value(r.get(item, "content", where), f"{where}.content", list)
        text, reasoning, tool_calls = [], [], []
        for k, part in enumerate(parts):
            pw = f"{where}.content[{k}]"
            if not isinstance(part, dict) or not isinstance(part.get("value"), str):
                raise r.row_error("bad_content_part", "a content part is {\"type\": ..., \"value\": text}", pw,
                                  hint="write each part as {\"type\": \"text\", \"value\": \"...\"}")
            kind = part.get("type")
            if kind == "text":
                text.append(part["value"])
            elif kind in _MEDIA_PARTS:
                text.append(md.PLACEHOLDERS[_MEDIA_PARTS[kind]])
                media.append(md.reference(_MEDIA_PARTS[kind], part["value"], f"{pw}.value", root))
            elif kind == "reasoning" and role == "assistant":
                reasoning.append(part["value"])
            elif kind == "tool_call" and role == "assistant":
                for name, args in r.named_calls(part["value"], f"{pw}.value", "a tool_call part's value", many=False):
                    call_id = f"call_{calls}"
                    calls += 1
                    open_calls.append(call_id)
                    tool_calls.append(r.tool_call(name, args, call_id))
            else:
                raise r.row_error("unsupported_content", f"a {role} message cannot hold a content part of type "
                                  f"{kind!r}", f"{pw}.type",
                                  hint="prep reads text, image_url, video_url and audio_url parts, and "
                                  "reasoning and tool_call parts of assistant messages")
        extra: dict[str, Any] = {}
        if reasoning:
            extra["reasoning_content"] = "".join(reasoning)
        if tool_calls:
            extra["tool_calls"] = tool_calls
        if role == "tool":
            extra["tool_call_id"] = open_calls.pop(0) if open_calls else None
        weight = item.get("loss_weight")
        if weight is not None:
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight not in (0, 1):
                raise r.row_error("bad_weight", f"loss_weight {weight!r} on a {role} message: prep trains a message "
                                  "fully (1.0) or not at all (0.0)", f"{where}.loss_weight",
                                  hint="use 1.0 to train the message, 0.0 to keep it out of the loss")
            if weight != (role == "assistant"):  # kept where not the role's default, which LLaMA-Factory writes
                extra["weight"] = int(weight)
        out.append(r.message(role, "".join(text), **extra))
    return out


def _dump(messages: list[r.Message], media: dict[int, list[md.Item]]) -> list[dict[str, Any]]:
    """Canonical messages as v1 parts; `media`: the items of the messages that hold placeholders, by index."""
    out = []
    for i, m in enumerate(messages):
        role = "system" if m["role"] == "developer" else m["role"]
        if m["role"] == "developer":
            r.note_dropped("role developer (written as system)")
        if m.get("name"):
            r.note_dropped("name")
        parts = []
        if m.get("reasoning_content") is not None:
            parts.append({"type": "reasoning", "value": m["reasoning_content"]})
        if i in media:
            items = iter(media[i])
            parts += [{"type": "text", "value": chunk} if kind == "text" else
                      {"type": _PART_OF[kind], "value": md.written(next(items))}
                      for kind, chunk in md.pieces(m["content"])]
        elif m["content"] or not m.get("tool_calls"):
            parts.append({"type": "text", "value": m["content"]})
        for k, call in enumerate(m.get("tool_calls") or ()):
            if call.get("id") != f"call_{_ordinal(messages, i, k)}":
                r.note_dropped("tool_calls.id")  # the format numbers calls itself
            parts.append({"type": "tool_call", "value": json.dumps(
                {"name": call["function"]["name"], "arguments": call["function"]["arguments"]}, ensure_ascii=False)})
        weight = float(m.get("weight", 1 if role == "assistant" else 0))
        out.append({"role": role, "content": parts, "loss_weight": weight})
    return out


def _ordinal(messages: list[r.Message], i: int, k: int) -> int:
    """The number the reader will give call `k` of message `i`: calls are numbered through the conversation."""
    return sum(len(m.get("tool_calls") or ()) for m in messages[:i]) + k


def write(record: r.Record, options: Options) -> dict[str, Any]:
    kind = r.kind_of(record)
    if kind in ("text", "feedback"):
        raise r.not_expressible(NAME, "plain text or KTO feedback records", hint="convert them to trl")
    where = md.per_message(record) if record.get("media") else {}

    def side(name: str, start: int = 0) -> dict[int, list[md.Item]]:
        return {start + i: items for (s, i), items in where.items() if s == name}

    if kind == "chat":
        out: dict[str, Any] = {"messages": _dump(record["messages"], side("messages"))}
    else:
        n = len(record["prompt"])
        out = {"chosen_messages": _dump(record["prompt"] + record["chosen"], {**side("prompt"), **side("chosen", n)}),
               "rejected_messages": _dump(record["prompt"] + record["rejected"],
                                          {**side("prompt"), **side("rejected", n)})}
    if record.get("tools"):
        out["tools"] = json.dumps(record["tools"], ensure_ascii=False)
    return out
