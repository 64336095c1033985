"""prep train on shards whose rows hold images (issue 23 item 6): a LoRA on a tiny Qwen2-VL built from a config over
the fixture's Qwen2-VL processor folder, on LLaMA-Factory's multimodal demo, the images loaded by reference.

The shards are made here as design §2a describes them: ids from the real tokenizer and Qwen2-VL's chat template,
each `<|image_pad|>` expanded to t*h*w / merge² copies from the grid transformers' own image processor
(Qwen2VLImageProcessorPil, the one that runs without torchvision) gives the image, labels on the answers only, and a
`media` column referencing the files under the demo's folder (a root of the manifest's `media_roots`)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from conftest import fixture, make_tiny_model, run_prep
from prep.core.findings import Batch, PrepError
from prep.core.media import pieces
from prep.files.hashing import sha256_file
from prep.render.tokenizer import load_tokenizer
from prep.shards.reader import iter_tables
from prep.shards.writer import ShardWriter

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


def encode(tok: Any, template: str, ip: Any, messages: list[dict[str, str]], images: list[Path]) -> dict[str, Any]:
    """One row as a Qwen2-VL processor makes it: the template's `<|image_pad|>` expanded per image, answers trained."""
    from PIL import Image

    conv = [{"role": m["role"], "content": [{"type": k} if k == "image" else {"type": "text", "text": t}
                                            for k, t in pieces(m["content"])]}
            if m["role"] == "user" else {"role": m["role"], "content": m["content"]} for m in messages]
    text = tok.apply_chat_template(conv, chat_template=template, tokenize=False)
    grids = [ip(images=[Image.open(p)], return_tensors="np")["image_grid_thw"][0].tolist() for p in images]
    parts = text.split("<|image_pad|>")
    assert len(parts) == len(images) + 1
    text = parts[0] + "".join("<|image_pad|>" * (t * h * w // MERGE**2) + rest for (t, h, w), rest in
                              zip(grids, parts[1:], strict=True))
    spans, at = [], 0
    while (at := text.find("<|im_start|>assistant\n", at)) >= 0:
        start = at + len("<|im_start|>assistant\n")
        at = text.index("<|im_end|>", start) + len("<|im_end|>")
        spans.append((start, at))
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = enc["input_ids"]
    labels = [i if any(a <= s and e <= b for a, b in spans) else -100 for i, (s, e) in zip(ids, enc["offset_mapping"],
                                                                                           strict=True)]
    runs = [i for i in range(len(ids)) if ids[i] == IMAGE_PAD and (i == 0 or ids[i - 1] != IMAGE_PAD)]
    media = []
    for start, (t, h, w), path in zip(runs, grids, images, strict=True):
        with Image.open(path) as im:
            width, height = im.size
        media.append({"type": "image", "sha256": sha256_file(path), "start": start, "length": t * h * w // MERGE**2,
                      "grid": [t, h, w], "width": width, "height": height, "file": path})
    return {"input_ids": ids, "labels": labels, "media": media}


def write_shards(out: Path, rows: list[dict[str, Any]], root: Path, names: list[str]) -> Path:
    """An sft shard folder with a media column; each file is referenced under `root` (media_roots[1])."""
    items, files = [], {}
    for i, row in enumerate(rows):
        media = [{**{k: v for k, v in m.items() if k != "file"}, "root": 1,
                  "path": str(Path(m["file"]).relative_to(root))} for m in row["media"]]
        for m in media:
            files[m["sha256"]] = {"sha256": m["sha256"], "root": 1, "path": m["path"],
                                  "bytes": (root / m["path"]).stat().st_size, "type": "image"}
        n = len(row["input_ids"])
        items.append({"input_ids": row["input_ids"], "labels": row["labels"], "seq_lengths": [n], "num_tokens": n,
                      "num_loss_tokens": sum(1 for x in row["labels"] if x != -100), "ids": [names[i]],
                      "media": media})
    meta = {"tokenizer": load_tokenizer(processor_dir()).fingerprint(), "template": {"name": "qwen2-vl"},
            "train_on": "assistant", "max_len": None, "media_roots": [".", str(root)],
            "media": {"items": sum(len(r["media"]) for r in items), "files": list(files.values())}}
    with ShardWriter(out, "sft", meta, media=True) as writer:
        writer.write(Batch(items=items))
    return out


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("vision")


@pytest.fixture(scope="module")
def model(root: Path) -> str:
    return str(make_tiny_model(root / "tiny-qwen2-vl", processor_dir(), arch="qwen2-vl"))


@pytest.fixture(scope="module")
def demo(root: Path) -> dict[str, Any]:
    """LLaMA-Factory's mllm_demo.json (6 rows, 8 images) as shards, and the rows as encoded."""
    tok = transformers.AutoTokenizer.from_pretrained(str(processor_dir()))
    template = json.loads((processor_dir() / "chat_template.json").read_text())["chat_template"]
    ip = image_processor(processor_dir())
    data = json.loads((demo_dir() / "mllm_demo.json").read_text())
    rows = [encode(tok, template, ip, r["messages"], [demo_dir() / p for p in r["images"]]) for r in data]
    names = [f"mllm_demo.json:{i + 1}" for i in range(len(rows))]
    return {"folder": str(write_shards(root / "demo", rows, demo_dir(), names)), "rows": rows}


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
    config = transformers.AutoConfig.from_pretrained(model)
    collate = vision.MediaCollator(model, config, pad_id=151643)
    data = _dataset(demo["folder"])
    batch = collate([data[i] for i in range(len(data))])
    ip = image_processor(processor_dir())
    from PIL import Image

    files = [m["file"] for r in demo["rows"] for m in r["media"]]
    want = ip(images=[Image.open(f).convert("RGB") for f in files], return_tensors="pt")
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


def test_a_grid_other_than_the_processors_is_refused_before_the_model_sees_it(model: str, demo: dict[str, Any],
                                                                             tmp_path: Path) -> None:
    rows = [dict(r) for r in demo["rows"][:2]]
    rows[1]["media"] = [{**rows[1]["media"][0], "grid": [1, 14, 24]}]  # 84 tokens; the image makes (1, 14, 22)
    folder = write_shards(tmp_path / "bad", rows, demo_dir(), ["a:1", "a:2"])
    data = _dataset(str(folder))
    collate = vision.MediaCollator(model, transformers.AutoConfig.from_pretrained(model), 151643)
    with pytest.raises(PrepError, match=r"row a:2: image 1 \(.*2\.jpg\) has 77 image tokens .* makes 84"):
        collate([data[0], data[1]])
    rows[1]["media"] = [{**rows[1]["media"][0], "grid": [1, 22, 14]}]  # the same count, the other shape
    data = _dataset(str(write_shards(tmp_path / "bad2", rows, demo_dir(), ["a:1", "a:2"])))
    with pytest.raises(PrepError, match=r"row a:2: image 1 .* makes grid \(1, 14, 22\) .* shards say \(1, 22, 14\)"):
        collate([data[1]])


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
    """`prep train` on the demo shards: LoRA, vision tower frozen (the default), 9 steps of 2 rows (3 epochs),
    evaluated on them and merged."""
    out = root / "lora"
    done = run_prep("train", demo["folder"], "--model", model, "-o", str(out), "--max-steps", "9", "--lr", "3e-2",
                    "--batch-size", "2", "--warmup-ratio", "0", "--scheduler", "constant", "--eval", demo["folder"],
                    "--merge", "--quiet")
    err = done.stderr.decode()
    assert done.returncode == 0, err
    return {"report": json.loads((out / "training_report.json").read_text()), "stderr": err, "out": out}


@pytest.mark.slow
def test_prep_train_lowers_the_loss_on_the_demo_images(cli_run: dict[str, Any], demo: dict[str, Any]) -> None:
    report = cli_run["report"]
    assert report["vision_tower"] == "frozen" and report["method"] == "lora" and report["steps"] == 9
    losses = [p["loss"] for p in report["loss_curve"]]
    # whole epochs (3 steps of 2 rows) compared, so no row's own difficulty decides; 13.1 -> 10.4 on average
    assert sum(losses[-3:]) < 0.9 * sum(losses[:3]), losses
    assert report["last_loss"] < report["first_loss"]
    assert report["tokens"] == 3 * sum(len(r["input_ids"]) for r in demo["rows"])
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
    shard_rows = sorted(r["input_ids"] for t in iter_tables(demo["folder"]) for r in t.to_pylist())
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
    assert sorted(fed) == shard_rows  # 3 steps of 2 rows: every row once, exactly as stored
    from safetensors.torch import load_file

    adapter = load_file(str(out / "adapter" / "adapter_model.safetensors"))
    tower = {k: v for k, v in adapter.items() if "visual" in k}
    assert any("merger" in k for k in tower) and any("blocks.0.attn.qkv" in k for k in tower)
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in tower.items())  # trained away from its zero start


def test_a_missing_image_is_a_clear_error_naming_it(root: Path, model: str, demo: dict[str, Any],
                                                    tmp_path: Path) -> None:
    media = tmp_path / "media"
    (media / "mllm_demo_data").mkdir(parents=True)
    for image in (demo_dir() / "mllm_demo_data").glob("*.jpg"):
        shutil.copyfile(image, media / "mllm_demo_data" / image.name)
    rows = [{**r, "media": [{**m, "file": media / Path(m["file"]).relative_to(demo_dir())} for m in r["media"]]}
            for r in demo["rows"]]
    folder = write_shards(tmp_path / "shards", rows, media, [f"d:{i}" for i in range(len(rows))])
    (media / "mllm_demo_data" / "2.jpg").unlink()
    done = run_prep("train", str(folder), "--model", model, "-o", str(tmp_path / "out"), "--max-steps", "1")
    err = done.stderr.decode()
    assert done.returncode == 2 and "Traceback" not in err, err
    assert str(media / "mllm_demo_data" / "2.jpg") in err and "missing" in err
    # at batch time too (the file went after training started)
    data = _dataset(str(folder))
    collate = vision.MediaCollator(model, transformers.AutoConfig.from_pretrained(model), 151643)
    with pytest.raises(PrepError, match=r"row d:1: image 1 \(.*mllm_demo_data/2\.jpg\) is missing"):
        collate([data[1]])


def test_rows_with_media_are_refused_where_they_cannot_train(root: Path, model: str, demo: dict[str, Any],
                                                             tmp_path: Path) -> None:
    text_model = str(make_tiny_model(tmp_path / "qwen2", processor_dir(), arch="qwen2"))
    config = transformers.AutoConfig.from_pretrained(text_model)
    manifest = json.loads((Path(demo["folder"]) / "manifest.json").read_text())
    with pytest.raises(PrepError, match="text-only model"):
        vision.check_media_shards(demo["folder"], manifest, config, text_model, "sft")
    text_shards = write_shards(tmp_path / "text", [{**demo["rows"][1], "media": []}], demo_dir(), ["t:1"])
    with pytest.raises(PrepError, match="--train-vision: .* has no vision tower"):
        train(str(text_shards), TrainOptions(model=text_model, output=str(tmp_path / "o"), train_vision=True))
    vl = transformers.AutoConfig.from_pretrained(model)
    with pytest.raises(PrepError, match="packed rows with media cannot train.*M-RoPE"):
        vision.check_media_shards(demo["folder"], {**manifest, "packing": {"strategy": "bfd"}}, vl, model, "sft")
    with pytest.raises(PrepError, match="--method dpo on rows with media"):
        vision.check_media_shards(demo["folder"], manifest, vl, model, "dpo")
    video = dict(demo["rows"][1])
    video["media"] = [{**video["media"][0], "type": "video"}]
    folder = write_shards(tmp_path / "video", [video], demo_dir(), ["v:1"])
    done = run_prep("train", str(folder), "--model", model, "-o", str(tmp_path / "out"), "--max-steps", "1")
    err = done.stderr.decode()
    assert done.returncode == 2 and "video" in err and "torchvision" in err and "Traceback" not in err, err


def test_qwen2_5_vl_trains_from_the_same_batches(root: Path, demo: dict[str, Any]) -> None:
    """Qwen2.5-VL takes the same inputs (its image processor is Qwen2-VL's); its vision MLP shares the language
    model's layer names (gate_proj, up_proj, down_proj), which the LoRA still leaves out of the tower."""
    model = str(make_tiny_model(root / "tiny-qwen2.5-vl", processor_dir(), arch="qwen2.5-vl"))
    lm = transformers.AutoModelForImageTextToText.from_pretrained(model)
    assert type(lm).__name__ == "Qwen2_5_VLForConditionalGeneration"
    data = _dataset(demo["folder"])
    batch = vision.MediaCollator(model, lm.config, PAD)([data[i] for i in range(len(data))])
    assert torch.isfinite(lm(**batch).loss)
    targets = vision.lora_targets(lm, "gate_proj,down_proj", False)
    assert targets and not [n for n in targets if "visual" in n]
    assert [n for n, _ in lm.named_modules() if "visual" in n and n.endswith("gate_proj")]
