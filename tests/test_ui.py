"""`prep ui`: the pages' actions in-process (refusals, the token, the form built from the options table), and the
whole chain once in headless Chromium against `prep ui` as a user starts it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from browser import Chromium, needs_chromium
from conftest import ROOT, SAMPLES, make_tiny_model
from prep.cli import main
from prep.core.findings import PrepError
from prep.core.options import TABLES
from prep.recipes.recipe import load_recipe
from prep.recipes.runner import plan, run, write_run_json
from prep.verbs import call

pytest.importorskip("starlette", reason="prep ui needs the ui extra (pip install 'prep[ui]')")
from starlette.testclient import TestClient  # noqa: E402 - only with the ui extra

from prep.ui.app import make_app, serve  # noqa: E402 - only with the ui extra


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ROOT holding the samples and the quickstart recipe, and a file with a bad row; a folder beside it that
    ROOT's symlink points out to."""
    base = tmp_path_factory.mktemp("ui")
    (base / "outside").mkdir()
    (base / "outside" / "secret.jsonl").write_text('{"text": "not yours"}\n')
    folder = base / "root"
    shutil.copytree(SAMPLES, folder / "samples")
    (folder / "recipes").mkdir()
    shutil.copy(ROOT / "recipes" / "quickstart.yaml", folder / "recipes")
    (folder / "bad.jsonl").write_text('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", '
                                      '"content": "hello"}]}\n{"messages": [{"role": "user", "content": "no answer"}]}\n')
    (folder / "out").symlink_to(base / "outside")
    return folder


@pytest.fixture()
def client(root: Path) -> TestClient:
    return TestClient(make_app(root), base_url="http://127.0.0.1")


def test_paths_outside_root_are_refused(root: Path, client: TestClient) -> None:
    for path in ("../outside/secret.jsonl", str(root.parent / "outside" / "secret.jsonl"), "out/secret.jsonl",
                 "samples/../../outside/secret.jsonl"):
        done = client.post("/api/data", json={"file": path})
        assert done.status_code == 403 and "ROOT" in done.json()["error"], (path, done.text)
        assert client.get("/api/row", params={"file": path, "row": 1}).status_code == 403
        assert client.get(f"/files/{path}").status_code in (403, 404)  # a URL's `..` never reaches a file
        assert client.put("/api/upload", params={"path": path}, content=b"x").status_code == 403
    assert client.get("/files/out/secret.jsonl").status_code == 403
    for where in ("../x.yaml", "/tmp/x.yaml", "out/x.yaml"):
        assert client.post("/api/recipe/save", json={"path": where, "form": {}}).status_code == 403
    # a recipe (saved by hand) whose output or inputs leave ROOT is refused before it runs
    (root / "recipes" / "away.yaml").write_text(f"output: {root.parent / 'outside' / 'run'}\ninputs:\n  files: "
                                                "[../samples/coqa.json]\nconvert: {to: openai}\n")
    (root / "recipes" / "reads.yaml").write_text("inputs:\n  files: [../out/secret.jsonl]\nconvert: {to: openai}\n")
    for recipe in ("recipes/away.yaml", "recipes/reads.yaml"):
        done = client.post("/api/run/start", json={"recipe": recipe})
        assert done.status_code == 403 and "outside ROOT" in done.json()["error"], done.text
    assert not (root.parent / "outside" / "run").exists()


def test_an_upload_is_written_whole_or_not_at_all(root: Path, client: TestClient,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from prep.ui import app

    assert client.put("/api/upload", params={"path": "up/a.jsonl"}, content=b'{"text": "hi"}\n').json() == \
        {"saved": "up/a.jsonl", "bytes": 15}
    assert (root / "up" / "a.jsonl").read_bytes() == b'{"text": "hi"}\n'
    assert client.put("/api/upload", params={"path": "up/a.jsonl"}, content=b"x").status_code != 200  # kept
    monkeypatch.setattr(app, "MAX_UPLOAD", 4)
    assert client.put("/api/upload", params={"path": "up/b.jsonl"}, content=b"0123456789").status_code != 200
    assert sorted(p.name for p in (root / "up").iterdir()) == ["a.jsonl"]  # no part of b, no temporary file


def test_a_request_without_the_token_is_refused(root: Path) -> None:
    guarded = TestClient(make_app(root, token="s3cret"), base_url="http://127.0.0.1")
    for url in ("/data", "/api/files", "/static/ui.js", "/files/samples/coqa.json"):
        assert guarded.get(url).status_code == 401
    assert guarded.get("/api/files", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert guarded.get("/api/files", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    first = guarded.get("/data", params={"token": "s3cret"})  # the printed URL: sets the cookie
    assert first.status_code == 200 and "HttpOnly" in first.headers["set-cookie"]
    assert guarded.get("/api/files").status_code == 200  # the cookie from now on
    # another site's page cannot make changes, and a name other than loopback is not answered
    assert guarded.post("/api/run/stop", headers={"Origin": "http://evil.example"}).status_code == 403
    assert TestClient(make_app(root), base_url="http://evil.example").get("/data").status_code == 403
    with pytest.raises(PrepError, match="--token"):
        serve(str(root), "0.0.0.0", 0, None)


def test_the_data_page_shows_the_format_the_findings_and_the_row(client: TestClient) -> None:
    d = client.post("/api/data", json={"file": "bad.jsonl"}).json()
    assert d["files"][0]["format"] == "openai"
    s = d["summary"]
    assert (s["rows_read"], s["rows_accepted"], s["rows_rejected"]) == (2, 1, 1)
    (code,) = [c for c, v in s["findings_by_code"].items() if v["severity"] == "error"]
    (bad,) = [f for f in d["findings"] if f["code"] == code]
    assert bad["line"] == 2
    shown = client.get("/api/row", params={"file": "bad.jsonl", "line": 2}).json()
    assert shown["raw"] == {"messages": [{"role": "user", "content": "no answer"}]}
    assert shown["record"] == {"id": "bad.jsonl:2", **shown["raw"]}  # read, then refused by validate's rules
    coqa = client.post("/api/data", json={"file": "samples/coqa.json"}).json()
    assert coqa["files"][0]["format"] == "coqa" and coqa["summary"]["errors"] == 0
    fields = coqa["fields"]  # every field mapped or counted as dropped, every row accounted for
    assert fields["read"] == fields["written"] == 4 and fields["dropped_fields"]["filename"] == 4
    first = client.get("/api/row", params={"file": "samples/coqa.json", "row": 1}).json()
    assert first["record"]["messages"][0]["role"] == "system" and "story" in first["raw"]


def test_the_template_page_shows_the_masks_of_the_policy(client: TestClient) -> None:
    asked = {"file": "samples/coqa.json", "tokenizer": "samples/tokenizer", "template": "chatml", "row": 0}
    answers = client.post("/api/template", json={**asked, "train_on": "assistant"}).json()
    everything = client.post("/api/template", json={**asked, "train_on": "all"}).json()
    assert answers["tokens"]["total"] == everything["tokens"]["total"]
    assert 0 < answers["tokens"]["loss"] < everything["tokens"]["loss"]
    (part,) = answers["sample"]["parts"]
    trained = [text for text, on in part["runs"] if on]
    assert trained[:2] == ["a dog<|im_end|>", "Biscuit<|im_end|>"] and len(trained) == 7  # the answers, and their end
    assert "".join(text for text, _ in part["runs"]).startswith("<|im_start|>system\n")


def test_the_recipe_form_is_the_options_table(root: Path, client: TestClient) -> None:
    page = client.get("/recipe").text
    for section in ("inputs", "convert", "validate", "tokenize", "pack", "train"):
        for option in (o for o in TABLES[section] if o.recipe):
            assert f'name="{section}.{option.name}"' in page, (section, option.name)
    assert 'name="train.lora_dropout" type="number" min="0" step="any"' in page  # [0, 1): the open end is the check's
    form = {"output": "runs/x", "sections": {"inputs": {"files": ["samples/coqa.json"]}, "convert": {"to": "openai"},
                                             "train": {"lora_alpha": "0.5", "model": "samples"}}}
    done = client.post("/api/recipe/save", json={"path": "recipes/x.yaml", "form": form}).json()
    assert "train.lora_alpha 0.5: must be an integer of at least 1" in done["error"]  # as --lora-alpha 0.5 is told
    assert done["error"].startswith("recipes/x.yaml:") and not (root / "recipes" / "x.yaml").exists()


def test_prep_run_events_follow_each_stage(root: Path, tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"output: {tmp_path / 'run'}\ninputs:\n  files: [{root / 'samples' / 'coqa.json'}]\n"
                      f"convert: {{to: openai}}\ntokenize:\n  tokenizer: {root / 'samples' / 'tokenizer'}\n")
    done = CliRunner().invoke(main, ["run", str(recipe), "-q", "--events", str(tmp_path / "events.jsonl")])
    assert done.exit_code == 0, done.output
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert events[0]["event"] == "plan" and [s["stage"] for s in events[0]["stages"]] == ["convert", "tokenize"]
    assert [(e["event"], e["stage"]) for e in events[1:] if e["event"] != "progress"] == [
        ("start", "convert"), ("finish", "convert"), ("start", "tokenize"), ("finish", "tokenize")]
    assert events[-1]["status"] == "ran" and "932 tokens" in events[-1]["line"]


def test_prep_ui_help_loads_no_web_framework() -> None:
    """`prep ui --help` answers from the CLI alone (its time: bench/ui_help.py)."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "prep", "ui", "--help"], capture_output=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert done.returncode == 0 and b"--token" in done.stdout
    loaded = {line.split("|")[-1].strip().split(".")[0] for line in done.stderr.decode().splitlines()[1:]}
    assert not loaded & {"starlette", "uvicorn", "torch", "pyarrow"}
    assert "prep.ui" not in done.stderr.decode()


# ---------------------------------------------------------------- the whole chain, in a browser

_QUICKSTART = {  # recipes/quickstart.yaml, as a user types it into the Recipe page (paths under ROOT)
    "inputs.files": "samples/coqa.json", "inputs.format": "coqa", "convert.to": "openai", "validate.tokens": "true",
    "tokenize.tokenizer": "samples/tokenizer", "tokenize.template": "chatml", "tokenize.train_on": "assistant",
    "tokenize.max_len": "1024", "pack.max_len": "1024", "train.model": "runs/models/tiny-llama", "train.lora_r": "16",
    "train.lora_alpha": "32", "train.lora_dropout": "0.05", "train.lr": "2.0e-3", "train.batch_size": "2",
    "train.max_steps": "30"}
_FILL = """(async (fields, stages) => {
  for (const fs of document.querySelectorAll('fieldset')) {
    const box = fs.querySelector('.use'); box.checked = stages.includes(fs.dataset.section);
    box.dispatchEvent(new Event('change', {bubbles: true}));
  }
  for (const [name, value] of Object.entries(fields)) {
    const el = document.querySelector(`[name="${name}"]`); el.value = value;
    el.dispatchEvent(new Event('input', {bubbles: true}));
  }
  for (const [id, value] of [['name', 'quickstart'], ['output', 'runs/quickstart'], ['path', 'recipes/ui.yaml']]) {
    document.getElementById(id).value = value;
  }
  return true;
})"""


def _choose(select: str, value: str) -> str:
    return (f"(() => {{ const s = document.querySelector('{select}'); if (![...s.options].some(o => o.value === "
            f"'{value}')) return false; s.value = '{value}'; s.dispatchEvent(new Event('change')); return true; }})()")


def _set(name: str, value: str) -> str:
    return (f"(() => {{ const el = document.querySelector('[name=\"{name}\"]'); el.value = '{value}'; "
            "el.dispatchEvent(new Event('input', {bubbles: true})); return true; })()")


def _click(selector: str) -> str:
    return f"document.querySelector('{selector}').click() ?? true"


def _stage(name: str) -> str:
    return (f"([...document.querySelectorAll('#stages tr')].map(r => [...r.cells].map(c => c.textContent))"
            f".find(r => r[0] === '{name}')?.[1] ?? '')")


@pytest.mark.slow
@needs_chromium
def test_the_whole_chain_in_chromium(tmp_path: Path) -> None:
    """From an empty ROOT holding the samples: `prep ui ROOT` prints its URL; the Data page reads coqa.json, the
    Template page shows the trained tokens, the Recipe page makes the quickstart (the same stage keys and values
    as recipes/quickstart.yaml) and saves it again with fewer training steps, the Run page runs it, is stopped in train (the stages before stay valid: prep
    verify) and run again to a trained adapter, its report opens, and the Runs page sets two runs side by side.
    No console error, and no request leaves this server. With PREP_UI_SHOTS=docs the screenshots are the README's."""
    folder = tmp_path / "root"
    shutil.copytree(SAMPLES, folder / "samples")
    (folder / "recipes").mkdir()
    shutil.copy(ROOT / "recipes" / "quickstart.yaml", folder / "recipes")
    make_tiny_model(folder / "runs" / "models" / "tiny-llama")
    shots = Path(os.environ.get("PREP_UI_SHOTS") or tmp_path)
    server = subprocess.Popen([sys.executable, "-m", "prep", "ui", str(folder)], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    browser = None
    try:
        line = server.stdout.readline().decode()
        assert line.startswith(f"prep ui: serving {folder} at http://127.0.0.1:"), line
        url = line.split(" at ")[1].split()[0]
        browser = Chromium(tmp_path / "profile", width=1200, height=820)

        browser.open(url + "data")  # Data: the format, the findings, a row as read and as prep's record
        assert browser.wait(_choose("#file", "samples/coqa.json"))
        browser.evaluate(_click("#check"))
        assert browser.wait("document.querySelector('#fmt')?.textContent") == "coqa"
        # CoQA's own columns that no reader maps (source, filename, name, additional_answers): warned, counted
        assert browser.evaluate("document.querySelector('#codes').textContent") == \
            "codeseverityrowsunknown_columnwarning13"
        browser.evaluate(_click("#rows button"))
        assert '"role": "assistant"' in browser.wait("document.querySelector('#record')?.textContent")
        browser.screenshot(shots / "ui-data.png")

        browser.open(url + "template")  # Template: trained tokens highlighted; the masks follow the policy
        for select, value in (("#file", "samples/coqa.json"), ("#tokenizer", "samples/tokenizer"),
                              ("#template", "chatml"), ("#train_on", "assistant")):
            assert browser.wait(_choose(select, value))
        browser.evaluate(_click("#render"))
        shown = browser.wait("document.querySelector('#summary')?.textContent")
        trained = browser.evaluate("[...document.querySelectorAll('.runs span.t')].map(s => s.textContent)")
        assert "97 trained" in shown and trained[:2] == ["a dog<|im_end|>", "Biscuit<|im_end|>"] and len(trained) == 7
        browser.evaluate(_choose("#train_on", "all"))
        summary = "(document.querySelector('#summary')?.textContent ?? '')"
        assert "932 tokens, 932 trained" in browser.wait(f"!{summary}.includes('97 trained') && {summary}")
        browser.evaluate(_choose("#train_on", "assistant"))
        browser.wait(f"{summary}.includes('97 trained')")
        browser.screenshot(shots / "ui-template.png")

        browser.open(url + "recipe")  # Recipe: the quickstart's stages filled in, checked, saved
        browser.evaluate(f"{_FILL}({json.dumps(_QUICKSTART)}, "
                         "['inputs', 'convert', 'validate', 'tokenize', 'pack', 'train'])")
        browser.evaluate(_click("#save"))
        browser.wait("!!document.querySelector('#torun')")
        assert browser.evaluate("document.querySelector('#saved').textContent") == "saved recipes/ui.yaml"
        assert browser.evaluate("document.querySelector('#problem')") is None
        browser.screenshot(shots / "ui-recipe.png")
        mine, theirs = (load_recipe(folder / "recipes" / name) for name in ("ui.yaml", "quickstart.yaml"))
        assert mine.data == theirs.data  # the same values, paths and all
        assert [(s.name, s.key) for s in run(mine, dry_run=True).stages] == \
               [(s.name, s.key) for s in run(theirs, dry_run=True).stages]
        assert len(mine.stages) == 5
        # the same page edits the saved recipe: 4 training steps show the loss falling as the quickstart's 30 do
        browser.evaluate(_set("train.max_steps", "4") + " && (document.querySelector('#saved').remove() ?? true)")
        browser.evaluate(_click("#save"))
        assert browser.wait("document.querySelector('#saved')?.textContent") == "saved recipes/ui.yaml"
        shorter = load_recipe(folder / "recipes" / "ui.yaml")
        assert shorter.data == {**theirs.data, "train": {**theirs.data["train"], "max_steps": 4}}

        browser.evaluate(_click("#torun"))  # Run: start, stop in train, the stages before still valid
        browser.wait("location.pathname === '/run' && document.querySelector('#recipe')?.value === 'recipes/ui.yaml'")
        browser.evaluate(_click("#start"))
        browser.wait(f"{_stage('train')} === 'running'", 600)
        assert [browser.evaluate(_stage(s)) for s in ("convert", "validate", "tokenize", "pack")] == ["ran"] * 4
        browser.evaluate(_click("#stop"))
        assert browser.wait("document.querySelector('#runstate')?.textContent === 'ended' && "
                            f"{_stage('train')}", 300) == "failed"
        ran = json.loads((folder / "runs" / "quickstart" / "run.json").read_text())
        assert ran["failed"] == "interrupted" and [s["status"] for s in ran["stages"]] == ["ran"] * 4 + ["failed"]
        for stage in ("tokenize", "pack"):
            assert call("verify", {"shards": str(folder / "runs" / "quickstart" / stage)}).exit_code == 0
        assert not (folder / "runs" / "quickstart" / "train" / "prep-stage.json").exists()

        browser.evaluate(_click("#start"))  # again: the finished stages are skipped, train runs to its adapter
        browser.wait(f"{_stage('convert')} === 'skipped'", 60)
        assert browser.wait("document.querySelector('#runstate')?.textContent === 'ended' && "
                            "document.querySelector('#report')?.getAttribute('href')", 900) == \
               "/files/runs/quickstart/report.html"
        ran = json.loads((folder / "runs" / "quickstart" / "run.json").read_text())
        assert [s["status"] for s in ran["stages"]] == ["skipped"] * 4 + ["ran"]
        train = ran["stages"][-1]["summary"]
        assert train["steps"] == 4 and train["last_loss"] < train["first_loss"]
        assert (folder / "runs" / "quickstart" / "train" / train["adapter"] / "adapter_model.safetensors").is_file()
        browser.screenshot(shots / "ui-run.png")
        browser.evaluate("document.querySelector('#report').removeAttribute('target') ?? true")
        browser.evaluate(_click("#report"))
        assert browser.wait("location.pathname.endsWith('report.html') && document.title") == "prep run quickstart"

        # a second run folder (the quickstart without training) to set beside the first
        second = load_recipe(folder / "recipes" / "ui.yaml", [f"output={folder / 'runs' / 'data-only'}"])
        del second.data["train"]
        write_run_json(run(second, stages=plan(second)))
        browser.open(url + "runs")  # Runs: both, side by side
        browser.wait("document.querySelectorAll('#runlist input').length === 2")
        browser.evaluate("[...document.querySelectorAll('#runlist input')].forEach(b => { b.click(); }) ?? true")
        table = browser.wait("document.querySelector('#sidebyside')?.textContent")
        assert "train last_loss" in table and "runs/data-only" in table
        browser.screenshot(shots / "ui-runs.png")
        browser.drain()
        assert browser.errors == []
        assert {u for u in browser.urls if not u.startswith(url)} == set()  # nothing asked of any other host
    finally:
        if browser is not None:
            browser.close()
        server.terminate()
        server.wait(timeout=60)
