"""`--engine ray` beside the local engine on one machine (design §13), and what it would reach on a cluster.

Data: the alpaca fixture x200 (--copies) as JSONL conversations (the rows of bench/tokenize_speed.py), the
qwen2.5 tokenizer, chatml, max-len 2048. Measured, each as a user runs it (the CLI in a fresh process):

- `prep tokenize` with the local engine (1 process; and --workers 2), and with `--engine ray` on a fresh local
  Ray with 1 and 2 Ray Data workers: wall seconds, rows/s and tokens/s, and the peak RSS of the whole process
  tree (the driver, Ray's own processes and its workers, sampled every 0.1 s);
- the same with one row: the fixed start-up cost of each engine, so the per-row cost is (wall - start-up) / rows;
- the driver's own CPU seconds (the `prep` process alone, sampled from /proc), at one row and on the data: what
  it spends per row bounds the rows a single driver can take whatever the cluster's size. tokenize's workers
  write their shards themselves, so the driver only plans, adopts each part and commits; for the stages whose
  driver still writes (convert, dedup's second pass) the cost of unpickling and writing the rows is measured
  in process; and the planning scan of a JSONL file.

The engines run interleaved, --repeat times, and the best of each is kept (this machine is shared). From
those, the estimate for 8 and 64 nodes printed last states its assumptions.

    python bench/ray_engine.py [--copies 200] [--repeat 2] [--cores-per-node 16]

`comparison` is bench/run.py's `--suite ray`: the same input tokenized by the local engine and by Ray with 1 and
2 workers, each a fresh process (and a fresh local Ray), in rows/s, every run's rows checked against the others'.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import runpy
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

# bench/ stays off sys.path (see bench/validate.py): the tokenize bench is loaded by its path
SPEED = runpy.run_path(str(Path(__file__).with_name("tokenize_speed.py")), run_name="bench_tokenize_speed")
MAX_LEN, ROOT, TOKENIZER, make_data = SPEED["MAX_LEN"], SPEED["ROOT"], SPEED["TOKENIZER"], SPEED["make_data"]


def tree_rss(pid: int) -> int:
    """Bytes resident in `pid` and all its descendants (Ray's processes are children of the driver here)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        p = int(stat.parent.name)
        children.setdefault(int(fields[1]), []).append(p)
        rss[p] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        total += rss.get(p, 0)
        todo += children.get(p, [])
    return total


def own_cpu(pid: int) -> float:
    """CPU seconds process `pid` itself has used (not its children's), or 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(args: list[str]) -> tuple[float, float, str, float]:
    """`prep ARGS` in a fresh process: wall seconds, peak RSS of its process tree in MB, stderr, and the CPU seconds of
    the `prep` process alone (sampled every 0.1 s: the last sample before it ended)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "prep", *args], stderr=subprocess.PIPE, text=True, env=env)
    peak, cpu = [0], [0.0]

    def sample() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], tree_rss(proc.pid))
            cpu[0] = max(cpu[0], own_cpu(proc.pid))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, err = proc.communicate()
    seconds = time.perf_counter() - start
    sampler.join()
    if proc.returncode not in (0, 1):
        raise SystemExit(f"prep {' '.join(args)} failed:\n{err}")
    return seconds, peak[0] / 2**20, err, cpu[0]


def tokenize_args(data: Path, out: Path, engine: list[str]) -> list[str]:
    return ["tokenize", str(data), "--tokenizer", str(TOKENIZER), "--template", "chatml", "--max-len", str(MAX_LEN),
            "-o", str(out), "-q", *engine]


def driver_cost(shards: Path) -> tuple[float, float]:
    """Seconds per row a driver that writes the rows spends on what Ray hands it: unpickling each part's tables and
    writing them as shards (tokenize's driver did until its workers wrote their parts); and the rows."""
    import pyarrow.parquet as pq

    from prep.shards.layout import read_manifest
    from prep.shards.writer import ShardWriter

    manifest = read_manifest(shards)
    tables = [pq.read_table(shards / s["path"]) for s in manifest["shards"]]
    blobs = [pickle.dumps(t.slice(k, 16384), pickle.HIGHEST_PROTOCOL) for t in tables
             for k in range(0, t.num_rows, 16384)]
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        with ShardWriter(tmp, "sft", {}) as writer:
            for blob in blobs:
                writer.add(pickle.loads(blob))
        seconds = time.perf_counter() - start
    rows = sum(t.num_rows for t in tables)
    return seconds / rows, rows


def comparison(runner: Any, work: Path, quick: bool, log: Any = print, copies: int = 40) -> tuple[list[Any], Any]:
    """bench/run.py's tools for `--suite ray`: the unique alpaca chats of the tokenize suite (`copies` x 999 rows;
    2 copies with --quick), qwen2.5/chatml, `prep tokenize` CLI whole process: `--engine ray --ray-workers 1` (the
    baseline), `--ray-workers 2`, and the local engine (its default, one worker per core). Each Ray run starts its own local Ray of this
    machine's cores. Checks after every run: its rows (every column, in order) are the first run's, `prep verify`
    passes, and a Ray run's shards are the workers' (one per part: more than one, none over a part's 16,384 rows)."""
    Tool = runner.Tool  # noqa: N806 - the runner's class
    data, _ = SPEED["unique_alpaca"](work, 2 if quick else copies)
    rows = sum(1 for _ in data.open(encoding="utf-8"))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    group = f"tokenize {rows:,} unique chats"
    seen: dict[str, Any] = {}
    tools = []
    for name, extra in (("prep tokenize CLI --engine ray --ray-workers 1", ["--engine", "ray", "--ray-workers", "1"]),
                        ("prep tokenize CLI --engine ray --ray-workers 2", ["--engine", "ray", "--ray-workers", "2"]),
                        ("prep tokenize CLI (local engine, --workers 0: one per core)", [])):
        out = work / f"ray-{len(tools)}"
        tools.append(Tool(name, group, [sys.executable, "-m", "prep", *tokenize_args(data, out, extra)],
                          check=_same_rows(out, bool(extra), seen), rows=rows,
                          baseline="prep tokenize CLI --engine ray --ray-workers 1", env=env,
                          tree=True))  # Ray's daemons are the run's own load, not the machine's

    def summary(measured: list[Any]) -> list[str]:
        one, two, local = (t.seconds(t.best) for t in measured)
        return [f"ray: {rows:,} unique alpaca chats ({data.name}), qwen2.5/chatml, max-len {MAX_LEN}: Ray with 2 "
                f"workers {rows / two:,.0f} rows/s, {one / two:.2f}x 1 worker ({rows / one:,.0f} rows/s); the local "
                f"engine {rows / local:,.0f} rows/s. Every run's rows are the same and pass `prep verify`; the Ray "
                f"runs' shards were written by the workers, one per part ({' and '.join(seen['shards'].values())} shards)."]

    return tools, summary


def _same_rows(out: Path, on_ray: bool, seen: dict[str, Any]) -> Any:
    """A check of a run: the rows in its shards are the first checked run's, `prep verify` passes, and under Ray the
    shards are one per part (the workers'); `seen` keeps the first rows and the shard counts."""
    import pyarrow as pa

    from prep.files.pieces import BATCH_ROWS
    from prep.shards.layout import read_manifest
    from prep.shards.reader import iter_tables
    from prep.shards.verify import verify

    def check(_: Any) -> None:
        table = pa.concat_tables(iter_tables(out))
        assert seen.setdefault("rows", table).equals(table), f"{out}: not the rows of the other runs"
        assert verify(out).exit_code == 0, f"{out}: prep verify failed"
        shards = read_manifest(out)["shards"]
        if on_ray:
            assert len(shards) > 1 and all(s["rows"] <= 16 * BATCH_ROWS for s in shards), f"{out}: not one per part"
            seen.setdefault("shards", {})[str(out)] = str(len(shards))

    return check


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, default=200)
    parser.add_argument("--cores-per-node", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=2)
    a = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = make_data(work, a.copies)
        one = work / "one.jsonl"
        one.write_text(data.open(encoding="utf-8").readline(), encoding="utf-8")
        engines = {"local, 1 process": [], "local, --workers 2": ["--workers", "2"],
                   "ray, 1 worker": ["--engine", "ray", "--ray-workers", "1"],
                   "ray, 2 workers": ["--engine", "ray", "--ray-workers", "2"]}
        print(f"data: {data.name}, {data.stat().st_size / 2**20:.0f} MB; `uptime`: {os.getloadavg()}")
        results: dict[str, tuple[float, float, int, int, float, float, float]] = {}
        for attempt in range(a.repeat):  # the engines interleaved, the best of each kept: this machine is shared
            for name, extra in engines.items():
                start_up, _, _, cpu_one = run(tokenize_args(one, work / "one", extra))
                seconds, rss, _, cpu = run(tokenize_args(data, work / name.replace(" ", "_"), extra))
                manifest = json.loads((work / name.replace(" ", "_") / "manifest.json").read_text())
                rows, tokens = manifest["counts"]["read"], manifest["tokens"]["total"]
                print(f"  {attempt + 1}: {name:20} {seconds:7.1f} s ({start_up:4.1f} s start-up) {rows / seconds:8,.0f} "
                      f"rows/s {tokens / seconds:10,.0f} tok/s; after start-up {rows / (seconds - start_up):8,.0f} "
                      f"rows/s; peak RSS {rss:6.0f} MB; the prep process's own CPU {cpu:5.1f} s ({cpu_one:4.1f} s "
                      f"for one row); load {os.getloadavg()[0]:.1f}", flush=True)
                if name not in results or seconds < results[name][0]:
                    results[name] = (seconds, start_up, rows, tokens, rss, cpu, cpu_one)
        print("best of each:")
        for name, (seconds, start_up, rows, tokens, rss, *_) in results.items():
            print(f"  {name:20} {seconds:7.1f} s ({start_up:4.1f} s start-up) {rows / seconds:8,.0f} rows/s "
                  f"{tokens / seconds:10,.0f} tok/s; peak RSS {rss:6.0f} MB")
        seen: dict[str, Any] = {}
        for name, extra in engines.items():
            _same_rows(work / name.replace(" ", "_"), "ray" in extra, seen)(None)
        print("  the four outputs hold the same rows and pass prep verify; the Ray runs' shards are the workers', one "
              f"per part ({' and '.join(seen['shards'].values())} shards)")
        base = results["local, 1 process"]
        for name in ("ray, 1 worker", "ray, 2 workers"):
            s, up, rows, _, rss, *_ = results[name]
            print(f"  {name}: {s / base[0]:.2f}x the local wall time, start-up +{up - base[1]:.1f} s, "
                  f"per row {(s - up) / rows * 1e6:.0f} us vs local {(base[0] - base[1]) / rows * 1e6:.0f} us, "
                  f"RSS {rss - base[4]:+.0f} MB")
        per_row_writing, rows = driver_cost(work / "local,_1_process")
        _, _, rows, _, _, cpu, cpu_one = results["ray, 2 workers"]
        per_row_driver = max(cpu - cpu_one, 1e-3) / rows  # at least a millisecond: no zero to divide by
        from prep.files.pieces import pieces

        start = time.perf_counter()
        pieces(str(data))
        scan = data.stat().st_size / (time.perf_counter() - start) / 2**20
        worker_us = (results["ray, 1 worker"][0] - results["ray, 1 worker"][1]) / rows * 1e6
        print(f"  tokenize's driver (2 workers): {cpu:.1f} CPU s on {rows:,} rows, {cpu_one:.1f} s on one row: at most "
              f"{per_row_driver * 1e6:.2f} us per row, so at least {1 / per_row_driver:,.0f} rows/s (an upper bound on "
              "its cost: Ray's own threads in it take CPU for as long as the run lasts); a driver that writes the "
              f"rows (convert, dedup) {per_row_writing * 1e6:.1f} us per row to unpickle and write them "
              f"({1 / per_row_writing:,.0f} rows/s); planning scan of the JSONL {scan:,.0f} MB/s")
        print(f"estimate (one driver; a worker per core; {a.cores_per_node} cores a node; a worker's per-row cost as "
              f"measured here with 1 Ray worker, {worker_us:.0f} us; the parts read from shared storage at no cost):")
        for nodes in (8, 64):
            cores = nodes * a.cores_per_node
            cluster = cores / (worker_us / 1e6)
            print(f"  {nodes:3} nodes, {cores:5} workers: the workers {cluster:12,.0f} rows/s; tokenize's driver takes "
                  f"at least {1 / per_row_driver:,.0f} rows/s -> at least {min(cluster, 1 / per_row_driver):,.0f} "
                  f"rows/s (a driver that wrote the rows: at most {min(cluster, 1 / per_row_writing):,.0f})")

if __name__ == "__main__":
    main()
