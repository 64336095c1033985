"""`prep train --method dpo|kto|orpo|reward`: TRL's preference trainers, fed the shards' ids as they are.

Each objective is TRL's own trainer (trl 1.16: DPOTrainer, KTOTrainer, RewardTrainer, and ORPOTrainer,
which lives in `trl.experimental.orpo`), given a dataset already in the columns its collator reads, so the
batches are the shards' ids: one BOS (the template's, in the prompt), no EOS added, the prompt/answer
boundary where the shards put it. What that needs from TRL beyond its public API:

- dpo, kto: `bridge.pretokenized` overrides the private `_prepare_dataset` (TRL re-tokenizes any dataset;
  trl#2368 declined tokenized input), keeping rows that already have `prompt_ids` + `chosen_ids` /
  `completion_ids` as they are;
- orpo: `trl.experimental` API; `tokenize_row` is overridden to lay the shard ids out as TRL's tokenizer
  would (prompt + answer, labels -100 on the prompt), without tokenizing;
- reward: nothing; RewardTrainer takes `chosen_ids`/`rejected_ids` (prompt + answer) as they are.

The reference model of DPO and KTO is TRL's: under LoRA/QLoRA the policy with its adapter switched off
(no second copy of the weights), under --full a frozen copy loaded from the model folder, or --ref-model.
"""

from __future__ import annotations

from typing import Any

from prep.core.findings import PrepError
from prep.core.options import DPO_LOSSES, KTO_LOSSES, METHOD_KINDS
from prep.shards.layout import read_manifest
from prep.trainer.bridge import TRL_COLUMNS, pretokenized, shard_rows


def method_for(kind: str, method: str | None) -> str:
    """The objective for shards of `kind`: the one asked for if it reads that kind, else the kind's default."""
    fits = [m for m, kinds in METHOD_KINDS.items() if kind in kinds]
    if method is None:
        return fits[0]
    if kind not in METHOD_KINDS[method]:
        takes = " or ".join(METHOD_KINDS[method])
        raise PrepError(f"--method {method} trains on {takes} shards, and these are {kind} shards (they train "
                        f"with --method {', '.join(fits)})")
    return method


def check_options(method: str, options: Any) -> None:
    """Refuse what the objective cannot take, naming the option."""
    if options.beta == 0 and method in ("dpo", "kto", "orpo"):
        raise PrepError(f"--beta 0: --method {method} takes a --beta above 0 (0 is for grpo: no KL term)")
    if options.loss_type is not None:
        losses = {"dpo": DPO_LOSSES, "kto": KTO_LOSSES}.get(method, ())
        if options.loss_type not in losses:
            which = f"one of {', '.join(losses)}" if losses else "no --loss-type"
            raise PrepError(f"--loss-type {options.loss_type}: --method {method} takes {which}")
    if options.margin_column and method != "reward":
        raise PrepError(f"--margin-column: --method {method} takes no margin (reward does)")
    if options.ref_model and method not in ("dpo", "kto"):
        raise PrepError(f"--ref-model: --method {method} has no reference model (dpo and kto have)")
    if method == "kto" and options.batch_size < 2 and (options.loss_type or "kto") == "kto":
        raise PrepError("--method kto estimates its KL term from each prompt with another row's completion in the "
                        "same batch: give --batch-size of at least 2")


def dataset(method: str, folder: str, margin_column: str | None = None) -> Any:
    """The shards as the method's TRL trainer reads them; the ids are not touched, only named and joined.
    A reward model's `margin_column` (carried into the shards as text) becomes TRL's numeric `margin`."""
    manifest = read_manifest(folder)
    data = shard_rows(folder, manifest)
    if method in ("dpo", "kto"):
        columns = TRL_COLUMNS[manifest["kind"]]
        return data.select_columns([*columns, *(["label"] if method == "kto" else [])]).rename_columns(columns)
    margins = _margins(data, margin_column, folder) if margin_column else None
    data = data.select_columns(["prompt_input_ids", "chosen_input_ids", "rejected_input_ids"])
    if method == "orpo":
        return data
    data = data.map(_whole_sequences, remove_columns=data.column_names)  # reward: the model scores prompt + answer
    return data.add_column("margin", margins) if margins is not None else data


def _margins(data: Any, column: str, folder: str) -> list[float]:
    if column not in data.column_names:
        raise PrepError(f"--margin-column {column}: {folder} carries no column {column} (tokenize with --keep-columns "
                        f"{column})")
    margins = []
    for value, ids in zip(data[column], data["ids"], strict=True):
        try:
            margins.append(float(value))
        except (TypeError, ValueError):
            raise PrepError(f"--margin-column {column}: row {ids[0]} has {value!r}, not a number") from None
    return margins


def _whole_sequences(row: dict[str, list[int]]) -> dict[str, list[int]]:
    return {"chosen_ids": row["prompt_input_ids"] + row["chosen_input_ids"],
            "rejected_ids": row["prompt_input_ids"] + row["rejected_input_ids"]}


def _orpo_row(row: dict[str, list[int]], *_: Any, **__: Any) -> dict[str, list[int]]:
    """A shard row laid out as ORPOTrainer.tokenize_row lays out text, from the ids as they are."""
    prompt = row["prompt_input_ids"]
    out = {"prompt_input_ids": prompt, "prompt_attention_mask": [1] * len(prompt)}
    for side in ("chosen", "rejected"):
        answer = row[f"{side}_input_ids"]
        out |= {f"{side}_input_ids": prompt + answer, f"{side}_attention_mask": [1] * (len(prompt) + len(answer)),
                f"{side}_labels": [-100] * len(prompt) + answer}
    return out


def trainer_class(method: str) -> type:
    """TRL's trainer of the method, able to take the shards' ids."""
    import trl  # noqa: PLC0415 - train extra

    if method == "dpo":
        return pretokenized(trl.DPOTrainer)
    if method == "kto":
        return pretokenized(trl.KTOTrainer)
    if method == "reward":
        return trl.RewardTrainer
    from trl.experimental.orpo import ORPOTrainer  # noqa: PLC0415 - train extra; experimental in trl 1.x
    from trl.experimental.utils import DPODataCollatorWithPadding  # noqa: PLC0415 - train extra

    class ShardORPOTrainer(ORPOTrainer):
        """ORPO on the shard rows; a tokenizer without a pad token (llama3) pads with its EOS, which the
        attention masks and -100 labels leave out, as DPO's and the reward trainer's collators do."""

        tokenize_row = staticmethod(_orpo_row)

        def __init__(self, *args: Any, processing_class: Any, data_collator: Any = None, **kwargs: Any) -> None:
            pad = processing_class.pad_token_id
            pad = processing_class.eos_token_id if pad is None else pad
            super().__init__(*args, processing_class=processing_class,
                             data_collator=data_collator or DPODataCollatorWithPadding(pad_token_id=pad), **kwargs)
            self.use_dpo_data_collator, self.padding_value = True, pad

    return ShardORPOTrainer


def config(method: str, options: Any, common: dict[str, Any]) -> Any:
    """The method's TRL config: the arguments every run shares (`common`) and the method's own."""
    import trl  # noqa: PLC0415 - train extra

    if method == "dpo":
        return trl.DPOConfig(**common, beta=options.beta, loss_type=[options.loss_type or "sigmoid"], max_length=None)
    if method == "kto":
        # KTO's KL pairs are each row's prompt with the previous row's completion in a batch: the order is fixed
        return trl.KTOConfig(**{**common, "train_sampling_strategy": "sequential"}, beta=options.beta,
                             loss_type=options.loss_type or "kto", max_length=None,
                             desirable_weight=options.desirable_weight, undesirable_weight=options.undesirable_weight)
    if method == "reward":
        return trl.RewardConfig(**common, max_length=None)
    from trl.experimental.orpo import ORPOConfig  # noqa: PLC0415 - train extra

    return ORPOConfig(**common, beta=options.beta, max_length=None, remove_unused_columns=False)


def counts(batch: dict[str, Any]) -> tuple[int, int, int]:
    """(real tokens, batch positions, tokens with a loss) of a preference batch: every sequence the policy
    runs (DPO's chosen and rejected halves, KTO's KL pairs too, ORPO's two sides); the answers (not KTO's
    KL pairs, run without gradients) are what has a loss; a reward model scores
    whole sequences, so all its tokens count as trained."""
    masks = [v for k, v in batch.items() if k.endswith("attention_mask") and not k.startswith("prompt")]
    tokens = sum(int(m.sum()) for m in masks)
    positions = sum(m.numel() for m in masks)
    trained = sum(int(v.sum()) for k, v in batch.items() if k.endswith("completion_mask") and not k.startswith("KL"))
    trained += sum(int((v != -100).sum()) for k, v in batch.items() if k.endswith("labels"))
    return tokens, positions, trained or tokens
