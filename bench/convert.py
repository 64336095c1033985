"""Bench `prep convert`: rows/s and MB/s end to end through the CLI, and peak RSS as the input grows.

    python bench/convert.py [--scale 20] [--grow 10] [--repeat 3]

Inputs are the LLaMA-Factory demo files of the shared fixtures replicated `--scale` times:
alpaca (a .json array, so the streaming JSON reader is measured) and glaive tool calls
(sharegpt, written as .jsonl), both converted to openai JSONL. Each run is a fresh `python -m
prep` process; its peak RSS comes from wait4(), so runs do not mask each other. The same inputs
`--grow` times larger must show the same peak RSS (streaming: memory does not follow input size).
Everything is written to a temporary folder; nothing lands in the repository.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(os.environ.get("PREP_FIXTURES", ROOT.parent / "shared" / "fixtures")) / "data" / "llamafactory"


@dataclass
class Run:
    name: str
    rows: int
    mb: float
    seconds: float
    peak_mb: float

    def line(self) -> str:
        return (f"{self.name:<28} {self.rows:>9,} {self.mb:>8.1f} {self.seconds:>8.2f} {self.rows / self.seconds:>10,.0f} "
                f"{self.mb / self.seconds:>7.1f} {self.peak_mb:>9.0f}")


def replicate(source: Path, out: Path, times: int, container: str) -> int:
    """`times` copies of a JSON-array file's rows, as a .json array or .jsonl; returns the row count.

    Written line by line: this process must stay small, since a child's peak RSS as reported by
    wait4() starts from the size of the process that spawned it."""
    lines = [json.dumps(r, ensure_ascii=False) for r in json.loads(source.read_text(encoding="utf-8"))]
    with out.open("w", encoding="utf-8") as f:
        f.write("[\n" if container == "json" else "")
        for i in range(times):
            for j, line in enumerate(lines):
                last = i == times - 1 and j == len(lines) - 1
                f.write(line + ("\n" if container == "jsonl" or last else ",\n"))
        f.write("]\n" if container == "json" else "")
    return len(lines) * times


def measure(args: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of one child process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{stderr}")
    return seconds, usage.ru_maxrss / 1024  # Linux reports KiB


def bench(name: str, path: Path, rows: int, repeat: int, tmp: Path) -> Run:
    out = tmp / "out.jsonl"
    best = min((measure(["-m", "prep", "convert", str(path), "--to", "openai", "-o", str(out), "-q"])
                for _ in range(repeat)), key=lambda r: r[0])
    written = sum(1 for _ in out.open("rb"))
    assert written == rows, f"{name}: wrote {written} of {rows} rows"
    out.unlink()
    return Run(name, rows, path.stat().st_size / 1e6, *best)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=20, help="copies of each fixture file (default 20)")
    parser.add_argument("--grow", type=int, default=10, help="how much larger the memory check input is (default 10)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per input; the fastest is shown (default 3)")
    opts = parser.parse_args()
    sources = [("alpaca", FIXTURES / "alpaca_en_demo.json", "json"),
               ("glaive sharegpt", FIXTURES / "glaive_toolcall_en_demo.json", "jsonl")]
    for _, path, _ in sources:
        if not path.exists():
            raise SystemExit(f"{path} not found (set PREP_FIXTURES to the shared fixtures folder)")

    with tempfile.TemporaryDirectory(prefix="prep-bench-") as tmp_name:
        tmp = Path(tmp_name)
        startup = min(measure(["-m", "prep", "--version"])[0] for _ in range(opts.repeat))
        runs = []
        for label, source, container in sources:
            for times in (opts.scale, opts.scale * opts.grow):
                path = tmp / f"{label.split()[0]}-x{times}.{container}"
                rows = replicate(source, path, times, container)
                runs.append(bench(f"{label} x{times} (.{container})", path, rows,
                                  opts.repeat if times == opts.scale else 1, tmp))
                path.unlink()

    print(f"prep convert -> openai JSONL, end to end (`python -m prep`, {os.cpu_count()} CPUs, "
          f"fastest of {opts.repeat}; startup {startup:.2f} s included)")
    print(f"{'input':<28} {'rows':>9} {'MB':>8} {'seconds':>8} {'rows/s':>10} {'MB/s':>7} {'peak RSS':>9}")
    for run in runs:
        print(run.line())
    for small, large in zip(runs[::2], runs[1::2], strict=True):
        print(f"peak RSS {small.name.split(' x')[0]}: {small.peak_mb:.0f} MB at {small.mb:.0f} MB of input, "
              f"{large.peak_mb:.0f} MB at {large.mb:.0f} MB ({large.peak_mb / small.peak_mb:.2f}x for "
              f"{large.mb / small.mb:.0f}x the input)")


if __name__ == "__main__":
    main()
