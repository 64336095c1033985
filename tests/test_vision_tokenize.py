"""prep tokenize on rows with media, token-exact with the model's processor (issue 23 item 4, design §2a).

The reference is transformers' own processor, built from the PIL image processors (torchvision, which the
torchvision-backed classes and Qwen2-VL's video processor need, cannot be installed here):

- Qwen2-VL: `Qwen2VLProcessor` itself, its class check skipped for the `video_processor=None` it is given (the
  check looks the class up in a video-processor table that is empty without torchvision); its `__call__`,
  `apply_chat_template` and text expansion run unchanged, with `Qwen2VLImageProcessorPil(**preprocessor_config)`.
- LLaVA: `LlavaProcessor` with `CLIPImageProcessorPil` and LLaVA-1.5's published settings.
- Gemma 3: `Gemma3Processor` with `Gemma3ImageProcessorPil` and Gemma 3's published settings and template.
- Qwen2-VL video: transformers' `Qwen2VLVideoProcessor.sample_frames` and `smart_resize`, from its own module
  (imported with a stand-in for the torchvision module it imports at the top and never calls in those two).

Images are loaded for transformers with `transformers.image_utils.load_image` (EXIF rotation applied, as the probed
width and height are).
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from conftest import fixture, run_prep
from prep.core.findings import Batch, PrepError, Source
from prep.core.media import from_columns, pieces, used
from prep.render.encoder import Settings, build_encoder
from prep.render.templates import chat_template
from prep.render.tokenizer import load_tokenizer
from prep.render.vision import Gemma3, Llava, Qwen2VL, Unknown, load_scheme

# Qwen2-VL's special tokens in the fixture vocabulary
VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD = 151652, 151653, 151655, 151656

# llava-hf/llava-1.5-7b-hf's published image and processor settings (preprocessor_config.json, processor_config.json)
LLAVA_IMAGE = {"crop_size": {"height": 336, "width": 336}, "do_center_crop": True, "do_convert_rgb": True,
               "do_normalize": True, "do_rescale": True, "do_resize": True,
               "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
               "image_processor_type": "CLIPImageProcessor", "processor_class": "LlavaProcessor", "resample": 3,
               "rescale_factor": 0.00392156862745098, "size": {"shortest_edge": 336}}
LLAVA_PROCESSOR = {"image_token": "<image>", "num_additional_image_tokens": 1, "patch_size": 14,
                   "processor_class": "LlavaProcessor", "vision_feature_select_strategy": "default"}
# The chat template llava-hf publishes with its Qwen2-based LLaVA checkpoints (chat_template.json of
# llava-hf/llava-onevision-qwen2-*-ov-hf): every image of a message first, then its text.
LLAVA_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n'}}"
    "{# Render all images first #}{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>' }}{% endfor %}"
    "{# Render all video then #}{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}"
    "{{ '<video>' }}{% endfor %}"
    "{# Render all text next #}{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ '\\n' + content['text'] }}{% endfor %}{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ '\\n' + content['text'] }}{% endgeneration %}{% endfor %}{% endif %}"
    "{{'<|im_end|>'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
# llava-hf/llava-1.5-7b-hf's published chat template: answers end with a space, not a special token.
LLAVA_15_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}{% endif %}"
    "{# Render all images first #}{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\\n' }}{% endfor %}{# Render all text next #}{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' '}}"
    "{% endfor %}{% else %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ content['text'] + ' '}}{% endgeneration %}{% endfor %}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}")
# google/gemma-3-4b-it's published preprocessor_config.json and processor_config.json
GEMMA3_IMAGE = {"do_convert_rgb": None, "do_normalize": True, "do_pan_and_scan": None, "do_rescale": True,
                "do_resize": True, "image_mean": [0.5, 0.5, 0.5], "image_processor_type": "Gemma3ImageProcessor",
                "image_seq_length": 256, "image_std": [0.5, 0.5, 0.5], "pan_and_scan_max_num_crops": None,
                "pan_and_scan_min_crop_size": None, "pan_and_scan_min_ratio_to_activate": None,
                "processor_class": "Gemma3Processor", "resample": 2, "rescale_factor": 0.00392156862745098,
                "size": {"height": 896, "width": 896}}
GEMMA3_PROCESSOR = {"image_seq_length": 256, "processor_class": "Gemma3Processor"}
# google/gemma-3-4b-it's published chat template
GEMMA3_TEMPLATE = """{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- elif message['content'] is iterable -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'image' -%}
                {{ '<start_of_image>' }}
            {%- elif item['type'] == 'text' -%}
                {{ item['text'] | trim }}
            {%- endif -%}
        {%- endfor -%}
    {%- else -%}
        {{ raise_exception("Invalid content type") }}
    {%- endif -%}
    {{ '<end_of_turn>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model\n'}}
{%- endif -%}
"""


# helpers ---------------------------------------------------------------------------------------------------------


def record(i: int, messages: list[dict], images: list[str], root: Path) -> dict:
    """A canonical record with media (prep.core.media), as the LLaMA-Factory reader makes it: not probed yet, so
    the encoder probes each medium (prep.files.media) for its size and sha256."""
    return {"id": f"r{i}", "messages": messages, "media": from_columns({"images": images},
                                                                       used({"messages": messages}), str(root))}


def encode(folder: Path, records: list[dict], template: str | None = None, **settings: Any) -> tuple[Any, list[dict]]:
    """prep's encoder over the records: the batch of ids (with rejects) and the rows."""
    tok = load_tokenizer(folder)
    enc = build_encoder(tok, chat_template(tok, template), Settings("sft", **settings))
    out, table = enc(Batch(records, [Source("t.json", i + 1, i + 1) for i in range(len(records))]))
    return out, table.to_pylist()


def hf_messages(messages: list[dict]) -> list[dict]:
    """The conversation as transformers' processors are given it: content parts."""
    return [{"role": m["role"], "content": [{"type": "text", "text": c} if k == "text" else {"type": k}
                                            for k, c in pieces(m["content"])]} for m in messages]


def load_images(paths: list[Path]) -> list[Any]:
    from transformers.image_utils import load_image

    return [load_image(str(p)) for p in paths]


def qwen2vl_processor(folder: Path) -> Any:
    from transformers import AutoTokenizer, Qwen2VLProcessor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    class NoVideo(Qwen2VLProcessor):
        """Qwen2VLProcessor; only the class check of the absent video processor is skipped (see the docstring)."""

        def check_argument_for_proper_class(self, name: str, arg: Any) -> Any:
            if name == "video_processor" and arg is None:
                return None
            return super().check_argument_for_proper_class(name, arg)

    config = json.loads((folder / "preprocessor_config.json").read_text())
    template = json.loads((folder / "chat_template.json").read_text())["chat_template"]
    return NoVideo(image_processor=Qwen2VLImageProcessorPil(**config), tokenizer=AutoTokenizer.from_pretrained(folder),
                   video_processor=None, chat_template=template)


def hf_encode(processor: Any, messages: list[dict], images: list[Path], text: str | None = None) -> dict:
    """transformers' ids for a conversation: its processor's chat template (or `text`), then its __call__."""
    text = text if text is not None else processor.apply_chat_template(hf_messages(messages), tokenize=False)
    out = processor(text=[text], images=load_images(images) or None)
    return {"input_ids": list(out["input_ids"][0]), **{k: out[k] for k in ("image_grid_thw",) if k in out}}


def check_media_column(row: dict, ids_of_feature: set[int]) -> None:
    """Every media entry names a run of feature tokens in input_ids, and no media token carries loss."""
    ids, labels = row["input_ids"], row["labels"]
    runs = []
    k = 0
    while k < len(ids):
        if ids[k] in ids_of_feature:
            start = k
            while k < len(ids) and ids[k] in ids_of_feature:
                k += 1
            runs.append((start, k - start))
        else:
            k += 1
    assert [(e["start"], e["length"]) for e in row["media"]] == runs
    assert all(labels[k] == -100 for start, n in runs for k in range(start, start + n))


def processor_folder(tmp_path: Path, base: str, tokens: list[str], files: dict[str, Any],
                     extra: dict[str, Any] | None = None) -> Path:
    """A model's processor folder: a fixture tokenizer with the family's special tokens added (saved by
    transformers), its published settings and chat template."""
    from transformers import AutoTokenizer

    folder = tmp_path / "processor"
    tok = AutoTokenizer.from_pretrained(fixture("tokenizers", base))
    tok.add_tokens(tokens, special_tokens=True)
    tok.save_pretrained(folder)
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    config.update(extra or {})
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    for name, value in files.items():
        (folder / name).write_text(json.dumps(value))
    return folder


# Qwen2-VL ---------------------------------------------------------------------------------------------------------


def test_qwen2vl_demo_rows_equal_transformers_processor() -> None:
    """The LLaMA-Factory demo rows with their JPEGs: prep's ids equal Qwen2VLProcessor's for every row, the image
    tokens equal image_grid_thw.prod() // merge² of transformers' image processor, no media token carries loss,
    and the media column names each pad run and its grid."""
    folder = fixture("processors", "qwen2-vl")
    demo = fixture("data", "llamafactory")
    rows = json.loads((demo / "mllm_demo.json").read_text())
    records = [record(i, r["messages"], r["images"], demo) for i, r in enumerate(rows)]
    out, got = encode(folder, records)
    assert not out.rejects and len(got) == len(rows) == 6
    processor = qwen2vl_processor(folder)
    for r, row in zip(rows, got, strict=True):
        want = hf_encode(processor, r["messages"], [demo / p for p in r["images"]])
        assert row["input_ids"] == want["input_ids"]
        grids = want["image_grid_thw"].tolist()
        assert row["input_ids"].count(IMAGE_PAD) == sum(t * h * w // 4 for t, h, w in grids)
        assert [e["grid"] for e in row["media"]] == grids
        media = {VISION_START, VISION_END, IMAGE_PAD}
        assert all(label == -100 for i, label in zip(row["input_ids"], row["labels"], strict=True) if i in media)
        assert row["num_loss_tokens"] > 0
        check_media_column(row, {IMAGE_PAD})
        assert [e["path"] for e in row["media"]] == r["images"]
    assert got[0]["media"][0]["width"] == 300  # 1.jpg: 300×168 → grid (1, 12, 22), 66 tokens
    assert got[0]["media"][0]["length"] == 66


def _generated(tmp_path: Path, step: int = 1) -> list[Path]:
    """56 images of awkward sizes, modes and formats, some EXIF-rotated, written with Pillow (every `step`-th)."""
    from PIL import Image

    tmp_path.mkdir(parents=True, exist_ok=True)
    rng = random.Random(23)
    sizes = [(1, 1), (1, 2), (2, 1), (3, 7), (13, 13), (27, 27), (28, 28), (29, 29), (55, 56), (56, 56), (57, 57),
             (100, 1), (1, 150), (199, 1), (28, 5000), (5000, 28), (4000, 3000), (640, 480), (480, 640), (300, 168),
             (1000, 5), (3585, 3584), (14, 14), (15, 15)]
    while len(sizes) < 50:
        w = rng.randint(1, 1600)
        h = rng.randint(max(1, w // 150), min(1600, w * 150))
        sizes.append((w, h))
    modes = ["RGB", "L", "RGBA", "P", "LA", "CMYK", "1", "I;16"]
    paths = []
    for k, (w, h) in enumerate(sizes):
        if k % step:
            continue
        mode = modes[k % len(modes)]
        fmt = "JPEG" if mode in ("CMYK",) else ["PNG", "WEBP", "BMP", "GIF", "TIFF"][k % 5]
        if mode in ("LA", "I;16", "1") or (fmt in ("BMP", "GIF") and mode in ("RGBA",)):
            fmt = "PNG" if mode != "1" else "BMP"
        if fmt == "WEBP" and max(w, h) > 16383:
            fmt = "PNG"
        image = Image.new(mode, (w, h), color=k % 2 ** (1 if mode == "1" else 8))
        path = tmp_path / f"g{k}.{fmt.lower()}"
        image.save(path, fmt)
        paths.append(path)
    for k, (w, h, orientation) in enumerate([(640, 480, 6), (300, 100, 8), (100, 30, 3), (77, 1000, 5), (50, 20, 7),
                                             (2000, 10, 6)]):
        if (k + len(sizes)) % step:
            continue
        image = Image.new("RGB", (w, h), color=(k * 40, 0, 0))
        exif = Image.Exif()
        exif[0x0112] = orientation
        path = tmp_path / f"exif{k}.jpg"
        image.save(path, "JPEG", exif=exif)
        paths.append(path)
    return paths


def test_qwen2vl_generated_images_of_awkward_sizes(tmp_path: Path) -> None:
    """≥ 50 generated images (1×1, 28×5000, 4000×3000, grayscale, RGBA, palette, 16-bit, CMYK JPEG, EXIF-rotated):
    prep's ids equal Qwen2VLProcessor's for each, pad counts equal its grids, media tokens untrained."""
    folder = fixture("processors", "qwen2-vl")
    paths = _generated(tmp_path)
    assert len(paths) >= 56
    messages = [{"role": "user", "content": "<image>What is in the picture?"},
                {"role": "assistant", "content": "A plain colour."}]
    records = [record(k, messages, [p.name], tmp_path) for k, p in enumerate(paths)]
    out, got = encode(folder, records)
    assert not out.rejects and len(got) == len(paths)
    rotated = [row["media"][0] for row in got[-6:]]
    assert [(m["width"], m["height"]) for m in rotated[:2]] == [(480, 640), (100, 300)]  # turned by their EXIF
    processor = qwen2vl_processor(folder)
    for path, row in zip(paths, got, strict=True):
        want = hf_encode(processor, messages, [path])
        assert row["input_ids"] == want["input_ids"], path.name
        (t, h, w), = want["image_grid_thw"].tolist()
        assert row["input_ids"].count(IMAGE_PAD) == t * h * w // 4 == row["media"][0]["length"]
        assert row["media"][0]["grid"] == [t, h, w]
        assert all(label == -100 for i, label in zip(row["input_ids"], row["labels"], strict=True)
                   if i in (VISION_START, VISION_END, IMAGE_PAD))
        check_media_column(row, {IMAGE_PAD})


def test_qwen2vl_aspect_ratio_past_200_is_a_finding_as_transformers_refuses(tmp_path: Path) -> None:
    from PIL import Image

    folder = fixture("processors", "qwen2-vl")
    Image.new("RGB", (201, 1)).save(tmp_path / "thin.png")
    messages = [{"role": "user", "content": "<image>Hi"}, {"role": "assistant", "content": "Hello."}]
    out, got = encode(folder, [record(0, messages, ["thin.png"], tmp_path)])
    assert got == [] and out.rejects[0].findings[0].code == "unsupported_media"
    assert "aspect ratio" in out.rejects[0].findings[0].message
    with pytest.raises(ValueError, match="aspect ratio"):
        hf_encode(qwen2vl_processor(folder), messages, [tmp_path / "thin.png"])


def test_qwen2vl_builtin_template_writes_the_family_marker(tmp_path: Path) -> None:
    """With a built-in template (chatml) the placeholder becomes <|vision_start|><|image_pad|><|vision_end|> where
    it stands, and the processor's expansion of that text is what prep tokenizes."""
    folder = fixture("processors", "qwen2-vl")
    demo = fixture("data", "llamafactory")
    messages = [{"role": "user", "content": "Look: <image> and <image>, which is older?"},
                {"role": "assistant", "content": "The second."}]
    out, got = encode(folder, [record(0, messages, ["mllm_demo_data/2.jpg", "mllm_demo_data/3.jpg"], demo)],
                      template="chatml")
    marker = "<|vision_start|><|image_pad|><|vision_end|>"
    text = ("<|im_start|>user\nLook: " + marker + " and " + marker + ", which is older?<|im_end|>\n"
            "<|im_start|>assistant\nThe second.<|im_end|>\n")
    want = hf_encode(qwen2vl_processor(folder), messages, [demo / "mllm_demo_data/2.jpg",
                                                            demo / "mllm_demo_data/3.jpg"], text=text)
    assert got[0]["input_ids"] == want["input_ids"]
    assert len(got[0]["media"]) == 2


def _long_row(demo: Path) -> dict:
    messages = [{"role": "user", "content": "<image>Who are they?"}, {"role": "assistant", "content": "Players."},
                {"role": "user", "content": "And here?<image>"}, {"role": "assistant", "content": "x " * 200}]
    return record(0, messages, ["mllm_demo_data/1.jpg", "mllm_demo_data/2.jpg"], demo)


def test_max_len_never_cuts_a_media_block() -> None:
    """--overflow truncate cuts before a block the limit falls in; --overflow turns drops whole turns and their
    media; drop rejects the row as too_long."""
    folder = fixture("processors", "qwen2-vl")
    demo = fixture("data", "llamafactory")
    _, full = encode(folder, [_long_row(demo)])
    blocks = [(e["start"], e["length"]) for e in full[0]["media"]]
    start2 = blocks[1][0]
    limit = start2 + blocks[1][1] // 2  # inside the second image's pad run
    out, cut = encode(folder, [_long_row(demo)], max_len=limit, overflow="turns")
    assert len(cut[0]["media"]) == 1 and cut[0]["input_ids"].count(IMAGE_PAD) == blocks[0][1]
    assert out.altered[0].findings[0].code == "turns_dropped"
    out, cut = encode(folder, [_long_row(demo)], max_len=limit, overflow="truncate")
    # the cut falls in a user turn: the row ends after the last whole answer, before the second image
    assert len(cut[0]["input_ids"]) <= start2 and cut[0]["input_ids"].count(IMAGE_PAD) == blocks[0][1]
    assert [e["start"] for e in cut[0]["media"]] == [blocks[0][0]]
    out, cut = encode(folder, [_long_row(demo)], max_len=limit, overflow="drop")
    assert cut == [] and out.rejects[0].findings[0].code == "too_long"


def test_media_in_an_answer_is_never_trained_nor_cut(tmp_path: Path) -> None:
    """A template that puts an image inside a trained answer: its tokens are still -100, and a truncation whose
    limit falls inside it cuts before the block."""
    folder = fixture("processors", "qwen2-vl")
    demo = fixture("data", "llamafactory")
    messages = [{"role": "user", "content": "Draw it."}, {"role": "assistant", "content": "Here: <image> done " + "y " * 50}]
    rec = record(0, messages, ["mllm_demo_data/1.jpg"], demo)
    _, full = encode(folder, [rec])
    row = full[0]
    start, length = row["media"][0]["start"], row["media"][0]["length"]
    assert all(label == -100 for label in row["labels"][start - 1:start + length + 1])  # with vision start/end
    assert row["labels"][start - 2] != -100  # "Here:" is trained
    out, cut = encode(folder, [rec], max_len=start + 10, overflow="truncate")
    assert cut[0]["media"] == [] and IMAGE_PAD not in cut[0]["input_ids"]
    assert cut[0]["input_ids"][-1] == 151645  # closed with <|im_end|>
    assert VISION_START not in cut[0]["input_ids"]  # cut before the block, not after its start token


# Qwen2-VL video ---------------------------------------------------------------------------------------------------


def _transformers_video_module() -> Any:
    """transformers' video_processing_qwen2_vl, imported with a stand-in for `torchvision.transforms.v2.functional`,
    which it imports at the top and uses only in annotations and the resizing prep does not need."""
    import importlib

    from transformers.utils import import_utils

    # transformers asks once whether torchvision is installed and caches the answer: ask before the stand-in is in
    # place, so the answer stays "no" for everything else in this process
    assert not import_utils.is_torchvision_available()
    importlib.import_module("transformers.video_processing_utils")
    names = ["torchvision", "torchvision.transforms", "torchvision.transforms.v2",
             "torchvision.transforms.v2.functional"]
    saved = {n: sys.modules.get(n) for n in names}
    try:
        for n in names:
            sys.modules[n] = types.ModuleType(n)
        sys.modules["torchvision.transforms.v2.functional"].InterpolationMode = object  # type: ignore[attr-defined]
        return importlib.import_module("transformers.models.qwen2_vl.video_processing_qwen2_vl")
    finally:
        for n, m in saved.items():
            if m is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = m


def _video_header(path: Path) -> dict[str, Any]:
    """A video's frames, rate and size as transformers' PyAV reader reads them (stream.frames, average_rate)."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = stream.frames or sum(1 for _ in container.decode(stream))
        return {"frames": frames, "fps": float(stream.average_rate), "width": stream.codec_context.width,
                "height": stream.codec_context.height}


def test_qwen2vl_video_tokens_follow_transformers_sizing() -> None:
    """The fixture videos: frames sampled at 2 per second by transformers' own sample_frames, each frame sized by
    its smart_resize with the video pixel bounds, tokens = ceil(frames / 2) * h/14 * w/14 / 4."""
    import torch

    folder = fixture("processors", "qwen2-vl")
    demo = fixture("data", "llamafactory")
    module = _transformers_video_module()
    from transformers.video_utils import VideoMetadata

    cls = module.Qwen2VLVideoProcessor
    sampler = cls.__new__(cls)
    sampler.num_frames = sampler.fps = None  # the class's defaults (set by its __init__, which needs torchvision)
    videos = ["1.mp4", "2.avi", "3.mp4", "4.mp4"]
    records, expected = [], []
    for k, name in enumerate(videos):
        head = _video_header(demo / "mllm_demo_data" / name)
        meta = VideoMetadata(total_num_frames=head["frames"], fps=head["fps"])
        indices = cls.sample_frames(sampler, meta, temporal_patch_size=2, min_frames=4, max_frames=768, fps=2.0)
        assert isinstance(indices, torch.Tensor)
        h, w = module.smart_resize(head["height"], head["width"], factor=28, min_pixels=128 * 28 * 28,
                                   max_pixels=768 * 28 * 28)
        grid = [-(-len(indices) // 2), h // 14, w // 14]
        expected.append((grid, grid[0] * grid[1] * grid[2] // 4))
        messages = [{"role": "user", "content": "<video>What happens?"}, {"role": "assistant", "content": "Things."}]
        media = from_columns({"videos": [f"mllm_demo_data/{name}"]}, ["video"], str(demo))  # prep probes it
        records.append({"id": f"v{k}", "messages": messages, "media": media})
    out, got = encode(folder, records)
    assert not out.rejects
    for row, (grid, n) in zip(got, expected, strict=True):
        assert row["media"][0]["grid"] == grid and row["input_ids"].count(VIDEO_PAD) == n == row["media"][0]["length"]
        assert all(label == -100 for i, label in zip(row["input_ids"], row["labels"], strict=True) if i == VIDEO_PAD)
        check_media_column(row, {VIDEO_PAD})


def test_qwen2vl_video_pixel_cap_follows_transformers(tmp_path: Path) -> None:
    """A video processor config with cap_pixels_per_frame: each frame's pixel bound is an even share of
    max_video_tokens, as Qwen2VLVideoProcessor.resize computes it before smart_resize."""
    module = _transformers_video_module()
    folder = tmp_path / "capped"
    folder.mkdir()
    (folder / "preprocessor_config.json").write_text(json.dumps({"processor_class": "Qwen2VLProcessor"}))
    (folder / "video_preprocessor_config.json").write_text(json.dumps({"cap_pixels_per_frame": True,
                                                                        "max_video_tokens": 2000}))
    scheme = load_scheme(folder)
    item = {"type": "video", "width": 1280, "height": 720, "frames": 600, "fps": 30.0}
    n = 40  # 600 frames at 30 fps, 2 per second
    budget = int(2000 * 28 * 28 * 0.9)
    high = max(min(768 * 28 * 28, budget * 2 // n), int(128 * 28 * 28 * 1.05))
    h, w = module.smart_resize(720, 1280, factor=28, min_pixels=128 * 28 * 28, max_pixels=high)
    assert scheme.expand(item).grid == (20, h // 14, w // 14)


def test_audio_and_unknown_folders_are_findings_not_crashes(tmp_path: Path) -> None:
    folder = fixture("processors", "qwen2-vl")
    demo = fixture("data", "llamafactory")
    messages = [{"role": "user", "content": "<audio>What is said?"}, {"role": "assistant", "content": "Hello."}]
    media = from_columns({"audios": ["mllm_demo_data/1.mp3"]}, ["audio"], str(demo))
    out, got = encode(folder, [{"id": "a", "messages": messages, "media": media}])
    finding = out.rejects[0].findings[0]
    assert got == [] and finding.code == "unsupported_media" and "Qwen2-VL" in finding.message
    assert "audio" in finding.message and finding.path == "$.audios[0]"
    # a text model's tokenizer folder: rows with media are refused, naming the folder
    out, got = encode(fixture("tokenizers", "qwen2.5"), [record(0, [{"role": "user", "content": "<image>Hi"},
                                                                     {"role": "assistant", "content": "Yo."}],
                                                                    ["mllm_demo_data/1.jpg"], demo)])
    assert got == [] and out.rejects[0].findings[0].code == "unsupported_media"
    assert "qwen2.5" in out.rejects[0].findings[0].message
    assert isinstance(load_scheme(fixture("tokenizers", "qwen2.5")), Unknown)


def test_the_scheme_is_chosen_by_the_folder(tmp_path: Path) -> None:
    """processor_class (processor_config.json over preprocessor_config.json) names the family, else the image
    processor's type; the family's token names come from tokenizer_config.json; an unknown processor is named."""
    def folder(name: str, files: dict[str, Any]) -> Path:
        path = tmp_path / name
        path.mkdir()
        for file, value in files.items():
            (path / file).write_text(json.dumps(value))
        return path

    qwen25 = load_scheme(folder("q25", {"preprocessor_config.json": {"image_processor_type": "Qwen2VLImageProcessor",
                                                                      "min_pixels": 3136, "max_pixels": 1003520},
                                        "processor_config.json": {"processor_class": "Qwen2_5_VLProcessor"}}))
    assert isinstance(qwen25, Qwen2VL) and qwen25.name == "Qwen2_5_VLProcessor"
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    h, w = smart_resize(3000, 4000, factor=28, min_pixels=3136, max_pixels=1003520)  # the folder's max_pixels bound
    assert qwen25.expand({"type": "image", "width": 4000, "height": 3000}).grid == (1, h // 14, w // 14) == (1, 60, 82)
    gemma = load_scheme(folder("g3", {"preprocessor_config.json": {"image_processor_type": "Gemma3ImageProcessor"},
                                      "tokenizer_config.json": {"extra_special_tokens": {"image_token": "<soft>"}}}))
    assert isinstance(gemma, Gemma3) and "<soft>" * 256 in gemma.expand({"type": "image", "width": 2, "height": 2}).text
    other = load_scheme(folder("idefics", {"preprocessor_config.json": {"image_processor_type": "Idefics3ImageProcessor",
                                                                         "processor_class": "Idefics3Processor"}}))
    assert isinstance(other, Unknown) and "Idefics3Processor" in other.what


# LLaVA ----------------------------------------------------------------------------------------------------------


def _llava_folder(tmp_path: Path) -> Path:
    return processor_folder(tmp_path, "qwen2.5", ["<image>"], {
        "preprocessor_config.json": LLAVA_IMAGE, "processor_config.json": LLAVA_PROCESSOR,
        "chat_template.json": {"chat_template": LLAVA_TEMPLATE}})


def _llava_processor(folder: Path, template: str) -> Any:
    from transformers import AutoTokenizer, LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    settings = {k: v for k, v in LLAVA_IMAGE.items() if k not in ("image_processor_type", "processor_class")}
    return LlavaProcessor(image_processor=CLIPImageProcessorPil(**settings), tokenizer=AutoTokenizer.from_pretrained(
        folder), chat_template=template, patch_size=14, vision_feature_select_strategy="default",
        num_additional_image_tokens=1)


def test_llava_fixed_count_with_images_first_template(tmp_path: Path) -> None:
    """LLaVA-1.5's settings (576 `<image>` per image) with llava-hf's images-first template: prep's ids equal
    LlavaProcessor's on the demo rows (the template moves "What are they doing?<image>"'s image before its
    text), and no `<image>` token carries loss."""
    folder = _llava_folder(tmp_path)
    scheme = load_scheme(folder)
    assert isinstance(scheme, Llava) and scheme.count == 576  # type: ignore[attr-defined]
    demo = fixture("data", "llamafactory")
    rows = json.loads((demo / "mllm_demo.json").read_text())
    records = [record(i, r["messages"], r["images"], demo) for i, r in enumerate(rows)]
    out, got = encode(folder, records)
    assert not out.rejects
    processor = _llava_processor(folder, LLAVA_TEMPLATE)
    image_id = load_tokenizer(folder).token_id("<image>")
    for r, row in zip(rows, got, strict=True):
        want = hf_encode(processor, r["messages"], [demo / p for p in r["images"]])
        assert row["input_ids"] == want["input_ids"]
        assert row["input_ids"].count(image_id) == 576 * len(r["images"])
        assert all(label == -100 for i, label in zip(row["input_ids"], row["labels"], strict=True) if i == image_id)
        check_media_column(row, {image_id})
        assert all(e["grid"] is None for e in row["media"])
    text = load_tokenizer(folder).decode(got[0]["input_ids"])
    assert "<|im_start|>user\n<image><image>" in text and "<image>\nWhat are they doing?<|im_end|>" in text
    _same_on_generated(tmp_path, folder, processor, {image_id})


def _same_on_generated(tmp_path: Path, folder: Path, processor: Any, feature: set[int]) -> None:
    """Every 7th generated image (1×1, 28×5000, grayscale, RGBA, EXIF-rotated among them): prep's ids equal the
    processor's, whatever the size."""
    paths = _generated(tmp_path / "generated", 7)
    messages = [{"role": "user", "content": "Look.<image>"}, {"role": "assistant", "content": "Seen."}]
    out, got = encode(folder, [record(k, messages, [p.name], p.parent) for k, p in enumerate(paths)])
    assert not out.rejects and len(got) == len(paths) >= 8
    for path, row in zip(paths, got, strict=True):
        assert row["input_ids"] == hf_encode(processor, messages, [path])["input_ids"], path.name
        check_media_column(row, feature)


def test_llava_15_template_is_refused_clearly(tmp_path: Path) -> None:
    """llava-1.5's own template ends answers with a space, not a special token: refused in one line, not a
    traceback, naming what to do."""
    folder = _llava_folder(tmp_path)
    (folder / "chat_template.json").write_text(json.dumps({"chat_template": LLAVA_15_TEMPLATE}))
    with pytest.raises(PrepError, match="does not end an assistant turn with a special token"):
        chat_template(load_tokenizer(folder), None)


def test_llava_video_is_unsupported(tmp_path: Path) -> None:
    folder = _llava_folder(tmp_path)
    demo = fixture("data", "llamafactory")
    media = from_columns({"videos": ["mllm_demo_data/1.mp4"]}, ["video"], str(demo))
    messages = [{"role": "user", "content": "<video>What?"}, {"role": "assistant", "content": "X."}]
    out, _ = encode(folder, [{"id": "v", "messages": messages, "media": media}])
    assert out.rejects[0].findings[0].code == "unsupported_media" and "LLaVA" in out.rejects[0].findings[0].message


# Gemma 3 ----------------------------------------------------------------------------------------------------------


def _gemma3_folder(tmp_path: Path) -> Path:
    return processor_folder(
        tmp_path, "qwen2.5", ["<bos>", "<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<end_of_image>",
                              "<image_soft_token>"],
        {"preprocessor_config.json": GEMMA3_IMAGE, "processor_config.json": GEMMA3_PROCESSOR,
         "chat_template.json": {"chat_template": GEMMA3_TEMPLATE}},
        {"bos_token": "<bos>", "extra_special_tokens": {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
                                                        "image_token": "<image_soft_token>"}})


def test_gemma3_soft_token_block_is_expanded_in_the_text(tmp_path: Path) -> None:
    """Gemma 3: each `<start_of_image>` becomes "\\n\\n<start_of_image>" + 256 soft tokens + "<end_of_image>\\n\\n" in the
    text, so the newlines merge with their neighbours ("user\\n" + "\\n\\n" is one token): prep's ids equal
    Gemma3Processor's on the demo rows and on generated images; the block's tokens carry no loss."""
    from transformers import AutoTokenizer, Gemma3Processor
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

    folder = _gemma3_folder(tmp_path)
    assert isinstance(load_scheme(folder), Gemma3)
    demo = fixture("data", "llamafactory")
    rows = json.loads((demo / "mllm_demo.json").read_text())
    records = [record(i, r["messages"], r["images"], demo) for i, r in enumerate(rows)]
    out, got = encode(folder, records)
    assert not out.rejects
    settings = {k: v for k, v in GEMMA3_IMAGE.items()
                if k not in ("image_processor_type", "processor_class", "image_seq_length") and v is not None}
    processor = Gemma3Processor(image_processor=Gemma3ImageProcessorPil(**settings),
                                tokenizer=AutoTokenizer.from_pretrained(folder), chat_template=GEMMA3_TEMPLATE,
                                image_seq_length=256)
    tok = load_tokenizer(folder)
    soft, boi, eoi = (tok.token_id(t) for t in ("<image_soft_token>", "<start_of_image>", "<end_of_image>"))
    for r, row in zip(rows, got, strict=True):
        want = hf_encode(processor, r["messages"], [demo / p for p in r["images"]])
        assert row["input_ids"] == want["input_ids"]
        assert row["input_ids"].count(soft) == 256 * len(r["images"])
        assert all(label == -100 for i, label in zip(row["input_ids"], row["labels"], strict=True)
                   if i in (soft, boi, eoi))
        check_media_column(row, {soft})
    assert "\n\n\n" in tok.decode(got[0]["input_ids"][:8])  # "user\n" and the block's "\n\n" as the processor has them
    _same_on_generated(tmp_path, folder, processor, {soft})


def test_gemma3_pan_and_scan_is_refused(tmp_path: Path) -> None:
    folder = _gemma3_folder(tmp_path)
    (folder / "preprocessor_config.json").write_text(json.dumps({**GEMMA3_IMAGE, "do_pan_and_scan": True}))
    with pytest.raises(PrepError, match="pan-and-scan"):
        load_scheme(folder)


# the CLI ------------------------------------------------------------------------------------------------------------


def test_cli_tokenize_multimodal_file(tmp_path: Path) -> None:
    """`prep tokenize` on the LLaMA-Factory demo file with the Qwen2-VL folder: shards with the media column and a
    manifest listing the roots and each distinct file once; a data URL medium is written into the shard folder."""
    folder = fixture("processors", "qwen2-vl")
    demo = fixture("data", "llamafactory")
    data = tmp_path / "demo"
    shutil.copytree(demo / "mllm_demo_data", data / "mllm_demo_data")
    shutil.copy(demo / "mllm_demo.json", data / "mllm_demo.json")
    out = tmp_path / "shards"
    proc = run_prep("tokenize", str(data / "mllm_demo.json"), "--tokenizer", str(folder), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["media_roots"] == [".", str(data.resolve())]
    assert manifest["media"]["items"] == 8
    files = manifest["media"]["files"]
    assert sorted(f["path"] for f in files) == ["mllm_demo_data/1.jpg", "mllm_demo_data/2.jpg",
                                                "mllm_demo_data/3.jpg"]
    for f in files:
        assert f["root"] == 1 and f["type"] == "image"
        body = (data / f["path"]).read_bytes()
        assert f["sha256"] == hashlib.sha256(body).hexdigest() and f["bytes"] == len(body)
    import pyarrow.parquet as pq

    table = pq.read_table(out / manifest["shards"][0]["path"])
    assert "media" in table.column_names
    first = table.to_pylist()[0]["media"]
    assert [(e["root"], e["path"], e["grid"]) for e in first] == [(1, "mllm_demo_data/1.jpg", [1, 12, 22])] * 2
    # worker processes make the same shards (the media roots travel with each batch's table)
    proc = run_prep("tokenize", str(data / "mllm_demo.json"), "--tokenizer", str(folder), "-o", str(tmp_path / "w2"),
                    "--workers", "2")
    assert proc.returncode == 0, proc.stderr
    again = json.loads((tmp_path / "w2" / "manifest.json").read_text())
    assert [s["sha256"] for s in again["shards"]] == [s["sha256"] for s in manifest["shards"]]
    assert again["media"] == manifest["media"] and again["media_roots"] == manifest["media_roots"]


def test_shards_write_data_url_media_into_the_folder(tmp_path: Path) -> None:
    """A data-URL image: the shard writer puts its bytes at media/<sha256>.png in the shard folder (root 0), a file
    under a root is referenced where it is (root 1), and the manifest lists each distinct file once."""
    import base64

    import pyarrow.parquet as pq
    from PIL import Image

    from prep.shards.writer import ShardWriter

    folder = fixture("processors", "qwen2-vl")
    demo = fixture("data", "llamafactory")
    Image.new("RGB", (64, 40), (200, 10, 10)).save(tmp_path / "red.png")
    body = (tmp_path / "red.png").read_bytes()
    url = "data:image/png;base64," + base64.b64encode(body).decode()
    sha = hashlib.sha256(body).hexdigest()
    inline = {"type": "image", "url": url, "at": "$.messages[0].content[0].image_url.url"}
    messages = [{"role": "user", "content": "<image>Colour?"}, {"role": "assistant", "content": "Red."}]
    records = [{"id": "u1", "messages": messages, "media": [inline]},
               {"id": "u2", "messages": messages, "media": [dict(inline)]},
               record(3, messages, ["mllm_demo_data/2.jpg"], demo)]
    tok = load_tokenizer(folder)
    enc = build_encoder(tok, chat_template(tok, None), Settings("sft"))
    out, table = enc(Batch(records, [Source("t.jsonl", i + 1, i + 1) for i in range(3)]))
    assert not out.rejects
    shards = tmp_path / "shards"
    with ShardWriter(shards, "sft", {}, media=True) as writer:
        writer.account(out)
        writer.add(table)
    manifest = json.loads((shards / "manifest.json").read_text())
    assert manifest["media_roots"] == [".", str(demo.resolve())]
    assert manifest["media"]["items"] == 3
    assert [(f["root"], f["path"], f["bytes"]) for f in manifest["media"]["files"]] == [
        (0, f"media/{sha}.png", len(body)), (1, "mllm_demo_data/2.jpg", (demo / "mllm_demo_data/2.jpg").stat().st_size)]
    assert (shards / "media" / f"{sha}.png").read_bytes() == body
    rows = pq.read_table(shards / manifest["shards"][0]["path"]).to_pylist()
    assert [(e["root"], e["path"]) for r in rows for e in r["media"]] == [
        (0, f"media/{sha}.png"), (0, f"media/{sha}.png"), (1, "mllm_demo_data/2.jpg")]
    assert rows[0]["media"][0]["grid"] == [1, 4, 6]  # 64×40 is under min_pixels: smart_resize scales it up to 84×56


def test_cli_tokenize_openai_data_urls(tmp_path: Path) -> None:
    """OpenAI rows with image_url data-URL parts: `prep tokenize` writes each image once into the shard folder's
    media/ (root 0 in the media column and the manifest), and its ids equal those of the same image as a file."""
    import base64

    import pyarrow.parquet as pq
    from PIL import Image

    folder = fixture("processors", "qwen2-vl")
    Image.new("RGB", (500, 90), (0, 90, 200)).save(tmp_path / "blue.png")
    body = (tmp_path / "blue.png").read_bytes()
    part = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(body).decode()}}
    rows = [{"messages": [{"role": "user", "content": [part, {"type": "text", "text": f"Colour {k}?"}]},
                          {"role": "assistant", "content": "Blue."}]} for k in range(2)]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "shards"
    proc = run_prep("tokenize", str(tmp_path / "rows.jsonl"), "--tokenizer", str(folder), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    sha = hashlib.sha256(body).hexdigest()
    assert manifest["media_roots"] == ["."]
    assert manifest["media"] == {"items": 2, "files": [{"sha256": sha, "root": 0, "path": f"media/{sha}.png",
                                                         "bytes": len(body), "type": "image"}]}
    assert (out / "media" / f"{sha}.png").read_bytes() == body
    got = pq.read_table(out / manifest["shards"][0]["path"]).to_pylist()
    messages = [{"role": "user", "content": "<image>Colour 0?"}, {"role": "assistant", "content": "Blue."}]
    _, same = encode(folder, [record(0, messages, ["blue.png"], tmp_path)])
    assert got[0]["input_ids"] == same[0]["input_ids"] and got[0]["media"][0]["grid"] == same[0]["media"][0]["grid"]
