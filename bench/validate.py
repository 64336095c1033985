"""Bench `prep validate`: rows/s and MB/s per format on the fixtures' data x20, beside Together's own
`check_file` on the same JSONL files, and peak RSS as the input grows.

    python bench/validate.py [--scale 20] [--grow 10] [--repeat 3] [--together-python PYTHON ...]

Inputs are the LLaMA-Factory demo files of the shared fixtures replicated `--scale` times (so
all but the first copy of each row are duplicates, which prep reports as warnings). Together's
client checks only JSONL in its own layouts, so it gets the alpaca rows converted to OpenAI
`messages` JSONL (by `prep convert`) and the c4 texts; prep validates those same files too.

`check_file` comes from the `together` PyPI package. It is optional and not a dependency of
prep: give `--together-python` the interpreter of a virtualenv where it is installed (e.g. one
with together 1.5.x, whose check_file validates conversations, and one with 3.x, which checks
only that each line is a JSON object); without it the column is skipped unless `together` is
importable here. Each measurement is a fresh process: seconds are measured inside it around the
check itself (interpreter start and imports excluded), peak RSS comes from wait4() for the whole
process. Nothing is written to the repository.
"""

from __future__ import annotations

import os
import sys

# Python puts bench/ first on sys.path, so a script here named like a module something imports would
# stand in for it (a bench/tokenize.py once hid the standard library's tokenize): take bench/ off before
# anything else loads; sibling scripts are loaded by their paths (_sibling).
# ruff: noqa: E402 - the imports below must come after this
sys.path[:] = [p for p in sys.path if os.path.realpath(p or ".") != os.path.dirname(os.path.realpath(__file__))]

import argparse
import importlib.util
import json
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def _sibling(name: str) -> Any:
    """A module of this folder, loaded by its path (bench/ is not on sys.path, see above)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", Path(__file__).resolve().parent / f"{name}.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[spec.name] = module  # type: ignore[union-attr]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


_convert = _sibling("convert")  # the fixture paths and replicator of bench/convert.py
FIXTURES, ROOT, replicate = _convert.FIXTURES, _convert.ROOT, _convert.replicate

PREP = """
import json, sys, time
from prep.formats.inputs import Inputs
from prep.stages.validate import validate
start = time.perf_counter()
report = validate(Inputs(sys.argv[1:]))
print(json.dumps({"seconds": time.perf_counter() - start, "rows": report.rows_read,
                  "errors": report.findings.errors, "warnings": report.findings.warnings}))
"""
TOGETHER = """
import importlib.metadata, json, sys, time
try:
    from together.utils import check_file
except ImportError:
    from together.lib.utils.files import check_file
start = time.perf_counter()
report = check_file(sys.argv[1])
print(json.dumps({"seconds": time.perf_counter() - start, "rows": report.get("num_samples"),
                  "passed": report["is_check_passed"], "message": report.get("message"),
                  "version": importlib.metadata.version("together")}))
"""


@dataclass
class Run:
    tool: str
    name: str
    mb: float
    result: dict
    peak_mb: float

    def line(self) -> str:
        s, rows = self.result["seconds"], self.result.get("rows") or 0
        note = "" if self.result.get("passed", True) else f"  (check failed: {self.result.get('message')})"
        return (f"{self.tool:<18} {self.name:<26} {rows:>9,} {self.mb:>7.1f} {s:>8.2f} {rows / s:>10,.0f} "
                f"{self.mb / s:>7.1f} {self.peak_mb:>9.0f}{note}")


def child(python: str, code: str, paths: list[Path]) -> tuple[dict, float]:
    """The JSON the child prints, and its peak RSS in MB (from wait4, so runs do not mask each other)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "TOGETHER_NO_BANNER": "1"}
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([python, "-c", code, *map(str, paths)], env=env, stdout=subprocess.PIPE, stderr=err)
        out = proc.stdout.read() if proc.stdout else b""
        _, status, usage = os.wait4(proc.pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            err.seek(0)
            raise SystemExit(f"{python} failed on {paths}:\n{err.read().decode()}")
    return json.loads(out.decode().strip().splitlines()[-1]), usage.ru_maxrss / 1024  # Linux: KiB


def best(repeat: int, python: str, code: str, paths: list[Path]) -> tuple[dict, float]:
    runs = [child(python, code, paths) for _ in range(repeat)]
    return min(runs, key=lambda r: r[0]["seconds"])


def together_pythons(given: list[str]) -> list[str]:
    if given:
        return given
    found = subprocess.run([sys.executable, "-c", "import together"], capture_output=True).returncode == 0
    return [sys.executable] if found else []


def _passed(run: Any) -> None:
    """A check_file that stopped at a row it refused has not checked the file: its time would mean nothing."""
    result = json.loads(run.stdout.strip().splitlines()[-1])
    if not result["passed"] or result["rows"] is None:
        raise RuntimeError(f"together {result['version']} check_file refused the file: {result['message']}")


def comparison(runner: Any, work: Path, quick: bool, log: Any = print, together_python: Sequence[str] = ()
               ) -> tuple[list[Any], Any]:
    """bench/run.py's tools for `--suite validate`: `prep validate` beside Together's `check_file` on the same file
    (the tokenize bench's unique alpaca chats, x20: 19,980 rows, `messages` alone), whole process (`prep validate -q`; a Python that
    imports together and checks) and in process (seconds around the check alone), each against the first
    `together_python`'s check_file as the baseline (the issue compares with together 1.5.35)."""
    Tool = runner.Tool  # noqa: N806 - the runner's class
    tagged, _ = _sibling("tokenize_speed").unique_alpaca(work, 1 if quick else 20)
    data = work / "alpaca_unique_messages.jsonl"  # Together refuses any key but `messages` ("extra column id")
    with tagged.open(encoding="utf-8") as rows_in, data.open("w", encoding="utf-8") as rows_out:
        rows_out.writelines(json.dumps({"messages": json.loads(line)["messages"]}, ensure_ascii=False) + "\n"
                            for line in rows_in)
    rows, mb = sum(1 for _ in data.open("rb")), data.stat().st_size / 1e6  # the folder is gone when summary runs
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "TOGETHER_NO_BANNER": "1"}
    inner = lambda run: json.loads(run.stdout.strip().splitlines()[-1])["seconds"]  # noqa: E731
    tools: list[Any] = []
    pythons = together_pythons(list(together_python))
    versions = [runner.run_process([p, "-c", TOGETHER, str(data)], env) for p in pythons]  # also warms the page cache
    names = [f"together {json.loads(v.stdout.strip().splitlines()[-1])['version']} check_file" for v in versions]
    for group, what in (("validate, whole process", "whole process"), ("validate, in process", "in process")):
        seconds = (lambda run: run.wall) if what == "whole process" else inner
        command = [sys.executable, "-m", "prep", "validate", str(data), "-q"] if what == "whole process" else \
            [sys.executable, "-c", PREP, str(data)]
        tools.append(Tool(f"prep validate{' CLI' if what == 'whole process' else ''}", group, command, seconds=seconds,
                          rows=rows, baseline=names[0] if names else "", what=what, env=env))
        for python, name in zip(pythons, names, strict=True):
            tools.append(Tool(name, group, [python, "-c", TOGETHER, str(data)], seconds=seconds, rows=rows,
                              baseline=names[0], peer=True, what=what, env=env, check=_passed))
    if not names:
        log("validate: no Python that imports together (give --together-python): prep alone")

    def summary(measured: list[Any]) -> list[str]:
        return [f"validate: {rows:,} unique alpaca chats with a system prompt ({mb:.1f} MB)."]

    return tools, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=20, help="copies of each fixture file (default 20)")
    parser.add_argument("--grow", type=int, default=10, help="how much larger the memory check input is (default 10)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per input; the fastest is shown (default 3)")
    parser.add_argument("--together-python", action="append", default=[],
                        help="an interpreter that can import together (repeatable)")
    opts = parser.parse_args()
    sources = [("alpaca", "alpaca_en_demo.json", "json"), ("glaive sharegpt", "glaive_toolcall_en_demo.json", "jsonl"),
               ("dpo sharegpt", "dpo_en_demo.json", "json"), ("kto openai", "kto_en_demo.json", "json")]
    for _, name, _ in [*sources, ("", "c4_demo.jsonl", "")]:
        if not (FIXTURES / name).exists():
            raise SystemExit(f"{FIXTURES / name} not found (set PREP_FIXTURES to the shared fixtures folder)")
    pythons = together_pythons(opts.together_python)
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="prep-bench-") as tmp_name:
        tmp = Path(tmp_name)

        def c4(times: int) -> Path:
            path = tmp / f"c4-x{times}.jsonl"
            rows = (FIXTURES / "c4_demo.jsonl").read_bytes()
            with path.open("wb") as f:
                for _ in range(times):
                    f.write(rows)
            return path

        def openai(times: int) -> Path:
            alpaca = tmp / f"alpaca-x{times}.jsonl"
            replicate(FIXTURES / "alpaca_en_demo.json", alpaca, times, "jsonl")
            out = tmp / f"alpaca-openai-x{times}.jsonl"
            subprocess.run([sys.executable, "-m", "prep", "convert", str(alpaca), "--to", "openai", "--no-ids",
                            "-o", str(out), "-q"], check=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
            alpaca.unlink()
            return out

        def add(tool: str, name: str, python: str, code: str, path: Path, repeat: int) -> Run:
            result, peak = best(repeat, python, code, [path])
            run = Run(tool, name, path.stat().st_size / 1e6, result, peak)
            runs.append(run)
            return run

        for label, name, container in sources:
            path = tmp / f"{name.split('_')[0]}-x{opts.scale}.{container}"
            replicate(FIXTURES / name, path, opts.scale, container)
            add("prep", f"{label} x{opts.scale}", sys.executable, PREP, path, opts.repeat)
            path.unlink()
        shared = [("alpaca->openai", openai(opts.scale)), ("c4 text", c4(opts.scale))]
        for label, path in shared:
            add("prep", f"{label} x{opts.scale}", sys.executable, PREP, path, opts.repeat)
            for python in pythons:
                result, _ = child(python, TOGETHER, [path])
                add(f"together {result['version']}", f"{label} x{opts.scale}", python, TOGETHER, path, opts.repeat)
        big = opts.scale * opts.grow
        grown = [("alpaca->openai", openai(big))]
        growth = []
        for label, path in grown:
            small = next(r for r in runs if r.tool == "prep" and r.name == f"{label} x{opts.scale}")
            large = add("prep", f"{label} x{big}", sys.executable, PREP, path, 1)
            growth.append(("prep", small, large))
            for python in pythons:
                tool = f"together {child(python, TOGETHER, [shared[0][1]])[0]['version']}"
                small_t = next(r for r in runs if r.tool == tool and r.name == f"{label} x{opts.scale}")
                growth.append((tool, small_t, add(tool, f"{label} x{big}", python, TOGETHER, path, 1)))

    print(f"prep validate vs together check_file ({os.cpu_count()} CPUs; seconds inside the process around the "
          f"check, fastest of {opts.repeat}; peak RSS of the whole process)")
    print(f"{'tool':<18} {'input':<26} {'rows':>9} {'MB':>7} {'seconds':>8} {'rows/s':>10} {'MB/s':>7} {'peak RSS':>9}")
    for run in runs:
        print(run.line())
    for tool, small, large in growth:
        print(f"peak RSS {tool}: {small.peak_mb:.0f} MB at {small.mb:.0f} MB of input, {large.peak_mb:.0f} MB at "
              f"{large.mb:.0f} MB ({large.peak_mb / small.peak_mb:.2f}x for {large.mb / small.mb:.0f}x the input)")


if __name__ == "__main__":
    main()
