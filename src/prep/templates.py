"""Chat templates: a conversation -> the exact text a model trains on, and the character spans that carry loss.

Built-in templates write the text piece by piece and note where every message landed, so the
spans are exact by construction; they reproduce the real models' chat templates character for
character (the tests compare `llama3`, `phi3` and `chatml` with the fixture tokenizers' own).
`tokenizer` renders the tokenizer's jinja template with transformers' sandboxed renderer and
finds the spans in the rendered text (see `JinjaTemplate`), never by re-tokenizing turn by turn.

A span is a half-open character range. An assistant turn's span runs from the point where the
model starts generating (just after the generation prompt) to the end of its end-of-turn token,
so every trained answer ends with that token, trained.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from prep.convert import Inputs, read_inputs
from prep.files import RowWriter
from prep.findings import Batch, PrepError, RowError, Tally, row_error
from prep.records import MEDIA, Message, Record, kind_of

Span = tuple[int, int]
TRAIN_ON = ("auto", "assistant", "last", "all", "content")
OVERFLOW = ("drop", "truncate", "turns")  # what `prep tokenize --max-len` does with a longer row
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
        """An assistant turn: `body` then `close`, which ends with the end-of-turn token; both trained."""
        start = self.pos
        self.lit(body)
        end = self.pos
        self.lit(close)
        self.turns.append(Turn(i, "assistant", (start, end), (start, self.pos), m.get("weight", 1) != 0))

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

    def render(self, messages: Sequence[Message], tools: list[dict[str, Any]] | None = None) -> Rendered:
        if not self.tools:
            _refuse_tools(self.name, messages, tools)
        if self.alternate:
            _require_alternation(self.name, messages)
        w = _Writer()
        self.build(w, messages, tools)
        return w.done()

    def build(self, w: _Writer, messages: Sequence[Message], tools: list[dict[str, Any]] | None) -> None:
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
                                "merge consecutive messages of one role, or use --template chatml",
                                f"$.messages[{at}].role")


def _split_system(name: str, messages: Sequence[Message]) -> tuple[str | None, list[tuple[int, Message]]]:
    """The leading system message (templates that fold it into the first user turn) and the rest."""
    system = messages[0]["content"] if messages and messages[0]["role"] == "system" else None
    rest = list(enumerate(messages))[1 if system is not None else 0:]
    for i, m in rest:
        if m["role"] == "system":
            raise cannot_render(name, "a system message after the first message",
                                "put the system prompt first, or use --template chatml", f"$.messages[{i}]")
    return system, rest


class ChatML(Template):
    name = "chatml"
    summary = "<|im_start|>role … <|im_end|> (Qwen2.5, Yi, Hermes); tool calls as Qwen's <tool_call> JSON"
    eot = "<|im_end|>"
    tools = True

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
                                "alpaca turns are user (instruction), optional user (input), assistant",
                                f"$.messages[{i}].role")
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

    def build(self, w: _Writer, messages: Sequence[Message], tools: list[dict[str, Any]] | None) -> None:
        self.start(w)
        for i, m in enumerate(messages):
            if m["role"] == "assistant":
                w.answer(i, m, m["content"], self.eos or "")
            else:
                w.content(i, m["role"], m["content"])


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
        from transformers.utils.chat_template_utils import render_jinja_template

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


def rows_stage(batches: Iterable[Batch[Record]], template: AnyTemplate | None, train_on: str,
               specials: Specials) -> Iterator[Batch[dict[str, Any]]]:
    """Stage for `prep template`: records -> text rows any trainer can use. Conversations become
    {"id", "text", "spans"} (spans: [start, end) characters that carry loss under `train_on`), plain
    text {"id", "text", "spans"} with BOS/EOS as trained, preference rows TRL's {"id", "prompt",
    "chosen", "rejected"} and feedback rows {"id", "prompt", "completion", "label"}."""
    for batch in batches:
        out: Batch[dict[str, Any]] = batch.carry()
        for record, source in zip(batch.items, batch.sources, strict=True):
            try:
                out.add({"id": record["id"], **_text_row(record, template, train_on, specials)}, source)
            except RowError as e:
                out.reject(source, e.findings, record)
        yield out


def _text_row(record: Record, template: AnyTemplate | None, train_on: str, specials: Specials) -> dict[str, Any]:
    text_only(record)
    kind = kind_of(record)
    if kind == "text":
        text = document(record["text"], specials)
        return {"text": text, "spans": [[0, len(text)]]}
    if template is None:
        raise PrepError("conversations need a template: give --template or a --tokenizer with a chat template")
    tools = record.get("tools")
    if kind == "chat":
        rendered = template.render(record["messages"], tools)
        spans = rendered.spans(resolve_train_on(train_on, kind))
        if not spans:
            raise nothing_to_train(resolve_train_on(train_on, kind))
        return {"text": rendered.text, "spans": [list(s) for s in spans]}
    sides = ("chosen", "rejected") if kind == "preference" else ("completion",)
    row: dict[str, Any] = {}
    for side in sides:
        start, text = render_pair(template, record["prompt"], record[side], tools, f"$.{side}")
        if row.setdefault("prompt", text[:start]) != text[:start]:
            raise row_error("prompt_mismatch", "the prompt renders differently before the chosen and the rejected "
                            "answer", "use a template that renders the prompt the same way", "$.prompt")
        row[side] = text[start:]
    if kind == "feedback":
        row["label"] = record["label"]
    return row


def nothing_to_train(train_on: str) -> RowError:
    return row_error("nothing_to_train", f"no token would be trained with --train-on {train_on}",
                     "give the conversation an assistant answer with weight 1, or choose another --train-on",
                     "$.messages")


@dataclass
class TemplateResult:
    tally: Tally
    formats: dict[str, str]
    template: str


def template(inputs: Inputs, name: str | None = None, tokenizer: str | None = None, output: str | None = "-", *,
             train_on: str = "auto", rejects: str | None = None,
             show: Callable[[dict[str, Any]], None] | None = None) -> TemplateResult:
    """`prep template`: render `inputs` with template `name` (default: the tokenizer's own) and write
    the text rows (see `rows_stage`) to `output` (None: write nothing); `show` sees every row."""
    from prep.tokenize import load_tokenizer

    if name is None and tokenizer is None:
        raise PrepError("give --template NAME or --tokenizer DIR (whose chat template is then used)")
    resolve_train_on(train_on, "chat")
    tok = load_tokenizer(tokenizer) if tokenizer else None
    specials = tok.specials if tok else Specials()
    chosen = get_template(name or "tokenizer", tok.specials if tok else None, tok.jinja if tok else None)
    result = TemplateResult(Tally(), {}, getattr(chosen, "label", chosen.name))
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(RowWriter(output)) if output else None
        bad = stack.enter_context(RowWriter(rejects, "jsonl")) if rejects else None
        for batch in rows_stage(read_inputs(inputs, result.formats), chosen, train_on, specials):
            if out:
                out.write(batch.items)
            if bad:
                bad.write(r.to_dict() for r in batch.rejects)
            if show:
                for row in batch.items:
                    show(row)
            result.tally.count(batch)
    return result


def describe() -> list[tuple[str, str]]:
    """(name, summary) of every template, for `prep template --list`."""
    return [(t.name, t.summary) for t in BUILTIN.values()] + [
        ("tokenizer", "the tokenizer's own jinja chat template (sandboxed), tools passed through; the default")]
