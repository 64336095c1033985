"""bench/run.py's quiet-machine logic on synthetic /proc/stat readings: the load of other processes, the wait for a
quiet machine, and a run that shared the machine discarded and repeated (no timing is asserted)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def run() -> Any:
    spec = importlib.util.spec_from_file_location("bench_run", ROOT / "bench" / "run.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[spec.name] = module  # type: ignore[union-attr]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def stat(busy: int, idle: int) -> str:
    """A /proc/stat with `busy` and `idle` clock ticks on its cpu line (busy split over user, system and softirq)."""
    user, system = busy // 2, busy // 4
    return (f"cpu  {user} 0 {system} {idle} 0 0 {busy - user - system} 0 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n"
            "intr 12345\nctxt 678\n")


def test_cpu_line_parsed_in_seconds(run: Any) -> None:
    times = run.CpuTimes.parse(stat(300, 700))
    assert times.busy == pytest.approx(300 / run.CLOCK_TICKS)
    assert times.all == pytest.approx(1000 / run.CLOCK_TICKS)


def test_others_leaves_out_the_runs_own_cpu(run: Any) -> None:
    ticks = run.CLOCK_TICKS
    before, after = run.CpuTimes.parse(stat(0, 0)), run.CpuTimes.parse(stat(3 * ticks, ticks))
    assert run.others(before, after, 2.0) == pytest.approx(1.5)  # 3 busy seconds over 2 s: 1.5 cores
    assert run.others(before, after, 2.0, own=2.0) == pytest.approx(0.5)  # the run itself took 2 of them
    assert run.others(before, after, 2.0, own=5.0) == 0.0  # ticks counted apart: never negative


class Machine:
    """Synthetic readings: each settle window adds the next of `loads` (cores busy) to the busy ticks."""

    def __init__(self, run: Any, loads: list[float]) -> None:
        self.run, self.loads, self.busy, self.now = run, loads, 0.0, 0.0

    def read(self) -> Any:
        return self.run.CpuTimes(self.busy, self.now * 2)

    def sleep(self, seconds: float) -> None:
        self.busy += self.loads.pop(0) * seconds
        self.now += seconds

    def clock(self) -> float:
        return self.now


def test_waits_until_a_window_is_quiet(run: Any) -> None:
    machine = Machine(run, [1.9, 0.8, 0.05])
    load = run.wait_quiet(0.1, max_wait=60, settle=2.0, read=machine.read, sleep=machine.sleep, clock=machine.clock)
    assert load == pytest.approx(0.05)
    assert machine.now == pytest.approx(6.0) and not machine.loads  # two busy windows waited out, then the quiet one


def test_gives_up_after_max_wait(run: Any) -> None:
    machine = Machine(run, [1.0] * 100)
    with pytest.raises(run.Busy, match="not quiet for 10 s"):
        run.wait_quiet(0.1, max_wait=10, settle=2.0, read=machine.read, sleep=machine.sleep, clock=machine.clock)
    assert machine.now <= 10


def test_a_run_that_shared_the_machine_is_discarded_and_repeated(run: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    runs = [run.Run(5.0, 4.0, 100.0, "", 0.9), run.Run(6.0, 4.0, 100.0, "", 0.02)]
    monkeypatch.setattr(run, "wait_quiet", lambda *a, **k: 0.0)
    monkeypatch.setattr(run, "run_process", lambda *a, **k: runs.pop(0))
    tool = run.Tool("t", "g", ["true"])
    run.measure(tool, 0.1, max_wait=60, loaded=False, settle=0, log=lambda line: None)
    assert [r.wall for r in tool.runs] == [6.0] and [r.wall for r in tool.discarded] == [5.0]


def test_loaded_keeps_every_run_and_rounds_rotate(run: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    order: list[str] = []

    def fake(command: list[str], env: Any = None, tree: bool = False) -> Any:
        order.append(command[0])
        return run.Run(1.0, 1.0, 10.0, "", 1.5)

    monkeypatch.setattr(run, "run_process", fake)
    tools = [run.Tool(name, "g", [name]) for name in "abc"]
    run.rounds(tools, 3, 0.1, max_wait=0, loaded=True, settle=0, log=lambda line: None)
    assert order == list("abcbcacab")
    assert all(len(t.runs) == 1 * 3 and not t.discarded for t in tools)
    assert "| g | a (whole process) | 1.00 | 3 / 0 |" in "\n".join(run.table(tools))


def test_a_tool_with_a_baseline_runs_right_after_it_and_the_pairs_ratios_are_shown(run: Any,
                                                                                   monkeypatch: pytest.MonkeyPatch) \
        -> None:
    """The machine slows down (every run takes longer than the one before): the best runs come from different
    minutes, the adjacent pairs share theirs. The baseline runs only in its pairs."""
    order: list[str] = []

    def slowing(command: list[str], env: Any = None, tree: bool = False) -> Any:
        order.append(command[0])
        speed = 1 + 0.5 * len(order)
        return run.Run({"raw": 1.0, "prep": 1.25}[command[0]] * speed, 1.0, 10.0, "", 0.0)

    monkeypatch.setattr(run, "run_process", slowing)
    raw = run.Tool("raw", "g", ["raw"], tokens=100, baseline="raw")
    prep = run.Tool("prep", "g", ["prep"], tokens=100, baseline="raw")
    run.rounds([raw, prep], 2, 0.1, max_wait=0, loaded=True, settle=0, log=lambda line: None)
    assert order == ["raw", "prep", "raw", "prep"]
    assert [(b.wall, r.wall) for b, r in prep.pairs] == [(1.5, 2.5), (2.5, 3.75)]
    assert run.pair_ratios(prep, raw) == pytest.approx([0.6, 2.5 / 3.75])
    row = next(line for line in run.table([raw, prep]) if line.startswith("| g | prep "))
    assert "| 0.60 | 0.63 (0.60-0.67) |" in row  # best runs: 1.5 / 2.5; the pairs: 0.6 and 0.67


def test_real_run_is_measured_in_its_own_process(run: Any) -> None:
    done = run.run_process([sys.executable, "-c", "print('hello')"])
    assert done.stdout == "hello\n" and done.wall > 0 and done.rss > 0 and done.others >= 0
    with pytest.raises(RuntimeError, match="exited 3"):
        run.run_process([sys.executable, "-c", "import sys; sys.exit(3)"])


# a parent that leaves a child it never waits for: the child spends 0.4 s of CPU, tells the parent, and outlives it
LEAVES_A_CHILD = """
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time, sys\\nwhile time.process_time() < 0.4: pass\\n"
                          "print(flush=True); time.sleep(1)"], stdout=subprocess.PIPE)
child.stdout.readline()
time.sleep(0.3)
os._exit(0)
"""


def test_tree_counts_the_cpu_of_a_child_the_command_does_not_wait_for(run: Any) -> None:
    own = run.run_process([sys.executable, "-c", LEAVES_A_CHILD])
    tree = run.run_process([sys.executable, "-c", LEAVES_A_CHILD], tree=True)
    assert own.cpu < 0.3 <= tree.cpu, (own.cpu, tree.cpu)
