"""prep tokenize on the project's own tokenizer: labels from spans, overflow, kinds, workers, errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import SAMPLES, hf_tokenizer, run_prep
from prep.core.findings import Batch, PrepError, Source
from prep.formats import read_records
from prep.formats.inputs import Inputs
from prep.render.encoder import Encoder, Settings
from prep.render.tokenizer import load_tokenizer, same_tokenizer
from prep.shards.layout import read_manifest
from prep.shards.verify import verify
from prep.stages.tokenize import _auto_workers, tokenize

TOKENIZER = str(SAMPLES / "tokenizer")


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(TOKENIZER)


def rows(folder: Path) -> list[dict]:
    return [r for s in read_manifest(folder)["shards"] for r in pq.read_table(folder / s["path"]).to_pylist()]


def trained_runs(row: dict) -> list[list[int]]:
    runs: list[list[int]] = []
    previous = False
    for token, label in zip(row["input_ids"], row["labels"], strict=True):
        if label != -100:
            assert label == token
            if not previous:
                runs.append([])
            runs[-1].append(token)
        previous = label != -100
    return runs


def m(role: str, content: str, **extra: object) -> dict:
    return {"role": role, "content": content, **extra}


def write_jsonl(path: Path, records: list[dict]) -> str:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return str(path)


def test_sft_labels_are_the_assistant_answers(tmp_path, tok) -> None:
    out = tmp_path / "shards"
    result = tokenize(Inputs([str(SAMPLES / "openai.jsonl")]), tok, str(out))
    assert result.tally.balanced and result.tally.rejected_total == 0
    assert verify(out).ok
    manifest = read_manifest(out)
    assert manifest["template"]["name"] == "tokenizer" and manifest["train_on"] == "assistant"
    assert manifest["tokenizer"]["vocab_size"] == len(hf_tokenizer(tok.path))
    records = {r["id"]: r for b in read_records(
        [str(SAMPLES / "openai.jsonl")]) for r in b.items}
    for row in rows(out):
        record = records[row["ids"][0]]
        assert row["input_ids"] == hf_tokenizer(tok.path).apply_chat_template(record["messages"], tools=record.get("tools"),
                                                              tokenize=True, return_dict=False)
        trained = [m for m in record["messages"] if m["role"] == "assistant" and m.get("weight", 1)]
        runs = [hf_tokenizer(tok.path).decode(r) for r in trained_runs(row)]
        assert len(runs) == len(trained)
        for text, message in zip(runs, trained, strict=True):
            assert text.endswith("<|im_end|>")
            if not message.get("tool_calls"):
                assert text == message["content"] + "<|im_end|>"
            for call in message.get("tool_calls", ()):
                assert json.dumps(call["function"]["arguments"], ensure_ascii=False) in text
        assert row["num_loss_tokens"] == sum(map(len, trained_runs(row)))
        assert row["seq_lengths"] == [row["num_tokens"]] == [len(row["input_ids"])]
    weightless = [r for r in records.values() if any(x.get("weight") == 0 for x in r["messages"])]
    assert weightless, "openai.jsonl has a weight-0 turn"


@pytest.mark.parametrize("train_on", ["last", "all", "content"])
def test_train_on_policies(tmp_path, tok, train_on: str) -> None:
    conversation = [m("system", "Be kind."), m("user", "Hi"), m("assistant", "Hello."), m("user", "Bye"),
                    m("assistant", "See you.")]
    out = tmp_path / train_on
    tokenize(Inputs([write_jsonl(tmp_path / "c.jsonl", [{"messages": conversation}])]), tok, str(out),
             train_on=train_on)
    row = rows(out)[0]
    runs = [hf_tokenizer(tok.path).decode(r) for r in trained_runs(row)]
    if train_on == "last":
        assert runs == ["See you.<|im_end|>"]
    elif train_on == "all":
        assert row["labels"] == row["input_ids"]
    else:
        assert runs == ["Be kind.", "Hi", "Hello.<|im_end|>", "Bye", "See you.<|im_end|>"]


LONG = [m("user", "Count."), m("assistant", " ".join(str(i) for i in range(60))), m("user", "Again."),
        m("assistant", " ".join(str(i) for i in range(60, 200)))]


def test_overflow_drop_truncate_turns(tmp_path, tok) -> None:
    data = write_jsonl(tmp_path / "long.jsonl", [{"id": "long", "messages": LONG}, {"id": "short", "messages": LONG[:2]}])
    full = hf_tokenizer(tok.path).apply_chat_template(LONG, tokenize=True, return_dict=False)
    first = hf_tokenizer(tok.path).apply_chat_template(LONG[:2], tokenize=True, return_dict=False)
    max_len = len(first) + 40
    assert len(full) > max_len

    dropped = tokenize(Inputs([data]), tok, str(tmp_path / "drop"), max_len=max_len, rejects=str(tmp_path / "d.jsonl"))
    assert dict(dropped.tally.rejected) == {"too_long": 1} and dropped.tally.written == 1
    assert json.loads((tmp_path / "d.jsonl").read_text())["reasons"][0]["code"] == "too_long"

    cut = tokenize(Inputs([data]), tok, str(tmp_path / "cut"), max_len=max_len, overflow="truncate",
                   rejects=str(tmp_path / "t.jsonl"))
    assert cut.tally.written == 2 and dict(cut.tally.altered) == {"truncated": 1}
    assert cut.manifest["counts"]["altered"] == {"truncated": 1}
    kept = json.loads((tmp_path / "t.jsonl").read_text())
    assert kept["written"] is True and kept["reasons"][0]["code"] == "truncated"
    row = next(r for r in rows(tmp_path / "cut") if r["ids"] == ["long"])
    eot = hf_tokenizer(tok.path).convert_tokens_to_ids("<|im_end|>")
    assert len(row["input_ids"]) == max_len
    assert row["input_ids"][-1] == row["labels"][-1] == eot  # the cut answer still ends with its EOS, trained
    assert row["input_ids"][:-1] == full[:max_len - 1]
    assert verify(tmp_path / "cut").ok

    turns = tokenize(Inputs([data]), tok, str(tmp_path / "turns"), max_len=max_len, overflow="turns")
    assert dict(turns.tally.altered) == {"turns_dropped": 1}
    row = next(r for r in rows(tmp_path / "turns") if r["ids"] == ["long"])
    assert row["input_ids"] == first  # whole turns: exactly the conversation's first exchange
    assert [hf_tokenizer(tok.path).decode(r) for r in trained_runs(row)] == [LONG[1]["content"] + "<|im_end|>"]


def test_truncate_outside_an_answer_ends_at_the_last_whole_answer(tok) -> None:
    conversation = [m("user", "Hi"), m("assistant", "Hello."), m("user", "x " * 80), m("assistant", "Done.")]
    first = hf_tokenizer(tok.path).apply_chat_template(conversation[:2], tokenize=True, return_dict=False)
    encoder = Encoder(tok.backend, tok.jinja(), tok.specials, Settings("sft", max_len=len(first) + 5,
                                                                       overflow="truncate"))
    batch = Batch()
    batch.add({"id": "a", "messages": conversation}, Source("a.jsonl", 1, 1))
    out, table = encoder(batch)
    row = table.to_pylist()[0]
    assert row["input_ids"] == first[:-1]  # ends with "<|im_end|>" of the first answer ("\n" after it is not kept)
    assert row["labels"][-1] == hf_tokenizer(tok.path).convert_tokens_to_ids("<|im_end|>")
    assert out.altered[0].findings[0].code == "truncated"


def test_workers_give_identical_shards(tmp_path, tok) -> None:
    inputs = Inputs([str(SAMPLES / "openai.jsonl"), str(SAMPLES / "sharegpt.jsonl"), str(SAMPLES / "alpaca.json")])
    one = tokenize(inputs, tok, str(tmp_path / "one"), template="chatml")
    two = tokenize(inputs, tok, str(tmp_path / "two"), template="chatml", workers=2)
    assert [s["sha256"] for s in one.manifest["shards"]] == [s["sha256"] for s in two.manifest["shards"]]
    assert one.manifest["counts"] == two.manifest["counts"]


def test_workers_reading_their_own_batches_give_the_one_worker_run(tmp_path, tok) -> None:
    """Two workers read a JSONL cut into batches themselves (rejects, an unreadable line and skipped rows on the way),
    or, for one batch, are sent it by the parent: the same shards, manifest and rejects as one worker."""
    lines = [json.dumps({"messages": [m("user", f"q{i}"), m("assistant", f"a{i}")]}) for i in range(2100)]
    lines[5], lines[1500] = "{not json", json.dumps({"messages": [m("user", "no answer")]})
    big, small = tmp_path / "big.jsonl", tmp_path / "small.jsonl"
    big.write_text("\n".join(lines) + "\n", encoding="utf-8")
    small.write_text("\n".join(lines[:50]) + "\n", encoding="utf-8")
    for data, skip, rejected in ((big, {str(big): [7, 1100]}, 2), (small, {}, 1)):
        runs = [tokenize(Inputs([str(data)], skip=skip), tok, str(tmp_path / f"{data.stem}{w}"), template="chatml",
                         workers=w, rejects=str(tmp_path / f"{data.stem}{w}.rejects.jsonl")) for w in (1, 2)]
        one, two = (json.loads((tmp_path / f"{data.stem}{w}" / "manifest.json").read_text()) for w in (1, 2))
        assert one == two and sum(one["counts"]["rejected"].values()) == rejected
        assert runs[0].formats == runs[1].formats
        assert (tmp_path / f"{data.stem}1.rejects.jsonl").read_text() == (tmp_path / f"{data.stem}2.rejects.jsonl").read_text()
        picked = tokenize(Inputs([str(data)], skip=skip), tok, str(tmp_path / f"{data.stem}0"), template="chatml")
        # the default picks one worker per core for the 3 parts of the big file (at most 3), one for the small one
        assert picked.workers == (min(_auto_workers(), 3) if data is big else 1)
        assert json.loads((tmp_path / f"{data.stem}0" / "manifest.json").read_text()) == one




def test_workers_take_the_kind_from_the_first_record_past_the_first_lines(tmp_path, tok) -> None:
    """With workers reading their own parts, the parent reads only a part's first lines for the kind; when those hold
    no record (20 broken lines), it reads on: the first preference row makes the shards dpo, as with one worker."""
    pair = {"prompt": [m("user", "q")], "chosen": [m("assistant", "yes")], "rejected": [m("assistant", "no")]}
    data = tmp_path / "pairs.jsonl"
    data.write_text("{not json\n" * 20 + "".join(json.dumps({**pair, "id": str(i)}) + "\n" for i in range(2100)),
                    encoding="utf-8")
    one, two = (tokenize(Inputs([str(data)]), tok, str(tmp_path / f"out{w}"), workers=w) for w in (1, 2))
    assert one.manifest["kind"] == two.manifest["kind"] == "dpo" and two.workers == 2
    assert one.manifest == two.manifest and two.tally.rejected == {"bad_json": 20}

@pytest.mark.parametrize("workers", [0, 2])
def test_a_fifo_input_is_read_once_whole(tmp_path, tok, workers: int) -> None:
    """A named pipe (or `<(zcat x.gz)`) can be read once: no worker plans it into parts (planning read its first
    rows, 1,027 of 3,000 were lost), nothing hashes it beside the reader or after it (hashing it at the end waited
    for a writer forever); its sha256 in the manifest is None, as standard input's."""
    fifo, rows = tmp_path / "in.jsonl", tmp_path / "rows.jsonl"
    os.mkfifo(fifo)
    rows.write_text("".join(json.dumps({"messages": [m("user", f"q{i}"), m("assistant", f"a{i}")]}) + "\n"
                            for i in range(2100)), encoding="utf-8")
    # another process writes, as a shell's pipe does (a thread's open end would be copied into the pool's workers)
    writer = subprocess.Popen(["sh", "-c", 'cat "$0" > "$1"', str(rows), str(fifo)])
    result = tokenize(Inputs([str(fifo)]), tok, str(tmp_path / "out"), template="chatml", workers=workers)
    assert writer.wait(5) == 0
    assert result.tally.read == result.tally.written == 2100
    assert result.manifest["inputs"] == [{"path": str(fifo), "sha256": None}]


def test_planning_parts_refuses_a_pipe(tmp_path) -> None:
    """What cuts inputs into parts for Ray (`plan_inputs`) refuses a FIFO before reading it, as it refuses standard
    input: a part of a pipe cannot be read again."""
    from prep.formats.inputs import plan_inputs

    fifo = tmp_path / "in.jsonl"
    os.mkfifo(fifo)
    for path in (str(fifo), "-"):
        with pytest.raises(PrepError, match="reads each input in parts, and this can be read once"):
            plan_inputs(Inputs([path]), {}, 2)

def test_the_manifest_accounts_for_each_source_with_its_lengths_before_and_after_max_len(tmp_path, tok) -> None:
    files = [str(SAMPLES / "openai.jsonl"), str(SAMPLES / "sharegpt.jsonl")]
    whole = tokenize(Inputs(files), tok, str(tmp_path / "whole"), template="chatml")
    cut = tokenize(Inputs(files), tok, str(tmp_path / "cut"), template="chatml", max_len=100, overflow="truncate")
    table = rows(tmp_path / "cut")
    row = 0
    for source, before in zip(cut.manifest["sources"], whole.manifest["sources"], strict=True):
        assert source["path"] == before["path"] and source["read"] == 6
        assert source["read"] == source["written"] + sum(source["rejected"].values())
        assert source["first_row"] == row
        after = [n for start, n in source["lengths"]["after"]["bins"] for _ in range(n)]
        assert len(after) == source["written"]
        assert all(start <= 100 for start, _ in source["lengths"]["after"]["bins"])
        # before max_len: what the run without a limit wrote, bin for bin
        assert source["lengths"]["before"] == before["lengths"]["after"]
        assert table[row]["ids"][0].startswith(Path(source["path"]).name + ":")  # these rows have no id of their own
        row += source["written"]
    assert sum(s["read"] for s in cut.manifest["sources"]) == cut.manifest["counts"]["read"]
    assert max(s for src in cut.manifest["sources"] for s, _ in src["lengths"]["before"]["bins"]) > 100


def test_dpo_and_kto_rows(tmp_path, tok) -> None:
    dpo = tokenize(Inputs([str(SAMPLES / "trl_preference.jsonl")]), tok, str(tmp_path / "dpo"))
    assert dpo.manifest["kind"] == "dpo" and verify(tmp_path / "dpo").ok
    records = {r["id"]: r for b in read_records(
        [str(SAMPLES / "trl_preference.jsonl")]) for r in b.items}
    for row in rows(tmp_path / "dpo"):
        record = records[row["ids"][0]]
        prompt = hf_tokenizer(tok.path).apply_chat_template(record["prompt"], add_generation_prompt=True, tokenize=True,
                                            return_dict=False)
        assert row["prompt_input_ids"] == prompt
        for side in ("chosen", "rejected"):
            full = hf_tokenizer(tok.path).apply_chat_template(record["prompt"] + record[side], tokenize=True, return_dict=False)
            assert row["prompt_input_ids"] + row[f"{side}_input_ids"] == full
        assert row["num_tokens"] == sum(len(row[c]) for c in ("prompt_input_ids", "chosen_input_ids",
                                                               "rejected_input_ids"))
    kto = tokenize(Inputs([str(SAMPLES / "trl_kto.jsonl")]), tok, str(tmp_path / "kto"))
    assert kto.manifest["kind"] == "kto" and verify(tmp_path / "kto").ok
    labels = [r["label"] for r in rows(tmp_path / "kto")]
    assert True in labels and False in labels


def test_pretrain_text_ends_with_eos_and_trains_everything(tmp_path, tok) -> None:
    result = tokenize(Inputs([str(SAMPLES / "text.jsonl")]), tok, str(tmp_path / "pt"))
    assert result.manifest["kind"] == "pretrain" and result.manifest["template"] is None
    eos = hf_tokenizer(tok.path).eos_token_id
    for row in rows(tmp_path / "pt"):
        assert row["labels"] == row["input_ids"] and row["input_ids"][-1] == eos
        assert row["input_ids"].count(eos) == 1
    with pytest.raises(PrepError, match="no template applies"):
        tokenize(Inputs([str(SAMPLES / "text.jsonl")]), tok, str(tmp_path / "x"), template="chatml")


def test_rows_that_cannot_be_trained_are_rejected_with_reasons(tmp_path, tok) -> None:
    data = write_jsonl(tmp_path / "bad.jsonl", [
        {"id": "ok", "messages": [m("user", "q"), m("assistant", "a")]},
        {"id": "unanswered", "messages": [m("user", "q")]},
        {"id": "silent", "messages": [m("user", "q"), m("assistant", "a", weight=0)]},
        {"id": "image", "messages": [m("user", "<image>what?"), m("assistant", "a cat")], "images": ["c.png"]},
    ])
    result = tokenize(Inputs([data]), tok, str(tmp_path / "s"), rejects=str(tmp_path / "r.jsonl"))
    assert result.tally.written == 1
    assert dict(result.tally.rejected) == {"nothing_to_train": 2, "unsupported_media": 1}
    assert result.tally.balanced and verify(tmp_path / "s").ok
    encoder = Encoder(tok.backend, tok.jinja(), tok.specials, Settings("sft"))
    batch = Batch()
    batch.add({"id": "p", "prompt": [m("user", "q")], "chosen": [m("assistant", "a")],
               "rejected": [m("assistant", "b")]}, Source("p.jsonl", 1, 1))
    out, _ = encoder(batch)
    assert out.rejects[0].findings[0].code == "wrong_kind" and "--kind dpo" in out.rejects[0].findings[0].hint


def test_fingerprint_identifies_the_tokenizer(tok) -> None:
    fp = tok.fingerprint()
    assert fp["name"] == "tokenizer" and fp["path"] == str(Path(TOKENIZER).resolve())
    assert set(fp["files"]) == {"tokenizer.json", "tokenizer_config.json"}
    assert fp["special_ids"]["eos"] == hf_tokenizer(tok.path).eos_token_id
    assert same_tokenizer(fp, load_tokenizer(TOKENIZER).fingerprint())
    assert not same_tokenizer(fp, {**fp, "sha256": "x", "vocab_sha256": "y"})


def invoke(*args: str):
    """The CLI in this process (the tokenizer stack is already imported): exit code, stdout, stderr."""
    from click.testing import CliRunner

    from prep.cli import main

    return CliRunner().invoke(main, list(args))


@pytest.mark.slow
def test_cli(tmp_path) -> None:
    out = tmp_path / "s"
    done = run_prep("tokenize", str(SAMPLES / "sharegpt.jsonl"), "--tokenizer", TOKENIZER, "-o", str(out),
                    "--template", "chatml", "--max-len", "64", "--rejects", str(tmp_path / "r.jsonl"))
    assert done.returncode == 1, done.stderr  # some conversations are longer than 64 tokens
    assert b"too_long" in done.stderr and b" tokens, " in done.stderr  # the summary: tokens made and trained
    assert read_manifest(out)["max_len"] == 64
    # the input options shared with convert: --dataset-info/--dataset, FROM
    lf = invoke("tokenize", "--dataset-info", str(SAMPLES / "dataset_info.json"), "--dataset", "alpaca_demo",
                "--tokenizer", TOKENIZER, "-o", str(tmp_path / "lf"), "-q")
    assert lf.exit_code == 0 and lf.stderr == "", lf.stderr
    forced = invoke("tokenize", "sharegpt", str(SAMPLES / "sharegpt.jsonl"), "--tokenizer", TOKENIZER,
                    "-o", str(tmp_path / "f"))
    assert forced.exit_code == 0 and "read as sharegpt" in forced.stderr


def test_clear_errors(tmp_path) -> None:
    bare = tmp_path / "bare"
    shutil.copytree(TOKENIZER, bare)
    config = json.loads((bare / "tokenizer_config.json").read_text())
    del config["chat_template"]
    (bare / "tokenizer_config.json").write_text(json.dumps(config))
    openai = str(SAMPLES / "openai.jsonl")
    cases = [
        (["--tokenizer", str(bare)], "no chat template and no --template"),
        (["--tokenizer", str(tmp_path / "missing")], "no such tokenizer folder: give a local folder"),
        (["--tokenizer", TOKENIZER, "--template", "nope"], "--template nope: must be a template name"),
        (["--tokenizer", TOKENIZER, "--template", "llama3"], "is not one token of this tokenizer"),
        (["--tokenizer", TOKENIZER, "--kind", "dpo", "--overflow", "turns"], "--overflow turns"),
    ]
    for args, message in cases:
        done = invoke("tokenize", openai, "-o", str(tmp_path / "o"), *args)
        assert done.exit_code == 2 and message in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr


def test_one_row_cli_imports_only_what_tokenizing_needs(tmp_path) -> None:
    """Start-up (design §9): a data verb imports neither pandas (pyarrow would, on its first list), rich (with -q
    nothing is drawn) nor yaml (no --template-kwargs); the shards are the same as the API's."""
    data = write_jsonl(tmp_path / "one.jsonl", [{"messages": [m("user", "hi"), m("assistant", "hello")]}])
    # main(), not the command's run(): a data verb run by that ends its process before anything could be printed
    script = ("import sys\nfrom prep.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n"
              "    assert not e.code, e.code\n"
              "print(sorted(m for m in ('pandas', 'rich', 'yaml', 'torch', 'transformers') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", script, "tokenize", data, "--tokenizer", TOKENIZER, "--template",
                           "chatml", "-o", str(tmp_path / "cli"), "-q"], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", done.stdout
    api = tokenize(Inputs([data]), TOKENIZER, str(tmp_path / "api"), template="chatml")
    assert [s["sha256"] for s in read_manifest(tmp_path / "cli")["shards"]] == \
        [s["sha256"] for s in api.manifest["shards"]]
