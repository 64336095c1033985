"""The tokenizer's own chat template (`--template tokenizer`), rendered sandboxed, with the spans found
in the rendered text itself.

Templates are rendered the way transformers' `apply_chat_template` renders them (jinja2's immutable
sandbox, `trim_blocks` and `lstrip_blocks`, loop controls, the `{% generation %}` tag, and the same
`raise_exception`, `strftime_now`, `tojson`, `dict` and `namespace`), without importing transformers:
the parity tests compare the two on every fixture tokenizer."""

from __future__ import annotations

import hashlib
import json
import os
import re
import string
import time
from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

import jinja2
import jinja2.ext
import jinja2.nodes
import jinja2.utils
from jinja2.sandbox import ImmutableSandboxedEnvironment, safe_range

from prep.core.findings import Finding, PrepError, RowError, row_error
from prep.core.options import RENDER_CHARS, RENDER_SECONDS
from prep.core.records import REASONING, THINK_OPEN, Message, fold_reasoning
from prep.render.spans import Rendered, Turn, developer_as_system, think_span

_PROBE_REASONING = "PREP_PROBE_REASONING"
# A probe tool call: its arguments as JSON text, which a template that writes `arguments` the way it expects shows.
_PROBE_ARGUMENTS = {"prep_probe": "PREP_PROBE_VALUE"}
_PROBE_ARGUMENTS_JSON = json.dumps(_PROBE_ARGUMENTS)
_PROBE_ANSWER = "PREP_PROBE_ANSWER"


class _Generation(jinja2.ext.Extension):
    """`{% generation %}...{% endgeneration %}` (the assistant-mask markers of transformers): the body as it is."""

    tags = {"generation"}

    def parse(self, parser: Any) -> jinja2.nodes.CallBlock:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller: Any) -> str:
        return str(caller())


class _Dict:
    """`dict(...)` in templates without the attribute access a real dict type would expose to the sandbox."""

    def __call__(self, *args: Any, **kwargs: Any) -> dict[Any, Any]:
        return dict(*args, **kwargs)

    def fromkeys(self, *args: Any, **kwargs: Any) -> dict[Any, Any]:
        return dict.fromkeys(*args, **kwargs)


class _Namespace(jinja2.utils.Namespace):
    """`namespace(...)` refusing underscore names, which could reach interpreter internals."""

    def __init__(*args: Any, **kwargs: Any) -> None:  # noqa: N805 - jinja's Namespace signature, `self` in args
        self, rest = args[0], args[1:]
        attrs = dict(*rest, **kwargs)
        for name in attrs:
            _Namespace._check(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name: str, value: Any) -> None:
        _Namespace._check(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check(name: Any) -> None:
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(f"a chat template cannot set {name!r} on a namespace")


def _raise(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None,
            sort_keys: bool = False) -> str:
    """Not jinja's own `tojson`, which escapes HTML characters: templates expect plain JSON. Its size with
    `indent` is known from the one-space form before it is built (each line's indent is its depth times `indent`)."""
    if isinstance(indent, int) and indent > 1:
        one = json.dumps(value, ensure_ascii=ensure_ascii, indent=1, separators=separators, sort_keys=sort_keys)
        depth = sum(len(line) - len(line.lstrip(" ")) for line in one.split("\n"))
        _bounded(len(one) + depth * (indent - 1), "tojson indent")
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


class TemplateLimit(jinja2.exceptions.SecurityError):
    """A template ran longer or wrote more than RENDER_SECONDS / RENDER_CHARS allow."""


_deadline = [0.0]  # when the render in progress must stop (monotonic seconds)


def _in_time() -> None:
    if time.monotonic() > _deadline[0]:
        raise TemplateLimit(f"rendering took longer than {RENDER_SECONDS:g} s (a runaway loop?)")


class _Range:
    """`range` in templates: the sandbox's, checking the render's time as it is iterated (nested loops)."""

    def __init__(self, *args: int) -> None:
        self.range = safe_range(*args)

    def __iter__(self) -> Any:
        for i, x in enumerate(self.range):
            if not i & 1023:
                _in_time()
            yield x

    def __len__(self) -> int:
        return len(self.range)

    def __getitem__(self, k: Any) -> Any:
        return self.range[k]


def _bounded(size: int, what: str) -> None:
    """Refuse, before it is built, a value of more than RENDER_CHARS characters: one filter or method call must not
    allocate gigabytes before the render's own limits see its output."""
    if size > RENDER_CHARS:
        raise TemplateLimit(f"the template's {what} would build more than {RENDER_CHARS:,} characters")


_NUMBER = re.compile(r"\d+")
# A %-format conversion: its width and precision (either may be `*`, taken from the arguments).
_PERCENT = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?[a-zA-Z%]")


def _format_widths(spec: str, args: Any) -> None:
    """`'%999999999s' % x` and `{:>999999999}`: widths and precisions are output sizes."""
    for width, precision in _PERCENT.findall(spec):
        for n in (width, precision):
            if n == "*":
                for value in args if isinstance(args, tuple) else (args,):
                    if isinstance(value, int):
                        _bounded(abs(value), "format width")
            elif n:
                _bounded(int(n), "format width")


def _brace_widths(source: str) -> None:
    for _, _, spec, _ in string.Formatter().parse(source):
        for n in _NUMBER.findall(spec or ""):
            _bounded(int(n), "format width")


def _replaced_size(text: str, old: str, new: str, count: int = -1) -> int:
    n = len(text) + 1 if old == "" else text.count(old)
    return len(text) + (n if count < 0 else min(n, count)) * (len(new) - len(old))


def _string_call(method: str, text: str, args: tuple[Any, ...]) -> None:
    """The size of what a str method would build, checked before it runs."""
    if method in ("center", "ljust", "rjust", "zfill") and args and isinstance(args[0], int):
        _bounded(args[0], f"str.{method}")
    elif method == "expandtabs":
        _bounded(len(text) * (args[0] if args and isinstance(args[0], int) else 8), "str.expandtabs")
    elif method == "replace" and len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
        _bounded(_replaced_size(text, args[0], args[1], *(a for a in args[2:3] if isinstance(a, int))), "replace")
    elif method == "join" and args:
        _bounded(_joined_size(text, args[0]), "join")


def _joined_size(sep: str, items: Any) -> int:
    items = list(items) if not isinstance(items, (list, tuple)) else items
    return sum(len(x) if isinstance(x, str) else 16 for x in items) + len(sep) * max(len(items) - 1, 0)


def _indent(text: str, width: Any = 4, first: bool = False, blank: bool = False) -> str:
    lines = str(text).count("\n") + 1
    _bounded(len(str(text)) + lines * (width if isinstance(width, int) else len(str(width))), "indent")
    return jinja2.filters.do_indent(text, width, first, blank)


def _center(text: Any, width: int = 80) -> str:
    _bounded(width, "center")
    return jinja2.filters.do_center(text, width)


@jinja2.pass_eval_context
def _replace(eval_ctx: Any, text: Any, old: str, new: str, count: int | None = None) -> str:
    _bounded(_replaced_size(str(text), str(old), str(new), -1 if count is None else count), "replace")
    return jinja2.filters.do_replace(eval_ctx, text, old, new, count)


@jinja2.pass_eval_context
def _join(eval_ctx: Any, value: Any, d: str = "", attribute: Any = None) -> str:
    value = list(value)
    if attribute is None:
        _bounded(_joined_size(str(d), value), "join")
    return jinja2.filters.do_join(eval_ctx, value, d, attribute)


def _format(value: str, *args: Any, **kwargs: Any) -> str:
    _format_widths(str(value), args or kwargs)
    return jinja2.filters.do_format(value, *args, **kwargs)



class _Limited(ImmutableSandboxedEnvironment):
    """The sandbox, with everything that sizes its output bounded before it allocates: `*`, `**`, `%`, the
    `indent`/`center`/`replace`/`join`/`format`/`tojson` filters and the str methods that pad, replace or join
    (a template cannot build a string, list or number of gigabytes inside one call)."""

    intercepted_binops = frozenset(["*", "**", "%"])

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(n, int) and len(seq) * n > RENDER_CHARS:
                    raise TemplateLimit(f"the template repeats a value into more than {RENDER_CHARS:,} items")
        elif operator == "**" and isinstance(right, int) and abs(right) > 1024:
            raise TemplateLimit(f"the template raises a number to the power {right}")
        elif operator == "%" and isinstance(left, str):
            _format_widths(left, right)
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 - jinja's names
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, str):
            _string_call(getattr(__obj, "__name__", ""), owner, args)
        return super().call(__context, __obj, *args, **kwargs)

    def wrap_str_format(self, value: Any) -> Any:
        wrapped = super().wrap_str_format(value)
        if wrapped is not None:  # `'{:>999999999}'.format(x)`: checked when the method is looked up
            _brace_widths(value.__self__)
        return wrapped


@lru_cache(maxsize=16)
def compile_template(source: str) -> jinja2.Template:
    """A chat template compiled once per process (workers compile their own)."""
    env = _Limited(trim_blocks=True, lstrip_blocks=True, extensions=[_Generation, jinja2.ext.loopcontrols])
    env.filters.update(tojson=_tojson, indent=_indent, center=_center, replace=_replace, join=_join, format=_format)
    # `strftime_now` is given with every render (`Clock`): the day a template writes is pinned, never the machine's.
    env.globals.update(raise_exception=_raise, dict=_Dict(), namespace=_Namespace, range=_Range)
    return env.from_string(source)


class Clock:
    """`strftime_now` for templates: the pinned day at midnight (`date`, YYYY-MM-DD), or with None the machine's
    clock, as transformers does (only when asked: `--date today`)."""

    def __init__(self, date: str | None) -> None:
        self.date = date
        try:
            self.at = datetime.strptime(date, "%Y-%m-%d") if date else None
        except ValueError:
            raise PrepError(f"--date {date}: must be a day as YYYY-MM-DD, or `today`") from None

    def __call__(self, fmt: str) -> str:
        return (self.at or datetime.now()).strftime(fmt)


def render_chat(source: str, messages: Sequence[Message], tools: list[dict[str, Any]] | None, generation: bool,
                variables: dict[str, Any]) -> str:
    """`apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=generation, **kwargs)`:
    keys whose value is None are left out, reasoning is passed under all its names, and `variables` (the special
    tokens, the template arguments and `strftime_now`) are in scope."""
    chat = []
    for m in messages:
        message = {k: v for k, v in m.items() if v is not None}
        # templates read `reasoning_content` (gpt-oss reads `thinking`): the record's is given under every name
        reasoning = next((message[k] for k in REASONING if message.get(k) is not None), None)
        if reasoning is not None:
            message = {"thinking": reasoning, **message, "reasoning_content": reasoning}
        chat.append(message)
    _deadline[0] = time.monotonic() + RENDER_SECONDS
    pieces, size = [], 0
    for piece in compile_template(source).generate(messages=chat, tools=tools, documents=None,
                                                   add_generation_prompt=generation, **variables):
        pieces.append(piece)
        size += len(piece)
        if size > RENDER_CHARS:
            raise TemplateLimit(f"the template wrote more than {RENDER_CHARS:,} characters for one conversation")
        _in_time()
    return "".join(pieces)


class JinjaTemplate:
    """The tokenizer's own chat template, rendered sandboxed, with `tools` passed through.

    Spans without re-tokenizing: for each assistant message i the conversation up to it is rendered
    with the generation prompt under the same template arguments; the answer (the trained span) runs
    from where that text ends in the full render to the first end-of-turn token after the message's
    content. Where the full render does not hold the whole generation prompt at that turn (Qwen3 with
    enable_thinking=false writes its empty think block in the generation prompt only), the answer starts
    after the role header the two share; where the earlier messages themselves render differently, the
    row is refused (`template_not_prefix_stable`). Templates that rewrite earlier turns (Qwen3 drops
    old reasoning) still get exact ids, since only the full render is tokenized, and correct labels,
    since each answer is located in the full render itself. Every message's content must appear in
    order, and tool definitions and calls must appear, or the row is refused: a template that silently
    drops what the user wrote (tools on a template without tool support) never trains.
    """

    name = "tokenizer"
    tools = True

    def __init__(self, source: str, tool_source: str | None, variables: dict[str, Any], owner: str,
                 added_tokens: Sequence[str], kwargs: dict[str, Any] | None = None, date: str | None = None,
                 name: str = "tokenizer") -> None:
        self.source, self.tool_source = source, tool_source or source
        self.name = name
        self.kwargs = dict(kwargs or {})  # --template-kwargs: what apply_chat_template(**kwargs) passes
        self.clock = Clock(date)
        # apply_chat_template's render variables: the special tokens map, then the caller's arguments over it
        self.variables = {**variables, **self.kwargs, "strftime_now": self.clock}
        self.owner = owner
        self.label = f"{name} ({owner})"
        self.developer = "developer" in self.source  # the template has a place for that role itself
        self.eot = self._probe_eot(sorted(added_tokens, key=len, reverse=True))
        self.reads_reasoning = self._probe_reasoning()
        self.string_arguments = self._probe_arguments()

    @property
    def sha256(self) -> str:
        return hashlib.sha256((self.source + "\0" + self.tool_source).encode()).hexdigest()

    def text(self, messages: Sequence[Message], tools: list[dict[str, Any]] | None, generation: bool,
             kwargs: dict[str, Any] | None = None) -> str:
        """Exactly `apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=..., **kwargs)`
        with the run's template arguments under the row's (`kwargs`)."""
        clean = [{k: v for k, v in m.items() if k != "weight"} for m in messages]
        variables = {**self.variables, **kwargs} if kwargs else self.variables
        return render_chat(self.tool_source if tools else self.source, clean, tools, generation, variables)

    def _probe_reasoning(self) -> bool:
        """Whether the template writes an assistant message's `reasoning_content` (Qwen3's does; SmolLM3's and
        Qwen2.5's do not: prep then writes the reasoning into the content as a think block, design §4)."""
        try:
            text = self.text([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "A",
                              "reasoning_content": _PROBE_REASONING}], None, False)
        except Exception:  # noqa: BLE001 - a template is user code; one that fails on reasoning does not read it
            return False
        return _PROBE_REASONING in text

    def _probe_arguments(self) -> bool:
        """Whether the template wants tool-call `arguments` as a JSON string: a call rendered with its arguments as
        an object shows no JSON of them (a dict repr, a double encoding, nothing) and rendered as a string does.
        Qwen2.5's, Hermes' and Llama 3.1's templates apply `tojson` to an object (then a string would be encoded
        twice); templates that concatenate `arguments` as text (DeepSeek-V3's) need the string."""

        def shown(arguments: Any) -> str:
            call = {"id": "call_0", "type": "function", "function": {"name": "prep_probe_tool", "arguments": arguments}}
            chat = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "", "tool_calls": [call]}]
            tool = [{"type": "function", "function": {"name": "prep_probe_tool", "parameters": {"type": "object"}}}]
            for tools in (tool, None):
                try:
                    return self.text(chat, tools, False)
                except Exception:  # noqa: BLE001 - a template is user code; one that fails on this form does not take it
                    continue
            return ""

        as_object = shown(dict(_PROBE_ARGUMENTS))
        if "PREP_PROBE_VALUE" in as_object and "\\\"prep_probe" not in as_object and "{'prep_probe'" not in as_object:
            return False
        return _PROBE_ARGUMENTS_JSON in shown(_PROBE_ARGUMENTS_JSON)

    def prepare(self, messages: Sequence[Message]) -> tuple[list[Message], Finding | None]:
        """The messages as the template is given them: reasoning folded into the content where the template does
        not write it, a developer message as the system message where it has no developer role, and tool-call
        arguments as JSON text where the template wants a string (records hold an object)."""
        out, note = list(messages), None
        if self.string_arguments and any(m.get("tool_calls") for m in out):
            out = [{**m, "tool_calls": [{**c, "function": {**c["function"], "arguments": json.dumps(
                c["function"]["arguments"], ensure_ascii=False)}} for c in m["tool_calls"]]} if m.get("tool_calls")
                   else m for m in out]
        if not self.developer and any(m["role"] == "developer" for m in out):
            out, note = developer_as_system(out, self.label)
        if not self.reads_reasoning and any(m.get("reasoning_content") is not None for m in out):
            out = fold_reasoning(out)
        return out, note

    def _probe_eot(self, added: list[str]) -> str:
        probe = _PROBE_ANSWER
        try:
            text = self.text([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": probe}], None, False)
            if probe not in text:  # a processor's template that reads text from content parts only (LLaVA's)
                text = self.text([{"role": "user", "content": [{"type": "text", "text": "Hi"}]},
                                  {"role": "assistant", "content": [{"type": "text", "text": probe}]}], None, False)
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

    def render(self, messages: Sequence[Message], tools: list[dict[str, Any]] | None = None,
               kwargs: dict[str, Any] | None = None) -> Rendered:
        messages, note = self.prepare(messages)
        full = self._render(messages, tools, False, kwargs)
        turns: list[Turn] = []
        pos = 0
        for i, m in enumerate(messages):
            if m["role"] != "assistant":
                found = _find(full, _visible(m), pos)
                if found is None:
                    raise self._dropped(i, m["role"])
                turns.append(Turn(i, m["role"], found, weight=m.get("weight")))
                pos = found[1]
                continue
            start = self._start(full, messages, i, tools, kwargs)
            if start < pos:
                raise row_error("template_mismatch", f"the chat template of {self.label} writes message {i} after "
                                f"the point where assistant message {i + 1} starts", f"$.messages[{i}]")
            found = _find(full, _visible(m), start)
            if found is None:
                raise self._dropped(i, "assistant")
            at, stop = found
            close = full.find(self.eot, stop)
            following = next(iter(_visible(messages[i + 1])), "") if i + 1 < len(messages) else ""
            if close < 0 or (following and following in full[stop:close]):
                raise row_error("template_mismatch", f"the chat template of {self.label} does not close assistant "
                                f"message {i + 1} with {self.eot}", f"$.messages[{i}]")
            end = close + len(self.eot)
            for call in m.get("tool_calls") or ():
                if call["function"]["name"] not in full[start:end]:
                    raise row_error("template_drops_content", f"the chat template of {self.label} does not write "
                                    f"the tool call {call['function']['name']!r} of message {i + 1}",
                                    f"$.messages[{i}].tool_calls",
                                    hint="use a tool-aware template (e.g. --template chatml)")
            turns.append(Turn(i, "assistant", (at, stop), (start, end), m.get("weight"), think_span(full, start, end)))
            pos = end
        if tools and self._same(full, messages, None, kwargs):
            raise row_error("template_drops_content", f"the chat template of {self.label} does not write the tool "
                            "definitions", "$.tools",
                            hint="use a tool-aware template (e.g. --template chatml), or drop the tools")
        if any(m.get("tool_calls") for m in messages) and self._same(
                full, [{k: v for k, v in m.items() if k != "tool_calls"} for m in messages], tools, kwargs):
            at = next(i for i, m in enumerate(messages) if m.get("tool_calls"))
            raise row_error("template_drops_content", f"the chat template of {self.label} does not write tool calls",
                            f"$.messages[{at}].tool_calls", hint="use a tool-aware template (e.g. --template chatml)")
        return Rendered(full, turns, [note] if note else [])

    def _start(self, full: str, messages: Sequence[Message], i: int, tools: list[dict[str, Any]] | None,
               kwargs: dict[str, Any] | None) -> int:
        """Where assistant message i's trained span starts in `full`: where the generation prompt, rendered after
        messages 1..i with the same arguments, ends (what the model is given, it never writes). Where the turn as
        the full render writes it does not hold the whole generation prompt (Qwen3's with enable_thinking=false
        has an empty think block in the generation prompt only), the span starts after the part the two share
        that is the turn's role header: it ends before any think block (the model's own, trained as reasoning)
        and before the content, which is told apart by rendering the turn with a probe in its place."""
        if not i:
            return 0
        prompt = self._render(messages[:i], tools, True, kwargs)
        if full.startswith(prompt):
            return len(prompt)
        before = self._render(messages[:i], tools, False, kwargs)
        probed = [*messages[:i], {**{k: v for k, v in messages[i].items() if k not in REASONING},
                                  "content": _PROBE_ANSWER}, *messages[i + 1:]]
        try:
            text = self.text(probed, tools, False, kwargs)
        except Exception:  # noqa: BLE001 - a template is user code; one that fails on the probe shows no header
            text = ""
        n = len(before)
        header = os.path.commonprefix([prompt[n:], full[n:], text[n:max(text.find(_PROBE_ANSWER, n), n)]])
        header = header.split(THINK_OPEN, 1)[0]
        if not (header and prompt.startswith(before) and full.startswith(before) and text.startswith(before)):
            raise row_error("template_not_prefix_stable",
                            f"the chat template of {self.label} renders messages 1-{i} differently once assistant "
                            f"message {i + 1} follows, so prep cannot tell where that turn starts",
                            f"$.messages[{i}]")
        return n + len(header)

    def _same(self, full: str, messages: Sequence[Message], tools: list[dict[str, Any]] | None,
              kwargs: dict[str, Any] | None) -> bool:
        """Whether the conversation renders to `full` without what was taken out: then the template ignores it."""
        try:
            return self.text(messages, tools, False, kwargs) == full
        except Exception:  # noqa: BLE001 - a template may refuse the reduced conversation: then it uses the part
            return False

    def _render(self, messages: Sequence[Message], tools: list[dict[str, Any]] | None, generation: bool,
                kwargs: dict[str, Any] | None = None) -> str:
        try:
            return self.text(messages, tools, generation, kwargs)
        except Exception as e:  # noqa: BLE001 - template code raises anything (raise_exception, TypeError, ...)
            raise row_error("template_error", f"the chat template of {self.label} failed: {e}", "$.messages") from None

    def _dropped(self, i: int, role: str) -> RowError:
        return row_error("template_drops_content", f"the chat template of {self.label} does not write the content "
                         f"of message {i + 1} ({role})", f"$.messages[{i}].content",
                         hint="use a template that renders every role (e.g. --template "
                         "chatml)")


def _visible(m: Message) -> list[str]:
    """The parts of a message a template must write verbatim, in order (up to surrounding whitespace): its content,
    or the text of its content parts (a row with media: design §2a); reasoning before `</think>` is left out
    because reasoning templates drop it from earlier turns."""
    content = m["content"]
    if not isinstance(content, str):
        return [t for p in content if p.get("type") == "text" and (t := p["text"].strip())]
    if m["role"] == "assistant" and "</think>" in content:
        content = content.rsplit("</think>", 1)[1]
    return [content.strip()] if content.strip() else []


def _find(full: str, texts: list[str], pos: int) -> tuple[int, int] | None:
    """Where `texts` appear one after another in `full` from `pos`: from the first's start to the last's end (an
    empty span at `pos` when there is no text); None when one is missing."""
    start = end = pos
    for k, text in enumerate(texts):
        at = full.find(text, end)
        if at < 0:
            return None
        start = at if k == 0 else start
        end = at + len(text)
    return start, end
