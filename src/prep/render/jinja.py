"""The tokenizer's own chat template (`--template tokenizer`), rendered sandboxed, with the spans found
in the rendered text itself."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from prep.core.findings import PrepError, RowError, row_error
from prep.core.records import Message
from prep.render.spans import Rendered, Turn


class JinjaTemplate:
    """The tokenizer's own chat template, rendered sandboxed by transformers, with `tools` passed through.

    Spans without re-tokenizing: for each assistant message i the conversation up to it is rendered
    with the generation prompt; the full render must start with that text (else the template is not
    prefix-stable at that turn and the row is refused), and the answer runs from there to the first
    end-of-turn token after the message's content. Templates that rewrite earlier turns (Qwen3 drops
    old reasoning) still get exact ids, since only the full render is tokenized, and correct labels,
    since each answer is located in the full render itself. Every message's content must appear in
    order, and tool definitions and calls must appear, or the row is refused: a template that silently
    drops what the user wrote (tools on a template without tool support) never trains.
    """

    name = "tokenizer"
    tools = True

    def __init__(self, source: str, tool_source: str | None, variables: dict[str, Any], owner: str,
                 added_tokens: Sequence[str]) -> None:
        self.source, self.tool_source = source, tool_source or source
        self.variables = variables  # what apply_chat_template passes: the special tokens map
        self.owner = owner
        self.label = f"tokenizer ({owner})"
        self.eot = self._probe_eot(sorted(added_tokens, key=len, reverse=True))

    @property
    def sha256(self) -> str:
        return hashlib.sha256((self.source + "\0" + self.tool_source).encode()).hexdigest()

    def text(self, messages: Sequence[Message], tools: list[dict[str, Any]] | None, generation: bool) -> str:
        """Exactly `apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=...)`."""
        from transformers.utils.chat_template_utils import render_jinja_template  # noqa: PLC0415 - start-up time: transformers only for the tokenizer's own template

        clean = [{k: v for k, v in m.items() if v is not None and k != "weight"} for m in messages]
        out, _ = render_jinja_template([clean], tools=tools, chat_template=self.tool_source if tools else self.source,
                                       add_generation_prompt=generation, **self.variables)
        return out[0]

    def _probe_eot(self, added: list[str]) -> str:
        probe = "PREP_PROBE_ANSWER"
        try:
            text = self.text([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": probe}], None, False)
        except Exception as e:  # noqa: BLE001 - a template is user code: any failure means it cannot be used
            raise PrepError(f"the chat template of {self.owner} fails on a plain user/assistant exchange: {e}") from None
        at = text.find(probe)
        if at < 0:
            raise PrepError(f"the chat template of {self.owner} does not write the assistant's content")
        after = text[at + len(probe):]
        rest = after.lstrip()
        token = next((t for t in added if t and rest.startswith(t)), None)
        if token is None:
            raise PrepError(f"the chat template of {self.owner} does not end an assistant turn with a special token "
                            f"(after the answer comes {after[:30]!r}), so answers would be trained without a stop "
                            "token; choose a template with --template (see `prep template --list`)")
        return token

    def render(self, messages: Sequence[Message], tools: list[dict[str, Any]] | None = None) -> Rendered:
        full = self._render(messages, tools, False)
        turns: list[Turn] = []
        pos = 0
        for i, m in enumerate(messages):
            content = _visible(m)
            if m["role"] != "assistant":
                at = full.find(content, pos) if content else pos
                if at < 0:
                    raise self._dropped(i, m["role"])
                turns.append(Turn(i, m["role"], (at, at + len(content))))
                pos = at + len(content)
                continue
            prefix = self._render(messages[:i], tools, True) if i else ""
            if not full.startswith(prefix):
                raise row_error("template_not_prefix_stable",
                                f"the chat template of {self.label} renders messages 1-{i} differently once "
                                f"assistant message {i + 1} follows, so prep cannot tell where that turn starts",
                                "use a built-in --template for this data (prep template --list)", f"$.messages[{i}]")
            start = len(prefix)
            if start < pos:
                raise row_error("template_mismatch", f"the chat template of {self.label} writes message {i} after "
                                f"the point where assistant message {i + 1} starts", "use a built-in --template for "
                                "this data", f"$.messages[{i}]")
            at = full.find(content, start) if content else start
            if at < 0:
                raise self._dropped(i, "assistant")
            close = full.find(self.eot, at + len(content))
            following = _visible(messages[i + 1]) if i + 1 < len(messages) else ""
            if close < 0 or (following and following in full[at + len(content):close]):
                raise row_error("template_mismatch", f"the chat template of {self.label} does not close assistant "
                                f"message {i + 1} with {self.eot}", "use a built-in --template for this data",
                                f"$.messages[{i}]")
            end = close + len(self.eot)
            for call in m.get("tool_calls") or ():
                if call["function"]["name"] not in full[start:end]:
                    raise row_error("template_drops_content", f"the chat template of {self.label} does not write "
                                    f"the tool call {call['function']['name']!r} of message {i + 1}",
                                    "use a tool-aware template (e.g. --template chatml)", f"$.messages[{i}].tool_calls")
            turns.append(Turn(i, "assistant", (at, at + len(content)), (start, end), m.get("weight", 1) != 0))
            pos = end
        if tools and self._same(full, messages, None):
            raise row_error("template_drops_content", f"the chat template of {self.label} does not write the tool "
                            "definitions", "use a tool-aware template (e.g. --template chatml), or drop the tools",
                            "$.tools")
        if any(m.get("tool_calls") for m in messages) and self._same(
                full, [{k: v for k, v in m.items() if k != "tool_calls"} for m in messages], tools):
            at = next(i for i, m in enumerate(messages) if m.get("tool_calls"))
            raise row_error("template_drops_content", f"the chat template of {self.label} does not write tool calls",
                            "use a tool-aware template (e.g. --template chatml)", f"$.messages[{at}].tool_calls")
        return Rendered(full, turns)

    def _same(self, full: str, messages: Sequence[Message], tools: list[dict[str, Any]] | None) -> bool:
        """Whether the conversation renders to `full` without what was taken out: then the template ignores it."""
        try:
            return self.text(messages, tools, False) == full
        except Exception:  # noqa: BLE001 - a template may refuse the reduced conversation: then it uses the part
            return False

    def _render(self, messages: Sequence[Message], tools: list[dict[str, Any]] | None, generation: bool) -> str:
        try:
            return self.text(messages, tools, generation)
        except Exception as e:  # noqa: BLE001 - template code raises anything (raise_exception, TypeError, ...)
            raise row_error("template_error", f"the chat template of {self.label} failed: {e}",
                            "fix the row, or use a built-in --template", "$.messages") from None

    def _dropped(self, i: int, role: str) -> RowError:
        return row_error("template_drops_content", f"the chat template of {self.label} does not write the content "
                         f"of message {i + 1} ({role})", "use a template that renders every role (e.g. --template "
                         "chatml)", f"$.messages[{i}].content")


def _visible(m: Message) -> str:
    """The part of a message a template must write verbatim (up to surrounding whitespace); reasoning
    before `</think>` is left out because reasoning templates drop it from earlier turns."""
    content = m["content"]
    if m["role"] == "assistant" and "</think>" in content:
        content = content.rsplit("</think>", 1)[1]
    return content.strip()
