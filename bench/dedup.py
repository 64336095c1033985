"""prep dedup on N short chat rows (default 1M) with planted exact and near duplicates: end to end through the
CLI (exact only, and exact + near at 0.8), the dedup work alone (fingerprints and the decision, reading left
out), peak RSS, and beside them, on the same texts, axolotl's exact dedup (sha256 of each row's text in a
set) and the MinHash libraries (datasketch, rensa's own deduplicator) when installed.

    python bench/dedup.py --rows 1000000            # data made in a temporary folder, removed afterwards
    python bench/dedup.py --rows 100000 --peers     # also datasketch / rensa (pip install datasketch)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from prep.formats.inputs import Inputs, read_inputs
from prep.overlap import near
from prep.overlap.text import Compare, compared
from prep.stages.dedup import Fingerprints, duplicates, fingerprint_batch

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT.parent / "shared" / "fixtures" / "data" / "llamafactory" / "alpaca_en_demo.json"


def make_rows(path: Path, n: int, seed: int = 0) -> tuple[int, int]:
    """n chat rows of 6-14 + 8-20 words; 1% exact copies and 1% near copies (one word changed, shouted)."""
    rng = random.Random(seed)
    text = json.loads(FIXTURE.read_text(encoding="utf-8")) if FIXTURE.exists() else []
    words = sorted({w for r in text for w in (r["instruction"] + " " + r["output"]).split()}) or \
        [f"w{i}" for i in range(20_000)]
    rows: list[str] = []
    exact = nearby = 0
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            if i > 100 and i % 100 == 0:
                rows_back = rows[rng.randrange(len(rows))]
                f.write(rows_back)
                exact += 1
                continue
            if i > 100 and i % 100 == 50:
                row = json.loads(rows[rng.randrange(len(rows))])
                answer = row["messages"][1]["content"].split()
                answer[len(answer) // 2] = "zebra"
                row["messages"][1]["content"] = " ".join(answer).upper()
                f.write(json.dumps(row) + "\n")
                nearby += 1
                continue
            q = " ".join(rng.choice(words) for _ in range(rng.randint(6, 14)))
            a = " ".join(rng.choice(words) for _ in range(rng.randint(8, 20)))
            line = json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}) + "\n"
            f.write(line)
            if len(rows) < 50_000:
                rows.append(line)
    return exact, nearby


def cli(*args: str) -> tuple[float, float]:
    """Seconds and peak RSS (MB) of `prep ARGS` in a fresh process."""
    code = ("import resource, runpy, sys; sys.argv = ['prep', *sys.argv[1:]]\n"
            "try:\n    runpy.run_module('prep', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)")
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    return seconds, int(done.stderr.strip().splitlines()[-1]) / 1024


def work_alone(path: Path, threshold: float | None) -> tuple[float, float, int]:
    """Seconds of the dedup work (fingerprints + decision; reading excluded), reading seconds, rows removed."""
    compare, work, reading, keys, sketches, start = Compare(), 0.0, 0.0, [], [], time.perf_counter()
    for batch in read_inputs(Inputs([str(path)])):
        t = time.perf_counter()
        reading += t - start
        k, s = fingerprint_batch(batch.items, compare, threshold)
        keys.append(k)
        if s is not None:
            sketches.append(s)
        start = time.perf_counter()
        work += start - t
    t = time.perf_counter()
    fp = Fingerprints(np.concatenate(keys), near.concat(sketches) if sketches else None, [str(path)],
                      np.zeros(sum(map(len, keys)), np.int64))
    twin, _ = duplicates(fp, threshold)
    return work + time.perf_counter() - t, reading, int(np.count_nonzero(twin >= 0))


def peers(path: Path, limit: int) -> None:
    texts = []
    for batch in read_inputs(Inputs([str(path)])):
        texts += [compared(r, Compare()) for r in batch.items]
        if len(texts) >= limit:
            break
    texts = texts[:limit]
    start = time.perf_counter()
    seen: set[str] = set()
    for t in texts:  # axolotl's deduplicate_and_log_datasets: sha256 of each row's string in a set
        seen.add(hashlib.sha256(t.encode()).hexdigest())
    print(f"  axolotl-style exact (sha256 + set), texts in memory: {len(texts) / (time.perf_counter() - start):,.0f} rows/s")
    start = time.perf_counter()
    keys = np.frombuffer(b"".join(near.exact_keys(texts)), np.uint8).reshape(-1, 16)
    near.first_copies(keys)
    print(f"  prep exact keys + groups, texts in memory: {len(texts) / (time.perf_counter() - start):,.0f} rows/s")
    start = time.perf_counter()
    sk = near.concat(near.sketch(texts[i:i + 4096], 0.8) for i in range(0, len(texts), 4096))
    found = near.keep_first(len(texts), near.near_pairs(sk, 0.8))[0]
    print(f"  prep near (sketch + bands + pairs), texts in memory: {len(texts) / (time.perf_counter() - start):,.0f} "
          f"rows/s, {int(np.count_nonzero(found >= 0))} near")
    try:
        import rensa

        start = time.perf_counter()
        dedup = rensa.RMinHashDeduplicator(threshold=0.8, num_perm=128, use_lsh=True, num_bands=16, seed=1)
        for i in range(0, len(texts), 4096):
            for k, m in enumerate(rensa.RMinHash.from_token_sets([near.shingles(t) or [""] for t in texts[i:i + 4096]],
                                                                 num_perm=128, seed=1)):
                if not dedup.get_duplicates(m):
                    dedup.add(str(i + k), m)
        print(f"  rensa RMinHashDeduplicator (its LSH, 16 bands): {len(texts) / (time.perf_counter() - start):,.0f} rows/s")
    except ImportError:
        pass
    try:
        from datasketch import MinHash, MinHashLSH
    except ImportError:
        print("  datasketch: not installed (pip install datasketch)")
        return
    few = texts[:20_000]
    start = time.perf_counter()
    lsh = MinHashLSH(threshold=0.8, num_perm=128)
    for i, batch in enumerate(MinHash.bulk([[s if isinstance(s, bytes) else s.encode()
                                                     for s in near.shingles(t)] for t in few], num_perm=128)):
        if not lsh.query(batch):
            lsh.insert(i, batch)
    print(f"  datasketch MinHash.bulk + MinHashLSH ({len(few):,} rows): {len(few) / (time.perf_counter() - start):,.0f} rows/s")


WORK_ALONE = """
import json, runpy, sys
from pathlib import Path
bench = runpy.run_path(sys.argv[1], run_name="bench_dedup")
seconds, _, removed = bench["work_alone"](Path(sys.argv[2]), None if sys.argv[3] == "exact" else float(sys.argv[3]))
print(json.dumps({"seconds": seconds, "removed": removed}))
"""


def comparison(runner: Any, work: Path, quick: bool, log: Any = print, rows: int = 1_000_000) -> tuple[list[Any], Any]:
    """bench/run.py's tools for `--suite dedup`: on `rows` short chat rows (10,000 with --quick), the `prep dedup` CLI
    (whole process) beside the dedup work alone (fingerprints and decision, in process, reading left out) as the
    baseline, for exact copies (`--exact`) and for near duplicates at 0.8."""
    Tool = runner.Tool  # noqa: N806 - the runner's class
    rows = 10_000 if quick else rows
    data = work / f"dedup-{rows}.jsonl"
    exact, nearby = make_rows(data, rows)
    mb = data.stat().st_size / 1e6  # the folder is gone when summary runs
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    tools: list[Any] = []
    for group, flags, threshold in ((f"dedup exact, {rows:,} rows", ["--exact"], "exact"),
                                    (f"dedup near 0.8, {rows:,} rows", [], "0.8")):
        alone = Tool("dedup work alone", group, [sys.executable, "-c", WORK_ALONE, str(Path(__file__).resolve()),
                                                 str(data), threshold],
                     seconds=lambda run: json.loads(run.stdout.strip().splitlines()[-1])["seconds"], rows=rows,
                     what="in process, fingerprints and decision", env=env)
        alone.baseline = alone.name
        tools += [alone, Tool(f"prep dedup{' --exact' if flags else ''} CLI", group,
                              [sys.executable, "-m", "prep", "dedup", str(data), *flags, "-o",
                               str(work / f"dedup-out-{threshold}.jsonl"), "-q"], rows=rows, baseline=alone.name,
                              env=env)]

    def summary(measured: list[Any]) -> list[str]:
        return [f"dedup: {rows:,} short chat rows ({mb:.0f} MB), {exact:,} exact and "
                f"{nearby:,} near copies planted."]

    return tools, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--peers", action="store_true", help="also datasketch and rensa's deduplicator (100k rows)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "rows.jsonl"
        exact, nearby = make_rows(data, args.rows)
        print(f"{args.rows:,} rows ({data.stat().st_size / 1e6:.0f} MB), planted {exact:,} exact and {nearby:,} near copies; "
              f"load average {Path('/proc/loadavg').read_text().split()[0]}")
        for label, extra in (("exact", ["--exact"]), ("exact + near 0.8", [])):
            seconds, rss = cli("dedup", str(data), *extra, "-o", str(Path(tmp) / "out.jsonl"), "-q")
            print(f"prep dedup {label}, CLI end to end: {seconds:.1f} s = {args.rows / seconds:,.0f} rows/s, "
                  f"peak RSS {rss:,.0f} MB")
            work, reading, removed = work_alone(data, None if extra else 0.8)
            print(f"  the dedup work alone: {args.rows / work:,.0f} rows/s ({work:.1f} s; reading and parsing "
                  f"{reading:.1f} s more, twice end to end); removed {removed:,}")
        if args.peers:
            peers(data, 100_000)


if __name__ == "__main__":
    main()
