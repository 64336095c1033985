"""Media in shard folders (design §2a), for everything that reads them: where a row's media files are, which
token ids a medium's run is made of, whether the model's positions are multi-dimensional, and how a run is
named when a row is shown (`<image 1: 640×480 → 391 tokens>`).

A shard row with media has a `media` column: per medium, in order, `{type, sha256, root, path, start, length,
grid, width, height}`; `start`/`length` are its expanded run in `input_ids` (the processor's pad tokens, which
the row's markers such as `<|vision_start|>` surround), `root` indexes the manifest's `media_roots` (the first,
".", is the shard folder itself).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prep.core.columns import MEDIA_COLUMN


def has_media(manifest: dict[str, Any]) -> bool:
    """A folder whose rows carry the `media` column."""
    return MEDIA_COLUMN in (manifest.get("columns") or {})


def media_count(manifest: dict[str, Any]) -> int:
    """How many media the folder's rows hold (the manifest's `media.items`)."""
    return int((manifest.get("media") or {}).get("items") or 0)


def roots(folder: str | Path, manifest: dict[str, Any]) -> list[Path]:
    """The manifest's `media_roots` as folders: "." (and any relative entry) is the shard folder, the rest as
    written (absolute)."""
    folder = Path(folder)
    return [folder / r if not Path(r).is_absolute() else Path(r) for r in manifest.get("media_roots") or ["."]]


def resolve(found: list[Path], item: dict[str, Any]) -> Path | None:
    """The file a medium names (None: its root index is not in the manifest)."""
    root = item.get("root")
    if not isinstance(root, int) or not 0 <= root < len(found):
        return None
    return found[root] / item["path"]


def media_tokens(manifest: dict[str, Any]) -> dict[str, set[int]] | None:
    """The ids each media type's run is made of, as the manifest's `processor.media_tokens` lists them
    (`{"image": 151655, "video": [151656]}`); None when it lists none (verify then learns them from the runs)."""
    listed = (manifest.get("processor") or {}).get("media_tokens")
    if not isinstance(listed, dict) or not listed:
        return None
    return {kind: set(ids if isinstance(ids, list) else [ids]) for kind, ids in listed.items()}


def multi_dimensional_positions(manifest: dict[str, Any], grids: list[list[int]] = ()) -> str | None:
    """Why the model's position ids are not one number per token (None: they are): Qwen2-VL-style M-RoPE gives
    every media token a (t, h, w) position. The manifest says so by its processor's `positions` ("mrope"); where it
    does not, media with (t, h, w) grids (`grids`: those of the rows read) tell it."""
    processor = manifest.get("processor") or {}
    name = processor.get("family") or processor.get("name") or "this model"
    positions = processor.get("positions")
    if positions == "mrope":
        return f"{name} places media tokens at (t, h, w) positions (M-RoPE)"
    if positions is not None:
        return None if positions in ("1d", "rope") else f"{name} uses {positions} position ids"
    if any(len(g or ()) == 3 for g in grids):
        return f"{name} places media tokens at (t, h, w) positions (M-RoPE: its media have (t, h, w) grids)"
    return None


def segments(n: int, media: list[dict[str, Any]] | None, offset: int = 0) -> Iterator[tuple[int, int, int | None]]:
    """The tokens [0, n) of a document that starts at `offset` in its row, as (start, end, medium) pieces: text
    between the media (medium None) and each medium's run (its index in `media`), in order."""
    at = 0
    for k, item in enumerate(media or ()):
        start, end = item["start"] - offset, item["start"] - offset + item["length"]
        if end <= 0 or start >= n:
            continue
        start, end = max(start, 0), min(end, n)
        if start > at:
            yield at, start, None
        yield start, end, k
        at = end
    if at < n:
        yield at, n, None


def describe(item: dict[str, Any], number: int, temporal_patch: int | None = None) -> str:
    """How a medium's run is shown in place of its tokens: `<image 1: 640×480 → 391 tokens>`,
    `<video 1: 10 frames 640×360 → 1380 tokens>` (frames from the grid and the processor's temporal patch)."""
    kind = item["type"]
    size = f"{item['width']}×{item['height']}" if item.get("width") and item.get("height") else ""
    grid = list(item.get("grid") or ())
    what = size
    if kind == "video" and grid:
        frames = f"{grid[0] * temporal_patch} frames" if temporal_patch else f"{grid[0]} frame groups"
        what = f"{frames} {size}".strip()
    n = item["length"]
    return f"<{kind} {number}: {what} → {n} token{'' if n == 1 else 's'}>" if what else \
        f"<{kind} {number} → {n} token{'' if n == 1 else 's'}>"


def temporal_patch(manifest: dict[str, Any]) -> int | None:
    """The processor's temporal patch size (frames per grid step of a video): the manifest's `processor` entry, else
    the processor settings in the tokenizer folder the manifest records (Qwen2-VL's `preprocessor_config.json`)."""
    value = (manifest.get("processor") or {}).get("temporal_patch_size")
    folder = (manifest.get("tokenizer") or {}).get("path")
    for name in ("video_preprocessor_config.json", "preprocessor_config.json"):
        if value is not None or not folder:
            break
        with contextlib.suppress(OSError, ValueError, AttributeError):
            value = json.loads((Path(folder) / name).read_text(encoding="utf-8")).get("temporal_patch_size")
    return value if isinstance(value, int) and value > 0 else None


def numbered(media: list[dict[str, Any]] | None) -> list[int]:
    """Each medium's number among those of its type in the row (image 1, image 2, video 1, ...)."""
    seen: dict[str, int] = {}
    out = []
    for item in media or ():
        seen[item["type"]] = seen.get(item["type"], 0) + 1
        out.append(seen[item["type"]])
    return out

