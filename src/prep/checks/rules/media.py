"""Media rules on a record's `media` list (design §2a): every item opened and decoded (`files.media.probe`,
deep), so a missing, unreadable, empty, damaged, unsupported or too large medium is a finding at the field the
row wrote it in; the same medium twice in a row is a warning; a URL prep does not fetch is a warning that it
went unchecked.

Rows in OpenAI's format with their media as content parts (`image_url`, ...) are meant for OpenAI's or
Together's fine-tuning, which take images only, in user messages, at most 10 a row, each a base64 data URL of
a JPEG, PNG or WEBP of at most 10 MB: those are the target's rules here. (LLaMA-Factory's messages with an
`images` column read as OpenAI's format too, but train locally: no target rules.)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from prep.core.codes import ERROR
from prep.core.findings import Finding, RowError, finding
from prep.core.media import SIDES, Item, location, placeholders
from prep.core.records import Record
from prep.files.media import LIMITS, Limits, probe

TARGETS = ("openai",)  # formats whose files go to OpenAI or Together fine-tuning
MAX_IMAGES = 10
MAX_IMAGE_BYTES = 10 * 1024 * 1024
TARGET_IMAGES = ("jpeg", "png", "webp")


def check(record: Record, fmt: str | None, limits: Limits = LIMITS, counts: Counter[str] | None = None
          ) -> list[Finding]:
    """Every finding about the record's media; `counts` gets each item checked by its type, and "<type> errors"
    for those with an error."""
    media = record.get("media")
    if not media:
        return []
    out: list[Finding] = []
    probed: list[Item | None] = []
    first_at: dict[str, str] = {}
    target = fmt in TARGETS and all(".content[" in item["at"] for item in media)  # OpenAI's own parts
    for item in media:
        found: list[Finding] = []
        got: Item | None = None
        if "url" in item and not item["url"].startswith("data:"):
            if not target:  # the target's rules refuse it (bad_image) or the type (media_not_allowed)
                found.append(finding("media_not_local", f"{location(item)} is a URL; prep does not fetch it, so "
                                     f"cannot check it", item["at"]))
        else:
            try:
                got = probe(item, deep=True, limits=limits)
            except RowError as e:
                found += e.findings
        if got is not None and (twin := first_at.setdefault(got["sha256"], item["at"])) != item["at"]:
            found.append(finding("duplicate_media", f"the same {item['type']} as {twin} (sha256 "
                                 f"{got['sha256'][:12]}…)", item["at"]))
        probed.append(got)
        out += found
        if counts is not None:
            counts[item["type"]] += 1
            counts[f"{item['type']} errors"] += any(f.severity == ERROR for f in found)
    if target:
        out += _target(media, probed, list(_roles(record)))
    return out


def _roles(record: Record) -> Iterator[str]:
    """The role of the message each medium stands in, in the media list's order."""
    for side in SIDES:
        for m in record.get(side) or ():
            content = m.get("content")
            if isinstance(content, str):
                for _ in placeholders(content):
                    yield m["role"]


def _target(media: list[Item], probed: list[Item | None], roles: list[str]) -> list[Finding]:
    """OpenAI's and Together's rules for images in fine-tuning rows."""
    out: list[Finding] = []
    images = 0
    for item, got, role in zip(media, probed, roles, strict=False):
        at = item["at"]
        if item["type"] != "image":
            out.append(finding("media_not_allowed", f"a {item['type']}: OpenAI and Together fine-tuning take images "
                               f"only", at))
            continue
        images += 1
        if role != "user":
            out.append(finding("image_not_allowed", f"an image in a {role} message", at))
        elif not item.get("url", "").startswith("data:"):
            out.append(finding("bad_image", f"{location(item)} is not a base64 data URL", at))
        elif got is not None and got["format"] not in TARGET_IMAGES:
            out.append(finding("bad_image", f"a {got['format'].upper()} image; OpenAI and Together take JPEG, PNG or "
                               f"WEBP", at))
        elif got is not None and got["bytes"] > MAX_IMAGE_BYTES:
            out.append(finding("image_too_large", f"the image is {got['bytes'] / 2**20:.1f} MB; at most 10 MB", at))
    if images > MAX_IMAGES:
        out.append(finding("too_many_images", f"the row holds {images} images; at most {MAX_IMAGES} are allowed", "$"))
    return out

