"""Validate's fast path: a block of JSONL lines (`files.read.jsonl_blocks`) proved clean in bulk, or not at all.

A block is proved when every line decodes as a `PlainChat` (msgspec, typed: `messages` and at most a string or
integer `id`, each message a role of system/developer/user/assistant and a string content, nothing else) and the rules that could find anything
in such rows find nothing, checked over the whole block at once (numpy over the flattened roles and lengths, C-speed
searches over the bytes):

- the conversation grammar `conversation._plain` passes (optional system turn, then user/assistant alternating,
  ending with the assistant; no empty or blank content), so no conversation finding, no empty conversation;
- no text is suspicious (`text.suspicious`: controls, zero-width runs; lone surrogates do not decode);
- no row is longer than `max_chars` characters, no answer is mostly in capitals;
- no line repeats a key: the block's colons (as `jsondoc.may_repeat_keys` counts them, an upper bound) are exactly
  its keys plus the colons in its text, so no line can hold a key twice.

Such a row's schema, reader, media and unknown-column checks find nothing either (the typed decode refuses any other
key or type). What a proved block still yields is what the row path would compute of it: statistics, answers and
content keys (for duplicates). A block that is not proved goes through the row path, so the findings are always the
row path's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from prep.checks.rules.quality import shouting
from prep.checks.rules.text import suspicious
from prep.formats.chat_lines import plain_rows

_SYSTEM = ("system", "developer")


@dataclass
class Proved:
    """What the row path computes from a clean block, per row in order: content keys, the last answer, the number
    of messages, characters (all text, as `quality.all_text` joins it) and assistant characters; and the rows with
    no system and no user message."""

    keys: list[int]
    answers: list[str]
    messages: np.ndarray
    characters: np.ndarray
    assistant_characters: np.ndarray
    missing_system: int
    missing_user: int


def prove(lines: list[bytes], max_chars: int) -> Proved | None:
    """The block's figures when every row in it is a plain chat no rule finds anything in; None otherwise."""
    plain = plain_rows(lines)
    if not plain or not plain.rows:
        return None
    rows, messages, contents = plain.rows, plain.flat, plain.texts
    n = np.fromiter(map(len, plain.messages), np.int64, len(rows))
    if not all(contents) or any(map(str.isspace, contents)):
        return None
    roles = np.array([m.role for m in messages])
    ends = np.cumsum(n)
    starts = ends - n
    assistant, user, system = roles == "assistant", roles == "user", roles == "system"
    opening = np.isin(roles, _SYSTEM)
    lead = np.repeat(opening[starts].astype(np.int64), n)  # 1 where the row opens with a system turn
    turn = np.arange(len(roles)) - np.repeat(starts, n) - lead  # the position after the system turn
    grammar = np.where(turn < 0, True, np.where(turn % 2 == 0, user, assistant))
    if not grammar.all() or not assistant[ends - 1].all():
        return None
    lengths = np.fromiter(map(len, contents), np.int64, len(contents))
    characters = np.add.reduceat(lengths, starts) + n - 1
    if (characters > max_chars).any():
        return None
    answers = [c for c, a in zip(contents, assistant.tolist(), strict=True) if a]
    if any(map(shouting, answers)):
        return None
    escaped = plain.escaped or b"\x7f" in plain.data
    if any(map(suspicious, contents if escaped else (c for c in contents if not c.isascii()))):
        return None
    return Proved(keys=list(map(hash, (r.messages for r in rows))), answers=[contents[e - 1] for e in ends.tolist()],
                  messages=n, characters=characters, assistant_characters=np.add.reduceat(lengths * assistant, starts),
                  missing_system=int((~np.logical_or.reduceat(system, starts)).sum()),
                  missing_user=int((~np.logical_or.reduceat(user, starts)).sum()))
