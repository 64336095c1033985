"""Plain text for pretraining: `{"text": ...}` rows, or .txt files (whole file, paragraph or line
per document, see --txt-split).

A row and the record it becomes:

    >>> read({"text": "Once upon a time."}, Options())
    {'text': 'Once upon a time.'}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prep.core import records as r

NAME = "text"
KINDS = ("text",)


@dataclass
class Options:
    column: str = "text"


def detect(row: dict[str, Any]) -> bool:
    return isinstance(row.get("text"), str)


def read(row: Any, options: Options) -> r.Record:
    row = r.require_object(row, "text")
    return {"text": r.text(r.get(row, options.column), f"$.{options.column}")}


def write(record: r.Record, options: Options) -> dict[str, Any]:
    if r.kind_of(record) != "text":
        raise r.not_expressible(NAME, f"{r.kind_of(record)} records (they need a chat template)",
                                hint="render conversations with `prep template`, or convert to trl/openai")
    return {options.column: record["text"]}
