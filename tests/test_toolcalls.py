"""Tool calls written in the text (`--tool-calls`, `prep convert --write-tool-calls`; issue 29 item 3).

The 300 glaive fixture conversations (211 structured calls) are written in each text dialect by this test's own
f-strings (not by prep's writers), converted with `--tool-calls DIALECT` and with `auto`: every call comes back with
its name and arguments and every result as its tool message, the records equal the fixture's; written back with
`--write-tool-calls` the text is the test's text, character for character; and prep's ids for the converted rows
under the qwen2.5 template equal transformers' `apply_chat_template(messages, tools=...)`. A call that does not parse
rejects its row naming the message; a template that concatenates `arguments` as text is given JSON text.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conftest import fixture, hf_tokenizer, run_prep
from prep.core.findings import Batch, RowError, Source
from prep.core.options import TOOL_CALLS
from prep.formats import Fields, read_records, toolcalls
from prep.formats.inputs import Inputs
from prep.render.encoder import Encoder, Settings
from prep.render.jinja import JinjaTemplate
from prep.render.tokenizer import load_tokenizer
from prep.stages.convert import convert
from prep.stages.validate import validate


def _hermes(content: str, calls: list[tuple[str, dict[str, Any]]]) -> str:
    return "\n".join([*([content] if content else []), *(
        '<tool_call>\n{"name": ' + json.dumps(n) + ', "arguments": ' + json.dumps(a, ensure_ascii=False)
        + "}\n</tool_call>" for n, a in calls)])


def _glaive(content: str, calls: list[tuple[str, dict[str, Any]]]) -> str:
    return "\n".join([*([content] if content else []), *(
        '<functioncall> {"name": ' + json.dumps(n) + ", \"arguments\": '" + json.dumps(a, ensure_ascii=False) + "'}"
        for n, a in calls)])


def _qwen_xml(content: str, calls: list[tuple[str, dict[str, Any]]]) -> str:
    out = content + "\n\n" if content else ""
    for k, (n, a) in enumerate(calls):  # as Qwen3-Coder's template writes them
        params = "".join(f"<parameter={p}>\n" + (v if isinstance(v, str) else json.dumps(v, ensure_ascii=False))
                         + "\n</parameter>\n" for p, v in a.items())
        out += ("\n" if k else "") + f"<tool_call>\n<function={n}>\n{params}</function>\n</tool_call>"
    return out


def _llama(content: str, calls: list[tuple[str, dict[str, Any]]]) -> str:
    return content + "<|python_tag|>" + "; ".join(json.dumps({"name": n, "parameters": a}, ensure_ascii=False)
                                                  for n, a in calls)


CALLS = {"hermes": _hermes, "glaive": _glaive, "qwen-xml": _qwen_xml, "llama-python": _llama}
RESULTS = {"hermes": "<tool_response>\n{}\n</tool_response>", "qwen-xml": "<tool_response>\n{}\n</tool_response>",
           "glaive": "FUNCTION RESPONSE: {}", "llama-python": "{}"}


def as_text(record: dict[str, Any], dialect: str) -> dict[str, Any]:
    """An openai row of `record` with its calls and results written in `dialect` (ids left out: text has none)."""
    messages = []
    for m in record["messages"]:
        if m.get("tool_calls"):
            calls = [(c["function"]["name"], c["function"]["arguments"]) for c in m["tool_calls"]]
            messages.append({"role": "assistant", "content": CALLS[dialect](m["content"], calls)})
        elif m["role"] == "tool":
            messages.append({"role": "tool", "content": RESULTS[dialect].replace("{}", m["content"], 1)})
        else:
            messages.append(m)
    return {"id": record["id"], "messages": messages, **({"tools": record["tools"]} if "tools" in record else {})}


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def glaive() -> list[dict[str, Any]]:
    """The glaive fixture's 300 conversations as records (structured calls from its function_call turns)."""
    records = [r for b in read_records([str(fixture("data", "llamafactory", "glaive_toolcall_en_demo.json"))])
               for r in b.items]
    assert len(records) == 300 and sum(len(m.get("tool_calls") or ()) for r in records for m in r["messages"]) == 211
    return records


@pytest.fixture(scope="module")
def qwen(glaive: list[dict[str, Any]]) -> tuple[Any, dict[str, list[int]]]:
    """The qwen2.5 fixture tokenizer, and transformers' ids for each fixture conversation with its tools."""
    path = fixture("tokenizers", "qwen2.5")
    hf = hf_tokenizer(path)
    reference = {r["id"]: hf.apply_chat_template(r["messages"], tools=r.get("tools"), tokenize=True, return_dict=False)
                 for r in glaive}
    return load_tokenizer(str(path)), reference


def test_the_dialects_are_the_options_choices() -> None:
    assert toolcalls.NAMES == TOOL_CALLS


@pytest.mark.parametrize("dialect", TOOL_CALLS)
def test_300_rows_in_each_dialect_read_back_their_calls_write_back_their_text_and_tokenize_as_transformers(
        tmp_path: Path, dialect: str, glaive: list[dict[str, Any]], qwen: tuple[Any, dict[str, list[int]]]) -> None:
    text_rows = [as_text(r, dialect) for r in glaive]
    assert sum(toolcalls.DIALECTS[dialect].holds(m["content"]) for r in text_rows for m in r["messages"]
               if m["role"] == "assistant") == 211
    source = tmp_path / "text.jsonl"
    source.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in text_rows), encoding="utf-8")
    for how in (dialect, "auto"):
        parsed = tmp_path / f"parsed-{how}.jsonl"
        result = convert(Inputs([str(source)], tool_calls=how), "openai", str(parsed))
        assert (result.tally.read, result.tally.written) == (300, 300)
        back = [r for b in read_records([str(parsed)]) for r in b.items]
        assert back == glaive  # every call's name and arguments, every result answering its call, nothing else
    again = tmp_path / "again.jsonl"
    convert(Inputs([str(parsed)]), "openai", str(again), write_tool_calls=dialect)
    assert read_jsonl(again) == text_rows

    tok, reference = qwen
    encoder = Encoder(tok.backend, tok.jinja(), tok.specials, Settings("sft"))
    batch: Batch[dict[str, Any]] = Batch()
    for i, r in enumerate(back):
        batch.add(r, Source(str(parsed), i + 1, i + 1))
    out, table = encoder(batch)
    assert not out.rejects
    ids = [row["input_ids"] for row in table.to_pylist()]
    assert len(ids) == 300 and ids == [reference[r["id"]] for r in back]


BROKEN = {
    "hermes": '<tool_call>\n{"name": "f", "arguments": {"a": 1}\n</tool_call>',  # a brace short
    "glaive": "<functioncall> {\"name\": \"f\", \"arguments\": '{\"a\": }'}",
    "qwen-xml": "<tool_call>\n<function=f>\n<parameter=a>\n1\n</parameter>\n</tool_call>",  # no </function>
    "llama-python": '<|python_tag|>{"name": "f", "parameters": [1]}',
}


@pytest.mark.parametrize("dialect", TOOL_CALLS)
def test_a_call_that_does_not_parse_rejects_its_row_naming_the_message(tmp_path: Path, dialect: str) -> None:
    good = {"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]}
    bad = {"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": BROKEN[dialect]}]}
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n", encoding="utf-8")
    rejects = tmp_path / "rejects.jsonl"
    result = convert(Inputs([str(source)], tool_calls=dialect), "openai", str(tmp_path / "out.jsonl"),
                     rejects=str(rejects))
    assert (result.tally.read, result.tally.written, result.tally.rejected_total) == (2, 1, 1)
    [reject] = read_jsonl(rejects)
    finding = reject["reasons"][0]
    assert reject["line"] == 2 and finding["code"] == "bad_text_tool_call"
    assert finding["path"] == "$.messages[1].content" and finding["hint"]


def test_the_cli_reads_text_calls_into_another_format_and_says_what_it_rejected(tmp_path: Path) -> None:
    rows = [{"messages": [{"role": "user", "content": "Weather?"},
                          {"role": "assistant", "content": _hermes("", [("w", {"city": "Paris"})])},
                          {"role": "user", "content": "<tool_response>\n21\n</tool_response>"},
                          {"role": "assistant", "content": "21 degrees."}]},
            {"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": BROKEN["glaive"]}]}]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "out.jsonl"
    done = run_prep("convert", str(source), "--tool-calls", "auto", "--to", "sharegpt", "-o", str(out))
    assert done.returncode == 1, done.stderr.decode()
    assert "in.jsonl:2 $.messages[1].content bad_text_tool_call" in done.stderr.decode()
    [row] = read_jsonl(out)
    assert [t["from"] for t in row["conversations"]] == ["human", "function_call", "observation", "gpt"]
    assert json.loads(row["conversations"][1]["value"]) == {"name": "w", "arguments": {"city": "Paris"}}


def test_validate_checks_text_calls_as_calls(tmp_path: Path) -> None:
    """With --tool-calls validate reads the rows as every other verb does: a call that does not parse is an error
    on its line, a parsed call is checked like a structured one (no tools declared for it: a warning)."""
    rows = [{"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": BROKEN["hermes"]}]},
            {"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": _hermes("", [("f", {})])}]}]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    assert validate(Inputs([str(source)])).rows_rejected == 0  # as text, both rows are fine
    report = validate(Inputs([str(source)], tool_calls="hermes"))
    assert (report.rows_accepted, report.rows_rejected) == (1, 1)
    assert report.findings.counts == {"bad_text_tool_call": 1, "no_tools_declared": 1}
    assert report.findings.examples["bad_text_tool_call"][0].path == "$.messages[1].content"


def test_text_around_calls_several_calls_and_grouped_results() -> None:
    """Text before the calls stays the message's; two calls get two ids; a user turn holding two
    <tool_response> blocks (as Qwen's template groups results) becomes two tool messages answering them in order;
    a Llama 3.1 call written without the tag (as its template writes it) is read too, an answer that is other JSON
    is not."""
    record = {"messages": [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": 'Checking.\n<tool_call>\n{"name": "w", "arguments": {"city": "Paris"}}\n'
                                         '</tool_call>\n<tool_call>\n{"name": "w", "arguments": "{\\"city\\": '
                                         '\\"Rome\\"}"}\n</tool_call>'},
        {"role": "user", "content": "<tool_response>\n21\n</tool_response>\n<tool_response>\n25\n</tool_response>"},
        {"role": "assistant", "content": "Paris 21, Rome 25."}]}
    toolcalls.read_calls(record, "hermes")
    m = record["messages"]
    assert m[1]["content"] == "Checking."
    assert [(c["id"], c["function"]["arguments"]) for c in m[1]["tool_calls"]] == [
        ("call_0", {"city": "Paris"}), ("call_1", {"city": "Rome"})]
    assert [(x["role"], x["content"], x["tool_call_id"]) for x in m[2:4]] == [("tool", "21", "call_0"),
                                                                               ("tool", "25", "call_1")]
    llama = {"messages": [{"role": "user", "content": "Q"},
                          {"role": "assistant", "content": '{"name": "w", "parameters": {"city": "Paris"}}'},
                          {"role": "tool", "content": "21"},
                          {"role": "assistant", "content": '{"answer": 21}'}]}
    toolcalls.read_calls(llama, "llama-python")
    assert llama["messages"][1]["tool_calls"][0]["function"] == {"name": "w", "arguments": {"city": "Paris"}}
    assert llama["messages"][2]["tool_call_id"] == "call_0" and "tool_calls" not in llama["messages"][3]
    several = {"messages": [{"role": "assistant", "content": '[{"name": "w", "parameters": {}}, '
                                                             '{"name": "v", "parameters": {"a": 1}}]'}]}
    toolcalls.read_calls(several, "llama-python")  # LLaMA-Factory's Llama 3 formatter writes several as a list
    assert [c["function"]["name"] for c in several["messages"][0]["tool_calls"]] == ["w", "v"]


def test_preference_rows_number_each_answer_after_the_prompt() -> None:
    """chosen and rejected each continue the prompt: their calls are numbered after the prompt's, independently,
    and writing then reading gives the record back."""
    call = {"role": "assistant", "content": _glaive("", [("w", {"city": "Paris"})])}
    record = {"prompt": [{"role": "user", "content": "Q"}, call, {"role": "user", "content": "FUNCTION RESPONSE: 21"}],
              "chosen": [{"role": "assistant", "content": _glaive("Again.", [("w", {"city": "Rome"})])}],
              "rejected": [{"role": "assistant", "content": "No."}]}
    toolcalls.read_calls(record, "glaive")
    assert record["prompt"][2] == {"role": "tool", "content": "21", "tool_call_id": "call_0"}
    assert record["chosen"][0]["content"] == "Again." and record["chosen"][0]["tool_calls"][0]["id"] == "call_1"
    written = toolcalls.write_calls(record, "glaive")
    toolcalls.read_calls(written, "auto")
    assert written == record


def test_qwen_xml_values_follow_the_tool_schema() -> None:
    """A string parameter stays text even where it reads as JSON; others are read as JSON."""
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {
        "code": {"type": "string"}, "n": {"type": "integer"}}}}}]
    content = _qwen_xml("", [("f", {"code": "5", "n": 5})])
    with_schema = {"messages": [{"role": "assistant", "content": content}], "tools": tools}
    toolcalls.read_calls(with_schema, "qwen-xml")
    assert with_schema["messages"][0]["tool_calls"][0]["function"]["arguments"] == {"code": "5", "n": 5}
    # as later Qwen3-Coder templates write non-string scalars (`| string`), and without the <tool_call> around it
    python = {"messages": [{"role": "assistant", "content": "<function=f>\n<parameter=ok>\nTrue\n</parameter>\n"
                                                            "<parameter=x>\nNone\n</parameter>\n</function>"}]}
    toolcalls.read_calls(python, "auto")
    assert python["messages"][0]["tool_calls"][0]["function"]["arguments"] == {"ok": True, "x": None}


# A template that writes `arguments` as text (DeepSeek-V3's way): given an object it would write a dict repr.
_STRING_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}{% for c in m.tool_calls or [] %}"
                    "<call>{{ c.function.name }}\n```json\n{{ c.function.arguments }}\n```</call>{% endfor %}"
                    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def test_arguments_are_given_as_the_template_expects(glaive: list[dict[str, Any]],
                                                    qwen: tuple[Any, dict[str, list[int]]]) -> None:
    """Probed once per template: qwen2.5's applies tojson to an object (ids above equal transformers' with objects);
    one that prints `arguments` gets JSON text, and its ids equal transformers' given the arguments as JSON text."""
    tok, _ = qwen
    assert tok.jinja().string_arguments is False
    template = JinjaTemplate(_STRING_TEMPLATE, None, {}, "test", ["<|im_end|>", "<|im_start|>"])
    assert template.string_arguments is True
    rows = [{"id": r["id"], "messages": r["messages"]} for r in glaive  # it writes no tool definitions
            if any(m.get("tool_calls") for m in r["messages"])][:20]
    encoder = Encoder(tok.backend, template, tok.specials, Settings("sft"))
    batch: Batch[dict[str, Any]] = Batch()
    for i, r in enumerate(rows):
        batch.add(r, Source("glaive", i + 1, i + 1))
    out, table = encoder(batch)
    assert not out.rejects
    hf = hf_tokenizer(tok.path)
    for r, row in zip(rows, table.to_pylist(), strict=True):
        as_strings = [{**m, "tool_calls": [{**c, "function": {**c["function"], "arguments": json.dumps(
            c["function"]["arguments"], ensure_ascii=False)}} for c in m["tool_calls"]]} if m.get("tool_calls") else m
            for m in r["messages"]]
        assert row["input_ids"] == hf.apply_chat_template(as_strings, chat_template=_STRING_TEMPLATE, tokenize=True,
                                                          return_dict=False)
        assert "{'" not in hf.decode(row["input_ids"])


def test_hostile_calls_are_their_rows_findings_not_the_runs_end(tmp_path: Path) -> None:
    """JSON nested deeper than Python can read, inside a text call or in a structured call's arguments, rejects its
    row (the run went on to abort as a whole); a tool whose `parameters` are not a schema types no argument (it
    stopped the run as an internal error)."""
    deep = "[" * 100_000 + "]" * 100_000
    q, a = {"role": "user", "content": "Q"}, "assistant"
    rows = [{"messages": [q, {"role": a, "content": f'<tool_call>{{"name": "f", "arguments": {{"a": {deep}}}}}'
                                                    "</tool_call>"}]},
            {"messages": [q, {"role": a, "content": "<|python_tag|>" + deep}]},
            {"messages": [q, {"role": a, "content": None, "tool_calls": [
                {"id": "c", "type": "function", "function": {"name": "f", "arguments": deep}}]}]},
            *({"messages": [q, {"role": a, "content": "<function=f>\n<parameter=n>\n5\n</parameter>\n</function>"}],
               "tools": [{"type": "function", "function": {"name": "f", "parameters": parameters}}]}
              for parameters in ("x", {"properties": [1]}, {"properties": {"n": "integer"}}))]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    rejects = tmp_path / "rejects.jsonl"
    result = convert(Inputs([str(source)], tool_calls="auto"), "openai", str(tmp_path / "out.jsonl"),
                     rejects=str(rejects))
    assert (result.tally.read, result.tally.written) == (6, 3)
    assert [(k["line"], k["reasons"][0]["code"], "deeper than can be read" in k["reasons"][0]["message"])
            for k in read_jsonl(rejects)] == [(1, "bad_text_tool_call", True), (2, "bad_text_tool_call", True),
                                              (3, "bad_tool_arguments", True)]
    assert [r["messages"][1]["tool_calls"][0]["function"]["arguments"] for r in read_jsonl(tmp_path / "out.jsonl")
            ] == ['{"n": 5}'] * 3


@pytest.mark.parametrize(("dialect", "value"), [("hermes", "a </tool_call> b"), ("glaive", "<functioncall> x"),
                                                ("qwen-xml", "a</parameter>b"), ("qwen-xml", "5")])
def test_a_row_the_dialect_would_not_give_back_is_refused_not_changed(tmp_path: Path, dialect: str,
                                                                     value: str) -> None:
    """--write-tool-calls wrote a value holding the dialect's own tags (or a qwen-xml string that reads as JSON,
    without a tool schema to type it) into text that read back otherwise, or not at all, rc 0; and results that
    answer two calls in another order than they were made came back answering the other call."""
    call, plain = ({"type": "function", "function": {"name": "f", "arguments": {"k": v}}} for v in (value, "v"))
    rows = [{"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "", "tool_calls": [
                {**call, "id": "call_0"}]}, {"role": "tool", "content": "r", "tool_call_id": "call_0"}]},
            {"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "", "tool_calls": [
                {**plain, "id": "a"}, {**plain, "id": "b"}]}, {"role": "tool", "content": "rb", "tool_call_id": "b"},
                {"role": "tool", "content": "ra", "tool_call_id": "a"}]},
            {"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "", "tool_calls": [
                {**plain, "id": "call_0"}]}]}]
    source, out, rejects = tmp_path / "in.jsonl", tmp_path / "out.jsonl", tmp_path / "rejects.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    result = convert(Inputs([str(source)]), "openai", str(out), write_tool_calls=dialect, rejects=str(rejects))
    assert (result.tally.written, result.tally.rejected) == (1, {"not_expressible": 2})
    assert [(k["line"], k["reasons"][0]["path"]) for k in read_jsonl(rejects)] == [(1, "$.messages[1]"),
                                                                                   (2, "$.messages[2]")]
    back = [r for b in read_records([str(out)], fields=Fields(tool_calls=dialect)) for r in b.items]
    assert [m for r in back for m in r["messages"]] == rows[2]["messages"]


def test_many_tags_are_read_in_one_pass() -> None:
    """A user turn of 40 <tool_response> blocks and a word after them is text, not results, and stays: the fullmatch
    that decided it backtracked exponentially (prep hung on it), and `auto`, taking the marker alone, dropped any
    user message that mentioned <tool_response> without being made of such blocks. Tags opened 100,000 times and never closed are a
    finding from counting them, where each opening scanned to the end of the text."""
    blocks = "<tool_response>x</tool_response>" * 40 + " and a word"
    record = {"messages": [{"role": "user", "content": blocks}, {"role": "assistant", "content": "A"}]}
    toolcalls.read_calls(record, "auto")
    assert record["messages"][0] == {"role": "user", "content": blocks}
    for dialect, text in (("hermes", "<tool_call>" * 100_000), ("qwen-xml", "<function=f>" * 100_000),
                          ("qwen-xml", "<function=f>" + "<parameter=a>" * 100_000 + "</function>")):
        with pytest.raises(RowError, match="not closed"):
            toolcalls.read_calls({"messages": [{"role": "assistant", "content": text}]}, dialect)
