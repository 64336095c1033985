"""`--engine ray` (design §13) on a local Ray cluster of two CPUs: every stage's output is the local engine's
(rows, ids, manifest, tally, rejects; byte for byte but for tokenize's and pack's shards, which the workers write
a part each; pack's rows with media too), a worker killed in mid-run costs nothing, and a big JSONL file runs in parallel pieces with its own line
numbers."""

from __future__ import annotations

import filecmp
import json
import os
import signal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

import prep
from conftest import SAMPLES, fixture, run_prep
from prep.core.findings import PrepError
from prep.core.result import Progress
from prep.formats.inputs import Inputs
from prep.recipes.recipe import load_recipe
from prep.render.tokenizer import load_tokenizer
from prep.shards.layout import read_manifest
from prep.shards.reader import iter_tables
from prep.shards.verify import verify
from prep.stages import validate_report as show
from prep.stages.convert import convert
from prep.stages.dedup import dedup
from prep.stages.pack import pack
from prep.stages.tokenize import tokenize
from prep.stages.validate import validate
from test_media_shards import FLAT, _many_rows, _rows, write_folder

# A one-machine Ray on the loopback address, reporting nothing: read when Ray is imported, so set first.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'prep[ray]')")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def cluster() -> Any:
    """One local Ray of two CPUs for the module, every process on the loopback address; its address (on a port Ray
    picked) for a `prep` process to join."""
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    assert {n["NodeManagerAddress"] for n in ray.nodes()} == {"127.0.0.1"}
    yield ray.get_runtime_context().gcs_address
    if started:
        ray.shutdown()


def _big_jsonl(path: Path, copies: int) -> Path:
    """The alpaca fixture `copies` times as JSONL, with what a long file has: a BOM, blank lines, lines that are
    not JSON and invalid UTF-8, so pieces start mid-file and rejects come from every piece."""
    rows = json.loads(fixture("data", "llamafactory", "alpaca_en_demo.json").read_text(encoding="utf-8"))
    with path.open("wb") as f:
        f.write(b"\xef\xbb\xbf")
        for k in range(copies):
            for i, row in enumerate(rows):
                n = k * len(rows) + i
                if n % 997 == 3:
                    f.write(b"{not json\n")
                elif n % 1511 == 7:
                    f.write(b'{"instruction": "caf\xe9", "output": "x"}\n')
                elif n % 701 == 0:
                    f.write(b"\n   \n")
                f.write(json.dumps({"id": f"{i}#{k}", **row}, ensure_ascii=False).encode() + b"\n")
    return path


def _same(a: Path, b: Path) -> None:
    assert filecmp.cmp(a, b, shallow=False), f"{a} and {b} differ"


def _same_rows(local: Path, distributed: Path, parts: int) -> None:
    """Shards the Ray workers wrote (one per part) hold the local engine's rows, in order, under the same manifest
    but for the shard list, and pass verify."""
    mine, theirs = read_manifest(local), read_manifest(distributed)
    assert {k: v for k, v in mine.items() if k != "shards"} == {k: v for k, v in theirs.items() if k != "shards"}
    assert len(theirs["shards"]) == parts > len(mine["shards"])
    assert pa.concat_tables(iter_tables(local)).equals(pa.concat_tables(iter_tables(distributed)))
    assert verify(distributed).exit_code == 0


def _ours(pid: int) -> bool:
    """Whether process `pid` descends from this one (the Ray this test started), not another program's."""
    while pid > 1:
        if pid == os.getpid():
            return True
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return False
    return False


def _killer(killed: list[tuple[int, int]]) -> Any:
    """A progress function that SIGKILLs one of this Ray's Data worker processes once the first part is back, and
    notes its pid and the rows back by then."""

    def progress(p: Progress) -> None:
        if p.rows and not killed:
            for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
                try:
                    text = cmdline.read_bytes()
                except OSError:
                    continue
                if text.startswith(b"ray::MapWorker") and _ours(int(cmdline.parent.name)):
                    pid = int(cmdline.parent.name)
                    os.kill(pid, signal.SIGKILL)
                    killed.append((pid, p.rows))
                    return

    return progress


def test_convert_under_ray_is_the_local_output(tmp_path: Path) -> None:
    """Samples of every container (JSON, JSONL, CSV, TXT) and a big JSONL cut into pieces: the same rows, ids,
    rejects (with the file's own line numbers) and tally, in the same order."""
    fixture("data", "llamafactory", "alpaca_en_demo.json")
    big = _big_jsonl(tmp_path / "big.jsonl", 5)
    files = [str(SAMPLES / n) for n in ("alpaca.json", "sharegpt.jsonl", "openai.jsonl", "coqa.json",
                                        "autotrain.csv", "text.txt")] + [str(big)]
    results = {}
    for engine in ("local", "ray"):
        results[engine] = convert(Inputs(files), "trl", str(tmp_path / f"{engine}.jsonl"),
                                  rejects=str(tmp_path / f"{engine}.rejects.jsonl"), engine=engine)
    local, distributed = results["local"], results["ray"]
    _same(tmp_path / "local.jsonl", tmp_path / "ray.jsonl")
    _same(tmp_path / "local.rejects.jsonl", tmp_path / "ray.rejects.jsonl")
    assert local.tally.to_dict() == distributed.tally.to_dict() and local.tally.rejected_total > 0
    assert local.files == distributed.files and local.formats == distributed.formats
    assert distributed.engine["parts"] > len(files) and 1 <= distributed.engine["workers"] <= 2
    lines = [json.loads(x)["line"] for x in (tmp_path / "ray.rejects.jsonl").read_text().splitlines()
             if json.loads(x)["file"] == str(big)]
    raw = big.read_bytes().split(b"\n")
    assert lines and all(not raw[n - 1].startswith(b'{"id"') for n in lines)  # the real lines, not a piece's


def test_validate_under_ray_is_the_local_report(tmp_path: Path) -> None:
    """Samples and a big JSONL in pieces, a validation file (near duplicates across files), with and without the
    token checks: the same report JSON (every finding, in order; the statistics) and the same rejects."""
    fixture("data", "llamafactory", "alpaca_en_demo.json")
    big = _big_jsonl(tmp_path / "big.jsonl", 2)  # two pieces, each with rejects
    files = [str(SAMPLES / n) for n in ("alpaca.json", "sharegpt.jsonl", "openai.jsonl", "autotrain.csv")] + [str(big)]
    for tokens in ({}, {"tokenizer": str(fixture("tokenizers", "qwen2.5")), "max_len": 128}):
        for engine in ("local", "ray"):
            result = validate(Inputs(files), validation=[str(SAMPLES / "sharegpt.jsonl")], engine=engine,
                              rejects=str(tmp_path / f"{engine}.rejects.jsonl"), **tokens)
            show.write_json(result, str(tmp_path / f"{engine}.json"))
        _same(tmp_path / "local.json", tmp_path / "ray.json")
        _same(tmp_path / "local.rejects.jsonl", tmp_path / "ray.rejects.jsonl")
        report = json.loads((tmp_path / "ray.json").read_text())
        assert report["summary"]["errors"] and report["summary"]["rows_read"] > 2000
        assert result.engine["parts"] > len(files)


def test_dedup_under_ray_is_the_local_output(tmp_path: Path) -> None:
    """Near and exact: pass one (fingerprints) on the workers, the same rows kept and removed, each removed row
    naming the same twin."""
    fixture("data", "llamafactory", "alpaca_en_demo.json")
    big = _big_jsonl(tmp_path / "big.jsonl", 2)  # every row twice: the second copy of each goes
    for exact in (False, True):
        results = {}
        for engine in ("local", "ray"):
            results[engine] = dedup(Inputs([str(big), str(SAMPLES / "alpaca.json")]), str(tmp_path / f"{engine}.jsonl"),
                                    rejects=str(tmp_path / f"{engine}.rejects.jsonl"), exact=exact, engine=engine)
        _same(tmp_path / "local.jsonl", tmp_path / "ray.jsonl")
        _same(tmp_path / "local.rejects.jsonl", tmp_path / "ray.rejects.jsonl")
        assert results["local"].tally.to_dict() == results["ray"].tally.to_dict()
        assert (results["ray"].exact, results["ray"].near) == (results["local"].exact, results["local"].near)
        assert results["ray"].exact > 900 and results["ray"].engine["parts"] > 2


def test_tokenize_and_pack_under_ray_are_the_local_shards(tmp_path: Path) -> None:
    """sft from the fixture (rows cut by max_len, rejects from every piece), dpo from the samples, the workers
    writing their parts: the same rows, manifest (but the shard list) and rejects; a file that breaks off leaves
    nothing behind. Then pack with documents to cut and a small window, the workers writing the packed rows: the
    same rows, manifest (but the shard list), tallies and rejects."""
    qwen = fixture("tokenizers", "qwen2.5")
    big = _big_jsonl(tmp_path / "big.jsonl", 2)  # two pieces, each with rejects
    runs = {
        "sft": dict(inputs=Inputs([str(big), str(SAMPLES / "openai.jsonl")]), tokenizer=str(qwen),
                    template="chatml", max_len=384, overflow="truncate"),
        "dpo": dict(inputs=Inputs([str(SAMPLES / "trl_preference.jsonl"), str(SAMPLES / "openai_dpo.jsonl")]),
                    tokenizer=str(SAMPLES / "tokenizer"), template="chatml", max_len=256),
    }
    tallies = {}
    for name, kw in runs.items():
        out = {}
        for engine in ("local", "ray"):
            out[engine] = tokenize(kw["inputs"], kw["tokenizer"], str(tmp_path / name / engine), template=kw["template"],
                                   max_len=kw["max_len"], overflow=kw.get("overflow", "drop"),
                                   rejects=str(tmp_path / name / f"{engine}.rejects.jsonl"), engine=engine)
        _same_rows(tmp_path / name / "local", tmp_path / name / "ray", out["ray"].engine["parts"])
        assert out["local"].tally.to_dict() == out["ray"].tally.to_dict()
        assert out["local"].tally.examples == out["ray"].tally.examples
        _same(tmp_path / name / "local.rejects.jsonl", tmp_path / name / "ray.rejects.jsonl")
        assert 1 <= out["ray"].engine["workers"] <= 2 and out["ray"].engine["nodes"] == 1
        tallies[name] = out["ray"].tally
    assert tallies["sft"].rejected["bad_json"] and tallies["sft"].altered["truncated"]
    broken = tmp_path / "broken.json"  # the first part fails while the workers write the others: nothing is left
    broken.write_text('[{"instruction": "a", "output": "b"},\n{"instruction": ', encoding="utf-8")
    with pytest.raises(PrepError, match="broken.json:2"):
        tokenize(Inputs([str(broken), str(big)]), str(qwen), str(tmp_path / "b" / "out"), template="chatml",
                 rejects=str(tmp_path / "b" / "rejects.jsonl"), engine="ray")
    assert not os.listdir(tmp_path / "b")
    for max_len, window in ((1024, 100_000), (256, 700)):  # 256: documents to cut (the input was truncated)
        packed = {}
        for engine in ("local", "ray"):
            packed[engine] = pack(tmp_path / "sft" / "local", tmp_path / f"p{max_len}{engine}", max_len, window=window,
                                  rejects=str(tmp_path / f"p{max_len}{engine}.rejects.jsonl"), engine=engine)
        _same_rows(tmp_path / f"p{max_len}local", tmp_path / f"p{max_len}ray", packed["ray"].engine["parts"])
        assert packed["local"].tally.to_dict() == packed["ray"].tally.to_dict()
        _same(tmp_path / f"p{max_len}local.rejects.jsonl", tmp_path / f"p{max_len}ray.rejects.jsonl")
    assert packed["ray"].tally.altered["truncated"] > 0


def test_pack_under_ray_is_the_local_output_with_media(tmp_path: Path) -> None:
    """Shards whose rows hold images (test_media_shards' rows, one-dimensional positions), packed with documents to
    cut and rows too long: the workers' packed rows, media columns and manifest are the local engine's."""
    tok = load_tokenizer(fixture("processors/qwen2-vl"))
    rows, inside = _many_rows(tmp_path, tok, 20)
    src = write_folder(tmp_path / "tok", tok, rows, [".", str(tmp_path / "pics")], FLAT, inside=inside,
                       overflow="truncate")
    out = {e: pack(src, tmp_path / e, 30, window=7, engine=e, rejects=str(tmp_path / f"{e}.jsonl"))
           for e in ("local", "ray")}
    assert out["local"].manifest == out["ray"].manifest
    assert out["local"].tally.altered["truncated"] and out["local"].tally.rejected["too_long"]
    assert _rows(tmp_path / "ray") == _rows(tmp_path / "local")
    assert verify(tmp_path / "ray").ok


def test_a_worker_killed_mid_run_loses_nothing_and_writes_nothing_twice(tmp_path: Path) -> None:
    """SIGKILL of a Ray Data worker process after the first part is back: Ray Data restarts it and runs its part
    again, writing it over its half-written files; the shards hold the local engine's rows (every row once, in
    order)."""
    qwen = fixture("tokenizers", "qwen2.5")
    inputs = Inputs([str(_big_jsonl(tmp_path / "big.jsonl", 4))])
    local = tokenize(inputs, str(qwen), str(tmp_path / "local"), template="chatml")
    killed: list[tuple[int, int]] = []
    distributed = tokenize(inputs, str(qwen), str(tmp_path / "ray"), template="chatml", engine="ray", ray_workers=2,
                           progress=_killer(killed))
    assert killed, "no worker was running to kill"
    assert killed[0][1] < distributed.tally.read, "the kill came after the last part was back: it tested nothing"
    _same_rows(tmp_path / "local", tmp_path / "ray", distributed.engine["parts"])
    assert distributed.tally.read == local.tally.read == distributed.tally.written + distributed.tally.rejected_total


def test_the_cli_and_a_recipe_run_on_ray(tmp_path: Path, cluster: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """`prep convert --engine ray` starts a local Ray of its own and says how many workers ran; joining a running
    Ray through $RAY_ADDRESS it refuses a broken file as locally; a recipe's top-level `engine: ray` runs its data
    stages there, and the stage keys do not depend on the engine (a local re-run skips them)."""
    proc = run_prep("convert", str(SAMPLES / "sharegpt.jsonl"), "--to", "openai", "-o", str(tmp_path / "c.jsonl"),
                    "--engine", "ray", "--ray-workers", "1")
    assert proc.returncode == 0, proc.stderr.decode()
    assert "(ray: 1 parts on 1 worker, 1 node)" in proc.stderr.decode()
    broken = tmp_path / "broken.json"  # a file that breaks off: the same one-line refusal as locally, exit 2
    broken.write_text('[{"instruction": "a", "output": "b"},\n{"instruction": ', encoding="utf-8")
    monkeypatch.setenv("RAY_ADDRESS", cluster)  # this module's Ray: no second start-up (a local run ignores it)
    said = [run_prep("convert", str(broken), "--to", "openai", "-o", str(tmp_path / "b.jsonl"), "-q", *engine)
            for engine in ([], ["--engine", "ray", "--ray-workers", "1"])]
    assert [p.returncode for p in said] == [2, 2], said[1].stderr.decode()
    assert said[0].stderr.decode().strip() in said[1].stderr.decode()
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"output: {tmp_path / 'run'}\nengine: ray\ninputs:\n  files: [{SAMPLES / 'openai.jsonl'}]\n"
                      f"convert:\n  to: openai\ntokenize:\n  tokenizer: {SAMPLES / 'tokenizer'}\n  template: chatml\n"
                      "pack:\n  max_len: 1024\n", encoding="utf-8")
    result = prep.run(load_recipe(recipe))  # in this process, on this module's Ray
    assert result.exit_code == 0, result.to_dict()
    assert [(s.name, "(ray: " in s.summary["line"]) for s in result.stages] == [
        ("convert", True), ("tokenize", True), ("pack", True)], result.to_dict()
    again = prep.run(load_recipe(recipe, ["engine=local"]))
    assert again.exit_code == 0 and [s.status for s in again.stages] == ["skipped"] * 3, again.to_dict()
