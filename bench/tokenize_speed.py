"""Tokenizing speed and start-up, side by side in one run on the same data (design §11).

Data: the alpaca fixture x40 (--copies) as conversations, the qwen2.5 tokenizer, the chatml template, max-len
2048. Measured:

- start-up: `prep --help`, and `prep tokenize` on one row (wall and peak RSS of the whole process), beside
  `tokenizers.Tokenizer.from_file` of the same tokenizer alone in a fresh interpreter;
- throughput in tokens per second of output:
  - the ceiling: the Rust tokenizer's `encode_batch` alone on the already-rendered texts (in process);
  - `prep tokenize`, the command as a user runs it (wall time including interpreter start, imports and
    loading the tokenizer), 1 and 2 workers;
  - TRL's SFTTrainer dataset preparation (`assistant_only_loss`, tiny model built from a config): the JSONL
    loaded with `datasets` and the trainer constructed, which tokenizes (its ids and labels are checked
    equal to prep's);
  - LLaMA-Factory's `get_dataset` (sft, its qwen template, 2 preprocessing workers) on the same rows as an
    alpaca JSON, when `--llamafactory-python` names an interpreter where llamafactory is installed (it is not
    a dependency of prep; make its venv outside the repository, see LLAMAFACTORY_VENV below);
- peak RSS of `prep tokenize` on a quarter of the data and on x200 (it must stay flat).

This machine is shared, so timings are noisy: measurements are repeated (--repeat), the kinds interleaved, and
the best is reported with the median.

    python bench/tokenize_speed.py [--copies 40] [--repeat 3] [--skip-trl] [--llamafactory-python PATH]

LLaMA-Factory's venv (the CPU torch wheel; the torchvision and torchaudio that pip brings are CUDA builds that do
not load beside it: torchvision is removed, which LLaMA-Factory's text path does not import, and torchaudio, which
it imports, is left without its compiled extension, which it then does without):

    python3 -m venv /work/lf-venv && /work/lf-venv/bin/pip install torch==2.13.0 llamafactory==0.9.5 \
      && /work/lf-venv/bin/pip uninstall -y torchvision \
      && rm /work/lf-venv/lib/python3.11/site-packages/torchaudio/lib/*.so
    python bench/run.py --suite tokenize --llamafactory-python /work/lf-venv/bin/python
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
# LLaMA-Factory's own preprocessing, run in its interpreter: seconds inside get_dataset, rows and tokens out
LLAMAFACTORY = """
import json, sys, time
from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
from llamafactory.hparams import get_train_args
from llamafactory.model import load_tokenizer
model_args, data_args, training_args, _, _ = get_train_args(dict(
    model_name_or_path=sys.argv[1], stage="sft", do_train=True, finetuning_type="lora", dataset="bench",
    dataset_dir=sys.argv[2], template="qwen", cutoff_len=int(sys.argv[4]), output_dir=sys.argv[3],
    overwrite_cache=True, preprocessing_num_workers=2, report_to="none", use_cpu=True, bf16=False))
tokenizer = load_tokenizer(model_args)
template = get_template_and_fix_tokenizer(tokenizer["tokenizer"], data_args)
start = time.perf_counter()
data = get_dataset(template, model_args, data_args, training_args, stage="sft", **tokenizer)["train_dataset"]
seconds = time.perf_counter() - start
if len(sys.argv) > 5:  # its ids and labels, for the bench to compare with prep's
    data.select_columns(["input_ids", "labels"]).to_parquet(sys.argv[5])
print(json.dumps({"seconds": seconds, "rows": len(data), "tokens": sum(map(len, data["input_ids"]))}))
"""


def make_data(folder: Path, copies: int) -> Path:
    """The alpaca fixture as JSONL conversations (`messages`), `copies` times, each copy with its own ids."""
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


def process(*command: str) -> tuple[float, float, str]:
    """Run a command in a fresh process: its wall seconds, its peak RSS in MB (from wait4) and its stdout."""
    measure = ("import resource, subprocess, sys, time; start = time.perf_counter(); "
               "done = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
               "seconds = time.perf_counter() - start; sys.stderr.write(done.stderr); "
               "print(seconds, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, flush=True); "
               "print(done.stdout); sys.exit(done.returncode)")
    done = subprocess.run([sys.executable, "-c", measure, *command], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    head, _, out = done.stdout.partition("\n")
    seconds, rss = head.split()
    return float(seconds), int(rss) / 1024, out


def prep_cli(data: Path, workers: int, out: Path, tokenizer: Path = TOKENIZER) -> tuple[float, float]:
    seconds, rss, _ = process(sys.executable, "-m", "prep", "tokenize", str(data), "--tokenizer", str(tokenizer),
                              "--template", "chatml", "--max-len", str(MAX_LEN), "--workers", str(workers), "-o",
                              str(out), "-q")
    return seconds, rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-trl", action="store_true")
    parser.add_argument("--llamafactory-python", help="interpreter of a venv with llamafactory installed")
    args = parser.parse_args()
    if not ALPACA.exists() or not TOKENIZER.exists():
        sys.exit(f"fixtures not found under {FIXTURES} (set PREP_FIXTURES)")

    from prep.formats import read_records
    from prep.render.templates import get_template
    from prep.render.tokenizer import load_tokenizer

    work = Path(tempfile.mkdtemp(prefix="prep-bench-"))
    os.environ["PREP_CACHE"] = str(work / "cache")  # the first command computes the fingerprint, as a new user's
    data = make_data(work, args.copies)
    one = work / "one.jsonl"
    one.write_text(data.read_text(encoding="utf-8").split("\n", 1)[0] + "\n", encoding="utf-8")
    startup(one, work, args.repeat)

    tok = load_tokenizer(str(TOKENIZER))
    chatml = get_template("chatml", tok.specials)
    texts = [chatml.render(r["messages"]).text for b in read_records([str(data)]) for r in b.items]
    print(f"data: {len(texts):,} conversations ({data.stat().st_size / 1e6:.1f} MB JSONL); {os.cpu_count()} CPUs; "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    times: dict[str, list[float]] = {}
    tokens: dict[str, int] = {}
    ceiling_tokens = sum(len(e.ids) for e in tok.backend.encode_batch(texts[:100], add_special_tokens=False))
    for round_ in range(args.repeat):
        seconds, ceiling_tokens = timed(lambda: sum(len(e.ids) for e in tok.backend.encode_batch(
            texts, add_special_tokens=False)))
        times.setdefault("encode_batch (ceiling, in process)", []).append(seconds)
        for workers in (1, 2):
            name = f"prep tokenize CLI, {workers} worker{'s' if workers > 1 else ''} (wall, incl. start-up)"
            seconds, _ = prep_cli(data, workers, work / f"cli-{workers}")
            times.setdefault(name, []).append(seconds)
            print(f"  round {round_ + 1}: {name}: {seconds:.2f}s", flush=True)
    from prep.shards.layout import read_manifest

    prep_tokens = read_manifest(work / "cli-2")["tokens"]["total"]
    assert prep_tokens == ceiling_tokens, (prep_tokens, ceiling_tokens)  # the same text, the same tokens
    tokens.update(dict.fromkeys(times, prep_tokens))

    if not args.skip_trl:
        times["TRL SFTTrainer prep (assistant_only_loss)"] = [trl_prepare(data, work / "cli-1")]
        tokens["TRL SFTTrainer prep (assistant_only_loss)"] = prep_tokens
    if args.llamafactory_python:
        seconds, n = llamafactory(args.llamafactory_python, work, args.copies)
        times["LLaMA-Factory get_dataset (qwen template, 2 workers)"] = [seconds]
        tokens["LLaMA-Factory get_dataset (qwen template, 2 workers)"] = n
    else:
        print("LLaMA-Factory: skipped (give --llamafactory-python)")
    report(times, tokens)

    quarter, grown = make_data(work, max(1, args.copies // 4)), make_data(work, 200)
    rss = {path.name: prep_cli(path, 1, work / "rss")[1] for path in (quarter, grown)}
    print("peak RSS of prep tokenize (1 worker): " + ", ".join(f"{n}: {mb:.0f} MB" for n, mb in rss.items()))


def startup(one: Path, work: Path, repeat: int) -> None:
    """`prep --help`, `prep tokenize` of one row, and Tokenizer.from_file alone: best wall and peak RSS."""
    rows = {
        "prep --help": [sys.executable, "-m", "prep", "--help"],
        "prep tokenize, one row (qwen2.5, chatml)": [
            sys.executable, "-m", "prep", "tokenize", str(one), "--tokenizer", str(TOKENIZER), "--template", "chatml",
            "-o", str(work / "one"), "-q"],
        "tokenizers.Tokenizer.from_file(qwen2.5) alone": [
            sys.executable, "-c", f"from tokenizers import Tokenizer; Tokenizer.from_file({str(TOKENIZER / 'tokenizer.json')!r})"],
        "python -c pass": [sys.executable, "-c", "pass"],
    }
    best = {name: min((process(*command)[:2] for _ in range(max(repeat, 3))), key=lambda x: x[0])
            for name, command in rows.items()}
    print(f"\nstart-up, best of {max(repeat, 3)} (load average {os.getloadavg()[0]:.1f}):")
    for name, (seconds, rss) in best.items():
        print(f"  {name:48} {seconds:6.2f} s  {rss:6.0f} MB")
    one_row, alone = best["prep tokenize, one row (qwen2.5, chatml)"], best["tokenizers.Tokenizer.from_file(qwen2.5) alone"]
    print(f"  one row / from_file alone: {one_row[0] / alone[0]:.2f}x the time, {one_row[1] / alone[1]:.2f}x the RSS",
          flush=True)


def llamafactory(python: str, work: Path, copies: int) -> tuple[float, int]:
    """Seconds inside LLaMA-Factory's get_dataset on the alpaca rows x copies (its own JSON), and its tokens."""
    rows = json.loads(ALPACA.read_text(encoding="utf-8"))
    folder = llamafactory_folder(work / "llamafactory", rows * copies, {"file_name": "bench.json"})
    print("  LLaMA-Factory: preparing (this takes a while) ...", flush=True)
    done = subprocess.run(llamafactory_command(python, folder), capture_output=True, text=True, cwd=folder)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["rows"] == len(rows) * copies, out
    return out["seconds"], out["tokens"]


def llamafactory_folder(folder: Path, rows: list[dict[str, Any]], info: dict[str, Any]) -> Path:
    """A LLaMA-Factory dataset folder: `rows` as its dataset `bench` (bench.json), described by `info`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bench.json").write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    (folder / "dataset_info.json").write_text(json.dumps({"bench": info}), encoding="utf-8")
    return folder


def llamafactory_command(python: str, folder: Path, ids: Path | None = None) -> list[str]:
    """LLaMA-Factory's get_dataset on the folder's `bench` in `python` (its venv); prints seconds, rows and tokens,
    and writes its input_ids and labels to `ids` (parquet) when given."""
    return [python, "-c", LLAMAFACTORY, str(TOKENIZER), str(folder), str(folder / "out"), str(MAX_LEN),
            *([str(ids)] if ids else [])]


def trl_prepare(data: Path, shards: Path) -> float:
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


def report(times: dict[str, list[float]], tokens: dict[str, int]) -> None:
    rate = {name: tokens[name] / min(t) for name, t in times.items()}
    ceiling = rate["encode_batch (ceiling, in process)"]
    cli = rate["prep tokenize CLI, 2 workers (wall, incl. start-up)"]
    print(f"\nbest of {max(len(t) for t in times.values())} (median in brackets); x ceiling and x peer are tokens/s "
          "ratios")
    print(f"{'':58} {'seconds':>16} {'tokens':>11} {'tokens/s':>12} {'x ceiling':>10} {'prep 2w / it':>13}")
    for name, t in times.items():
        median = f"({statistics.median(t):.2f})" if len(t) > 1 else ""
        print(f"{name:58} {min(t):8.2f} {median:>7} {tokens[name]:11,} {rate[name]:12,.0f} {rate[name] / ceiling:10.2f} "
              f"{cli / rate[name]:13.2f}")


# bench/run.py's comparison: unique rows, each tool its own process -------------------------------------------------

GLAIVE = FIXTURES / "data" / "llamafactory" / "glaive_toolcall_en_demo.json"
SYSTEM = "You are a helpful assistant."
# the raw tokenizer on prep's own rendered texts, timed around encode_batch alone (as the issue measured it)
RAW = """
import json, sys, time
from prep.render.tokenizer import load_tokenizer
tok = load_tokenizer(sys.argv[1])
texts = json.loads(open(sys.argv[2], encoding="utf-8").read())
start = time.perf_counter()
encodings = tok.backend.encode_batch(texts, add_special_tokens=False)
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "tokens": sum(len(e.ids) for e in encodings)}))
"""
# The same texts through the tokenizer as prep runs it (render.segments): the copy without the NFC pass (every text
# here is NFC), whole vocabulary words looked up once shown exact, the larger word cache, no offsets. Not the
# baseline: it shows how much of prep's lead over the raw tokenizer is running the tokenizer otherwise.
RAW_AS_PREP = """
import json, sys, time
from prep.render.tokenizer import load_tokenizer
from prep.render.segments import Segments, _merged_back
tok = load_tokenizer(sys.argv[1])
segments = Segments(tok.backend, tok.files_key())
if segments.key is not None:  # the check not kept yet: made here, outside the timing
    segments._look_up_words(_merged_back(tok.backend))
texts = json.loads(open(sys.argv[2], encoding="utf-8").read())
fast = segments.bare or tok.backend
tokens = 0
start = time.perf_counter()
for k in range(0, len(texts), 1024):  # prep's batches, each let go before the next
    tokens += sum(len(e) for e in fast.encode_batch_fast(texts[k:k + 1024], add_special_tokens=False))
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "tokens": tokens}))
"""
TRL_PROCESS = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("bench_tokenize_speed", sys.argv[1])
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)
print(json.dumps({"seconds": bench.trl_prepare(bench.Path(sys.argv[2]), bench.Path(sys.argv[3]))}))
"""


def prep_malloc(env: dict[str, str]) -> str:
    """The allocator `prep tokenize` preloads in `env` on this machine (prep/__main__.py), or ""."""
    from prep.__main__ import with_fast_malloc

    restarted = with_fast_malloc(["prep", "tokenize"], env)
    return restarted["LD_PRELOAD"].split()[0] if restarted else ""


def unique_alpaca(folder: Path, copies: int) -> tuple[Path, list[dict[str, Any]]]:
    """The alpaca fixture as chats with a system prompt, `copies` times, every copy's user and assistant text tagged
    with its number: no two rows alike (so no cache keyed on whole rows or turns can skip one), the system prompt
    shared as in real data. Also the same rows as LLaMA-Factory alpaca rows (with their system prompt)."""
    from prep.formats import read_records

    records = [r for b in read_records([str(ALPACA)]) for r in b.items]
    path, lf = folder / f"alpaca_unique_x{copies}.jsonl", []
    with path.open("w", encoding="utf-8") as f:
        for k in range(copies):
            for r in records:
                messages = [{"role": m["role"], "content": f"[{k}] {m['content']}"} for m in r["messages"]]
                f.write(json.dumps({"id": f"{r['id']}#{k}", "messages": [{"role": "system", "content": SYSTEM},
                                                                        *messages]}, ensure_ascii=False) + "\n")
                lf.append({"instruction": messages[0]["content"], "input": "", "output": messages[1]["content"],
                           "system": SYSTEM})
    return path, lf


def glaive_shared_tools(folder: Path, copies: int, functions: int = 6) -> Path:
    """The glaive tool-call fixture (sharegpt) `copies` times, every row offered the same tools (the first
    `functions` distinct functions of the fixture: one agent's schema), every copy's human, gpt and tool-result
    turns tagged with its number so no two rows are alike."""
    rows = json.loads(GLAIVE.read_text(encoding="utf-8"))
    schema: dict[str, Any] = {}
    for row in rows:
        for fn in json.loads(row.get("tools") or "[]"):
            schema.setdefault(fn["name"], fn)
    tools = json.dumps(list(schema.values())[:functions], ensure_ascii=False)
    path = folder / f"glaive_shared_tools_x{copies}.jsonl"
    with path.open("w", encoding="utf-8") as f:
        for k in range(copies):
            for row in rows:
                turns = [{**t, "value": f"[{k}] {t['value']}"} if t["from"] in ("human", "gpt", "observation") else t
                         for t in row["conversations"]]
                f.write(json.dumps({"conversations": turns, "tools": tools}, ensure_ascii=False) + "\n")
    return path


def rendered(data: Path, out: Path, max_len: int) -> Path:
    """What `prep tokenize --template chatml` hands the tokenizer for each row of `data`, as a JSON list."""
    from prep.core.options import DEFAULT_DATE
    from prep.formats.inputs import Inputs, read_inputs
    from prep.render.encoder import Settings, build_encoder
    from prep.render.templates import chat_template
    from prep.render.tokenizer import load_tokenizer

    tok = load_tokenizer(str(TOKENIZER))
    encoder = build_encoder(tok, chat_template(tok, "chatml", {}, DEFAULT_DATE), Settings("sft", max_len=max_len))
    texts = [t for batch in read_inputs(Inputs([str(data)]), {}) for job in encoder.prepare(batch).items
             for t in job.texts]
    out.write_text(json.dumps(texts, ensure_ascii=False), encoding="utf-8")
    return out


def comparison(runner: Any, work: Path, quick: bool, trl: bool, llamafactory_python: str | None,
               log: Any = print) -> tuple[list[Any], Any]:
    """bench/run.py's tools for tokenizing, each its own process: on unique alpaca chats and on glaive rows sharing
    a tools schema, the raw tokenizer's encode_batch on prep's rendered texts (timed around it alone), the prep CLI
    with 1 and 2 workers (whole process), TRL's SFTTrainer preparation and LLaMA-Factory's get_dataset (whole
    process, alpaca only: their ids are checked against prep's); and start-up: one-row `prep tokenize` beside
    loading the tokenizer alone. `runner` is bench/run.py. Returns the tools and a function of them giving the
    lines under the table."""
    Tool = runner.Tool  # noqa: N806 - the runner's class
    python = sys.executable
    env = {**os.environ, "PREP_CACHE": str(work / "cache")}
    malloc = prep_malloc(env)
    malloc_name = Path(malloc).name.split(".so")[0].removeprefix("lib") if malloc else ""
    malloc_what = f", {malloc_name} preloaded" if malloc else ", glibc malloc (no faster one on this machine)"
    log(f"prep tokenize preloads {malloc or 'nothing (the system malloc)'}")
    alpaca, lf_rows = unique_alpaca(work, 1 if quick else 20)
    # max-len: alpaca's rows all fit 2048; glaive's longest row has 12k tokens (every row is kept, as by the raw tokenizer)
    sets = {"alpaca unique": (alpaca, MAX_LEN), "glaive shared tools": (glaive_shared_tools(work, 2 if quick else 40),
                                                                         16384)}
    tools: list[Any] = []
    shards: dict[str, dict[str, list[str]]] = {}
    lf_found: list[str] = []  # what the LLaMA-Factory check found, for the lines under the table
    for group, (data, max_len) in sets.items():
        log(f"{group}: {data.name}, rendering for the raw tokenizer ...")
        texts = rendered(data, work / f"{data.stem}.texts.json", max_len)
        raw = Tool("raw encode_batch", group, [python, "-c", RAW, str(TOKENIZER), str(texts)],
                   seconds=lambda r: json.loads(r.stdout)["seconds"], what="in process, encode_batch alone", env=env)
        raw.tokens = json.loads(runner.run_process(raw.command, env).stdout)["tokens"]  # also warms the page cache
        raw.baseline = raw.name
        tools.append(raw)
        same = None  # the raw tokenizer under the allocator prep preloads, and prep's runs paired with it
        if malloc:
            same = Tool(f"raw encode_batch, {malloc_name} preloaded", group, raw.command, seconds=raw.seconds,
                        tokens=raw.tokens, baseline=raw.name, what="in process, encode_batch alone",
                        env={**env, "LD_PRELOAD": malloc})
            tools.append(same)
        tools.append(Tool("raw encode_batch_fast, tuned as prep runs it", group,
                          [python, "-c", RAW_AS_PREP, str(TOKENIZER), str(texts)],
                          seconds=lambda r: json.loads(r.stdout)["seconds"], tokens=raw.tokens, baseline=raw.name,
                          what="in process, batches of 1,024 alone; no NFC pass, whole-word lookup, no offsets"
                          + (f", {malloc_name} preloaded" if malloc else ""),
                          env={**env, "LD_PRELOAD": malloc} if malloc else env))
        for workers, against in ((1, raw), (2, raw), (2, same)):
            if against is None:
                continue
            out = work / f"{data.stem}-cli-{workers}"
            name = f"prep tokenize CLI --workers {workers}" + (f", against raw under {malloc_name}" if against is same
                                                                  else "")
            tools.append(Tool(name, group, [python, "-m", "prep", "tokenize", str(data), "--tokenizer", str(TOKENIZER),
                                            "--template", "chatml", "--max-len", str(max_len), "--workers",
                                            str(workers), "-o", str(out), "-q"],
                              check=_same_shards(out, raw.tokens, shards.setdefault(group, {})), tokens=raw.tokens,
                              baseline=against.name, env=env, what=f"whole process{malloc_what}"))
        if group == "alpaca unique" and trl:
            tools.append(Tool("TRL SFTTrainer preparation", group, [
                python, "-c", TRL_PROCESS, str(Path(__file__).resolve()), str(data), str(work / f"{data.stem}-cli-1")],
                tokens=raw.tokens, baseline=raw.name, peer=True, what="whole process; ids and labels = prep's",
                env=env))
        if group == "alpaca unique" and llamafactory_python:
            folder = llamafactory_folder(work / "llamafactory", lf_rows, {"file_name": "bench.json", "columns": {
                "prompt": "instruction", "query": "input", "response": "output", "system": "system"}})
            ids = work / "llamafactory-ids.parquet"
            tools.append(Tool("LLaMA-Factory get_dataset", group, llamafactory_command(llamafactory_python, folder, ids),
                              check=_lf_same(ids, work / f"{data.stem}-cli-1", len(lf_rows), raw.tokens, lf_found),
                              tokens=raw.tokens, baseline=raw.name, peer=True,
                              what="whole process, qwen template, 2 workers; ids = prep's", env=env))
    one = work / "one.jsonl"
    one.write_text(alpaca.read_text(encoding="utf-8").split("\n", 1)[0] + "\n", encoding="utf-8")
    load_alone = "tokenizers.Tokenizer.from_file alone"
    startup = [Tool("prep tokenize, one row", "start-up", [
        python, "-m", "prep", "tokenize", str(one), "--tokenizer", str(TOKENIZER), "--template", "chatml", "-o",
        str(work / "one"), "-q"], env=env, baseline=load_alone),
        Tool(load_alone, "start-up", [
            python, "-c", f"from tokenizers import Tokenizer; Tokenizer.from_file({str(TOKENIZER / 'tokenizer.json')!r})"],
            env=env)]
    tools += startup

    def summary(measured: list[Any]) -> list[str]:
        prep_row, alone = (t.best for t in startup)
        more = [(run.wall - before.wall, run.rss - before.rss) for before, run in startup[0].pairs]
        lines = [f"One-row `prep tokenize` (whole process): {prep_row.wall:.2f} s and {prep_row.rss:.0f} MB peak RSS; "
                 f"loading the tokenizer alone {alone.wall:.2f} s and {alone.rss:.0f} MB: "
                 f"{prep_row.wall - alone.wall:+.2f} s, {prep_row.rss - alone.rss:+.0f} MB (best runs); each run "
                 f"right after a load alone: median {statistics.median(s for s, _ in more):+.2f} s "
                 f"({', '.join(f'{s:+.2f}' for s, _ in more)}), {statistics.median(m for _, m in more):+.0f} MB."]
        for group, digests in shards.items():
            lines.append(f"{group}: every prep CLI run ({sum(map(len, digests.values()))} runs, 1 and 2 workers) wrote "
                         f"the same shards; sha256 of each: {', '.join(next(iter(digests.values()))[0])}")
        return lines + lf_found[-1:]

    return tools, summary


def _same_shards(out: Path, tokens: int, seen: dict[str, list[str]]) -> Any:
    """A check of a prep CLI run: the raw tokenizer's tokens, and the same shards (sha256) as every other run."""
    from prep.shards.layout import read_manifest

    def check(_: Any) -> None:
        manifest = read_manifest(out)
        assert manifest["tokens"]["total"] == tokens, (manifest["tokens"]["total"], tokens)
        digests = [s["sha256"] for s in manifest["shards"]]
        assert all(d == digests for runs in seen.values() for d in runs), "prep runs wrote different shards"
        seen.setdefault(str(out), []).append(digests)

    return check


def _lf_same(ids: Path, shards: Path, rows: int, tokens: int, found: list[str]) -> Any:
    """A check of a LLaMA-Factory run: every row prepared, and every row's input_ids identical to prep's (its 1-worker
    shards). Labels: LLaMA-Factory's qwen template trains the newline after each answer's <|im_end|> (its assistant
    slot is `{{content}}<|im_end|>\\n`), prep's chatml the answer and <|im_end|> only; every other label must be
    equal. What it found goes to `found`."""

    def check(run: Any) -> None:
        import pyarrow.parquet as pq

        from prep.render.tokenizer import load_tokenizer
        from prep.shards.layout import read_manifest

        out = json.loads(run.stdout.strip().splitlines()[-1])
        assert out["rows"] == rows and out["tokens"] == tokens, (out, rows, tokens)
        theirs = pq.read_table(ids).to_pylist()
        ours = [r for s in read_manifest(shards)["shards"]
                for r in pq.read_table(shards / s["path"], columns=["input_ids", "labels"]).to_pylist()]
        assert len(theirs) == len(ours) == rows, (len(theirs), len(ours), rows)
        backend = load_tokenizer(str(TOKENIZER)).backend
        end, newline = backend.token_to_id("<|im_end|>"), backend.encode("\n", add_special_tokens=False).ids[0]
        newlines = 0
        for n, (a, b) in enumerate(zip(theirs, ours, strict=True)):
            assert a["input_ids"] == b["input_ids"], f"row {n}: LLaMA-Factory's input_ids differ from prep's"
            for i, (x, y) in enumerate(zip(a["labels"], b["labels"], strict=True)):
                if x != y:
                    assert y == -100 and x == newline and b["input_ids"][i - 1] == end, f"row {n}: labels differ at {i}"
                    newlines += 1
        found.append(f"LLaMA-Factory: input_ids identical to prep's on all {rows:,} rows ({tokens:,} tokens); labels "
                     f"identical but for {newlines:,} tokens, each the newline after an answer's <|im_end|>, which its "
                     "qwen template trains and prep's chatml does not.")

    return check


if __name__ == "__main__":
    main()
