"""Media the tests make themselves: images with Pillow, tiny videos and audio with PyAV, all in tmp_path; and what
Pillow and PyAV say about a file when they decode all of it (what probes are checked against)."""

from __future__ import annotations

import base64
import hashlib
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from PIL import Image, ImageOps

DEMO = ("data", "llamafactory", "mllm_demo_data")  # the fixture folder of LLaMA-Factory's multimodal demo


def make_image(path: Path, size: tuple[int, int] = (64, 48), mode: str = "RGB", orientation: int | None = None,
               **save: Any) -> Path:
    """An image of `size` (width, height) with a gradient (so it compresses like a picture), saved in the format
    its suffix names; `orientation`: an EXIF Orientation tag written with it."""
    w, h = size
    x = np.linspace(0, 255, w, dtype=np.uint8)[None, :].repeat(h, 0)
    y = np.linspace(0, 255, h, dtype=np.uint8)[:, None].repeat(w, 1)
    rgb = Image.fromarray(np.stack([x, y, (x // 2 + y // 2)], axis=-1))
    im = rgb.convert(mode) if mode != "RGB" else rgb
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        save["exif"] = exif.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, **save)
    return path


def make_video(path: Path, frames: int = 12, fps: int = 6, size: tuple[int, int] = (32, 24), codec: str = "libx264",
               audio: bool = False) -> Path:
    """A video of `frames` frames at `fps` (the container its suffix names), with a silent audio track if asked."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        sound = out.add_stream("aac", rate=16000) if audio else None
        for i in range(frames):
            picture = np.full((size[1], size[0], 3), (i * 20) % 256, dtype=np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")))
        out.mux(stream.encode())
        if sound is not None:
            _sine(out, sound, frames / fps, 16000)
    return path


def make_audio(path: Path, seconds: float = 0.5, rate: int = 8000, codec: str = "pcm_s16le") -> Path:
    """A sine tone of `seconds` at `rate` Hz (the container its suffix names)."""
    with av.open(str(path), "w") as out:
        _sine(out, out.add_stream(codec, rate=rate), seconds, rate)
    return path


def _sine(out: Any, stream: Any, seconds: float, rate: int) -> None:
    layout = "mono"
    fmt = "s16" if stream.codec_context.name.startswith("pcm") or stream.codec_context.name == "flac" else "fltp"
    n = int(seconds * rate)
    tone = np.sin(np.arange(n) * 2 * np.pi * 440 / rate)
    size = stream.codec_context.frame_size or 1024
    for start in range(0, n, size):
        chunk = tone[start:start + size]
        array = (chunk * 3000).astype(np.int16)[None, :] if fmt == "s16" else chunk.astype(np.float32)[None, :]
        frame = av.AudioFrame.from_ndarray(array, format=fmt, layout=layout)
        frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
        out.mux(stream.encode(frame))
    out.mux(stream.encode())


def data_url(path: Path, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def decoded_image(path: Path) -> tuple[int, int]:
    """The size Pillow gives after decoding and EXIF rotation (what transformers' load_image shows a model)."""
    with Image.open(path) as im:
        im.load()
        return ImageOps.exif_transpose(im).size


def decoded_video(path: Path) -> dict[str, Any]:
    """Frames counted by decoding every one, and the stream's rate, size and duration."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        frames = sum(1 for _ in c.decode(s))
        duration = float(s.duration * s.time_base) if s.duration else c.duration / 1e6
        return {"frames": frames, "fps": float(s.average_rate), "width": s.codec_context.width,
                "height": s.codec_context.height, "duration": duration}


def decoded_audio(path: Path) -> dict[str, Any]:
    """Samples counted by decoding every frame, over the rate: the audio's length."""
    with av.open(str(path)) as c:
        s = c.streams.audio[0]
        samples = sum(f.samples for f in c.decode(s))
        return {"sample_rate": s.codec_context.sample_rate, "duration": samples / s.codec_context.sample_rate}
