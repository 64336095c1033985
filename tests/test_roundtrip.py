"""Round trips between formats lose nothing on the records the target format can express.

The strategies below build canonical records that a format can hold; each test writes them
out in one format, reads them back, and compares canonical records (ids included)."""

from __future__ import annotations

import json
import re
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prep.core.findings import Batch, Source
from prep.core.records import Record
from prep.formats import from_records, make_options, to_records

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=30)
nonempty = text.filter(lambda s: s.strip() != "")
name = st.from_regex(r"[a-z][a-z_]{0,11}", fullmatch=True)
json_scalar = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12),
                        st.floats(allow_nan=False, allow_infinity=False), text)
json_value = st.recursive(json_scalar, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                               st.dictionaries(name, inner, max_size=3)),
                          max_leaves=8)
arguments = st.dictionaries(name, json_value, max_size=3)
tool = st.builds(lambda n, d, props: {"type": "function", "function": {
    "name": n, "description": d, "parameters": {"type": "object", "properties": {p: {"type": "string"} for p in props}}}},
    name, text, st.lists(name, max_size=2))


def msg(role: str, content: str, **extra: Any) -> dict[str, Any]:
    return {"role": role, "content": content, **extra}


@st.composite
def dialogue(draw: st.DrawFn, *, tools: bool, system_turns: bool, weights: bool, end_with_user: bool = False,
             history: int = 4) -> list[dict[str, Any]]:
    """Turns of a conversation: user, then (tool calls and results)*, then an answer, repeated.

    Tool-call ids are `call_<n>` in order and each result answers the oldest open call: that is
    all ShareGPT can say about calls, which carries no ids."""
    messages: list[dict[str, Any]] = []
    calls, open_calls = 0, []
    for turn in range(draw(st.integers(1, history))):
        if system_turns and turn and draw(st.integers(0, 5)) == 5:
            messages.append(msg("system", draw(text)))
        messages.append(msg("user", draw(text)))
        while tools and draw(st.integers(0, 2)) == 2:  # the simplest draw (0) ends the loop
            made = []
            for _ in range(draw(st.integers(1, 2))):
                made.append({"id": f"call_{calls}", "type": "function",
                             "function": {"name": draw(name), "arguments": draw(arguments)}})
                open_calls.append(f"call_{calls}")
                calls += 1
            messages.append(msg("assistant", "", tool_calls=made))
            messages.append(msg("tool", draw(text), tool_call_id=open_calls.pop(0)))
        answer = msg("assistant", draw(text))
        if weights and draw(st.booleans()):
            answer["weight"] = draw(st.sampled_from([0, 1]))
        messages.append(answer)
    if end_with_user:
        messages.append(msg("user", draw(text)))
    return messages


@st.composite
def records(draw: st.DrawFn, *, tools: bool, system_turns: bool, weights: bool, single_turn_prompt: bool = False,
            tail_user: bool = True) -> Record:
    """A chat, preference or feedback record of the expressible kind."""
    system = [msg("system", draw(nonempty))] if draw(st.booleans()) else []
    kind = draw(st.sampled_from(["chat", "preference", "feedback"]))
    opts = dict(tools=tools, system_turns=system_turns, weights=weights)
    record: Record = {"id": draw(st.one_of(st.just("row"), name.map(lambda s: "id-" + s)))}
    if kind == "chat":
        record["messages"] = system + draw(dialogue(**opts, end_with_user=tail_user and draw(st.booleans())))
    else:
        prompt = system + draw(dialogue(**opts, history=1 if single_turn_prompt else 3))[:-1]
        if kind == "preference":
            record |= {"prompt": prompt, "chosen": [msg("assistant", draw(text))],
                       "rejected": [msg("assistant", draw(text))]}
        else:
            record |= {"prompt": prompt, "completion": [msg("assistant", draw(text))], "label": draw(st.booleans())}
    if tools and draw(st.booleans()):
        record["tools"] = draw(st.lists(tool, min_size=1, max_size=2))
    return record


def through(fmt: str, recs: list[Record]) -> list[Record]:
    """Write canonical records as `fmt` rows, serialise them as a file would, read them back."""
    batch = Batch(items=list(recs), sources=[Source("mem.jsonl", i + 1, i + 1) for i in range(len(recs))])
    out = list(from_records([batch], fmt, make_options(fmt)))
    assert not out[0].rejects, [r.findings for r in out[0].rejects]
    rows = [json.loads(json.dumps(row, ensure_ascii=False)) for row in out[0].items]
    back = list(to_records([Batch(items=rows, sources=batch.sources)], fmt, make_options(fmt)))
    assert not back[0].rejects, [r.findings for r in back[0].rejects]
    return back[0].items


def canonical(record: Record) -> Record:
    """The record as the openai reader gives it back (how a user's openai file enters prep)."""
    return through("openai", [record])[0]


@SETTINGS
@given(records(tools=True, system_turns=True, weights=False))
def test_openai_sharegpt_openai_is_lossless(record: Record) -> None:
    start = canonical(record)
    assert start == record
    assert through("openai", through("sharegpt", [start])) == [start]


@SETTINGS
@given(records(tools=False, system_turns=False, weights=False, tail_user=False))
def test_openai_alpaca_openai_is_lossless(record: Record) -> None:
    start = canonical(record)
    assert through("openai", through("alpaca", [start])) == [start]


@SETTINGS
@given(records(tools=True, system_turns=True, weights=True))
def test_trl_and_openai_keep_everything(record: Record) -> None:
    """trl and openai hold every canonical record, weights and tools included."""
    assert through("trl", [record]) == [record]
    assert canonical(record) == record


@SETTINGS
@given(records(tools=False, system_turns=False, weights=False, single_turn_prompt=True, tail_user=False))
def test_openai_autotrain_openai_is_lossless_on_plain_dialogues(record: Record) -> None:
    """AutoTrain holds user/bot dialogues (no system, no tools) whose turns have no outer blanks
    or role prefixes of their own."""
    def plain(messages: list[dict[str, Any]]) -> bool:
        return all(m["role"] in ("user", "assistant") and m["content"] == m["content"].strip() and m["content"]
                   and "human:" not in m["content"].lower() and "bot:" not in m["content"].lower()
                   and "\\n" not in m["content"] for m in messages)

    if "label" in record or not all(plain(record.get(k, [])) for k in ("messages", "prompt", "chosen", "rejected")):
        return
    start = canonical(record)
    assert through("openai", through("autotrain", [start])) == [start]


def test_sharegpt_round_trip_of_glaive_style_row() -> None:
    """One concrete case, readable when the properties above fail."""
    record = {"id": "r1", "messages": [
        msg("system", "Use tools."), msg("user", "Weather in Oslo?"),
        msg("assistant", "", tool_calls=[{"id": "call_0", "type": "function",
                                          "function": {"name": "weather", "arguments": {"city": "Oslo"}}}]),
        msg("tool", '{"temp": -3}', tool_call_id="call_0"), msg("assistant", "It is -3 °C in Oslo.")],
        "tools": [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]}
    row = through("openai", through("sharegpt", [record]))
    assert row == [record]


@SETTINGS
@given(st.lists(text, min_size=1, max_size=5))
def test_text_records_round_trip_through_text_trl_and_autotrain(texts: list[str]) -> None:
    recs = [{"id": f"t{i}", "text": t} for i, t in enumerate(texts)]
    assert through("text", recs) == recs
    assert through("trl", recs) == recs
    # AutoTrain reads a `text` cell whose lines start with its role prefixes as a dialogue
    plain = [r for r in recs if not re.search(r"(^|\n|\\n)[ \t]*(human|bot):", r["text"], re.IGNORECASE)]
    if plain:
        assert through("autotrain", plain) == plain
