"""Chat templates: a conversation -> the exact text a model trains on, and the character spans that
carry loss (design §4). The built-in templates (prep.render.builtin) write the text piece by piece;
`tokenizer` renders the tokenizer's own jinja template and finds the spans in the rendered text
(prep.render.jinja), never by re-tokenizing turn by turn.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prep.core.findings import PrepError, row_error
from prep.core.records import MEDIA, Message, Record
from prep.render.builtin import BUILTIN, NAMES, Template
from prep.render.jinja import JinjaTemplate
from prep.render.spans import Specials

AnyTemplate = Template | JinjaTemplate


def get_template(name: str, specials: Specials | None = None,
                 jinja: Callable[[], JinjaTemplate] | None = None) -> AnyTemplate:
    """A template by name; `tokenizer` needs `jinja`, which builds the tokenizer's own."""
    if name == "tokenizer":
        if jinja is None:
            raise PrepError("--template tokenizer needs --tokenizer")
        return jinja()
    if name not in BUILTIN:
        raise PrepError(f"unknown template {name!r}; one of {', '.join(NAMES)}")
    return BUILTIN[name](specials)


def text_only(record: Record) -> None:
    """Refuse multimodal rows: their image/audio placeholders would be trained as plain text."""
    media = [k for k in MEDIA if record.get(k)]
    if media:
        raise row_error("unsupported_media", f"the row has {', '.join(media)}; prep renders and tokenizes text only",
                        "drop the media columns, or leave multimodal rows out", f"$.{media[0]}")


def document(text: str, specials: Specials) -> str:
    """Plain text as it is trained: the tokenizer's BOS when it adds one to text, the text, then EOS."""
    if specials.eos is None:
        raise PrepError("plain text ends with the tokenizer's EOS token: give a tokenizer that has one")
    return (specials.bos or "" if specials.adds_bos else "") + text + specials.eos


def render_pair(template: AnyTemplate, prompt: list[Message], answer: list[Message],
                tools: list[dict[str, Any]] | None, path: str) -> tuple[int, str]:
    """Prompt and answer rendered as one conversation, and the character where the answer starts (the
    generation point), for dpo/kto: the prompt text is what the model sees when asked to answer."""
    if not answer or answer[0]["role"] != "assistant":
        raise row_error("wrong_type", "an answer must start with an assistant message",
                        "the answer side holds the assistant's reply", path)
    rendered = template.render([*prompt, *answer], tools)
    start = next(t.answer for t in rendered.turns if t.index == len(prompt))
    return start[0], rendered.text  # type: ignore[index]


def describe() -> list[tuple[str, str]]:
    """(name, summary) of every template, for `prep template --list`."""
    return [(t.name, t.summary) for t in BUILTIN.values()] + [
        ("tokenizer", "the tokenizer's own jinja chat template (sandboxed), tools passed through; the default")]
