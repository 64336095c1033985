"""Bench `prep ui --help` (the issue asks for under 0.3 s): wall seconds of each command, each its own process,
run in turns so the machine's load falls on all alike; `python -c pass` and `prep --help` beside it say how much
is the interpreter and how much the CLI, and the ratio to `prep --help` shows `prep ui --help` loads nothing more
(the web framework is imported only when `prep ui` starts serving). The CPU seconds (user + system, from
getrusage) are what the command costs on a machine that is not busy with anything else.

    python bench/ui_help.py [--repeat 15]
"""

from __future__ import annotations

import os
import sys

# Python puts bench/ first on sys.path; take it off before anything else loads (see bench/validate.py)
# ruff: noqa: E402 - the imports below must come after this
sys.path[:] = [p for p in sys.path if os.path.realpath(p or ".") != os.path.dirname(os.path.realpath(__file__))]

import argparse
import resource
import statistics
import subprocess
import time

COMMANDS = {"python -c pass": ["-c", "pass"], "prep --help": ["-m", "prep", "--help"],
            "prep run --help": ["-m", "prep", "run", "--help"], "prep ui --help": ["-m", "prep", "ui", "--help"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=15, help="runs of each command (default 15)")
    args = parser.parse_args()
    seconds: dict[str, list[float]] = {name: [] for name in COMMANDS}
    cpu: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.repeat):
        for name, argv in COMMANDS.items():
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            started = time.perf_counter()
            subprocess.run([sys.executable, *argv], check=True, stdout=subprocess.DEVNULL)
            seconds[name].append(time.perf_counter() - started)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu[name].append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    load = os.getloadavg()[0]
    print(f"load average (1 min) at the end: {load:.2f} on {os.cpu_count()} CPUs; {args.repeat} runs each")
    base = statistics.median(seconds["prep --help"])
    for name, times in seconds.items():
        median = statistics.median(times)
        print(f"{name:<18} wall median {median:.3f} s  min {min(times):.3f} s  ({median / base:.2f}x prep --help); "
              f"CPU median {statistics.median(cpu[name]):.3f} s")


if __name__ == "__main__":
    main()
