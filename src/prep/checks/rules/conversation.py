"""Conversation rules on a canonical record: role order, tool calls and their results, weights,
empty messages, and the shape of preference and feedback rows.

The grammar (after an optional leading system message): user, then assistant; an assistant
message with tool calls is followed by one tool message per call, then the assistant again;
repeat. A preference or feedback prompt must end where an answer can follow (a user turn or
tool results), and each answer continues the prompt under the same grammar.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from prep.checks.locate import Loc
from prep.checks.schemas import show
from prep.core.findings import Finding, finding
from prep.core.records import Message, Record, kind_of

_INDEX = re.compile(r"\[\d+\]$")


def _role(loc: Loc) -> str:
    return loc[0] + loc[1]


def _content(loc: Loc) -> str:
    return loc[0] + loc[2]


def _field(loc: Loc, field: str) -> str:
    """A message field's path; in formats that keep the message in one string, the string itself."""
    return loc[0] + field if loc[1] == ".role" else _content(loc)


def _list_path(locs: list[Loc]) -> str:
    return _INDEX.sub("", locs[0][0]) if locs and _INDEX.search(locs[0][0]) else "$"


class _Walk:
    """The grammar as a state machine over one conversation (copied to continue a prompt twice)."""

    def __init__(self, out: list[Finding], tools: set[str] | None, locs: Mapping[str, list[Loc]]) -> None:
        self.out, self.tools, self.locs = out, tools, locs
        self.state, self.position = "start", 0
        self.open: list[str] = []
        self.calls_at: tuple[str, int] | None = None
        self.ids: set[str] = set()
        self.warned_tools = False

    def copy(self) -> _Walk:
        other = _Walk(self.out, self.tools, self.locs)
        other.state, other.position, other.open = self.state, self.position, list(self.open)
        other.calls_at, other.ids, other.warned_tools = self.calls_at, set(self.ids), self.warned_tools
        return other

    def add_finding(self, code: str, message: str, path: str) -> None:
        self.out.append(finding(code, message, path))

    def step(self, m: Message, key: str, i: int) -> None:
        role = m["role"]
        at = (key, i)
        if role in ("system", "developer"):
            if self.position:
                self.add_finding("misplaced_system", "a system message after the start of the conversation", _role(self.loc(at)))
            self.position += 1
            return
        if self.state == "calls" and role != "tool" and self.open and self.calls_at:
            self.add_finding("unanswered_tool_call", f"tool call(s) {', '.join(map(show, self.open))} get no tool result "
                     f"before the next {role} message", _field(self.loc(self.calls_at), ".tool_calls"))
            # Judge this message as if the results had come: one defect, one finding.
            self.open, self.state = [], "tool_done" if role == "assistant" else "assistant"
        if role == "user":
            if self.state == "user":
                self.add_finding("role_order", "two user messages in a row", _role(self.loc(at)))
            elif self.state == "tool_done":
                self.add_finding("role_order", "a user message right after tool results; the assistant answers them first",
                         _role(self.loc(at)))
            self.state = "user"
        elif role == "assistant":
            if self.state == "start":
                self.add_finding("role_order", "the conversation starts with an assistant message; start with a user "
                         "message (after an optional system message)", _role(self.loc(at)))
            elif self.state == "assistant":
                self.add_finding("role_order", "two assistant messages in a row", _role(self.loc(at)))
            self._calls(m, at)
        elif role == "tool":
            self._result(m, at)
        self.position += 1

    def loc(self, at: tuple[str, int]) -> Loc:
        return self.locs[at[0]][at[1]]

    def _calls(self, m: Message, at: tuple[str, int]) -> None:
        calls = m.get("tool_calls") or []
        if not calls:
            self.state = "assistant"
            return
        self.open, self.calls_at, self.state = [], at, "calls"
        for j, call in enumerate(calls):
            if call["id"] in self.ids:
                self.add_finding("duplicate_tool_call_id", f"tool call id {show(call['id'])} is used twice in this row",
                         _field(self.loc(at), f".tool_calls[{j}].id"))
            self.ids.add(call["id"])
            self.open.append(call["id"])
            name = call["function"]["name"]
            if self.tools is None:
                if not self.warned_tools:
                    self.warned_tools = True
                    self.add_finding("no_tools_declared", f"the row calls {show(name)} but declares no tools",
                             _field(self.loc(at), f".tool_calls[{j}].function.name"))
            elif name not in self.tools:
                self.add_finding("unknown_tool", f"calls {show(name)}, which is not among the row's tools "
                         f"({', '.join(sorted(self.tools)) or 'none'})", _field(self.loc(at), f".tool_calls[{j}].function.name"))

    def _result(self, m: Message, at: tuple[str, int]) -> None:
        call_id = m.get("tool_call_id")
        if self.open:
            if call_id in self.open:
                self.open.remove(call_id)
            elif call_id is None:
                self.open.pop(0)
            else:
                self.add_finding("unknown_tool_call_id", f"tool_call_id {show(call_id)} answers no pending call (pending: "
                         f"{', '.join(map(show, self.open))})", _field(self.loc(at), ".tool_call_id"))
                self.open.pop(0)  # taken as the answer to the oldest call, so what follows is judged on its own
            self.state = "calls" if self.open else "tool_done"
        elif self.state == "tool_done" and call_id is not None:
            self.add_finding("unknown_tool_call_id", f"tool_call_id {show(call_id)} answers no pending call (every call "
                     "already has its result)", _field(self.loc(at), ".tool_call_id"))
        else:
            self.add_finding("role_order", "a tool result with no assistant tool call before it", _role(self.loc(at)))
            self.state = "tool_done"

    def run(self, key: str, messages: list[Message]) -> None:
        for i, m in enumerate(messages):
            self.step(m, key, i)


def check(record: Record, locs: Mapping[str, list[Loc]], paired: bool = False,
          prompts: bool = False) -> list[Finding]:
    """Every conversation finding for one record. A conversation that does not end with an answer is a
    warning in general, an error (`unpaired_turn`) where turns must pair up (`paired`: ShareGPT, whose rows
    LLaMA-Factory drops).
    With `prompts` (rows for `--kind prompt` shards) a conversation needs no answer. `locs` is consulted only
    to place a finding."""
    out: list[Finding] = []
    kind = kind_of(record)
    if kind == "text":
        return out
    tools = record.get("tools")
    names = {t["function"]["name"] for t in tools} if tools else None
    if kind == "chat" and _plain(record["messages"]):  # most rows: nothing below would find anything
        return out
    for key in ("messages", "prompt", "chosen", "rejected", "completion"):
        for i, m in enumerate(record.get(key, ())):
            content = m["content"]
            if (not content or content.isspace()) and not m.get("tool_calls"):  # not .strip(): no copy
                out.append(finding("empty_content", f"the {m['role']} message is empty", _content(locs[key][i])))
    walk = _Walk(out, names, locs)
    if kind == "chat":
        messages = record["messages"]
        walk.run("messages", messages)
        assistants = [m for m in messages if m["role"] == "assistant"]
        if prompts:  # GRPO/RLOO rows: the model writes the answer; a user turn to answer is what counts
            if walk.state not in ("user", "tool_done") and not assistants:
                out.append(finding("empty_conversation", "the conversation has no user message to answer",
                                   _list_path(locs["messages"])))
        elif not assistants:
            out.append(finding("no_assistant", "the conversation has no assistant message",
                               _list_path(locs["messages"])))
        elif all(m.get("weight") == 0 for m in assistants) and not any(m.get("weight") == 1 for m in messages):
            out.append(finding("nothing_to_train", "every assistant message has weight 0 and no other weight 1",
                               _list_path(locs["messages"])))
        elif walk.state in ("user", "tool_done"):
            ending = "unpaired_turn" if paired else "ends_without_answer"
            out.append(finding(ending, f"the conversation ends with a {messages[-1]['role']} message",
                               _role(locs["messages"][-1])))
    else:
        _answers(record, locs, walk, kind, out)
    return out


def _plain(messages: list[Message]) -> bool:
    """A chat the rules of `check` pass, told in one loop: an optional system message, then user and assistant
    turns alternating from a user turn to a final assistant turn, each with text and no other field (no
    weight, tool call or tool result for the full rules to judge)."""
    if not messages or messages[-1]["role"] != "assistant":
        return False
    expect = "user"
    for i, m in enumerate(messages):
        content = m["content"]
        if len(m) != 2 or not content or content.isspace():
            return False
        role = m["role"]
        if role != expect and not (i == 0 and role in ("system", "developer")):
            return False
        if role not in ("system", "developer"):
            expect = "assistant" if role == "user" else "user"
    return True


def _answers(record: Record, locs: Mapping[str, list[Loc]], walk: _Walk, kind: str, out: list[Finding]) -> None:
    """Preference and feedback rows: a prompt that an answer can follow, and answers that continue it."""
    prompt = record["prompt"]
    code = "bad_preference" if kind == "preference" else "bad_feedback"
    walk.run("prompt", prompt)
    if not [m for m in prompt if m["role"] not in ("system", "developer")]:
        out.append(finding(code, "the prompt has no user message", _list_path(locs["prompt"]) if prompt else "$"))
        walk.state = "user"
    elif walk.state not in ("user", "tool_done"):
        out.append(finding(code, f"the prompt ends with an {prompt[-1]['role']} message; the answer must follow a "
                           "user turn", _role(locs["prompt"][-1])))
        walk.state, walk.open = "user", []
    sides = ("chosen", "rejected") if kind == "preference" else ("completion",)
    for side in sides:
        walk.copy().run(side, record[side])
    if kind == "preference" and _same(record["chosen"], record["rejected"]):
        out.append(finding("identical_preference", "chosen and rejected are identical", _content(locs["chosen"][0])))


def _same(a: list[Message], b: list[Message]) -> bool:
    strip = ("weight",)
    return [{k: v for k, v in m.items() if k not in strip} for m in a] == \
           [{k: v for k, v in m.items() if k not in strip} for m in b]


RAW_MESSAGE_FORMATS = ("openai", "trl")


def raw_messages(row: Any, fmt: str) -> list[tuple[str, Any]]:
    """OpenAI-style raw message lists in a row (with their paths), for the checks made before reading."""
    if not isinstance(row, dict) or fmt not in RAW_MESSAGE_FORMATS:
        return []
    out = []
    for key in ("messages", "prompt", "completion", "chosen", "rejected", "preferred_output", "non_preferred_output"):
        value = row.get(key)
        if isinstance(value, list):
            out.append((f"$.{key}", value))
    if isinstance(row.get("input"), dict) and isinstance(row["input"].get("messages"), list):
        out.append(("$.input.messages", row["input"]["messages"]))
    return out
