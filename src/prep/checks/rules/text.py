"""Unicode oddities in message text: NUL characters and unpaired surrogates (errors: tokenizers
cut text at NUL, and a lone surrogate cannot be written as UTF-8), other control characters and
runs of zero-width characters (warnings: invisible, yet they cost tokens)."""

from __future__ import annotations

import re
from collections.abc import Mapping

from prep.checks.locate import LISTS, Loc
from prep.core.findings import Finding, finding
from prep.core.records import Record

_CONTROL_BYTES = bytes([*range(0, 9), 11, 12, *range(14, 32), 127])
_ZERO_WIDTH = ("\u200b", "\u200c", "\u200d", "\u2060", "\ufeff")
_CHECKS = (
    ("nul_char", re.compile("\x00"), "a NUL character (\\u0000) at character {at}"),
    ("lone_surrogate", re.compile("[\ud800-\udfff]"), "an unpaired surrogate at character {at}"),
    ("control_char", re.compile("[\x01-\x08\x0b\x0c\x0e-\x1f\x7f]"), "a control character ({char}) at character {at}"),
    ("zero_width_run", re.compile("[\u200b-\u200d\u2060\ufeff]{3,}"), "{n} zero-width characters in a row at "
                                                                      "character {at}"),
)


def suspicious(text: str) -> bool:
    """A quick test (C-speed passes) that rules most text out before the regular expressions run."""
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate
        return True
    if len(raw.translate(None, _CONTROL_BYTES)) != len(raw):
        return True
    return not text.isascii() and any(z in text for z in _ZERO_WIDTH)


def scan_text(text: str, path: str) -> list[Finding]:
    if not suspicious(text):
        return []
    out = []
    for code, pattern, message in _CHECKS:
        if m := pattern.search(text):
            out.append(finding(code, message.format(at=m.start(), char=f"U+{ord(m.group()[0]):04X}",
                                                    n=len(m.group())), path))
    return out


def check(record: Record, locs: Mapping[str, list[Loc]], text_path: str, whole: str) -> list[Finding]:
    """`whole` is the record's text (`quality.all_text`): one quick test rules most rows out."""
    if isinstance(record.get("text"), str):
        return scan_text(record["text"], text_path)
    if not suspicious(whole):
        return []
    out = []
    for key in LISTS:
        for i, m in enumerate(record.get(key, ())):
            if suspicious(m["content"]):
                loc = locs[key][i]
                out.extend(scan_text(m["content"], loc[0] + loc[2]))
    return out
