"""OpenAI chat fine-tuning JSONL: `messages` (+ `tools`), the DPO layout
(`input` / `preferred_output` / `non_preferred_output`), and `messages` + `label` for KTO rows
(LLaMA-Factory's kto_en_demo layout). Tool-call arguments are JSON strings on disk.

Media are content parts (OpenAI's and Together's vision fine-tuning): `{"type": "image_url", "image_url": {"url"}}`,
`{"type": "video_url", "video_url": {"url"}}` (a data URL or an http(s) URL) and `{"type": "input_audio",
"input_audio": {"data": base64, "format": "wav"}}` (read as `data:audio/wav;base64,...`). Each becomes a placeholder in
the text and an item of `record["media"]`; the writer puts the parts back, every file inlined as a data URL.

A row and the record it becomes:

    >>> read({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}, Options())
    {'messages': [{'role': 'user', 'content': 'Hi'}, {'role': 'assistant', 'content': 'Hello!'}]}
    >>> record = read({"messages": [
    ...     {"role": "user", "content": [{"type": "text", "text": "What is it?"},
    ...                                  {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}}]},
    ...     {"role": "assistant", "content": "A cat."}]}, Options())
    >>> record["messages"][0], record["media"]
    ({'role': 'user', 'content': 'What is it?<image>'},
     [{'type': 'image', 'url': 'data:image/png;base64,iVBO', 'at': '$.messages[0].content[1].image_url.url'}])
    >>> write(record, Options())["messages"][0]["content"]
    [{'type': 'text', 'text': 'What is it?'}, {'type': 'image_url', 'image_url': {'url': 'data:image/png;base64,iVBO'}}]
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from prep.core import media as md
from prep.core import records as r

NAME = "openai"
KINDS = ("chat", "preference", "feedback")
MEDIA = "data_url"  # how the writer takes media (formats.from_records): every file inlined as a data URL


@dataclass
class Options:
    messages: str = "messages"
    tools: str = "tools"
    label: str = "label"
    media_root: str | None = None  # where relative media paths are resolved


def detect(row: dict[str, Any]) -> bool:
    return isinstance(row.get("messages"), list) or ("input" in row and "preferred_output" in row)


def read(row: Any, options: Options) -> r.Record:
    row = r.require_object(row, "openai")
    slots: list[md.Item | None] = []
    if options.messages not in row and "preferred_output" in row:
        return _with_media(_read_dpo(row, slots, options.media_root), slots, row, options.media_root)
    messages = r.require_messages(r.parse_messages(r.get(row, options.messages), f"$.{options.messages}", slots,
                                                   options.media_root), f"$.{options.messages}")
    tools = r.tools(row.get(options.tools), f"$.{options.tools}")
    if row.get(options.label) is not None:
        label = r.boolean(row[options.label], f"$.{options.label}")
        if messages[-1]["role"] != "assistant":
            raise r.row_error("bad_feedback", "the last message of a labelled row must be the assistant's completion",
                              f"$.{options.messages}[{len(messages) - 1}]")
        record = {"prompt": messages[:-1], "completion": messages[-1:], "label": label}
    else:
        record = {"messages": messages}
    return _with_media(r.with_tools(record, tools), slots, row, options.media_root)


def _with_media(record: r.Record, slots: list[md.Item | None], row: dict[str, Any], root: str | None) -> r.Record:
    """The media of the row's parts, or of LLaMA-Factory-style columns beside string content (`images` with
    `<image>` placeholders, as LLaMA-Factory's openai formatting holds them)."""
    lists = md.lists(row)
    if slots or lists:
        record["media"] = md.from_parts(record, slots, lists, root)
    return record


def _read_dpo(row: dict[str, Any], slots: list[md.Item | None], root: str | None) -> r.Record:
    given = r.json_value(r.get(row, "input"), "$.input", dict)
    prompt = r.parse_messages(r.get(given, "messages", "$.input"), "$.input.messages", slots, root)
    sides = {}
    for key in ("preferred_output", "non_preferred_output"):
        side = r.parse_messages(r.get(row, key), f"$.{key}", slots, root)
        if len(side) != 1 or side[0]["role"] != "assistant":
            raise r.row_error("bad_preference", f"{key} must hold exactly one assistant message", f"$.{key}",
                              hint="give one {\"role\": \"assistant\", \"content\": ...} per side")
        sides[key] = side
    return r.with_tools({"prompt": prompt, "chosen": sides["preferred_output"],
                         "rejected": sides["non_preferred_output"]}, r.tools(given.get("tools"), "$.input.tools"))


def dump_messages(messages: list[r.Message], media: dict[int, list[md.Item]] | None = None) -> list[dict[str, Any]]:
    """Canonical messages as OpenAI writes them: tool-call arguments encoded as JSON text, and a message holding
    media (`media`: its items by message index) as content parts."""
    out = []
    for i, m in enumerate(messages):
        if "tool_calls" in m:
            m = {**m, "tool_calls": [{**c, "function": {**c["function"],
                                                          "arguments": json.dumps(c["function"]["arguments"],
                                                                                  ensure_ascii=False)}}
                                     for c in m["tool_calls"]]}
        if media and i in media:
            items = iter(media[i])
            m = {**m, "content": [{"type": "text", "text": chunk} if kind == "text" else _part(next(items))
                                  for kind, chunk in md.pieces(m["content"])]}
        out.append(m)
    return out


def _part(item: md.Item) -> dict[str, Any]:
    """A medium as OpenAI's content part; audio is `input_audio`, which holds base64 data, not a URL."""
    url = item["url"]
    if item["type"] == "image":
        return {"type": "image_url", "image_url": {"url": url}}
    if item["type"] == "video":
        return {"type": "video_url", "video_url": {"url": url}}
    head, _, data = url.partition(",")
    if not (head.startswith("data:audio/") and head.endswith(";base64")):
        raise r.not_expressible(NAME, f"audio at a URL ({md.location(item)}); input_audio holds base64 data",
                                item.get("at", "$.media"), hint="download the audio and convert the local file")
    form = head[len("data:audio/"):-len(";base64")]
    return {"type": "input_audio", "input_audio": {"data": data, "format": _AUDIO_FORMATS.get(form, form)}}


# Audio MIME subtypes and the format names OpenAI's input_audio takes.
_AUDIO_FORMATS = {"mpeg": "mp3", "x-wav": "wav", "wave": "wav", "vnd.wave": "wav"}


def write(record: r.Record, options: Options) -> dict[str, Any]:
    kind = r.kind_of(record)
    tools = {options.tools: record["tools"]} if record.get("tools") else {}
    where = md.per_message(record) if record.get("media") else {}

    def side(name: str) -> dict[int, list[md.Item]]:
        return {i: items for (s, i), items in where.items() if s == name}

    if kind == "chat":
        return {options.messages: dump_messages(record["messages"], side("messages")), **tools}
    if kind == "preference":
        return {"input": {"messages": dump_messages(record["prompt"], side("prompt")), **tools},
                "preferred_output": dump_messages(record["chosen"], side("chosen")),
                "non_preferred_output": dump_messages(record["rejected"], side("rejected"))}
    if kind == "feedback":
        n = len(record["prompt"])
        both = {**side("prompt"), **{n + i: items for i, items in side("completion").items()}}
        return {options.messages: dump_messages(record["prompt"] + record["completion"], both),
                options.label: record["label"], **tools}
    raise r.not_expressible(NAME, "plain text (pretraining) records", hint="convert text records to trl or text")
