"""prep's dpo and kto shards train in TRL's DPOTrainer and KTOTrainer as they are.

The shards of samples/openai_dpo.jsonl and samples/trl_kto.jsonl (chatml, samples/tokenizer) go through
prep.shards.load_for_trl into pretokenized(DPOTrainer) / pretokenized(KTOTrainer) on a tiny llama; the
batches the trainer takes its steps on are compared with the shards' ids: nothing re-tokenized, no end-of-turn
token added a second time.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest

from conftest import SAMPLES, fixture, make_tiny_model
from prep.core.findings import PrepError
from prep.formats.inputs import Inputs
from prep.shards.reader import iter_tables
from prep.stages.tokenize import tokenize
from prep.trainer.bridge import load_for_trl, pretokenized

torch = pytest.importorskip("torch")
trl = pytest.importorskip("trl")
transformers = pytest.importorskip("transformers")
datasets = pytest.importorskip("datasets")


TOKENIZER = str(SAMPLES / "tokenizer")
STEPS, BATCH = 2, 2


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("trl_preference")


@pytest.fixture(scope="module")
def model(root: Path) -> str:
    return str(make_tiny_model(root / "tiny-llama"))


@pytest.fixture(scope="module")
def tok(model: str) -> Any:
    return transformers.AutoTokenizer.from_pretrained(model)


@pytest.fixture(scope="module")
def shards(root: Path) -> dict[str, str]:
    out = {"dpo": str(root / "dpo"), "kto": str(root / "kto")}
    tokenize(Inputs([str(SAMPLES / "openai_dpo.jsonl")]), TOKENIZER, out["dpo"], template="chatml", kind="dpo")
    tokenize(Inputs([str(SAMPLES / "trl_kto.jsonl")]), TOKENIZER, out["kto"], template="chatml", kind="kto")
    return out


def rows(folder: str) -> list[dict[str, Any]]:
    return [r for t in iter_tables(folder) for r in t.to_pylist()]


def config(cls: type, out: Path, **kw: Any) -> Any:
    """Two steps of two rows in file order, on CPU, nothing saved or reported."""
    return cls(output_dir=str(out), max_steps=STEPS, per_device_train_batch_size=BATCH, use_cpu=True, bf16=False,
               report_to="none", save_strategy="no", logging_steps=1, activation_checkpointing=False,
               train_sampling_strategy="sequential", dataloader_num_workers=0, **kw)


def spy(trainer_cls: type, seen: list[dict[str, list[list[int]]]]) -> type:
    """`pretokenized(trainer_cls)` that keeps each batch a training step receives (the collator's output)."""

    class Spy(pretokenized(trainer_cls)):
        def training_step(self, model: Any, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
            seen.append({k: v.tolist() for k, v in inputs.items() if torch.is_tensor(v)})
            return super().training_step(model, inputs, *args, **kwargs)

    return Spy


def unpadded(batch: dict[str, list[list[int]]], i: int, prefix: str = "") -> tuple[list[int], list[int]]:
    """Row i of a batch without its padding: (input_ids, completion_mask); padding is on the right."""
    n = sum(batch[f"{prefix}attention_mask"][i])
    assert batch[f"{prefix}attention_mask"][i] == [1] * n + [0] * (len(batch[f"{prefix}attention_mask"][i]) - n)
    return batch[f"{prefix}input_ids"][i][:n], batch[f"{prefix}completion_mask"][i][:n]


def test_load_for_trl_renames_columns_and_keeps_ids(shards: dict[str, str], tok: Any) -> None:
    dpo = load_for_trl(shards["dpo"], tokenizer=tok)
    assert {"prompt_ids", "chosen_ids", "rejected_ids"} <= set(dpo.column_names)
    assert [[r["prompt_ids"], r["chosen_ids"], r["rejected_ids"]] for r in dpo] == [
        [r["prompt_input_ids"], r["chosen_input_ids"], r["rejected_input_ids"]] for r in rows(shards["dpo"])]
    kto = load_for_trl(shards["kto"])
    assert [[r["prompt_ids"], r["completion_ids"], r["label"]] for r in kto] == [
        [r["prompt_input_ids"], r["completion_input_ids"], r["label"]] for r in rows(shards["kto"])]
    assert kto["label"] == [True, False, True, False, True, False]


def test_load_for_trl_refuses_other_kinds_and_tokenizers(shards: dict[str, str], root: Path) -> None:
    other = transformers.AutoTokenizer.from_pretrained(str(fixture("tokenizers", "qwen2.5")))
    with pytest.raises(PrepError, match="tokenized with tokenizer .*not with .*re-tokenize"):
        load_for_trl(shards["dpo"], tokenizer=other)
    sft = root / "sft"
    tokenize(Inputs([str(SAMPLES / "openai.jsonl")]), TOKENIZER, str(sft), template="chatml")
    with pytest.raises(PrepError, match="sft shards; load_for_trl reads dpo and kto shards"):
        load_for_trl(sft)
    broken = root / "broken"
    shutil.copytree(shards["kto"], broken)
    shard = next((broken / "data").glob("*.parquet"))
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(PrepError, match="fail verification .*checksum_mismatch"):
        load_for_trl(broken)


@pytest.mark.slow
def test_dpo_trainer_steps_on_the_shard_ids(shards: dict[str, str], model: str, tok: Any, root: Path) -> None:
    seen: list[dict[str, list[list[int]]]] = []
    trainer = spy(trl.DPOTrainer, seen)(model, args=config(trl.DPOConfig, root / "dpo-run", max_length=None),
                                        train_dataset=load_for_trl(shards["dpo"], tokenizer=tok), processing_class=tok)
    trainer.train()
    assert len(seen) == STEPS
    expected = rows(shards["dpo"])
    for step, batch in enumerate(seen):  # a batch is [chosen of each row..., rejected of each row...]
        for i in range(BATCH):
            row = expected[step * BATCH + i]
            for half, answer in ((0, row["chosen_input_ids"]), (BATCH, row["rejected_input_ids"])):
                ids, mask = unpadded(batch, half + i)
                assert ids == row["prompt_input_ids"] + answer
                assert mask == [0] * len(row["prompt_input_ids"]) + [1] * len(answer)
    first, _ = unpadded(seen[0], 0)
    assert tok.decode(first) == (
        "<|im_start|>user\nHello, can you tell me how cold San Francisco is today?<|im_end|>\n"
        "<|im_start|>assistant\nToday in San Francisco, it is not quite as cold as expected. Morning clouds will "
        "give way to sunshine, with a high near 68 °F (20 °C) and a low around 57 °F (14 °C).<|im_end|>\n")
    assert first.count(tok.eos_token_id) == 2  # the user turn's and the answer's <|im_end|>, none added
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == STEPS and all(math.isfinite(x) for x in losses)


@pytest.mark.slow
def test_kto_trainer_steps_on_the_shard_ids(shards: dict[str, str], model: str, tok: Any, root: Path) -> None:
    seen: list[dict[str, list[list[int]]]] = []
    trainer = spy(trl.KTOTrainer, seen)(model, args=config(trl.KTOConfig, root / "kto-run", max_length=None),
                                        train_dataset=load_for_trl(shards["kto"], tokenizer=tok), processing_class=tok)
    trainer.train()
    assert len(seen) == STEPS
    expected = rows(shards["kto"])
    for step, batch in enumerate(seen):
        part = expected[step * BATCH:(step + 1) * BATCH]
        assert batch["label"] == [r["label"] for r in part]
        for i, row in enumerate(part):
            ids, mask = unpadded(batch, i)
            assert ids == row["prompt_input_ids"] + row["completion_input_ids"]
            assert mask == [0] * len(row["prompt_input_ids"]) + [1] * len(row["completion_input_ids"])
            # KL pairs, as TRL builds them: this prompt with the previous row's completion in the batch
            kl, _ = unpadded(batch, i, "KL_")
            assert kl == row["prompt_input_ids"] + part[i - 1]["completion_input_ids"]
    first, _ = unpadded(seen[0], 0)
    assert tok.decode(first) == "<|im_start|>user\nThe sky is<|im_end|>\n<|im_start|>assistant\n blue.<|im_end|>\n"
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == STEPS and all(math.isfinite(x) for x in losses)


@pytest.mark.slow
def test_text_records_still_go_through_trl(shards: dict[str, str], model: str, tok: Any, root: Path) -> None:
    """A dataset of messages is tokenized by TRL as before; for these rows it gives the shards' ids."""
    records = [json.loads(line) for line in (SAMPLES / "openai_dpo.jsonl").read_text(encoding="utf-8").splitlines()]
    messages = datasets.Dataset.from_list([{"prompt": r["input"]["messages"], "chosen": r["preferred_output"],
                                            "rejected": r["non_preferred_output"]} for r in records])
    trainer = pretokenized(trl.DPOTrainer)(model, args=config(trl.DPOConfig, root / "text-run", max_length=None),
                                           train_dataset=messages, processing_class=tok)
    assert [[r["prompt_ids"], r["chosen_ids"], r["rejected_ids"]] for r in trainer.train_dataset] == [
        [r["prompt_input_ids"], r["chosen_input_ids"], r["rejected_input_ids"]] for r in rows(shards["dpo"])]


@pytest.mark.slow
def test_a_bos_template_keeps_one_bos(model: str, tok: Any, root: Path) -> None:
    """llama3 prompts start with <|begin_of_text|>; TRL's text path would add a second one (its tokenizer call
    adds special tokens). Only the collator's batches are read here, so the tiny model's vocabulary does not matter."""
    llama3 = fixture("tokenizers", "llama3")
    tokenize(Inputs([str(SAMPLES / "openai_dpo.jsonl")]), str(llama3), str(root / "dpo-llama3"), template="llama3",
             kind="dpo")
    bos, eot = 128000, 128009  # <|begin_of_text|>, <|eot_id|>
    trainer = pretokenized(trl.DPOTrainer)(model, args=config(trl.DPOConfig, root / "llama3-run", max_length=None),
                                           train_dataset=load_for_trl(root / "dpo-llama3"), processing_class=tok)
    batch = {k: v.tolist() for k, v in next(iter(trainer.get_train_dataloader())).items()}
    row = rows(str(root / "dpo-llama3"))[0]
    ids, _ = unpadded(batch, 0)
    assert ids == row["prompt_input_ids"] + row["chosen_input_ids"]
    assert ids[:2] == [bos, 128006] and ids.count(bos) == 1
    assert ids[-1] == eot and ids.count(eot) == 2  # the user turn's and the answer's


@pytest.mark.slow
def test_rows_longer_than_max_length_are_refused(shards: dict[str, str], model: str, tok: Any, root: Path) -> None:
    longest = max(len(r["prompt_input_ids"]) + max(len(r["chosen_input_ids"]), len(r["rejected_input_ids"]))
                  for r in rows(shards["dpo"]))
    with pytest.raises(PrepError, match=f"rows of up to {longest} tokens but max_length=32; TRL would cut"):
        pretokenized(trl.DPOTrainer)(model, args=config(trl.DPOConfig, root / "short", max_length=32),
                                     train_dataset=load_for_trl(shards["dpo"]), processing_class=tok)
