"""CoQA (reader only): one conversation per story. Reads the original file
({"version", "data": [{story, questions[{input_text, turn_id}], answers[{input_text, turn_id, …}]}]})
and the Hugging Face column layout (story, questions[], answers{input_text[], …}). The story
goes into a system prompt; questions and answers become alternating user/assistant turns.

A row and the record it becomes:

    >>> read({"story": "Tom has a cat.", "questions": [{"input_text": "What does Tom have?", "turn_id": 1}],
    ...       "answers": [{"input_text": "a cat", "turn_id": 1}]}, Options(system="Story: {story}"))
    {'messages': [{'role': 'system', 'content': 'Story: Tom has a cat.'},
                  {'role': 'user', 'content': 'What does Tom have?'}, {'role': 'assistant', 'content': 'a cat'}]}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prep.core import records as r

NAME = "coqa"
KINDS = ("chat",)
DEFAULT_SYSTEM = "Read the story and extract answers for the questions.\nStory: {story}"


@dataclass
class Options:
    system: str = DEFAULT_SYSTEM


def detect(row: dict[str, Any]) -> bool:
    return "story" in row and "questions" in row and "answers" in row


def _texts(value: Any, path: str) -> list[str]:
    """Question or answer texts in turn order, from either layout."""
    if isinstance(value, dict):  # HF layout: answers = {"input_text": [...], "answer_start": [...], ...}
        value = r.get(value, "input_text", path)
        path = f"{path}.input_text"
    items = r.json_value(value, path, list)
    if all(isinstance(x, str) for x in items):
        return items
    turns = []
    for i, item in enumerate(items):
        where = f"{path}[{i}]"
        item = r.json_value(item, where, dict)
        turn = item.get("turn_id", i + 1)
        turns.append((turn if isinstance(turn, int) else i + 1, r.text(r.get(item, "input_text", where),
                                                                         f"{where}.input_text")))
    ordered = sorted(turns, key=lambda t: t[0])
    ids = [t for t, _ in ordered]
    if len(set(ids)) != len(ids):
        raise r.row_error("bad_turns", "two entries share a turn_id", path)
    return [t for _, t in ordered]


def read(row: Any, options: Options) -> r.Record:
    row = r.require_object(row, "coqa")
    story = r.text(r.get(row, "story"), "$.story", allow_empty=False)
    questions = _texts(r.get(row, "questions"), "$.questions")
    answers = _texts(r.get(row, "answers"), "$.answers")
    if len(questions) != len(answers):
        raise r.row_error("count_mismatch", f"{len(questions)} questions but {len(answers)} answers", "$.answers")
    if not questions:
        raise r.row_error("empty_value", "the story has no questions", "$.questions",
                          hint="drop the story or add its questions")
    messages = [r.message("system", options.system.replace("{story}", story))]
    for q, a in zip(questions, answers, strict=True):
        messages += [r.message("user", q), r.message("assistant", a)]
    return {"messages": messages}
