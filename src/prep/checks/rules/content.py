"""Checks on OpenAI-style raw messages that the canonical record no longer shows: the legacy
`function_call` / role `function` spelling, and image parts (OpenAI and Together accept images in
user messages as data URLs of JPEG, PNG or WEBP, at most 10 per row and 10 MB each)."""

from __future__ import annotations

import re
from typing import Any

from prep.checks.rules.conversation import raw_messages
from prep.core.findings import Finding, finding

MAX_IMAGES = 10
MAX_IMAGE_BYTES = 10 * 1024 * 1024
_DATA_URL = re.compile(r"data:image/(jpeg|png|webp);base64,")


def check(row: Any, fmt: str) -> list[Finding]:
    out: list[Finding] = []
    images = 0
    for path, messages in raw_messages(row, fmt):
        for i, m in enumerate(messages):
            if not isinstance(m, dict):
                continue
            if m.get("role") == "function" or m.get("function_call") is not None:
                key = "role" if m.get("role") == "function" else "function_call"
                out.append(finding("legacy_function_call", f"the deprecated {key} spelling of tool use",
                                   f"{path}[{i}].{key}"))
            content = m.get("content")
            if not isinstance(content, list):
                continue
            where = f"{path}[{i}]"
            for k, part in enumerate(content):
                if isinstance(part, dict) and part.get("type") == "image_url":
                    images += 1
                    out.extend(_image(part, m.get("role"), f"{where}.content[{k}]"))
    if images > MAX_IMAGES:
        out.append(finding("too_many_images", f"the row holds {images} images; at most {MAX_IMAGES} are allowed",
                           "$"))
    return out


def _image(part: dict[str, Any], role: Any, where: str) -> list[Finding]:
    if role != "user":
        return [finding("image_not_allowed", f"an image in a {role} message", where)]
    url = part.get("image_url", {}).get("url", "") if isinstance(part.get("image_url"), dict) else ""
    if not isinstance(url, str) or not _DATA_URL.match(url):
        return [finding("bad_image", "the image is not a base64 data URL of a JPEG, PNG or WEBP image",
                        f"{where}.image_url.url")]
    size = (len(url) - url.index(",") - 1) * 3 // 4
    if size > MAX_IMAGE_BYTES:
        return [finding("image_too_large", f"the image is about {size / 2**20:.1f} MB; at most 10 MB",
                        f"{where}.image_url.url")]
    return []
