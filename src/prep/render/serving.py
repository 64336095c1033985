"""What a model trained on shards needs to be served as it was trained (design §6): the chat template the shards
were rendered with, as jinja `apply_chat_template` reads, with the template arguments they were made with written
in as its defaults, and the end-of-turn token every answer was trained to stop on.

Serving engines (vLLM, SGLang, llama.cpp, Ollama, TGI) read only the model folder's `chat_template` and
`generation_config.json`; they pass no `--template-kwargs`, so an argument such as `enable_thinking=false` must be
the template's own default. A caller that passes the argument still wins."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from prep.render.builtin import Template

if TYPE_CHECKING:  # jinja2 is imported only for a jinja template (start-up of a built-in's run)
    from prep.render.jinja import JinjaTemplate

DEFAULT = "default"
TOOL_USE = "tool_use"


def read_variables(source: str) -> set[str]:
    """The names a template reads from its caller (what `apply_chat_template(**kwargs)` can set)."""
    import jinja2  # noqa: PLC0415 - start-up time
    import jinja2.meta  # noqa: PLC0415 - start-up time

    return jinja2.meta.find_undeclared_variables(jinja2.Environment(extensions=["jinja2.ext.loopcontrols"]).parse(
        _without_generation(source)))


def _without_generation(source: str) -> str:
    """transformers' `{% generation %}` tags, which a plain environment does not parse, taken out (they write
    nothing themselves)."""
    for tag in ("generation", "endgeneration"):
        for dash in ("{%- ", "{% "):
            for end in (" -%}", " %}"):
                source = source.replace(dash + tag + end, "")
    return source


def bake(source: str, kwargs: dict[str, Any]) -> str:
    """`source` with each of `kwargs` that it reads as its default: set when the caller does not pass it."""
    read = read_variables(source)
    # `+%}`: the template's own first newline is kept under transformers' trim_blocks
    lines = [f"{{%- if {k} is not defined %}}{{%- set {k} = {_literal(v)} %}}{{%- endif +%}}"
             for k, v in sorted(kwargs.items()) if k in read]
    return "".join(lines) + source


def _literal(value: Any) -> str:
    """A YAML/JSON value as a jinja literal (JSON's true/false/null are jinja's too, and its strings jinja's)."""
    return json.dumps(value, ensure_ascii=False)


def serving_template(template: Template | JinjaTemplate) -> dict[str, Any]:
    """The manifest's record of what to serve with (design §5): `chat_template` (one jinja text, or by name
    `default` and `tool_use` where the tokenizer has a tool-use variant) and `eot`, the end-of-turn token that
    closes every trained answer."""
    if not isinstance(template, Template):  # a JinjaTemplate
        default = bake(template.source, template.kwargs)
        tools = bake(template.tool_source, template.kwargs)
        chat: str | dict[str, str] = default if tools == default else {DEFAULT: default, TOOL_USE: tools}
    else:
        chat = template.jinja()
    return {"chat_template": chat, "eot": template.eot}
