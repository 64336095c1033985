"""prep pack: best-fit decreasing and wrap, document boundaries, accounting, resume, determinism."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import prep.shards.packing
import prep.stages.pack
from conftest import run_prep
from prep.core.findings import Batch, Source
from prep.shards.layout import read_manifest
from prep.shards.packing import best_fit_decreasing
from prep.shards.reader import iter_tables
from prep.shards.writer import ShardWriter
from prep.stages.pack import pack


def doc(i: int, rng: random.Random, lo: int = 4, hi: int = 120) -> dict:
    n = rng.randint(lo, hi)
    ids = [rng.randint(3, 499) for _ in range(n)]
    cut = rng.randint(1, n - 1)
    labels = [-100] * cut + ids[cut:]
    return {"input_ids": ids, "labels": labels, "seq_lengths": [n], "num_tokens": n,
            "num_loss_tokens": n - cut, "ids": [f"doc:{i}"]}


def unpacked(folder: Path, n: int = 400, seed: int = 1, overflow: str = "drop", **kw) -> list[dict]:
    rng = random.Random(seed)
    docs = [doc(i, rng, **kw) for i in range(n)]
    with ShardWriter(folder, "sft", {"tokenizer": {"vocab_size": 500}, "overflow": overflow, "max_len": None},
                     shard_rows=150) as w:
        b: Batch[dict] = Batch()
        for i, d in enumerate(docs):
            b.add(d, Source("docs.jsonl", i + 1, i + 1))
        w.write(b)
    return docs


def rows(folder: Path) -> list[dict]:
    return [r for t in iter_tables(folder) for r in t.to_pylist()]


def split_docs(row: dict) -> list[tuple[str, list[int], list[int]]]:
    out, start = [], 0
    for n, doc_id in zip(row["seq_lengths"], row["ids"], strict=True):
        out.append((doc_id, row["input_ids"][start:start + n], row["labels"][start:start + n]))
        start += n
    return out


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 64), min_size=1, max_size=300), st.integers(64, 200))
def test_bfd_places_every_item_once_within_capacity(lengths: list[int], capacity: int) -> None:
    arr = np.array(lengths)
    bins = best_fit_decreasing(arr, capacity)
    assert sorted(i for b in bins for i in b) == list(range(len(lengths)))
    assert all(arr[b].sum() <= capacity for b in bins)
    # best fit never leaves two bins that could have been one
    assert sum(1 for b in bins if arr[b].sum() <= capacity // 2) <= 1
    assert bins == best_fit_decreasing(arr, capacity)


def test_bfd_packs_each_document_whole_and_once(tmp_path: Path) -> None:
    docs = unpacked(tmp_path / "in")
    manifest = pack(tmp_path / "in", tmp_path / "out", 256, seed=3).manifest
    by_id = {d["ids"][0]: d for d in docs}
    seen = []
    for row in rows(tmp_path / "out"):
        assert row["num_tokens"] == len(row["input_ids"]) == sum(row["seq_lengths"]) <= 256
        for doc_id, ids, labels in split_docs(row):
            original = by_id[doc_id]
            assert ids == original["input_ids"]
            # the first label of each document is masked, the rest are as tokenized
            assert labels == [-100] + original["labels"][1:]
            seen.append(doc_id)
    assert sorted(seen) == sorted(by_id)
    assert manifest["counts"]["read"] == manifest["counts"]["written"] == 400
    assert manifest["packing"]["strategy"] == "bfd" and manifest["packing"]["efficiency"] > 0.97
    assert manifest["tokens"]["total"] == sum(d["num_tokens"] for d in docs)


def test_same_seed_same_bytes_other_seed_other_order(tmp_path: Path) -> None:
    unpacked(tmp_path / "in")
    a = pack(tmp_path / "in", tmp_path / "a", 256, seed=1).manifest
    b = pack(tmp_path / "in", tmp_path / "b", 256, seed=1).manifest
    pack(tmp_path / "in", tmp_path / "c", 256, seed=2)
    assert [s["sha256"] for s in a["shards"]] == [s["sha256"] for s in b["shards"]]
    assert rows(tmp_path / "a") != rows(tmp_path / "c")
    assert sorted(map(str, rows(tmp_path / "a"))) == sorted(map(str, rows(tmp_path / "c")))


def test_wrap_cuts_blocks_of_exactly_max_len_and_loses_no_token(tmp_path: Path) -> None:
    docs = unpacked(tmp_path / "in")
    manifest = pack(tmp_path / "in", tmp_path / "out", 128, strategy="wrap", window=70).manifest
    out = rows(tmp_path / "out")
    assert all(r["num_tokens"] == 128 for r in out[:-1]) and 0 < out[-1]["num_tokens"] <= 128
    stream = [t for r in out for t in r["input_ids"]]
    assert stream == [t for d in docs for t in d["input_ids"]]
    for r in out:
        assert sum(r["seq_lengths"]) == r["num_tokens"] and len(r["ids"]) == len(r["seq_lengths"])
    assert manifest["counts"]["written"] == 400 and manifest["packing"]["strategy"] == "wrap"


def test_too_long_rows_follow_the_input_policy(tmp_path: Path) -> None:
    unpacked(tmp_path / "drop", n=50, lo=20, hi=200)
    manifest = pack(tmp_path / "drop", tmp_path / "o1", 100, rejects=str(tmp_path / "rej.jsonl")).manifest
    n_long = manifest["counts"]["rejected"]["too_long"]
    assert n_long > 0 and manifest["counts"]["read"] == manifest["counts"]["written"] + n_long
    kept = [json.loads(x) for x in (tmp_path / "rej.jsonl").read_text().splitlines()]
    assert len(kept) == n_long and kept[0]["reasons"][0]["code"] == "too_long" and kept[0]["row"]["ids"]
    docs = unpacked(tmp_path / "trunc", n=50, lo=20, hi=200, overflow="truncate")
    manifest = pack(tmp_path / "trunc", tmp_path / "o2", 100).manifest
    assert manifest["counts"]["written"] == 50 and manifest["counts"]["altered"]["truncated"] == n_long
    by_id = {d["ids"][0]: d for d in docs}
    for row in rows(tmp_path / "o2"):
        for doc_id, ids, labels in split_docs(row):
            if by_id[doc_id]["num_tokens"] > 100:  # cut at the end, last token (EOS) and its label kept
                assert ids == by_id[doc_id]["input_ids"][:99] + by_id[doc_id]["input_ids"][-1:]
                assert labels[-1] == by_id[doc_id]["labels"][-1]


def test_interrupted_pack_resumes_to_identical_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    unpacked(tmp_path / "in", n=600)
    clean = pack(tmp_path / "in", tmp_path / "clean", 128, window=100, shard_size="40rows").manifest
    real = prep.shards.packing.bfd_window
    calls = {"n": 0}

    def dies_on_fourth(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(prep.stages.pack, "bfd_window", dies_on_fourth)
    with pytest.raises(KeyboardInterrupt):
        pack(tmp_path / "in", tmp_path / "out", 128, window=100, shard_size="40rows")
    assert not (tmp_path / "out").exists()  # the run in progress is beside it, resumed from its journal
    finished = {p.name: p.stat().st_mtime_ns for p in (tmp_path / ".out.tmp-resume" / "data").glob("*.parquet")}
    assert finished
    monkeypatch.setattr(prep.stages.pack, "bfd_window", real)
    again = pack(tmp_path / "in", tmp_path / "out", 128, window=100, shard_size="40rows").manifest
    assert again["shards"] == clean["shards"]
    assert all((tmp_path / "out" / "data" / n).stat().st_mtime_ns == t for n, t in finished.items())


def test_pack_cli(tmp_path: Path) -> None:
    unpacked(tmp_path / "in")
    done = run_prep("pack", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--max-len", "256",
                    "--shard-size", "50rows")
    assert done.returncode == 0, done.stderr
    assert b"read 400 documents, packed 400 into" in done.stderr
    assert len(read_manifest(tmp_path / "out")["shards"]) > 1
    bad = run_prep("pack", str(tmp_path / "in"), "-o", str(tmp_path / "o2"), "--max-len", "256",
                   "--shard-size", "lots")
    assert bad.returncode == 2 and b"Traceback" not in bad.stderr
    missing = run_prep("pack", str(tmp_path / "nothing-here"), "-o", str(tmp_path / "o3"), "--max-len", "64")
    assert missing.returncode == 2
