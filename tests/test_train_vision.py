"""prep train on shards whose rows hold images (issue 23 item 6): a LoRA on a tiny Qwen2-VL built from a config over
the fixture's Qwen2-VL processor folder, on LLaMA-Factory's multimodal demo tokenized by `prep tokenize` with that
folder (ids token-exact with transformers' Qwen2VLProcessor, a `media` column referencing the demo's images), the
images loaded by reference at batch time."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from conftest import SAMPLES, fixture, invoke_prep, make_tiny_model
from prep.core.findings import PrepError
from prep.shards.reader import iter_tables

torch = pytest.importorskip("torch")
pytest.importorskip("trl")
peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")

from prep.trainer import vision  # noqa: E402 - needs the train extra
from prep.trainer.train import TrainOptions, _dataset, train  # noqa: E402 - needs the train extra

IMAGE_PAD, VISION_START, VISION_END = 151655, 151652, 151653
MERGE = 2
PAD = 151643  # <|endoftext|>, the tokenizer's pad


def processor_dir() -> Path:
    return fixture("processors", "qwen2-vl")


def demo_dir() -> Path:
    return fixture("data", "llamafactory")


def image_processor(folder: Path) -> Any:
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    return Qwen2VLImageProcessorPil(**json.loads((folder / "preprocessor_config.json").read_text()))


def tokenize(data: Path, out: Path, processor: Path | None = None) -> str:
    """`prep tokenize DATA --tokenizer PROCESSOR -o OUT` (the Qwen2-VL processor folder by default)."""
    done = invoke_prep("tokenize", str(data), "--tokenizer", str(processor or processor_dir()), "-o", str(out))
    assert done.exit_code == 0, done.output
    return str(out)


def shard_rows(folder: str) -> list[dict[str, Any]]:
    return [r for t in iter_tables(folder) for r in t.to_pylist()]


def collator(model: str) -> vision.MediaCollator:
    return vision.MediaCollator(model, transformers.AutoConfig.from_pretrained(model), PAD)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("vision")


@pytest.fixture(scope="module")
def model(root: Path) -> str:
    return str(make_tiny_model(root / "tiny-qwen2-vl", processor_dir(), arch="qwen2-vl"))


@pytest.fixture(scope="module")
def demo(root: Path) -> dict[str, Any]:
    """LLaMA-Factory's mllm_demo.json (6 rows, 8 images) tokenized with the Qwen2-VL processor folder."""
    folder = tokenize(demo_dir() / "mllm_demo.json", root / "demo")
    return {"folder": folder, "rows": shard_rows(folder)}


def test_the_tiny_model_is_a_qwen2_vl_over_the_fixture_processor(model: str) -> None:
    config = transformers.AutoConfig.from_pretrained(model)
    assert config.model_type == "qwen2_vl" and vision.is_vision_language(config)
    assert (config.image_token_id, config.vision_start_token_id, config.vision_end_token_id) == \
        (IMAGE_PAD, VISION_START, VISION_END)
    assert config.text_config.vocab_size == len(transformers.AutoTokenizer.from_pretrained(model)) == 151665
    for name in ("preprocessor_config.json", "chat_template.json", "tokenizer.json"):
        assert (Path(model) / name).is_file(), name
    assert (Path(model) / "preprocessor_config.json").read_bytes() == \
        (processor_dir() / "preprocessor_config.json").read_bytes()


def test_the_collator_gives_the_shard_ids_and_the_processors_pixels(model: str, demo: dict[str, Any]) -> None:
    from PIL import Image

    data = _dataset(demo["folder"])
    batch = collator(model)([data[i] for i in range(len(data))])
    manifest = json.loads((Path(demo["folder"]) / "manifest.json").read_text())
    assert manifest["media_roots"] == [".", str(demo_dir())]
    files = [demo_dir() / m["path"] for r in demo["rows"] for m in r["media"]]
    assert len(files) == 8
    want = image_processor(processor_dir())(images=[Image.open(f).convert("RGB") for f in files], return_tensors="pt")
    assert torch.equal(batch["image_grid_thw"], want["image_grid_thw"])
    assert torch.equal(batch["pixel_values"], want["pixel_values"])
    for i, row in enumerate(demo["rows"]):
        n = len(row["input_ids"])
        assert batch["input_ids"][i, :n].tolist() == row["input_ids"]
        assert batch["labels"][i, :n].tolist() == row["labels"]
        assert batch["attention_mask"][i].sum() == n
        images = sum(t * h * w // MERGE**2 for t, h, w in (m["grid"] for m in row["media"]))
        assert int(batch["mm_token_type_ids"][i].sum()) == images == row["input_ids"].count(IMAGE_PAD)
        assert all(row["labels"][j] == -100 for j in range(n) if row["input_ids"][j] == IMAGE_PAD)
    # one forward pass on the tiny model: the vision features land on exactly the image tokens
    lm = transformers.AutoModelForImageTextToText.from_pretrained(model)
    assert torch.isfinite(lm(**batch).loss)


def test_shards_made_with_other_image_settings_are_refused_before_the_model_sees_them(model: str, tmp_path: Path) \
        -> None:
    # the processor folder with a smaller max_pixels: the demo's images are resized smaller, so other grids
    other = tmp_path / "processor"
    shutil.copytree(processor_dir(), other)
    config = json.loads((other / "preprocessor_config.json").read_text())
    (other / "preprocessor_config.json").chmod(0o644)
    (other / "preprocessor_config.json").write_text(json.dumps({**config, "max_pixels": 28 * 28 * 16}))
    folder = tokenize(demo_dir() / "mllm_demo.json", tmp_path / "small", other)
    data = _dataset(folder)
    assert data[1]["media"][0]["grid"] != [1, 14, 22]
    with pytest.raises(PrepError, match=r"row mllm_demo.json:2: image 1 \(.*2\.jpg\) makes grid \(1, 14, 22\) with the "
                                        r"image processor of .* but the shards say .*re-tokenize with the model's"):
        collator(model)([data[1]])


def test_an_image_run_that_does_not_match_its_grid_is_refused(model: str, demo: dict[str, Any]) -> None:
    row = _dataset(demo["folder"])[1]  # 2.jpg: grid (1, 14, 22), 77 image tokens
    item = row["media"][0]
    with pytest.raises(PrepError, match=r"row mllm_demo.json:2: image 1 \(.*2\.jpg\) has 77 image tokens .* makes 84"):
        collator(model)([{**row, "media": [{**item, "grid": [1, 14, 24]}]}])
    with pytest.raises(PrepError, match=r"makes grid \(1, 14, 22\) .* shards say \(1, 22, 14\)"):  # the same count
        collator(model)([{**row, "media": [{**item, "grid": [1, 22, 14]}]}])
    with pytest.raises(PrepError, match=r"1 image token\(s\) outside the row's images"):
        collator(model)([{**row, "input_ids": [*row["input_ids"], IMAGE_PAD], "labels": [*row["labels"], -100]}])


def test_lora_targets_the_language_model_unless_train_vision(model: str) -> None:
    lm = transformers.AutoModelForImageTextToText.from_pretrained(model)
    text = vision.lora_targets(lm, "all-linear", False)
    both = vision.lora_targets(lm, "all-linear", True)
    assert text and all("visual" not in n for n in text) and "lm_head" not in text
    assert {n for n in both if "visual" in n} == {n for n, m in lm.named_modules()
                                                   if "visual" in n and isinstance(m, torch.nn.Linear)}
    assert vision.lora_targets(lm, "q_proj,v_proj", False) == [n for n in text if n.endswith(("q_proj", "v_proj"))]
    with pytest.raises(PrepError, match="no linear layer of the language model"):
        vision.lora_targets(lm, "qkv", False)


@pytest.fixture(scope="module")
def cli_run(root: Path, model: str, demo: dict[str, Any]) -> dict[str, Any]:
    """`prep train` on the demo shards: LoRA, vision tower frozen (the default), 6 steps of 2 rows (2 epochs),
    evaluated on them and merged. In this process (the CLI's own process is test_train.py's): each step costs
    seconds, its rows' tokens times a vocabulary of 151k."""
    out = root / "lora"
    done = invoke_prep("train", demo["folder"], "--model", model, "-o", str(out), "--max-steps", "6", "--lr", "3e-2",
                       "--batch-size", "2", "--warmup-ratio", "0", "--scheduler", "constant", "--eval",
                       demo["folder"], "--merge", "--quiet")
    assert done.exit_code == 0, done.output
    return {"report": json.loads((out / "training_report.json").read_text()), "stderr": done.stderr, "out": out}


@pytest.mark.slow
def test_prep_train_lowers_the_loss_on_the_demo_images(cli_run: dict[str, Any], demo: dict[str, Any]) -> None:
    report = cli_run["report"]
    assert report["vision_tower"] == "frozen" and report["method"] == "lora" and report["steps"] == 6
    losses = [p["loss"] for p in report["loss_curve"]]
    # whole epochs (3 steps of 2 rows) compared, so no row's own difficulty decides; 13.1 -> 11.1 on average
    assert sum(losses[-3:]) < 0.9 * sum(losses[:3]), losses
    assert report["last_loss"] < report["first_loss"]
    assert report["tokens"] == 2 * sum(len(r["input_ids"]) for r in demo["rows"])
    assert "do not match" not in cli_run["stderr"]
    assert (cli_run["out"] / "adapter" / "preprocessor_config.json").is_file()
    assert report["eval_loss"] < losses[0]  # the evaluation batches go through the same collator
    merged = transformers.AutoModelForImageTextToText.from_pretrained(report["merged"])
    assert type(merged).__name__ == "Qwen2VLForConditionalGeneration"
    assert (Path(report["merged"]) / "preprocessor_config.json").is_file()


@pytest.mark.slow
def test_the_vision_tower_is_untouched_by_default(cli_run: dict[str, Any], model: str) -> None:
    from safetensors.torch import load_file

    adapter = load_file(str(cli_run["out"] / "adapter" / "adapter_model.safetensors"))
    assert adapter and not [k for k in adapter if "visual" in k]
    assert any("language_model" in k and "lora_B" in k and v.abs().sum() > 0 for k, v in adapter.items())
    base = transformers.AutoModelForImageTextToText.from_pretrained(model)
    tuned = peft.PeftModel.from_pretrained(transformers.AutoModelForImageTextToText.from_pretrained(model),
                                           str(cli_run["out"] / "adapter")).merge_and_unload()
    before, after = vision.vision_parameters(base), vision.vision_parameters(tuned)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.slow
def test_train_vision_adapts_the_tower_and_the_model_sees_the_shard_ids(root: Path, model: str,
                                                                         demo: dict[str, Any],
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[dict[str, Any]] = []
    # the inner model, which the generation class calls with everything by name (TRL wraps the outer forward)
    from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VLModel as cls

    forward = cls.forward

    def spy(self: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append({k: kwargs[k].detach().clone() for k in ("input_ids", "attention_mask", "mm_token_type_ids",
                                                              "image_grid_thw")})
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(cls, "forward", spy)
    out = root / "vision-lora"
    report = train(demo["folder"], TrainOptions(model=model, output=str(out), train_vision=True, max_steps=3,
                                                lr=2e-2, batch_size=2, warmup_ratio=0)).report
    assert report["vision_tower"] == "lora" and len(seen) == 3
    stored = sorted(r["input_ids"] for r in demo["rows"])
    fed = []
    for batch in seen:
        grids = iter(batch["image_grid_thw"].tolist())
        for ids, mask, types in zip(batch["input_ids"], batch["attention_mask"], batch["mm_token_type_ids"],
                                    strict=True):
            row = ids[mask.bool()].tolist()
            fed.append(row)
            images = row.count(IMAGE_PAD)
            assert int(types.sum()) == images
            runs = sum(1 for j, x in enumerate(row) if x == VISION_START)
            assert images == sum(t * h * w // MERGE**2 for t, h, w in (next(grids) for _ in range(runs)))
    assert sorted(fed) == stored  # 3 steps of 2 rows: every row once, exactly as stored
    from safetensors.torch import load_file

    adapter = load_file(str(out / "adapter" / "adapter_model.safetensors"))
    tower = {k: v for k, v in adapter.items() if "visual" in k}
    assert any("merger" in k for k in tower) and any("blocks.0.attn.qkv" in k for k in tower)
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in tower.items())  # trained away from its zero start


def test_a_missing_image_is_a_clear_error_naming_it(model: str, tmp_path: Path) -> None:
    data = tmp_path / "demo"
    (data / "mllm_demo_data").mkdir(parents=True)
    for image in (demo_dir() / "mllm_demo_data").glob("*.jpg"):
        shutil.copyfile(image, data / "mllm_demo_data" / image.name)
    shutil.copyfile(demo_dir() / "mllm_demo.json", data / "mllm_demo.json")
    folder = tokenize(data / "mllm_demo.json", tmp_path / "shards")
    rows = _dataset(folder)
    (data / "mllm_demo_data" / "2.jpg").unlink()
    done = invoke_prep("train", folder, "--model", model, "-o", str(tmp_path / "out"), "--max-steps", "1")
    err = done.stderr
    assert done.exit_code == 2, done.output
    assert "mllm_demo_data/2.jpg" in err and "missing" in err  # named by verify, before anything loads
    # at batch time too (the file went after training started)
    with pytest.raises(PrepError, match=r"row mllm_demo.json:2: image 1 \(.*mllm_demo_data/2\.jpg\) is missing"):
        collator(model)([rows[1]])


def test_rows_with_media_are_refused_where_they_cannot_train(root: Path, model: str, demo: dict[str, Any],
                                                             tmp_path: Path) -> None:
    text_model = str(make_tiny_model(tmp_path / "qwen2", processor_dir(), arch="qwen2"))
    config = transformers.AutoConfig.from_pretrained(text_model)
    manifest = json.loads((Path(demo["folder"]) / "manifest.json").read_text())
    with pytest.raises(PrepError, match="text-only model"):
        vision.check_media_shards(demo["folder"], manifest, config, text_model, "sft")
    text_shards = tokenize(SAMPLES / "alpaca.json", tmp_path / "text")
    with pytest.raises(PrepError, match="--train-vision: .* has no vision tower"):
        train(text_shards, TrainOptions(model=text_model, output=str(tmp_path / "o"), train_vision=True))
    vl = transformers.AutoConfig.from_pretrained(model)
    with pytest.raises(PrepError, match="packed rows with media cannot train.*M-RoPE"):
        vision.check_media_shards(demo["folder"], {**manifest, "packing": {"strategy": "bfd"}}, vl, model, "sft")
    with pytest.raises(PrepError, match="--method dpo on rows with media"):
        vision.check_media_shards(demo["folder"], manifest, vl, model, "dpo")
    folder = tokenize(demo_dir() / "mllm_video_demo.json", tmp_path / "video")  # Qwen2-VL's video tokens
    done = invoke_prep("train", folder, "--model", model, "-o", str(tmp_path / "out"), "--max-steps", "1")
    assert done.exit_code == 2 and "video" in done.stderr and "torchvision" in done.stderr, done.output


def test_qwen2_5_vl_trains_from_the_same_batches(root: Path, demo: dict[str, Any]) -> None:
    """Qwen2.5-VL takes the same inputs (its image processor is Qwen2-VL's); its vision MLP shares the language
    model's layer names (gate_proj, up_proj, down_proj), which the LoRA still leaves out of the tower. The batch is
    the demo's first two rows (three images, two in one row): the forward pass's logits are its tokens times 151k."""
    model = str(make_tiny_model(root / "tiny-qwen2.5-vl", processor_dir(), arch="qwen2.5-vl"))
    lm = transformers.AutoModelForImageTextToText.from_pretrained(model)
    assert type(lm).__name__ == "Qwen2_5_VLForConditionalGeneration"
    data = _dataset(demo["folder"])
    batch = vision.MediaCollator(model, lm.config, PAD)([data[0], data[1]])
    assert batch["image_grid_thw"].shape[0] == 3
    assert torch.isfinite(lm(**batch).loss)
    targets = vision.lora_targets(lm, "gate_proj,down_proj", False)
    assert targets and not [n for n in targets if "visual" in n]
    assert [n for n, _ in lm.named_modules() if "visual" in n and n.endswith("gate_proj")]
