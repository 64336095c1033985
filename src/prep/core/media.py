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

import json
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


def lists(row: dict[str, Any], names: dict[str, str | None] | None = None) -> dict[str, list[Any]]:
    """A row's non-empty per-type lists, keyed by LLaMA-Factory's column names; `names` renames the row's columns
    (a registry's `columns`; None: that type is not read). A single value is a list of one (LLaMA-Factory wraps it
    too) and a JSON list in a text cell (CSV) is parsed."""
    out = {}
    for kind, column in COLUMNS.items():
        col = column if names is None else names.get(kind)
        value = row.get(col) if col else None
        if value in (None, "", []):
            continue
        if isinstance(value, str) and value.lstrip().startswith("["):
            try:
                value = json.loads(value)
            except ValueError as e:
                raise row_error("bad_json", f"field holds text that is not valid JSON: {e}", f"$.{col}",
                                hint="fix the JSON in this field") from None
        out[column] = value if isinstance(value, list) else [value]
    return out


def from_columns(lists: dict[str, Sequence[Any]], order: Sequence[str], root: str | None,
                 names: dict[str, str | None] | None = None) -> list[Item]:
    """LLaMA-Factory's per-type lists (`{"images": [...], ...}`) as one ordered media list: the n-th `<image>`
    placeholder takes the n-th image, and so on. A count that differs is a `media_count_mismatch` finding naming
    the row's column (`names`: the row's column per type, when a registry renames them)."""
    queues = {kind: list(lists.get(COLUMNS[kind]) or ()) for kind in MEDIA_TYPES}
    column = {kind: (names or {}).get(kind) or COLUMNS[kind] for kind in MEDIA_TYPES}
    for kind in MEDIA_TYPES:
        want = sum(1 for k in order if k == kind)
        if want != len(queues[kind]):
            raise row_error("media_count_mismatch", f"{len(queues[kind])} item(s) in {column[kind]} but {want} "
                            f"{PLACEHOLDERS[kind]} placeholder(s) in the messages", f"$.{column[kind]}")
    taken = {kind: iter(queues[kind]) for kind in MEDIA_TYPES}
    seen = dict.fromkeys(MEDIA_TYPES, 0)
    out = []
    for kind in order:
        out.append(reference(kind, next(taken[kind]), f"$.{column[kind]}[{seen[kind]}]", root))
        seen[kind] += 1
    return out


def from_parts(record: dict[str, Any], slots: Sequence[Item | None], lists: dict[str, Sequence[Any]],
               root: str | None, names: dict[str, str | None] | None = None) -> list[Item]:
    """The media of a record read from content parts: `slots` holds, in order, the item of each media part that
    names its medium (OpenAI's `image_url`) and None for a bare part (TRL's `{"type": "image"}`), which takes the
    next medium of its type from the row's columns (`lists`), as TRL and transformers read them."""
    named = [s for s in slots if s is not None]
    if lists:
        if named:
            raise row_error("bad_media", "the row names media both in its content parts and in its "
                            f"{', '.join(lists)} column", named[0]["at"],
                            hint="give each medium once: a part with its URL, or a bare part and the column")
        return from_columns(lists, used(record), root, names)
    if len(named) < len(slots):
        kind = next(k for k in MEDIA_TYPES if any(s is None for s in slots))
        raise row_error("media_count_mismatch", f"a {{\"type\": \"{kind}\"}} part but no {COLUMNS[kind]} column",
                        f"$.{COLUMNS[kind]}", hint=f"list the files in a {COLUMNS[kind]} column, in part order")
    agree(record, named)
    return named


def agree(record: dict[str, Any], media: Sequence[Item]) -> None:
    """Placeholders and items agree in number and type, in order (a `media_count_mismatch` finding otherwise: a
    row whose text holds a literal `<image>` beside real media)."""
    if used(record) != [item["type"] for item in media]:
        raise row_error("media_count_mismatch", f"{len(media)} medi{'um' if len(media) == 1 else 'a'} but the "
                        f"messages hold {len(used(record))} placeholder(s) "
                        f"({', '.join(PLACEHOLDERS.values())}) in another order or number", "$",
                        hint="write <image>, <video> and <audio> in message text only where a medium stands")


def per_message(record: dict[str, Any]) -> dict[tuple[str, int], list[Item]]:
    """The record's media by the message whose placeholders they fill: (side, index) -> items in order (the writers
    of content parts put each item back in its message)."""
    media = list(record.get("media") or ())
    agree(record, media)
    items = iter(media)
    out: dict[tuple[str, int], list[Item]] = {}
    for side in SIDES:
        for i, m in enumerate(record.get(side) or ()):
            content = m.get("content")
            if isinstance(content, str) and (kinds := placeholders(content)):
                out[(side, i)] = [next(items) for _ in kinds]
    return out


def written(item: Item) -> str:
    """How a writer spells an item: its path, or its URL."""
    return item["path"] if "path" in item else item["url"]


def to_columns(media: Iterable[Item]) -> dict[str, list[Item]]:
    """The ordered list back as LLaMA-Factory's per-type lists (only the types present)."""
    out: dict[str, list[Item]] = {}
    for item in media:
        out.setdefault(COLUMNS[item["type"]], []).append(item)
    return out


def reference(kind: str, value: Any, path: str, root: str | None) -> Item:
    """One item from what a row writes for it: a path, a data URL, a URL, or an object with one of `path`/`url`
    (LLaMA-Factory's `{"path": ...}` and HF datasets' `{"path", "bytes"}` image cells). Whether a path stays under
    its root is `files.media.locate`'s to say, where the file is opened."""
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
