"""Tokenizing speed, side by side in one run on the same data (design §11).

Data: the alpaca fixture x20 as conversations (JSONL), the qwen2.5 tokenizer, the chatml template,
max-len 2048. Measured, in tokens per second of output:

- prep tokenize, 1 and 2 workers, JSONL -> shards (Python API, tokenizer already loaded), and the
  `prep tokenize` command as a user runs it (wall time including interpreter start, imports and
  loading the tokenizer);
- the ceiling: the Rust tokenizer's `encode_batch` alone on the already-rendered texts;
- TRL's SFTTrainer dataset preparation (`assistant_only_loss`, tiny model built from a config): the
  JSONL loaded with `datasets` and the trainer constructed, which tokenizes;
- LLaMA-Factory's `get_dataset`, when `llamafactory` is importable;
- peak RSS of the `prep tokenize` command on a quarter of the data and on all of it (it must stay flat).

This machine is shared, so timings are noisy: every measurement is repeated (--repeat) with the
kinds interleaved, and the best and the median are reported.

    python bench/tokenize_speed.py [--copies 20] [--repeat 3] [--skip-trl]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(os.environ.get("PREP_FIXTURES", ROOT.parent / "shared" / "fixtures"))
ALPACA = FIXTURES / "data" / "llamafactory" / "alpaca_en_demo.json"
TOKENIZER = FIXTURES / "tokenizers" / "qwen2.5"
MAX_LEN = 2048
# prep's chatml with TRL's {% generation %} markers around what prep trains (answer + <|im_end|>), so
# TRL's assistant_only_loss masks the same tokens (checked below).
CHATML_GENERATION = (
    "{%- for message in messages %}{%- if message.role == 'assistant' %}{{- '<|im_start|>assistant\\n' }}"
    "{% generation %}{{- message.content + '<|im_end|>' }}{% endgeneration %}{{- '\\n' }}{%- else %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}")


def make_data(folder: Path, copies: int) -> Path:
    from prep.formats import read_records

    records = [r for b in read_records([str(ALPACA)]) for r in b.items]
    path = folder / f"alpaca_x{copies}.jsonl"
    with path.open("w", encoding="utf-8") as f:
        for k in range(copies):
            for r in records:
                f.write(json.dumps({"id": f"{r['id']}#{k}", "messages": r["messages"]}, ensure_ascii=False) + "\n")
    return path


def timed(fn: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-trl", action="store_true")
    args = parser.parse_args()
    if not ALPACA.exists() or not TOKENIZER.exists():
        sys.exit(f"fixtures not found under {FIXTURES} (set PREP_FIXTURES)")

    from prep.formats import read_records
    from prep.formats.inputs import Inputs
    from prep.render.templates import get_template
    from prep.render.tokenizer import load_tokenizer
    from prep.stages.tokenize import tokenize

    work = Path(tempfile.mkdtemp(prefix="prep-bench-"))
    data = make_data(work, args.copies)
    load_s, tok = timed(lambda: load_tokenizer(str(TOKENIZER)))
    chatml = get_template("chatml", tok.specials)
    conversations = [r["messages"] for b in read_records([str(data)]) for r in b.items]
    texts = [chatml.render(c).text for c in conversations]
    print(f"data: {len(texts):,} conversations ({data.stat().st_size / 1e6:.1f} MB JSONL); tokenizer {TOKENIZER.name} "
          f"loaded in {load_s:.1f}s; {os.cpu_count()} CPUs", flush=True)

    times: dict[str, list[float]] = {}
    tokens = 0

    def ceiling() -> int:
        return sum(len(e.ids) for e in tok.backend.encode_batch(texts, add_special_tokens=False))

    def prep(workers: int) -> int:
        result = tokenize(Inputs([str(data)]), tok, str(work / f"shards-{workers}"), template="chatml",
                          max_len=MAX_LEN, workers=workers)
        assert result.tally.rejected_total == 0, result.tally.summary()
        return result.manifest["tokens"]["total"]

    runs = {"encode_batch (ceiling)": ceiling, "prep tokenize, 1 worker": lambda: prep(1),
            "prep tokenize, 2 workers": lambda: prep(2)}
    for round_ in range(args.repeat):
        for name, fn in runs.items():
            seconds, n = timed(fn)
            times.setdefault(name, []).append(seconds)
            tokens = tokens or n
            assert n == tokens, (name, n, tokens)
            print(f"  round {round_ + 1}: {name}: {seconds:.2f}s", flush=True)

    for workers in (1, 2):
        seconds, _ = timed(lambda workers=workers: cli(data, workers, work))
        times[f"prep tokenize CLI, {workers} worker{'s' if workers > 1 else ''} (wall, incl. start-up)"] = [seconds]
    quarter = make_data(work, max(1, args.copies // 4))
    rss = {path.name: cli(path, 1, work) for path in (quarter, data)}
    print("peak RSS of prep tokenize (1 worker): " + ", ".join(f"{n}: {mb:.0f} MB" for n, mb in rss.items()))

    if not args.skip_trl:
        seconds = trl_prepare(data, tok, work / "shards-1")
        times["TRL SFTTrainer prep (assistant_only_loss)"] = [seconds]
    try:
        import llamafactory  # noqa: F401
        print("llamafactory is importable but its get_dataset needs a full training config; not measured")
    except ImportError:
        print("LLaMA-Factory: skipped (llamafactory is not installed)")

    report(times, tokens)


def cli(data: Path, workers: int, work: Path) -> float:
    """Run the `prep tokenize` command as a user would; its peak RSS in MB."""
    command = [sys.executable, "-m", "prep", "tokenize", str(data), "--tokenizer", str(TOKENIZER), "--template",
               "chatml", "--max-len", str(MAX_LEN), "--workers", str(workers), "-o", str(work / "cli"), "-q"]
    measure = ("import resource, subprocess, sys; done = subprocess.run(sys.argv[1:], capture_output=True); "
               "sys.stderr.buffer.write(done.stderr); "
               "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(done.returncode)")
    done = subprocess.run([sys.executable, "-c", measure, *command], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return int(done.stdout.split()[-1]) / 1024


def trl_prepare(data: Path, tok: Any, shards: Path) -> float:
    """Seconds for TRL to load the JSONL and prepare it; checks its ids and labels equal prep's."""
    import datasets
    import pyarrow.parquet as pq
    from datasets.utils.logging import disable_progress_bar
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM
    from trl import SFTConfig, SFTTrainer

    from prep.shards.layout import read_manifest

    disable_progress_bar()
    hf = AutoTokenizer.from_pretrained(str(TOKENIZER))
    hf.chat_template = CHATML_GENERATION
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=len(hf), hidden_size=16, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1, intermediate_size=32))
    cache = Path(tempfile.mkdtemp(prefix="prep-bench-trl-"))
    config = SFTConfig(output_dir=str(cache / "out"), assistant_only_loss=True, max_length=MAX_LEN, report_to="none",
                       use_cpu=True, bf16=False)

    def prepare() -> Any:
        dataset = datasets.load_dataset("json", data_files=str(data), split="train", cache_dir=str(cache))
        return SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=hf).train_dataset

    print("  TRL: preparing (this takes a while) ...", flush=True)
    seconds, prepared = timed(prepare)
    manifest = read_manifest(shards)
    ours = pq.read_table(shards / manifest["shards"][0]["path"]).slice(0, 200).to_pylist()
    theirs = prepared.select(range(200))
    for a, b in zip(ours, theirs, strict=True):
        assert a["input_ids"] == b["input_ids"] and a["labels"] == b["labels"], "TRL and prep disagree"
    print("  TRL's input_ids and labels equal prep's (first 200 rows)", flush=True)
    return seconds


def report(times: dict[str, list[float]], tokens: int) -> None:
    best = {name: min(t) for name, t in times.items()}
    ceiling = tokens / best["encode_batch (ceiling)"]
    trl = best.get("TRL SFTTrainer prep (assistant_only_loss)")
    print(f"\n{tokens:,} tokens; best of {max(len(t) for t in times.values())} (median in brackets)")
    print(f"{'':58} {'seconds':>16} {'tokens/s':>12} {'x ceiling':>10} {'x TRL':>8}")
    for name, t in times.items():
        rate = tokens / best[name]
        median = f"({statistics.median(t):.2f})" if len(t) > 1 else ""
        vs_trl = f"{rate / (tokens / trl):8.1f}" if trl else ""
        print(f"{name:58} {best[name]:8.2f} {median:>7} {rate:12,.0f} {rate / ceiling:10.2f} {vs_trl}")


if __name__ == "__main__":
    main()
