"""ShareGPT as LLaMA-Factory reads it: `conversations` of {from, value} turns (human, gpt,
function_call, observation, system), optional `system` and `tools` columns, the preference
variant (`chosen`/`rejected` single turns) and a boolean KTO tag. Column names and tags are
options, as in a `dataset_info.json` entry.

Reasoning has no field of its own here: the writer puts it before the answer as
`<think>\n…\n</think>\n\n` (what LLaMA-Factory's reasoning templates read), and `--split-think`
reads it back into `reasoning_content`. A `function_call` turn becomes an assistant message with `tool_calls` (ids
`call_<n>`, since ShareGPT has none); an `observation` becomes a `tool` message answering the oldest open call.

Media are LLaMA-Factory's `images`/`videos`/`audios` columns (renamed by a registry's `columns`) with
`<image>`/`<video>`/`<audio>` placeholders in the turns, read and written as in alpaca (LLaMA-Factory's mllm_demo).

A row and the record it becomes:

    >>> read({"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}],
    ...       "system": "Be brief."}, Options())
    {'messages': [{'role': 'system', 'content': 'Be brief.'}, {'role': 'user', 'content': 'Hi'},
                  {'role': 'assistant', 'content': 'Hello!'}]}
    >>> read({"conversations": [{"from": "human", "value": "<video>What happens?"}, {"from": "gpt", "value": "A goal."}],
    ...       "videos": ["mllm_demo_data/1.mp4"]}, Options(media_root="/data"))["media"]
    [{'type': 'video', 'path': 'mllm_demo_data/1.mp4', 'root': '/data', 'at': '$.videos[0]'}]
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from prep.core import records as r
from prep.formats.alpaca import media_columns, media_of

NAME = "sharegpt"
KINDS = ("chat", "preference", "feedback")
MEDIA = "files"  # how the writer takes media (formats.from_records): paths relative to the output's folder


@dataclass
class Options:
    messages: str | None = "conversations"
    system: str | None = "system"
    tools: str | None = "tools"
    chosen: str | None = "chosen"
    rejected: str | None = "rejected"
    kto_tag: str | None = "label"
    images: str | None = "images"
    videos: str | None = "videos"
    audios: str | None = "audios"
    role_tag: str = "from"
    content_tag: str = "value"
    user_tag: str = "human"
    assistant_tag: str = "gpt"
    observation_tag: str = "observation"
    function_tag: str = "function_call"
    system_tag: str = "system"
    media_root: str | None = None  # where relative media paths are resolved
    # The spellings seen in ShareGPT dumps besides LLaMA-Factory's own, accepted by default.
    lenient: bool = True


_ALIASES = {"user": "human", "assistant": "gpt", "chatgpt": "gpt", "model": "gpt", "bing": "gpt", "bard": "gpt",
            "tool": "observation", "function": "function_call"}


def detect(row: dict[str, Any]) -> bool:
    return isinstance(row.get("conversations"), list)


def read(row: Any, options: Options) -> r.Record:
    row = r.require_object(row, "sharegpt")
    path = f"$.{options.messages}"
    turns = r.json_value(r.get(row, options.messages), path, list)
    o = options
    if o.lenient and turns and isinstance(turns[0], dict) and o.role_tag not in turns[0] and "role" in turns[0]:
        o = Options(**{**vars(options), "role_tag": "role", "content_tag": "content"})
    messages: list[r.Message] = []
    system = row.get(o.system) if o.system else None
    if system:
        messages.append(r.message("system", r.text(system, f"$.{o.system}")))
    state = _Calls()
    tags = (o.user_tag, o.assistant_tag, o.observation_tag, o.function_tag, o.system_tag)
    for i, turn in enumerate(turns):
        messages.extend(_turn(turn, path, o, state, tags, i))
    tools = r.tools(row.get(o.tools), f"$.{o.tools}") if o.tools else None

    if o.chosen and o.rejected and row.get(o.chosen) is not None and row.get(o.rejected) is not None:
        sides = [_turn(row[col], f"$.{col}", o, state.copy(), tags) for col in (o.chosen, o.rejected)]
        for col, side in zip((o.chosen, o.rejected), sides, strict=True):
            if side[0]["role"] != "assistant":
                raise r.row_error("bad_preference", f"{col} must be an assistant turn ({o.assistant_tag} or "
                                  f"{o.function_tag})", f"$.{col}",
                                  hint="give the two candidate answers as assistant turns")
        record: r.Record = {"prompt": messages, "chosen": sides[0], "rejected": sides[1]}
    elif o.kto_tag and row.get(o.kto_tag) is not None:
        label = r.boolean(row[o.kto_tag], f"$.{o.kto_tag}")
        r.require_messages(messages, path)
        if messages[-1]["role"] != "assistant":
            raise r.row_error("bad_feedback", "the last turn of a labelled row must be the assistant's answer", path)
        record = {"prompt": messages[:-1], "completion": messages[-1:], "label": label}
    else:
        record = {"messages": r.require_messages(messages, path)}
    return media_of(row, r.with_tools(record, tools), o)


class _Calls:
    """Numbers tool calls within one conversation and remembers which are still unanswered."""

    def __init__(self) -> None:
        self.count, self.open = 0, []

    def copy(self) -> _Calls:
        other = _Calls()
        other.count, other.open = self.count, list(self.open)
        return other


def _turn(turn: Any, path: str, o: Options, calls: _Calls, tags: tuple[str, ...],
          index: int | None = None) -> list[r.Message]:
    """The message of the turn at `path` (`path[index]` in the turn list); `tags`: the five tags of `o`. The
    turn's path is spelled out only where it is needed: a tool call, or a turn that does not fit."""
    tag = turn.get(o.role_tag) if isinstance(turn, dict) else None
    value = turn.get(o.content_tag) if tag is not None else None
    if not isinstance(value, str):
        where = _where(path, index)
        turn = r.json_value(turn, where, dict)
        tag = r.get(turn, o.role_tag, where)
        value = r.text(r.get(turn, o.content_tag, where), f"{where}.{o.content_tag}")
    if len(turn) > 2:  # a turn is its tag and text; any other key (a `weight`, a `loss_weight`) is not carried
        for key in turn:
            if key not in (o.role_tag, o.content_tag):
                r.note_dropped(key)
    if o.lenient and isinstance(tag, str) and tag not in tags:
        tag = _ALIASES.get(tag, tag)
    if tag == o.user_tag:
        return [r.message("user", value)]
    if tag == o.assistant_tag:
        return [r.message("assistant", value)]
    if tag == o.system_tag:
        return [r.message("system", value)]
    if tag == o.observation_tag:
        call_id = calls.open.pop(0) if calls.open else None
        return [r.message("tool", value, tool_call_id=call_id)]
    if tag == o.function_tag:
        tool_calls = []
        for name, args in r.named_calls(value, f"{_where(path, index)}.{o.content_tag}", f"{o.function_tag} value",
                                        many=True):
            call_id = f"call_{calls.count}"
            calls.count += 1
            calls.open.append(call_id)
            tool_calls.append(r.tool_call(name, args, call_id))
        return [r.message("assistant", "", tool_calls=tool_calls)]
    raise r.row_error("bad_role", f"unknown turn tag {tag!r}", f"{_where(path, index)}.{o.role_tag}",
                      hint=f"use {o.user_tag}, {o.assistant_tag}, {o.function_tag}, {o.observation_tag} or "
                      f"{o.system_tag}")


def _where(path: str, index: int | None) -> str:
    return path if index is None else f"{path}[{index}]"


def _dump_turns(messages: list[r.Message], o: Options, path: str) -> list[dict[str, str]]:
    turns = []
    for i, m in enumerate(messages):
        where = f"{path}[{i}]"
        if not r.default_weight(m):
            raise r.not_expressible(NAME, f"a weight {m['weight']} on a {m['role']} message (sharegpt trains every "
                                    "assistant turn and no other)", path=f"{where}.weight")
        if m.get("name"):
            raise r.not_expressible(NAME, "a message name", path=f"{where}.name")
        if m["role"] == "tool" and i > 0 and messages[i - 1]["role"] == "tool":
            raise r.not_expressible(NAME, "several tool results in a row (one observation per function call)",
                                    path=where)
        if m.get("tool_calls"):
            if m["content"]:
                raise r.not_expressible(NAME, "an assistant message with both text and tool calls", path=where)
            calls = [{"name": c["function"]["name"], "arguments": c["function"]["arguments"]} for c in m["tool_calls"]]
            value = json.dumps(calls[0] if len(calls) == 1 else calls, ensure_ascii=False)
            turns.append({o.role_tag: o.function_tag, o.content_tag: value})
            continue
        if m["role"] == "developer":
            r.note_dropped("role developer (written as system)")
        tag = {"user": o.user_tag, "assistant": o.assistant_tag, "tool": o.observation_tag,
               "system": o.system_tag, "developer": o.system_tag}[m["role"]]
        content = r.with_reasoning(m, NAME, where) if m["role"] == "assistant" else m["content"]
        turns.append({o.role_tag: tag, o.content_tag: content})
    return turns


def write(record: r.Record, options: Options) -> dict[str, Any]:
    kind = r.kind_of(record)
    if kind == "text":
        raise r.not_expressible(NAME, "plain text (pretraining) records", hint="convert text records to trl or text")
    o = options
    head = record["messages"] if kind == "chat" else record["prompt"]
    out: dict[str, Any] = {}
    if head and head[0]["role"] in ("system", "developer") and o.system:
        if head[0]["role"] == "developer":
            r.note_dropped("role developer (written as system)")
        out[o.system] = head[0]["content"]
        head = head[1:]
    if kind == "chat":
        out[o.messages] = _dump_turns(head, o, "$.messages")
    elif kind == "preference":
        out[o.messages] = _dump_turns(head, o, "$.prompt")
        for col, key in ((o.chosen, "chosen"), (o.rejected, "rejected")):
            if len(record[key]) != 1:
                raise r.not_expressible(NAME, f"a {key} side of more than one message", path=f"$.{key}")
            out[col] = _dump_turns(record[key], o, f"$.{key}")[0]
    else:
        out[o.messages] = _dump_turns(head + record["completion"], o, "$.prompt")
        out[o.kto_tag] = record["label"]
    if record.get("tools"):
        out[o.tools] = json.dumps([t["function"] for t in record["tools"]], ensure_ascii=False)
    return {**out, **media_columns(record, o)}
