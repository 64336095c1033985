"""Packed rows behave as separate documents in a real model, and TRL trains on the shards as they are."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import SAMPLES
from prep.core.findings import Batch, Source
from prep.shards.layout import position_ids
from prep.shards.reader import iter_tables
from prep.shards.writer import ShardWriter
from prep.stages.pack import pack

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tokenizer():
    return transformers.AutoTokenizer.from_pretrained(str(SAMPLES / "tokenizer"))


@pytest.fixture(scope="module")
def packed(tokenizer, tmp_path_factory) -> Path:
    """Real sample texts, tokenized with the project's tokenizer, as unpacked shards, then packed."""
    root = tmp_path_factory.mktemp("packed")
    texts = [json.loads(line)["text"] for line in (SAMPLES / "text.jsonl").read_text().splitlines() if line.strip()]
    with ShardWriter(root / "in", "pretrain", {"tokenizer": {"vocab_size": len(tokenizer)}}) as w:
        batch: Batch[dict] = Batch()
        for i, text in enumerate(texts * 3):
            ids = tokenizer(text)["input_ids"] + [tokenizer.eos_token_id]
            batch.add({"input_ids": ids, "labels": ids, "seq_lengths": [len(ids)], "num_tokens": len(ids),
                       "num_loss_tokens": len(ids), "ids": [f"text:{i}"]}, Source("text.jsonl", i + 1, i + 1))
        w.write(batch)
    pack(root / "in", root / "out", 160)
    return root / "out"


def tiny(kind: str, vocab: int):
    config_cls, model_cls = {"llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
                             "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM)}[kind]
    torch.manual_seed(0)
    config = config_cls(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    return model_cls(config).eval()


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_packed_row_gives_each_document_its_own_logits(packed: Path, tokenizer, kind: str, attention: str) -> None:
    row = next(r for t in iter_tables(packed) for r in t.to_pylist() if len(r["seq_lengths"]) >= 3)
    model = tiny(kind, len(tokenizer))
    model.config._attn_implementation = attention
    ids = torch.tensor([row["input_ids"]])
    with torch.no_grad():
        # no attention mask, no cache: transformers builds the block-diagonal mask from the position ids
        together = model(input_ids=ids, position_ids=torch.tensor([position_ids(row["seq_lengths"])]),
                         use_cache=False).logits[0]
        ignored = model(input_ids=ids, use_cache=False).logits[0]
        start = 0
        for n in row["seq_lengths"]:
            alone = model(input_ids=ids[:, start:start + n], use_cache=False).logits[0]
            torch.testing.assert_close(together[start:start + n], alone, atol=1e-5, rtol=1e-4)
            if start:  # a later document, seen with the earlier ones in view, is not the same
                assert (ignored[start:start + n] - alone).abs().max() > 1e-3
            start += n


@pytest.mark.slow
def test_trl_sft_trainer_trains_on_the_shards_as_they_are(packed: Path, tokenizer, tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    trl = pytest.importorskip("trl")
    data = datasets.load_dataset("parquet", data_files=str(packed / "data" / "*.parquet"), split="train")
    assert {"input_ids", "labels", "seq_lengths"} <= set(data.column_names)
    config = trl.SFTConfig(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=2, padding_free=True,
                           dataset_kwargs={"skip_prepare_dataset": True}, report_to=[], use_cpu=True,
                           save_strategy="no", max_length=None, logging_steps=1)
    trainer = trl.SFTTrainer(model=tiny("llama", len(tokenizer)).train(), args=config, train_dataset=data,
                             processing_class=tokenizer)
    # the collator takes our document boundaries and labels as stored (our labels already mask each
    # document's first token, so its own masking of position 0 changes nothing)
    collated = trainer.data_collator([data[0], data[1]])
    assert collated["position_ids"][0].tolist() == position_ids(data[0]["seq_lengths"] + data[1]["seq_lengths"])
    assert collated["labels"][0].tolist() == data[0]["labels"] + data[1]["labels"]
    assert collated["input_ids"][0].tolist() == data[0]["input_ids"] + data[1]["input_ids"]
    result = trainer.train()
    assert result.global_step == 2 and result.training_loss > 0
