"""The benchmark runner: each tool its own process, on a quiet machine, rounds interleaved, one table of ratios.

A figure taken while other processes share the cores measures them as much as the tool. So before each run the
runner waits until the rest of the machine is quiet (the CPU time of every other process, read from /proc/stat,
is under `--quiet-cores` cores over a `--settle` window), and after it checks the run itself: the machine's busy
CPU time during the run, less the run's own (its rusage, children included), must stay under the same bound, or
the run is discarded and repeated. `--max-wait` bounds the waiting for each run (then the runner stops and says
so); `--loaded` skips the waiting and keeps every run, with the other processes' load printed beside it, for a
smoke test on a shared machine. Rounds are interleaved (each round runs every tool, in a rotated order), and the
best run of each tool is reported.

The best runs alone mislead on a VM whose speed drifts from minute to minute while it is quiet (the same raw
`encode_batch` took 3.9 s in one minute and 5.2 s in another, with no other process running): each tool's best run
may come from a different minute. So a tool compared with a baseline runs right after a run of that baseline, in
every round, and the table also gives the median of those adjacent pairs' ratios (with their range): a tool and its
baseline then share each minute's speed.

The comparisons are defined beside their own benches (`bench/tokenize_speed.py`, `bench/validate.py`,
`bench/dedup.py`: `comparison`), which make the
data and name each tool's command; this runner times them. A markdown table goes to stdout (for the README), with
the date, the machine and the load.

    python bench/run.py [--suite tokenize|validate|dedup|ray] [--quick] [--rounds 3] [--max-wait 1800]
                        [--quiet-cores 0.1] [--loaded] [--skip-trl] [--llamafactory-python PATH]
                        [--together-python PATH ...] [--dedup-rows 1000000] [--ray-copies 40] [--keep DIR]

prep's own modules are compiled to bytecode before any run, as an installed prep has them (pip compiles at install):
a checkout run with PYTHONDONTWRITEBYTECODE set would otherwise compile every module changed since its last
__pycache__ at every start, which a user never pays.

`--suite validate` (bench/validate.py: `comparison`) times `prep validate` beside Together's check_file, whole
process and in process; `--suite dedup` (bench/dedup.py) the `prep dedup` CLI beside the dedup work alone;
`--suite ray` (bench/ray_engine.py) `prep tokenize --engine ray` with 1 and 2 workers beside the local engine, on
the same input, every run's rows checked equal. Their rates are rows/s.
"""

from __future__ import annotations

import os
import sys

# bench/ is taken off sys.path (see bench/validate.py); the comparisons are loaded by their paths.
# ruff: noqa: E402 - the imports below must come after this
sys.path[:] = [p for p in sys.path if os.path.realpath(p or ".") != os.path.dirname(os.path.realpath(__file__))]

import argparse
import compileall
import importlib.util
import json
import platform
import runpy
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SUITES = {"tokenize": "tokenize_speed.py", "validate": "validate.py", "dedup": "dedup.py",  # each has `comparison`
          "ray": "ray_engine.py"}


# the machine ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CpuTimes:
    """The machine's CPU time so far from /proc/stat's `cpu` line, in seconds: busy (every process and the kernel's
    work for them) and all (busy, idle and waiting)."""

    busy: float
    all: float

    @classmethod
    def parse(cls, stat: str) -> CpuTimes:
        fields = next(line for line in stat.splitlines() if line.startswith("cpu ")).split()[1:]
        user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in (fields + ["0"] * 8)[:8])
        busy = user + nice + system + irq + softirq + steal  # guest time is already inside user and nice
        return cls(busy / CLOCK_TICKS, (busy + idle + iowait) / CLOCK_TICKS)

    @classmethod
    def now(cls) -> CpuTimes:
        return cls.parse(Path("/proc/stat").read_text())


def others(before: CpuTimes, after: CpuTimes, seconds: float, own: float = 0.0) -> float:
    """The cores the rest of the machine kept busy between two readings `seconds` apart, `own` CPU seconds (the
    measured run's, children included) left out. Never below zero: the clocks tick at different times."""
    if seconds <= 0:
        return 0.0
    return max(0.0, (after.busy - before.busy - own) / seconds)


class Busy(Exception):
    """The machine did not become quiet within --max-wait."""


def wait_quiet(limit: float, max_wait: float, settle: float = 2.0, read: Callable[[], CpuTimes] = CpuTimes.now,
               sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> float:
    """Wait until the other processes kept at most `limit` cores busy over a whole `settle` window (this process
    sleeps through it, so the load is theirs); return that load. Raises Busy after `max_wait` seconds."""
    start = clock()
    worst = 0.0
    while True:
        before, t0 = read(), clock()
        sleep(settle)
        load = others(before, read(), clock() - t0)
        if load <= limit:
            return load
        worst = max(worst, load)
        if clock() - start + settle > max_wait:
            raise Busy(f"the machine was not quiet for {max_wait:.0f} s (other processes kept up to {worst:.2f} "
                       f"cores busy; the bound is {limit:.2f}): run again when it is idle, or raise --max-wait")


def compile_prep() -> None:
    """Compile the prep the tools import (its __pycache__, as pip does at install), so no run compiles its source."""
    spec = importlib.util.find_spec("prep")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("bench/run.py: prep is not importable (run with PYTHONPATH=src or install it)")
    for folder in spec.submodule_search_locations:
        compileall.compile_dir(folder, quiet=1)


# one run --------------------------------------------------------------------------------------------------------

@dataclass
class Run:
    """One process: its wall seconds, CPU seconds (children included), peak RSS in MB, stdout, and the cores the
    rest of the machine kept busy meanwhile."""

    wall: float
    cpu: float
    rss: float
    stdout: str
    others: float


# Runs the command and measures it from a small interpreter of its own: a child's peak RSS counts the memory of
# the process it was forked from, so forked from this runner (which has rendered texts with a tokenizer loaded)
# every tool would read as at least the runner's size. With "tree", it also samples every 0.1 s the CPU time of each
# process descended from the command (by pid and start time; the last sample before each ended): a tool whose
# processes are not all waited for by it (a local Ray: its raylet, GCS and workers outlive the wait) would
# otherwise count its own daemons as the rest of the machine's load. The run's CPU is the larger of the two.
MEASURE = """
import json, os, resource, subprocess, sys, threading, time
tick, seen, done = os.sysconf("SC_CLK_TCK"), {}, threading.Event()

def sample(root):
    parents, cpu = {}, {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                fields = open(f"/proc/{name}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(name)] = int(fields[1])
            cpu[int(name)] = (fields[19], (int(fields[11]) + int(fields[12])) / tick)
    for pid in cpu:
        p = pid
        while p not in (0, 1, root):
            p = parents.get(p, 0)
        if p == root:
            seen[(pid, cpu[pid][0])] = cpu[pid][1]

stat_before, start = open("/proc/stat").read(), time.perf_counter()
proc = subprocess.Popen(sys.argv[3:])
if sys.argv[2] == "tree":
    def watch():
        while not done.wait(0.1):
            sample(proc.pid)
    threading.Thread(target=watch, daemon=True).start()
code = proc.wait()
wall, stat_after = time.perf_counter() - start, open("/proc/stat").read()
done.set()
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
with open(sys.argv[1], "w") as f:
    json.dump({"code": code, "wall": wall, "cpu": max(usage.ru_utime + usage.ru_stime, sum(seen.values())),
               "rss_kb": usage.ru_maxrss, "before": stat_before, "after": stat_after}, f)
"""


def run_process(command: Sequence[str], env: dict[str, str] | None = None, tree: bool = False) -> Run:
    """Run `command` as its own process: wall and CPU seconds, peak RSS and the machine's load around it (`tree`:
    its CPU sampled over every process it started, see MEASURE)."""
    with tempfile.TemporaryDirectory() as folder:
        out, err, measured = (Path(folder) / name for name in ("out", "err", "measured.json"))
        with out.open("w") as stdout, err.open("w") as stderr:
            subprocess.run([sys.executable, "-c", MEASURE, str(measured), "tree" if tree else "own", *command],
                           stdout=stdout, stderr=stderr, env=env, check=False)
        m = json.loads(measured.read_text()) if measured.exists() else {"code": "no measurement"}
        if m["code"] != 0:
            raise RuntimeError(f"{' '.join(command[:4])} ... exited {m['code']}:\n{err.read_text()[-3000:]}")
        load = others(CpuTimes.parse(m["before"]), CpuTimes.parse(m["after"]), m["wall"], m["cpu"])
        return Run(m["wall"], m["cpu"], m["rss_kb"] / 1024, out.read_text(), load)


# tools, rounds and the table ------------------------------------------------------------------------------------

@dataclass
class Tool:
    """A command to time. `seconds` reads the figure from a run (default: its wall time, the whole process; a tool
    that times an inner step prints it); `check` looks at the run's output (same tokens, same ids) and raises when
    it is wrong. `group` is the data set; `baseline` names the tool ratios are taken to in the group; `peer` marks
    the tools prep is compared with; `tree` samples the CPU of every process the command starts (see MEASURE)."""

    name: str
    group: str
    command: list[str]
    seconds: Callable[[Run], float] = lambda run: run.wall
    check: Callable[[Run], None] | None = None
    tokens: int = 0
    rows: int = 0
    baseline: str = ""
    peer: bool = False
    what: str = "whole process"
    env: dict[str, str] | None = None
    tree: bool = False
    runs: list[Run] = field(default_factory=list)
    discarded: list[Run] = field(default_factory=list)
    pairs: list[tuple[Run, Run]] = field(default_factory=list)  # (the baseline's run just before, this tool's run)

    @property
    def best(self) -> Run:
        return min(self.runs, key=self.seconds)

    def units(self) -> int:
        return self.tokens or self.rows  # tokens for tokenize, rows for validate and dedup


def pair_ratios(tool: Tool, base: Tool) -> list[float]:
    """Each adjacent pair's ratio: the tool's rate over its baseline's (their seconds' ratio when neither counts
    units)."""
    units, base_units = tool.units() or 1, base.units() or 1
    return [(units / tool.seconds(run)) / (base_units / base.seconds(before)) for before, run in tool.pairs]


def measure(tool: Tool, limit: float, max_wait: float, loaded: bool, settle: float, log: Callable[[str], None]) -> None:
    """One kept run of `tool`: waits for quiet before it, repeats it when the machine did not stay quiet."""
    deadline = time.monotonic() + max_wait
    while True:
        if not loaded:
            wait_quiet(limit, max(0.0, deadline - time.monotonic()), settle)
        run = run_process(tool.command, tool.env, tool.tree)
        if tool.check is not None:
            tool.check(run)
        if loaded or run.others <= limit:
            tool.runs.append(run)
            log(f"  {tool.group} | {tool.name}: {tool.seconds(run):.2f} s (wall {run.wall:.2f} s, cpu {run.cpu:.2f} s, "
                f"{run.rss:.0f} MB; others {run.others:.2f} cores)")
            return
        tool.discarded.append(run)
        log(f"  {tool.group} | {tool.name}: discarded, other processes kept {run.others:.2f} cores busy")
        if time.monotonic() > deadline:
            raise Busy(f"{tool.name}: every run for {max_wait:.0f} s shared the machine; run again when it is idle")


def rounds(tools: list[Tool], n: int, limit: float, max_wait: float, loaded: bool, settle: float,
           log: Callable[[str], None]) -> None:
    """`n` rounds, each running every tool once, the order rotated each round so no tool always runs first; a tool
    with a baseline runs right after a run of it (the pair), and a baseline every other tool pairs with runs only
    in those pairs."""
    by_name = {(t.group, t.name): t for t in tools}
    paired = {(t.group, t.baseline) for t in tools if t.baseline and t.baseline != t.name}
    for r in range(n):
        log(f"round {r + 1}/{n}")
        order = tools[r % len(tools):] + tools[:r % len(tools)]
        for tool in order:
            base = by_name.get((tool.group, tool.baseline)) if tool.baseline != tool.name else None
            if base is None and (tool.group, tool.name) in paired:
                continue
            if base is not None:
                measure(base, limit, max_wait, loaded, settle, log)
            measure(tool, limit, max_wait, loaded, settle, log)
            if base is not None:
                tool.pairs.append((base.runs[-1], tool.runs[-1]))


def table(tools: list[Tool]) -> list[str]:
    """The markdown table: per data set, each tool's best seconds, tokens/s, × the baseline (its tokens/s ratio)
    and how many times faster prep's fastest command is than each peer."""
    lines = ["| data | tool | seconds (best) | runs kept / discarded | peak RSS MB | others' load (cores) | "
             "tokens/s or rows/s | × the group's baseline, best runs | × it, adjacent pairs: median (range) | "
             "prep CLI × it |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    by_name = {(t.group, t.name): t for t in tools}
    for tool in tools:
        best = tool.best
        seconds = tool.seconds(best)
        units = tool.units()
        unit = "tokens" if tool.tokens else "rows"
        rate = units / seconds if units and seconds else 0.0
        base = by_name.get((tool.group, tool.baseline))
        base_units = base and base.units()
        ratio = f"{rate / (base_units / base.seconds(base.best)):.2f}" if base is not None and units and base_units \
            else ""
        ratios = pair_ratios(tool, base) if base is not None and tool.pairs else []
        pairs = f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})" if ratios else ""
        prep = [t for t in tools if t.group == tool.group and t.name.startswith("prep ") and t.name.endswith("CLI")
                or t.name.startswith("prep tokenize CLI")]
        fastest = min(prep, key=lambda t: t.seconds(t.best), default=None)
        versus = f"{seconds / fastest.seconds(fastest.best):.2f}" if tool.peer and fastest is not None else ""
        lines.append(f"| {tool.group} | {tool.name} ({tool.what}) | {seconds:.2f} | {len(tool.runs)} / "
                     f"{len(tool.discarded)} | {best.rss:.0f} | {max(r.others for r in tool.runs):.2f} | "
                     f"{f'{rate:,.0f} {unit}/s' if rate else ''} | {ratio} | {pairs} | {versus} |")
    return lines


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small data and one round: a smoke test")
    parser.add_argument("--rounds", type=int, help="rounds of every tool (default 3; 1 with --quick)")
    parser.add_argument("--max-wait", type=float, default=1800.0,
                        help="seconds to wait for a quiet machine before each run (default 1800)")
    parser.add_argument("--quiet-cores", type=float, default=0.1,
                        help="most cores other processes may keep busy for the machine to count as quiet (0.1)")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds the machine must stay quiet before a run")
    parser.add_argument("--loaded", action="store_true",
                        help="do not wait for a quiet machine and keep every run (the load is printed beside it)")
    parser.add_argument("--skip-trl", action="store_true")
    parser.add_argument("--llamafactory-python", help="interpreter of a venv with llamafactory installed")
    parser.add_argument("--suite", choices=SUITES, default="tokenize", help="what to compare (default tokenize)")
    parser.add_argument("--together-python", action="append", default=[],
                        help="validate: an interpreter that imports together (repeatable; the first is the baseline)")
    parser.add_argument("--dedup-rows", type=int, default=1_000_000, help="dedup: rows to make (default 1,000,000)")
    parser.add_argument("--ray-copies", type=int, default=40,
                        help="ray: copies of the alpaca fixture, 999 unique chats each (default 40)")
    parser.add_argument("--keep", help="folder for the data and outputs (default: a temporary one, removed)")
    args = parser.parse_args(argv)
    n = args.rounds or (1 if args.quick else 3)

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="prep-bench-run-"))
    work.mkdir(parents=True, exist_ok=True)
    compile_prep()
    try:
        suite = runpy.run_path(str(Path(__file__).with_name(SUITES[args.suite])), run_name=f"bench_{args.suite}")
        options = {"tokenize": {"trl": not args.skip_trl, "llamafactory_python": args.llamafactory_python},
                   "validate": {"together_python": args.together_python},
                   "dedup": {"rows": args.dedup_rows}, "ray": {"copies": args.ray_copies}}[args.suite]
        tools, summary = suite["comparison"](sys.modules[__name__], work, quick=args.quick, log=log, **options)
        started = datetime.now(timezone.utc)
        rounds(tools, n, args.quiet_cores, args.max_wait, args.loaded, args.settle, log)
    except Busy as e:
        sys.exit(f"bench/run.py: {e}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"{started:%Y-%m-%d %H:%M} UTC, {platform.node()}: {os.cpu_count()} CPUs "
          f"({platform.processor() or platform.machine()}), Python {platform.python_version()}; "
          f"{'machine NOT quiet (--loaded)' if args.loaded else f'quiet machine (others ≤ {args.quiet_cores} cores)'}; "
          f"{n} round(s), best run and adjacent pairs shown; load average now {os.getloadavg()[0]:.2f}\n")
    print("\n".join(table(tools)))
    for line in summary(tools):
        print(f"\n{line}")
    print("\n" + json.dumps({f"{t.group} | {t.name}": [round(t.seconds(r), 3) for r in t.runs] for t in tools}))


if __name__ == "__main__":
    main()
