"""prep train under torchrun: two CPU processes (gloo) train the steps one process trains with --grad-accum 2, write
one set of outputs, count the run's tokens (not one process's), and resume after one of them is killed.

Slow by nature: every torchrun launch starts torch, transformers and TRL twice. One test, two launches. And the
sharding options (--fsdp, --deepspeed) refused where the trainer cannot take them up, as on this CPU machine."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, SAMPLES, make_tiny_model
from prep.core.findings import PrepError
from prep.formats.inputs import Inputs
from prep.stages.tokenize import tokenize

pytest.importorskip("torch")
pytest.importorskip("trl")

from prep.trainer.train import TrainOptions, train  # noqa: E402 - needs the train extra

STEPS = 12
# no dropout: its masks are drawn per process, so two processes could never draw the one process's masks
SAME = ["--batch-size", "1", "--lora-dropout", "0", "--max-steps", str(STEPS)]


def _torchrun(shards: Path, model: Path, out: Path, *more: str) -> subprocess.Popen:
    """`torchrun --standalone` (a free port: other tests may run at the same time) with two processes."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "prep", "train", str(shards), "--model", str(model), "-o", str(out), *SAME, *more]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def _worker(launcher: subprocess.Popen, rank: int) -> int:
    """The pid of the torchrun worker with RANK `rank` (a child of the launcher)."""
    for entry in Path("/proc").iterdir():
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            environ = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if parent == launcher.pid and f"RANK={rank}".encode() in environ:
            return int(entry.name)
    raise AssertionError(f"no worker of rank {rank} under torchrun {launcher.pid}")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the worker to kill through /proc")
def test_two_processes_train_the_steps_of_one_with_grad_accum_and_resume_after_one_is_killed(tmp_path: Path) -> None:
    model = make_tiny_model(tmp_path / "tiny-llama")
    shards = tmp_path / "sft"
    tokenize(Inputs([str(SAMPLES / n) for n in ("sharegpt.jsonl", "openai.jsonl", "alpaca.json")]),
             str(SAMPLES / "tokenizer"), str(shards), template="chatml")
    one = train(str(shards), TrainOptions(model=str(model), output=str(tmp_path / "one"), batch_size=1,
                                          grad_accum=2, lora_dropout=0, max_steps=STEPS)).report

    out = tmp_path / "two"
    launcher = _torchrun(shards, model, out, "--save-steps", "2")
    try:
        while not (out / "checkpoints" / "checkpoint-2" / "prep_complete.json").exists():
            assert launcher.poll() is None, launcher.communicate()[0][-3000:]
            time.sleep(0.05)
        os.kill(_worker(launcher, 1), signal.SIGKILL)
        killed = launcher.communicate(timeout=300)[0]
    finally:
        launcher.kill()
    assert launcher.returncode != 0, killed[-3000:]
    assert not (out / "training_report.json").exists() and not (out / "adapter").exists()

    resumed = _torchrun(shards, model, out, "--save-steps", "2", "--resume")
    printed = resumed.communicate(timeout=600)[0]
    assert resumed.returncode == 0, printed[-3000:]
    assert printed.count("saved: ") == 1 and printed.count("tokens: ") == 1  # one summary: the main process's

    two = json.loads((out / "training_report.json").read_text())
    start = two["resumed_from_step"]
    assert start and start % 2 == 0 and two["steps"] == STEPS and two["processes"] == 2
    assert [p["step"] for p in two["loss_curve"]] == [p["step"] for p in one["loss_curve"]] == list(range(1, STEPS + 1))
    for mine, theirs in zip(two["loss_curve"], one["loss_curve"], strict=True):
        assert abs(mine["loss"] - theirs["loss"]) < 1e-4, (mine, theirs)
        assert mine["tokens_seen"] == theirs["tokens_seen"]  # summed over both processes, at every step
    before = one["loss_curve"][start - 1]["tokens_seen"]
    assert two["tokens"] == one["tokens"] - before > 0  # this launch's tokens: both processes', after the resume
    assert sorted(p.name for p in out.iterdir()) == ["adapter", "checkpoints", "loss_curve.csv", "loss_curve.png",
                                                     "training_report.json"]
    assert (out / "adapter" / "adapter_model.safetensors").is_file()


def test_sharding_is_refused_in_one_process(tmp_path: Path) -> None:
    """FSDP and DeepSpeed shard over the processes of torchrun or accelerate launch: one process has none to
    shard over (transformers would stop with "Using fsdp only works in distributed training"). Refused before the
    shards or the model are even opened (so any folder stands for them here)."""
    model = shards = tmp_path
    with pytest.raises(PrepError, match=r"--fsdp shards the model over the processes .* this is one process"):
        train(str(shards), TrainOptions(model=str(model), output=str(tmp_path / "out"), max_steps=1, fsdp=True))
    assert not (tmp_path / "out").exists()


def test_deepspeed_options_are_checked_before_anything_loads(tmp_path: Path) -> None:
    model = shards = tmp_path
    options = {"model": str(model), "output": str(tmp_path / "out"), "max_steps": 1}
    with pytest.raises(PrepError, match="--deepspeed .*ds.json: no such file"):
        train(str(shards), TrainOptions(**options, deepspeed=str(tmp_path / "ds.json")))
    config = tmp_path / "ds.json"
    config.write_text(json.dumps({"zero_optimization": {"stage": 3}}))
    with pytest.raises(PrepError, match="--fsdp and --deepspeed"):
        train(str(shards), TrainOptions(**options, deepspeed=str(config), fsdp=True))
    with pytest.raises(PrepError, match=r"--qlora \(a quantized base\) with --fsdp or --deepspeed"):
        train(str(shards), TrainOptions(**options, fsdp=True, qlora=True))
    for bits in (4, 8):
        with pytest.raises(PrepError, match=rf"--quant {bits} \(a quantized base\) with --fsdp or --deepspeed"):
            train(str(shards), TrainOptions(**options, deepspeed=str(config), quant=bits))
    if importlib.util.find_spec("deepspeed") is None:
        with pytest.raises(PrepError, match=r"--deepspeed needs the deepspeed package.*pip install deepspeed"):
            train(str(shards), TrainOptions(**options, deepspeed=str(config)))


def test_prep_run_under_torchrun_is_refused_before_any_stage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from prep.recipes.recipe import load_recipe
    from prep.recipes.runner import run

    recipe = tmp_path / "r.yaml"  # no train stage: the refusal must not depend on a model being there
    recipe.write_text(f"inputs:\n  files: [{SAMPLES / 'openai.jsonl'}]\ntokenize:\n  tokenizer: {SAMPLES / 'tokenizer'}\n"
                      f"  template: chatml\noutput: {tmp_path / 'qs'}\n", encoding="utf-8")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(PrepError, match=r"torchrun or accelerate launch \(2 processes\).*-m prep train"):
        run(load_recipe(str(recipe)))
    assert not (tmp_path / "qs").exists()
