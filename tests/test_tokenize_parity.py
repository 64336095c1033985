"""Token-exact parity and loss masks on real tokenizers (../shared/fixtures/tokenizers) over every
conversation of the fixtures' alpaca, glaive (tools, tool calls) and kto data.

- `--template tokenizer` (prep's own loader and renderer, no transformers): input_ids ==
  transformers' tokenizer.apply_chat_template(messages, tools=...) exactly, for qwen2.5, llama3, phi-3-mini and
  smollm3 (its reasoning template, both told the day prep pins by default); where the tokenizer's template cannot write the
  conversation (llama3 and phi-3-mini drop tool definitions and calls, smollm3 tool calls) the row is refused with
  `template_drops_content`, never trained without them.
- built-in `llama3` == the llama3 fixture's template, `phi3` == phi-3-mini's, and `chatml` == qwen2.5's on
  conversations that begin with a system message (qwen2.5 adds its own default system prompt otherwise).
- masks: with --train-on assistant each run of trained tokens decodes to one assistant message's content and
  the end-of-turn token; no other special token is trained; last, all and content likewise.
"""

from __future__ import annotations

from typing import Any

import pytest

from conftest import apply_chat_template, fixture, hf_tokenizer
from prep.core.findings import Batch, Source
from prep.formats import read_records
from prep.render.encoder import Encoder, Settings, _token_ranges
from prep.render.tokenizer import load_tokenizer

NAMES = ("qwen2.5", "llama3", "phi-3-mini", "smollm3")
BUILTIN = {"qwen2.5": "chatml", "llama3": "llama3", "phi-3-mini": "phi3"}
SYSTEM = {"role": "system", "content": "You are a helpful assistant."}


@pytest.fixture(scope="module")
def conversations() -> list[dict[str, Any]]:
    """Every conversation of the three fixture files (kto rows as prompt + completion)."""
    out = []
    for name in ("alpaca_en_demo.json", "glaive_toolcall_en_demo.json", "kto_en_demo.json"):
        for batch in read_records([str(fixture("data", "llamafactory", name))]):
            assert not batch.rejects
            for r in batch.items:
                out.append({"id": r["id"], "messages": r.get("messages") or r["prompt"] + r["completion"],
                            **({"tools": r["tools"]} if r.get("tools") else {})})
    assert len(out) == 999 + 300 + 300
    return out


class Case:
    """One fixture tokenizer, what our encoder made of the conversations, and the reference ids."""

    def __init__(self, name: str, conversations: list[dict[str, Any]]) -> None:
        self.tok = load_tokenizer(str(fixture("tokenizers", name)))
        self.template = self.tok.jinja()
        self.by_id = {c["id"]: c for c in conversations}
        self.reference = {c["id"]: self.apply(c["messages"], c.get("tools")) for c in conversations}
        self.out, rows = encode(self.tok, self.template, conversations)
        self.rows = dict(zip(self.out.items, rows, strict=True))

    def apply(self, messages: list[dict[str, Any]], tools: Any = None, **kw: Any) -> list[int]:
        return apply_chat_template(self.tok.path, messages, tools=tools, **kw)


def encode(tok: Any, template: Any, conversations: list[dict[str, Any]], **settings: Any) -> tuple[Batch, list]:
    encoder = Encoder(tok.backend, template, tok.specials, Settings("sft", **settings))
    batch: Batch[dict[str, Any]] = Batch()
    for i, c in enumerate(conversations):
        batch.add(c, Source("fixtures", i + 1, i + 1))
    out, table = encoder(batch)
    return out, table.to_pylist()


@pytest.fixture(scope="module", params=NAMES)
def case(request, conversations) -> Case:
    fixture("tokenizers", request.param)
    return Case(request.param, conversations)


def runs(ids: list[int], labels: list[int]) -> list[list[int]]:
    out: list[list[int]] = []
    for k, (token, label) in enumerate(zip(ids, labels, strict=True)):
        if label != -100:
            assert label == token
            if k == 0 or labels[k - 1] == -100:
                out.append([])
            out[-1].append(token)
    return out


def has_control_text(case: Case, conversation: dict[str, Any]) -> bool:
    """Content that spells a special token (`</s>`, `<|user|>` in some answers) is parsed as that token, as
    apply_chat_template parses it; the ids still match, but the trained text does not decode back verbatim."""
    added = [t.content for t in hf_tokenizer(case.tok.path).added_tokens_decoder.values()]
    return any(a in m["content"] for m in conversation["messages"] for a in added)


@pytest.mark.slow
def test_tokenizer_template_ids_equal_apply_chat_template(case: Case) -> None:
    assert case.out.items and case.out.sources
    for rid, row in case.rows.items():
        assert row["input_ids"] == case.reference[rid], rid
    refused = {r.row["id"]: r for r in case.out.rejects}
    for rid, reject in refused.items():
        conversation = case.by_id[rid]
        assert reject.findings[0].code == "template_drops_content"
        assert conversation.get("tools")  # only tool rows are refused ...
        # ... because the template really leaves their tools (smollm3: their tool calls) out: it writes the same
        # ids without them
        if case.tok.name == "smollm3":
            calls_left_out = [{k: v for k, v in m.items() if k != "tool_calls"} for m in conversation["messages"]]
            assert case.reference[rid] == case.apply(calls_left_out, conversation["tools"])
        else:
            assert case.reference[rid] == case.apply(conversation["messages"])
    if case.tok.name == "qwen2.5":
        assert not refused and len(case.rows) == 1599
    elif case.tok.name == "smollm3":  # it writes tool definitions, but not the assistant's tool calls
        assert all(case.by_id[rid].get("tools") for rid in refused)
        assert len(refused) == 153 and len(case.rows) == 1599 - 153
    else:  # Llama-3-Instruct and Phi-3 templates ignore `tools` and `tool_calls`: every tool row is refused
        assert set(refused) == {c["id"] for c in case.by_id.values() if c.get("tools")}
        assert len(refused) == 191 and len(case.rows) == 1599 - 191


@pytest.mark.slow
def test_assistant_mask_is_each_answer_and_its_end_of_turn_token(case: Case) -> None:
    eot = case.template.eot
    eot_id = case.tok.backend.token_to_id(eot)
    special = {case.tok.backend.token_to_id(t.content) for t in hf_tokenizer(case.tok.path).added_tokens_decoder.values() if t.special}
    checked = 0
    for rid, row in case.rows.items():
        conversation = case.by_id[rid]
        answers = [m for m in conversation["messages"] if m["role"] == "assistant"]
        trained = runs(row["input_ids"], row["labels"])
        assert len(trained) == len(answers)
        assert row["num_loss_tokens"] == sum(map(len, trained))
        for run in trained:
            assert run[-1] == eot_id  # every trained answer ends with the end-of-turn token, trained
            assert not special & set(run[:-1]) or has_control_text(case, conversation)  # no header tokens
        if has_control_text(case, conversation):
            continue
        for run, message in zip(trained, answers, strict=True):
            text = hf_tokenizer(case.tok.path).decode(run)
            if message.get("tool_calls"):
                assert all(c["function"]["name"] in text for c in message["tool_calls"]) and text.endswith(eot)
            else:
                content = message["content"].strip() if case.tok.name == "llama3" else message["content"]
                assert text == content + eot
            checked += 1
    assert checked > 1000


@pytest.mark.slow
def test_last_all_and_content_masks(case: Case) -> None:
    """The same rendering and tokenization, labels for the other policies (the spans code the encoder uses)."""
    eot = case.template.eot
    conversations = [case.by_id[rid] for rid in case.rows if not has_control_text(case, case.by_id[rid])][:400]
    rendered = [case.template.render(c["messages"], c.get("tools")) for c in conversations]
    encodings = case.tok.backend.encode_batch([r.text for r in rendered], add_special_tokens=False)
    for conversation, r, enc in zip(conversations, rendered, encodings, strict=True):
        def decoded(policy: str, enc: Any = enc, r: Any = r) -> list[str]:
            return [hf_tokenizer(case.tok.path).decode(enc.ids[a:b]) for a, b in _token_ranges(enc, r.spans(policy))]

        messages = conversation["messages"]
        last = messages[max(i for i, m in enumerate(messages) if m["role"] == "assistant")]
        if not last.get("tool_calls"):
            want = last["content"].strip() if case.tok.name == "llama3" else last["content"]
            assert decoded("last") == [want + eot]
        assert _token_ranges(enc, r.spans("all")) == [(0, len(enc.ids))]
        content = decoded("content")
        non_empty = [m for m in messages if m["content"].strip() or m.get("tool_calls")]
        assert len(content) == len(non_empty)
        for text, m in zip(content, non_empty, strict=True):
            if m["role"] == "assistant":
                assert text.endswith(eot)
            else:  # message text only: no role header, no end-of-turn token
                assert text.strip() == m["content"].strip()


@pytest.mark.slow
def test_builtin_template_equals_the_models_own(case: Case) -> None:
    """llama3 == Llama-3-Instruct, phi3 == Phi-3-mini, chatml == Qwen2.5 (with a system message first)."""
    if case.tok.name not in BUILTIN:
        pytest.skip(f"no built-in template renders like {case.tok.name}'s own")
    template_name = BUILTIN[case.tok.name]
    conversations = list(case.by_id.values())
    if template_name == "chatml":
        conversations = [{**c, "messages": [SYSTEM, *c["messages"]]} for c in conversations]
    from prep.render.templates import get_template

    out, rows = encode(case.tok, get_template(template_name, case.tok.specials), conversations)
    for rid, row in zip(out.items, rows, strict=True):
        c = next(x for x in conversations if x["id"] == rid) if template_name == "chatml" else case.by_id[rid]
        reference = case.apply(c["messages"], c.get("tools")) if template_name == "chatml" else case.reference[rid]
        assert row["input_ids"] == reference, rid
        if rid in case.rows and template_name != "chatml":
            assert row["labels"] == case.rows[rid]["labels"]  # same masks as the tokenizer's own template
    if template_name == "chatml":
        assert len(out.items) == 1599  # tools and tool calls included
    else:  # the built-in refuses what Llama-3-Instruct / Phi-3 cannot express: tool rows
        assert {r.row["id"] for r in out.rejects} == {c["id"] for c in conversations if c.get("tools")}
        assert {r.findings[0].code for r in out.rejects} == {"template_cannot_render"}


@pytest.mark.slow
def test_kto_prompt_and_completion_as_trl_reads_them(case: Case) -> None:
    """prompt_input_ids = apply_chat_template(prompt, add_generation_prompt=True); prompt + completion ids
    = apply_chat_template(prompt + completion): the split TRL's KTOTrainer makes, from one tokenization."""
    batches = list(read_records([str(fixture("data", "llamafactory", "kto_en_demo.json"))]))
    encoder = Encoder(case.tok.backend, case.template, case.tok.specials, Settings("kto"))
    for batch in batches:
        out, table = encoder(batch)
        records = {r["id"]: r for r in batch.items}
        for rid, row in zip(out.items, table.to_pylist(), strict=True):
            record = records[rid]
            prompt = case.apply(record["prompt"], add_generation_prompt=True)
            assert row["prompt_input_ids"] == prompt
            assert row["prompt_input_ids"] + row["completion_input_ids"] == case.apply(
                record["prompt"] + record["completion"])
            assert row["label"] == record["label"]


def test_no_doubled_bos_and_truncation_keeps_the_eos(tmp_path) -> None:
    """Llama 3 has a BOS: every row starts with exactly one, including cut rows and pretraining text, and a
    cut answer still ends with <|eot_id|>, trained."""
    tok = load_tokenizer(str(fixture("tokenizers", "llama3")))
    bos, eot = hf_tokenizer(tok.path).bos_token_id, tok.backend.token_to_id("<|eot_id|>")
    conversations = []
    for batch in read_records([str(fixture("data", "llamafactory", "alpaca_en_demo.json"))]):
        conversations += [{"id": r["id"], "messages": r["messages"]} for r in batch.items[:200]]
    for template in ("tokenizer", "llama3"):
        from prep.render.templates import get_template

        chosen = tok.jinja() if template == "tokenizer" else get_template("llama3", tok.specials)
        out, rows = encode(tok, chosen, conversations, max_len=128, overflow="truncate")
        assert len(rows) == 200 and len(out.altered) > 20
        for row in rows:
            assert row["input_ids"][0] == bos and row["input_ids"].count(bos) == 1
            assert len(row["input_ids"]) <= 128
            assert row["input_ids"][-1] == row["labels"][-1] == eot
    text = Encoder(tok.backend, None, tok.specials, Settings("pretrain", max_len=64, overflow="truncate"))
    batch = next(read_records([str(fixture("data", "llamafactory", "c4_demo.jsonl"))]))
    out, table = text(batch)
    for row in table.to_pylist():
        ids = row["input_ids"]
        assert ids[0] == bos and ids.count(bos) == 1 and ids[-1] == hf_tokenizer(tok.path).eos_token_id and row["labels"] == ids
