"""Bench `prep train --method dpo` on dpo shards beside TRL's DPOTrainer fed the same pairs as text.

    python bench/train_dpo.py [--pairs 64] [--max-len 1024] [--hidden 64] [--layers 2] [--batch-size 4] [--repeat 2]

Data: the first `--pairs` pairs of the fixtures' dpo_en_demo (LLaMA-Factory demo) whose prompt + longer
answer fit `--max-len` tokens, read by prep (conversational prompt/chosen/rejected records).
Model: a tiny llama from samples/make_tiny_model.py, the project's tokenizer (samples/tokenizer),
whose own chat template (`--template tokenizer`) TRL applies too, so both train the same ids. CPU, one
epoch each, the same batch (`--batch-size` pairs per step), LoRA r 16 / alpha 32 / dropout 0.05 /
all-linear, lr 2e-4 cosine, warmup 3 %, seed 42, beta 0.1, sigmoid loss, fp32, no activation
checkpointing, no truncation (max_length None), the reference = the adapter switched off:

- prep: `prep tokenize --kind dpo` (timed apart), then `prep.trainer.train.train(method="dpo")`;
- TRL: DPOTrainer(train_dataset=the records as text, peft_config=LoRA): it applies the chat template
  and tokenizes in its constructor (timed apart), then trains.

Each side runs in its own process (so peak RSS is its own): tokens/s = the real (non-padding) tokens
of the policy's batches (chosen and rejected) over the seconds of `trainer.train()`; peak RSS is the
process's maximum resident set after training (libraries, model, data and training). Runs alternate
between the two; the best time is reported.
"""

from __future__ import annotations

import os
import sys

# Python puts bench/ first on sys.path, where a script named like a module could stand in for it
# ruff: noqa: E402 - the imports below must come after this
sys.path[:] = [p for p in sys.path if os.path.realpath(p or ".") != os.path.dirname(os.path.realpath(__file__))]

import argparse
import importlib.util
import json
import logging
import resource
import subprocess
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(os.environ.get("PREP_FIXTURES", ROOT.parent / "shared" / "fixtures"))
REGISTRY = FIXTURES / "data" / "llamafactory" / "dataset_info.json"
TOKENIZER = ROOT / "samples" / "tokenizer"
SETTINGS = {"lr": 2e-4, "scheduler": "cosine", "warmup_ratio": 0.03, "seed": 42, "beta": 0.1}


def rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def quiet() -> None:
    logging.disable(logging.WARNING)  # TRL's per-run advice and transformers' loading notes
    warnings.filterwarnings("ignore")
    import datasets
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()


def setup(folder: Path, pairs: int, max_len: int, hidden: int, layers: int) -> dict[str, Any]:
    """The tiny model, the dpo shards of the first pairs that fit, and those pairs as TRL text records."""
    from prep.formats.inputs import Inputs, read_inputs
    from prep.shards.reader import iter_tables
    from prep.stages.tokenize import tokenize

    spec = importlib.util.spec_from_file_location("make_tiny_model", ROOT / "samples" / "make_tiny_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.make_tiny_model(folder / "model", hidden=hidden, layers=layers)
    inputs = Inputs(registry=str(REGISTRY), datasets=["dpo_en_demo"])
    records = {r["id"]: r for batch in read_inputs(inputs) for r in batch.items}
    tokenize(inputs, str(TOKENIZER), str(folder / "all"), template="tokenizer", kind="dpo", max_len=max_len)
    fits = [i[0] for t in iter_tables(folder / "all") for i in t.column("ids").to_pylist()][:pairs]
    chosen = folder / "pairs.jsonl"
    chosen.write_text("".join(json.dumps({k: records[i][k] for k in ("prompt", "chosen", "rejected")}) + "\n"
                              for i in fits), encoding="utf-8")
    start = time.perf_counter()
    tokenize(Inputs([str(chosen)]), str(TOKENIZER), str(folder / "shards"), template="tokenizer", kind="dpo")
    return {"model": str(model), "shards": str(folder / "shards"), "text": str(chosen), "pairs": len(fits),
            "tokenize_s": time.perf_counter() - start}


def side_prep(model: str, shards: str, out: str, batch_size: int) -> dict[str, Any]:
    from prep.trainer.train import TrainOptions, train

    report = train(shards, TrainOptions(model=model, output=out, method="dpo", batch_size=batch_size,
                                        **SETTINGS)).report  # type: ignore[arg-type]
    return {"seconds": report["runtime_s"], "steps": report["steps"], "tokens": report["tokens"],
            "positions": report["batch_positions"], "loss": report["train_loss"], "peak_rss": rss()}


def side_trl(model_dir: str, text: str, out: str, batch_size: int) -> dict[str, Any]:
    import datasets
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback
    from trl import DPOConfig, DPOTrainer

    counts = {"tokens": 0, "positions": 0}

    class Counting(DPOTrainer):
        def training_step(self, model: Any, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
            counts["tokens"] += int(inputs["attention_mask"].sum())
            counts["positions"] += inputs["attention_mask"].numel()
            return super().training_step(model, inputs, *args, **kwargs)

    rows = [json.loads(line) for line in Path(text).read_text(encoding="utf-8").splitlines()]
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    model.config.use_cache = False
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM")
    config = DPOConfig(output_dir=out, use_cpu=True, report_to="none", save_strategy="no", disable_tqdm=True,
                       num_train_epochs=1, bf16=False, activation_checkpointing=False, max_length=None,
                       per_device_train_batch_size=batch_size, learning_rate=SETTINGS["lr"],
                       lr_scheduler_type=SETTINGS["scheduler"], warmup_steps=SETTINGS["warmup_ratio"],
                       seed=SETTINGS["seed"], data_seed=SETTINGS["seed"], beta=SETTINGS["beta"], logging_steps=1,
                       dataloader_num_workers=0)
    start = time.perf_counter()
    trainer = Counting(model=model, args=config, train_dataset=datasets.Dataset.from_list(rows),
                       processing_class=tokenizer, peft_config=lora)
    prepare = time.perf_counter() - start
    trainer.remove_callback(PrinterCallback)
    start = time.perf_counter()
    result = trainer.train()
    return {"seconds": time.perf_counter() - start, "steps": result.global_step, "prepare": prepare,
            "loss": result.training_loss, "peak_rss": rss(), **counts}


def one_side(args: argparse.Namespace) -> None:
    """--side: one run in this process; prints its figures as JSON."""
    quiet()
    if args.side == "prep":
        result = side_prep(args.model, args.shards, args.out, args.batch_size)
    else:
        result = side_trl(args.model, args.text, args.out, args.batch_size)
    print(json.dumps(result))


def spawn(side: str, data: dict[str, Any], out: Path, batch_size: int) -> dict[str, Any]:
    done = subprocess.run([sys.executable, __file__, "--side", side, "--model", data["model"], "--shards",
                           data["shards"], "--text", data["text"], "--out", str(out), "--batch-size", str(batch_size)],
                          capture_output=True, text=True, check=False)
    if done.returncode:
        sys.exit(f"{side} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def line(name: str, r: dict[str, Any]) -> str:
    pad = 1 - r["tokens"] / r["positions"]
    return (f"{name:<32} {r['steps']:>5} {r['seconds']:>8.2f} {r['tokens']:>10,} {pad:>8.1%} "
            f"{r['tokens'] / r['seconds']:>10,.0f} {r['peak_rss'] / 2**20:>9,.0f} {r['loss']:>8.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--max-len", type=int, default=1024)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--side", choices=("prep", "trl"), help=argparse.SUPPRESS)
    for hidden in ("--model", "--shards", "--text", "--out"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        one_side(args)
        return
    if not REGISTRY.is_file():
        sys.exit(f"{REGISTRY} not found: set PREP_FIXTURES to the shared fixtures folder")
    quiet()
    import torch

    with tempfile.TemporaryDirectory(prefix="bench-train-dpo-") as tmp:
        folder = Path(tmp)
        data = setup(folder, args.pairs, args.max_len, args.hidden, args.layers)
        best: dict[str, dict[str, Any]] = {}
        for i in range(args.repeat):
            for side in ("prep", "trl"):
                r = spawn(side, data, folder / f"{side}{i}", args.batch_size)
                if side not in best or r["seconds"] < best[side]["seconds"]:
                    best[side] = r
        prep, trl = best["prep"], best["trl"]
        print(f"{data['pairs']} dpo_en_demo pairs of <= {args.max_len} tokens, tiny llama hidden {args.hidden} x "
              f"{args.layers} layers (vocab 2500), LoRA r16, DPO sigmoid beta 0.1, {args.batch_size} pairs per step, "
              f"CPU ({torch.get_num_threads()} threads), one epoch, best of {args.repeat}")
        print(f"prep: tokenize {data['tokenize_s']:.2f} s (apart); TRL: tokenizing in DPOTrainer() "
              f"{trl['prepare']:.2f} s")
        print(f"{'':<32} {'steps':>5} {'seconds':>8} {'real tok':>10} {'padding':>8} {'tok/s':>10} "
              f"{'peak MiB':>9} {'loss':>8}")
        print(line("prep train --method dpo", prep))
        print(line("TRL DPOTrainer (text)", trl))
        print(f"tokens/s prep / TRL: {(prep['tokens'] / prep['seconds']) / (trl['tokens'] / trl['seconds']):.2f}x; "
              f"peak RSS prep / TRL: {prep['peak_rss'] / trl['peak_rss']:.2f}x")


if __name__ == "__main__":
    main()
