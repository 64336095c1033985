"""Checks on OpenAI-style raw messages that the canonical record no longer shows: the legacy
`function_call` / role `function` spelling. (Images are media, checked on the record: rules/media.py.)"""

from __future__ import annotations

from typing import Any

from prep.checks.rules.conversation import raw_messages
from prep.core.findings import Finding, finding


def check(row: Any, fmt: str) -> list[Finding]:
    out: list[Finding] = []
    for path, messages in raw_messages(row, fmt):
        for i, m in enumerate(messages):
            if isinstance(m, dict) and (m.get("role") == "function" or m.get("function_call") is not None):
                key = "role" if m.get("role") == "function" else "function_call"
                out.append(finding("legacy_function_call", f"the deprecated {key} spelling of tool use",
                                   f"{path}[{i}].{key}"))
    return out
