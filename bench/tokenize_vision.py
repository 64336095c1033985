"""Tokenizing rows with images, side by side in one run on the same data (design §11, issue 23).

Data: --rows unique conversations (default 400), each asking about its own JPEG of a size drawn from what
cameras and screenshots give (320x240 up to 2048x1536), written with Pillow into a temporary folder in
LLaMA-Factory's layout (messages with `<image>`, an `images` column). Tokenizer: the Qwen2-VL processor fixture.
Measured, each tool as its own process (wall time including interpreter start and imports), best of
--repeat with the tools interleaved, and the peak RSS of that process:

- `prep tokenize` (the CLI), which sizes each image from its header alone and never decodes pixels;
- transformers' `Qwen2VLProcessor` (its image processor `Qwen2VLImageProcessorPil`; only the class check of the
  absent video processor is skipped, as torchvision cannot be installed here): the chat template, then
  `processor(text, images)` row by row, which is what a collator or a preprocessing `map` runs to get the ids.

Both must give the same number of tokens (the tests hold them equal id for id). This machine is shared:
quote the load beside the figures.

    python bench/tokenize_vision.py [--rows 400] [--repeat 2]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(os.environ.get("PREP_FIXTURES", ROOT.parent / "shared" / "fixtures"))
PROCESSOR = FIXTURES / "processors" / "qwen2-vl"
SIZES = [(320, 240), (640, 480), (800, 600), (1024, 768), (1280, 720), (1920, 1080), (2048, 1536), (1080, 1920)]
# the peak RSS of one command: its own, not this script's (a child's ru_maxrss survives exec)
MEASURED = """
import resource, subprocess, sys, time
started = time.perf_counter()
done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
print(time.perf_counter() - started, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024, done.returncode,
      (done.stdout.split() or ["-"])[-1])
print(done.stderr[-2000:], file=sys.stderr)
"""
TRANSFORMERS = """
import json, sys
from pathlib import Path
from transformers import AutoTokenizer, Qwen2VLProcessor
from transformers.image_utils import load_image
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

class NoVideo(Qwen2VLProcessor):
    def check_argument_for_proper_class(self, name, arg):
        return None if name == "video_processor" and arg is None else super().check_argument_for_proper_class(name, arg)

folder, data = Path(sys.argv[1]), Path(sys.argv[2])
processor = NoVideo(image_processor=Qwen2VLImageProcessorPil(**json.loads((folder / "preprocessor_config.json").read_text())),
                    tokenizer=AutoTokenizer.from_pretrained(folder), video_processor=None,
                    chat_template=json.loads((folder / "chat_template.json").read_text())["chat_template"])
tokens = 0
for row in json.loads(data.read_text()):
    messages = [{"role": m["role"], "content": [{"type": "image"}, {"type": "text", "text": m["content"][7:]}]
                 if m["content"].startswith("<image>") else [{"type": "text", "text": m["content"]}]} for m in row["messages"]]
    text = processor.apply_chat_template(messages, tokenize=False)
    out = processor(text=[text], images=[load_image(str(data.parent / p)) for p in row["images"]])
    tokens += len(out["input_ids"][0])
print(tokens)
"""


def make_data(folder: Path, rows: int, seed: int = 0) -> Path:
    """`rows` unique rows, each with its own JPEG (a gradient and shapes: compresses like a photo, not like noise)."""
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    (folder / "images").mkdir(parents=True)
    data = []
    for i in range(rows):
        w, h = rng.choice(SIZES)
        image = Image.linear_gradient("L").resize((w, h)).convert("RGB")
        draw = ImageDraw.Draw(image)
        for _ in range(6):
            x, y = rng.randrange(w), rng.randrange(h)
            draw.ellipse((x, y, x + rng.randrange(20, w // 2), y + rng.randrange(20, h // 2)),
                         fill=tuple(rng.randrange(256) for _ in range(3)))
        image.save(folder / "images" / f"{i}.jpg", quality=85)
        data.append({"messages": [{"role": "user", "content": f"<image>What is in picture {i}?"},
                                  {"role": "assistant", "content": f"Picture {i} shows {rng.randrange(2, 9)} shapes."}],
                     "images": [f"images/{i}.jpg"]})
    path = folder / "rows.json"
    path.write_text(json.dumps(data))
    return path


def measured(args: list[str]) -> tuple[float, int, str]:
    """Wall seconds, peak RSS (MB) and the last word the command printed."""
    done = subprocess.run([sys.executable, "-c", MEASURED, *args], capture_output=True, text=True, check=True)
    seconds, rss, rc, last = done.stdout.split()
    if rc != "0":
        raise SystemExit(f"{args[:4]} failed:\n{done.stderr}")
    return float(seconds), int(rss), last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=400)
    parser.add_argument("--repeat", type=int, default=2)
    a = parser.parse_args()
    if not PROCESSOR.is_dir():
        raise SystemExit(f"{PROCESSOR}: the Qwen2-VL processor fixture is needed (set PREP_FIXTURES)")
    with tempfile.TemporaryDirectory() as tmp:
        data = make_data(Path(tmp), a.rows)
        prep_tokens = None
        runs: dict[str, list[tuple[float, int, str]]] = {"prep tokenize (CLI)": [], "transformers Qwen2VLProcessor": []}
        for k in range(a.repeat):
            out = Path(tmp) / f"shards-{k}"
            runs["prep tokenize (CLI)"].append(measured([sys.executable, "-m", "prep", "tokenize", str(data),
                                                         "--tokenizer", str(PROCESSOR), "-o", str(out), "-q"]))
            prep_tokens = json.loads((out / "manifest.json").read_text())["tokens"]["total"]
            runs["transformers Qwen2VLProcessor"].append(measured([sys.executable, "-c", TRANSFORMERS,
                                                                   str(PROCESSOR), str(data)]))
        assert all(int(t) == prep_tokens for _, _, t in runs["transformers Qwen2VLProcessor"]), (runs, prep_tokens)
    load = os.getloadavg()
    print(f"{a.rows} rows with one JPEG each, {prep_tokens:,} tokens (equal in both); load average {load[0]:.2f}, "
          f"{time.strftime('%Y-%m-%d %H:%M')}")
    best_prep = min(s for s, _, _ in runs["prep tokenize (CLI)"])
    print("| tool | seconds (best) | rows/s | peak RSS MB | prep's speed × |")
    print("| --- | --- | --- | --- | --- |")
    for name, results in runs.items():
        seconds, rss, _ = min(results)
        print(f"| {name} | {seconds:.2f} | {a.rows / seconds:,.0f} | {rss} | {seconds / best_prep:.1f} |")


if __name__ == "__main__":
    main()
