"""The canonical records every reader emits and every writer takes (design §2, TRL-compatible).

    chat        {"id", "messages": [message], "tools"?: [tool]}
    preference  {"id", "prompt": [message], "chosen": [message], "rejected": [message], "tools"?}
    feedback    {"id", "prompt": [message], "completion": [message], "label": bool, "tools"?}
    text        {"id", "text": str}

A message is {"role": system|developer|user|assistant|tool, "content": str} plus, where they apply,
"weight" (0|1 on any role: 1 trains the message, 0 masks it; without one an assistant message is trained and
any other is not), "reasoning_content" (assistant: the reasoning before the answer, as
DeepSeek, vLLM, Qwen3's template and transformers name it), "tool_calls" (assistant), "tool_call_id"
and "name". A record may also carry `columns`: the input columns kept with `--keep-columns`.
A tool call is {"id", "type": "function", "function": {"name", "arguments": dict}}: arguments are
a parsed object, as transformers chat templates and TRL expect; the openai writer turns them back
into a JSON string. A tool is {"type": "function", "function": {"name", "description"?, "parameters"?}}.

The helpers below are what format readers use to pull typed fields out of a row and raise a
`RowError` with the field's JSON path when a row does not fit.
"""

from __future__ import annotations

import functools
import json
import os
import re
import threading
from collections.abc import Callable, Sequence
from typing import Any

from prep.core import media as md
from prep.core.findings import RowError, Source, row_error

ROLES = ("system", "developer", "user", "assistant", "tool")
# What a message's role may be: ROLES and the legacy "function" (read as "tool"), as schemas/common.json lists them.
ACCEPTED_ROLES = (*ROLES, "function")
# A message's reasoning goes by these names in the wild; records call it `reasoning_content`.
REASONING = ("reasoning_content", "reasoning", "thinking")
# The message keys readers map (others are counted as dropped fields unless kept).
MESSAGE_KEYS = frozenset({"role", "content", "name", "tool_calls", "function_call", "tool_call_id", "weight",
                          *REASONING})
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
_THINK = re.compile(r"\s*<think>(.*?)</think>", re.S)
_HALF_THINK = re.compile(r"(.*?)</think>", re.S)  # the opening tag was in the generation prompt
KINDS = ("chat", "preference", "feedback", "text")
Message = dict[str, Any]
Record = dict[str, Any]


def kind_of(record: Record) -> str:
    """Which of the four record kinds this is."""
    if "messages" in record:
        return "chat"
    if "chosen" in record:
        return "preference"
    if "completion" in record:
        return "feedback"
    return "text"


def record_id(row: Any, source: Source, key: str = "id") -> str:
    """The row's own id when it has one, else `<file name>:<row number>` (stable across runs)."""
    if isinstance(row, dict) and (own := own_id(row.get(key))) is not None:
        return own
    return f"{_basename(source.file)}:{source.row}"


def own_id(value: Any) -> str | None:
    """An id value as a row's own id: a string or integer (not a boolean) that is not blank; else None."""
    if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value).strip():
        return str(value)
    return None


_basename = functools.lru_cache(maxsize=64)(os.path.basename)  # runs once per row, on a few file names


def require_object(row: Any, what: str) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise row_error("not_an_object", f"a row must be a JSON object ({what} format), got {type_name(row)}")
    return row


def type_name(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


def get(row: dict[str, Any], key: str, path: str = "$", *, required: bool = True, hint: str = "") -> Any:
    """row[key], or a `missing_field` finding; null counts as absent (Arrow fills absent fields with null)."""
    value = row.get(key)
    if value is None and required:
        raise row_error("missing_field", f"required field {key!r} is missing", f"{path}.{key}",
                        hint=hint or f"add {key!r} to " + ("the row" if path == "$" else path))
    return value


def text(value: Any, path: str, *, allow_empty: bool = True) -> str:
    """A string field; numbers are not silently stringified."""
    if not isinstance(value, str):
        raise row_error("wrong_type", f"expected a string, got {type_name(value)}", path,
                        hint="make this field a string")
    if not allow_empty and not value.strip():
        raise row_error("empty_value", "the text is empty", path)
    return value


def loads(text: str, start: int | None = None) -> Any:
    """JSON text held in a field (tool calls, tools, arguments): nesting too deep for Python is a ValueError like any
    other bad JSON, so it is that row's finding rather than the end of the run. With `start`, `raw_decode` from
    there: (value, end)."""
    try:
        return json.loads(text) if start is None else _RAW_DECODE(text, start)
    except RecursionError:
        raise ValueError("it nests arrays or objects deeper than can be read") from None


_RAW_DECODE = json.JSONDecoder().raw_decode


def json_value(value: Any, path: str, expect: type) -> Any:
    """A list/object field; a string holding JSON (CSV cells, LLaMA-Factory `tools`) is parsed."""
    if isinstance(value, str) and value.strip()[:1] in ("[", "{"):
        try:
            value = loads(value)
        except ValueError as e:
            raise row_error("bad_json", f"field holds text that is not valid JSON: {e}", path,
                            hint="fix the JSON in this field") from None
    if not isinstance(value, expect):
        want = "an array" if expect is list else "an object"
        raise row_error("wrong_type", f"expected {want}, got {type_name(value)}", path, hint=f"make this field {want}")
    return value


def boolean(value: Any, path: str) -> bool:
    """A label: true/false, or the strings "true"/"false" that CSV cells carry."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise row_error("wrong_type", f"expected true or false, got {json.dumps(value)}", path,
                    hint="labels must be booleans (true = desirable)")


# Fields a reader or writer leaves behind, collected per row (a thread's own list: tokenize reads in a thread).
_dropped = threading.local()


def note_dropped(name: str) -> None:
    """Say that field `name` of the row being read or written was not carried (counted as a dropped field)."""
    names = getattr(_dropped, "names", None)
    if names is not None:
        names.append(name)


def collecting(fn: Callable[..., Any], *args: Any) -> tuple[Any, list[str]]:
    """`fn(*args)` and the fields it noted as dropped."""
    _dropped.names = []
    try:
        return fn(*args), _dropped.names
    finally:
        _dropped.names = None


def default_weight(m: Message) -> bool:
    """Whether the message's weight is its role's default (an assistant message trained, any other not): what
    formats without per-message weights can write."""
    return m.get("weight", 1 if m["role"] == "assistant" else 0) == (1 if m["role"] == "assistant" else 0)


def split_think(content: str) -> tuple[str | None, str]:
    """A leading `<think>…</think>` block split off the content: (reasoning, answer); (None, content) without one.
    The inverse of `join_think`: one newline inside each tag and the blank line after the block are markup. An
    answer with a closing `</think>` and no opening tag (a model's output whose `<think>` was in the generation
    prompt) splits at its first `</think>`."""
    m = _THINK.match(content)
    if m is None and THINK_CLOSE in content and THINK_OPEN not in content.split(THINK_CLOSE, 1)[0]:
        m = _HALF_THINK.match(content)
    if m is None:
        return None, content
    reasoning = m.group(1)
    reasoning = reasoning[1:] if reasoning.startswith("\n") else reasoning
    reasoning = reasoning[:-1] if reasoning.endswith("\n") else reasoning
    rest = content[m.end():]
    return reasoning, rest[2:] if rest.startswith("\n\n") else rest.lstrip("\n")


def join_think(reasoning: str, content: str) -> str:
    """Reasoning written before the answer as Qwen3 and DeepSeek-R1 write it (and LLaMA-Factory reads it)."""
    return f"{THINK_OPEN}\n{reasoning}\n{THINK_CLOSE}\n\n{content}"


def fold_reasoning(messages: Sequence[Message]) -> list[Message]:
    """The messages with each reasoning written into its content as a leading think block, for templates that
    do not write `reasoning_content` themselves."""
    return [{**{k: v for k, v in m.items() if k != "reasoning_content"},
             "content": join_think(m["reasoning_content"], m["content"])}
            if m.get("reasoning_content") is not None else m for m in messages]


def with_reasoning(m: Message, fmt: str, path: str) -> str:
    """The content of `m` with its reasoning as a leading think block, for formats without a reasoning field."""
    reasoning = m.get("reasoning_content")
    if reasoning is None:
        return m["content"]
    if THINK_CLOSE in reasoning:
        raise not_expressible(fmt, f"reasoning that contains {THINK_CLOSE}", f"{path}.reasoning_content",
                              hint="convert to openai or trl")
    return join_think(reasoning, m["content"])


def message(role: str, content: str, **extra: Any) -> Message:
    if not extra:  # most messages: no dict comprehension to run
        return {"role": role, "content": content}
    return {"role": role, "content": content, **{k: v for k, v in extra.items() if v is not None}}


def tool_call(name: str, arguments: dict[str, Any], call_id: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def arguments(value: Any, path: str) -> dict[str, Any]:
    """Tool-call arguments as an object; OpenAI sends them as a JSON string."""
    if isinstance(value, str):
        try:
            value = loads(value) if value.strip() else {}
        except ValueError as e:
            raise row_error("bad_tool_arguments", f"tool-call arguments are not valid JSON: {e}", path) from None
    if not isinstance(value, dict):
        raise row_error("bad_tool_arguments", f"tool-call arguments must be an object, got {type_name(value)}", path)
    return value


CALL_HINT = "write the call as {\"name\": ..., \"arguments\": {...}}"


def named_calls(value: str, path: str, what: str, *, many: bool) -> list[tuple[str, dict[str, Any]]]:
    """The calls of a `{"name", "arguments"}` JSON text (ShareGPT's function_call turns, LLaMA-Factory's tool_call
    parts), each as (name, arguments); with `many`, a JSON list of such calls is read too (each path indexed)."""
    try:
        parsed = loads(value)
    except ValueError as e:
        raise row_error("bad_tool_call", f"{what} is not JSON: {e}", path, hint=CALL_HINT) from None
    listed = many and isinstance(parsed, list)
    calls = []
    for k, call in enumerate(parsed if listed else [parsed]):
        where = f"{path}[{k}]" if listed else path
        if not isinstance(call, dict) or not isinstance(call.get("name"), str):
            raise row_error("bad_tool_call", "a tool call needs a string name", where, hint=CALL_HINT)
        calls.append((call["name"], arguments(call.get("arguments", {}), f"{where}.arguments")))
    return calls


def tools(value: Any, path: str) -> list[dict[str, Any]] | None:
    """Tool definitions in OpenAI form; bare function specs (LLaMA-Factory, glaive) are wrapped."""
    if value is None or value == "" or value == []:
        return None
    specs = json_value(value, path, list)
    out = []
    for i, spec in enumerate(specs):
        where = f"{path}[{i}]"
        if not isinstance(spec, dict):
            raise row_error("bad_tools", f"a tool must be an object, got {type_name(spec)}", where)
        function = spec.get("function") if spec.get("type") == "function" else spec
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise row_error("bad_tools", "a tool needs a function with a string name", where)
        out.append({"type": "function", "function": function})
    return out


def unknown_role(role: Any, roles: Sequence[str]) -> tuple[str, str]:
    """The message and hint for a role not in `roles`: the same words from validate's schema check and from the
    readers every other verb (convert, dedup, tokenize, ...) goes through."""
    return f"unknown role {json.dumps(role, ensure_ascii=True, default=str)}", f"use one of {', '.join(roles)}"


def parse_messages(value: Any, path: str, slots: list[md.Item | None], root: str | None = None) -> list[Message]:
    """An OpenAI/TRL message list into canonical messages, linking tool results to their calls.

    Accepts what those formats allow: content as text parts, `content: null` beside tool calls,
    the legacy `function` role and `function_call`; call ids missing from the data are generated
    as `call_<n>` and a tool result without `tool_call_id` answers the oldest unanswered call.
    Media parts become placeholders in the text and their items are added to `slots` (`content_parts`).
    """
    items = json_value(value, path, list)
    messages: list[Message] = []
    calls = 0
    open_calls: list[str] = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise row_error("wrong_type", f"a message must be an object, got {type_name(item)}", f"{path}[{i}]",
                            hint="each message is {\"role\": ..., \"content\": ...}")
        role = item.get("role")
        if role == "function":
            role = "tool"
        if role not in ROLES:  # paths are spelled out only for an error or a field most messages lack
            where = f"{path}[{i}]"
            get(item, "role", where)
            words, hint = unknown_role(role, ACCEPTED_ROLES)
            raise row_error("bad_role", words, f"{where}.role", hint=hint)
        content = item.get("content")
        if len(item) == 2 and content.__class__ is str and role != "tool":
            messages.append({"role": role, "content": content})  # most messages: role and text, nothing to check
            continue
        extra: dict[str, Any] = {}
        raw_calls = item.get("tool_calls") or ([item["function_call"]] if item.get("function_call") else [])
        if raw_calls:
            where = f"{path}[{i}]"
            if role != "assistant":
                raise row_error("bad_tool_call", f"a {role} message cannot make tool calls",
                                f"{where}.tool_calls", hint="only assistant messages carry tool_calls")
            extra["tool_calls"] = []
            for j, call in enumerate(json_value(raw_calls, f"{where}.tool_calls", list)):
                cw = f"{where}.tool_calls[{j}]"
                call = json_value(call, cw, dict)
                function = call.get("function", call)
                if not isinstance(function, dict) or not isinstance(function.get("name"), str):
                    raise row_error("bad_tool_call", "a tool call needs a function with a string name", cw)
                call_id = call.get("id") if isinstance(call.get("id"), str) and call.get("id") else f"call_{calls}"
                calls += 1
                open_calls.append(call_id)
                extra["tool_calls"].append(
                    tool_call(function["name"], arguments(function.get("arguments", {}), f"{cw}.function.arguments"),
                              call_id))
        if content is None and (raw_calls or role == "assistant" and "tool_calls" in item):
            content = ""
        if not isinstance(content, str):
            content = content_parts(content, f"{path}[{i}].content", slots, root)
        if role == "tool":
            where = f"{path}[{i}]"
            call_id = item.get("tool_call_id")
            if call_id is None and open_calls:
                call_id = open_calls[0]
            if call_id in open_calls:
                open_calls.remove(call_id)
            extra["tool_call_id"] = text(call_id, f"{where}.tool_call_id") if call_id is not None else None
        if item.get("name") is not None:
            extra["name"] = text(item["name"], f"{path}[{i}].name")
        if len(item) > 2:  # most messages are just role and content
            _message_extras(item, role, f"{path}[{i}]", extra)
        weight = item.get("weight")
        if weight is not None:
            if type(weight) is not int or weight not in (0, 1):  # Together's rule: the integer 0 or 1, on any role
                raise row_error("bad_weight", f"weight must be the integer 0 or 1, got {weight!r} on {role}",
                                f"{path}[{i}].weight")
            extra["weight"] = weight
        messages.append(message(role, content, **extra))
    return messages


def _message_extras(item: dict[str, Any], role: str, path: str, extra: dict[str, Any]) -> None:
    """An assistant message's reasoning, under any of its names, into `extra`; keys no reader maps (and reasoning
    on another role) noted as dropped."""
    if role == "assistant":
        for key in REASONING:
            if item.get(key) is not None:
                extra["reasoning_content"] = text(item[key], f"{path}.{key}")
                break
    for key in item:
        if key not in MESSAGE_KEYS or role != "assistant" and key in REASONING and item[key] is not None:
            note_dropped(key)


# Media content parts: OpenAI/Together's (the medium at a URL under the part's own key), and TRL's/transformers'
# `{"type": "image"}` (bare: the row's column names the file; or with a url/path/image value).
_URL_PARTS = {"image_url": "image", "video_url": "video"}


def content_parts(value: Any, path: str, slots: list[md.Item | None], root: str | None) -> str:
    """A list of content parts as one text, each medium a placeholder (`<image>`) whose item (None for a bare part)
    is added to `slots`; adjacent text parts are joined, as templates render them back to back."""
    if value is None:
        raise row_error("missing_field", "message has no content", path, hint="give every message a string content")
    if not isinstance(value, list):
        return text(value, path)
    out = []
    for k, part in enumerate(value):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            out.append(part["text"])
            continue
        if kind not in (*_URL_PARTS, "input_audio", *md.MEDIA_TYPES):
            shown = kind if isinstance(part, dict) else type_name(part)
            raise row_error("unsupported_content", f"content part of type {shown!r} is not supported", f"{path}[{k}]")
        out.append(md.PLACEHOLDERS[_URL_PARTS.get(kind, "audio" if kind == "input_audio" else kind)])
        slots.append(_part_item(part, kind, f"{path}[{k}]", root))
    return "".join(out)


def _part_item(part: dict[str, Any], kind: str, path: str, root: str | None) -> md.Item | None:
    if kind in _URL_PARTS:
        url = part.get(kind)
        where = f"{path}.{kind}"
        if isinstance(url, dict):
            url, where = url.get("url"), f"{where}.url"
        return md.reference(_URL_PARTS[kind], url, where, root)
    if kind == "input_audio":
        audio = part.get("input_audio")
        data = audio.get("data") if isinstance(audio, dict) else None
        form = audio.get("format") if isinstance(audio, dict) else None
        if not isinstance(data, str) or not data or not isinstance(form, str) or not form:
            raise row_error("bad_media", "input_audio needs base64 `data` and a `format` (wav or mp3)",
                            f"{path}.input_audio", hint='write {"data": BASE64, "format": "wav"}')
        return {"type": "audio", "url": f"data:audio/{form};base64,{data}", "at": f"{path}.input_audio.data"}
    for key in ("url", "path", kind):  # transformers' chat format names the medium beside the type
        if isinstance(part.get(key), str):
            return md.reference(kind, part[key], f"{path}.{key}", root)
    return None


def require_messages(messages: list[Message], path: str) -> list[Message]:
    if not messages:
        raise row_error("empty_value", "the conversation has no messages", path,
                        hint="give the row at least one message")
    return messages


def split_common_prefix(chosen: list[Message], rejected: list[Message]) -> tuple[list[Message], list[Message], list[Message]]:
    """Implicit-prompt preference data: the shared leading messages are the prompt (as TRL's extract_prompt)."""
    n = 0
    while n < min(len(chosen), len(rejected)) - 1 and chosen[n] == rejected[n]:
        n += 1
    return chosen[:n], chosen[n:], rejected[n:]


def with_tools(record: Record, tool_list: list[dict[str, Any]] | None) -> Record:
    if tool_list:
        record["tools"] = tool_list
    return record


def not_expressible(fmt: str, what: str, path: str = "$", *, hint: str | None = None) -> RowError:
    """A writer's refusal: the target format cannot hold this record without losing something."""
    return row_error("not_expressible", f"{fmt} cannot express {what}", path, hint=hint)
