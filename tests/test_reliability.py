"""Nothing is lost under hostile paths, kill -9, a full disk or two runs at once (issue 18): the input survives every
clobbering attempt, shards are checked as they are read, outputs are locked and replaced whole, writers leave no
half files, resource limits stop hostile inputs with a clear message, and the system's errors get their own words."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

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


# ---------------------------------------------------------------- 3. one run per output folder (runs at once, kill -9
# and SIGTERM: test_interrupted.py)


def test_python_callers_are_guarded_too(tmp_path: Path) -> None:
    from prep.core.findings import PrepError
    from prep.formats.inputs import Inputs
    from prep.stages.tokenize import tokenize

    data = chats(tmp_path / "in.jsonl", 3)
    with pytest.raises(PrepError, match="is the input"):
        tokenize(Inputs([str(data)]), str(TOKENIZER), str(tmp_path / "t"), template="chatml", rejects=str(data))
    assert len(data.read_text().splitlines()) == 3


# ---------------------------------------------------------------- 4. replace, don't delete


def test_a_failed_rerun_leaves_the_earlier_output_whole(tmp_path: Path) -> None:
    tok = tokenized(tmp_path)
    before = snapshot(tok)
    broken = tmp_path / "broken.json"  # a JSON array that breaks off after many good rows: the run fails mid-way
    rows = [json.loads(line) for line in chats(tmp_path / "many.jsonl", 1500).read_text().splitlines()]
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


# ---------------------------------------------------------------- 8. limits

PEAK_RSS = """
import resource, subprocess, sys
done = subprocess.run(sys.argv[1:], capture_output=True)
sys.stderr.buffer.write(done.stderr)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, done.returncode)
"""


def peak_rss_kb(*args: str) -> tuple[int, int, str]:
    """(peak RSS of `prep ARGS` in KB, its exit code, its stderr), measured in a fresh parent process."""
    done = subprocess.run([sys.executable, "-c", PEAK_RSS, sys.executable, "-m", "prep", *args], capture_output=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    rss, code = done.stdout.split()
    return int(rss), int(code), done.stderr.decode()


@pytest.mark.slow
def test_a_200_mb_row_is_rejected_as_too_large_with_peak_rss_under_1_gb(tmp_path: Path) -> None:
    data = chats(tmp_path / "in.jsonl", 3)
    with data.open("ab") as f:
        f.write(b'{"messages": [{"role": "user", "content": "')
        for _ in range(200):
            f.write(b"a" * (1 << 20))
        f.write(b'"}]}\n')
    chats(tmp_path / "tail.jsonl", 2)
    with data.open("ab") as f:
        f.write((tmp_path / "tail.jsonl").read_bytes())
    rss, code, err = peak_rss_kb("tokenize", str(data), "--tokenizer", str(TOKENIZER), "--template", "chatml",
                                 "--max-len", "2048", "-o", str(tmp_path / "out"), "--rejects",
                                 str(tmp_path / "rejects.jsonl"), "-q")
    assert code == 1, err
    assert rss < 1 << 20, f"peak RSS {rss / 1024:.0f} MB"
    manifest = read_manifest(tmp_path / "out")
    assert manifest["counts"]["read"] == 6 and manifest["counts"]["written"] == 5
    assert manifest["counts"]["rejected"] == {"too_large": 1}
    reject = json.loads((tmp_path / "rejects.jsonl").read_text())
    assert reject["line"] == 4 and len(reject["row"]) < 1000
    done = run_prep("validate", str(data), "--max-row-bytes", str(300 << 20), "-q")  # the limit is an option
    assert b"too_large" not in done.stderr


def test_deep_json_is_a_too_deep_reject_and_the_good_rows_stay(tmp_path: Path) -> None:
    data = chats(tmp_path / "in.jsonl", 2)
    with data.open("a") as f:
        f.write('{"messages": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    with data.open("a") as f:
        f.write((chats(tmp_path / "more.jsonl", 2)).read_text())
    done = run_prep("convert", str(data), "--to", "openai", "-o", str(tmp_path / "out.jsonl"))
    assert done.returncode == 1, done.stderr
    assert b"too_deep" in done.stderr and b"internal error" not in done.stderr
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 4
    # in a .json array too: the deep value is a reject, skipped without being held, and the rows after it are read
    rows = [json.loads(line) for line in data.read_text().splitlines() if len(line) < 1000]
    deep = tmp_path / "deep.json"
    deep.write_text("[" + ",".join(json.dumps(r) for r in rows[:2]) + ',{"messages": ' + "[" * 100_000 +
                    '"]]" ' + "]" * 100_000 + "}," + ",".join(json.dumps(r) for r in rows[2:]) + "]")
    done = run_prep("convert", str(deep), "--to", "openai", "-o", str(tmp_path / "o2.jsonl"))
    assert done.returncode == 1 and b"deep.json:1 $ too_deep" in done.stderr, done.stderr
    def messages(path: Path) -> list[Any]:
        return [json.loads(line)["messages"] for line in path.read_text().splitlines()]

    assert messages(tmp_path / "o2.jsonl") == messages(tmp_path / "out.jsonl")
    (tmp_path / "bad.json").write_text('{"x": ' + "[" * 100_000 + "]" * 100_000 + "}")
    done = run_prep("convert", str(tmp_path / "bad.json"), "--to", "openai", "-o", str(tmp_path / "o3.jsonl"))
    assert done.returncode == 2 and b"deeper than can be read" in done.stderr, done.stderr


def template_tokenizer(tmp_path: Path, template: str) -> Path:
    folder = tmp_path / "tokenizer"
    shutil.copytree(TOKENIZER, folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["chat_template"] = template
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize(("template", "message"), [
    ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", "longer than 5 s"),
    ("{% for m in messages %}{{ 'x' * 1000000000 }}{% endfor %}", "more than 16,777,216"),
    ("{% for i in range(100000) %}{% for m in messages %}{{ m.content * 100 }}{% endfor %}{% endfor %}",
     "more than 16,777,216 characters"),
], ids=["nested-loop", "repeat", "output-size"])
def test_a_runaway_chat_template_stops_within_seconds(tmp_path: Path, template: str, message: str) -> None:
    data = chats(tmp_path / "in.jsonl", 3, words=200)
    started = time.monotonic()
    done = run_prep("tokenize", str(data), "--tokenizer", str(template_tokenizer(tmp_path, template)), "-o",
                    str(tmp_path / "out"), "-q")
    assert time.monotonic() - started < 30
    assert done.returncode == 2 and message.encode() in done.stderr, done.stderr
    assert not (tmp_path / "out").exists()


BOMB = "name: bomb\na: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{b}: &{b} [{', '.join([f'*{a}'] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi", strict=True))


def test_a_yaml_bomb_recipe_stops_with_a_clear_message(tmp_path: Path) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB)
    started = time.monotonic()
    done = run_prep("run", str(path), "--dry-run")
    assert time.monotonic() - started < 30
    assert done.returncode == 2 and b"aliases (*name) expand to 490,329,066 values" in done.stderr, done.stderr


# ---------------------------------------------------------------- 9. the system's errors in their own words


def random_chats(path: Path, n: int, seed: int = 0) -> Path:
    """Rows of random words: they compress badly, so their shards are about as large as their text."""
    import random

    rng = random.Random(seed)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9))) for _ in range(5000)]
    with path.open("w", encoding="utf-8") as f:
        for _ in range(n):
            f.write(json.dumps({"messages": [
                {"role": "user", "content": " ".join(rng.choice(words) for _ in range(40))},
                {"role": "assistant", "content": " ".join(rng.choice(words) for _ in range(60))}]}) + "\n")
    return path


def test_a_full_disk_is_exit_2_with_its_message_and_no_half_files(tmp_path: Path, full_disk: Path) -> None:
    data = random_chats(tmp_path / "in.jsonl", 2000)
    for args in (("convert", str(data), "--to", "openai", "-o", str(full_disk / "out.jsonl"), "--rejects",
                  str(full_disk / "rejects.jsonl")),
                 ("tokenize", str(data), "--tokenizer", str(TOKENIZER), "--template", "chatml", "-o",
                  str(full_disk / "tok"), "--rejects", str(full_disk / "tok" / "rejects.jsonl"), "-q")):
        done = run_prep(*args)
        assert done.returncode == 2, (args, done.stderr)
        assert done.stderr.decode() == f"prep: {full_disk / ('out.jsonl' if args[0] == 'convert' else 'tok')}: no " \
                                       "space left on the device; free some space or write to another disk\n"
        assert list(full_disk.iterdir()) == [], args  # no half file, no temporary name, no lock


def test_a_read_only_file_system_and_a_symlink_loop_get_their_own_words(tmp_path: Path) -> None:
    data = chats(tmp_path / "in.jsonl", 5)
    (tmp_path / "ro").mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(tmp_path / "ro")],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here ({mounted.stderr.decode().strip() or 'not root'})")
    try:
        for args, out in ((("convert", str(data), "--to", "openai"), "ro/x.jsonl"),
                          (("tokenize", str(data), "--tokenizer", str(TOKENIZER), "--template", "chatml", "-q"), "ro/tok")):
            done = run_prep(*args, "-o", str(tmp_path / out))
            assert done.returncode == 2, done.stderr
            assert done.stderr.decode() == f"prep: {tmp_path / out}: the file system is read-only; write somewhere " \
                                           "else\n"
    finally:
        subprocess.run(["umount", "-l", str(tmp_path / "ro")], check=False)
    (tmp_path / "loop").symlink_to("loop")
    for args in (("convert", str(data), "--to", "openai", "-o", str(tmp_path / "loop" / "x.jsonl")),
                 ("validate", str(tmp_path / "loop"))):
        done = run_prep(*args)
        assert done.returncode == 2 and b"(a symlink loop)" in done.stderr, (args, done.stderr)


def test_temporary_files_of_a_dead_run_are_swept_and_a_live_ones_kept(tmp_path: Path) -> None:
    data = chats(tmp_path / "in.jsonl", 5)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    stale = [tmp_path / f".out.jsonl.tmp-{int(dead.stdout)}-tmp", tmp_path / f".out.jsonl.tmp-{int(dead.stdout)}-spool"]
    live = tmp_path / f".out.jsonl.tmp-{os.getpid()}-tmp"
    for p in (*stale, live):
        p.write_text("half")
    done = run_prep("convert", str(data), "--to", "openai", "-o", str(tmp_path / "out.jsonl"))
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, "in.jsonl", "out.jsonl"])


def test_folders_and_truncated_files_get_their_own_words(tmp_path: Path) -> None:
    data = chats(tmp_path / "in.jsonl", 5)
    (tmp_path / "folder").mkdir()
    import gzip

    (tmp_path / "cut.jsonl.gz").write_bytes(gzip.compress(data.read_bytes())[:120])
    tok = tokenized(tmp_path)
    with (tok / "data" / "shard-00000.parquet").open("r+b") as f:
        f.truncate(500)
    cases = [
        (("convert", str(data), "--to", "openai", "-o", str(tmp_path / "folder")), "is a folder; give a file name"),
        (("validate", str(tmp_path / "folder")), "is a folder"),
        (("validate", str(tmp_path / "cut.jsonl.gz")), "truncated or corrupt"),
        (("pack", str(tok), "--max-len", "64", "-o", str(tmp_path / "p")), "truncated or replaced"),
    ]
    for args, words in cases:
        done = run_prep(*args)
        assert done.returncode == 2 and words.encode() in done.stderr, (args, done.stderr)
        assert b"internal error" not in done.stderr
    done = run_prep("validate", "/dev/stdin", input=b"")
    assert done.returncode == 1 and b"empty_file" in done.stdout, done.stderr


def test_pack_of_documents_all_too_long_rejects_them_all(tmp_path: Path) -> None:
    tok = tokenized(tmp_path, 5)
    done = run_prep("pack", str(tok), "--max-len", "8", "-o", str(tmp_path / "p"))
    assert done.returncode == 1 and b"rejected 5" in done.stderr, done.stderr
    assert verify(tmp_path / "p").ok
