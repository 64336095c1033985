"""The TRL bridge for preference shards: dpo and kto shards as a `datasets.Dataset` with TRL's
column names, and the trainer subclass that trains on those ids exactly as prep wrote them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.compute as pc

from prep.core.extras import require_train_extra
from prep.core.findings import PrepError
from prep.render.tokenizer import describe_tokenizer, fingerprint, same_tokenizer
from prep.shards.layout import read_manifest
from prep.shards.verify import require_verified

# TRL's DPOTrainer/KTOTrainer (1.x) name the tokenized columns differently from design §5.
TRL_COLUMNS: dict[str, dict[str, str]] = {
    "dpo": {"prompt_input_ids": "prompt_ids", "chosen_input_ids": "chosen_ids", "rejected_input_ids": "rejected_ids"},
    "kto": {"prompt_input_ids": "prompt_ids", "completion_input_ids": "completion_ids"},
}


def load_for_trl(folder: str | Path, tokenizer: Any = None) -> Any:
    """dpo or kto shards as a `datasets.Dataset` with the column names TRL's collators read
    (prompt_ids + chosen_ids/rejected_ids, or prompt_ids + completion_ids + label), in manifest order.

    The ids are the shards' own: each answer already ends with the template's end-of-turn token and
    the prompt carries the BOS if the template has one. Train with `pretokenized(DPOTrainer)` or
    `pretokenized(KTOTrainer)`: TRL's own trainers always tokenize text again. With `tokenizer` (a
    transformers tokenizer), shards made with another tokenizer are refused: their ids would mean other text.
    """
    manifest = read_manifest(folder)
    kind = manifest.get("kind")
    if kind not in TRL_COLUMNS:
        raise PrepError(f"{folder}: {kind} shards; load_for_trl reads dpo and kto shards (sft and pretrain "
                        "shards train with prep train, or load with datasets.load_dataset('parquet', ...))")
    if tokenizer is not None:
        theirs, mine = manifest.get("tokenizer") or {}, fingerprint(tokenizer)
        if not same_tokenizer(theirs, mine):
            raise PrepError(f"{folder}: the shards were tokenized with {describe_tokenizer(theirs)}, not with "
                            f"{describe_tokenizer(mine)}; re-tokenize with the model's tokenizer")
    if not manifest["shards"]:
        raise PrepError(f"{folder}: the shards hold no rows (counts: {manifest.get('counts')})")

    require_verified(folder)

    require_train_extra()
    return shard_rows(folder, manifest).rename_columns(TRL_COLUMNS[kind])


def shard_rows(folder: str | Path, manifest: dict[str, Any]) -> Any:
    """The shards' rows as stored, as one `datasets.Dataset` in manifest order (what every trainer reads)."""
    import datasets  # noqa: PLC0415 - train extra

    files = [str(Path(folder) / s["path"]) for s in manifest["shards"]]
    return datasets.load_dataset("parquet", data_files=files, split="train")


def pretokenized(trainer_cls: type) -> type:
    """A subclass of TRL's `DPOTrainer` or `KTOTrainer` that trains on `load_for_trl` ids as they are.

    TRL (checked on 1.16) re-tokenizes every dataset it is given: it needs prompt/chosen/rejected text,
    appends the EOS to plain-text answers and lets the tokenizer add a BOS, so already-tokenized rows fail
    (KeyError 'chosen'), and rendered text fed back in would get a second end-of-turn token (chatml) or
    BOS (llama3). This subclass leaves a `datasets.Dataset` that already has TRL's id columns as it is, so
    its collator concatenates exactly prompt_ids + chosen_ids (rejected_ids, completion_ids); other datasets
    go through TRL unchanged. For KTO it adds TRL's KL completions (each row's prompt with the previous
    row's completion, within a batch of per_device_train_batch_size), as TRL does after tokenizing. Rows
    longer than `args.max_length` are refused, not cut: TRL's collator would cut the answer and its
    end-of-turn token off.
    """

    class Pretokenized(trainer_cls):  # type: ignore[misc, valid-type]
        def _prepare_dataset(self, dataset: Any, processing_class: Any, args: Any, dataset_name: str) -> Any:
            import datasets  # noqa: PLC0415 - train extra

            names = set(dataset.column_names or [])
            answers = [c for c in ("chosen_ids", "rejected_ids", "completion_ids") if c in names]
            if not isinstance(dataset, datasets.Dataset) or "prompt_ids" not in names or not answers:
                return super()._prepare_dataset(dataset, processing_class, args, dataset_name)
            if getattr(self, "calculate_KL", False):
                dataset = dataset.map(_kl_completions, batched=True, batch_size=args.per_device_train_batch_size)
                answers.append("KL_completion_ids")
            if args.max_length is not None:
                table = dataset.with_format("arrow")
                prompt = pc.list_value_length(table["prompt_ids"]).to_numpy()
                longest = max(int((prompt + pc.list_value_length(table[c]).to_numpy()).max()) for c in answers)
                if longest > args.max_length:
                    raise PrepError(f"the {dataset_name} dataset has rows of up to {longest} tokens but "
                                    f"max_length={args.max_length}; TRL would cut their answers: set max_length="
                                    f"{longest} or None (tokenize with --max-len to bound the rows)")
            return dataset

    Pretokenized.__name__ = Pretokenized.__qualname__ = f"Pretokenized{trainer_cls.__name__}"
    return Pretokenized


def _kl_completions(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """TRL's mismatched pairs for KTO's KL estimate: completions rotated by one within the batch."""
    return {**batch, "KL_completion_ids": batch["completion_ids"][-1:] + batch["completion_ids"][:-1]}
