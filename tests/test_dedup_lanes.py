"""dedup's fast lane for plain chat rows (formats.chat_lines, issue 25): the same output bytes, rejects and counts as
the careful path on a file that mixes plain batches with every kind of row that must leave the lane (tool
messages, extra fields, ids, repeated keys, escapes, blank, broken and over-long lines), across files, for exact
and near duplicates, with the options that change the compared text and another output format."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import prep
from prep.formats import chat_lines
from prep.overlap.text import Compare, tagged, tagged_turns

WORDS = ["alpha", "Beta", "gamma:", "delta", "straße", "Ｈｅｌｌｏ", "你好", "say \"hi\"", "back\\slash", "tab\there",
         "line\nbreak", "ctl\x01x", "é", "😀", "  spaced  ", "colon:", "{brace}", "</think>"]
ODD = [  # lines the fast lane must hand to the careful reader (each in a batch of its own kind)
    '{"messages": [{"role": "user", "content": "q"}, {"role": "tool", "content": "r", "tool_call_id": "c"}]}',
    '{"messages": [{"role": "user", "content": "with tools"}], "tools": [{"name": "f"}]}',
    '{"messages": [{"role": "user", "content": "extra column"}], "source": "web"}',
    '{"messages": [{"role": "user", "content": "nulls"}], "source": null}',
    '{"messages": []}',
    '{"messages": [{"role": "bogus", "content": "x"}]}',
    '{"messages": [{"role": "user", "content": "broken"}',
    "",
    "   ",
    '{"messages": [{"role": "user", "content": "first"}], "messages": [{"role": "user", "content": "second"}]}',
    '{"messages": [{"role": "user", "role": "assistant", "content": "repeated role"}]}',
    '{"messages": [{"role": "user", "content": "escaped colon \\u003a here"}], "messages": [{"role": "user", "content": "z"}]}',
    '{"messages": [{"role": "user", "content": "lone \\ud800"}]}',
    '{"messages": [{"role": "user", "content": "name", "name": "bob"}]}',
    "[1, 2]",
]


def _row(rng: random.Random) -> dict[str, Any]:
    def text() -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 6)))

    turns = [{"role": "user", "content": text()}, {"role": "assistant", "content": text()}]
    if rng.random() < 0.1:
        turns.insert(0, {"role": "system", "content": text()})
    return {"messages": turns}


def _line(row: dict[str, Any], rng: random.Random, ids: bool) -> str:
    """A row as some writer wrote it: prep's own spelling mostly, else ASCII escapes, no spaces, keys reordered,
    an id of its own (when `ids`)."""
    pick = rng.random() if ids else rng.random() * 0.2
    if pick < 0.1:
        return json.dumps(row)  # \u escapes
    if pick < 0.15:
        return json.dumps(row, ensure_ascii=False, separators=(",", ":"))
    if pick < 0.2:
        return json.dumps({"messages": [{"content": m["content"], "role": m["role"]} for m in row["messages"]]},
                          ensure_ascii=False)
    if pick < 0.3:
        own = rng.choice(["own-1", 7, "", "  ", None, "id:with:colons"])
        return json.dumps({"id": own, **row} if rng.random() < 0.5 else {**row, "id": own}, ensure_ascii=False)
    return json.dumps(row, ensure_ascii=False)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """a.jsonl: 3,300 rows, plain batches and batches with odd lines, copies and near copies (some spelled
    differently), CRLF endings, an over-long line, no newline at the end; b.json: rows repeating a.jsonl's."""
    rng = random.Random(3)
    folder = tmp_path_factory.mktemp("lanes")
    rows: list[dict[str, Any]] = []
    lines: list[str] = []
    odd = 0
    for n in range(3300):
        if 1100 <= n < 2000 and n % 50 == 0:  # a batch of odd objects between plain ones
            lines.append([o for o in ODD if o.startswith("{")][odd % 12])
            odd += 1
            continue
        if n >= 3250 and n % 3 == 0:  # every odd line at the end: the lane ends at the first blank or non-object
            lines.append(ODD[(n - 3250) // 3 % len(ODD)])
            continue
        if rows and n % 17 == 0:
            row = rng.choice(rows)  # an exact copy, spelled as it comes
        elif rows and n % 23 == 0:
            row = json.loads(json.dumps(rng.choice(rows)))
            row["messages"][-1]["content"] = row["messages"][-1]["content"].upper() + " zebra"
        else:
            row = _row(rng)
            rows.append(row)
        line = _line(row, rng, n < 2048)  # the third batch: no ids
        lines.append(line + "\r" if n % 97 == 0 else line)
    lines[3200] = json.dumps({"messages": [{"role": "user", "content": "x" * 5000}]})
    a = folder / "a.jsonl"
    a.write_bytes(("\n".join(lines)).encode("utf-8", "surrogatepass"))
    b = folder / "b.json"
    b.write_text(json.dumps(rows[:50:3] + [_row(rng) for _ in range(20)]), encoding="utf-8")
    return [str(a), str(b)]


def _run(inputs: list[str], out: Path, lane: bool, monkeypatch: pytest.MonkeyPatch, **options: Any
         ) -> tuple[Any, bytes, bytes]:
    with monkeypatch.context() as patch:
        if not lane:
            patch.setattr(chat_lines, "_lane_open", lambda _: False)
        result = prep.dedup(prep.Inputs(inputs, max_row_bytes=4096), str(out), rejects=str(out) + ".rejects",
                            **options)
    t = result.tally
    return ((t.read, t.written, dict(t.rejected), dict(t.altered), dict(t.dropped), result.exact, result.near,
             result.formats), out.read_bytes(), Path(str(out) + ".rejects").read_bytes())


@pytest.mark.parametrize("options", [
    {"exact": True},
    {"near": 0.8},
    {"exact": True, "fields": "user", "nfkc": False},
    {"exact": True, "ignore_case": False, "ignore_space": False, "to": "sharegpt"},
], ids=["exact", "near", "user-nfkc", "case-space-sharegpt"])
def test_the_fast_lane_writes_what_the_careful_path_writes(inputs: list[str], tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           options: dict[str, Any]) -> None:
    careful = _run(inputs, tmp_path / "careful.jsonl", False, monkeypatch, **options)
    fast = _run(inputs, tmp_path / "fast.jsonl", True, monkeypatch, **options)
    assert fast == careful
    counts = fast[0]
    assert counts[0] == counts[1] + sum(counts[2].values())  # rows read = written + rejected
    assert counts[2]["duplicate"] > 100 and {"bad_json", "bad_role", "empty_value", "too_large"} <= set(counts[2])
    assert counts[3] and counts[4]  # repeated keys altered rows, extra columns counted as dropped


def test_the_lane_covers_the_plain_batches(inputs: list[str]) -> None:
    """The plain batches do go the fast way (the test above would pass if none did)."""
    batches = list(chat_lines.read_chats(prep.Inputs(inputs, max_row_bytes=4096)))
    plain = [b.plain() for b in batches if isinstance(b, chat_lines.ChatLines)]
    assert plain.count(True) >= 2 and len(plain) < len(batches)


PIECES = ["a", "Word", "ΣΑΣ", "straße", "Ｈｅｌｌｏ", "\u00a8x", "e\u0301", "ﬁ", "你好", "😀", " ", "  ", "\t", "\n", "\r\n",
          "\u00a0", "\u3000", "\x1c", "\x1e", "\x1f", "\x01", ":", "\\"]


@settings(max_examples=300, deadline=None)
@example([[("user", " A\tb\nc\x0bd\x0ce\rf\x1cg\x1dh\x1ei\x1fj  \t k ")]], "all", True, True, True)  # ASCII space
@example([[("user", "A\x00b")], [("assistant", " x ")]], "all", True, True, True)  # a NUL: turn by turn
@example([[("user", "Ä\x00")], [("assistant", "x")]], "all", True, True, True)
@given(st.lists(st.lists(st.tuples(st.sampled_from(["system", "user", "assistant"]),
                                   st.lists(st.sampled_from(PIECES), max_size=6).map("".join)),
                         min_size=1, max_size=3), min_size=1, max_size=6),
       st.sampled_from(["all", "user", "assistant"]), st.booleans(), st.booleans(), st.booleans())
def test_the_flat_compared_texts_are_the_tagged_ones(chats: list[list[tuple[str, str]]], fields: str, nfkc: bool,
                                                      fold: bool, space: bool) -> None:
    """tagged_turns (dedup's lane: the ASCII turns normalised in one string) gives what `tagged` gives turn by turn,
    whatever the whitespace, case, compatibility forms, separators or NULs in the texts."""
    compare = Compare(fields, nfkc, fold, space)
    flat = [turn for chat in chats for turn in chat]
    assert tagged_turns([r for r, _ in flat], [t for _, t in flat], [len(c) for c in chats], compare) == \
        tagged(chats, compare)


def test_a_file_opening_with_a_bom_takes_the_lane_and_writes_what_the_careful_path_writes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A UTF-8 BOM before the first row (as Windows tools write) no longer sends the whole file the careful way: its
    plain batches take the lane, with the same output, rejects and counts."""
    rng = random.Random(5)
    rows = [_row(rng) for _ in range(1500)]
    lines = [json.dumps(rows[k % 1200], ensure_ascii=False) for k in range(2500)]
    lines[1800] = ODD[6]  # a broken row: its finding's byte offset leaves the BOM out, as the reader's does
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + "\n".join(lines).encode("utf-8") + b"\n")
    batches = list(chat_lines.read_chats(prep.Inputs([str(path)])))
    assert [b.plain() for b in batches if isinstance(b, chat_lines.ChatLines)].count(True) == 2
    careful = _run([str(path)], tmp_path / "careful.jsonl", False, monkeypatch, exact=True)
    fast = _run([str(path)], tmp_path / "fast.jsonl", True, monkeypatch, exact=True)
    assert fast == careful and fast[0][2]["bad_json"] == 1 and fast[0][2]["duplicate"] >= 1299
