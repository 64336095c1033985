"""Tool calls written into a message's text, read into structured `tool_calls` (`--tool-calls DIALECT`) and written
back into text (`prep convert --write-tool-calls DIALECT`), in the four text forms tool-calling data comes in.

Much tool-calling data holds its calls as text in the assistant's content and its results as text in a user or
tool message. Read as plain text such rows train, but a converted dataset loses its structured calls and a template
with native tool rendering writes them its own way around the text. Reading them makes each call an OpenAI tool
call (ids `call_<n>` through the conversation, as the readers number them) and each result a `tool` message that
answers the oldest unanswered call; a call that does not parse rejects its row with `bad_text_tool_call`, naming
the message. Writing is the exact inverse: reading a written record gives back its calls (name and arguments) and
results. Only messages that hold a dialect's marker are touched; `auto` picks the dialect per message by marker.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from prep.core import records as r
from prep.core.findings import RowError, row_error

Call = tuple[str, dict[str, Any]]  # a function's name and its arguments
Schemas = dict[str, dict[str, Any]]  # a tool's name -> its parameters' JSON schema properties


def _bad(why: str, path: str, example: str) -> RowError:
    return row_error("bad_text_tool_call", why, path, hint=f"write the call as {example}, or fix the row by hand "
                     "and convert again")


def _call_object(value: Any, path: str, args_key: str, example: str) -> Call:
    """`{"name": str, args_key: object or JSON string}` as a call."""
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        raise _bad("a tool call needs a string \"name\"", path, example)
    other = "parameters" if args_key == "arguments" else "arguments"  # data written for the other dialect
    try:
        return value["name"], r.arguments(value.get(args_key, value.get(other, {})), path)
    except RowError:
        raise _bad(f"the call's {args_key} are not a JSON object", path, example) from None


def _tool_responses(content: str) -> list[str] | None:
    """The results of a message made only of `<tool_response>` blocks (Hermes, Qwen), each without the newline
    the templates put inside the tags; None for any other message."""
    if content.count("<tool_response>") != content.count("</tool_response>"):  # (also keeps the scan linear)
        return None
    out, pos = [], 0
    for m in _RESPONSE.finditer(content):  # blocks with nothing but whitespace between (a fullmatch backtracked
        if content[pos:m.start()].strip():  # exponentially on a message of many blocks and a word after them)
            return None
        out.append(_unwrap(m.group(1)))
        pos = m.end()
    return out if out and not content[pos:].strip() else None


_RESPONSE = re.compile(r"<tool_response>(.*?)</tool_response>", re.S)


def _unwrap(text: str) -> str:
    """The text between two tags, without the one newline a writer puts after the opening and before the closing."""
    text = text[1:] if text.startswith("\n") else text
    return text[:-1] if text.endswith("\n") else text


class Hermes:
    """Hermes function-calling data and Qwen2.5's template: a JSON object per call in `<tool_call>` tags after the
    text, each result in `<tool_response>` tags.

        assistant: 'Let me look.\\n<tool_call>\\n{"name": "get_weather", "arguments": {"city": "Paris"}}\\n</tool_call>'
        tool:      '<tool_response>\\n{"temp": 21}\\n</tool_response>'
    """

    name = "hermes"
    example = '<tool_call>{"name": ..., "arguments": {...}}</tool_call>'

    def holds(self, content: str) -> bool:
        return "<tool_call>" in content

    def read(self, content: str, path: str, schemas: Schemas) -> tuple[str, list[Call]]:
        if content.count("<tool_call>") != content.count("</tool_call>"):  # before a scan that is then linear
            raise _bad("a <tool_call> tag is not closed (or a </tool_call> not opened)", path, self.example)
        calls, text, pos = [], [], 0
        for m in re.finditer(r"<tool_call>(.*?)</tool_call>", content, re.S):
            text.append(content[pos:m.start()])
            pos = m.end()
            try:
                value = r.loads(m.group(1))
            except ValueError as e:
                raise _bad(f"the text of <tool_call> {len(calls) + 1} is not JSON: {e}", path, self.example) from None
            calls.append(_call_object(value, path, "arguments", self.example))
        rest = "".join([*text, content[pos:]])
        if "<tool_call>" in rest or "</tool_call>" in rest:
            raise _bad("a <tool_call> tag is not closed (or a </tool_call> not opened)", path, self.example)
        return rest.strip(), calls

    def write(self, content: str, calls: list[Call]) -> str:
        return "\n".join([*([content] if content else []), *(
            "<tool_call>\n" + json.dumps({"name": n, "arguments": a}, ensure_ascii=False) + "\n</tool_call>"
            for n, a in calls)])

    def responses(self, content: str) -> list[str] | None:
        return _tool_responses(content) if "<tool_response>" in content else None

    def response(self, content: str) -> str:
        return f"<tool_response>\n{content}\n</tool_response>"


class QwenXml(Hermes):
    """Qwen3-Coder's template: each call a `<function=name>` element in `<tool_call>` tags, one `<parameter=p>` per
    argument (strings as they are, other values as JSON); results as Hermes writes them.

        assistant: '<tool_call>\\n<function=get_weather>\\n<parameter=city>\\nParis\\n</parameter>\\n</function>\\n</tool_call>'

    A value is read as the tool's parameter schema types it (`string`: the text itself), else as JSON where it
    parses (so without `tools` a string argument "5" comes back as the number 5: the dialect cannot tell them apart);
    `True`, `False` and `None`, which later Qwen3-Coder templates write for booleans and null (`| string`), are read
    as those. Values are written as JSON (strings as they are). A `<function=…>` element without the `<tool_call>`
    around it is read too, as vLLM's Qwen3-Coder parser reads it.
    """

    name = "qwen-xml"
    example = "<tool_call>\n<function=NAME>\n<parameter=P>\nVALUE\n</parameter>\n</function>\n</tool_call>"
    _CALL = re.compile(r"(?:<tool_call>\s*)?<function=([^>\n]+)>(.*?)</function>(?:\s*</tool_call>)?", re.S)
    _PARAM = re.compile(r"<parameter=([^>\n]+)>(.*?)</parameter>", re.S)

    def holds(self, content: str) -> bool:
        return "<tool_call>" in content or "<function=" in content

    def read(self, content: str, path: str, schemas: Schemas) -> tuple[str, list[Call]]:
        if content.count("<function=") != content.count("</function>"):  # before a scan that is then linear
            raise _bad("a <function=NAME> element is not closed", path, self.example)
        calls, text, pos = [], [], 0
        for m in self._CALL.finditer(content):
            text.append(content[pos:m.start()])
            pos = m.end()
            name, body = m.group(1).strip(), m.group(2)
            types = schemas.get(name, {})
            if body.count("<parameter=") != body.count("</parameter>"):  # before a scan that is then linear
                raise _bad(f"a <parameter=...> of call {name!r} is not closed", path, self.example)
            args = {}
            for p in self._PARAM.finditer(body):
                key = p.group(1).strip()
                spec = types.get(key)
                args[key] = _xml_value(_unwrap(p.group(2)), spec.get("type") if isinstance(spec, dict) else None)
            if self._PARAM.sub("", body).strip():
                raise _bad(f"call {name!r} holds text outside its <parameter> elements", path, self.example)
            calls.append((name, args))
        rest = "".join([*text, content[pos:]])
        if any(tag in rest for tag in ("<tool_call>", "</tool_call>", "<function=", "</function>")):
            raise _bad("a <tool_call> is not a <function=NAME> element with <parameter=P> elements inside closed tags",
                       path, self.example)
        return rest.strip(), calls

    def write(self, content: str, calls: list[Call]) -> str:
        out = [content + "\n\n" if content.strip() else content]
        for k, (name, args) in enumerate(calls):
            params = "".join(f"<parameter={p}>\n{v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)}\n"
                             "</parameter>\n" for p, v in args.items())
            out.append(("\n" if k else "") + f"<tool_call>\n<function={name}>\n{params}</function>\n</tool_call>")
        return "".join(out)


_PYTHON_WORDS = {"True": True, "False": False, "None": None}


def _xml_value(text: str, kind: Any) -> Any:
    if kind == "string":
        return text
    if text in _PYTHON_WORDS:
        return _PYTHON_WORDS[text]
    try:
        return r.loads(text)
    except ValueError:
        return text


class Glaive:
    """glaive-function-calling-v2: `<functioncall>` and a JSON object whose arguments are a JSON text in single
    quotes (as glaive wrote them; a plain object is read too), a result as `FUNCTION RESPONSE:` and its text.

        assistant: '<functioncall> {"name": "get_weather", "arguments": \\'{"city": "Paris"}\\'}'
        tool:      'FUNCTION RESPONSE: {"temp": 21}'
    """

    name = "glaive"
    example = "<functioncall> {\"name\": ..., \"arguments\": '{...}'}"
    _QUOTED = re.compile(r"\{\s*\"name\"\s*:\s*(\"(?:[^\"\\]|\\.)*\")\s*,\s*\"arguments\"\s*:\s*'(.*)'\s*\}", re.S)
    _PREFIX = "FUNCTION RESPONSE:"

    def holds(self, content: str) -> bool:
        return "<functioncall>" in content

    def read(self, content: str, path: str, schemas: Schemas) -> tuple[str, list[Call]]:
        text, *pieces = content.split("<functioncall>")
        calls = []
        for piece in pieces:
            piece = piece.strip().removesuffix("<|endoftext|>").strip()
            quoted = self._QUOTED.fullmatch(piece)
            if quoted:
                try:
                    calls.append((r.loads(quoted.group(1)), r.loads(quoted.group(2))))
                except ValueError as e:
                    raise _bad(f"the arguments of call {len(calls) + 1} are not JSON: {e}", path, self.example) from None
                if not isinstance(calls[-1][1], dict):
                    raise _bad(f"the arguments of call {len(calls) + 1} are not a JSON object", path, self.example)
                continue
            try:
                value = r.loads(piece)
            except ValueError as e:
                raise _bad(f"call {len(calls) + 1} after <functioncall> is not JSON: {e}", path, self.example) from None
            calls.append(_call_object(value, path, "arguments", self.example))
        return text.strip(), calls

    def write(self, content: str, calls: list[Call]) -> str:
        return "\n".join([*([content] if content else []), *(
            f"<functioncall> {{\"name\": {json.dumps(n, ensure_ascii=False)}, \"arguments\": "
            f"'{json.dumps(a, ensure_ascii=False)}'}}" for n, a in calls)])

    def responses(self, content: str) -> list[str] | None:
        if not content.startswith(self._PREFIX):
            return None
        rest = content[len(self._PREFIX):]
        return [rest[1:] if rest.startswith(" ") else rest]

    def response(self, content: str) -> str:
        return f"{self._PREFIX} {content}"


class LlamaPython:
    """Llama 3.1's JSON tool calling: `{"name": ..., "parameters": {...}}` after `<|python_tag|>` (calls separated
    by `;`, as vLLM reads them; the text before the tag is the message's). Llama 3.1's own template writes a call
    without the tag: a whole message that is exactly such an object (or a list of them) is read as calls too. Results are the tool
    message's text as it is (the template's `ipython` role is their marker).

        assistant: '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}'
    """

    name = "llama-python"
    tag = "<|python_tag|>"
    example = '<|python_tag|>{"name": ..., "parameters": {...}}'

    def holds(self, content: str) -> bool:
        return self.tag in content or (content.lstrip()[:1] in ("{", "[") and self._bare(content) is not None)

    def _bare(self, content: str) -> list[Call] | None:
        """The calls of a message that is only `{"name", "parameters"}` objects (one, or a list as LLaMA-Factory's
        Llama 3 formatter writes several); None for any other text, an answer in JSON included."""
        try:
            value = r.loads(content)
        except ValueError:
            return None
        calls = value if isinstance(value, list) and value else [value]
        if all(isinstance(c, dict) and set(c) == {"name", "parameters"} and isinstance(c["name"], str)
               and isinstance(c["parameters"], dict) for c in calls):
            return [(c["name"], c["parameters"]) for c in calls]
        return None

    def read(self, content: str, path: str, schemas: Schemas) -> tuple[str, list[Call]]:
        if self.tag not in content:
            bare = self._bare(content)
            return ("", bare) if bare else (content, [])
        text, _, rest = content.partition(self.tag)
        rest = rest.strip()
        for end in ("<|eom_id|>", "<|eot_id|>"):
            rest = rest.removesuffix(end).rstrip()
        calls, pos = [], 0
        while pos < len(rest):
            try:
                value, pos = r.loads(rest, pos)
            except ValueError as e:
                raise _bad(f"call {len(calls) + 1} after {self.tag} is not JSON: {e}", path, self.example) from None
            for one in value if isinstance(value, list) else [value]:
                calls.append(_call_object(one, path, "parameters", self.example))
            while pos < len(rest) and (rest[pos].isspace() or rest[pos] == ";"):
                pos += 1
        if not calls:
            raise _bad(f"{self.tag} is followed by no call", path, self.example)
        return text.strip(), calls

    def write(self, content: str, calls: list[Call]) -> str:
        return content + self.tag + "; ".join(json.dumps({"name": n, "parameters": a}, ensure_ascii=False)
                                              for n, a in calls)

    def responses(self, content: str) -> list[str] | None:
        return None

    def response(self, content: str) -> str:
        return content


Dialect = Hermes | Glaive | LlamaPython
DIALECTS: dict[str, Dialect] = {d.name: d for d in (Hermes(), Glaive(), QwenXml(), LlamaPython())}
NAMES = tuple(DIALECTS)


def _auto_call(content: str) -> Dialect | None:
    """The dialect whose marker an assistant message holds (`auto`)."""
    if "<tool_call>" in content or "<function=" in content:
        return DIALECTS["qwen-xml" if "<function=" in content else "hermes"]
    if "<functioncall>" in content:
        return DIALECTS["glaive"]
    return DIALECTS["llama-python"] if LlamaPython.tag in content else None


def _auto_response(content: str) -> Dialect | None:
    """The dialect whose results a message is made of (`auto`); None for a message that only mentions a marker
    (it stays the text it is: taking the marker alone dropped such a message)."""
    return next((d for d in (DIALECTS["hermes"], DIALECTS["glaive"]) if d.responses(content) is not None), None)


_CONVERSATIONS = ("messages", "prompt", "chosen", "rejected", "completion")


def _properties(function: dict[str, Any]) -> dict[str, Any]:
    """A tool's parameter schemas by name; {} where the tool's `parameters` are not a JSON schema object (tools are
    carried as they come, so a malformed one types no argument rather than stopping the run)."""
    parameters = function.get("parameters")
    properties = parameters.get("properties") if isinstance(parameters, dict) else None
    return properties if isinstance(properties, dict) else {}


def read_calls(record: r.Record, dialect: str) -> None:
    """Each text tool call of the record's messages as a structured call, each text tool result as a tool message
    (in place). `dialect` is one of NAMES, or `auto`."""
    one = DIALECTS.get(dialect)
    pick_call: Callable[[str], Dialect | None] = _auto_call if one is None else (
        lambda c: one if one.holds(c) else None)
    pick_response: Callable[[str], Dialect | None] = _auto_response if one is None else (
        lambda c: one if one.responses(c) is not None else None)
    schemas = {t["function"]["name"]: _properties(t["function"]) for t in record.get("tools") or ()}
    count, opened = 0, []
    base: tuple[int, list[str]] = (0, [])
    for key in _CONVERSATIONS:
        if key not in record:
            continue
        if key in ("chosen", "rejected", "completion"):  # each continues the prompt on its own
            count, opened = base[0], list(base[1])
        out: list[r.Message] = []
        for i, m in enumerate(record[key]):
            path = f"$.{key}[{i}].content"
            content = m["content"]
            kept = m.get("tool_calls") or []
            count += len(kept)
            opened += [c["id"] for c in kept]
            if m["role"] == "assistant" and isinstance(content, str) and (d := pick_call(content)):
                text, calls = d.read(content, path, schemas)
                ids = [f"call_{count + k}" for k in range(len(calls))]
                count += len(calls)
                opened += ids
                out.append({**m, "content": text, "tool_calls": kept + [r.tool_call(n, a, c) for (n, a), c
                                                                        in zip(calls, ids, strict=True)]})
            elif m["role"] in ("user", "tool") and isinstance(content, str) and (d := pick_response(content)):
                extra = {k: v for k, v in m.items() if k not in ("role", "content", "tool_call_id")}
                for k, result in enumerate(d.responses(content) or ()):
                    answers = m.get("tool_call_id") if k == 0 and m.get("tool_call_id") in opened else (
                        opened[0] if opened else None)
                    if answers in opened:
                        opened.remove(answers)
                    out.append(r.message("tool", result, tool_call_id=answers, **extra))
            elif m["role"] == "tool":  # a result as it is (Llama's): it answers its call, else the oldest open one
                answers = m.get("tool_call_id") or (opened[0] if opened else None)
                if answers in opened:
                    opened.remove(answers)
                out.append({k: v for k, v in {**m, "tool_call_id": answers}.items() if v is not None})
            else:
                out.append(m)
        record[key] = out
        if key == "prompt":
            base = (count, list(opened))


def write_calls(record: r.Record, dialect: str) -> r.Record:
    """The record with each structured tool call written into its message's text and each tool result wrapped as
    `dialect` writes it: what `read_calls` reads back. Call ids the reader would not give back are noted as
    dropped."""
    d = DIALECTS[dialect]
    out = dict(record)
    count = base = 0
    for key in _CONVERSATIONS:
        if key not in record:
            continue
        if key in ("chosen", "rejected", "completion"):
            count = base
        messages = []
        for m in record[key]:
            if m.get("tool_calls"):
                calls = m["tool_calls"]
                if any(c["id"] != f"call_{count + k}" for k, c in enumerate(calls)):
                    r.note_dropped("tool_calls.id")
                count += len(calls)
                rest = {k: v for k, v in m.items() if k != "tool_calls"}
                messages.append({**rest, "content": d.write(m["content"], [
                    (c["function"]["name"], c["function"]["arguments"]) for c in calls])})
            elif m["role"] == "tool":
                messages.append({k: v for k, v in {**m, "content": d.response(m["content"])}.items()
                                 if k != "tool_call_id"})
            else:
                messages.append(m)
        out[key] = messages
        if key == "prompt":
            base = count
    _reads_back(record, out, dialect)
    return out


def _reads_back(record: r.Record, written: r.Record, dialect: str) -> None:
    """Refuse a record whose text `read_calls` would not give back: a value or a text holding the dialect's own
    tags, a qwen-xml string that reads as JSON without a tool schema, a result answering another call than the
    oldest open one. Such a row would convert, and come back changed."""
    back = dict(written)  # read_calls only puts new lists in a record's keys; it changes no message
    try:
        read_calls(back, dialect)
    except RowError as e:
        paths = [e.findings[0].path]
    else:
        paths = []
        for key in _CONVERSATIONS:
            if key in record and (a := _shape(record, key)) != (b := _shape(back, key)):
                i = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
                paths.append(f"$.{key}[{min(i, len(a) - 1)}]")
    if paths:
        raise r.not_expressible(f"--write-tool-calls {dialect}", "this message: read back, its text gives other "
                                "calls, results or text", paths[0].removesuffix(".content"),
                                hint="write the row's calls in another dialect, or leave out --write-tool-calls")


def _shape(record: r.Record, key: str) -> list[dict[str, Any]]:
    """The messages of `record[key]` as `read_calls` can give them back: calls as names and arguments, a result as
    the place of the call it answers in the conversation (chosen and rejected continue the prompt)."""
    before = record.get("prompt", []) if key in ("chosen", "rejected", "completion") else []
    ids = [c["id"] for m in [*before, *record[key]] for c in m.get("tool_calls") or ()]
    out = []
    for m in record[key]:
        shape = {k: v for k, v in m.items() if k not in ("tool_calls", "tool_call_id")}
        if m.get("tool_calls"):
            shape["tool_calls"] = [(c["function"]["name"], c["function"]["arguments"]) for c in m["tool_calls"]]
        if m["role"] == "tool":
            shape["answers"] = ids.index(m["tool_call_id"]) if m.get("tool_call_id") in ids else None
        out.append(shape)
    return out
