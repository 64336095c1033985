"""Shard folders: schema, manifest accounting, determinism, atomicity, loading with `datasets`."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from prep.core.findings import Batch, Finding, PrepError, Source
from prep.files.hashing import sha256_file
from prep.shards.layout import read_manifest
from prep.shards.reader import iter_tables, read_row
from prep.shards.verify import verify
from prep.shards.writer import ShardWriter

META = {"tokenizer": {"name": "t", "vocab_size": 100}, "max_len": 16, "train_on": "assistant"}


def sft_row(i: int) -> dict:
    ids = list(range(1, 2 + i % 7))
    labels = [-100] * (len(ids) // 2) + ids[len(ids) // 2:]
    return {"input_ids": ids, "labels": labels, "seq_lengths": [len(ids)], "num_tokens": len(ids),
            "num_loss_tokens": sum(x != -100 for x in labels), "ids": [f"f.jsonl:{i + 1}"]}


def batches(n: int, size: int) -> list[Batch[dict]]:
    out = []
    for start in range(0, n, size):
        b: Batch[dict] = Batch()
        for i in range(start, min(n, start + size)):
            b.add(sft_row(i), Source("f.jsonl", i + 1, i + 1))
        out.append(b)
    return out


def write(folder: Path, parts: list[Batch[dict]], **kw) -> dict:
    with ShardWriter(folder, "sft", META, **kw) as w:
        for b in parts:
            w.write(b)
    return read_manifest(folder)


def test_manifest_accounts_for_rows_tokens_and_shards(tmp_path: Path) -> None:
    parts = batches(250, 64)
    bad = parts[0]
    bad.reject(Source("f.jsonl", 999, 999), [Finding("too_long", "row has 40 tokens")], {"id": "x"})
    bad.alter(Source("f.jsonl", 1, 1), [Finding("truncated", "cut to 16 tokens", severity="warning")], {"id": "y"})
    manifest = write(tmp_path / "out", parts, shard_rows=100, rejects=str(tmp_path / "rejects.jsonl"))
    assert manifest["counts"] == {"read": 251, "written": 250, "rejected": {"too_long": 1},
                                  "altered": {"truncated": 1}, "rows": 250}
    assert [s["rows"] for s in manifest["shards"]] == [100, 100, 50]
    expected_tokens = sum(sft_row(i)["num_tokens"] for i in range(250))
    assert manifest["tokens"]["total"] == expected_tokens == sum(s["tokens"] for s in manifest["shards"])
    for shard in manifest["shards"]:
        path = tmp_path / "out" / shard["path"]
        assert sha256_file(path) == shard["sha256"] and path.stat().st_size == shard["bytes"]
        assert pq.ParquetFile(path).metadata.row_group(0).column(0).compression == "ZSTD"
    assert manifest["tokenizer"] == META["tokenizer"] and manifest["kind"] == "sft"
    kept = [json.loads(line) for line in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert [(k["reasons"][0]["code"], k["written"], k["line"]) for k in kept] == [("too_long", False, 999),
                                                                                 ("truncated", True, 1)]
    rows = [r for t in iter_tables(tmp_path / "out") for r in t.to_pylist()]
    assert rows == [sft_row(i) for i in range(250)]


def test_same_rows_give_same_bytes_whatever_the_batching(tmp_path: Path) -> None:
    a = write(tmp_path / "a", batches(5000, 1000))
    b = write(tmp_path / "b", batches(5000, 37))
    assert [s["sha256"] for s in a["shards"]] == [s["sha256"] for s in b["shards"]]


def test_failed_run_leaves_the_earlier_output_and_no_partial_shard(tmp_path: Path) -> None:
    out = tmp_path / "out"
    before = write(out, batches(10, 10))
    with pytest.raises(RuntimeError), ShardWriter(out, "sft", META) as w:
        w.write(batches(30, 10)[0])
        raise RuntimeError("killed")
    assert read_manifest(out) == before and verify(out).ok
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no partial folder, no lock
    with pytest.raises(RuntimeError), ShardWriter(tmp_path / "new", "sft", META) as w:
        w.write(batches(10, 10)[0])
        raise RuntimeError("killed")
    assert not (tmp_path / "new").exists()
    with pytest.raises(PrepError, match="not a finished shard folder"):
        read_manifest(tmp_path / "new")


def test_rerun_with_fewer_rows_drops_stale_shards(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write(out, batches(30, 10), shard_rows=10)
    manifest = write(out, batches(10, 10), shard_rows=10)
    assert sorted(p.name for p in (out / "data").iterdir()) == ["shard-00000.parquet"]
    assert len(manifest["shards"]) == 1


def test_datasets_loads_the_shards(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    write(tmp_path / "out", batches(20, 7), shard_rows=8)
    ds = datasets.load_dataset("parquet", data_files=str(tmp_path / "out" / "data" / "*.parquet"), split="train")
    assert len(ds) == 20 and ds[3]["input_ids"] == sft_row(3)["input_ids"]
    assert ds.features["input_ids"].feature.dtype == "int32"


def test_interrupted_run_resumes_reusing_verified_shards(tmp_path: Path) -> None:
    """Kill the writer mid-way, run again with the same key: same bytes, finished shards not rewritten."""
    whole = write(tmp_path / "whole", batches(95, 10), shard_rows=20)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt), ShardWriter(out, "sft", META, shard_rows=20, resume_key="k1") as w:
        for i, b in enumerate(batches(95, 10)):
            if i == 5:
                raise KeyboardInterrupt
            w.write(b)
    partial = tmp_path / ".out.tmp-resume"  # the run in progress, beside the output
    done = sorted(p.name for p in (partial / "data").glob("*.parquet"))
    assert done == ["shard-00000.parquet", "shard-00001.parquet"] and not out.exists()
    first_mtime = (partial / "data" / done[0]).stat().st_mtime_ns
    with ShardWriter(out, "sft", META, shard_rows=20, resume_key="k1") as w:
        for b in batches(95, 10):
            w.write(b)
    assert w.reused == 2 and (out / "data" / done[0]).stat().st_mtime_ns == first_mtime
    assert read_manifest(out)["shards"] == whole["shards"]
    assert not (out / ".journal.json").exists() and not partial.exists()


def test_resume_rewrites_a_shard_that_no_longer_verifies(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt), ShardWriter(out, "sft", META, shard_rows=20, resume_key="k") as w:
        for b in batches(60, 10):
            w.write(b)
        raise KeyboardInterrupt
    shard = tmp_path / ".out.tmp-resume" / "data" / "shard-00000.parquet"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    with ShardWriter(out, "sft", META, shard_rows=20, resume_key="k") as w:
        for b in batches(60, 10):
            w.write(b)
    assert w.reused == 0
    assert read_manifest(out)["shards"] == write(tmp_path / "ref", batches(60, 10), shard_rows=20)["shards"]


def test_read_row_finds_a_row_in_any_shard_and_row_group(tmp_path: Path) -> None:
    write(tmp_path / "out", batches(10_000, 2_500), shard_rows=6_000)  # shards of 6,000 rows: groups of 4,096
    assert [pq.ParquetFile(tmp_path / "out" / s["path"]).num_row_groups
            for s in read_manifest(tmp_path / "out")["shards"]] == [2, 1]
    for index in (0, 4095, 4096, 5999, 6000, 9999):
        assert read_row(tmp_path / "out", index) == sft_row(index)
    with pytest.raises(PrepError, match="does not exist"):
        read_row(tmp_path / "out", 10_000)
