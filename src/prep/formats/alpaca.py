"""Alpaca as LLaMA-Factory reads it: instruction/input/output with optional system and history
([prompt, response] pairs), chosen/rejected for preference rows and a boolean kto_tag.
The user turn is `instruction`, a newline, then `input` (either may be empty), as LLaMA-Factory
joins them. A row with only the prompt column (e.g. LLaMA-Factory's c4_demo entry, whose
`columns` map just `prompt`) is pretraining text.

Media as LLaMA-Factory's multimodal rows hold them: `images`, `videos` and `audios` lists on the row (paths relative
to the media root, or URLs), each standing at a `<image>`/`<video>`/`<audio>` placeholder in the instruction, input or
history, the n-th placeholder of a type taking the n-th item. A list and its placeholders must agree in number
(`media_count_mismatch`), as LLaMA-Factory's training refuses such rows: it inserts missing placeholders only in its
chat engines, never in training data.

A row and the record it becomes:

    >>> read({"instruction": "Name a colour.", "input": "", "output": "Red."}, Options())
    {'messages': [{'role': 'user', 'content': 'Name a colour.'}, {'role': 'assistant', 'content': 'Red.'}]}
    >>> record = read({"instruction": "<image>What is it?", "output": "A cat.", "images": ["cat.jpg"]},
    ...               Options(media_root="/data"))
    >>> record["media"]
    [{'type': 'image', 'path': 'cat.jpg', 'root': '/data', 'at': '$.images[0]'}]
    >>> write(record, Options())
    {'instruction': '<image>What is it?', 'input': '', 'output': 'A cat.', 'images': ['cat.jpg']}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prep.core import media as md
from prep.core import records as r

NAME = "alpaca"
KINDS = ("chat", "preference", "feedback", "text")
MEDIA = "files"  # how the writer takes media (formats.from_records): paths relative to the output's folder


@dataclass
class Options:
    prompt: str | None = "instruction"
    query: str | None = "input"
    response: str | None = "output"
    system: str | None = "system"
    history: str | None = "history"
    chosen: str | None = "chosen"
    rejected: str | None = "rejected"
    kto_tag: str | None = "kto_tag"
    images: str | None = "images"
    videos: str | None = "videos"
    audios: str | None = "audios"
    media_root: str | None = None  # where relative media paths are resolved


def detect(row: dict[str, Any]) -> bool:
    return "instruction" in row and any(k in row for k in ("output", "chosen", "kto_tag", "input"))


def _field(row: dict[str, Any], column: str | None) -> str | None:
    if not column:
        return None
    value = row.get(column)
    if value is None or isinstance(value, str):  # the path below is spelled out only for the error
        return value
    return r.text(value, f"$.{column}")


def read(row: Any, options: Options) -> r.Record:
    row = r.require_object(row, "alpaca")
    record = _read(row, options)
    return media_of(row, record, options)


def media_of(row: dict[str, Any], record: r.Record, o: Any) -> r.Record:
    """`record` with the media of LLaMA-Factory's per-type columns (`o.images`, `o.videos`, `o.audios`), in
    placeholder order (alpaca and sharegpt rows hold them alike)."""
    names = {kind: getattr(o, column) for kind, column in md.COLUMNS.items()}
    if "text" not in record and (lists := md.lists(row, names)):
        record["media"] = md.from_columns(lists, md.used(record), o.media_root, names)
    return record


def _read(row: dict[str, Any], options: Options) -> r.Record:
    o = options
    if o.prompt and row.get(o.prompt) is None:
        r.get(row, o.prompt, hint=f"every alpaca row needs {o.prompt!r} (the instruction)")
    if not o.response and not o.chosen and not o.kto_tag:
        return {"text": _field(row, o.prompt) or ""}
    prompt: list[r.Message] = []
    if system := _field(row, o.system):
        prompt.append(r.message("system", system))
    if o.history and row.get(o.history) not in (None, "", []):
        pairs = r.json_value(row[o.history], f"$.{o.history}", list)
        for i, pair in enumerate(pairs):
            where = f"$.{o.history}[{i}]"
            if not (isinstance(pair, list) and len(pair) == 2):
                raise r.row_error("wrong_type", "a history entry must be a [prompt, response] pair", where,
                                  hint="write history as [[\"question\", \"answer\"], ...]")
            prompt.append(r.message("user", r.text(pair[0], f"{where}[0]")))
            prompt.append(r.message("assistant", r.text(pair[1], f"{where}[1]")))
    query = [q for q in (_field(row, o.prompt), _field(row, o.query)) if q]
    prompt.append(r.message("user", "\n".join(query)))

    if o.kto_tag and row.get(o.kto_tag) is not None:
        label = r.boolean(row[o.kto_tag], f"$.{o.kto_tag}")
        answer = r.text(r.get(row, o.response), f"$.{o.response}")
        return {"prompt": prompt, "completion": [r.message("assistant", answer)], "label": label}
    if o.chosen and o.rejected and (row.get(o.chosen) is not None or row.get(o.rejected) is not None):
        chosen = r.text(r.get(row, o.chosen), f"$.{o.chosen}")
        rejected = r.text(r.get(row, o.rejected), f"$.{o.rejected}")
        return {"prompt": prompt, "chosen": [r.message("assistant", chosen)],
                "rejected": [r.message("assistant", rejected)]}
    output = row.get(o.response) if o.response else None
    if output is None:
        output = r.get(row, o.response, hint=f"every alpaca row needs {o.response!r} (the answer)")
    if isinstance(output, list) and len(output) == 2:  # old LLaMA-Factory ranking rows: output = [chosen, rejected]
        return {"prompt": prompt, "chosen": [r.message("assistant", r.text(output[0], f"$.{o.response}[0]"))],
                "rejected": [r.message("assistant", r.text(output[1], f"$.{o.response}[1]"))]}
    answer = output if isinstance(output, str) else r.text(output, f"$.{o.response}")
    return {"messages": [*prompt, r.message("assistant", answer)]}


def _prompt_columns(prompt: list[r.Message], o: Options, path: str) -> dict[str, Any]:
    """system + alternating user/assistant pairs + a final user turn -> alpaca columns."""
    out: dict[str, Any] = {}
    for i, m in enumerate(prompt):
        if set(m) - {"role", "content"} - ({"weight"} if r.default_weight(m) else set()):
            extra = sorted(set(m) - {"role", "content", "weight"}) or ["weight"]
            raise r.not_expressible(NAME, f"message fields {extra} (tools, names or weights)", path=f"{path}[{i}]")
    if prompt and prompt[0]["role"] == "system":
        out[o.system] = prompt[0]["content"]
        prompt = prompt[1:]
    roles = [m["role"] for m in prompt]
    if roles != ["user", "assistant"] * (len(roles) // 2) + ["user"]:
        raise r.not_expressible(NAME, f"this role order ({', '.join(roles) or 'empty'})", path,
                                hint="alpaca holds an optional system, user/assistant pairs, then one user turn")
    out[o.prompt] = prompt[-1]["content"]
    out[o.query] = ""
    if len(prompt) > 1:
        out[o.history] = [[prompt[i]["content"], prompt[i + 1]["content"]] for i in range(0, len(prompt) - 1, 2)]
    return out


def _single_answer(side: list[r.Message], path: str) -> str:
    if len(side) != 1 or side[0]["role"] != "assistant" or set(side[0]) - {"role", "content", "weight",
                                                                         "reasoning_content"}:
        raise r.not_expressible(NAME, "an answer that is not a single plain assistant message", path=path)
    if side[0].get("weight", 1) != 1:  # alpaca trains every answer: an untrained one would silently become trained
        raise r.not_expressible(NAME, "an untrained (weight 0) answer", path=f"{path}.weight")
    return r.with_reasoning(side[0], NAME, f"{path}[0]")  # reasoning as a leading think block, as in sharegpt


def write(record: r.Record, options: Options) -> dict[str, Any]:
    out = _write(record, options)
    return {**out, **media_columns(record, options)}


def media_columns(record: r.Record, o: Any) -> dict[str, list[str]]:
    """LLaMA-Factory's per-type columns of a record's media (alpaca and sharegpt write them alike)."""
    if record.get("media"):
        md.agree(record, record["media"])
    return {getattr(o, column) or column: [md.written(i) for i in items]
            for column, items in md.to_columns(record.get("media") or ()).items()}


def _write(record: r.Record, options: Options) -> dict[str, Any]:
    o = options
    kind = r.kind_of(record)
    if kind == "text":
        raise r.not_expressible(NAME, "plain text (pretraining) records", hint="convert text records to trl or text")
    if kind == "chat":
        messages = record["messages"]
        if record.get("tools"):
            raise r.not_expressible(NAME, "tool definitions", path="$.tools")
        if not messages or messages[-1]["role"] != "assistant":
            raise r.not_expressible(NAME, "a conversation that does not end with an assistant answer",
                                    path="$.messages")
        out = _prompt_columns(messages[:-1], o, "$.messages")
        out[o.response] = _single_answer(messages[-1:], f"$.messages[{len(messages) - 1}]")
        return out
    if record.get("tools"):
        raise r.not_expressible(NAME, "tool definitions", path="$.tools")
    out = _prompt_columns(record["prompt"], o, "$.prompt")
    if kind == "preference":
        out[o.chosen] = _single_answer(record["chosen"], "$.chosen")
        out[o.rejected] = _single_answer(record["rejected"], "$.rejected")
    else:
        out[o.response] = _single_answer(record["completion"], "$.completion")
        out[o.kto_tag] = record["label"]
    return out
