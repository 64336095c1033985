"""The seeds' remaining training knobs (issue 24 item 4), each shown to change what it claims, on a tiny two-layer
llama with the project's tokenizer: --freeze-layers, --lora-init pissa (and loftq's refusal on CPU), LoRA+
(--loraplus-lr-ratio), --quant 8 and --report-to. Runs are two steps each."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from conftest import SAMPLES, make_tiny_model
from prep.core.findings import PrepError
from prep.formats.inputs import Inputs
from prep.stages.tokenize import tokenize

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")

from prep.trainer.train import TrainOptions, _load_model, train  # noqa: E402 - needs the train extra

LR = 1e-2


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("knobs")
    tokenize(Inputs([str(SAMPLES / "sharegpt.jsonl")]), str(SAMPLES / "tokenizer"), str(root / "sft"),
             template="chatml")
    return {"root": root, "shards": root / "sft", "model": make_tiny_model(root / "tiny", layers=2)}


def run(setup: dict[str, Path], name: str, **options: object) -> dict:
    out = setup["root"] / name
    return train(str(setup["shards"]), TrainOptions(model=str(setup["model"]), output=str(out), max_steps=2,
                                                    batch_size=2, lr=LR, warmup_ratio=0, **options)).report


@pytest.mark.slow  # a two-step training run
def test_freeze_layers_trains_the_last_layers_and_nothing_else(setup: dict[str, Path]) -> None:
    report = run(setup, "freeze", freeze_layers=1)
    assert report["method"] == "freeze" and report["output"].endswith("model")
    base = transformers.AutoModelForCausalLM.from_pretrained(setup["model"]).state_dict()
    tuned = transformers.AutoModelForCausalLM.from_pretrained(report["output"]).state_dict()
    assert base.keys() == tuned.keys()
    for name, weight in base.items():
        assert torch.equal(weight, tuned[name]) == (".layers.1." not in name), name
    assert report["trainable_params"] == sum(w.numel() for n, w in base.items() if ".layers.1." in n)


@pytest.mark.slow  # a two-step training run
def test_pissa_starts_from_the_weights_and_lora_plus_speeds_up_b(setup: dict[str, Path]) -> None:
    """PiSSA's initial adapter is not zero (a default one's B is); the saved adapter is converted to apply to the
    original base (rank 2r); LoRA+ puts the B matrices in an optimizer group at 16 times --lr."""
    report = run(setup, "pissa", lora_init="pissa", loraplus_lr_ratio=16, lora_r=4, lora_alpha=8)
    initial = safetensors_torch.load_file(str(setup["root"] / "pissa" / "initial_adapter" / "adapter_model.safetensors"))
    b = [w for n, w in initial.items() if "lora_B" in n]
    assert len(b) == 14 and all(w.abs().sum() > 0 for w in b)  # 7 linear layers in each of 2 layers
    assert json.loads((Path(report["output"]) / "adapter_config.json").read_text())["r"] == 8
    groups = report["optimizer_groups"]
    assert sorted({g["lr"] for g in groups if g["tensors"]}) == pytest.approx([LR, 16 * LR])
    assert sum(g["tensors"] for g in groups if g["lr"] == pytest.approx(16 * LR)) == 14  # the B matrices
    base = transformers.AutoModelForCausalLM.from_pretrained(setup["model"])
    peft = pytest.importorskip("peft")
    served = peft.PeftModel.from_pretrained(base, report["output"])  # loads onto the original base
    assert sum("lora_B" in n for n, _ in served.named_parameters()) == 14


def test_an_8bit_base_has_bitsandbytes_int8_linear_layers(setup: dict[str, Path]) -> None:
    bnb = pytest.importorskip("bitsandbytes")
    options = TrainOptions(model=str(setup["model"]), output=str(setup["root"] / "int8"), quant=8)
    model, _ = _load_model(options, False, False, None)
    base = model.get_base_model().model.layers
    int8 = [m for m in base.modules() if isinstance(m, bnb.nn.Linear8bitLt)]
    assert len(int8) == 14 and all(m.weight.dtype == torch.int8 for m in int8)


@pytest.mark.slow  # a two-step training run
def test_tensorboard_logs_the_run_and_missing_loggers_are_refused(setup: dict[str, Path]) -> None:
    pytest.importorskip("tensorboard")
    report = run(setup, "tb", report_to="tensorboard")
    events = list((setup["root"] / "tb").rglob("events.out.tfevents.*"))
    assert report["steps"] == 2 and events and all(e.stat().st_size > 0 for e in events)
    for logger in ("wandb", "mlflow"):
        if importlib.util.find_spec(logger) is None:
            with pytest.raises(PrepError, match=f"^--report-to {logger} needs the {logger} package: pip install "
                                                f"{logger}$"):
                run(setup, logger, report_to=logger)


@pytest.mark.parametrize(("options", "message"), [
    ({"freeze_layers": 1, "merge": True}, "--merge goes with a LoRA adapter; --freeze-layers 1 trains"),
    ({"full": True, "loraplus_lr_ratio": 16.0}, "--loraplus-lr-ratio 16.0 goes with a LoRA adapter; --full"),
    ({"lora_init": "loftq"}, "add --qlora"),
    ({"lora_init": "pissa", "quant": 8}, "cannot be combined with a quantized base"),
    ({"qlora": True, "quant": 8}, "--qlora is --quant 4"),
    ({"quant": 6}, "--quant 6: must be 4 or 8"),
    ({"freeze_layers": 3}, "--freeze-layers 3: .* has 2 decoder layers"),
])
def test_knobs_that_do_not_go_together_are_refused(setup: dict[str, Path], options: dict, message: str) -> None:
    with pytest.raises(PrepError, match=message):
        run(setup, "refused", **options)


def test_loftq_needs_a_gpu(setup: dict[str, Path]) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is here: loftq runs")
    with pytest.raises(PrepError, match="--lora-init loftq needs a GPU"):
        run(setup, "loftq", lora_init="loftq", qlora=True)
