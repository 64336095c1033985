"""Shared test helpers: where the real fixtures are, and running the CLI as a user would."""

from __future__ import annotations

import contextlib
import datetime
import functools
import importlib.util
import inspect
import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest

from prep.core.options import DEFAULT_DATE

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
FIXTURES = Path(os.environ.get("PREP_FIXTURES", ROOT.parent / "shared" / "fixtures"))


def fixture(*parts: str) -> Path:
    """A file under $PREP_FIXTURES, or skip the test saying what is missing."""
    path = FIXTURES.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"fixture {path} not found (set PREP_FIXTURES to the shared fixtures folder)")
    return path


_CALLS_FIXTURE = re.compile(r"(?<![.\w@])fixture\(")  # this module's fixture(), not @pytest.fixture(


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--only-fixture-tests", action="store_true",
                     help="only the tests that open $PREP_FIXTURES (CI runs them once with an empty folder: each must "
                          "skip, saying why, as in a fresh clone without ../shared)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--only-fixture-tests"):
        keep = [item for item in items if _opens_fixtures(item)]
        config.hook.pytest_deselected(items=[item for item in items if item not in keep])
        items[:] = keep


def _opens_fixtures(item: pytest.Item) -> bool:
    """The test, a fixture it uses, or a function of its module either of them calls, calls fixture()."""
    module = getattr(item, "module", None)
    if module is None:  # a doctest
        return False
    helpers = {name: f for name, f in vars(module).items() if inspect.isfunction(f) and f.__module__ == module.__name__}
    fixtures = [d.func for defs in item._fixtureinfo.name2fixturedefs.values() for d in defs]
    todo = [item.function, *(f for f in fixtures if f.__module__.startswith(("test_", "conftest")))]
    seen: set[Any] = set()
    while todo:
        if (function := todo.pop()) in seen:
            continue
        seen.add(function)
        try:
            source = inspect.getsource(function)
        except (OSError, TypeError):
            continue
        if _CALLS_FIXTURE.search(source):
            return True
        todo += [f for name, f in helpers.items() if re.search(rf"\b{name}\(", source)]
    return False


def run_prep(*args: str, input: bytes | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`prep ARGS` in a subprocess, as a user runs it (stdout and stderr captured as bytes)."""
    return subprocess.run([sys.executable, "-m", "prep", *args], input=input, capture_output=True,
                          cwd=cwd, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})


HEAVY = ("torch", "transformers", "datasets", "trl", "ray")  # what the data verbs never import (start-up time)
_IN_ONE = """\
import contextlib, json, sys
from prep.cli import main
runs, said, heavy = json.loads(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
for n, argv in enumerate(runs):
    code = None
    with open(f"{said}.{n}", "w", encoding="utf-8") as out, contextlib.redirect_stdout(out):
        try:
            main(argv)
        except SystemExit as e:
            code = e.code
    with open(said, "a", encoding="utf-8") as f:
        f.write(json.dumps([code, [m for m in heavy if m in sys.modules]]) + "\\n")
"""


def prep_in_one_interpreter(runs: list[list[str]], folder: Path, **env: str) -> tuple[list[Any], str]:
    """`prep ARGS` for each ARGS of `runs`, in order, in one fresh interpreter that imported nothing else (one
    start-up, not one per run): for each run (its exit code, None when it returned; which of HEAVY were in
    sys.modules after it; its stdout), and the interpreter's stderr. A module stays imported, so the first run to
    import one shows it."""
    said = folder / "said.jsonl"
    proc = subprocess.run([sys.executable, "-c", _IN_ONE, json.dumps(runs), str(said), json.dumps(HEAVY)],
                          capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src"), **env})
    assert proc.returncode == 0, proc.stderr
    ran = [json.loads(line) for line in said.read_text(encoding="utf-8").splitlines()]
    assert len(ran) == len(runs), proc.stderr
    return [(code, loaded, Path(f"{said}.{n}").read_text(encoding="utf-8")) for n, (code, loaded) in enumerate(ran)], \
        proc.stderr


def invoke_prep(*args: str) -> Any:
    """`prep ARGS` run in this process by click's test runner: the CLI's parsing, messages and exit code, without a
    new interpreter's start-up and imports (seconds with the train extra; run_prep is the user's own process). The
    environment variables and warning filters the CLI sets for itself are put back afterwards."""
    from click.testing import CliRunner

    from prep.cli import main

    saved = dict(os.environ)
    try:
        with warnings.catch_warnings():
            return CliRunner().invoke(main, list(args))
    finally:
        os.environ.clear()
        os.environ.update(saved)


def make_tiny_model(out: Path, *args: Any, **kwargs: Any) -> Path:
    """The tiny llama of samples/make_tiny_model.py (a script beside the samples, not part of the package);
    its other arguments (tokenizer, hidden, seed, ...) pass through."""
    spec = importlib.util.spec_from_file_location("make_tiny_model", SAMPLES / "make_tiny_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_tiny_model(out, *args, **kwargs)


@functools.cache
def hf_tokenizer(path: str | Path) -> Any:
    """transformers' own tokenizer for a folder: the reference prep's ids are compared with (tests only)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))


@contextlib.contextmanager
def pinned_day(day: str) -> Any:
    """transformers' chat templates told `day` (YYYY-MM-DD) by strftime_now, as prep's --date tells its own: the
    reference for a template with a "Today Date" line (smollm3)."""
    import transformers.utils.chat_template_utils as ctu

    at = datetime.datetime.strptime(day, "%Y-%m-%d")

    class Pinned(datetime.datetime):
        @classmethod
        def now(cls, tz: Any = None) -> datetime.datetime:
            return at

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ctu, "datetime", Pinned)
        yield


def apply_chat_template(path: str | Path, messages: list[dict[str, Any]], day: str = DEFAULT_DATE,
                        **kw: Any) -> list[int]:
    """transformers' apply_chat_template ids for a fixture tokenizer, the day pinned as prep pins it by default."""
    with pinned_day(day):
        return hf_tokenizer(path).apply_chat_template(messages, tokenize=True, return_dict=False, **kw)


@pytest.fixture
def full_disk(tmp_path: Path):  # noqa: ANN201 - a fixture
    """A 512 KB tmpfs: writing more fails with ENOSPC (skipped where mounting is not allowed)."""
    folder = tmp_path / "full"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({mounted.stderr.decode().strip() or 'not root'})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)
