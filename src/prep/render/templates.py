"""Chat templates: a conversation -> the exact text a model trains on, and the character spans that
carry loss (design §4). The built-in templates (prep.render.builtin) write the text piece by piece;
`tokenizer` renders the tokenizer's own jinja template and finds the spans in the rendered text
(prep.render.jinja), never by re-tokenizing turn by turn.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from prep.core.findings import PrepError, row_error
from prep.core.options import DEFAULT_DATE
from prep.core.records import Message, Record
from prep.files.read import read_config
from prep.render.builtin import BUILTIN, NAMES, Template
from prep.render.spans import Specials
from prep.render.tokenizer import Tokenizer

if TYPE_CHECKING:  # jinja2 is imported only when a jinja template is used (start-up of a built-in's run)
    from prep.render.jinja import JinjaTemplate

AnyTemplate: TypeAlias = "Template | JinjaTemplate"  # one that is not a Template is a JinjaTemplate


def parse_kwargs(specs: Iterable[str], template: str | None = None) -> dict[str, Any]:
    """`--template-kwargs KEY=VALUE` pairs, each value read as YAML (`enable_thinking=false` is the boolean); the
    `template` they go to is checked first, so a bad name is refused before any file is read."""
    if template is not None and template not in NAMES and template != "tokenizer" and not template.endswith(".jinja"):
        raise PrepError(f"--template {template}: must be a template name (see `prep template --list`) or a .jinja "
                        "file")
    out: dict[str, Any] = {}
    for spec in specs:
        import yaml  # noqa: PLC0415 - start-up time: only a run with template arguments reads YAML here

        key, sep, value = spec.partition("=")
        if not sep or not key.strip().isidentifier():
            raise PrepError(f"--template-kwargs {spec}: must be KEY=VALUE, e.g. enable_thinking=false")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise PrepError(f"--template-kwargs {spec}: the value is not YAML: {e}") from None
    return out


def get_template(name: str, specials: Specials | None = None,
                 jinja: Callable[..., JinjaTemplate] | None = None,
                 kwargs: dict[str, Any] | None = None) -> AnyTemplate:
    """A template by name, or a .jinja file; `tokenizer` and files need `jinja`, which builds the tokenizer's own
    (`jinja(source=..., name=...)`: a file's, with the tokenizer's special tokens). `kwargs` (the template
    arguments `jinja` was given) are refused for a built-in, which takes none."""
    if kwargs and name in BUILTIN:
        raise PrepError(f"--template-kwargs: template {name} is built in and takes no arguments; they go to the "
                        "tokenizer's own template or a .jinja file")
    if name == "tokenizer" or name.endswith(".jinja"):
        if jinja is None:
            raise PrepError(f"--template {name} needs --tokenizer")
        if name == "tokenizer":
            return jinja()
        try:
            source = read_config(name, "template")
        except OSError as e:
            raise PrepError(f"--template {name}: cannot read the template: {e.strerror or e}") from None
        return jinja(source=source, name=Path(name).name)
    if name not in BUILTIN:
        raise PrepError(f"unknown template {name!r}; one of {', '.join(NAMES)}")
    return BUILTIN[name](specials)


def chat_template(tok: Tokenizer | None, template: str | None, kwargs: dict[str, Any] | None = None,
                  date: str = DEFAULT_DATE) -> AnyTemplate:
    """The template every verb that renders uses (template, tokenize, mix --by tokens, validate --tokenizer):
    `template` by name or .jinja file, default the tokenizer's own, with the template arguments `kwargs`
    (`parse_kwargs`) and the day `date` strftime_now gives."""
    if template is None and tok is not None and not tok.has_chat_template:
        raise PrepError(f"the tokenizer at {tok.path} has no chat template and no --template was given; "
                        "choose one (see `prep template --list`)")
    jinja = functools.partial(tok.jinja, kwargs=kwargs, date=date) if tok else None
    return get_template(template or "tokenizer", tok.specials if tok else None, jinja, kwargs)


def text_only(record: Record) -> None:
    """Refuse multimodal rows: their image/audio placeholders would be trained as plain text."""
    if record.get("media"):
        kinds = sorted({item["type"] for item in record["media"]})
        raise row_error("unsupported_media", f"the row has {', '.join(kinds)} media; prep renders and tokenizes "
                        "text only", record["media"][0].get("at") or "$.media")


def document(text: str, specials: Specials) -> str:
    """Plain text as it is trained: the tokenizer's BOS when it adds one to text, the text, then EOS."""
    if specials.eos is None:
        raise PrepError("plain text ends with the tokenizer's EOS token: give a tokenizer that has one")
    return (specials.bos or "" if specials.adds_bos else "") + text + specials.eos


def render_pair(template: AnyTemplate, prompt: list[Message], answer: list[Message],
                tools: list[dict[str, Any]] | None, path: str,
                kwargs: dict[str, Any] | None = None) -> tuple[int, str]:
    """Prompt and answer rendered as one conversation, and the character where the answer starts (the
    generation point), for dpo/kto: the prompt text is what the model sees when asked to answer."""
    if not answer or answer[0]["role"] != "assistant":
        raise row_error("wrong_type", "an answer must start with an assistant message", path,
                        hint="the answer side holds the assistant's reply")
    rendered = template.render([*prompt, *answer], tools, kwargs)
    start = next(t.answer for t in rendered.turns if t.index == len(prompt))
    return start[0], rendered.text  # type: ignore[index]


def prompt_messages(record: Record) -> list[Message]:
    """What a `prompt` shard row asks: a conversation without its final assistant answer (a row of system and user
    messages only is taken as it is), or the prompt of a preference or feedback row."""
    if "messages" not in record:
        return record["prompt"]
    messages = record["messages"]
    if messages and messages[-1]["role"] == "assistant":
        messages = messages[:max(i for i, m in enumerate(messages) if m["role"] != "assistant") + 1] \
            if any(m["role"] != "assistant" for m in messages) else []
    return messages


def prompt_record(record: Record) -> dict[str, Any]:
    """What a prompt shard row was rendered from, for tools that render it again (`export --to trl-grpo`): its
    messages, and its tools and template arguments where it has them."""
    keep = {k: record[k] for k in ("tools", "chat_template_kwargs") if record.get(k)}
    return {"messages": prompt_messages(record), **keep}


def prompt_text(template: AnyTemplate, record: Record, kwargs: dict[str, Any] | None) -> str:
    """The prompt rendered with the generation prompt after it: `apply_chat_template(prompt,
    add_generation_prompt=True)` for the tokenizer's template, the text up to the generation point for a built-in."""
    messages = prompt_messages(record)
    if not any(m["role"] not in ("system", "developer") for m in messages):
        raise row_error("empty_value", "the row has no prompt to answer (no user message before the answer)",
                        "$.messages", hint="give the row a user message")
    tools = record.get("tools")
    if not isinstance(template, Template):
        prepared, _ = template.prepare(messages)
        try:
            return template.text(prepared, tools, True, kwargs)
        except Exception as e:  # noqa: BLE001 - template code raises anything (raise_exception, TypeError, ...)
            raise row_error("template_error", f"the chat template of {template.label} failed: {e}",
                            "$.messages") from None
    start, text = render_pair(template, messages, [{"role": "assistant", "content": ""}], tools, "$.messages",
                              kwargs)
    return text[:start]


def describe() -> list[tuple[str, str]]:
    """(name, summary) of every template, for `prep template --list`."""
    return [(t.name, t.summary) for t in BUILTIN.values()] + [
        ("tokenizer", "the tokenizer's own jinja chat template (sandboxed), tools passed through; the default")]
