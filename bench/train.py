"""Bench `prep train` on packed shards beside TRL's SFTTrainer on the same conversations, unpacked and padded.

    python bench/train.py [--rows 512] [--hidden 64] [--layers 2] [--max-len 1024] [--batch-size 2] [--repeat 2]

Data: the first `--rows` conversations of the fixtures' alpaca (LLaMA-Factory demo), read by prep.
Model: a tiny llama from samples/make_tiny_model.py (`--hidden`, `--layers`), the project's tokenizer
(samples/tokenizer, whose chat template is Qwen-style chatml). CPU, one epoch each, LoRA with the same
settings (r 16, alpha 32, dropout 0.05, all-linear, lr 2e-4, cosine, seed 42):

- prep: `prep tokenize --template tokenizer` (the tokenizer's own template) and `prep pack --max-len`
  (bfd), then `prep.train.train` on the packed shards with `--batch-size` packed rows per step
  (no attention mask: position ids restart per document; on CPU the rows of a step are stacked, with
  a few padding positions where a row is shorter than the longest);
- TRL: SFTTrainer with its default data settings on a `messages` dataset of the same conversations:
  it applies the chat template and tokenizes itself (the same ids as prep's), truncates at 1024, no
  packing, batches of 8 padded to the longest row; it trains on every token (its default), where
  prep trains on the answers. Settings that are not about the data are set as prep runs them: one
  epoch, fp32, no activation checkpointing (TRL defaults to 3 epochs, bf16 and checkpointing).

prep's rows are cut at `--max-len` too (`--overflow truncate`), so both see the same tokens.

Both are timed around `trainer.train()` only (tokenizing and loading are reported apart). Real tokens
are the non-padding tokens of the batches the training steps receive; padding share is the padding
positions over all positions. Runs are repeated with the two interleaved; the best is reported.
Everything is written to a temporary folder.
"""

from __future__ import annotations

import os
import sys

# Python puts bench/ first on sys.path, where a script named like a module could stand in for it
# ruff: noqa: E402 - the imports below must come after this
sys.path[:] = [p for p in sys.path if os.path.realpath(p or ".") != os.path.dirname(os.path.realpath(__file__))]

import argparse
import importlib.util
import logging
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(os.environ.get("PREP_FIXTURES", ROOT.parent / "shared" / "fixtures"))
ALPACA = FIXTURES / "data" / "llamafactory" / "alpaca_en_demo.json"
TOKENIZER = ROOT / "samples" / "tokenizer"


def tiny_model(folder: Path, hidden: int, layers: int) -> Path:
    spec = importlib.util.spec_from_file_location("make_tiny_model", ROOT / "samples" / "make_tiny_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_tiny_model(folder, hidden=hidden, layers=layers)


def conversations(rows: int) -> list[list[dict[str, str]]]:
    """The first `rows` alpaca rows as prep reads them (canonical conversations)."""
    from prep.formats.inputs import Inputs, read_inputs

    out: list[list[dict[str, str]]] = []
    for batch in read_inputs(Inputs([str(ALPACA)])):
        out += [[{"role": m["role"], "content": m["content"]} for m in r["messages"]] for r in batch.items]
        if len(out) >= rows:
            break
    return out[:rows]


def prep_shards(chats: list[list[dict[str, str]]], folder: Path, max_len: int) -> tuple[Path, float]:
    """prep tokenize + prep pack on the conversations (as JSONL), and the seconds they took."""
    import json

    from prep.formats.inputs import Inputs
    from prep.stages.pack import pack
    from prep.stages.tokenize import tokenize

    data = folder / "chats.jsonl"
    data.write_text("".join(json.dumps({"messages": c}, ensure_ascii=False) + "\n" for c in chats), encoding="utf-8")
    start = time.perf_counter()
    # cut at max-len as TRL truncates at its max_length (1024 by default), so both train the same tokens
    tokenize(Inputs([str(data)]), str(TOKENIZER), str(folder / "unpacked"), template="tokenizer", max_len=max_len,
             overflow="truncate")
    pack(folder / "unpacked", folder / "packed", max_len)
    return folder / "packed", time.perf_counter() - start


def run_prep(shards: Path, model: Path, out: Path, batch_size: int) -> dict[str, Any]:
    from prep.trainer.train import TrainOptions, train

    report = train(str(shards), TrainOptions(model=str(model), output=str(out), batch_size=batch_size)).report
    return {"seconds": report["runtime_s"], "steps": report["steps"], "tokens": report["tokens"],
            "positions": report["batch_positions"], "loss_tokens": report["trained_tokens"]}


def run_trl(chats: list[list[dict[str, str]]], model_dir: Path, out: Path) -> dict[str, Any]:
    """TRL's SFTTrainer, default settings, on a `messages` dataset; counts what its training steps receive."""
    import datasets
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback
    from trl import SFTConfig, SFTTrainer

    counts = {"tokens": 0, "positions": 0, "loss_tokens": 0}

    class Counting(SFTTrainer):
        def training_step(self, model: Any, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
            counts["tokens"] += int(inputs["attention_mask"].sum())
            counts["positions"] += inputs["input_ids"].numel()
            counts["loss_tokens"] += int((inputs["labels"][:, 1:] != -100).sum())
            return super().training_step(model, inputs, *args, **kwargs)

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM")
    # what is not about the data is set as prep runs: one epoch, fp32 (TRL's default bf16 autocast is
    # slow on CPUs without bf16 units), no activation checkpointing (TRL's default), the LoRA recipe
    config = SFTConfig(output_dir=str(out), use_cpu=True, report_to="none", save_strategy="no", disable_tqdm=True,
                       num_train_epochs=1, bf16=False, activation_checkpointing=False, learning_rate=2e-4,
                       lr_scheduler_type="cosine", warmup_steps=0.03, seed=42, logging_steps=10)
    start = time.perf_counter()
    trainer = Counting(model=model, args=config, train_dataset=datasets.Dataset.from_list([{"messages": c} for c in chats]),
                       processing_class=tokenizer, peft_config=lora)
    prepare = time.perf_counter() - start
    trainer.remove_callback(PrinterCallback)
    start = time.perf_counter()
    result = trainer.train()
    return {"seconds": time.perf_counter() - start, "steps": result.global_step, "prepare": prepare, **counts}


def line(name: str, r: dict[str, Any]) -> str:
    pad = 1 - r["tokens"] / r["positions"]
    return (f"{name:<34} {r['steps']:>5} {r['seconds']:>8.2f} {r['tokens']:>10,} {pad:>8.1%} "
            f"{r['tokens'] / r['seconds']:>12,.0f} {r['positions'] / r['seconds']:>12,.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--max-len", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=2, help="packed rows per prep step")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    if not ALPACA.is_file():
        sys.exit(f"{ALPACA} not found: set PREP_FIXTURES to the shared fixtures folder")
    logging.disable(logging.WARNING)  # TRL's per-run advice and transformers' loading notes
    warnings.filterwarnings("ignore", category=FutureWarning)

    import datasets
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        folder = Path(tmp)
        model = tiny_model(folder / "model", args.hidden, args.layers)
        chats = conversations(args.rows)
        shards, prep_seconds = prep_shards(chats, folder, args.max_len)
        best: dict[str, dict[str, Any]] = {}
        for i in range(args.repeat):
            for name, r in (("prep", run_prep(shards, model, folder / f"p{i}", args.batch_size)),
                            ("trl", run_trl(chats, model, folder / f"t{i}"))):
                if name not in best or r["seconds"] < best[name]["seconds"]:
                    best[name] = r
        prep, trl = best["prep"], best["trl"]
        print(f"{len(chats)} alpaca conversations, tiny llama hidden {args.hidden} x {args.layers} layers "
              f"(vocab 2500), LoRA r16, CPU ({torch.get_num_threads()} threads), one epoch, best of {args.repeat}")
        print(f"prep: tokenize + pack {prep_seconds:.2f} s, packed rows of {args.max_len}, {args.batch_size} per step; "
              f"TRL: tokenizing in SFTTrainer() {trl['prepare']:.2f} s, batches of 8 conversations")
        print(f"{'':<34} {'steps':>5} {'seconds':>8} {'real tok':>10} {'padding':>8} {'real tok/s':>12} "
              f"{'positions/s':>12}")
        print(line("prep train (packed rows)", prep))
        print(line("TRL SFTTrainer (defaults, padded)", trl))
        ratio = (prep["tokens"] / prep["seconds"]) / (trl["tokens"] / trl["seconds"])
        print(f"real tokens/s, prep / TRL: {ratio:.2f}x; tokens with loss: prep {prep['loss_tokens']:,} "
              f"(answers), TRL {trl['loss_tokens']:,} (every token, its default)")


if __name__ == "__main__":
    main()
