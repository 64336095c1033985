"""The built-in chat templates. Each writes the text piece by piece and notes where every message
landed, so the spans are exact by construction; they reproduce the real models' chat templates
character for character (the tests compare `llama3`, `phi3` and `chatml` with the fixture
tokenizers' own)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from prep.core.findings import PrepError, RowError, row_error
from prep.core.records import Message, fold_reasoning
from prep.render.spans import Rendered, Specials, Turn, cannot_render, developer_as_system, think_span

ALPACA_EN = "Below is an instruction that describes a task. Write a response that appropriately completes the request."
ALPACA_KO = ("아래에는 작업을 설명하는 지시 사항과 추가적인 컨텍스트를 제공하는 입력이 있습니다. "
             "요청을 적절하게 완료하는 응답을 작성하세요.")
VICUNA_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
                 "The assistant gives helpful, detailed, and polite answers to the user's questions.")
# Qwen2.5's (and Hermes') tool-calling block, which chatml models share.
TOOLS_HEAD = ("# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
              "You are provided with function signatures within <tools></tools> XML tags:\n<tools>")
TOOLS_TAIL = ("\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
              "<tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": "
              "<args-json-object>}\n</tool_call>")


class _Writer:
    """Accumulates text and records each message's place in it."""

    __slots__ = ("parts", "pos", "turns")

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.pos = 0
        self.turns: list[Turn] = []

    def lit(self, s: str) -> None:
        self.parts.append(s)
        self.pos += len(s)

    def content(self, i: int, role: str, s: str) -> None:
        start = self.pos
        self.lit(s)
        self.turns.append(Turn(i, role, (start, self.pos)))

    def answer(self, i: int, m: Message, body: str, close: str) -> None:
        """An assistant turn: `body` then `close`, which ends with the end-of-turn token; both trained (`render` sets
        every turn's weight from its message)."""
        start = self.pos
        self.lit(body)
        end = self.pos
        self.lit(close)
        self.turns.append(Turn(i, "assistant", (start, end), (start, self.pos)))

    def done(self) -> Rendered:
        return Rendered("".join(self.parts), self.turns)


class Template:
    """A built-in template. Subclasses write `build`; `eot` is the end-of-turn token closing every answer."""

    name = ""
    summary = ""
    eot = ""
    tools = False  # can render tool definitions, tool calls and tool results
    alternate = False  # the real template requires user/assistant alternation after an optional system
    default_bos: str | None = None  # the model family's tokens, used when no tokenizer is given
    default_eos: str | None = None
    needs_tokenizer = False  # ends answers with the tokenizer's own EOS (no family default)

    def __init__(self, specials: Specials | None = None) -> None:
        s = specials or Specials()
        if self.needs_tokenizer and not s.eos:
            raise PrepError(f"template {self.name} ends each answer with the tokenizer's EOS token: give --tokenizer "
                            "(one that has an EOS token)")
        self.bos = s.bos if specials else self.default_bos
        self.eos = s.eos if specials and s.eos else self.default_eos
        self.adds_bos = s.adds_bos
        if self.eot == "{eos}":
            self.eot = self.eos or ""

    @property
    def sha256(self) -> str:
        """Identity of the exact output: what the template writes for a fixed set of conversations."""
        out = []
        for messages, tools in _PROBES:
            try:
                r = self.render(messages, tools)
                out.append([r.text, [[t.index, t.content, t.answer] for t in r.turns]])
            except RowError as e:
                out.append(e.findings[0].code)
        return hashlib.sha256(json.dumps([self.name, self.eot, out], ensure_ascii=False).encode()).hexdigest()

    def render(self, messages: Sequence[Message], tools: list[dict[str, Any]] | None = None,
               kwargs: dict[str, Any] | None = None) -> Rendered:
        """`kwargs` (template arguments) are refused: built-in templates take none."""
        if kwargs:
            raise row_error("template_kwargs_unused", f"template {self.name} takes no arguments (got "
                            f"{', '.join(sorted(kwargs))})", "$.chat_template_kwargs")
        notes = []
        if any(m["role"] == "developer" for m in messages):
            messages, note = developer_as_system(list(messages), self.name)
            notes.append(note)
        if any(m.get("reasoning_content") is not None for m in messages):  # written as the answer's think block
            messages = fold_reasoning(messages)
        if not self.tools:
            _refuse_tools(self.name, messages, tools)
        if self.alternate:
            _require_alternation(self.name, messages)
        w = _Writer()
        self.build(w, messages, tools)
        rendered = w.done()
        rendered.notes = notes
        for t in rendered.turns:
            t.weight = messages[t.index].get("weight")
            if t.answer:
                t.think = think_span(rendered.text, *t.answer)
        return rendered

    def build(self, w: _Writer, messages: Sequence[Message], tools: list[dict[str, Any]] | None) -> None:
        raise NotImplementedError

    def jinja(self) -> str:
        """The same template as jinja for `apply_chat_template` (what a served model carries, design §6): the
        same text for every conversation `render` takes, with this tokenizer's BOS and EOS written in, reasoning
        folded into the answer and a developer message in the system slot as `render` does; with
        `add_generation_prompt`, the text up to where an answer starts."""
        return _MACROS + self.body()

    def body(self) -> str:
        raise NotImplementedError

    def start(self, w: _Writer) -> None:
        """BOS first, for templates that take it from the tokenizer's own behaviour on plain text."""
        if self.adds_bos and self.bos:
            w.lit(self.bos)


def _refuse_tools(name: str, messages: Sequence[Message], tools: list[dict[str, Any]] | None) -> None:
    if tools:
        raise cannot_render(name, "tool definitions", path="$.tools")
    for i, m in enumerate(messages):
        if m.get("tool_calls") or m["role"] == "tool":
            raise cannot_render(name, "tool calls or tool results", path=f"$.messages[{i}]")


def _require_alternation(name: str, messages: Sequence[Message]) -> None:
    rest = messages[1:] if messages and messages[0]["role"] == "system" else messages
    for i, m in enumerate(rest):
        want = "user" if i % 2 == 0 else "assistant"
        if m["role"] != want:
            at = i + len(messages) - len(rest)
            raise cannot_render(name, f"a {m['role']} message where a {want} message must come "
                                f"(after an optional first system message, {name} alternates user and assistant)",
                                f"$.messages[{at}].role",
                                hint="merge consecutive messages of one role, or use --template chatml")


def _split_system(name: str, messages: Sequence[Message]) -> tuple[str | None, list[tuple[int, Message]]]:
    """The leading system message (templates that fold it into the first user turn) and the rest."""
    system = messages[0]["content"] if messages and messages[0]["role"] == "system" else None
    rest = list(enumerate(messages))[1 if system is not None else 0:]
    for i, m in rest:
        if m["role"] == "system":
            raise cannot_render(name, "a system message after the first message", f"$.messages[{i}]",
                                hint="put the system prompt first, or use --template chatml")
    return system, rest


class ChatML(Template):
    name = "chatml"
    summary = "<|im_start|>role … <|im_end|> (Qwen2.5, Yi, Hermes); tool calls as Qwen's <tool_call> JSON"
    eot = "<|im_end|>"
    tools = True

    def body(self) -> str:
        return ("{%- set sys = messages and messages[0].role in ['system', 'developer'] -%}"
                "{%- if tools -%}{{- '<|im_start|>system\\n' -}}"
                "{%- if sys -%}{{- messages[0].content ~ '\\n\\n' -}}{%- endif -%}"
                "{{- " + _q(TOOLS_HEAD) + " -}}{%- for t in tools -%}{{- '\\n' ~ (t | tojson) -}}{%- endfor -%}"
                "{{- " + _q(TOOLS_TAIL + "<|im_end|>\n") + " -}}"
                "{%- elif sys -%}{{- '<|im_start|>system\\n' ~ messages[0].content ~ '<|im_end|>\\n' -}}{%- endif -%}"
                "{%- for m in messages -%}{%- if not (loop.first and sys) -%}"
                "{%- if m.role == 'assistant' -%}{%- set c = _c(m) -%}{{- '<|im_start|>assistant\\n' -}}"
                "{%- if c or not m.tool_calls -%}{{- c -}}{%- endif -%}"
                "{%- for call in m.tool_calls or [] -%}{%- if not loop.first or c -%}{{- '\\n' -}}{%- endif -%}"
                "{%- set f = call.function if call.function is defined else call -%}"
                "{%- set args = f.arguments if f.arguments is defined else {} -%}"
                "{{- '<tool_call>\\n{\"name\": \"' ~ f.name ~ '\", \"arguments\": ' ~ "
                "(args if args is string else args | tojson) ~ '}\\n</tool_call>' -}}{%- endfor -%}"
                "{{- '<|im_end|>\\n' -}}"
                "{%- elif m.role == 'tool' -%}"
                "{%- if loop.first or loop.previtem.role != 'tool' -%}{{- '<|im_start|>user' -}}{%- endif -%}"
                "{{- '\\n<tool_response>\\n' ~ m.content ~ '\\n</tool_response>' -}}"
                "{%- if loop.last or loop.nextitem.role != 'tool' -%}{{- '<|im_end|>\\n' -}}{%- endif -%}"
                "{%- else -%}{{- '<|im_start|>' ~ _r(m) ~ '\\n' ~ m.content ~ '<|im_end|>\\n' -}}{%- endif -%}"
                "{%- endif -%}{%- endfor -%}"
                "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}")

    def build(self, w: _Writer, messages: Sequence[Message], tools: list[dict[str, Any]] | None) -> None:
        first_system = bool(messages) and messages[0]["role"] == "system"
        if tools:
            w.lit("<|im_start|>system\n")
            if first_system:
                w.content(0, "system", messages[0]["content"])
                w.lit("\n\n")
            w.lit(TOOLS_HEAD + "".join("\n" + json.dumps(t, ensure_ascii=False) for t in tools)
                  + TOOLS_TAIL + "<|im_end|>\n")
        elif first_system:
            w.lit("<|im_start|>system\n")
            w.content(0, "system", messages[0]["content"])
            w.lit("<|im_end|>\n")
        last = len(messages) - 1
        for i, m in enumerate(messages):
            role = m["role"]
            if i == 0 and first_system:
                continue
            if role == "assistant":
                calls = [_qwen_call(c) for c in m.get("tool_calls") or ()]
                w.lit("<|im_start|>assistant\n")
                w.answer(i, m, "\n".join(([m["content"]] if m["content"] or not calls else []) + calls), "<|im_end|>")
                w.lit("\n")
            elif role == "tool":
                if i == 0 or messages[i - 1]["role"] != "tool":
                    w.lit("<|im_start|>user")
                w.lit("\n<tool_response>\n")
                w.content(i, role, m["content"])
                w.lit("\n</tool_response>")
                if i == last or messages[i + 1]["role"] != "tool":
                    w.lit("<|im_end|>\n")
            else:
                w.lit(f"<|im_start|>{role}\n")
                w.content(i, role, m["content"])
                w.lit("<|im_end|>\n")


def _qwen_call(call: dict[str, Any]) -> str:
    f = call.get("function", call)
    return ('<tool_call>\n{"name": "' + f["name"] + '", "arguments": '
            + json.dumps(f.get("arguments", {}), ensure_ascii=False) + "}\n</tool_call>")


class Llama3(Template):
    name = "llama3"
    summary = "Llama-3-Instruct: <|start_header_id|>role<|end_header_id|>\\n\\n … <|eot_id|>"
    eot = "<|eot_id|>"
    default_bos = "<|begin_of_text|>"

    def body(self) -> str:
        return ("{{- " + _q(self.bos or "") + " -}}{%- for m in messages -%}"
                "{{- '<|start_header_id|>' ~ _r(m) ~ '<|end_header_id|>\\n\\n' ~ (_c(m) | trim) ~ '<|eot_id|>' -}}"
                "{%- endfor -%}"
                "{%- if add_generation_prompt -%}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}"
                "{%- endif -%}")

    def build(self, w: _Writer, messages: Sequence[Message], tools: list[dict[str, Any]] | None) -> None:
        if self.bos:
            w.lit(self.bos)
        for i, m in enumerate(messages):
            w.lit(f"<|start_header_id|>{m['role']}<|end_header_id|>\n\n")
            if m["role"] == "assistant":
                w.answer(i, m, m["content"].strip(), "<|eot_id|>")
            else:
                w.content(i, m["role"], m["content"].strip())
                w.lit("<|eot_id|>")


class Llama2(Template):
    name = "llama2"
    summary = "Llama-2-chat: <s>[INST] <<SYS>>…<</SYS>> user [/INST] answer </s>"
    eot = "{eos}"
    alternate = True
    default_bos, default_eos = "<s>", "</s>"

    def body(self) -> str:
        return (_SYSTEM + "{%- for m in rest -%}{%- if m.role == 'assistant' -%}"
                "{{- ' ' ~ (_c(m) | trim) ~ ' ' ~ " + _q(self.eos or "") + " -}}{%- else -%}"
                "{{- " + _q(self.bos or "") + " ~ '[INST] ' -}}"
                "{%- if loop.first and system is not none -%}{%- set user = m.content.rstrip() -%}"
                "{{- '<<SYS>>\\n' ~ system ~ ('\\n<</SYS>>\\n\\n' if user else '\\n<</SYS>>') ~ user -}}"
                "{%- else -%}{{- m.content | trim -}}{%- endif -%}{{- ' [/INST]' -}}{%- endif -%}{%- endfor -%}"
                "{%- if add_generation_prompt -%}{{- ' ' -}}{%- endif -%}")

    def build(self, w: _Writer, messages: Sequence[Message], tools: list[dict[str, Any]] | None) -> None:
        system, rest = _split_system(self.name, messages)
        for k, (i, m) in enumerate(rest):
            if m["role"] == "assistant":
                w.lit(" ")
                w.answer(i, m, m["content"].strip(), f" {self.eos}")
                continue
            w.lit(f"{self.bos or ''}[INST] ")
            if k == 0 and system is not None:
                # The real template strips the folded text as a whole: only the user's end is affected.
                user = m["content"].rstrip()
                w.lit("<<SYS>>\n")
                w.content(0, "system", system)
                w.lit("\n<</SYS>>\n\n" if user else "\n<</SYS>>")
                w.content(i, "user", user)
            else:
                w.content(i, "user", m["content"].strip())
            w.lit(" [/INST]")


class Mistral(Template):
    name = "mistral"
    summary = "Mistral-7B-Instruct v0.3: <s>[INST] user[/INST] answer</s> (system folded into the first user turn)"
    eot = "{eos}"
    alternate = True
    default_bos, default_eos = "<s>", "</s>"

    def body(self) -> str:
        return (_SYSTEM + "{{- " + _q(self.bos or "") + " -}}{%- for m in rest -%}{%- if m.role == 'assistant' -%}"
                "{{- ' ' ~ (_c(m) | trim) ~ " + _q(self.eos or "") + " -}}{%- else -%}{{- '[INST] ' -}}"
                "{%- if loop.first and system is not none -%}{{- system ~ '\\n\\n' -}}{%- endif -%}"
                "{{- m.content ~ '[/INST]' -}}{%- endif -%}{%- endfor -%}"
                "{%- if add_generation_prompt -%}{{- ' ' -}}{%- endif -%}")

    def build(self, w: _Writer, messages: Sequence[Message], tools: list[dict[str, Any]] | None) -> None:
        system, rest = _split_system(self.name, messages)
        w.lit(self.bos or "")
        for k, (i, m) in enumerate(rest):
            if m["role"] == "assistant":
                w.lit(" ")
                w.answer(i, m, m["content"].strip(), self.eos or "")
                continue
            w.lit("[INST] ")
            if k == 0 and system is not None:
                w.content(0, "system", system)
                w.lit("\n\n")
            w.content(i, "user", m["content"])
            w.lit("[/INST]")


class Gemma(Template):
    name = "gemma"
    summary = "Gemma-it: <start_of_turn>user|model … <end_of_turn> (system folded into the first user turn)"
    eot = "<end_of_turn>"
    alternate = True
    default_bos = "<bos>"

    def body(self) -> str:
        return (_SYSTEM + "{{- " + _q(self.bos or "") + " -}}{%- for m in rest -%}"
                "{{- '<start_of_turn>' ~ ('model' if m.role == 'assistant' else m.role) ~ '\\n' -}}"
                "{%- if loop.first and system is not none -%}{{- system ~ '\\n\\n' -}}{%- endif -%}"
                "{{- (_c(m) | trim) ~ '<end_of_turn>\\n' -}}{%- endfor -%}"
                "{%- if add_generation_prompt -%}{{- '<start_of_turn>model\\n' -}}{%- endif -%}")

    def build(self, w: _Writer, messages: Sequence[Message], tools: list[dict[str, Any]] | None) -> None:
        system, rest = _split_system(self.name, messages)
        w.lit(self.bos or "")
        for k, (i, m) in enumerate(rest):
            w.lit("<start_of_turn>" + ("model" if m["role"] == "assistant" else m["role"]) + "\n")
            if k == 0 and system is not None:
                w.content(0, "system", system)
                w.lit("\n\n")
            if m["role"] == "assistant":
                w.answer(i, m, m["content"].strip(), "<end_of_turn>")
                w.lit("\n")
            else:
                w.content(i, m["role"], m["content"].strip())
                w.lit("<end_of_turn>\n")


class Zephyr(Template):
    name = "zephyr"
    summary = "Zephyr: <|system|>/<|user|>/<|assistant|>\\n … </s>\\n"
    eot = "{eos}"
    default_eos = "</s>"

    def body(self) -> str:
        return ("{%- for m in messages -%}{{- '<|' ~ _r(m) ~ '|>\\n' ~ _c(m) ~ " + _q(self.eos or "") + " ~ '\\n' -}}"
                "{%- endfor -%}{%- if add_generation_prompt -%}{{- '<|assistant|>\\n' -}}{%- endif -%}")

    def build(self, w: _Writer, messages: Sequence[Message], tools: list[dict[str, Any]] | None) -> None:
        for i, m in enumerate(messages):
            w.lit(f"<|{m['role']}|>\n")
            if m["role"] == "assistant":
                w.answer(i, m, m["content"], self.eos or "")
            else:
                w.content(i, m["role"], m["content"])
                w.lit(self.eos or "")
            w.lit("\n")


class Phi3(Template):
    name = "phi3"
    summary = "Phi-3-instruct: <|system|>/<|user|>/<|assistant|>\\n … <|end|>\\n, EOS at the end"
    eot = "<|end|>"
    default_eos = "<|endoftext|>"

    def body(self) -> str:
        return ("{%- for m in messages -%}{{- '<|' ~ _r(m) ~ '|>\\n' ~ _c(m) ~ '<|end|>\\n' -}}{%- endfor -%}"
                "{%- if add_generation_prompt -%}{{- '<|assistant|>\\n' -}}{%- else -%}{{- " + _q(self.eos or "")
                + " -}}{%- endif -%}")

    def build(self, w: _Writer, messages: Sequence[Message], tools: list[dict[str, Any]] | None) -> None:
        for i, m in enumerate(messages):
            w.lit(f"<|{m['role']}|>\n")
            if m["role"] == "assistant":
                w.answer(i, m, m["content"], "<|end|>")
                w.lit("\n")
            else:
                w.content(i, m["role"], m["content"])
                w.lit("<|end|>\n")
        w.lit(self.eos or "")


class Vicuna(Template):
    name = "vicuna"
    summary = "Vicuna v1.1 (FastChat): SYSTEM USER: … ASSISTANT: answer</s>"
    eot = "{eos}"
    alternate = True
    default_bos, default_eos = "<s>", "</s>"

    def body(self) -> str:
        return (_SYSTEM + "{{- " + _q(self.bos or "") + " ~ (system if system is not none else " + _q(VICUNA_SYSTEM)
                + ") ~ ' ' -}}{%- for m in rest -%}{%- if m.role == 'assistant' -%}"
                "{{- 'ASSISTANT: ' ~ _c(m) ~ " + _q(self.eos or "") + " -}}{%- else -%}{{- 'USER: ' ~ m.content ~ ' ' -}}"
                "{%- endif -%}{%- endfor -%}{%- if add_generation_prompt -%}{{- 'ASSISTANT: ' -}}{%- endif -%}")

    def build(self, w: _Writer, messages: Sequence[Message], tools: list[dict[str, Any]] | None) -> None:
        system, rest = _split_system(self.name, messages)
        w.lit(self.bos or "")
        if system is None:
            w.lit(VICUNA_SYSTEM)
        else:
            w.content(0, "system", system)
        w.lit(" ")
        for i, m in rest:
            if m["role"] == "assistant":
                w.lit("ASSISTANT: ")
                w.answer(i, m, m["content"], self.eos or "")
            else:
                w.lit("USER: ")
                w.content(i, "user", m["content"])
                w.lit(" ")


class Alpaca(Template):
    """Alpaca as LLaMA-Factory trains it; two consecutive user messages are an instruction and its input."""

    name = "alpaca"
    summary = "Stanford Alpaca: header, ### Instruction: / [### Input:] / ### Response:, answer + EOS"
    eot = "{eos}"
    needs_tokenizer = True
    header = ALPACA_EN
    header_with_input = ("Below is an instruction that describes a task, paired with an input that provides further "
                         "context. Write a response that appropriately completes the request.")
    sections = ("### Instruction:\n", "### Input:\n", "### Response:\n")

    def body(self) -> str:
        # a user message right after an instruction is its input; the header says so if any turn has one
        instruction, given, response = (_q(s) for s in self.sections)
        return (_SYSTEM + "{%- set ns = namespace(state='start', has_input=false) -%}{%- for m in rest -%}"
                "{%- if m.role == 'user' and ns.state == 'inst' -%}{%- set ns.has_input = true -%}"
                "{%- set ns.state = 'input' -%}{%- elif m.role == 'user' -%}{%- set ns.state = 'inst' -%}"
                "{%- else -%}{%- set ns.state = 'start' -%}{%- endif -%}{%- endfor -%}"
                "{{- " + _q(self.bos or "" if self.adds_bos else "") + " -}}"
                "{{- (system if system is not none else " + _q(self.header_with_input) + " if ns.has_input else "
                + _q(self.header) + ") ~ '\\n\\n' -}}"
                "{%- set ns.state = 'start' -%}{%- for m in rest -%}"
                "{%- if m.role == 'user' and ns.state == 'inst' -%}{{- " + given + " ~ m.content ~ '\\n\\n' -}}"
                "{%- set ns.state = 'input' -%}{%- elif m.role == 'user' -%}"
                "{%- if ns.state == 'input' -%}{{- " + response + " -}}{%- endif -%}"
                "{{- " + instruction + " ~ m.content ~ '\\n\\n' -}}{%- set ns.state = 'inst' -%}"
                "{%- elif m.role == 'assistant' -%}{{- " + response + " ~ _c(m) ~ " + _q(self.eos or "")
                + " ~ '\\n\\n' -}}{%- set ns.state = 'start' -%}{%- endif -%}{%- endfor -%}"
                "{%- if ns.state != 'start' -%}{{- " + response + " -}}{%- endif -%}")

    def build(self, w: _Writer, messages: Sequence[Message], tools: list[dict[str, Any]] | None) -> None:
        system, rest = _split_system(self.name, messages)
        turns = _instruction_turns(self.name, rest)
        self.start(w)
        if system is not None:
            w.content(0, "system", system)
        else:
            w.lit(self.header_with_input if any(t[1] for t in turns) else self.header)
        w.lit("\n\n")
        instruction, given, response = self.sections
        for (i, m), extra, answer in turns:
            w.lit(instruction)
            w.content(i, "user", m["content"])
            w.lit("\n\n")
            if extra:
                w.lit(given)
                w.content(extra[0], "user", extra[1]["content"])
                w.lit("\n\n")
            w.lit(response)
            if answer:
                w.answer(answer[0], answer[1], answer[1]["content"], self.eos or "")
                w.lit("\n\n")


class AlpacaKo(Alpaca):
    name = "alpaca_ko"
    summary = "Korean Alpaca: 아래에는 작업을 설명하는… header, ### instruction: / [### input:] / ### output:"
    header = header_with_input = ALPACA_KO
    sections = ("### instruction:\n", "### input:\n", "### output:\n")


def _instruction_turns(name: str, rest: list[tuple[int, Message]]) -> list[tuple[Any, Any, Any]]:
    """(instruction, optional input, optional answer) triples from user[, user], assistant sequences."""
    out: list[tuple[Any, Any, Any]] = []
    k = 0
    while k < len(rest):
        i, m = rest[k]
        if m["role"] != "user":
            raise cannot_render(name, f"a {m['role']} message where an instruction (user message) must come",
                                f"$.messages[{i}].role",
                                hint="alpaca turns are user (instruction), optional user (input), assistant")
        extra = rest[k + 1] if k + 1 < len(rest) and rest[k + 1][1]["role"] == "user" else None
        k += 2 if extra else 1
        answer = rest[k] if k < len(rest) and rest[k][1]["role"] == "assistant" else None
        k += 1 if answer else 0
        out.append(((i, m), extra, answer))
    return out


class Plain(Template):
    name = "plain"
    summary = "no markup: message contents back to back, EOS after each answer (LLaMA-Factory's `empty`)"
    eot = "{eos}"
    needs_tokenizer = True

    def body(self) -> str:
        return ("{{- " + _q(self.bos or "" if self.adds_bos else "") + " -}}{%- for m in messages -%}{{- _c(m) -}}"
                "{%- if m.role == 'assistant' -%}{{- " + _q(self.eos or "") + " -}}{%- endif -%}{%- endfor -%}")

    def build(self, w: _Writer, messages: Sequence[Message], tools: list[dict[str, Any]] | None) -> None:
        self.start(w)
        for i, m in enumerate(messages):
            if m["role"] == "assistant":
                w.answer(i, m, m["content"], self.eos or "")
            else:
                w.content(i, m["role"], m["content"])


def _q(s: str) -> str:
    """`s` as a jinja string literal."""
    return json.dumps(s, ensure_ascii=False)


# the jinja forms' shared parts: a message's content with its reasoning folded in as `render` folds it, its role
# with developer as system, and (for templates that fold it into the first user turn) the leading system message
_MACROS = ("{%- macro _c(m) -%}{%- if m.reasoning_content is defined and m.reasoning_content is not none -%}"
           "{{- '<think>\\n' ~ m.reasoning_content ~ '\\n</think>\\n\\n' ~ (m.content or '') -}}{%- else -%}"
           "{{- m.content or '' -}}{%- endif -%}{%- endmacro -%}"
           "{%- macro _r(m) -%}{{- 'system' if m.role == 'developer' else m.role -}}{%- endmacro -%}")
_SYSTEM = ("{%- set system = messages[0].content if messages and messages[0].role in ['system', 'developer'] "
           "else none -%}{%- set rest = messages[1:] if system is not none else messages -%}")


def _m(role: str, content: str, **extra: Any) -> Message:
    return {"role": role, "content": content, **extra}


_CALL = {"id": "call_0", "type": "function", "function": {"name": "f", "arguments": {"x": 1}}}
_PROBES: list[tuple[list[Message], list[dict[str, Any]] | None]] = [
    ([_m("user", " Q1 "), _m("assistant", " A1 "), _m("user", "Q2"), _m("assistant", "A2", weight=0)], None),
    ([_m("system", "S"), _m("user", "I"), _m("user", "In"), _m("assistant", "A")], None),
    ([_m("system", "S"), _m("user", "Q"), _m("assistant", "", tool_calls=[_CALL]),
      _m("tool", "R", tool_call_id="call_0"), _m("assistant", "A")],
     [{"type": "function", "function": {"name": "f", "parameters": {}}}]),
]

BUILTIN: dict[str, type[Template]] = {t.name: t for t in (ChatML, Llama3, Llama2, Mistral, Gemma, Zephyr, Phi3,
                                                           Vicuna, Alpaca, AlpacaKo, Plain)}
NAMES = (*BUILTIN, "tokenizer")
