"""The model's media scheme (design §2a): what text its processor puts in place of each image or video.

A vision-language model's processor turns each medium's marker in the rendered chat text into a run of
special tokens whose length depends on the medium's size, then tokenizes the text. prep does the same text
expansion from the probed size alone (no pixels decoded, no torch or transformers imported), so the ids equal
the processor's. The scheme is chosen from the tokenizer folder's `preprocessor_config.json`
(`processor_class`, else `image_processor_type`; `processor_config.json` may name the processor instead), and
the family's token names come from `processor_config.json` / `tokenizer_config.json` where the family keeps
them. Families:

- Qwen2-VL / Qwen2.5-VL (dynamic resolution): the template writes `<|vision_start|><|image_pad|><|vision_end|>`
  and the processor repeats `<|image_pad|>` t*h*w / merge² times, (h, w) the patch grid of the image resized by
  `smart_resize`; video likewise with `<|video_pad|>`, frames sampled at 2 per second.
- LLaVA (fixed count): `<image>` repeated (crop / patch)² (+ extra tokens, - CLS) times, 576 for LLaVA-1.5.
- Gemma 3 (soft-token block): `<start_of_image>` becomes `\\n\\n<start_of_image>` + 256 `<image_soft_token>` +
  `<end_of_image>\\n\\n`, a replacement in the text, so the "\\n\\n" tokenizes together with its neighbours.

>>> q = Qwen2VL("Qwen2VLProcessor", {"min_pixels": 3136, "max_pixels": 12845056}, {})
>>> e = q.expand({"type": "image", "width": 640, "height": 480})
>>> e.tokens, e.grid
(391, (1, 34, 46))
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prep.core.findings import PrepError, RowError, row_error
from prep.core.media import PLACEHOLDERS, Item, location

# LLaMA-Factory's default `video_fps` (2.0), which transformers' Qwen2VLVideoProcessor.sample_frames takes as `fps`.
VIDEO_FPS = 2.0


@dataclass(frozen=True, slots=True)
class Expansion:
    """What one marker becomes: `text`; inside it the run of feature tokens the model swaps for the medium's
    embeddings (`feature`, character range, `tokens` of them), and `block` (character range) the part that is
    never trained nor cut (the feature run with its begin/end tokens)."""

    text: str
    feature: tuple[int, int]
    block: tuple[int, int]
    tokens: int
    grid: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Scheme:
    """A family's media scheme. `markers[kind]`: what the model's template writes for a content part of that kind
    (found in the rendered text, then expanded); `builtin[kind]`: what a built-in template writes for the
    placeholder; `wrap`: tokens the template puts around a marker that belong to its block (never trained, never
    cut)."""

    name: str  # the processor class, as the folder names it
    image_config: dict[str, Any]
    processor_config: dict[str, Any]
    family = ""
    markers: dict[str, str] = field(default_factory=dict)
    builtin: dict[str, str] = field(default_factory=dict)
    wrap: tuple[str, str] = ("", "")

    def expand(self, item: Item) -> Expansion:
        raise NotImplementedError

    def tokens(self) -> list[str]:
        """The special tokens the scheme writes; each must be one token of the tokenizer."""
        return [t for t in (*self.markers.values(), *self.wrap) if t]

    positions = "1d"  # "mrope": media tokens get (t, h, w) positions, so packed documents cannot simply restart

    def features(self) -> dict[str, str]:
        """Each media type's feature token: what its run in input_ids is made of."""
        return dict(self.markers)

    def about(self, token_id: Callable[[str], int]) -> dict[str, Any]:
        """The manifest's `processor` entry (design §2a): what verify, inspect and pack read about the media runs."""
        return {"family": self.family, "name": self.name, "positions": self.positions,
                "media_tokens": {kind: token_id(token) for kind, token in self.features().items()},
                "temporal_patch_size": int(self.image_config.get("temporal_patch_size", 1))}

    def refuse(self, item: Item, why: str) -> RowError:
        return row_error("unsupported_media", f"{self.family} ({self.name}) cannot take the {item['type']} "
                         f"{location(item)}: {why}", item.get("at", "$.media"))

    def unsupported(self, item: Item) -> RowError | None:
        if item["type"] not in self.markers:
            return self.refuse(item, f"the model takes no {item['type']}")
        return None


def _size(item: Item, scheme: Scheme) -> tuple[int, int]:
    """(height, width) as probed (images after EXIF rotation, as transformers' load_image turns them)."""
    w, h = item.get("width"), item.get("height")
    if not isinstance(w, int) or not isinstance(h, int) or w < 1 or h < 1:
        raise scheme.refuse(item, "its width and height are unknown (the file was not probed)")
    return h, w


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """Port of transformers' `smart_resize` (transformers/models/qwen2_vl/image_processing_pil_qwen2_vl.py, the same
    in video_processing_qwen2_vl.py; transformers 5.25): both sides a multiple of `factor`, the area within the
    bounds, the aspect ratio kept as closely as possible. Raises ValueError past an aspect ratio of 200, as it."""
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"absolute aspect ratio must be smaller than 200, got {max(height, width) / min(height, width)}")
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def sample_frames(total: int, fps: float, temporal: int, min_frames: int, max_frames: int,
                  want_fps: float = VIDEO_FPS) -> int:
    """How many frames transformers' `Qwen2VLVideoProcessor.sample_frames` takes with `fps` given (transformers/
    models/qwen2_vl/video_processing_qwen2_vl.py, transformers 5.25): total / fps * want_fps frames, at least
    `min_frames`, at most `max_frames` and the video's own, rounded down to a multiple of the temporal patch;
    then the indices `arange(0, total, total / n)`, whose count is ceil(total / (total / n))."""
    top = math.floor(min(max_frames, total) / temporal) * temporal
    n = total / fps * want_fps
    n = min(max(n, min_frames), top, total)
    n = math.floor(n / temporal) * temporal
    if n <= 0:
        raise ValueError(f"{total} frame(s): fewer than the {temporal} one temporal patch takes")
    return math.ceil(total / (total / n))


class Qwen2VL(Scheme):
    """Qwen2-VL and Qwen2.5-VL (transformers' Qwen2VLProcessor.replace_image_token / replace_video_token:
    `<|image_pad|>` * grid_thw.prod() // merge_size**2)."""

    family = "Qwen2-VL"
    positions = "mrope"

    def __init__(self, name: str, image_config: dict[str, Any], processor_config: dict[str, Any],
                 video_config: dict[str, Any] | None = None, tokens: dict[str, str] | None = None) -> None:
        t = tokens or {}
        image, video = t.get("image_token", "<|image_pad|>"), t.get("video_token", "<|video_pad|>")
        start, end = t.get("vision_start_token", "<|vision_start|>"), t.get("vision_end_token", "<|vision_end|>")
        super().__init__(name, image_config, processor_config, {"image": image, "video": video},
                         {"image": start + image + end, "video": start + video + end}, (start, end))
        object.__setattr__(self, "video_config", video_config or {})

    def _pixels(self, config: dict[str, Any], low: int, high: int) -> tuple[int, int]:
        """(min_pixels, max_pixels) as the processor's __init__ reads them: `size` (shortest_edge/longest_edge), then
        `min_pixels`/`max_pixels` over it."""
        size = config.get("size") or {}
        low = size.get("shortest_edge", size.get("min_pixels", low))
        high = size.get("longest_edge", size.get("max_pixels", high))
        return int(config.get("min_pixels") or low), int(config.get("max_pixels") or high)

    def _patches(self, config: dict[str, Any]) -> tuple[int, int, int]:
        base = self.image_config
        return tuple(int(config.get(k, base.get(k, d))) for k, d in  # type: ignore[return-value]
                     (("patch_size", 14), ("merge_size", 2), ("temporal_patch_size", 2)))

    def expand(self, item: Item) -> Expansion:
        refused = self.unsupported(item)
        if refused:
            raise refused
        h, w = _size(item, self)
        if item["type"] == "image":
            patch, merge, _ = self._patches(self.image_config)
            low, high = self._pixels(self.image_config, 56 * 56, 28 * 28 * 1280)
            t = 1
        else:
            config = self.video_config
            patch, merge, temporal = self._patches(config)
            low, high = self._pixels(config, 128 * 28 * 28, 768 * 28 * 28)
            frames, fps = item.get("frames"), item.get("fps")
            if not isinstance(frames, int) or not fps:
                raise self.refuse(item, "its frame count and frame rate are unknown (the file was not probed)")
            try:
                n = sample_frames(frames, float(fps), temporal, int(config.get("min_frames", 4)),
                                  int(config.get("max_frames", 768)))
            except ValueError as e:
                raise self.refuse(item, str(e)) from None
            t = -(-n // temporal)  # the processor repeats the last frame up to a whole temporal patch
            if config.get("cap_pixels_per_frame"):  # Qwen2VLVideoProcessor.resize: an even share of the token budget
                budget = int(int(config.get("max_video_tokens", 128000)) * (patch * merge) ** 2 * 0.9)
                high = max(min(high, budget * temporal // n), int(low * 1.05))
        try:
            rh, rw = smart_resize(h, w, patch * merge, low, high)
        except ValueError as e:
            raise self.refuse(item, f"{w}×{h}: {e}") from None
        grid = (t, rh // patch, rw // patch)
        n_tokens = grid[0] * grid[1] * grid[2] // (merge * merge)
        marker = self.markers[item["type"]]
        text = marker * n_tokens
        return Expansion(text, (0, len(text)), (0, len(text)), n_tokens, grid)


class Llava(Scheme):
    """LLaVA (transformers' LlavaProcessor.replace_image_token): `<image>` repeated (height // patch) * (width //
    patch) + num_additional_image_tokens times, one less with vision_feature_select_strategy "default", the
    height and width of the processed image: the crop size when the image processor center-crops (LLaVA-1.5:
    336 / 14 → 576)."""

    family = "LLaVA"

    def __init__(self, name: str, image_config: dict[str, Any], processor_config: dict[str, Any],
                 tokens: dict[str, str] | None = None) -> None:
        image = processor_config.get("image_token") or (tokens or {}).get("image_token") or "<image>"
        super().__init__(name, image_config, processor_config, {"image": image}, {"image": image})
        crop = image_config.get("crop_size")
        if not image_config.get("do_center_crop", True) or not crop or not processor_config.get("patch_size"):
            raise PrepError(f"{name}: prep reads LLaVA's fixed image size from a center-cropping image processor "
                            "(crop_size) and processor_config.json's patch_size; this folder has "
                            f"crop_size={crop}, patch_size={processor_config.get('patch_size')}")
        ch, cw = (crop, crop) if isinstance(crop, int) else (crop["height"], crop["width"])
        patch = int(processor_config["patch_size"])
        n = (ch // patch) * (cw // patch) + int(processor_config.get("num_additional_image_tokens") or 0)
        if processor_config.get("vision_feature_select_strategy") == "default":
            n -= 1
        object.__setattr__(self, "count", n)

    def expand(self, item: Item) -> Expansion:
        refused = self.unsupported(item)
        if refused:
            raise refused
        _size(item, self)
        text = self.markers["image"] * self.count  # type: ignore[attr-defined]
        return Expansion(text, (0, len(text)), (0, len(text)), self.count)  # type: ignore[attr-defined]


class Gemma3(Scheme):
    """Gemma 3 (transformers' Gemma3Processor: the boi token in the text becomes `full_image_sequence`,
    "\\n\\n" + boi + image_seq_length × image token + eoi + "\\n\\n"). Pan-and-scan crops are refused at load."""

    family = "Gemma 3"

    def __init__(self, name: str, image_config: dict[str, Any], processor_config: dict[str, Any],
                 tokens: dict[str, str] | None = None) -> None:
        t = tokens or {}
        boi, eoi = t.get("boi_token", "<start_of_image>"), t.get("eoi_token", "<end_of_image>")
        soft = t.get("image_token", "<image_soft_token>")
        super().__init__(name, image_config, processor_config, {"image": boi}, {"image": boi})
        if image_config.get("do_pan_and_scan") or processor_config.get("do_pan_and_scan"):
            raise PrepError(f"{name}: pan-and-scan (do_pan_and_scan) adds crops whose count depends on the image; "
                            "prep expands Gemma 3 images without it (the processor's default)")
        n = int(processor_config.get("image_seq_length") or image_config.get("image_seq_length") or 256)
        object.__setattr__(self, "parts", (boi, soft, eoi, n))

    def tokens(self) -> list[str]:
        boi, soft, eoi, _ = self.parts  # type: ignore[attr-defined]
        return [boi, soft, eoi]

    def features(self) -> dict[str, str]:
        return {"image": self.parts[1]}  # type: ignore[attr-defined]

    def expand(self, item: Item) -> Expansion:
        refused = self.unsupported(item)
        if refused:
            raise refused
        _size(item, self)
        boi, soft, eoi, n = self.parts  # type: ignore[attr-defined]
        text = f"\n\n{boi}{soft * n}{eoi}\n\n"
        a = 2 + len(boi)
        return Expansion(text, (a, a + len(soft) * n), (2, len(text) - 2), n)


# processor_class / image_processor_type -> scheme; the image processor names alone where they are the family's own.
_BY_PROCESSOR = {"Qwen2VLProcessor": Qwen2VL, "Qwen2_5_VLProcessor": Qwen2VL, "LlavaProcessor": Llava,
                 "Gemma3Processor": Gemma3}
_BY_IMAGE_PROCESSOR = {"Qwen2VLImageProcessor": Qwen2VL, "Qwen2VLImageProcessorFast": Qwen2VL,
                       "Gemma3ImageProcessor": Gemma3, "Gemma3ImageProcessorFast": Gemma3}
FAMILIES = ("Qwen2-VL / Qwen2.5-VL", "LLaVA", "Gemma 3")


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise PrepError(f"{path}: not valid JSON ({e})") from None
    return value if isinstance(value, dict) else {}


def _token_names(config: dict[str, Any]) -> dict[str, str]:
    """The family's token names a tokenizer_config keeps (top level, or under extra_special_tokens)."""
    extra = config.get("extra_special_tokens")
    names = {**(extra if isinstance(extra, dict) else {}), **config}
    return {k: v if isinstance(v, str) else v.get("content") for k, v in names.items()
            if k.endswith("_token") and isinstance(v, (str, dict)) and (isinstance(v, str) or v.get("content"))}


@dataclass(frozen=True)
class Unknown:
    """A folder without a scheme prep knows: rows with media are refused, naming what the folder holds."""

    what: str

    def refuse(self, item: Item) -> RowError:
        return row_error("unsupported_media", f"{self.what}: prep cannot tell which tokens its processor writes for "
                         f"{PLACEHOLDERS[item['type']]} (prep expands media for {', '.join(FAMILIES)})",
                         item.get("at", "$.media"))


def load_scheme(folder: str | Path) -> Scheme | Unknown:
    """The media scheme of a tokenizer folder (a model's processor folder), or Unknown when it names none."""
    folder = Path(folder)
    image_config = _read(folder / "preprocessor_config.json")
    processor_config = _read(folder / "processor_config.json")
    names = _token_names(_read(folder / "tokenizer_config.json"))
    processor = str(processor_config.get("processor_class") or image_config.get("processor_class") or "")
    image_type = str(image_config.get("image_processor_type") or "")
    kind = _BY_PROCESSOR.get(processor) or _BY_IMAGE_PROCESSOR.get(image_type)
    if kind is None:
        if not image_config and not processor_config:
            return Unknown(f"the tokenizer folder {folder.name} has no preprocessor_config.json (a text model's "
                           "tokenizer)")
        return Unknown(f"the processor of {folder.name} ({processor or image_type or 'unnamed'}) is not one prep "
                       "knows")
    name = processor or image_type
    if kind is Qwen2VL:
        return Qwen2VL(name, image_config, processor_config, _read(folder / "video_preprocessor_config.json"), names)
    return kind(name, image_config, processor_config, names)  # type: ignore[call-arg]
