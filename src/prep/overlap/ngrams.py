"""Benchmark n-grams, for decontamination: which training rows share a run of n tokens with a
benchmark item (GPT-3's and datatrove's test, on the tokens of `text.tokens`: words, and single
characters in scripts written without spaces, so Chinese or Japanese n-grams are character n-grams).

The index maps each benchmark token to a number and keeps a 64-bit hash of every n-gram of every
item with the first item (file, line) it came from. A batch of training texts is looked up at once
(numpy): an n-gram holding a token no benchmark has cannot match and is skipped, a hash that hits
is confirmed token by token, so a match is exact. N-grams never cross a turn boundary.

    >>> index = NgramIndex(3)
    >>> index.add("the quick brown fox jumps", ("bench.jsonl", 1))
    3
    >>> index.find(["a quick brown fox!", "no match here"])
    [('quick brown fox', ('bench.jsonl', 1)), None]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from prep.overlap.text import joined, tokens, turns

_MULTIPLIER = np.uint64(0x100000001B3)
Match = tuple[str, Any]  # the n-gram as text, and where the benchmark item is


class NgramIndex:
    """The n-grams of benchmark items; `add` items, then `find` training texts (normalised like the items)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.ids: dict[str, int] = {}  # token -> number (from 1; 0 marks a token no item has, or a turn break)
        self.first: dict[int, list[tuple[tuple[int, ...], Any]]] = {}  # n-gram hash -> (ids, where) of items
        self.hashes = np.zeros(0, np.uint64)
        self.names: list[str] = []  # number -> token, for showing a match

    def add(self, text: str, where: Any) -> int:
        """Index an item's n-grams; returns how many it has (0: the item is shorter than n tokens)."""
        count = 0
        for turn in turns(text):
            ids = [self.ids.setdefault(t, len(self.ids) + 1) for t in tokens(turn)]
            for start in range(len(ids) - self.n + 1):
                gram = tuple(ids[start:start + self.n])
                entries = self.first.setdefault(_hash(gram), [])
                if all(g != gram for g, _ in entries):
                    entries.append((gram, where))
                count += 1
        self.hashes = np.zeros(0, np.uint64)  # rebuilt on the next find
        return count

    def find(self, texts: Sequence[str]) -> list[Match | None]:
        """For each text, its first n-gram that a benchmark item holds (and where), or None."""
        if not len(self.hashes) and self.first:
            self.hashes = np.array(sorted(self.first), np.uint64)
            self.names = ["", *self.ids]  # ids are numbered in insertion order from 1
        ids: list[int] = []
        starts = []
        for text in texts:
            starts.append(len(ids))
            for turn in turns(text):
                ids += [self.ids.get(t, 0) for t in tokens(turn)]
                ids.append(0)
        out: list[Match | None] = [None] * len(texts)
        if len(ids) < self.n or not len(self.hashes):
            return out
        flat = np.array(ids, np.uint64)
        windows = len(flat) - self.n + 1
        hashed = np.zeros(windows, np.uint64)
        with np.errstate(over="ignore"):
            for k in range(self.n):
                hashed = hashed * _MULTIPLIER + flat[k:k + windows]
        gaps = np.r_[0, np.cumsum(flat == 0)]
        whole = gaps[self.n:self.n + windows] == gaps[:windows]  # no unknown token or turn break inside
        hits = np.flatnonzero(whole & np.isin(hashed, self.hashes))
        rows = np.searchsorted(np.array(starts), hits, side="right") - 1
        for row, at in zip(rows.tolist(), hits.tolist(), strict=True):
            if out[row] is None:
                gram = tuple(ids[at:at + self.n])
                where = next((w for g, w in self.first.get(_hash(gram), ()) if g == gram), None)
                if where is not None:
                    out[row] = (joined([self.names[i] for i in gram]), where)
        return out


def _hash(gram: tuple[int, ...]) -> int:
    """The n-gram's hash, as `find` computes it for every window at once."""
    h = 0
    for i in gram:
        h = (h * 0x100000001B3 + i) & 0xFFFFFFFFFFFFFFFF
    return h
