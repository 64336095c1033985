"""Media in records (design §2a): the vocabulary every reader, writer, check and the encoder share.

A record with images, videos or audio keeps its text as text: each medium stands in its message's content
as a placeholder (`<image>`, `<video>`, `<audio>`, LLaMA-Factory's spelling), and `record["media"]` lists the
items in the order their placeholders are read (messages first to last, then prompt, chosen/completion,
rejected for pairs). An item is

    {"type": "image", "path": "mllm_demo_data/1.jpg", "root": "/data/llamafactory"}   a file under a root
    {"type": "image", "url": "data:image/png;base64,iVBO..."}                         a data URL
    {"type": "image", "url": "https://example.com/cat.jpg"}                           a URL, kept as written

and "at", the JSON path the input row wrote it at (`$.images[0]`, `$.messages[0].content[1].image_url.url`),
which findings name; plus, once probed (prep.files.media), what its header tells: "sha256", "bytes", "format", and "width"/
"height" (after EXIF rotation) for images, "duration"/"fps"/"frames" and "width"/"height" for video,
"duration"/"sample_rate" for audio. `path` is relative to `root` (the input's `--media-root`, else the folder
of the file that names it, as LLaMA-Factory resolves `media_dir`) and never leaves it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from prep.core.findings import row_error

MEDIA_TYPES = ("image", "video", "audio")
PLACEHOLDERS = {"image": "<image>", "video": "<video>", "audio": "<audio>"}
# LLaMA-Factory's per-type columns, in its order.
COLUMNS = {"image": "images", "video": "videos", "audio": "audios"}
TYPE_OF_COLUMN = {column: kind for kind, column in COLUMNS.items()}
# The message sides a record reads media from, in placeholder order.
SIDES = ("messages", "prompt", "chosen", "completion", "rejected")
_PLACEHOLDER = re.compile("|".join(map(re.escape, PLACEHOLDERS.values())))
_TYPE_OF = {token: kind for kind, token in PLACEHOLDERS.items()}
Item = dict[str, Any]


def placeholders(text: str) -> list[str]:
    """The media types of the placeholders in `text`, in order."""
    return [_TYPE_OF[m.group()] for m in _PLACEHOLDER.finditer(text)]


def pieces(text: str) -> Iterator[tuple[str, str]]:
    """`text` cut at its placeholders: ("text", chunk) and (media type, placeholder) in order, empty text left out
    (the content parts OpenAI, TRL and chat templates read)."""
    at = 0
    for m in _PLACEHOLDER.finditer(text):
        if m.start() > at:
            yield "text", text[at:m.start()]
        yield _TYPE_OF[m.group()], m.group()
        at = m.end()
    if at < len(text):
        yield "text", text[at:]


def contents(record: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(JSON path, content) of every message of a record, in placeholder order."""
    for side in SIDES:
        for i, m in enumerate(record.get(side) or ()):
            content = m.get("content")
            if isinstance(content, str):
                yield f"$.{side}[{i}].content", content


def used(record: dict[str, Any]) -> list[str]:
    """The media types of every placeholder in the record, in order."""
    return [kind for _, content in contents(record) for kind in placeholders(content)]


def from_columns(lists: dict[str, Sequence[Any]], order: Sequence[str], root: str | None) -> list[Item]:
    """LLaMA-Factory's per-type lists (`{"images": [...], ...}`) as one ordered media list: the n-th `<image>`
    placeholder takes the n-th image, and so on. A count that differs is a `media_count_mismatch` finding."""
    queues = {kind: list(lists.get(COLUMNS[kind]) or ()) for kind in MEDIA_TYPES}
    for kind in MEDIA_TYPES:
        want = sum(1 for k in order if k == kind)
        if want != len(queues[kind]):
            raise row_error("media_count_mismatch", f"{len(queues[kind])} item(s) in {COLUMNS[kind]} but {want} "
                            f"{PLACEHOLDERS[kind]} placeholder(s) in the messages", f"$.{COLUMNS[kind]}")
    taken = {kind: iter(queues[kind]) for kind in MEDIA_TYPES}
    seen = dict.fromkeys(MEDIA_TYPES, 0)
    out = []
    for kind in order:
        out.append(reference(kind, next(taken[kind]), f"$.{COLUMNS[kind]}[{seen[kind]}]", root))
        seen[kind] += 1
    return out


def to_columns(media: Iterable[Item]) -> dict[str, list[Item]]:
    """The ordered list back as LLaMA-Factory's per-type lists (only the types present)."""
    out: dict[str, list[Item]] = {}
    for item in media:
        out.setdefault(COLUMNS[item["type"]], []).append(item)
    return out


def reference(kind: str, value: Any, path: str, root: str | None) -> Item:
    """One item from what a row writes for it: a path, a data URL, a URL, or an object with one of `path`/`url`
    (LLaMA-Factory's `{"path": ...}` and HF datasets' `{"path", "bytes"}` image cells)."""
    if isinstance(value, dict):
        value = value.get("path") or value.get("url")
    if not isinstance(value, str) or not value.strip():
        raise row_error("bad_media", f"a {kind} must be a file path or a URL", path,
                        hint="write the path relative to the dataset folder, or a data: URL")
    if is_url(value):
        return {"type": kind, "url": value, "at": path}
    return {"type": kind, "path": value, "root": root, "at": path}


def is_url(value: str) -> bool:
    return value.startswith(("data:", "http://", "https://"))


def location(item: Item) -> str:
    """What a finding names for an item: its path, or a URL shortened (a data URL's payload left out)."""
    if "path" in item:
        return item["path"]
    url = item["url"]
    return url[:url.index(",") + 1] + "…" if url.startswith("data:") and "," in url else url
