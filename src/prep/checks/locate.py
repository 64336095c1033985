"""Where each message of a canonical record came from in the raw row, so findings about a record
(role order, empty content, tool ids ...) point at the user's own field: `$.conversations[3].from`
in ShareGPT, `$.history[0][1]` in Alpaca, `$.messages[2].role` in OpenAI.

A `Loc` is (path of the message, suffix of its role field, suffix of its content field); formats
that keep a message in a plain string column have empty suffixes (`$.output`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from prep.core.records import Record, kind_of

Loc = tuple[str, str, str]
Locs = dict[str, list[Loc]]
LISTS = ("messages", "prompt", "chosen", "rejected", "completion")


def canonical(record: Record) -> Locs:
    """The record's own paths: what a record that came from no file (or from prep itself) reports."""
    return {key: [(f"$.{key}[{i}]", ".role", ".content") for i in range(len(record[key]))]
            for key in LISTS if isinstance(record.get(key), list)}


def locate(fmt: str, row: Any, record: Record, options: Any) -> Locs:
    """Each message's raw location; any list the format mapper cannot place keeps its canonical paths."""
    mapper = _MAPPERS.get(fmt)
    found = mapper(row, record, options) if mapper and isinstance(row, dict) else {}
    out = canonical(record)
    for key, locs in found.items():
        if key in out and len(locs) == len(out[key]):
            out[key] = locs
    return out


class Lazy(Mapping[str, list[Loc]]):
    """`locate(...)`, worked out only when a rule first asks (most rows have no finding to place)."""

    def __init__(self, fmt: str, row: Any, record: Record, options: Any) -> None:
        self._args: tuple[Any, ...] | None = (fmt, row, record, options)
        self._locs: Locs = {}

    def _all(self) -> Locs:
        if self._args is not None:
            self._locs, self._args = locate(*self._args), None
        return self._locs

    def __getitem__(self, key: str) -> list[Loc]:
        return self._all()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())


def _list(path: str, n: int, role: str = ".role", content: str = ".content", start: int = 0) -> list[Loc]:
    return [(f"{path}[{start + i}]", role, content) for i in range(n)]


def _column(path: str, n: int) -> list[Loc]:
    return [(path, "", "")] * n


def _split(locs: list[Loc], record: Record, first: str, second: str) -> Locs:
    n = len(record[first])
    return {first: locs[:n], second: locs[n:]}


def _openai(row: dict[str, Any], record: Record, o: Any) -> Locs:
    kind = kind_of(record)
    if kind == "preference":
        return {"prompt": _list("$.input.messages", len(record["prompt"])),
                "chosen": _list("$.preferred_output", len(record["chosen"])),
                "rejected": _list("$.non_preferred_output", len(record["rejected"]))}
    col = getattr(o, "messages", "messages")
    locs = _list(f"$.{col}", len(row.get(col) or []))
    return {"messages": locs} if kind == "chat" else _split(locs, record, "prompt", "completion")


def _trl_side(row: dict[str, Any], key: str, n: int, start: int = 0) -> list[Loc]:
    return _column(f"$.{key}", n) if isinstance(row.get(key), str) else _list(f"$.{key}", n, start=start)


def _trl(row: dict[str, Any], record: Record, o: Any) -> Locs:
    if row.get("messages") is not None:
        return {"messages": _list("$.messages", len(record.get("messages", [])))}
    kind = kind_of(record)
    if kind == "preference":
        if row.get("prompt") is None:  # implicit prompt: the shared head of chosen and rejected
            n = len(record["prompt"])
            return {"prompt": _list("$.chosen", n), "chosen": _trl_side(row, "chosen", len(record["chosen"]), n),
                    "rejected": _trl_side(row, "rejected", len(record["rejected"]), n)}
        return {k: _trl_side(row, k, len(record[k])) for k in ("prompt", "chosen", "rejected")}
    if kind == "feedback":
        return {k: _trl_side(row, k, len(record[k])) for k in ("prompt", "completion")}
    if kind == "chat":  # prompt + completion without a label
        prompt = row.get("prompt")
        n = 1 if isinstance(prompt, str) else len(prompt or [])
        return {"messages": _trl_side(row, "prompt", n) +
                _trl_side(row, "completion", len(record["messages"]) - n)}
    return {}


def _sharegpt(row: dict[str, Any], record: Record, o: Any) -> Locs:
    col = o.messages
    turns = row.get(col) if isinstance(row.get(col), list) else []
    role, content = o.role_tag, o.content_tag
    if turns and isinstance(turns[0], dict) and role not in turns[0] and "role" in turns[0]:
        role, content = "role", "content"
    head = [(f"$.{o.system}", "", "")] if o.system and row.get(o.system) else []
    locs = head + _list(f"$.{col}", len(turns), f".{role}", f".{content}")
    kind = kind_of(record)
    if kind == "chat":
        return {"messages": locs}
    if kind == "preference":
        return {"prompt": locs, "chosen": [(f"$.{o.chosen}", f".{role}", f".{content}")],
                "rejected": [(f"$.{o.rejected}", f".{role}", f".{content}")]}
    return _split(locs, record, "prompt", "completion")


def _alpaca(row: dict[str, Any], record: Record, o: Any) -> Locs:
    if kind_of(record) == "text":
        return {}
    head = [(f"$.{o.system}", "", "")] if o.system and row.get(o.system) else []
    history = row.get(o.history) if o.history and isinstance(row.get(o.history), list) else []
    for k in range(len(history)):
        head += [(f"$.{o.history}[{k}][0]", "", ""), (f"$.{o.history}[{k}][1]", "", "")]
    head.append((f"$.{o.prompt}", "", ""))
    kind = kind_of(record)
    if kind == "chat":
        return {"messages": [*head, (f"$.{o.response}", "", "")]}
    if kind == "feedback":
        return {"prompt": head, "completion": [(f"$.{o.response}", "", "")]}
    if isinstance(row.get(o.response), list) and row.get(o.chosen) is None:  # old ranking rows
        return {"prompt": head, "chosen": [(f"$.{o.response}[0]", "", "")],
                "rejected": [(f"$.{o.response}[1]", "", "")]}
    return {"prompt": head, "chosen": [(f"$.{o.chosen}", "", "")], "rejected": [(f"$.{o.rejected}", "", "")]}


def _autotrain(row: dict[str, Any], record: Record, o: Any) -> Locs:
    kind = kind_of(record)
    text, rejected, prompt = f"$.{o.text_column}", f"$.{o.rejected_text_column}", f"$.{o.prompt_text_column}"
    if kind == "chat":
        return {"messages": _column(text, len(record["messages"]))}
    if kind == "preference":
        head = prompt if row.get(o.prompt_text_column) is not None else text
        return {"prompt": _column(head, len(record["prompt"])), "chosen": _column(text, len(record["chosen"])),
                "rejected": _column(rejected, len(record["rejected"]))}
    return {}


def _coqa(row: dict[str, Any], record: Record, o: Any) -> Locs:
    answers = "$.answers.input_text" if isinstance(row.get("answers"), dict) else "$.answers"
    questions = "$.questions.input_text" if isinstance(row.get("questions"), dict) else "$.questions"
    locs: list[Loc] = [("$.story", "", "")]
    for k in range((len(record["messages"]) - 1) // 2):
        locs += [(f"{questions}[{k}]", "", ""), (f"{answers}[{k}]", "", "")]
    return {"messages": locs}


_MAPPERS = {"openai": _openai, "trl": _trl, "sharegpt": _sharegpt, "alpaca": _alpaca, "autotrain": _autotrain,
            "coqa": _coqa}


def text_path(fmt: str, options: Any) -> str:
    """Where a text record's text lives in the raw row."""
    column = {"text": "column", "alpaca": "prompt", "autotrain": "text_column"}.get(fmt)
    return f"$.{getattr(options, column)}" if column else "$.text"


_CANONICAL = re.compile(r"^\$\.(messages|prompt|chosen|rejected|completion)\[(\d+)\](\.role|\.content)?(.*)$")


def raw_path(path: str, locs: Mapping[str, list[Loc]]) -> str:
    """A canonical record path (`$.messages[2].content`, as the encoder reports) at the raw row's field."""
    whole = re.fullmatch(r"\$\.(messages|prompt|chosen|rejected|completion)", path)
    if whole and locs.get(whole.group(1)):
        first = locs[whole.group(1)][0][0]
        return re.sub(r"\[\d+\]$", "", first) if first.endswith("]") else first
    m = _CANONICAL.match(path)
    if not m or m.group(1) not in locs or int(m.group(2)) >= len(locs[m.group(1)]):
        return path
    loc = locs[m.group(1)][int(m.group(2))]
    if not m.group(3) and not m.group(4):
        return loc[0]
    if m.group(3) == ".role":
        return loc[0] + loc[1]
    if m.group(3) == ".content" or loc[1] != ".role":
        return loc[0] + loc[2]
    return loc[0] + m.group(4)
