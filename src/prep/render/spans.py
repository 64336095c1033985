"""What rendering produces: the text a model trains on and where every message landed in it.

A span is a half-open character range. An assistant turn's span runs from the point where the
model starts generating (just after the generation prompt) to the end of its end-of-turn token,
so every trained answer ends with that token, trained (design §4).
"""

from __future__ import annotations

from dataclasses import dataclass

from prep.core.findings import PrepError, RowError, row_error
from prep.core.options import TRAIN_ON

Span = tuple[int, int]


@dataclass(slots=True)
class Turn:
    """Where one message landed: its content, and for an assistant message its whole answer."""

    index: int
    role: str
    content: Span
    answer: Span | None = None  # assistant: generation point .. end of the end-of-turn token
    trained: bool = False  # assistant with weight != 0


@dataclass(slots=True)
class Rendered:
    text: str
    turns: list[Turn]

    def spans(self, train_on: str) -> list[Span]:
        """The character spans that carry loss under `train_on` (`auto` must be resolved first)."""
        if train_on == "all":
            return [(0, len(self.text))]
        answers = [t for t in self.turns if t.answer]
        if train_on == "assistant":
            return [t.answer for t in answers if t.trained]  # type: ignore[misc]
        if train_on == "last":
            return [answers[-1].answer] if answers and answers[-1].trained else []  # type: ignore[list-item]
        if train_on == "content":
            out = [t.answer if t.answer else t.content for t in self.turns if t.trained or not t.answer]
            return [s for s in out if s is not None and s[1] > s[0]]
        raise ValueError(f"unknown train_on {train_on!r}")

    def answer_spans(self) -> list[Span]:
        return [t.answer for t in self.turns if t.answer]


def resolve_train_on(train_on: str, kind: str) -> str:
    """`auto` is `assistant` for conversations and `all` for plain text."""
    if train_on not in TRAIN_ON:
        raise PrepError(f"unknown --train-on {train_on!r}; one of {', '.join(TRAIN_ON)}")
    if train_on == "auto":
        return "all" if kind == "text" else "assistant"
    return train_on


@dataclass(frozen=True, slots=True)
class Specials:
    """The tokenizer's BOS/EOS strings (None when it has none) and whether it puts BOS before plain text."""

    bos: str | None = None
    eos: str | None = None
    adds_bos: bool = False


def cannot_render(template: str, what: str, hint: str = "", path: str = "$.messages") -> RowError:
    return row_error("template_cannot_render", f"template {template} cannot render {what}",
                     hint or "use --template chatml (tools, any role order) or the tokenizer's own template", path)


def nothing_to_train(train_on: str) -> RowError:
    return row_error("nothing_to_train", f"no token would be trained with --train-on {train_on}",
                     "give the conversation an assistant answer with weight 1, or choose another --train-on",
                     "$.messages")
