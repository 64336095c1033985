"""Reasoning traces, template arguments and a pinned date on a real reasoning template (the smollm3 fixture:
`enable_thinking`, an empty think block in no-think mode, `strftime_now`), checked against transformers'
apply_chat_template.

SmolLM3's template does not read `reasoning_content`; its model writes the reasoning as a think block at the
start of the answer, so prep writes it there (`<think>\\nR\\n</think>\\n\\n` + answer) and the reference is
apply_chat_template on those messages.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from conftest import ROOT, apply_chat_template, fixture, hf_tokenizer, run_prep
from prep.core.options import DEFAULT_DATE
from prep.core.records import join_think
from prep.formats.inputs import Inputs
from prep.stages.tokenize import tokenize

THINK, END_THINK = 128002, 128003  # <think>, </think> in the smollm3 fixture


@pytest.fixture(scope="module")
def conversations(tmp_path_factory) -> tuple[Path, list[dict[str, Any]]]:
    """320 conversations from the alpaca fixture with reasoning added: one and two turns, with and without a
    system message, a few with empty reasoning (an empty think block)."""
    rows = json.loads(fixture("data", "llamafactory", "alpaca_en_demo.json").read_text(encoding="utf-8"))
    out = []
    for i in range(320):
        a, b = rows[i], rows[(i * 7 + 3) % len(rows)]
        messages: list[dict[str, Any]] = [{"role": "system", "content": "Answer carefully."}] if i % 3 == 0 else []
        for k, row in enumerate((a, b) if i % 2 else (a,)):
            reasoning = "" if i % 17 == 5 else f"The user asks: {row['instruction'][:60]}. Step {k + 1}: think."
            messages += [{"role": "user", "content": (row["instruction"] + "\n" + row["input"]).strip()},
                         {"role": "assistant", "content": row["output"], "reasoning_content": reasoning}]
        out.append({"id": f"r{i}", "messages": messages})
    path = tmp_path_factory.mktemp("reasoning") / "reasoning.jsonl"
    path.write_text("".join(json.dumps(c) + "\n" for c in out), encoding="utf-8")
    return path, out


def _folded(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages as SmolLM3 is trained on them: the reasoning as the answer's think block."""
    return [{"role": m["role"], "content": join_think(m["reasoning_content"], m["content"])}
            if "reasoning_content" in m else m for m in messages]


def _think_tokens(ids: list[int], decode: Any) -> list[list[int]]:
    """Positions of each <think> … </think> block that opens an answer (right after `<|im_start|>assistant\n`, or
    after the template's own empty block): the tags, and the whitespace-only tokens after the closing one (the
    blank line between reasoning and answer belongs to the block). SmolLM3's default system prompt spells the
    tags too; those are no answer's."""
    blocks: list[list[int]] = []
    start = None
    for k, t in enumerate(ids):
        if t == THINK and (decode(ids[max(k - 2, 0):k]) == "assistant\n" or blocks and blocks[-1][-1] == k - 1):
            start = k
        elif t == END_THINK and start is not None:
            end = k + 1
            while end < len(ids) and not decode([ids[end]]).strip() and ids[end] not in (THINK, 128012):
                end += 1
            blocks.append(list(range(start, end)))
            start = None
    return blocks


@pytest.mark.slow
@pytest.mark.parametrize("thinking", [True, False])
def test_smollm3_ids_equal_apply_chat_template_and_reasoning_is_masked_exactly_when_asked(
        conversations, tmp_path, thinking: bool) -> None:
    path, convs = conversations
    tok_dir = fixture("tokenizers", "smollm3")
    hf = hf_tokenizer(tok_dir)
    tables = {}
    for train in ("yes", "no"):
        result = tokenize(Inputs([str(path)]), str(tok_dir), str(tmp_path / train),
                          template_kwargs=[f"enable_thinking={str(thinking).lower()}"], train_on_reasoning=train)
        assert result.tally.written == 320 and not result.tally.rejected
        assert result.manifest["template"]["kwargs"] == {"enable_thinking": thinking}
        assert result.manifest["template"]["date"] == DEFAULT_DATE
        assert result.manifest["template"]["reasoning"] == "think block"
        tables[train] = {r["ids"][0]: r for r in pq.read_table(tmp_path / train / "data").to_pylist()}
    masked = trained_reasoning = empty_trained = 0
    for c in convs:
        reference = apply_chat_template(tok_dir, _folded(c["messages"]), enable_thinking=thinking)
        yes, no = tables["yes"][c["id"]], tables["no"][c["id"]]
        assert yes["input_ids"] == no["input_ids"] == reference, c["id"]
        blocks = _think_tokens(reference, hf.decode)
        inside = {k for block in blocks for k in block}
        for block in blocks:
            # no-think mode: the template's own empty block right after the header is the generation prompt's
            given = not thinking and hf.decode(reference[max(block[0] - 2, 0):block[0]]) == "assistant\n"
            for k in block:
                assert no["labels"][k] == -100  # masked when asked
                assert (yes["labels"][k] == -100) == given  # trained unless the generation prompt holds it
            masked += len(block) * (not given)
            trained_reasoning += 0 if given else len(block)
        for k, (a, b) in enumerate(zip(yes["labels"], no["labels"], strict=True)):
            if k not in inside:
                assert a == b  # the answers themselves are trained the same either way
        if not thinking:  # no-think mode: the template's own empty block before every answer, never trained
            assert len(blocks) >= sum(1 for m in c["messages"] if m["role"] == "assistant")
        empty_trained += any(not hf.decode(reference[b[0] + 1:reference.index(END_THINK, b[0])]).strip()
                             and yes["labels"][b[0]] != -100 for b in blocks)
    assert masked > 10_000 and trained_reasoning == masked
    assert empty_trained == 19  # the rows whose reasoning is empty: the model writes that empty block, trained


def _tokenize_cli(out: Path, data: Path, *extra: str, fake_day: str | None = None) -> bytes:
    """`prep tokenize` in a fresh interpreter; with `fake_day` the machine's clock says that day (every
    datetime.now in prep's template renderer)."""
    args = ["tokenize", str(data), "--tokenizer", str(fixture("tokenizers", "smollm3")), "-o", str(out), "-q", *extra]
    if fake_day is None:
        done = run_prep(*args)
    else:
        code = ("import datetime, sys\n"
                "import prep.render.jinja as j\n"
                "class Fake(datetime.datetime):\n"
                f"    @classmethod\n    def now(cls, tz=None): return cls.fromisoformat('{fake_day}')\n"
                "j.datetime = Fake\n"
                "from prep.cli import main\n"
                f"sys.argv = ['prep', *{args!r}]\n"
                "main()\n")
        import subprocess

        done = subprocess.run([sys.executable, "-c", code], capture_output=True,
                              env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr.decode()
    return b"".join(p.read_bytes() for p in sorted((out / "data").glob("*.parquet")))


@pytest.mark.slow
def test_shards_do_not_depend_on_the_day_they_are_made(conversations, tmp_path) -> None:
    path, _ = conversations
    today = _tokenize_cli(tmp_path / "today", path)
    other_day = _tokenize_cli(tmp_path / "other", path, fake_day="2031-07-04")
    assert today == other_day
    manifest = json.loads((tmp_path / "other" / "manifest.json").read_text())
    assert manifest["template"]["date"] == DEFAULT_DATE
    # The clock was really moved: asked for the machine's day, the two runs differ.
    asked = _tokenize_cli(tmp_path / "asked", path, "--date", "today", fake_day="2031-07-04")
    assert asked != today
    assert "04 July 2031" in hf_tokenizer(fixture("tokenizers", "smollm3")).decode(
        pq.read_table(tmp_path / "asked" / "data").to_pylist()[0]["input_ids"])


def test_template_arguments_per_row_and_from_a_jinja_file(tmp_path) -> None:
    tok_dir = fixture("tokenizers", "smollm3")
    rows = [{"id": "a", "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]},
            {"id": "b", "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}],
             "chat_template_kwargs": {"enable_thinking": False}}]
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    template = tmp_path / "smol.jinja"
    template.write_text((tok_dir / "chat_template.jinja").read_text())
    for how in ((), ("--template", str(template))):
        done = run_prep("tokenize", str(data), "--tokenizer", str(tok_dir), "-o", str(tmp_path / f"s{len(how)}"),
                        "--date", "2025-03-09", *how)
        assert done.returncode == 0, done.stderr.decode()
        got = {r["ids"][0]: r["input_ids"] for r in pq.read_table(tmp_path / f"s{len(how)}" / "data").to_pylist()}
        for r in rows:
            kw = r.get("chat_template_kwargs", {})
            assert got[r["id"]] == apply_chat_template(tok_dir, r["messages"], "2025-03-09", **kw)
        assert got["a"] != got["b"]
    manifest = json.loads((tmp_path / "s2" / "manifest.json").read_text())
    assert manifest["template"]["name"] == "smol.jinja" and manifest["template"]["date"] == "2025-03-09"
    bad = run_prep("tokenize", str(data), "--tokenizer", str(tok_dir), "-o", str(tmp_path / "x"),
                   "--template-kwargs", "enable_thinking")
    assert bad.returncode == 2 and b"KEY=VALUE" in bad.stderr


def test_overflow_turns_renders_the_shorter_conversation_with_the_rows_template_arguments(tmp_path) -> None:
    tok_dir = fixture("tokenizers", "smollm3")
    long = [{"role": "user", "content": "Count."}, {"role": "assistant", "content": "1 2 3"},
            {"role": "user", "content": "Again."}, {"role": "assistant", "content": " ".join(map(str, range(300)))}]
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"id": "a", "messages": long, "chat_template_kwargs": {"enable_thinking": False}}) + "\n")
    first = apply_chat_template(tok_dir, long[:2], enable_thinking=False)
    assert first != apply_chat_template(tok_dir, long[:2])  # the argument changes the rendering
    done = run_prep("tokenize", str(data), "--tokenizer", str(tok_dir), "-o", str(tmp_path / "s"),
                    "--max-len", str(len(first) + 20), "--overflow", "turns")
    assert done.returncode == 0, done.stderr.decode()
    assert pq.read_table(tmp_path / "s" / "data").to_pylist()[0]["input_ids"] == first


def test_a_builtin_template_writes_reasoning_as_a_think_block_and_masks_it_on_request(tmp_path) -> None:
    from prep.render.templates import get_template

    messages = [{"role": "user", "content": "2+2?"},
                {"role": "assistant", "content": "4", "reasoning_content": "Two and two."}]
    rendered = get_template("chatml").render(messages)
    assert "<|im_start|>assistant\n<think>\nTwo and two.\n</think>\n\n4<|im_end|>" in rendered.text
    trained = ["".join(rendered.text[a:b] for a, b in rendered.spans("assistant", reasoning))
               for reasoning in (True, False)]
    assert trained == ["<think>\nTwo and two.\n</think>\n\n4<|im_end|>", "4<|im_end|>"]
    empty = get_template("chatml").render([messages[0], {**messages[1], "reasoning_content": ""}])
    # an empty reasoning is an empty block the model writes after the generation prompt: trained (design §4)
    assert ["".join(empty.text[a:b] for a, b in empty.spans(*train)) for train in (("assistant",),
            ("assistant", False))] == ["<think>\n\n</think>\n\n4<|im_end|>", "4<|im_end|>"]


def test_developer_role_takes_the_system_slot_where_the_template_has_none(tmp_path) -> None:
    data = tmp_path / "dev.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "developer", "content": "Be brief."},
                                             {"role": "user", "content": "Hi"},
                                             {"role": "assistant", "content": "Hello"}]}) + "\n")
    tok_dir = fixture("tokenizers", "qwen2.5")
    done = run_prep("tokenize", str(data), "--tokenizer", str(tok_dir), "-o", str(tmp_path / "s"))
    assert done.returncode == 0 and b"developer_as_system: 1" in done.stderr, done.stderr.decode()
    row = pq.read_table(tmp_path / "s" / "data").to_pylist()[0]
    system = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
              {"role": "assistant", "content": "Hello"}]
    assert row["input_ids"] == hf_tokenizer(tok_dir).apply_chat_template(system, tokenize=True, return_dict=False)
    out = tmp_path / "dev.sharegpt.jsonl"
    done = run_prep("convert", str(data), "--to", "sharegpt", "-o", str(out))
    assert done.returncode == 0 and b"role developer (written as system) 1" in done.stderr
    assert json.loads(out.read_text())["system"] == "Be brief."


def test_split_think_and_every_reasoning_spelling(tmp_path) -> None:
    rows = [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", key: "r"}]}
            for key in ("reasoning_content", "reasoning", "thinking")]
    rows += [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": content}]}
             for content in ("<think>\nr\n</think>\n\na", "r\n</think>\n\na")]  # the second: `<think>` was prompted
    data = tmp_path / "r.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "o.jsonl"
    assert run_prep("convert", str(data), "--to", "openai", "-o", str(out), "--split-think").returncode == 0
    for line in out.read_text().splitlines():
        assert json.loads(line)["messages"][1] == {"role": "assistant", "content": "a", "reasoning_content": "r"}
    assert run_prep("convert", str(data), "--to", "openai", "-o", str(out)).returncode == 0
    assert [json.loads(line)["messages"][1]["content"] for line in out.read_text().splitlines()[3:]] == \
        ["<think>\nr\n</think>\n\na", "r\n</think>\n\na"]


def test_validate_reads_think_blocks_as_the_other_verbs_do_with_split_think(tmp_path) -> None:
    """With --split-think, validate checks an answer's think block as its reasoning, as convert and tokenize read
    it: an answer that is only a think block is then as empty as one given with reasoning_content and no content."""
    from prep.stages.validate import validate

    think = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "<think>\nr\n</think>\n\n"}]}
    given = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "", "reasoning_content": "r"}]}
    counts = {}
    for name, row, split in (("think", think, False), ("think", think, True), ("given", given, False)):
        data = tmp_path / f"{name}.jsonl"
        data.write_text(json.dumps(row) + "\n")
        counts[name, split] = validate(Inputs([str(data)], split_think=split), min_rows=0).findings.counts
    assert counts["think", False] == {}
    assert counts["think", True] == counts["given", False] == {"empty_content": 1}


def test_three_unknown_fields_are_counted_and_carried_to_the_shards(tmp_path) -> None:
    rows = [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}],
             "reference_answer": f"a{i}", **({"task": {"n": i}} if i % 2 else {}), **({"source": "web"} if i < 3 else {})}
            for i in range(5)]
    data = tmp_path / "f.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    done = run_prep("convert", str(data), "--to", "openai", "-o", str(tmp_path / "o.jsonl"))
    assert done.returncode == 0
    assert b"dropped fields: reference_answer 5, source 3, task 2" in done.stderr, done.stderr.decode()
    strict = run_prep("convert", str(data), "--to", "openai", "-o", str(tmp_path / "o.jsonl"), "--strict-fields")
    assert strict.returncode == 1 and b"dropped_field: 5" in strict.stderr
    tok = fixture("tokenizers", "qwen2.5")
    done = run_prep("tokenize", str(data), "--tokenizer", str(tok), "-o", str(tmp_path / "s"),
                    "--keep-columns", "reference_answer,task", "--keep-columns", "source")
    assert done.returncode == 0 and b"dropped fields" not in done.stderr, done.stderr.decode()
    table = pq.read_table(tmp_path / "s" / "data")
    assert table.column_names[-3:] == ["reference_answer", "task", "source"]
    assert table["reference_answer"].to_pylist() == [f"a{i}" for i in range(5)]
    assert table["task"].to_pylist() == [None, '{"n": 1}', None, '{"n": 3}', None]
    assert table["source"].to_pylist() == ["web"] * 3 + [None] * 2
    assert run_prep("verify", str(tmp_path / "s")).returncode == 0
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert manifest["carried"] == ["reference_answer", "task", "source"]
    done = run_prep("tokenize", str(data), "--tokenizer", str(tok), "-o", str(tmp_path / "s2"), "--keep-columns",
                    "task")
    assert b"dropped fields: reference_answer 5, source 3" in done.stderr, done.stderr.decode()
    assert json.loads((tmp_path / "s2" / "manifest.json").read_text())["counts"]["dropped_fields"] == {
        "reference_answer": 5, "source": 3}
    assert run_prep("report", str(tmp_path / "s2"), "-q").returncode == 0
    page = (tmp_path / "s2" / "report.html").read_text()
    assert 'data-figure="stage.tokenize.dropped_fields.reference_answer" data-value="5"' in page
    converted = tmp_path / "kept.jsonl"
    assert run_prep("convert", str(data), "--to", "sharegpt", "-o", str(converted), "--keep-columns",
                    "reference_answer,task,source").returncode == 0
    assert json.loads(converted.read_text().splitlines()[1])["task"] == {"n": 1}


@pytest.mark.parametrize("name", ["qwen2.5", "llama3", "phi-3-mini", "smollm3"])
def test_prompt_shards_equal_apply_chat_template_with_the_generation_prompt(tmp_path, name: str) -> None:
    """GRPO/RLOO rows: system + user with no answer are taken, a conversation gives the prompt before its last
    answer; prompt_input_ids = apply_chat_template(prompt, add_generation_prompt=True)."""
    tok_dir = fixture("tokenizers", name)
    rows = json.loads(fixture("data", "llamafactory", "alpaca_en_demo.json").read_text(encoding="utf-8"))[:60]
    data = []
    for i, r in enumerate(rows):
        messages = [{"role": "system", "content": "Solve it."}] if i % 2 else []
        messages.append({"role": "user", "content": (r["instruction"] + "\n" + r["input"]).strip()})
        if i % 3 == 0:
            messages.append({"role": "assistant", "content": r["output"]})
        data.append({"id": f"p{i}", "messages": messages, "reference_answer": r["output"][:40]})
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in data))
    result = tokenize(Inputs([str(path)], keep_columns=["reference_answer"]), str(tok_dir), str(tmp_path / "s"),
                      kind="prompt")
    assert result.tally.written == 60 and result.manifest["kind"] == "prompt"
    table = pq.read_table(tmp_path / "s" / "data")
    assert table.column_names == ["prompt_input_ids", "prompt_record", "num_tokens", "ids", "reference_answer"]
    for d, row in zip(data, table.to_pylist(), strict=True):
        prompt = [m for m in d["messages"] if m["role"] != "assistant"]
        assert row["prompt_input_ids"] == apply_chat_template(tok_dir, prompt, add_generation_prompt=True), d["id"]
        assert json.loads(row["prompt_record"]) == {"messages": prompt}  # what export --to trl-grpo writes
        assert row["reference_answer"] == d["reference_answer"] and row["num_tokens"] == len(row["prompt_input_ids"])
    assert run_prep("verify", str(tmp_path / "s")).returncode == 0
    assert run_prep("export", str(tmp_path / "s"), "--to", "jsonl", "-o", str(tmp_path / "p.out.jsonl")).returncode == 0
    exported = [json.loads(line) for line in (tmp_path / "p.out.jsonl").read_text().splitlines()]
    assert [e["reference_answer"] for e in exported] == [d["reference_answer"] for d in data]
    assert all(d["messages"][-1 if d["messages"][-1]["role"] == "user" else -2]["content"] in e["prompt"]
               for d, e in zip(data, exported, strict=True))


def test_validate_takes_rows_without_an_answer_for_prompt_shards(tmp_path) -> None:
    data = tmp_path / "grpo.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "system", "content": "Solve."},
                                             {"role": "user", "content": "2+2?"}], "reference_answer": "4"}) + "\n")
    assert run_prep("validate", str(data)).returncode == 1  # a conversation without an answer trains nothing
    done = run_prep("validate", str(data), "--kind", "prompt")
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()


def test_packing_says_the_carried_columns_stay_behind(tmp_path) -> None:
    import prep

    data = tmp_path / "k.jsonl"
    data.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"q{i}"},
                                                     {"role": "assistant", "content": f"a{i}"}], "ref": str(i)}) + "\n"
                            for i in range(4)))
    prep.tokenize(prep.Inputs([str(data)], keep_columns=["ref"]), str(fixture("tokenizers", "qwen2.5")),
                  str(tmp_path / "s"))
    packed = prep.pack(str(tmp_path / "s"), str(tmp_path / "p"), max_len=512)
    assert packed.notes and "ref" in packed.notes[0]


def test_a_recipe_carries_columns_to_prompt_shards_and_keys_tokenize_on_the_day(tmp_path) -> None:
    import datetime as dt

    from prep.recipes.recipe import load_recipe
    from prep.recipes.runner import plan, run

    rows = [{"messages": [{"role": "system", "content": "Solve."}, {"role": "user", "content": f"{i}+1?"}],
             "reference_answer": str(i + 1), "note": "x"} for i in range(6)]
    (tmp_path / "grpo.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = tmp_path / "grpo.yaml"
    recipe.write_text(f"output: {tmp_path / 'run'}\ninputs:\n  files: [grpo.jsonl]\n  keep_columns: [reference_answer]\n"
                      f"convert: {{to: openai}}\ntokenize:\n  tokenizer: {fixture('tokenizers', 'smollm3')}\n"
                      "  kind: prompt\n  template_kwargs: [enable_thinking=false]\n")

    def key(*sets: str) -> str:
        return next(s.key for s in plan(load_recipe(recipe, sets)) if s.name == "tokenize")

    assert key() == key(f"tokenize.date={DEFAULT_DATE}") != key("tokenize.date=2025-01-01")
    assert key("tokenize.date=today") == key(f"tokenize.date={dt.date.today().isoformat()}")
    assert key() != key("tokenize.template_kwargs=[enable_thinking=true]")
    result = run(load_recipe(recipe))
    assert result.exit_code == 0
    table = pq.read_table(tmp_path / "run" / "tokenize" / "data")
    assert table["reference_answer"].to_pylist() == [str(i + 1) for i in range(6)]
    for r, row in zip(rows, table.to_pylist(), strict=True):
        assert row["prompt_input_ids"] == apply_chat_template(fixture("tokenizers", "smollm3"), r["messages"],
                                                              add_generation_prompt=True, enable_thinking=False)
    convert = next(s for s in result.to_dict()["stages"] if s["name"] == "convert")
    assert convert["summary"]["dropped_fields"] == {"note": 6}


def test_prep_template_takes_the_template_arguments_and_the_day(tmp_path) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "Hi"},
                                             {"role": "assistant", "content": "Hello", "reasoning_content": "Greet."}]})
                    + "\n")
    out = tmp_path / "t.jsonl"
    done = run_prep("template", str(data), "--tokenizer", str(fixture("tokenizers", "smollm3")), "-o", str(out),
                    "--template-kwargs", "enable_thinking=false", "--date", "2025-02-03", "--train-on-reasoning", "no")
    assert done.returncode == 0, done.stderr.decode()
    row = json.loads(out.read_text())
    assert "Today Date: 03 February 2025\nReasoning Mode: /no_think" in row["text"]
    assert [row["text"][a:b] for a, b in row["spans"]] == ["Hello<|im_end|>"]
    bad = run_prep("template", str(data), "--template", "chatml", "--template-kwargs", "x=1")
    assert bad.returncode == 2 and b"takes no arguments" in bad.stderr


# A template that reads reasoning_content as Qwen3's does (written for this test, tools left out): reasoning only in
# the assistant turns after the last user message, an empty think block on a last answer without any, and one in
# the generation prompt when thinking is off.
QWEN3_STYLE = """{%- set ns = namespace(last=messages|length - 1, found=false) -%}
{%- for m in messages[::-1] -%}{%- if m.role == "user" and not ns.found -%}
{%- set ns.last = messages|length - 1 - loop.index0 -%}{%- set ns.found = true -%}{%- endif -%}{%- endfor -%}
{%- for m in messages -%}
{%- if m.role == "assistant" -%}
{%- set reasoning = m.reasoning_content if m.reasoning_content is defined and m.reasoning_content is not none else "" -%}
{%- if loop.index0 > ns.last and (loop.last or reasoning) -%}
{{- "<|im_start|>assistant\\n<think>\\n" + reasoning.strip("\\n") + "\\n</think>\\n\\n" + m.content.lstrip("\\n") -}}
{%- else -%}{{- "<|im_start|>assistant\\n" + m.content -}}{%- endif -%}
{{- "<|im_end|>\\n" -}}
{%- else -%}{{- "<|im_start|>" + m.role + "\\n" + m.content + "<|im_end|>\\n" -}}{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- "<|im_start|>assistant\\n" -}}
{%- if enable_thinking is defined and enable_thinking is false -%}{{- "<think>\\n\\n</think>\\n\\n" -}}{%- endif -%}
{%- endif -%}"""


@pytest.mark.parametrize("train", ["yes", "no"])
def test_a_template_that_reads_reasoning_content_gets_it_and_its_ids(tmp_path, train: str) -> None:
    """Qwen3's rule: earlier turns lose their reasoning (the template is not prefix-stable), the answers after
    the last user message keep it; ids equal apply_chat_template, reasoning is masked only when asked, and the empty
    think block the template writes after the generation prompt (a last answer without reasoning) is trained."""
    tok_dir = fixture("tokenizers", "qwen2.5")
    (tmp_path / "q3.jinja").write_text(QWEN3_STYLE)
    convs = [
        [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4", "reasoning_content": "Add."}],
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}],
        [{"role": "user", "content": "a?"}, {"role": "assistant", "content": "A", "reasoning_content": "First."},
         {"role": "user", "content": "b?"}, {"role": "assistant", "content": "B", "reasoning_content": "Second."}],
    ]
    data = tmp_path / "q.jsonl"
    data.write_text("".join(json.dumps({"id": f"c{i}", "messages": c}) + "\n" for i, c in enumerate(convs)))
    result = tokenize(Inputs([str(data)]), str(tok_dir), str(tmp_path / "s"), template=str(tmp_path / "q3.jinja"),
                      train_on_reasoning=train)
    assert result.tally.written == 3 and result.manifest["template"]["reasoning"] == "template"
    hf = hf_tokenizer(tok_dir)
    for c, row in zip(convs, pq.read_table(tmp_path / "s" / "data").to_pylist(), strict=True):
        assert row["input_ids"] == hf.apply_chat_template(c, chat_template=QWEN3_STYLE, tokenize=True,
                                                          return_dict=False)
        trained = hf.decode([t for t, label in zip(row["input_ids"], row["labels"], strict=True) if label != -100])
        answers = [m for m in c if m["role"] == "assistant"]
        if train == "no":
            assert trained == "".join(m["content"] + "<|im_end|>" for m in answers)
        elif all("reasoning_content" not in m for m in answers):
            assert trained == "<think>\n\n</think>\n\n" + answers[-1]["content"] + "<|im_end|>"
        else:  # the earlier turn's reasoning is not in the text at all; the last answer's is trained
            assert trained == "".join(m["content"] + "<|im_end|>" for m in answers[:-1]) + \
                f"<think>\n{answers[-1]['reasoning_content']}\n</think>\n\n{answers[-1]['content']}<|im_end|>"
