"""`prep run`: every recipe in recipes/ runs to completion on the samples with a tiny model; a second
run skips every stage; a change re-runs exactly the stages downstream of it; validation errors stop
the run unless allowed; recipe mistakes are one line-numbered message and exit 2."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import ROOT, SAMPLES, make_tiny_model, run_prep
from prep.core.findings import PrepError
from prep.recipes.recipe import load_recipe, parse_set, relative
from prep.recipes.runner import STAMP, RunResult, run
from prep.shards.layout import read_manifest
from prep.shards.verify import verify

pytest.importorskip("peft")

RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))
# Documents each recipe's shards hold, counted by hand from the samples.
DOCUMENTS = {"quickstart": 4, "alpaca-ko-lora": 7, "together-multiturn": 6, "autotrain-csv-dpo": 5,
             "llamafactory-registry": 18, "continued-pretraining": 11, "mixture": 13, "llamafactory-kto": 7,
             "vision-lora": 10}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llama")


@pytest.fixture(scope="module")
def tiny_vision_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The vision recipe's model: a tiny Qwen2-VL over the vision sample's processor folder."""
    return make_tiny_model(tmp_path_factory.mktemp("models") / "tiny-qwen2-vl", SAMPLES / "vision", arch="qwen2-vl")


def go(recipe: Path, *sets: str) -> RunResult:
    return run(load_recipe(recipe, sets))


def statuses(result: RunResult) -> dict[str, str]:
    return {s.name: s.status for s in result.stages}


def test_recipes_are_all_here() -> None:
    assert {p.stem for p in RECIPES} == set(DOCUMENTS)
    for path in RECIPES:
        text = path.read_text(encoding="utf-8")
        assert "# real run: " in text, f"{path.name}: name the real model it stands in for"
        assert f"output: ../runs/{path.stem}\n" in text


@pytest.mark.slow
@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipe_runs_to_completion_then_skips(recipe: Path, tiny_model: Path, tiny_vision_model: Path,
                                             tmp_path: Path) -> None:
    sets = (f"output={tmp_path}", f"train.model={tiny_vision_model if recipe.stem == 'vision-lora' else tiny_model}")
    loaded = load_recipe(recipe, sets)
    result = run(loaded)
    assert result.stopped is None and result.rejected == 0 and result.exit_code == 0
    assert set(statuses(result).values()) == {"ran"}
    stages = {s.name: s for s in result.stages}
    shards = stages["pack"].folder if "pack" in stages else stages["tokenize"].folder
    manifest = read_manifest(stages["tokenize"].folder)
    assert manifest["counts"]["read"] == manifest["counts"]["written"] == DOCUMENTS[recipe.stem]
    for name in ("tokenize", "pack"):
        if name in stages:
            assert verify(stages[name].folder).ok
    if "validate" in stages:
        report = json.loads((stages["validate"].folder / "report.json").read_text())
        assert report["ok"] and report["summary"]["rows_accepted"] == stages["validate"].summary["read"]
        if loaded.section("validate").get("tokens"):  # validate counted what tokenize made
            assert report["stats"]["tokens_total"] == manifest["tokens"]["total"]
            assert report["stats"]["trained_tokens_per_row"]["count"] == DOCUMENTS[recipe.stem]
    if "pack" in stages:
        packed = read_manifest(shards)
        assert packed["counts"]["written"] == DOCUMENTS[recipe.stem]
        table = pq.read_table(shards / packed["shards"][0]["path"])
        assert all(sum(s) == n for s, n in zip(table["seq_lengths"].to_pylist(), table["num_tokens"].to_pylist(),
                                              strict=True))
    train = stages["train"].folder  # every recipe trains
    report = json.loads((train / "training_report.json").read_text())
    steps = loaded.section("train")["max_steps"]
    assert report["steps"] == steps and report["trained_tokens"] > 0
    assert report["objective"] == loaded.section("train").get("method", "sft") == {"dpo": "dpo", "kto": "kto"}.get(
        manifest["kind"], "sft")
    if report["objective"] != "sft":  # the preference curves beside the loss
        assert {"rewards/chosen", "rewards/rejected", "rewards/margins"} <= set(report["loss_curve"][-1])
    if recipe.stem == "quickstart":  # the README's first command shows the model learning the stories
        assert report["last_loss"] < 0.7 * report["first_loss"]
    assert (train / "adapter" / "adapter_model.safetensors").stat().st_size > 0
    assert json.loads((train / "adapter" / "adapter_config.json").read_text())["r"] == \
        loaded.section("train")["lora_r"]
    if "split" in stages:  # split's validation rows, tokenized beside the train rows, are train's eval set
        assert verify(stages["tokenize"].folder / "validation").ok and report["eval_loss"] is not None
    stamps = {s.name: (s.folder / STAMP).stat().st_mtime_ns for s in result.stages}

    again = go(recipe, *sets)
    assert set(statuses(again).values()) == {"skipped"}
    assert {s.name: (s.folder / STAMP).stat().st_mtime_ns for s in again.stages} == stamps
    assert [s.summary for s in again.stages] == [s.summary for s in result.stages]


@pytest.fixture()
def own_recipe(tmp_path: Path, tiny_model: Path) -> Path:
    """A recipe over copies of the samples, so a test can change an input."""
    shutil.copy(SAMPLES / "openai.jsonl", tmp_path / "chats.jsonl")
    shutil.copytree(SAMPLES / "tokenizer", tmp_path / "tokenizer")
    recipe = tmp_path / "chats.yaml"
    recipe.write_text(f"""\
inputs:
  files: [chats.jsonl]
convert:
  to: openai
validate: {{}}
tokenize:
  tokenizer: tokenizer
  template: chatml
pack:
  max_len: 1024
train:
  model: {tiny_model}
  max_steps: 1
  batch_size: 1
output: out
""", encoding="utf-8")
    return recipe


@pytest.mark.slow
def test_a_change_reruns_only_what_depends_on_it(own_recipe: Path) -> None:
    everything = ["convert", "validate", "tokenize", "pack", "train"]
    first = go(own_recipe)
    assert [s.name for s in first.stages if s.status == "ran"] == everything and first.rejected == 0
    keys = {s.name: s.key for s in first.stages}

    (own_recipe.parent / "chats.jsonl").touch()  # a new mtime, the same bytes: nothing to do
    assert set(statuses(go(own_recipe)).values()) == {"skipped"}

    packed = first.stages[3].folder / "manifest.json"
    before = packed.stat().st_mtime_ns
    plan = run(load_recipe(own_recipe, ["pack.max_len=512"]), dry_run=True)
    assert statuses(plan) == {"convert": "skip", "validate": "skip", "tokenize": "skip", "pack": "run",
                              "train": "run"}
    assert packed.stat().st_mtime_ns == before  # a dry run changes nothing

    changed = go(own_recipe, "pack.max_len=512")
    assert [s.name for s in changed.stages if s.status == "ran"] == ["pack", "train"]
    assert read_manifest(changed.stages[3].folder)["max_len"] == 512

    lr = go(own_recipe, "pack.max_len=512", "train.lr=1.0e-3")
    assert [s.name for s in lr.stages if s.status == "ran"] == ["train"]

    config = own_recipe.parent / "tokenizer" / "tokenizer_config.json"  # same vocabulary, other settings
    config.write_text(json.dumps({**json.loads(config.read_text()), "model_max_length": 4096}), encoding="utf-8")
    retok = go(own_recipe, "pack.max_len=512", "train.lr=1.0e-3")
    assert [s.name for s in retok.stages if s.status == "ran"] == ["tokenize", "pack", "train"]

    with open(own_recipe.parent / "chats.jsonl", "a", encoding="utf-8") as f:
        f.write('{"messages": [{"role": "user", "content": "One more?"}, {"role": "assistant", "content": "Yes."}]}\n')
    grown = go(own_recipe, "pack.max_len=512", "train.lr=1.0e-3")
    assert [s.name for s in grown.stages if s.status == "ran"] == everything
    assert {s.name: s.key for s in grown.stages}["convert"] != keys["convert"]
    assert read_manifest(grown.stages[2].folder)["counts"]["written"] == 7


def test_validation_errors_stop_the_run_unless_allowed(own_recipe: Path) -> None:
    with open(own_recipe.parent / "chats.jsonl", "a", encoding="utf-8") as f:
        f.write('{"messages": [{"role": "user", "content": "hi"}, {"role": "user", "content": "again"}]}\n')
    stopped = go(own_recipe)
    assert statuses(stopped) == {"convert": "ran", "validate": "stopped", "tokenize": "run", "pack": "run",
                                 "train": "run"}
    assert "allow_errors" in stopped.stopped and stopped.exit_code == 1
    assert not (own_recipe.parent / "out" / "tokenize").exists()
    assert not (own_recipe.parent / "out" / "validate" / STAMP).exists()  # stopped: checked again next time

    proc = run_prep("run", str(own_recipe), "-q")
    assert proc.returncode == 1 and b"allow_errors" in proc.stderr and b"Traceback" not in proc.stderr
    page = own_recipe.parent / "out" / "report.html"  # a stopped run gets its page too: what stopped it is there
    # shown as from the current folder (as `relative` words it; rich folds long lines)
    assert f"report:          {relative(page)}".encode() in proc.stderr.replace(b"\n", b"")
    assert 'data-figure="finding.validate.role_order" data-value="1"' in page.read_text(encoding="utf-8")


@pytest.mark.slow
def test_allowed_errors_leave_the_bad_rows_out(own_recipe: Path) -> None:
    with open(own_recipe.parent / "chats.jsonl", "a", encoding="utf-8") as f:
        f.write('{"messages": [{"role": "user", "content": "hi"}, {"role": "user", "content": "again"}]}\n')
    result = go(own_recipe, "validate.allow_errors=true")
    assert result.stopped is None and result.exit_code == 1  # done, and one row is in validate/rejects.jsonl
    validate = result.stages[1]
    assert validate.summary["rejected"] == 1 and validate.summary["accepted"] == 6
    rejects = [json.loads(line) for line in (validate.folder / "rejects.jsonl").read_text().splitlines()]
    assert [r["row_number"] for r in rejects] == [7]
    assert read_manifest(result.stages[2].folder)["counts"]["written"] == 6


def test_allowed_errors_keep_the_ids_of_the_users_rows(tmp_path: Path) -> None:
    """Tokenize reads the user's file and leaves out the rows validate rejected: the shards' ids (and any
    later reject) still name the file and row the user wrote, and a row is not counted twice."""
    rows = (SAMPLES / "openai.jsonl").read_text(encoding="utf-8").splitlines()
    rows[2:2] = ['{"messages": [{"role": "user", "content": "hi"}, {"role": "user", "content": "again"}]}']
    rows[4:4] = ['{"messages": [']  # not JSON: the reader rejects it too
    (tmp_path / "chats.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"inputs:\n  files: [chats.jsonl]\nvalidate: {{allow_errors: true}}\ntokenize:\n"
                      f"  tokenizer: {SAMPLES / 'tokenizer'}\n  template: chatml\noutput: out\n", encoding="utf-8")
    kept = [f"chats.jsonl:{n}" for n in (1, 2, 4, 6, 7, 8)]
    for sets in ((), ("tokenize.max_len=1024",)):  # the second run re-tokenizes after a skipped validate
        result = go(recipe, *sets)
        assert [s.status for s in result.stages] == (["ran", "ran"] if not sets else ["skipped", "ran"])
        assert result.rejected == 2 and result.stages[1].summary["rejected"] == 0
        folder = result.stages[1].folder
        table = pq.read_table(folder / read_manifest(folder)["shards"][0]["path"])
        assert [ids[0] for ids in table["ids"].to_pylist()] == kept


def test_cli_runs_the_quickstart_and_says_where_everything_went(tiny_model: Path, tmp_path: Path) -> None:
    """The quickstart as a user runs it, in its own process; one training step (the recipe's 30, and the loss they
    lower, are test_recipe_runs_to_completion_then_skips[quickstart]'s)."""
    args = ("run", str(ROOT / "recipes" / "quickstart.yaml"), "--set", f"output={tmp_path}", "--set",
            f"train.model={tiny_model}", "--set", "train.max_steps=1")
    dry = run_prep(*args, "--dry-run")
    assert dry.returncode == 0 and dry.stderr.decode().count("│ run ") == 5 and not (tmp_path / "convert").exists()
    proc = run_prep(*args)
    assert proc.returncode == 0, proc.stderr.decode()
    err = proc.stderr.decode()
    for line in ("adapter:", "training report:", "run record:", "report:"):
        assert line in err
    assert relative(tmp_path / "report.html") in err.replace("\n", "") and (tmp_path / "report.html").stat().st_size > 0
    record = json.loads((tmp_path / "run.json").read_text())
    assert [s["status"] for s in record["stages"]] == ["ran"] * 5
    # the re-run skips every stage and, with nothing to train, loads no training library
    probe = ("import sys\nfrom prep.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n"
             "    print(e.code, [m for m in ('torch', 'transformers', 'peft', 'trl', 'datasets') if m in sys.modules])")
    again = subprocess.run([sys.executable, "-c", probe, *args, "-q"], capture_output=True, text=True, cwd=ROOT,
                           env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert again.stdout.strip() == "0 []" and again.stderr.count("skipped") == 5, again.stderr


def test_a_stage_that_cannot_run_is_recorded_and_exits_2(tmp_path: Path) -> None:
    """A PrepError inside a stage (here: a tokenizer without a chat template) fails that stage; the run
    still says what the stages before it did, with their rejects, in the summary and in run.json."""
    with open(tmp_path / "chats.jsonl", "w", encoding="utf-8") as f:
        f.write((SAMPLES / "openai.jsonl").read_text(encoding="utf-8") + '{"messages": "not a list"}\n')
    shutil.copytree(SAMPLES / "tokenizer", tmp_path / "tok")
    config = tmp_path / "tok" / "tokenizer_config.json"
    config.write_text(json.dumps({k: v for k, v in json.loads(config.read_text()).items() if k != "chat_template"}))
    recipe = tmp_path / "r.yaml"
    recipe.write_text("inputs:\n  files: [chats.jsonl]\nconvert: {to: openai}\ntokenize:\n  tokenizer: tok\n"
                      "output: out\n", encoding="utf-8")
    result = go(recipe)
    assert statuses(result) == {"convert": "ran", "tokenize": "failed"} and result.exit_code == 2
    assert "no chat template" in result.failed and result.rejected == 1

    proc = run_prep("run", str(recipe), "-q", cwd=tmp_path)
    err = " ".join(proc.stderr.decode().split())
    assert proc.returncode == 2 and "Traceback" not in err
    assert "failed: the tokenizer at" in err and "rejected rows -> out/convert/rejects.jsonl" in err
    record = json.loads((tmp_path / "out" / "run.json").read_text())
    assert [s["status"] for s in record["stages"]] == ["skipped", "failed"]
    assert record["failed"] == result.failed and record["rejected"] == 1


# ---------------------------------------------------------------- recipe mistakes


def mistake(tmp_path: Path, text: str, *sets: str) -> str:
    """The one-line refusal of a recipe (API and CLI agree; the CLI exits 2 without a traceback)."""
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(PrepError) as e:
        load_recipe(path, sets)
    proc = run_prep("run", str(path), *(a for s in sets for a in ("--set", s)))
    assert proc.returncode == 2 and b"Traceback" not in proc.stderr
    assert proc.stderr.decode().strip() == f"prep: {e.value}"
    return str(e.value)


GOOD = f"""\
inputs:
  files: [{SAMPLES / "openai.jsonl"}]
tokenize:
  tokenizer: {SAMPLES / "tokenizer"}
  template: chatml
pack:
  max_len: 256
"""


def test_good_recipe_loads(tmp_path: Path) -> None:
    path = tmp_path / "good.yaml"
    path.write_text(GOOD, encoding="utf-8")
    recipe = load_recipe(path, ["pack.max_len=128"])
    assert recipe.stages == ["tokenize", "pack"] and recipe.section("pack")["max_len"] == 128
    assert recipe.name == "good" and recipe.output == Path.cwd() / "runs" / "good"


def test_unknown_key_names_its_line_and_a_close_match(tmp_path: Path) -> None:
    text = GOOD.replace("  max_len: 256\n", "  max_len: 256\n  stratgy: wrap\n")
    assert mistake(tmp_path, text) == f"{tmp_path / 'bad.yaml'}:8: pack.stratgy: unknown key (did you mean strategy?)"
    top = mistake(tmp_path, GOOD + "trian:\n  model: x\n")
    assert top.startswith(f"{tmp_path / 'bad.yaml'}:8: trian: unknown key (did you mean train?)")


def test_wrong_type_names_its_line(tmp_path: Path) -> None:
    msg = mistake(tmp_path, GOOD.replace("max_len: 256", "max_len: lots"))
    assert msg == f"{tmp_path / 'bad.yaml'}:7: pack.max_len lots: must be an integer of at least 2"
    msg = mistake(tmp_path, GOOD + "train:\n  model: x/y\n  lr: 2e-4\n")
    assert msg.startswith(f"{tmp_path / 'bad.yaml'}:10: train.lr 2e-4: must be a number above 0")
    assert "2.0e-4" in msg  # YAML 1.1 reads 2e-4 as text: say how to write it
    assert parse_set("train.lr=2e-4") == (("train", "lr"), 2e-4)  # on the command line, a number
    assert parse_set("inputs.system='1e5'") == (("inputs", "system"), "1e5")
    assert mistake(tmp_path, GOOD, "pack.max_len=ten") == \
        "--set pack.max_len=ten: pack.max_len ten: must be an integer of at least 2"


def test_missing_files_name_their_line(tmp_path: Path) -> None:
    msg = mistake(tmp_path, GOOD.replace(str(SAMPLES / "openai.jsonl"), "nowhere.jsonl"))
    assert msg == f"{tmp_path / 'bad.yaml'}:2: inputs.files[0]: {tmp_path / 'nowhere.jsonl'}: no such file"
    msg = mistake(tmp_path, GOOD.replace(str(SAMPLES / "tokenizer"), "../no-tokenizer"))
    assert msg.startswith(f"{tmp_path / 'bad.yaml'}:4: tokenize.tokenizer: {tmp_path.parent / 'no-tokenizer'}: "
                          "no such tokenizer folder")
    (tmp_path / "config-only").mkdir()
    shutil.copy(SAMPLES / "tokenizer" / "tokenizer_config.json", tmp_path / "config-only")
    assert mistake(tmp_path, GOOD.replace(str(SAMPLES / "tokenizer"), "config-only")).startswith(
        f"{tmp_path / 'bad.yaml'}:4: tokenize.tokenizer: {tmp_path / 'config-only'}: holds no tokenizer.json")
    assert mistake(tmp_path, GOOD.replace("chatml", "mine.jinja")) == \
        f"{tmp_path / 'bad.yaml'}:5: tokenize.template: {tmp_path / 'mine.jinja'}: no such file"
    registry = "inputs:\n  dataset_info: info.json\n  datasets: [a]\nconvert: {to: openai}\n"
    assert mistake(tmp_path, registry) == f"{tmp_path / 'bad.yaml'}:2: inputs.dataset_info: {tmp_path / 'info.json'}: " \
        "no such file"
    against = GOOD + "decontaminate:\n  against: [bench.jsonl]\n"
    assert mistake(tmp_path, against) == f"{tmp_path / 'bad.yaml'}:9: decontaminate.against[0]: " \
        f"{tmp_path / 'bench.jsonl'}: no such file"
    for key in ("model", "ref_model"):
        models = {"model": str(tmp_path), "ref_model": str(tmp_path)} | {key: "samples"}  # samples/: no config.json
        trains = GOOD.split("pack:")[0].replace("chatml\n", "chatml\n  kind: dpo\n") + \
            f"train:\n  model: {models['model']}\n  ref_model: {models['ref_model']}\n"
        (tmp_path / "config.json").write_text("{}")
        (tmp_path / "samples").mkdir(exist_ok=True)
        line = 8 if key == "model" else 9
        assert mistake(tmp_path, trains) == f"{tmp_path / 'bad.yaml'}:{line}: train.{key}: {tmp_path / 'samples'}: " \
            "holds no config.json; give the folder of a transformers model"


@pytest.mark.parametrize("dry", [True, False], ids=["dry-run", "run"])
def test_a_misspelt_tokenizer_folder_fails_before_any_stage(tmp_path: Path, dry: bool) -> None:
    """samples/tokenzer reads like a hub id (owner/name), but samples/ is a folder here: a path, and it is not
    there. `prep run` and `--dry-run` both refuse it, naming the --set and the key, before any stage runs."""
    given = "tokenize.tokenizer=samples/tokenzer"
    proc = run_prep("run", "recipes/quickstart.yaml", "--set", given, "--set", f"output={tmp_path / 'out'}",
                    *(["--dry-run"] if dry else []), cwd=ROOT)
    assert proc.returncode == 2 and proc.stderr.decode() == f"prep: --set {given}: tokenize.tokenizer: " \
        f"{ROOT / 'samples' / 'tokenzer'}: no such tokenizer folder: give a local folder with tokenizer.json and " \
        "tokenizer_config.json\n"
    assert not (tmp_path / "out").exists()


def test_loading_and_planning_a_recipe_that_trains_imports_no_train_extra(tmp_path: Path) -> None:
    """A recipe with a train section is loaded and planned (what a re-run whose stages are all done, and
    --dry-run, do) in a fresh interpreter without importing torch, transformers, peft or trl: they take seconds
    and half a gigabyte, and only the train stage needs them."""
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    probe = ("import sys\nfrom prep.recipes.recipe import load_recipe\nfrom prep.recipes.runner import run\n"
             f"recipe = load_recipe('recipes/quickstart.yaml', ['output={tmp_path / 'out'}', "
             f"'train.model={tmp_path / 'model'}'])\n"
             "assert [s.name for s in run(recipe, dry_run=True).stages][-1] == 'train'\n"
             "print([m for m in ('torch', 'transformers', 'peft', 'trl', 'datasets') if m in sys.modules])")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_missing_tiny_model_says_how_to_make_it(tmp_path: Path) -> None:
    (tmp_path / "recipes").mkdir()
    recipe = tmp_path / "recipes" / "q.yaml"
    recipe.write_text(GOOD + "train:\n  model: ../runs/models/tiny-llama\n", encoding="utf-8")
    proc = run_prep("run", "recipes/q.yaml", cwd=tmp_path)
    err = proc.stderr.decode()
    assert proc.returncode == 2 and err.startswith("prep: recipes/q.yaml:9: train.model: ")
    assert err.rstrip().endswith("make_tiny_model.py runs/models/tiny-llama`")


@pytest.mark.parametrize(("text", "expected"), [
    ("inputs: [a.json]\n", "1: inputs: ['a.json'] is not of type object"),
    ("inputs:\n  files: [a]\n  files: [b]\n", "3: inputs.files: given twice; keep one"),
    ("inputs:\n  files: [a\n", "3: not valid YAML"),
    ("- a\n- b\n", "1: a recipe is a mapping"),
    ("inputs:\n  format: openai\ntokenize:\n  tokenizer: t\n", "2: inputs: give files: [...], or dataset_info"),
    ("inputs:\n  files: [a]\n", "1: give at least one stage"),
    ("inputs:\n  files: [a]\nconvert: {to: openai}\ntrain:\n  model: m\n", "4: train needs tokenize too"),
    ("inputs:\n  files: [a]\ntokenize: {}\n", "3: tokenize: missing key 'tokenizer'"),
    ("inputs:\n  files: [a]\nconvert: {to: yaml}\n", "3: convert.to yaml: must be one of openai"),
    ("inputs:\n  files: [a]\non: true\n", '3: on: YAML 1.1 reads this key as bool, not text; quote it ("on":)'),
    ("inputs:\n  files: [a]\ntokenize:\n  tokenizer: t\n  1: x\n", "5: tokenize.1: YAML 1.1 reads this key as int"),
    ("inputs:\n  files:\n    - {yes: a}\n", "3: inputs.files[0].yes: YAML 1.1 reads this key as bool"),
])
def test_recipe_mistakes(tmp_path: Path, text: str, expected: str) -> None:
    line, _, words = expected.partition(": ")
    assert mistake(tmp_path, text).startswith(f"{tmp_path / 'bad.yaml'}:{line}: {words}")


def test_pair_shards_are_not_packed_nor_trained_by_another_method(tmp_path: Path) -> None:
    """prep pack refuses dpo/kto shards, and train.method one that does not read the kind: the recipe says so at
    load, not after tokenizing."""
    assert mistake(tmp_path, GOOD.replace("  template: chatml\n", "  template: chatml\n  kind: dpo\n")).startswith(
        f"{tmp_path / 'bad.yaml'}:7: pack: dpo shards are trained as pairs and are not packed")
    no_pack = GOOD.replace("  template: chatml\n", "  template: chatml\n  kind: kto\n").split("pack:")[0]
    assert mistake(tmp_path, no_pack + "train:\n  model: owner/model\n  method: dpo\n").startswith(
        f"{tmp_path / 'bad.yaml'}:9: train.method dpo trains on dpo shards, and tokenize.kind is kto")


@pytest.mark.parametrize("missing", ["torch", "peft"])
def test_a_missing_train_extra_is_refused_at_load(missing: str, tmp_path: Path) -> None:
    """A Python where `missing` cannot be imported: a recipe that trains says so, with the train section's line
    and the install line, before any stage runs."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text(GOOD + "train:\n  model: owner/model\noutput: out\n", encoding="utf-8")
    code = f"import sys; sys.modules[{missing!r}] = None; from prep.cli import main; main()"
    proc = subprocess.run([sys.executable, "-c", code, "run", str(recipe)], capture_output=True, text=True,
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"prep: {recipe}:8: train: ") and f"{missing} cannot be imported" in proc.stderr
    assert "pip install 'prep[train]'" in proc.stderr and not (tmp_path / "out").exists()


def test_bad_set_option(tmp_path: Path) -> None:
    assert "give KEY=VALUE" in mistake(tmp_path, GOOD, "pack.max_len")
    assert "pack.max_len is not a section" in mistake(tmp_path, GOOD, "pack.max_len.x=1")



@pytest.mark.slow
def test_an_interrupted_train_stage_resumes_its_own_checkpoint_and_drops_another_runs(own_recipe: Path) -> None:
    first = go(own_recipe, "train.max_steps=2", "train.save_steps=1")
    train = {s.name: s for s in first.stages}["train"].folder
    assert (train / "checkpoints" / "checkpoint-1").is_dir()
    shutil.rmtree(train / "checkpoints" / "checkpoint-2")
    (train / STAMP).unlink()  # as if killed after the first checkpoint
    again = go(own_recipe, "train.max_steps=2", "train.save_steps=1")
    assert statuses(again)["train"] == "ran"
    report = json.loads((train / "training_report.json").read_text())
    assert report["steps"] == 2 and report["options"]["resume"] is True
    (train / STAMP).unlink()  # killed again, then started with another learning rate: its checkpoints are not reused
    other = go(own_recipe, "train.max_steps=2", "train.save_steps=1", "train.lr=1.0e-3")
    assert statuses(other)["train"] == "ran"
    assert json.loads((train / "training_report.json").read_text())["options"]["resume"] is False


def _token_recipe(tmp_path: Path, rows: list[str], extra: str = "") -> Path:
    (tmp_path / "chats.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"inputs:\n  files: [chats.jsonl]\nvalidate: {{tokens: true{extra}}}\ntokenize:\n"
                      f"  tokenizer: {SAMPLES / 'tokenizer'}\n  template: llama2\n  max_len: 64\noutput: out\n",
                      encoding="utf-8")
    return recipe


def test_with_token_statistics_every_row_is_tokenized_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """validate: {tokens: true} reports what tokenize made (tokens per row, rows over max_len) instead of
    tokenizing the rows a second time."""
    from prep.render.encoder import Encoder

    encoded: list[int] = []
    real = Encoder.encode
    monkeypatch.setattr(Encoder, "encode", lambda self, jobs, *rest: encoded.append(len(jobs.items)) or real(self, jobs, *rest))
    short = '{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]}'
    long = json.dumps({"messages": [{"role": "user", "content": "tell " * 80}, {"role": "assistant", "content": "No."}]})
    result = go(_token_recipe(tmp_path, [short, short, long]))
    assert sum(encoded) == 3  # each row once, by tokenize
    validate, tokenize = result.stages
    stats = json.loads((validate.folder / "report.json").read_text())["stats"]
    written = read_manifest(tokenize.folder)
    assert stats["tokens_total"] == written["tokens"]["total"] and stats["rows_over_max_len"] == 1
    assert stats["tokens_per_row"]["count"] == 2 and stats["max_len"] == 64
    assert "tokens per row" in validate.summary["line"] and "1 over max_len 64" in validate.summary["line"]
    assert result.stopped is None and result.exit_code == 1  # the long row is tokenize's too_long reject


def test_rows_the_template_cannot_render_stop_the_run_unless_allowed(tmp_path: Path) -> None:
    """With validate counting tokens, a row tokenize cannot render stops the run before packing, as validate's
    errors do; `allow_errors` lets it go on without the row."""
    good = '{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]}'
    tool_row = (SAMPLES / "openai.jsonl").read_text(encoding="utf-8").splitlines()[0]  # llama2 cannot write tools
    recipe = _token_recipe(tmp_path, [good, tool_row])
    recipe.write_text(recipe.read_text() + "pack: {max_len: 64}\n", encoding="utf-8")
    stopped = go(recipe)
    assert statuses(stopped) == {"validate": "ran", "tokenize": "stopped", "pack": "run"}
    assert "template_cannot_render: 1" in stopped.stopped and stopped.exit_code == 1
    again = go(recipe)  # checked again, though tokenize's output is there
    assert statuses(again)["tokenize"] == "stopped" and statuses(again)["pack"] == "run"
    allowed = go(recipe, "validate.allow_errors=true")
    assert statuses(allowed)["pack"] == "ran" and allowed.exit_code == 1
