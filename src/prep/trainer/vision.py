"""Vision-language models in `prep train` (issue 23 item 6): shards whose rows hold media (design §2a) train a LoRA on
a Qwen2-VL-style model, the media loaded by reference at batch time.

The shards keep token ids and media references, never pixels: each row's `media` column lists its images in order
with where the file lies (`root` indexes the manifest's `media_roots`, the first of which is the shard folder),
the image's expanded `<|image_pad|>` run in `input_ids` (`start`, `length`) and the grid (t, h, w) the processor
gave it when the row was tokenized. `MediaCollator` opens each image as transformers' processors do
(`load_image`: EXIF rotation applied, RGB), runs the model folder's own image processor on the batch's images and
refuses a row whose grid differs from the shard's, or whose image tokens do not match the grids: the model would
otherwise stop with "Image features and image tokens do not match" (or train on misplaced features). It adds
what a Qwen2-VL processor adds beside the ids: `pixel_values`, `image_grid_thw` and `mm_token_type_ids`
(1 on the image token, 0 elsewhere: the M-RoPE positions are built from it).

The vision tower is frozen by default (the LoRA targets the language model's linear layers only); with
`--train-vision` the tower's linear layers (attention, MLP and the merger into the text model) get LoRA too, or with
`--full` its weights train. Packed rows with media are refused (the model computes M-RoPE positions per row, not
per packed document), and so are video and audio rows: Qwen2-VL's video processor needs torchvision, which this build does not
use, and the model takes no audio.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.compute as pc

from prep.core.columns import MEDIA_COLUMN
from prep.core.findings import PrepError
from prep.shards.media import has_media, resolve, roots
from prep.shards.reader import iter_tables

# Where transformers' vision-language models keep their vision encoder (Qwen2-VL: `model.visual`; LLaVA-style:
# `vision_tower`; Idefics/SmolVLM: `vision_model`), as a component of a module's name.
VISION_PARTS = frozenset({"visual", "vision_tower", "vision_model"})
OUTPUT_LAYERS = frozenset({"lm_head"})  # peft's all-linear leaves the output layer out; so does prep
MEDIA_TYPE_IDS = {"image": 1, "video": 2}  # mm_token_type_ids, as transformers' processors number them
# The model types whose inputs MediaCollator makes (pixel_values, image_grid_thw, mm_token_type_ids for M-RoPE).
TRAINS_MEDIA = {"qwen2_vl": "Qwen2-VL", "qwen2_5_vl": "Qwen2.5-VL"}


def is_vision_language(config: Any) -> bool:
    """A transformers config of a vision-language model (it has a vision encoder's config)."""
    return getattr(config, "vision_config", None) is not None


def model_config(model: str) -> Any:
    """The model folder's config, or None when it has none transformers reads (the model load then says why)."""
    from transformers import AutoConfig  # noqa: PLC0415 - train extra

    try:
        return AutoConfig.from_pretrained(model)
    except (OSError, ValueError):
        return None


def check_media_shards(folder: str, manifest: dict[str, Any], config: Any, model: str, method: str) -> None:
    """Refuse, before anything loads, shards with media that this model or run cannot train on: a text-only model,
    packed rows, video or audio, an image without its grid, a method other than sft (verify, which runs first, has
    found any file that is missing)."""
    if not has_media(manifest):
        return
    kinds: Counter[str] = Counter()
    for table in iter_tables(folder):
        for item in pc.list_flatten(table[MEDIA_COLUMN]).to_pylist():
            kinds[item["type"]] += 1
            if item["type"] == "image" and len(item["grid"] or ()) != 3:
                raise PrepError(f"{folder}: image {item['path']} has no (t, h, w) grid in the shards: they were made "
                                "for a model whose processor gives none (LLaVA, Gemma 3); training on images is "
                                f"implemented for {' and '.join(TRAINS_MEDIA.values())}")
    if not kinds:
        return  # a media column whose rows hold none: text rows
    if config is not None and not is_vision_language(config):
        raise PrepError(f"{folder}: the rows hold media but the model {model} ({config.model_type}) is a text-only "
                        "model; train a vision-language model (e.g. Qwen2-VL) on them")
    if config is not None and config.model_type not in TRAINS_MEDIA:
        raise PrepError(f"{folder}: training on images is implemented for {' and '.join(TRAINS_MEDIA.values())}; the "
                        f"model {model} is a {config.model_type}")
    if method != "sft":
        raise PrepError(f"{folder}: --method {method} on rows with media is not supported; prep trains "
                        "vision-language models with sft")
    if (manifest.get("packing") or {}).get("strategy", "none") != "none":
        raise PrepError(f"{folder}: packed rows with media cannot train: Qwen2-VL-style models place each image by "
                        "multi-dimensional positions (M-RoPE) that do not restart per packed document; train on the "
                        "unpacked shards")
    if kinds["video"]:
        raise PrepError(f"{folder}: {kinds['video']} video(s) in the rows: training on video is not supported here "
                        "(Qwen2-VL's video processor needs torchvision, which cannot be installed beside this torch); "
                        "tokenize the image rows into their own shards")
    if kinds["audio"]:
        raise PrepError(f"{folder}: {kinds['audio']} audio clip(s) in the rows: the model {model} takes no audio")


def with_paths(data: Any, folder: str, manifest: dict[str, Any]) -> Any:
    """A shard dataset whose media items name the file where it lies on this machine (the collator serves the
    training and the evaluation shards, each with its own roots)."""
    found = roots(folder, manifest)

    def absolute(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:  # verify has checked every root index
        batch[MEDIA_COLUMN] = [[{**item, "path": str(resolve(found, item)), "root": 0} for item in row or ()]
                               for row in batch[MEDIA_COLUMN]]
        return batch

    return data.map(absolute, batched=True, keep_in_memory=True)


def _in_vision(name: str) -> bool:
    return not VISION_PARTS.isdisjoint(name.split("."))


def lora_targets(model: Any, target_modules: str, train_vision: bool) -> list[str]:
    """The full names of the linear layers the LoRA adapts: the language model's (all of them for all-linear, else
    those whose last name is one of `target_modules`), and with `train_vision` every linear layer of the vision
    tower as well (its own names differ from the language model's: qkv, proj, fc1, fc2, the merger's mlp)."""
    import torch  # noqa: PLC0415 - train extra

    wanted = None if target_modules == "all-linear" else {t.strip() for t in target_modules.split(",") if t.strip()}
    names = []
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear) or name.rsplit(".", 1)[-1] in OUTPUT_LAYERS:
            continue
        if _in_vision(name):
            if train_vision:
                names.append(name)
        elif wanted is None or name.rsplit(".", 1)[-1] in wanted:
            names.append(name)
    if not any(not _in_vision(n) for n in names):
        raise PrepError(f"--target-modules {target_modules}: no linear layer of the language model has that name")
    return names


def freeze_vision(model: Any) -> int:
    """Freeze the vision tower (for --full without --train-vision); the number of weights frozen."""
    frozen = 0
    for name, param in model.named_parameters():
        if _in_vision(name):
            param.requires_grad_(False)
            frozen += param.numel()
    return frozen


def vision_parameters(model: Any) -> dict[str, Any]:
    """The vision tower's weights by name (a copy), to tell what training changed."""
    return {name: p.detach().clone() for name, p in model.named_parameters() if _in_vision(name)}


class MediaCollator:
    """Padded batches of shard rows with their images: the ids, labels and image token runs as the shards hold them,
    the pixels made now by the model's own image processor."""

    def __init__(self, model: str, config: Any, pad_id: int) -> None:
        from transformers import AutoImageProcessor  # noqa: PLC0415 - train extra

        try:
            self.processor = AutoImageProcessor.from_pretrained(model)
        except (OSError, ValueError, ImportError) as e:
            raise PrepError(f"cannot load the image processor of {model} (preprocessor_config.json): "
                            f"{str(e).splitlines()[0]}") from None
        self.model, self.pad_id = model, pad_id
        self.merge = int(getattr(self.processor, "merge_size", None) or config.vision_config.spatial_merge_size)
        self.image_id = config.image_token_id

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        import torch  # noqa: PLC0415 - train extra

        images, grids = [], []
        for e in examples:
            for k, item in enumerate(e.get(MEDIA_COLUMN) or ()):
                images.append(self._load(e, k, item))
                grids.append((e, k, item))
        width = max(len(e["input_ids"]) for e in examples)
        ids = torch.full((len(examples), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(examples), width), -100, dtype=torch.long)
        mask = torch.zeros((len(examples), width), dtype=torch.long)
        for i, e in enumerate(examples):
            n = len(e["input_ids"])
            ids[i, :n] = torch.tensor(e["input_ids"])
            labels[i, :n] = torch.tensor(e["labels"])
            mask[i, :n] = 1
            self._check_tokens(e)
        batch = {"input_ids": ids, "attention_mask": mask, "labels": labels,
                 "mm_token_type_ids": (ids == self.image_id).long() * MEDIA_TYPE_IDS["image"]}
        if images:
            out = self.processor(images=images, return_tensors="pt")
            made = out["image_grid_thw"]
            for (e, k, item), grid in zip(grids, made.tolist(), strict=True):
                if list(grid) != list(item["grid"]):
                    raise PrepError(f"{_row(e)}: image {k + 1} ({item['path']}) makes grid {tuple(grid)} with the "
                                    f"image processor of {self.model} but the shards say {tuple(item['grid'])}: they "
                                    "were tokenized with other image settings (min_pixels, max_pixels, patch_size, "
                                    "merge_size); re-tokenize with the model's processor folder")
            batch["pixel_values"], batch["image_grid_thw"] = out["pixel_values"], made
        return batch

    def _load(self, example: dict[str, Any], k: int, item: dict[str, Any]) -> Any:
        from transformers.image_utils import load_image  # noqa: PLC0415 - train extra

        if item["type"] != "image":
            raise PrepError(f"{_row(example)}: media {k + 1} is a {item['type']}; only images train here")
        path = Path(item["path"])
        if not path.is_file():
            raise PrepError(f"{_row(example)}: image {k + 1} ({path}) is missing; put it back, or re-tokenize")
        try:
            return load_image(str(path))  # as transformers' processors open it: EXIF rotation applied, RGB
        except (OSError, ValueError) as e:
            raise PrepError(f"{_row(example)}: image {k + 1} ({path}) cannot be read: {e}") from None

    def _check_tokens(self, example: dict[str, Any]) -> None:
        """Each image's run holds exactly t*h*w / merge² image tokens, and the row holds no other: what the model's
        own check ("Image features and image tokens do not match") would find only after the vision tower ran."""
        ids = example["input_ids"]
        inside = 0
        for k, item in enumerate(example.get(MEDIA_COLUMN) or ()):
            t, h, w = item["grid"]
            want = t * h * w // self.merge**2
            start, length = item["start"], item["length"]
            got = sum(1 for i in ids[start:start + length] if i == self.image_id)
            if got != want:
                raise PrepError(f"{_row(example)}: image {k + 1} ({item['path']}) has {got} image tokens at "
                                f"{start}..{start + length} but its grid {tuple(item['grid'])} makes {want} with "
                                f"merge size {self.merge}; re-tokenize with the model's processor folder")
            inside += got
        total = sum(1 for i in ids if i == self.image_id)
        if total != inside:
            raise PrepError(f"{_row(example)}: {total - inside} image token(s) outside the row's images; re-tokenize "
                            "with the model's processor folder")


def _row(example: dict[str, Any]) -> str:
    """The row as a finding names it: its source id(s)."""
    ids = example.get("ids") or []
    return f"row {ids[0]}" if len(ids) == 1 else f"row {', '.join(ids)}" if ids else "a row"
