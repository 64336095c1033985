"""TRL dataset types: language modeling (`text` or `messages`), prompt-completion,
preference (`prompt`/`chosen`/`rejected`, or implicit prompt) and unpaired preference
(`prompt`/`completion`/`label`). Standard (string) fields become a user prompt and an assistant
answer; conversational fields are message lists. Written out conversational, arguments as objects.

Media as TRL's vision datasets hold them: an `images` column (and `videos`, `audios`) with messages whose content
is a list of parts, `{"type": "text", "text": ...}` and a bare `{"type": "image"}` for each image, in order; parts
that name their medium (OpenAI's `image_url`, transformers' `{"type": "image", "url": ...}`) are read too, and
Together's prompt/completion rows, whose `prompt` is a list of content parts, are a user message. A record with
media is written with every message as parts and file paths in the columns.

A row and the record it becomes:

    >>> read({"prompt": "2+2?", "chosen": "4", "rejected": "5"}, Options())
    {'prompt': [{'role': 'user', 'content': '2+2?'}], 'chosen': [{'role': 'assistant', 'content': '4'}],
     'rejected': [{'role': 'assistant', 'content': '5'}]}
    >>> record = read({"images": ["cat.jpg"], "messages": [
    ...     {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]},
    ...     {"role": "assistant", "content": [{"type": "text", "text": "A cat."}]}]}, Options(media_root="/data"))
    >>> record["messages"][0], record["media"]
    ({'role': 'user', 'content': '<image>What is it?'},
     [{'type': 'image', 'path': 'cat.jpg', 'root': '/data', 'at': '$.images[0]'}])
    >>> write(record, Options())
    {'messages': [{'role': 'user', 'content': [{'type': 'image'}, {'type': 'text', 'text': 'What is it?'}]},
                  {'role': 'assistant', 'content': [{'type': 'text', 'text': 'A cat.'}]}], 'images': ['cat.jpg']}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prep.core import media as md
from prep.core import records as r

NAME = "trl"
KINDS = ("chat", "preference", "feedback", "text")
MEDIA = "files"  # how the writer takes media (formats.from_records): paths relative to the output's folder


@dataclass
class Options:
    media_root: str | None = None  # where relative media paths are resolved


def detect(row: dict[str, Any]) -> bool:
    return "prompt" in row and any(k in row for k in ("completion", "chosen")) or ("chosen" in row and "rejected" in row)


def _side(value: Any, path: str, role: str, slots: list[md.Item | None], root: str | None) -> list[r.Message]:
    if isinstance(value, str):
        return [r.message(role, value)]
    if isinstance(value, list) and value and all(isinstance(p, dict) and "type" in p and "role" not in p
                                                 for p in value):  # Together: the prompt as content parts
        return [r.message(role, r.content_parts(value, path, slots, root))]
    return r.parse_messages(value, path, slots, root)


def read(row: Any, options: Options) -> r.Record:
    row = r.require_object(row, "trl")
    slots: list[md.Item | None] = []
    record = _read(row, slots, options.media_root)
    lists = md.lists(row)
    if slots or lists:
        record["media"] = md.from_parts(record, slots, lists, options.media_root)
    return record


def _read(row: dict[str, Any], slots: list[md.Item | None], root: str | None) -> r.Record:
    tools = r.tools(row.get("tools"), "$.tools")
    if row.get("messages") is not None:
        messages = r.require_messages(r.parse_messages(row["messages"], "$.messages", slots, root), "$.messages")
        return r.with_tools({"messages": messages}, tools)
    if row.get("chosen") is not None or row.get("rejected") is not None:
        prompt = _side(row["prompt"], "$.prompt", "user", slots, root) if row.get("prompt") is not None else None
        chosen = _side(r.get(row, "chosen"), "$.chosen", "assistant", slots, root)
        rejected = _side(r.get(row, "rejected"), "$.rejected", "assistant", slots, root)
        if prompt is None and isinstance(row["chosen"], list) and isinstance(row["rejected"], list):
            if slots:
                raise r.row_error("bad_media", "media in an implicit-prompt preference row", "$.chosen",
                                  hint="give the prompt, with its media, in a prompt column")
            prompt, chosen, rejected = r.split_common_prefix(chosen, rejected)
        elif prompt is None:
            raise r.row_error("missing_field", "required field 'prompt' is missing", "$.prompt",
                              hint="string chosen/rejected need a prompt; an implicit prompt needs conversations")
        return r.with_tools({"prompt": prompt, "chosen": chosen, "rejected": rejected}, tools)
    if row.get("completion") is not None:
        prompt = _side(r.get(row, "prompt"), "$.prompt", "user", slots, root)
        completion = _side(row["completion"], "$.completion", "assistant", slots, root)
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
    if record.get("media"):  # TRL's vision layout: every message as parts, bare media parts, paths in the columns
        for side in md.SIDES:
            if side in out:
                out[side] = [{**m, "content": [{"type": "text", "text": chunk} if kind == "text" else {"type": kind}
                                               for kind, chunk in md.pieces(m["content"])]} for m in out[side]]
        out.update({column: [md.written(i) for i in items] for column, items in md.to_columns(record["media"]).items()})
    if record.get("tools"):
        out["tools"] = record["tools"]
    return out
