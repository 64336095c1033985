"""The verb shell (prep.verbs, design §8): every option of every table is refused in the same words from the CLI,
the Python API and a recipe; every data verb shows its progress on a terminal and none with --quiet; every verb
exits with its result's exit code."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from conftest import SAMPLES
from prep.__main__ import MALLOC_LIBRARIES, put_back_preload, with_fast_malloc
from prep.cli import main
from prep.core import options as opts
from prep.core.findings import PrepError
from prep.formats.inputs import Inputs
from prep.recipes.recipe import load_recipe
from prep.verbs import VERBS

# What each verb needs besides the option under test (valid values), as the CLI takes them and as the API does.
_NEEDS: dict[str, dict[str, Any]] = {
    "convert": {"to": "openai"}, "tokenize": {"tokenizer": "tok", "output": "out"}, "pack": {"output": "o", "max_len": 8},
    "split": {"val": 0.1, "output": "o"}, "decontaminate": {"against": ["b.jsonl"], "output": "o"},
    "export": {"to": "jsonl", "output": "o"}, "train": {"model": "m", "output": "o"}, "mix": {"output": "o"},
    "dedup": {"output": "o"},
}
# A recipe's sections need these besides the option under test
_RECIPE_NEEDS = {"convert": "to: openai", "split": "val: 0.1", "decontaminate": f"against: [{SAMPLES / 'openai.jsonl'}]",
                 "pack": "max_len: 64", "tokenize": f"tokenizer: {SAMPLES / 'tokenizer'}", "train": "model: m"}


def _bad(option: opts.Option) -> Any:
    """A value the option's table refuses, or None when the table leaves any text to the verb."""
    if option.choices or option.pattern:
        return "nope"
    if option.path == "folder":
        return "-"
    if option.type is bool:
        return "maybe"
    if option.type in (int, float):
        if option.low is not None:
            return option.low - 1 if option.type is int else option.low - 0.5
        return option.high + 1 if option.high is not None else "many"
    return None


_CASES = [(verb, option) for verb, v in VERBS.items() for option in v.table if _bad(option) is not None]


def _cli_args(verb: str, option: opts.Option, bad: Any, tmp_path: Path) -> list[str]:
    reads = VERBS[verb].reads
    args = [verb] + ([str(tmp_path / "in.jsonl")] if reads in ("inputs", "targets") else [str(tmp_path)] if reads else [])
    for name, value in _NEEDS.get(verb, {}).items():
        if name != option.name:
            flag = opts.option(verb, name).flag
            args += [a for v in (value if isinstance(value, list) else [value]) for a in (flag, str(v))]
    return args + [option.flag, str(bad)]


@pytest.mark.parametrize(("verb", "option"), _CASES, ids=[f"{v}.{o.name}" for v, o in _CASES])
def test_a_bad_value_gets_the_same_words_from_the_cli_the_api_and_a_recipe(verb: str, option: opts.Option,
                                                                          tmp_path: Path) -> None:
    bad = _bad(option)
    words = f"{option.flag} {option.problem(bad)}"
    assert option.problem(bad)
    if option.type is not bool and option.cli:  # a flag carries no value to refuse on the command line
        done = CliRunner().invoke(main, _cli_args(verb, option, bad, tmp_path))
        assert done.exit_code == 2 and done.stderr.strip() == f"prep: {words}", done.stderr

    inputs_option = VERBS[verb].reads == "inputs" and option in opts.INPUTS and option.name not in _NEEDS.get(verb, {})
    with pytest.raises(PrepError) as api:
        if inputs_option:  # the Python API's Inputs, as the CLI and recipes make it
            Inputs.from_options({"files": ["in.jsonl"], option.name: bad})
        elif option.name not in VERBS[verb].parameters:  # the caller's own option (quiet): prep.verbs checks it
            VERBS[verb].arguments({**_NEEDS.get(verb, {}), option.name: bad})
        elif verb == "train":
            VERBS[verb].load(VERBS[verb].options)(**{**_NEEDS["train"], option.name: bad})
        else:
            first = {"inputs": Inputs(["in.jsonl"])}.get(VERBS[verb].reads, str(tmp_path))
            VERBS[verb].load()(first, **{**{k: v for k, v in _NEEDS.get(verb, {}).items()}, option.name: bad})
    assert str(api.value) == words

    section = "inputs" if inputs_option else verb
    if option.recipe and section in opts.RECIPE_SECTIONS:
        lines = [f"inputs: {{files: [{SAMPLES / 'openai.jsonl'}]}}",
                 f"tokenize: {{tokenizer: {SAMPLES / 'tokenizer'}}}" if section != "tokenize" else ""]
        body = {k: v for k, v in [line.split(": ", 1) for line in [_RECIPE_NEEDS.get(section, "")] if line]}
        if section == "inputs":
            lines[0] = f"inputs: {{files: [{SAMPLES / 'openai.jsonl'}], {option.name}: {json.dumps(bad)}}}"
        else:
            body[option.name] = json.dumps(bad) if not option.multiple else f"[{json.dumps(bad)}]"
            lines.append(f"{section}: {{{', '.join(f'{k}: {v}' for k, v in body.items())}}}")
        recipe = tmp_path / "r.yaml"
        recipe.write_text("\n".join(filter(None, lines)) + "\n", encoding="utf-8")
        with pytest.raises(PrepError) as from_recipe:
            load_recipe(recipe)
        assert str(from_recipe.value).endswith(f": {section}.{option.name} {option.problem(bad)}"), \
            str(from_recipe.value)


def test_every_option_is_the_verbs_or_the_callers() -> None:
    """A table option the function does not take is one the caller acts on (quiet, --report, a recipe's
    allow_errors): each is named here, so no option is silently dropped on its way to the verb."""
    callers = {"quiet", "report", "allow_errors", "tokens", "show", "list_templates", "as_json"}
    for verb, v in VERBS.items():
        for option in opts.TABLES[verb]:
            assert option.name in v.parameters or option.name in callers, f"{verb}.{option.name}"


def test_stats_on_a_folder_with_a_rejected_row_exits_1(tmp_path: Path) -> None:
    data = tmp_path / "in.jsonl"
    data.write_text((SAMPLES / "openai.jsonl").read_text(encoding="utf-8") + "not json\n", encoding="utf-8")
    made = CliRunner().invoke(main, ["tokenize", str(data), "--tokenizer", str(SAMPLES / "tokenizer"), "--template",
                                     "chatml", "-o", str(tmp_path / "tok")])
    assert made.exit_code == 1
    assert CliRunner().invoke(main, ["stats", str(tmp_path / "tok")]).exit_code == 1
    assert CliRunner().invoke(main, ["stats", str(data)]).exit_code == 1
    assert CliRunner().invoke(main, ["stats", str(SAMPLES / "openai.jsonl")]).exit_code == 0


# ---------------------------------------------------------------- progress


def _on_a_terminal(args: list[str], cwd: Path) -> tuple[int, str]:
    """Run prep with its stderr on a pseudo-terminal (where the progress bar is drawn); (exit code, what it drew)."""
    leader, follower = pty.openpty()
    env = {**os.environ, "COLUMNS": "160", "TERM": "xterm"}
    proc = subprocess.Popen([sys.executable, "-m", "prep", *args], stdout=subprocess.DEVNULL, stderr=follower,
                            stdin=subprocess.DEVNULL, cwd=cwd, env=env)
    os.close(follower)
    drawn = b""
    while True:
        try:
            chunk = os.read(leader, 1 << 16)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        drawn += chunk
    os.close(leader)
    return proc.wait(), drawn.decode(errors="replace")


@pytest.mark.slow
def test_every_data_verb_shows_progress_and_none_when_quiet(tmp_path: Path) -> None:
    rows = [{"messages": [{"role": "user", "content": f"question {i} about {i * 7 % 1000}"},
                          {"role": "assistant", "content": f"answer {i} is {i * 13 % 997}"}]} for i in range(2_000)]
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    bench = tmp_path / "bench.jsonl"
    bench.write_text(json.dumps({"question": "what is the answer to question 77 about the weather today"}) + "\n")
    tok = ["--tokenizer", str(SAMPLES / "tokenizer"), "--template", "chatml"]
    runs = {
        "convert": ["convert", str(data), "--to", "trl", "-o", "c.jsonl"],
        "validate": ["validate", str(data)],
        "template": ["template", str(data), "--template", "chatml", "-o", "t.jsonl"],
        "tokenize": ["tokenize", str(data), *tok, "-o", "tok"],
        "mix": ["mix", f"{data}:1000", "-o", "m.jsonl"],
        "dedup": ["dedup", str(data), "--exact", "-o", "d.jsonl"],
        "split": ["split", str(data), "--val", "100", "--exact", "-o", "s"],
        "decontaminate": ["decontaminate", str(data), "--against", str(bench), "-o", "x.jsonl"],
        "pack": ["pack", "tok", "--max-len", "1024", "-o", "packed"],
        "verify": ["verify", "tok"],
        "stats": ["stats", "tok"],
        "export": ["export", "tok", "--to", "axolotl", "-o", "e.parquet"],
    }
    for verb, args in runs.items():
        code, drawn = _on_a_terminal(args, tmp_path)
        assert code == 0, (verb, drawn[-2000:])
        assert "2,000 rows" in drawn or "1,000 rows" in drawn, (verb, drawn[-2000:])
        for name in ("c.jsonl", "t.jsonl", "m.jsonl", "d.jsonl", "x.jsonl", "e.parquet", "m.manifest.json"):
            (tmp_path / name).unlink(missing_ok=True)
        if verb not in ("convert", "validate"):  # --quiet is one switch of the shell for every verb: two show it
            continue
        quiet_code, quiet = _on_a_terminal([*args, "-q"] if verb != "validate" else [*args, "--quiet"], tmp_path)
        assert quiet_code == 0 and "rows/s" not in quiet, (verb, quiet[-2000:])
        for name in ("c.jsonl", "t.jsonl", "m.jsonl", "d.jsonl", "x.jsonl", "m.manifest.json"):
            (tmp_path / name).unlink(missing_ok=True)


@pytest.mark.parametrize(("verb", "threads"), [("tokenize", "1"), ("dedup", "1"), ("train", None), ("run", None)])
def test_data_verbs_start_numpy_without_blas_threads(verb: str, threads: str | None,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A data verb sets OPENBLAS_NUM_THREADS=1 before numpy loads (its thread per core costs start-up and no data verb
    does linear algebra); the verbs that may train leave it to the user, and a user's own value stays."""
    from prep.cli import main

    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "")  # recorded, so that the CLI's setting is undone after the test
    monkeypatch.delenv("OPENBLAS_NUM_THREADS")
    assert CliRunner().invoke(main, [verb, "--help"]).exit_code == 0
    assert os.environ.get("OPENBLAS_NUM_THREADS") == threads
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "4")
    assert CliRunner().invoke(main, [verb, "--help"]).exit_code == 0
    assert os.environ["OPENBLAS_NUM_THREADS"] == "4"


def test_a_data_verb_run_as_its_own_process_skips_the_interpreters_teardown(tmp_path: Path) -> None:
    """`prep` as a process of its own (`run()`, the console script and `python -m prep`) ends a data verb with
    os._exit once it is done: an atexit hook does not run, and standard output, piped and so block-buffered, is whole
    (19,980 converted rows, JSON statistics). A verb that fails, and `main()` inside another program, end as usual."""
    big = tmp_path / "big.jsonl"
    row = (SAMPLES / "openai.jsonl").read_text(encoding="utf-8").splitlines()[0]
    big.write_text("".join(json.dumps({**json.loads(row), "id": str(k)}) + "\n" for k in range(19_980)),
                   encoding="utf-8")
    hook = "import atexit, sys\natexit.register(lambda: sys.stderr.write('teardown\\n'))\nfrom prep.cli import {}\n{}()"

    def prep(*args: str, entry: str = "run") -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", hook.format(entry, entry), *args], capture_output=True,
                              text=True, cwd=tmp_path)

    converted = prep("convert", str(big), "--to", "sharegpt", "-o", "-", "-q")
    assert converted.returncode == 0 and "teardown" not in converted.stderr
    assert len(converted.stdout.splitlines()) == 19_980 and json.loads(converted.stdout.splitlines()[-1])
    stats = prep("stats", str(big), "--json")
    assert stats.returncode == 0 and "teardown" not in stats.stderr and json.loads(stats.stdout)["counts"]
    missing = prep("stats", str(tmp_path / "missing.jsonl"))
    assert missing.returncode == 2 and "teardown" in missing.stderr
    inside = prep("stats", str(big), "--json", entry="main")
    assert inside.returncode == 0 and "teardown" in inside.stderr and json.loads(inside.stdout)["counts"]


def test_the_command_picks_a_faster_malloc_for_tokenize_only_and_says_when_it_cannot(tmp_path: Path, capsys: Any,
                                                                                      monkeypatch: Any) -> None:
    """prep/__main__.py's decision: tokenize starts again with the library PREP_MALLOC names, after any the user
    preloads (theirs comes first and wins), and not for another verb, `PREP_MALLOC=system`, a process already
    started again, a library already preloaded, or a PREP_MALLOC path that is no shared library (said on stderr); a
    bare name goes to the loader as it is. Started again, LD_PRELOAD is put back as it was."""
    lib = tmp_path / "libfast.so.2"
    lib.write_bytes(b"\x7fELF" + bytes(60))
    env = {"PREP_MALLOC": str(lib), "LD_PRELOAD": "/other.so"}
    restarted = with_fast_malloc(["prep", "tokenize", "x.jsonl"], env)
    assert restarted is not None and restarted["LD_PRELOAD"] == f"/other.so {lib}"
    put_back_preload(restarted)
    assert restarted["LD_PRELOAD"] == "/other.so" and "_PREP_LD_PRELOAD" not in restarted
    again = with_fast_malloc(["prep", "tokenize"], {"PREP_MALLOC": str(lib)})
    assert again is not None
    assert with_fast_malloc(["prep", "tokenize"], again) is None  # started again: never a second time
    put_back_preload(again)
    assert "LD_PRELOAD" not in again
    for argv, environ in ((["prep", "stats", "x.jsonl"], env), (["prep", "--help"], env),
                          (["prep", "tokenize"], {**env, "PREP_MALLOC": "system"}),
                          (["prep", "tokenize"], {**env, "LD_PRELOAD": f"/a.so:{lib}"})):
        assert with_fast_malloc(argv, environ) is None, (argv, environ)
    bare = with_fast_malloc(["prep", "tokenize"], {"PREP_MALLOC": "libjemalloc.so.2"})
    assert bare is not None and bare["LD_PRELOAD"] == "libjemalloc.so.2"
    monkeypatch.chdir(tmp_path)  # a relative path is made absolute: the loader does not look in the working directory
    relative = with_fast_malloc(["prep", "tokenize"], {"PREP_MALLOC": f"./{lib.name}"})
    assert relative is not None and relative["LD_PRELOAD"] == str(lib)
    text = tmp_path / "notes.txt"
    text.write_text("not a library", encoding="utf-8")
    for wanted in (str(tmp_path / "none.so"), str(text)):
        assert with_fast_malloc(["prep", "tokenize"], {"PREP_MALLOC": wanted}) is None
        assert f"PREP_MALLOC={wanted} is not a shared library" in capsys.readouterr().err


def test_tokenize_run_as_a_command_preloads_mimalloc_and_writes_the_same_shards(tmp_path: Path) -> None:
    """`python -m prep tokenize` on a machine with mimalloc or jemalloc: the process started again loads it (the
    dynamic loader's own log, LD_DEBUG=files), and its shards are byte for byte those of a run with the system's
    malloc; `prep stats` loads none."""
    library = next((p for p in MALLOC_LIBRARIES if os.path.isfile(p)), None)
    if library is None:
        pytest.skip("no mimalloc or jemalloc on this machine (Debian: apt-get install libmimalloc2.0)")
    args = [str(SAMPLES / "openai.jsonl"), "--tokenizer", str(SAMPLES / "tokenizer"), "--template", "chatml", "-q"]

    def prep(*more: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "prep", *more], capture_output=True, text=True, cwd=tmp_path,
                              env={**os.environ, "LD_DEBUG": "files", **env})

    fast = prep("tokenize", *args, "-o", "fast")
    system = prep("tokenize", *args, "-o", "system", PREP_MALLOC="system")
    assert fast.returncode == 0 and system.returncode == 0, fast.stderr[-2000:] + system.stderr[-2000:]
    assert f"calling init: {library}" in fast.stderr
    assert library not in system.stderr
    shards = sorted((tmp_path / "fast" / "data").iterdir())
    assert shards and [s.read_bytes() for s in shards] == [
        (tmp_path / "system" / "data" / s.name).read_bytes() for s in shards]
    stats = prep("stats", str(SAMPLES / "openai.jsonl"))
    assert stats.returncode == 0 and library not in stats.stderr
