"""prep inspect and prep stats on shard folders made from real text with the project's tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from conftest import SAMPLES, run_prep
from prep.core.findings import Batch, Source
from prep.shards.writer import ShardWriter
from prep.stages.inspect import TRAINED, inspect, render_tokens
from prep.stages.pack import pack
from prep.stages.stats import histogram, shard_stats

transformers = pytest.importorskip("transformers")
TOKENIZER = str(SAMPLES / "tokenizer")


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> tuple[Path, Path, list[str]]:
    tok = transformers.AutoTokenizer.from_pretrained(TOKENIZER)
    root = tmp_path_factory.mktemp("shards")
    texts = [json.loads(x)["text"] for x in (SAMPLES / "text.jsonl").read_text().splitlines() if x.strip()]
    with ShardWriter(root / "in", "sft", {"tokenizer": {"vocab_size": len(tok), "path": TOKENIZER}}) as w:
        batch: Batch[dict] = Batch()
        for i, text in enumerate(texts):
            ids = tok(text)["input_ids"]
            half = len(ids) // 2  # train on the second half of each text
            labels = [-100] * half + ids[half:]
            batch.add({"input_ids": ids, "labels": labels, "seq_lengths": [len(ids)], "num_tokens": len(ids),
                       "num_loss_tokens": len(ids) - half, "ids": [f"text:{i}"]}, Source("t", i + 1, i + 1))
        w.write(batch)
    pack(root / "in", root / "packed", 200)
    return root / "in", root / "packed", texts


def test_inspect_marks_trained_text_and_document_boundaries(folders) -> None:
    unpacked, packed, texts = folders
    console = Console(record=True, width=200, color_system="truecolor")
    row = inspect(packed, 0, console=console).row
    out = console.export_text()
    assert out.count("document ") == len(row["seq_lengths"]) >= 2
    for doc_id in row["ids"]:
        assert doc_id in out
    tok = transformers.AutoTokenizer.from_pretrained(TOKENIZER)
    start = 0
    for n in row["seq_lengths"]:
        ids, labels = row["input_ids"][start:start + n], row["labels"][start:start + n]
        text = tok.decode(ids)
        assert text in texts and text[:20] in out
        shown = render_tokens(tok, ids, labels, show_ids=False)
        assert shown.plain == text
        # exactly the trained tokens carry the trained style
        trained = "".join(shown.plain[s.start:s.end] for s in shown.spans if s.style == TRAINED)
        assert trained == tok.decode([i for i, label in zip(ids, labels, strict=True) if label != -100])
        start += n


def test_inspect_cli(folders) -> None:
    _, packed, _ = folders
    done = run_prep("inspect", str(packed), "--row", "1", "--ids")
    assert done.returncode == 0 and b"document 1/" in done.stdout and b":" in done.stdout
    beyond = run_prep("inspect", str(packed), "--row", "99999")
    assert beyond.returncode == 2 and b"does not exist" in beyond.stderr and b"Traceback" not in beyond.stderr


def test_stats_of_shards(folders) -> None:
    unpacked, packed, texts = folders
    plain, packed_stats = shard_stats(unpacked), shard_stats(packed)
    assert plain["rows"] == plain["documents"] == len(texts)
    assert packed_stats["documents"] == len(texts) and packed_stats["rows"] < len(texts)
    assert packed_stats["tokens"] == plain["tokens"]
    assert 0.4 < plain["trained_share"] < 0.6
    assert sum(c for _, _, c in packed_stats["row_histogram"]) == packed_stats["rows"]
    done = run_prep("stats", str(packed))
    assert done.returncode == 0 and b"efficiency" in done.stdout and b"tokens per row" in done.stdout


def test_stats_of_input_files() -> None:
    done = run_prep("stats", str(SAMPLES / "openai.jsonl"), "--json")
    result = json.loads(done.stdout)
    assert done.returncode == 0 and result["kinds"]["chat"] == result["counts"]["written"] > 0


def test_histogram_buckets_cover_every_value() -> None:
    import numpy as np

    values = np.array([1, 1, 2, 50, 51, 100])
    buckets = histogram(values, bins=4)
    assert buckets[0][0] == 1 and buckets[-1][1] == 100 and sum(c for *_, c in buckets) == 6
    assert histogram(np.array([7, 7])) == [(7, 7, 2)]
