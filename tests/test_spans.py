"""Trained spans by the generation prompt (design §4): an assistant turn is trained from where the generation
prompt, rendered under the same template arguments, ends, through its end-of-turn token. Checked on a Qwen3-style
template (not prefix-stable; its generation prompt holds an empty think block with enable_thinking=false) and on
the smollm3 fixture (whose `{% generation %}` blocks are compared with prep's labels), for enable_thinking true and
false, single- and multi-turn rows, against transformers' apply_chat_template."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from conftest import fixture, hf_tokenizer, pinned_day
from prep.core.options import DEFAULT_DATE
from prep.core.records import join_think
from prep.formats.inputs import Inputs
from prep.stages.tokenize import tokenize

# Qwen3's chat template as published (tokenizer_config.json of Qwen/Qwen3-8B), its tool branches left out: earlier
# turns lose their reasoning, the answers after the last user message keep it (an empty block on a last answer
# without any), and the generation prompt holds an empty think block when thinking is off.
QWEN3 = """{%- if messages[0].role == 'system' %}{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}
{%- endif %}
{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}
{%- for message in messages[::-1] %}{%- set index = (messages|length - 1) - loop.index0 %}
{%- if ns.multi_step_tool and message.role == "user" %}{%- set ns.multi_step_tool = false %}
{%- set ns.last_query_index = index %}{%- endif %}{%- endfor %}
{%- for message in messages %}
{%- set content = message.content if message.content is string else '' %}
{%- if (message.role == "user") or (message.role == "system" and not loop.first) %}
{{- '<|im_start|>' + message.role + '\\n' + content + '<|im_end|>' + '\\n' }}
{%- elif message.role == "assistant" %}
{%- set reasoning_content = '' %}
{%- if message.reasoning_content is string %}{%- set reasoning_content = message.reasoning_content %}
{%- elif '</think>' in content %}
{%- set reasoning_content = content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') %}
{%- set content = content.split('</think>')[-1].lstrip('\\n') %}{%- endif %}
{%- if loop.index0 > ns.last_query_index and (loop.last or reasoning_content) %}
{{- '<|im_start|>' + message.role + '\\n<think>\\n' + reasoning_content.strip('\\n') + '\\n</think>\\n\\n'
    + content.lstrip('\\n') }}
{%- else %}{{- '<|im_start|>' + message.role + '\\n' + content }}{%- endif %}
{{- '<|im_end|>\\n' }}
{%- endif %}{%- endfor %}
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}
{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}
{%- endif %}"""
HEADER, EOT = "<|im_start|>assistant\n", "<|im_end|>"  # both templates' assistant header and end of turn


@pytest.fixture(scope="module")
def rows(tmp_path_factory) -> tuple[Path, list[dict[str, Any]]]:
    """80 conversations from the alpaca fixture: one and two assistant turns, some with a system message, some
    with reasoning (a few empty)."""
    alpaca = json.loads(fixture("data", "llamafactory", "alpaca_en_demo.json").read_text(encoding="utf-8"))
    out = []
    for i in range(80):
        messages: list[dict[str, Any]] = [{"role": "system", "content": "Be exact."}] if i % 4 == 0 else []
        for k in range(1 + i % 2):
            row = alpaca[(i * 7 + k * 13) % len(alpaca)]
            answer: dict[str, Any] = {"role": "assistant", "content": row["output"]}
            if i % 3:
                answer["reasoning_content"] = "" if i % 11 == 1 else f"Step {k + 1}: {row['instruction'][:40]}"
            messages += [{"role": "user", "content": (row["instruction"] + "\n" + row["input"]).strip()}, answer]
        out.append({"id": f"s{i}", "messages": messages})
    path = tmp_path_factory.mktemp("spans") / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in out), encoding="utf-8")
    return path, out


def _expected(hf: Any, messages: list[dict[str, Any]], render: Any) -> tuple[list[int], list[int], int]:
    """The reference: transformers' ids, and labels trained exactly over each answer's span (from where the
    generation prompt ends, or after the role header where the turn does not hold the whole generation prompt,
    through the end-of-turn token); and how many turns took the role header."""
    full = render(messages, False)
    spans, headers = [], 0
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prompt = render(messages[:i], True)
        if full.startswith(prompt):
            start = len(prompt)
        else:
            before = render(messages[:i], False)
            assert full.startswith(before + HEADER)
            start, headers = len(before) + len(HEADER), headers + 1
        spans.append((start, full.index(EOT, start) + len(EOT)))
    enc = hf(full, add_special_tokens=False, return_offsets_mapping=True)
    labels = [t if any(a < e and s < b for s, e in spans) else -100
              for t, (a, b) in zip(enc["input_ids"], enc["offset_mapping"], strict=True)]
    return enc["input_ids"], labels, headers


def _shards(path: Path, out: Path, thinking: bool, **kw: Any) -> dict[str, dict[str, Any]]:
    result = tokenize(Inputs([str(path)]), str(kw.pop("tok")), str(out),
                      template_kwargs=[f"enable_thinking={str(thinking).lower()}"], **kw)
    assert result.tally.written == 80 and not result.tally.rejected, result.tally
    return {r["ids"][0]: r for r in pq.read_table(out / "data").to_pylist()}


@pytest.mark.slow  # 80 rows, each rendered by transformers per turn (the file's first: it imports transformers)
@pytest.mark.parametrize("thinking", [True, False])
def test_qwen3_style_trains_from_the_generation_prompt_and_refuses_no_multi_turn_row(rows, tmp_path,
                                                                                     thinking: bool) -> None:
    path, convs = rows
    tok_dir = fixture("tokenizers", "qwen2.5")
    (tmp_path / "qwen3.jinja").write_text(QWEN3)
    got = _shards(path, tmp_path / "s", thinking, tok=tok_dir, template=str(tmp_path / "qwen3.jinja"))
    hf = hf_tokenizer(tok_dir)

    def render(messages: list[dict[str, Any]], generation: bool) -> str:
        return hf.apply_chat_template(messages, chat_template=QWEN3, tokenize=False,
                                      add_generation_prompt=generation, enable_thinking=thinking)

    headers = empty_trained = 0
    for c in convs:
        ids, labels, n = _expected(hf, c["messages"], render)
        assert ids == hf.apply_chat_template(c["messages"], chat_template=QWEN3, enable_thinking=thinking,
                                             return_dict=False)
        assert got[c["id"]]["input_ids"] == ids, c["id"]
        assert got[c["id"]]["labels"] == labels, c["id"]
        headers += n
        empty_trained += "<think>\n\n</think>" in hf.decode([t for t in labels if t != -100])
    # thinking off: an earlier turn (40 rows have one) and a last answer with reasoning of its own do not hold the
    # generation prompt's empty block: they start after the role header
    reasoned = sum(bool(c["messages"][-1].get("reasoning_content")) for c in convs)
    assert headers == (0 if thinking else 40 + reasoned) and reasoned > 10
    # thinking on: a last answer without reasoning gets an empty block the model writes, trained (off: never)
    assert (empty_trained > 0) == thinking


@pytest.mark.parametrize("thinking", [True, False])
def test_smollm3_labels_are_its_generation_blocks_without_the_header_and_the_newline(rows, tmp_path,
                                                                                     thinking: bool) -> None:
    """SmolLM3's `{% generation %}` blocks (transformers' return_assistant_tokens_mask) hold each whole assistant
    turn: prep trains the same tokens except the generation prompt (role header, and the empty think block in
    no-think mode), which the model is given, and the newline after `<|im_end|>`, which it never writes."""
    path, convs = rows
    tok_dir = fixture("tokenizers", "smollm3")
    got = _shards(path, tmp_path / "s", thinking, tok=tok_dir)
    hf = hf_tokenizer(tok_dir)
    prompt = HEADER + ("" if thinking else "<think>\n\n</think>\n")

    def render(messages: list[dict[str, Any]], generation: bool) -> str:
        return hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation,
                                      enable_thinking=thinking)

    with pinned_day(DEFAULT_DATE):
        for c in convs:
            messages = [{"role": m["role"], "content": join_think(m["reasoning_content"], m["content"])}
                        if "reasoning_content" in m else m for m in c["messages"]]
            ids, labels, headers = _expected(hf, messages, render)
            assert headers == 0  # prefix-stable in both modes
            mask = hf.apply_chat_template(messages, return_dict=True, return_assistant_tokens_mask=True,
                                          enable_thinking=thinking)
            assert got[c["id"]]["input_ids"] == ids == mask["input_ids"], c["id"]
            assert got[c["id"]]["labels"] == labels, c["id"]
            only_mask, run = [], []
            for t, label, marked in zip(ids, labels, mask["assistant_masks"], strict=True):
                assert marked or label == -100  # every trained token is in a generation block
                if marked and label == -100:
                    run.append(t)
                elif run:
                    only_mask.append(hf.decode(run))
                    run = []
            only_mask += [hf.decode(run)] if run else []
            turns = sum(m["role"] == "assistant" for m in messages)
            assert only_mask == [prompt, "\n"] * turns, c["id"]
