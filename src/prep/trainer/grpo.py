"""`prep train --method grpo`: TRL's GRPOTrainer on prompt shards, generating from the shards' own prompt ids.

TRL 1.16's GRPOTrainer renders prompts itself: `_tokenize_prompts` runs `apply_chat_template` on a
messages `prompt` or the tokenizer on a text one (which adds a BOS where the tokenizer does: a second one
after a template's). It has no pre-tokenized input (a `rollout_func` could return ids, but then generation
is ours too). So the seam is that one method: the dataset holds the shard's `prompt_input_ids`, its carried
columns and `prompt` (the ids decoded, for the reward functions and TRL's completion log); the subclass takes
each generation batch's `prompt_input_ids` as it arrives (`_generate_and_score_completions`, rows already
repeated --num-generations times) and returns them from `_tokenize_prompts`. Generation starts from those
ids, and the loss and the reference log-probs are computed on them padded on the left, as TRL does with
its own. Completions stop where the saved model will when served: the template's end-of-turn token, the
tokenizer's EOS and the model's own stop ids.

PPO: TRL 1.16 ships no PPOTrainer (neither `trl` nor `trl.experimental`), so there is no --method ppo.
"""

from __future__ import annotations

import contextlib
from typing import Any

from prep.core.findings import PrepError
from prep.render.templates import get_template
from prep.render.tokenizer import load_tokenizer
from prep.shards.layout import read_manifest
from prep.trainer.bridge import shard_rows
from prep.trainer.rewards import Reward, reward_functions
from prep.trainer.serving import eos_ids


def rewards(options: Any, manifest: dict[str, Any]) -> list[Reward]:
    """The --reward functions, checked against the shards' carried columns before anything loads."""
    return reward_functions(options.reward, list(manifest.get("carried") or []), options.max_completion_len)


def check_options(options: Any) -> None:
    """GRPO's batch is completions: each optimizer step's must hold whole groups of --num-generations."""
    per_step = options.batch_size * options.grad_accum
    if per_step % options.num_generations:
        raise PrepError(f"--method grpo: --batch-size x --grad-accum ({options.batch_size} x {options.grad_accum} = "
                        f"{per_step} completions) must be a multiple of --num-generations ({options.num_generations}), "
                        "each prompt's completions being compared with one another")
    if options.eval:
        raise PrepError("--eval: --method grpo does not evaluate yet (its evaluation generates and scores, which "
                        "prep train does not report); leave --eval out")


def dataset(folder: str, tokenizer: Any) -> Any:
    """The prompt shards as GRPOTrainer reads them: `prompt` (the ids decoded, special tokens kept), the shard's
    `prompt_input_ids` and its carried columns (TRL hands every column but `prompt` to the reward functions)."""
    manifest = read_manifest(folder)
    data = shard_rows(folder, manifest)
    data = data.select_columns(["prompt_input_ids", *(manifest.get("carried") or [])])
    return data.map(lambda rows: {"prompt": tokenizer.batch_decode(rows["prompt_input_ids"])}, batched=True)


def stop_ids(manifest: dict[str, Any], tokenizer: Any, existing: Any, model: str) -> list[int]:
    """The ids a completion ends with: those the saved model stops at when served (`serving.eos_ids`: the model's
    own, `existing`, the tokenizer's EOS, and the end-of-turn token every trained answer ends with as the manifest
    records it), so GRPO samples completions that end where served ones will. Shards made before manifests recorded
    that token have it from their template, built again by name with the tokenizer at `model` (a .jinja file is named
    there by its file name alone: found only beside it)."""
    template = manifest.get("template") or {}
    eot = template.get("eot")
    if eot is None and template.get("name"):
        tok = load_tokenizer(model)
        with contextlib.suppress(PrepError):
            eot = get_template(template["name"], tok.specials, tok.jinja).eot
    return eos_ids(existing, tokenizer, eot)


def trainer_class() -> type:
    """TRL's GRPOTrainer, generating from the dataset's `prompt_input_ids` instead of rendering `prompt`."""
    from trl import GRPOTrainer  # noqa: PLC0415 - train extra

    class ShardGRPOTrainer(GRPOTrainer):
        shard_prompt_ids: list[list[int]] | None = None  # the generation batch's, while it is generated

        def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
            self.shard_prompt_ids = [list(row["prompt_input_ids"]) for row in inputs]
            try:
                return super()._generate_and_score_completions(inputs)
            finally:
                self.shard_prompt_ids = None

        def _tokenize_prompts(self, prompts: list[Any]) -> tuple[list[list[int]], None, dict[str, Any]]:
            ids = self.shard_prompt_ids
            if ids is None or len(ids) != len(prompts):  # TRL called it from elsewhere: never with other ids
                raise RuntimeError("GRPOTrainer asked for prompt ids outside a generation batch of prompt shards")
            return ids, None, {}

    return ShardGRPOTrainer


def config(options: Any, common: dict[str, Any]) -> Any:
    """GRPOConfig: the common arguments, the generation settings, and --beta as the KL coefficient."""
    import trl  # noqa: PLC0415 - train extra

    return trl.GRPOConfig(**common, num_generations=options.num_generations,
                          max_completion_length=options.max_completion_len, temperature=options.temperature,
                          beta=options.beta, remove_unused_columns=False)


def counts(batch: dict[str, Any]) -> tuple[int, int, int]:
    """(real tokens, batch positions, tokens with a loss) of a generated step: prompts and completions, of which
    the completions are trained."""
    prompt, completion = batch["prompt_mask"], batch["completion_mask"]
    trained = int(completion.sum())
    return int(prompt.sum()) + trained, prompt.numel() + completion.numel(), trained
