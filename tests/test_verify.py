"""prep verify: every planted defect is caught, a clean folder passes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import SAMPLES, run_prep
from prep.core.findings import Batch, Source
from prep.formats.inputs import Inputs
from prep.shards.layout import SCHEMAS, read_manifest
from prep.shards.reader import iter_tables
from prep.shards.verify import verify
from prep.shards.writer import ShardWriter
from prep.stages.tokenize import tokenize

GOOD = {"input_ids": [5, 6, 7, 8], "labels": [-100, -100, 7, 8], "seq_lengths": [4], "num_tokens": 4,
        "num_loss_tokens": 2, "ids": ["a:1"]}


def folder(path: Path, rows: list[dict], max_len: int | None = 8) -> Path:
    with ShardWriter(path, "sft", {"tokenizer": {"vocab_size": 10}, "max_len": max_len}, shard_rows=3) as w:
        b: Batch[dict] = Batch()
        for i, r in enumerate(rows):
            b.add(r, Source("x.jsonl", i + 1, i + 1))
        w.write(b)
    return path


def codes(path: Path) -> dict[str, int]:
    return dict(verify(path).counts)


def test_clean_folder_passes(tmp_path: Path) -> None:
    result = verify(folder(tmp_path / "ok", [GOOD] * 7))
    assert result.ok and result.findings == [] and result.rows == 7 and result.tokens == 28


@pytest.mark.parametrize(("change", "code"), [
    ({"labels": [-100, 7, 8, -100]}, "label_not_token"),           # labels shifted by one
    ({"labels": [-100, -100, 7]}, "length_mismatch"),
    ({"seq_lengths": [3]}, "bad_seq_lengths"),
    ({"seq_lengths": [2, 2]}, "bad_ids"),                         # two documents, one id
    ({"input_ids": [5, 6, 7, 12], "labels": [-100, -100, 7, 12]}, "id_out_of_vocab"),
    ({"num_loss_tokens": 3}, "count_mismatch"),
    ({"input_ids": [5] * 9, "labels": [-100] * 9, "seq_lengths": [9], "num_tokens": 9, "num_loss_tokens": 0},
     "too_long"),
])
def test_each_row_defect_is_reported_once_at_its_row(tmp_path: Path, change: dict, code: str) -> None:
    bad = {**GOOD, **change}
    result = verify(folder(tmp_path / "f", [GOOD, GOOD, GOOD, GOOD, bad]))
    assert dict(result.counts) == {code: 1}
    (finding,) = result.findings
    assert (finding.file, finding.line) == ("data/shard-00001.parquet", 2)


def test_flipped_byte_in_any_shard_is_caught(tmp_path: Path) -> None:
    path = folder(tmp_path / "f", [GOOD] * 7)
    for shard in sorted((path / "data").glob("*.parquet")):
        original = shard.read_bytes()
        for offset in (0, len(original) // 2, len(original) - 1):
            data = bytearray(original)
            data[offset] ^= 0x01
            shard.write_bytes(bytes(data))
            assert codes(path) == {"checksum_mismatch": 1}, (shard.name, offset)
        shard.write_bytes(original)
    assert verify(path).ok


def test_manifest_problems(tmp_path: Path) -> None:
    path = folder(tmp_path / "f", [GOOD] * 7)
    manifest = json.loads((path / "manifest.json").read_text())
    edited = {**manifest, "counts": {**manifest["counts"], "read": 9}}
    (path / "manifest.json").write_text(json.dumps(edited))
    assert codes(path) == {"count_mismatch": 1}
    (path / "manifest.json").write_text(json.dumps({**manifest, "tokens": {"total": 1, "loss": 14}}))
    assert codes(path) == {"count_mismatch": 1}
    (path / "manifest.json").write_text(json.dumps(manifest))
    (path / "data" / "shard-00002.parquet").unlink()
    assert codes(path) == {"missing_shard": 1}
    (path / "manifest.json").unlink()
    assert codes(path) == {"bad_manifest": 1}


def test_verify_cli_exit_codes(tmp_path: Path) -> None:
    path = folder(tmp_path / "f", [GOOD] * 4)
    ok = run_prep("verify", str(path))
    assert ok.returncode == 0 and b"OK: 4 rows, 16 tokens" in ok.stderr
    shard = path / "data" / "shard-00000.parquet"
    shard.write_bytes(shard.read_bytes()[:-1] + b"\0")
    bad = run_prep("verify", str(path))
    assert bad.returncode == 1 and b"checksum_mismatch" in bad.stderr and b"Traceback" not in bad.stderr
    assert run_prep("verify", str(tmp_path / "missing")).returncode == 2


@pytest.mark.parametrize(("sample", "kind", "max_len"), [
    ("openai_dpo.jsonl", "dpo", None), ("openai_dpo.jsonl", "dpo", 64), ("trl_kto.jsonl", "kto", None),
    ("trl_kto.jsonl", "kto", 24),
])
def test_tokenized_preference_and_feedback_shards_verify(tmp_path: Path, sample: str, kind: str,
                                                         max_len: int | None) -> None:
    """`prep tokenize` (the writer) and `prep verify` (the checker) agree on dpo/kto rows: num_tokens is the
    sum of every side, and the prompt with its longest answer fits max_len, truncated or not."""
    out = tmp_path / "shards"
    result = tokenize(Inputs([str(SAMPLES / sample)]), str(SAMPLES / "tokenizer"), str(out), template="chatml",
                      kind=kind, max_len=max_len, overflow="truncate")
    assert result.tally.rejected_total == 0, result.tally.summary()
    manifest = read_manifest(out)
    assert manifest["kind"] == kind and manifest["counts"]["written"] > 0
    if max_len:
        assert manifest["counts"]["altered"].get("truncated"), "the truncating path was not exercised"
    sides = [c for c in SCHEMAS[kind].names if c.endswith("_input_ids")]
    for row in (r for t in iter_tables(out) for r in t.to_pylist()):
        assert row["num_tokens"] == sum(len(row[c]) for c in sides)
    ok = run_prep("verify", str(out))
    assert ok.returncode == 0 and b"OK: " in ok.stderr, ok.stderr.decode()
    # the checker can fail: a max_len the rows do not fit is caught
    (out / "manifest.json").write_text(json.dumps({**manifest, "max_len": 8}))
    assert codes(out).get("too_long", 0) == manifest["counts"]["rows"]


def test_a_pair_row_whose_num_tokens_is_not_the_sum_of_its_sides_is_caught(tmp_path: Path) -> None:
    row = {"prompt_input_ids": [1, 2], "chosen_input_ids": [3], "rejected_input_ids": [4, 5], "num_tokens": 5,
           "ids": ["p:1"]}
    with ShardWriter(tmp_path / "f", "dpo", {"tokenizer": {"vocab_size": 10}, "max_len": 4}) as w:
        b: Batch[dict] = Batch()
        for i, r in enumerate([row, {**row, "num_tokens": 3}]):
            b.add(r, Source("x.jsonl", i + 1, i + 1))
        w.write(b)
    assert codes(tmp_path / "f") == {"length_mismatch": 1}
