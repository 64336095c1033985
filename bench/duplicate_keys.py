"""Bench the duplicate-key check of the readers: what it adds per row, with and without it in one run.

    python bench/duplicate_keys.py [--rows 100000] [--repeat 5]

Every JSONL line msgspec decodes is tested for repeated keys by counting key ends in its bytes against the keys of
its decoded objects (`files.jsondoc.may_repeat_keys`); only a line with more key ends than keys is parsed again with
its pairs. This reads the same ~100k-row files through `files.read.read_rows`, and converts them to openai JSONL, with that test
and with it switched off, alternately in one process (so the machine's load weighs on both alike), and prints the time per row of each and
their ratio. The files: LLaMA-Factory's alpaca demo (plain text), its glaive tool-call demo as sharegpt (JSON text
inside strings: escaped `\\":` everywhere, which the count must not mistake for keys), and the glaive rows with one
key in a hundred repeated (the exact parse's cost). Everything is written to a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
FIXTURES = Path(os.environ.get("PREP_FIXTURES", ROOT.parent / "shared" / "fixtures")) / "data" / "llamafactory"

from prep.files import read  # noqa: E402 - after the path above
from prep.formats.inputs import Inputs  # noqa: E402
from prep.stages.convert import convert  # noqa: E402


def write(source: Path, out: Path, rows: int, repeat_every: int = 0) -> None:
    """`rows` JSONL lines cycling through a JSON-array file's rows; every `repeat_every`-th repeats its first key."""
    lines = [json.dumps(r, ensure_ascii=False) for r in json.loads(source.read_text(encoding="utf-8"))]
    with out.open("w", encoding="utf-8") as f:
        for i in range(rows):
            line = lines[i % len(lines)]
            if repeat_every and i % repeat_every == 0:
                key = next(iter(json.loads(line)))
                line = "{" + json.dumps(key) + ': "earlier", ' + line[1:]
            f.write(line + "\n")


def seconds(path: Path, whole: bool) -> tuple[float, int]:
    """Seconds to read the rows (`whole`: to convert them to openai JSONL, in this process) and rows found altered."""
    started = time.perf_counter()
    if whole:
        out = path.with_name("out.jsonl")
        altered = sum(convert(Inputs([str(path)]), "openai", str(out)).tally.altered.values())
        out.unlink()
    else:
        altered = sum(len(b.altered) for b in read.read_rows(str(path)))
    return time.perf_counter() - started, altered


def timed(path: Path, check: Callable[..., bool], repeat: int, whole: bool) -> tuple[float, float, int]:
    """Fastest seconds with the check and with it off, alternating runs; rows found altered with it on."""
    on, off, found = [], [], 0
    for _ in range(repeat):
        read.may_repeat_keys = check
        t, found = seconds(path, whole)
        on.append(t)
        read.may_repeat_keys = lambda raw, value: False
        off.append(seconds(path, whole)[0])
    read.may_repeat_keys = check
    return min(on), min(off), found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="rows per file (default 100000)")
    parser.add_argument("--repeat", type=int, default=5, help="runs of each; the fastest is shown (default 5)")
    opts = parser.parse_args()
    cases = [("alpaca (plain text)", FIXTURES / "alpaca_en_demo.json", 0),
             ("glaive (JSON inside strings)", FIXTURES / "glaive_toolcall_en_demo.json", 0),
             ("glaive, 1% rows repeat a key", FIXTURES / "glaive_toolcall_en_demo.json", 100)]
    check = read.may_repeat_keys
    print(f"read_rows over {opts.rows:,} JSONL rows, fastest of {opts.repeat}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f} at the start")
    print(f"{'file':<30} {'what':<8} {'MB':>6} {'off µs/row':>11} {'on µs/row':>10} {'ratio':>6} {'found':>7}")
    with tempfile.TemporaryDirectory(prefix="prep-bench-") as tmp:
        for label, source, every in cases:
            if not source.exists():
                raise SystemExit(f"{source} not found (set PREP_FIXTURES to the shared fixtures folder)")
            path = Path(tmp) / "rows.jsonl"
            write(source, path, opts.rows, every)
            for what, whole in (("read", False), ("convert", True)):
                on, off, found = timed(path, check, opts.repeat, whole)
                print(f"{label:<30} {what:<8} {path.stat().st_size / 1e6:>6.1f} {off / opts.rows * 1e6:>11.2f} "
                      f"{on / opts.rows * 1e6:>10.2f} {on / off:>6.3f} {found:>7,}")
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
