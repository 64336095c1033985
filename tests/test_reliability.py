"""Nothing is lost under hostile paths, kill -9, a full disk or two runs at once (issue 18): the input survives every
clobbering attempt, shards are checked as they are read, outputs are locked and replaced whole, writers leave no
half files, resource limits stop hostile inputs with a clear message, and the system's errors get their own words."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, SAMPLES, run_prep
from prep.shards.layout import read_manifest
from prep.shards.verify import verify

TOKENIZER = SAMPLES / "tokenizer"


def chats(path: Path, n: int, words: int = 6) -> Path:
    """`n` small OpenAI rows, each one different."""
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            f.write(json.dumps({"messages": [{"role": "user", "content": f"question {i} " + "word " * words},
                                             {"role": "assistant", "content": f"answer {i} " + "text " * words}]})
                    + "\n")
    return path


def tokenized(tmp_path: Path, n: int = 20, name: str = "tok") -> Path:
    out = tmp_path / name
    done = run_prep("tokenize", str(chats(tmp_path / f"{name}.jsonl", n)), "--tokenizer", str(TOKENIZER),
                    "--template", "chatml", "-o", str(out), "-q")
    assert done.returncode == 0, done.stderr
    return out


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (hidden ones too) and its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- 1. the input is never an output


def test_no_verb_writes_over_what_it_reads(tmp_path: Path) -> None:
    data = chats(tmp_path / "in.jsonl", 5)
    original = data.read_bytes()
    (tmp_path / "link.jsonl").symlink_to(data)
    os.link(data, tmp_path / "hard.jsonl")
    tok = tokenized(tmp_path)
    shards = snapshot(tok)
    tk = ("--tokenizer", str(TOKENIZER), "--template", "chatml")
    attempts = [
        ("validate", str(data), "--rejects", str(data)),
        ("validate", str(data), "--report", str(tmp_path / "link.jsonl")),
        ("convert", str(data), "--to", "openai", "-o", str(data)),
        ("convert", str(data), "--to", "openai", "-o", str(tmp_path / "hard.jsonl")),
        ("convert", str(data), "--to", "openai", "-o", str(tmp_path / "x.jsonl"), "--rejects", str(data)),
        ("convert", str(data), "--to", "openai", "-o", str(tmp_path / "x.jsonl"), "--rejects",
         str(tmp_path / "x.jsonl")),
        ("tokenize", str(data), *tk, "-o", str(tmp_path / "t2"), "--rejects", str(data)),
        ("tokenize", str(data), *tk, "-o", str(tmp_path)),  # the input is inside the folder it would replace
        ("tokenize", str(data), *tk, "-o", str(tmp_path / "t3"), "--rejects", str(tmp_path / "t3" / "manifest.json")),
        ("pack", str(tok), "--max-len", "256", "-o", str(tmp_path / "p"), "--rejects", str(tok / "manifest.json")),
        ("pack", str(tok), "--max-len", "256", "-o", str(tok / "packed")),
        ("pack", str(tok), "--max-len", "256", "-o", str(tok)),
        ("dedup", str(data), "-o", str(data)),
        ("export", str(tok), "--to", "jsonl", "-o", str(tok / "manifest.json")),
    ]
    for args in attempts:
        done = run_prep(*args)
        assert done.returncode == 2, (args, done.stderr)
        assert b"internal error" not in done.stderr and done.stderr.count(b"\n") == 1, (args, done.stderr)
        assert data.read_bytes() == original, args
        assert snapshot(tok) == shards, args
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hard.jsonl", "in.jsonl", "link.jsonl", "tok", "tok.jsonl"]


# ---------------------------------------------------------------- 2. shards are checked as they are read


def flip_byte(path: Path, at: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2 if at is None else at] ^= 0x01
    path.write_bytes(bytes(data))


def test_pack_refuses_a_corrupted_shard_and_names_it(tmp_path: Path) -> None:
    tok = tokenized(tmp_path)
    shard = tok / "data" / "shard-00000.parquet"
    flip_byte(shard)
    done = run_prep("pack", str(tok), "--max-len", "256", "-o", str(tmp_path / "packed"))
    assert done.returncode == 2, done.stderr
    assert str(shard).encode() in done.stderr and b"sha256" in done.stderr
    assert not (tmp_path / "packed").exists()
    for verb in (("export", str(tok), "--to", "jsonl", "-o", str(tmp_path / "e.jsonl")), ("stats", str(tok))):
        done = run_prep(*verb)
        assert done.returncode == 2 and b"shard-00000.parquet" in done.stderr, (verb, done.stderr)


def test_pack_refuses_a_packed_folder(tmp_path: Path) -> None:
    tok = tokenized(tmp_path)
    assert run_prep("pack", str(tok), "--max-len", "256", "-o", str(tmp_path / "p1")).returncode == 0
    done = run_prep("pack", str(tmp_path / "p1"), "--max-len", "256", "-o", str(tmp_path / "p2"))
    assert done.returncode == 2 and b"packed already" in done.stderr, done.stderr
    assert not (tmp_path / "p2").exists()


RECIPE = """\
name: small
output: {out}
inputs:
  files: [{data}]
tokenize:
  tokenizer: {tokenizer}
  template: chatml
pack:
  max_len: 256
"""


def recipe(tmp_path: Path, n: int = 20) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(RECIPE.format(out=tmp_path / "run", data=chats(tmp_path / "data.jsonl", n), tokenizer=TOKENIZER))
    return path


def test_run_rechecks_a_skipped_stage_before_a_later_stage_reads_it(tmp_path: Path) -> None:
    path = recipe(tmp_path)
    assert run_prep("run", str(path), "-q").returncode == 0
    flip_byte(tmp_path / "run" / "tokenize" / "data" / "shard-00000.parquet")
    done = run_prep("run", str(path), "-q", "--set", "pack.max_len=512")
    assert done.returncode == 0, done.stderr
    stages = {s["name"]: s["status"] for s in json.loads((tmp_path / "run" / "run.json").read_text())["stages"]}
    assert stages == {"tokenize": "ran", "pack": "ran"}  # the changed shard was made again, not packed
    assert verify(tmp_path / "run" / "tokenize").ok and verify(tmp_path / "run" / "pack").ok


# ---------------------------------------------------------------- 3. one run per output folder

HOLDER = """
import sys, time
from prep.files import locked
with locked(sys.argv[1]):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_second_run_into_a_locked_folder_is_refused_and_a_dead_holder_is_taken_over(tmp_path: Path) -> None:
    data = chats(tmp_path / "in.jsonl", 10)
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdout=subprocess.PIPE,
                              env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    try:
        assert holder.stdout.readline() == b"held\n"
        args = ("tokenize", str(data), "--tokenizer", str(TOKENIZER), "--template", "chatml", "-o", str(out), "-q")
        done = run_prep(*args)
        assert done.returncode == 2 and f"pid {holder.pid}".encode() in done.stderr, done.stderr
        assert not out.exists()
    finally:
        holder.kill()
        holder.wait()
    assert (tmp_path / ".out.lock").read_text().strip() == str(holder.pid)  # left by the killed holder
    done = run_prep(*args)
    assert done.returncode == 0, done.stderr
    assert verify(out).ok and sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "out"]


@pytest.mark.slow
def test_two_tokenize_runs_at_once_one_refused_the_other_verifies(tmp_path: Path) -> None:
    data = chats(tmp_path / "in.jsonl", 20_000)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    args = [sys.executable, "-m", "prep", "tokenize", str(data), "--tokenizer", str(TOKENIZER), "--template",
            "chatml", "-o", str(out), "-q"]
    first = subprocess.Popen(args, stderr=subprocess.PIPE, env=env)
    while not (tmp_path / ".out.lock").exists() and first.poll() is None:
        time.sleep(0.02)
    second = subprocess.run(args, capture_output=True, env=env)
    first.communicate()
    assert first.returncode == 0
    assert second.returncode == 2 and b"another prep run" in second.stderr, second.stderr
    assert verify(out).ok and read_manifest(out)["counts"]["written"] == 20_000


# ---------------------------------------------------------------- 4. replace, don't delete


def test_a_failed_rerun_leaves_the_earlier_output_whole(tmp_path: Path) -> None:
    tok = tokenized(tmp_path)
    before = snapshot(tok)
    broken = tmp_path / "broken.json"  # a JSON array that breaks off after many good rows: the run fails mid-way
    rows = [json.loads(line) for line in chats(tmp_path / "many.jsonl", 3000).read_text().splitlines()]
    broken.write_text(json.dumps(rows)[:-2000] + "}}}")
    done = run_prep("tokenize", str(broken), "--tokenizer", str(TOKENIZER), "--template", "chatml", "-o", str(tok),
                    "-q")
    assert done.returncode == 2, done.stderr
    assert snapshot(tok) == before and verify(tok).ok
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.json", "many.jsonl", "tok", "tok.jsonl"]


def test_files_are_made_with_the_users_umask(tmp_path: Path) -> None:
    tok = tokenized(tmp_path)
    assert (tok / "manifest.json").stat().st_mode & 0o777 == (tok / "data" / "shard-00000.parquet").stat().st_mode \
        & 0o777 == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# ---------------------------------------------------------------- 5. an unclosed CSV quote


def test_an_unclosed_csv_quote_rejects_the_fragment_after_it(tmp_path: Path) -> None:
    data = tmp_path / "chats.csv"
    data.write_text('text\n"human: a\nbot: b\n"human: c\nbot: d"\n"human: e\nbot: f"\n', encoding="utf-8")
    done = run_prep("convert", "autotrain", str(data), "--to", "openai", "-o", str(tmp_path / "out.jsonl"),
                    "--rejects", str(tmp_path / "rejects.jsonl"))
    assert done.returncode == 1, done.stderr
    written = [json.loads(line)["messages"] for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert written == [[{"role": "user", "content": "e"}, {"role": "assistant", "content": "f"}]]
    rejects = [json.loads(line) for line in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert [r["reasons"][0]["code"] for r in rejects] == ["bad_csv", "bad_csv"]
    assert 'bot: d"' in rejects[1]["row"]


# ---------------------------------------------------------------- 7. checkpoints cut off while saved


@pytest.mark.slow
def test_resume_skips_a_checkpoint_cut_off_while_it_was_saved(tmp_path: Path) -> None:
    pytest.importorskip("peft")
    from conftest import make_tiny_model

    model = make_tiny_model(tmp_path / "tiny-llama")
    tok = tokenized(tmp_path, 8)
    out = tmp_path / "train"
    args = ("train", str(tok), "--model", str(model), "-o", str(out), "--batch-size", "2", "--save-steps", "1", "-q")
    done = run_prep(*args, "--max-steps", "2")
    assert done.returncode == 0, done.stderr
    cut = out / "checkpoints" / "checkpoint-2"  # as a kill during the save leaves it: no marker, a short file
    (cut / "prep_complete.json").unlink()
    weights = cut / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    done = run_prep(*args, "--max-steps", "3", "--resume")
    assert done.returncode == 0, done.stderr
    assert b"skipped checkpoint-2" in done.stderr
    report = json.loads((out / "training_report.json").read_text())
    assert report["resumed_from_step"] == 1 and report["steps"] == 3
    assert sorted(p.name for p in (out / "checkpoints").glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2",
                                                                                   "checkpoint-3"]
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]
