"""prep export: packed shards out as axolotl's and Together's pre-tokenized Parquet (exactly input_ids,
attention_mask, labels; the labels the shards hold), a datasets.save_to_disk folder, and JSONL of text and
spans that is exactly what `prep template` renders; checked with the tools' own readers where installed."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from conftest import SAMPLES, fixture, run_prep
from prep.cli import main
from prep.formats.inputs import Inputs
from prep.render.tokenizer import load_tokenizer
from prep.shards.layout import read_manifest
from prep.stages.export import export
from prep.stages.pack import pack
from prep.stages.template import template
from prep.stages.tokenize import tokenize

INPUTS = [str(SAMPLES / "openai.jsonl"), str(SAMPLES / "sharegpt.jsonl"), str(SAMPLES / "alpaca.json")]


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("export")
    tokenize(Inputs(INPUTS), load_tokenizer(str(SAMPLES / "tokenizer")), str(root / "tok"), template="chatml")
    pack(root / "tok", root / "packed", 1024)
    return root / "tok", root / "packed"


def documents(folder: Path) -> list[tuple[str, list[int], list[int]]]:
    """(id, input_ids, labels) of every document of a shard folder, packed rows split at seq_lengths."""
    out = []
    for shard in read_manifest(folder)["shards"]:
        for row in pq.read_table(folder / shard["path"]).to_pylist():
            start = 0
            for n, doc in zip(row["seq_lengths"], row["ids"], strict=True):
                out.append((doc, row["input_ids"][start:start + n], row["labels"][start:start + n]))
                start += n
    return out


def test_axolotl_gets_exactly_three_columns_with_the_shards_labels(shards, tmp_path) -> None:
    _, packed = shards
    assert any(len(r["seq_lengths"]) > 1 for r in pq.read_table(packed / "data/shard-00000.parquet").to_pylist())
    done = run_prep("export", str(packed), "--to", "axolotl", "-o", str(tmp_path / "train.parquet"))
    assert done.returncode == 0, done.stderr
    table = pq.read_table(tmp_path / "train.parquet")
    assert table.column_names == ["input_ids", "attention_mask", "labels"]
    docs = documents(packed)
    assert table.num_rows == len(docs) == read_manifest(packed)["counts"]["written"]
    for row, (_, ids, labels) in zip(table.to_pylist(), docs, strict=True):
        assert row["input_ids"] == ids and row["labels"] == labels
        assert row["attention_mask"] == [1] * len(ids)
    assert f"read {len(docs)}, wrote {len(docs)}, rejected 0".encode() in done.stderr


def test_together_check_file_passes_the_parquet(shards, tmp_path) -> None:
    together = pytest.importorskip("together", reason="Together's check_file (pip install together; in the dev extra)")
    try:
        from together.lib.utils.files import check_file  # together 2.x and later
    except ImportError:
        from together.utils import check_file  # together 1.x
    out = tmp_path / "together.parquet"
    export(shards[1], "together", str(out))
    report = check_file(out)
    assert report["is_check_passed"], report
    assert report["num_samples"] == len(documents(shards[1])), together.__name__


def test_hf_dataset_loads_with_load_from_disk(shards, tmp_path) -> None:
    datasets = pytest.importorskip("datasets")
    _, packed = shards
    done = export(packed, "hf-dataset", str(tmp_path / "ds"))
    loaded = datasets.load_from_disk(str(tmp_path / "ds"))
    assert loaded.column_names == ["input_ids", "attention_mask", "labels"] == done.columns
    assert [r["labels"] for r in loaded] == [labels for _, _, labels in documents(packed)]

    dpo = tmp_path / "dpo"
    tokenize(Inputs([str(SAMPLES / "trl_preference.jsonl")]), str(SAMPLES / "tokenizer"), str(dpo), template="chatml")
    export(dpo, "hf-dataset", str(tmp_path / "dpo_ds"))
    pairs = datasets.load_from_disk(str(tmp_path / "dpo_ds"))
    assert pairs.column_names == ["prompt_input_ids", "chosen_input_ids", "rejected_input_ids"]  # TRL's names
    stored = pq.read_table(dpo / read_manifest(dpo)["shards"][0]["path"])
    assert pairs["chosen_input_ids"] == stored["chosen_input_ids"].to_pylist()


def test_jsonl_is_exactly_what_prep_template_renders(shards, tmp_path) -> None:
    """text -> tokens -> text: the decoded shards and their trained spans are the rendered rows, character for
    character (the project's tokenizer)."""
    unpacked, packed = shards
    rendered = tmp_path / "rendered.jsonl"
    template(Inputs(INPUTS), "chatml", str(SAMPLES / "tokenizer"), str(rendered))
    export(packed, "jsonl", str(tmp_path / "packed.jsonl"))
    by_id = {r["id"]: r for r in map(json.loads, rendered.read_text().splitlines())}
    exported = [json.loads(line) for line in (tmp_path / "packed.jsonl").read_text().splitlines()]
    assert len(exported) == len(by_id) and all(r == by_id[r["id"]] for r in exported)


def test_jsonl_is_what_prep_template_renders_with_a_byte_level_tokenizer(tmp_path) -> None:
    """The same with llama3: byte-level, and a tokenizer whose transformers decode cleans up spaces."""
    tok = fixture("tokenizers", "llama3")
    template(Inputs(INPUTS[:2]), None, str(tok), str(tmp_path / "llama3.jsonl"))
    tokenize(Inputs(INPUTS[:2]), str(tok), str(tmp_path / "llama3"))
    export(tmp_path / "llama3", "jsonl", str(tmp_path / "llama3-export.jsonl"))
    assert (tmp_path / "llama3-export.jsonl").read_text() == (tmp_path / "llama3.jsonl").read_text()


def test_what_a_tool_cannot_take_is_refused_in_one_line(shards, tmp_path) -> None:
    dpo = tmp_path / "dpo"
    tokenize(Inputs([str(SAMPLES / "trl_preference.jsonl")]), str(SAMPLES / "tokenizer"), str(dpo), template="chatml")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    for args, words in (([str(dpo), "--to", "axolotl", "-o", str(tmp_path / "a.parquet")], "are pairs"),
                        ([str(shards[1]), "--to", "together", "-o", str(tmp_path / "a.jsonl")], "*.parquet"),
                        ([str(shards[1]), "--to", "jsonl", "-o", str(tmp_path / "a.parquet")], "*.jsonl"),
                        ([str(shards[1]), "--to", "hf-dataset", "-o", str(tmp_path / "full")], "already there"),
                        ([str(shards[1]), "--to", "csv", "-o", str(tmp_path / "a.csv")], "must be one of")):
        done = CliRunner().invoke(main, ["export", *args])
        assert done.exit_code == 2 and words in done.stderr, (args, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "a.parquet").exists() and not (tmp_path / "full" / "state.json").exists()
