"""The verbs chained as a user runs them, on the samples: tokenize -> pack -> verify -> stats / inspect.

Each stage is tested alone elsewhere (test_tokenize, test_pack, test_verify, test_inspect_stats on
shards written by hand); here the CLI output of one stage is the input of the next, and every input
row is accounted for at the end: rows in = documents packed + rows rejected on the way."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import SAMPLES, run_prep
from prep.shards.layout import read_manifest
from prep.shards.reader import iter_tables

TOKENIZER = str(SAMPLES / "tokenizer")


def ok(*args: str, codes: tuple[int, ...] = (0,)) -> str:
    """Run `prep ARGS`; its stderr, after checking the exit code and that nothing crashed."""
    done = run_prep(*args)
    err = done.stderr.decode()
    assert done.returncode in codes and "Traceback" not in err and "internal error" not in err, (args, err)
    return err + done.stdout.decode()


def lines(*names: str) -> int:
    return sum(1 for n in names for x in (SAMPLES / n).read_text(encoding="utf-8").splitlines() if x.strip())


def rows(folder: Path) -> list[dict]:
    return [r for t in iter_tables(folder) for r in t.to_pylist()]


def rejected_ids(path: Path) -> list[str]:
    return [i for x in path.read_text().splitlines() for i in json.loads(x)["row"]["ids"]] if path.exists() else []


def test_conversations_tokenize_pack_verify_stats_inspect(tmp_path: Path) -> None:
    inputs = [str(SAMPLES / "openai.jsonl"), str(SAMPLES / "sharegpt.jsonl")]
    tok, packed = tmp_path / "tok", tmp_path / "packed"
    ok("tokenize", *inputs, "--tokenizer", TOKENIZER, "--template", "chatml", "-o", str(tok), "--rejects",
       str(tmp_path / "tok-rejects.jsonl"), codes=(0, 1))
    first = read_manifest(tok)
    assert first["counts"]["read"] == lines("openai.jsonl", "sharegpt.jsonl") == 12
    documents = [i for r in rows(tok) for i in r["ids"]]
    assert len(documents) == first["counts"]["written"]

    err = ok("pack", str(tok), "--max-len", "256", "-o", str(packed), "--rejects",
             str(tmp_path / "pack-rejects.jsonl"), codes=(0, 1))
    second = read_manifest(packed)
    counts = second["counts"]
    assert f"read {counts['read']} documents, packed {counts['written']} into {counts['rows']} rows" in err
    out = rows(packed)
    packed_ids = [i for r in out for i in r["ids"]]
    too_long = rejected_ids(tmp_path / "pack-rejects.jsonl")
    # every document is packed once or rejected (some samples are longer than 256 tokens), none twice
    assert sorted(packed_ids + too_long) == sorted(documents) and len(set(packed_ids)) == len(packed_ids)
    assert counts["read"] == counts["written"] + sum(counts["rejected"].values()) == len(documents)
    rejected = sum(first["counts"]["rejected"].values()) + sum(counts["rejected"].values())
    assert first["counts"]["read"] == len(packed_ids) + rejected
    assert len(packed_ids) > 1 and all(len(r["ids"]) == len(r["seq_lengths"]) for r in out)
    assert any(len(r["seq_lengths"]) > 1 for r in out), "nothing was packed together"
    assert all(r["num_tokens"] == sum(r["seq_lengths"]) <= 256 for r in out)
    assert second["tokens"]["total"] == sum(r["num_tokens"] for r in out)
    efficiency = second["tokens"]["total"] / (counts["rows"] * 256)
    assert second["packing"]["efficiency"] == round(efficiency, 6)

    assert "OK: " in ok("verify", str(packed))
    done = run_prep("stats", str(packed), "--json")
    assert done.returncode == (1 if sum(counts["rejected"].values()) else 0), done.stderr  # rows pack rejected
    stats = json.loads(done.stdout)
    assert stats["documents"] == len(packed_ids) and stats["rows"] == counts["rows"]
    assert stats["packing"]["efficiency"] == second["packing"]["efficiency"]
    shown = ok("inspect", str(packed), "--row", "0")
    assert f"document 1/{len(out[0]['ids'])}: {out[0]['ids'][0]}" in shown


def test_text_tokenize_wrap_verify(tmp_path: Path) -> None:
    """Pretraining: plain text (JSONL and a .txt split into paragraphs) wrapped into blocks of exactly 64 tokens."""
    tok, packed = tmp_path / "tok", tmp_path / "wrapped"
    ok("tokenize", str(SAMPLES / "text.jsonl"), str(SAMPLES / "text.txt"), "--kind", "pretrain", "--txt-split",
       "paragraph", "--tokenizer", TOKENIZER, "-o", str(tok))
    unpacked = rows(tok)
    first = read_manifest(tok)
    assert first["counts"]["read"] == first["counts"]["written"] == len(unpacked) > lines("text.jsonl")
    ok("pack", str(tok), "--max-len", "64", "--strategy", "wrap", "-o", str(packed))
    out = rows(packed)
    assert all(r["num_tokens"] == 64 for r in out[:-1]) and 0 < out[-1]["num_tokens"] <= 64
    # the token stream is cut, not changed: same tokens in the same order, and no document dropped
    assert [t for r in out for t in r["input_ids"]] == [t for r in unpacked for t in r["input_ids"]]
    assert list(dict.fromkeys(i for r in out for i in r["ids"])) == [r["ids"][0] for r in unpacked]
    assert read_manifest(packed)["counts"]["written"] == len(unpacked)
    assert "OK: " in ok("verify", str(packed))
    assert "wrap into rows of 64" in ok("stats", str(packed))
    ok("inspect", str(packed), "--row", str(len(out) - 1))
