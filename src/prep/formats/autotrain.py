"""AutoTrain Advanced LLM data (CSV or JSONL): a `text` column holding a dialogue written as
`human: … \\n bot: …` (turns split at a line start, real or the two characters `\\n`), and
`prompt` / `text` / `rejected_text` for DPO/ORPO, or `text` / `rejected_text` for reward
models. Column names and role prefixes are options, as in AutoTrain's config; a `text` cell
without role prefixes is plain language-modelling text.

A row and the record it becomes:

    >>> read({"text": "human: Hi\\n bot: Hello!"}, Options())
    {'messages': [{'role': 'user', 'content': 'Hi'}, {'role': 'assistant', 'content': 'Hello!'}]}
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from prep.core import records as r

NAME = "autotrain"
KINDS = ("chat", "preference", "text")


@dataclass
class Options:
    text_column: str = "text"
    rejected_text_column: str = "rejected_text"
    prompt_text_column: str = "prompt"
    human_prefix: str = "human:"
    bot_prefix: str = "bot:"

    @cached_property
    def turn_start(self) -> re.Pattern[str]:
        prefixes = "|".join(re.escape(p) for p in (self.human_prefix, self.bot_prefix))
        return re.compile(rf"(?:^|\n|\\n)[ \t]*({prefixes})[ \t]?", re.IGNORECASE)


def detect(row: dict[str, Any]) -> bool:
    if "rejected_text" in row:
        return True
    text = row.get("text")
    return isinstance(text, str) and text.lstrip().lower().startswith(Options.human_prefix)


def dialogue(value: str, options: Options, path: str) -> list[r.Message] | None:
    """`human: hi \\n bot: hello` -> user/assistant messages; None when the text has no prefixes."""
    found = list(options.turn_start.finditer(value))
    if not found:
        return None
    if value[: found[0].start()].strip():
        raise r.row_error("bad_dialogue", f"text before the first {options.human_prefix!r} or {options.bot_prefix!r}",
                          path)
    messages = []
    for k, m in enumerate(found):
        end = found[k + 1].start() if k + 1 < len(found) else len(value)
        role = "user" if m.group(1).lower() == options.human_prefix.lower() else "assistant"
        messages.append(r.message(role, value[m.end():end].strip()))
    return messages


def read(row: Any, options: Options) -> r.Record:
    row = r.require_object(row, "autotrain")
    o = options
    hint = "name the column with --text-column"
    text = r.text(r.get(row, o.text_column, hint=hint), f"$.{o.text_column}")
    if o.rejected_text_column in row or o.prompt_text_column in row:
        rejected = r.text(r.get(row, o.rejected_text_column, hint="name the column with --rejected-text-column"),
                          f"$.{o.rejected_text_column}")
        if row.get(o.prompt_text_column) is not None:
            ppath = f"$.{o.prompt_text_column}"
            prompt_text = r.text(row[o.prompt_text_column], ppath)
            prompt = dialogue(prompt_text, o, ppath) or [r.message("user", prompt_text)]
            chosen = dialogue(text, o, f"$.{o.text_column}") or [r.message("assistant", text)]
            rejected_side = dialogue(rejected, o, f"$.{o.rejected_text_column}") or [r.message("assistant", rejected)]
            return {"prompt": prompt, "chosen": chosen, "rejected": rejected_side}
        chosen_d = dialogue(text, o, f"$.{o.text_column}")
        rejected_d = dialogue(rejected, o, f"$.{o.rejected_text_column}")
        if not chosen_d or not rejected_d:
            raise r.row_error("bad_dialogue", "reward rows without a prompt need both texts as dialogues",
                              hint=f"write them as `{o.human_prefix} … {o.bot_prefix} …` or add a prompt column")
        prompt, chosen, rejected_side = r.split_common_prefix(chosen_d, rejected_d)
        return {"prompt": prompt, "chosen": chosen, "rejected": rejected_side}
    messages = dialogue(text, o, f"$.{o.text_column}")
    return {"text": text} if messages is None else {"messages": messages}


def _dump(messages: list[r.Message], o: Options, path: str) -> str:
    lines = []
    for i, m in enumerate(messages):
        if m["role"] not in ("user", "assistant") or set(m) - {"role", "content"} - (
                {"weight"} if r.default_weight(m) else set()):
            raise r.not_expressible(NAME, f"a message with role {m['role']!r} or fields beyond role/content",
                                    path=f"{path}[{i}]")
        lines.append(f"{o.human_prefix if m['role'] == 'user' else o.bot_prefix} {m['content']}")
    return "\n".join(lines)


def write(record: r.Record, options: Options) -> dict[str, Any]:
    o = options
    kind = r.kind_of(record)
    if record.get("tools"):
        raise r.not_expressible(NAME, "tool definitions", path="$.tools")
    if kind == "text":
        return {o.text_column: record["text"]}
    if kind == "chat":
        return {o.text_column: _dump(record["messages"], o, "$.messages")}
    if kind == "preference":
        prompt = record["prompt"]
        simple = len(prompt) == 1 and set(prompt[0]) == {"role", "content"} and prompt[0]["role"] == "user"
        sides = {}
        for key in ("chosen", "rejected"):
            side = record[key]
            plain = len(side) == 1 and set(side[0]) == {"role", "content"} and side[0]["role"] == "assistant"
            sides[key] = side[0]["content"] if plain else _dump(side, o, f"$.{key}")
        return {o.prompt_text_column: prompt[0]["content"] if simple else _dump(prompt, o, "$.prompt"),
                o.text_column: sides["chosen"], o.rejected_text_column: sides["rejected"]}
    raise r.not_expressible(NAME, "KTO feedback records (AutoTrain has no unpaired preference trainer)")
