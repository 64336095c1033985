"""Write the vision-language sample: a processor folder over the project's tokenizer, and the images the sample rows
show, so the multimodal chain (convert, validate, tokenize, train a vision-language LoRA) runs offline with nothing
from the hub and no fixtures.

- `samples/vision/`: samples/tokenizer with Qwen2-VL's four vision tokens added (`<|vision_start|>`,
  `<|vision_end|>`, `<|image_pad|>`, `<|video_pad|>`), Qwen2-VL-Instruct's published chat template
  (`chat_template.json`) and image settings (`preprocessor_config.json`: patch 14, merge 2, temporal patch 2,
  min_pixels 3,136, max_pixels 12,845,056, CLIP mean/std). `prep tokenize --tokenizer samples/vision` makes
  Qwen2-VL's image tokens from it, and `make_tiny_model.py --arch qwen2-vl --tokenizer samples/vision` a model.
- `samples/images/*.png`: small pictures of one shape and colour each (56-112 px: 4 to 16 image tokens), the
  images `samples/mllm.json` (LLaMA-Factory's multimodal layout) asks about.

Same code in, same bytes out:

    python samples/make_vision_sample.py [OUT_DIR]     # default: samples/ (writes OUT_DIR/vision, OUT_DIR/images)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tokenizers import AddedToken, Tokenizer

SAMPLES = Path(__file__).resolve().parent
VISION_TOKENS = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
# Qwen2-VL-Instruct's chat template as published (Apache-2.0): image and video content parts become
# <|vision_start|><|image_pad|><|vision_end|>, and a default system turn is written when there is none.
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}"
    "<|im_end|>\n{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' or 'image' in "
    "content or 'image_url' in content %}{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}"
    "Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] "
    "== 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}"
    "Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>{% elif 'text' in content "
    "%}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}"
    "<|im_start|>assistant\n{% endif %}")
PREPROCESSOR = {"min_pixels": 3136, "max_pixels": 12845056, "patch_size": 14, "temporal_patch_size": 2,
                "merge_size": 2, "image_mean": [0.48145466, 0.4578275, 0.40821073],
                "image_std": [0.26862954, 0.26130258, 0.27577711], "image_processor_type": "Qwen2VLImageProcessor",
                "processor_class": "Qwen2VLProcessor"}
# name: (width, height, colour, shape)
IMAGES = {"red-square": (56, 56, (220, 30, 30), "square"), "blue-circle": (84, 84, (30, 60, 220), "circle"),
          "green-square": (112, 56, (30, 170, 60), "square"), "yellow-circle": (56, 112, (230, 200, 20), "circle")}


def processor_folder(out: Path) -> None:
    """samples/tokenizer with the vision tokens, Qwen2-VL's template and image settings."""
    out.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer.from_file(str(SAMPLES / "tokenizer" / "tokenizer.json"))
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in VISION_TOKENS])
    tok.save(str(out / "tokenizer.json"))
    config = json.loads((SAMPLES / "tokenizer" / "tokenizer_config.json").read_text(encoding="utf-8"))
    del config["chat_template"]  # the processor's chat_template.json is the folder's template
    for token in VISION_TOKENS:
        config["added_tokens_decoder"][str(tok.token_to_id(token))] = {
            "content": token, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
            "special": True}
    config["additional_special_tokens"] += VISION_TOKENS
    _json(out / "tokenizer_config.json", config)
    _json(out / "chat_template.json", {"chat_template": CHAT_TEMPLATE})
    _json(out / "preprocessor_config.json", PREPROCESSOR)


def images(out: Path) -> None:
    """One shape in one colour on white, PNG without metadata (the same bytes on every run)."""
    from PIL import Image, ImageDraw

    out.mkdir(parents=True, exist_ok=True)
    for name, (width, height, colour, shape) in IMAGES.items():
        image = Image.new("RGB", (width, height), "white")
        draw = ImageDraw.Draw(image)
        box = (width // 6, height // 6, width - width // 6, height - height // 6)
        (draw.rectangle if shape == "square" else draw.ellipse)(box, fill=colour)
        image.save(out / f"{name}.png", optimize=True)


def _json(path: Path, value: object) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else SAMPLES
    processor_folder(out / "vision")
    images(out / "images")
