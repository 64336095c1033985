"""What rendering produces: the text a model trains on and where every message landed in it.

A span is a half-open character range. An assistant turn's span runs from the point where the
model starts generating (just after the generation prompt, rendered under the same template
arguments) to the end of its end-of-turn token, so every trained answer ends with that token,
trained (design §4). What the model writes there is trained, an empty think block included.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from prep.core.findings import Finding, PrepError, RowError, finding, row_error
from prep.core.options import TRAIN_ON
from prep.core.records import Message

Span = tuple[int, int]
_THINK_BLOCK = re.compile(r"\s*<think>.*?</think>\s*", re.S)


@dataclass(slots=True)
class Turn:
    """Where one message landed: its content, and for an assistant message its whole answer."""

    index: int
    role: str
    content: Span
    answer: Span | None = None  # assistant: generation point .. end of the end-of-turn token
    weight: int | None = None  # the message's weight (0 or 1), None when it has none
    think: Span | None = None  # assistant: the think block that opens the answer (from the generation point)

    @property
    def trained(self) -> bool:
        """Whether the message carries loss: an assistant answer unless its weight is 0, any other message only
        with weight 1 (Together's and LLaMA-Factory's per-message weights)."""
        return self.weight != 0 if self.answer else self.weight == 1


@dataclass(slots=True)
class Rendered:
    text: str
    turns: list[Turn]
    notes: list[Finding] = field(default_factory=list)  # what rendering changed (a developer message as system)

    def spans(self, train_on: str, reasoning: bool = True) -> list[Span]:
        """The character spans that carry loss under `train_on` (`auto` must be resolved first): under `assistant`
        every trained message (`Turn.trained`: a message of another role with weight 1 by its content), under
        `content` every content but those with weight 0, under `last` the final answer only. An answer's think
        block is left out when `reasoning` is False (--train-on-reasoning no); one the generation prompt holds
        (Qwen3's and SmolLM3's empty block with enable_thinking=false) is before the answer, never in it."""
        if train_on == "all":
            return [(0, len(self.text))]
        answers = [t for t in self.turns if t.answer]
        if train_on == "assistant":
            chosen = [t for t in self.turns if t.trained]
        elif train_on == "last":
            chosen = answers[-1:] if answers and answers[-1].trained else []
        elif train_on == "content":
            out = [t.answer if t.answer else t.content for t in self.turns if t.trained or (not t.answer
                   and t.weight != 0)]
            return [s for s in out if s is not None and s[1] > s[0]]
        else:
            raise ValueError(f"unknown train_on {train_on!r}")
        spans = []
        for t in chosen:
            if not t.answer:  # a message of another role with weight 1: its content
                spans += [t.content] if t.content[1] > t.content[0] else []
                continue
            a, b = t.answer
            if t.think and not reasoning:
                a = t.think[1]
            if b > a:
                spans.append((a, b))
        return spans

    def answer_spans(self) -> list[Span]:
        return [t.answer for t in self.turns if t.answer]


def think_span(text: str, start: int, end: int) -> Span | None:
    """The think block an answer (text[start:end]) opens with, through the whitespace after `</think>`; None when
    the answer does not open with one."""
    m = _THINK_BLOCK.match(text, start, end)
    return (start, m.end()) if m else None


def developer_as_system(messages: list[Message], template: str) -> tuple[list[Message], Finding]:
    """A template without a developer role gets the developer message in the system slot (OpenAI's own reading of
    the role), and a finding saying so; the slot is the first message, so a later one cannot take it."""
    for i, m in enumerate(messages):
        if m["role"] == "developer" and (i > 0 or any(x["role"] == "system" for x in messages)):
            raise cannot_render(template, "a developer message besides a system message or after the first message "
                                "(it has no developer role; the developer message takes the system slot)",
                                f"$.messages[{i}].role", hint="merge it into the system message")
    out = [{**m, "role": "system"} if m["role"] == "developer" else m for m in messages]
    return out, finding("developer_as_system", f"template {template} has no developer role: the developer message "
                        "is rendered as the system message", "$.messages[0].role")


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


def cannot_render(template: str, what: str, path: str = "$.messages", *, hint: str | None = None) -> RowError:
    return row_error("template_cannot_render", f"template {template} cannot render {what}", path, hint=hint)


def nothing_to_train(train_on: str) -> RowError:
    return row_error("nothing_to_train", f"no token would be trained with --train-on {train_on}", "$.messages",
                     hint="give the conversation a message with weight 1 (an assistant answer without a weight is "
                     "trained), or choose another --train-on")
