"""Benchmark n-grams, for decontamination: which training rows share a run of n tokens with a
benchmark item (GPT-3's and datatrove's test, on the tokens of `text.tokens`: words, and single
characters in scripts written without spaces, so Chinese or Japanese n-grams are character n-grams).

The index maps each benchmark token to a number and keeps a 64-bit hash of every n-gram of every
item with the first item (file, line) it came from; an item shorter than n tokens but not shorter than a floor is
kept whole the same way (a training text matches it when it holds all its tokens in a row). A batch of training texts is looked up at once
(numpy): an n-gram holding a token no benchmark has cannot match and is skipped, a hash that hits
is confirmed token by token, so a match is exact. N-grams never cross a turn boundary.

    >>> index = NgramIndex(3, floor=2)
    >>> index.add("the quick brown fox jumps", ("bench.jsonl", 1)), index.add("paris france", ("bench.jsonl", 2))
    ('ngrams', 'whole')
    >>> index.find(["a quick brown fox!", "no match here", "paris, france."])
    [('quick brown fox', ('bench.jsonl', 1)), None, ('paris france', ('bench.jsonl', 2))]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from prep.overlap.text import joined, tokens, turns

_MULTIPLIER = np.uint64(0x100000001B3)
Match = tuple[str, Any]  # the n-gram as text, and where the benchmark item is


class NgramIndex:
    """The n-grams of benchmark items; `add` items, then `find` training texts (normalised like the items).

    An item shorter than n tokens has no n-gram; with at least `floor` tokens it is indexed whole instead, and a
    text holding all its tokens in a row, in one turn, matches it."""

    def __init__(self, n: int, floor: int | None = None) -> None:
        self.n = n
        self.floor = n if floor is None else min(floor, n)
        self.ids: dict[str, int] = {}  # token -> number (from 1; 0 marks a token no item has, or a turn break)
        self.first: dict[int, list[tuple[tuple[int, ...], Any]]] = {}  # run hash -> (ids, where) of items
        self.lengths: set[int] = set()  # the run lengths indexed: n, and the lengths of the items indexed whole
        self.hashes: dict[int, np.ndarray] = {}  # per run length, its sorted hashes (built on the first find)
        self.names: list[str] = []  # number -> token, for showing a match

    def add(self, text: str, where: Any) -> str:
        """Index an item: "ngrams" (it has n-grams), "whole" (shorter than n tokens, at least the floor: indexed as
        one run) or "short" (fewer tokens than the floor: not indexed)."""
        kind = "short"
        for turn in turns(text):
            ids = [self.ids.setdefault(t, len(self.ids) + 1) for t in tokens(turn)]
            if len(ids) >= self.n:
                kind = "ngrams"
                for start in range(len(ids) - self.n + 1):
                    self._index(tuple(ids[start:start + self.n]), where)
            elif len(ids) >= self.floor:
                kind = "whole" if kind == "short" else kind
                self._index(tuple(ids), where)
        self.hashes = {}  # rebuilt on the next find
        return kind

    def _index(self, run: tuple[int, ...], where: Any) -> None:
        entries = self.first.setdefault(_hash(run), [])
        if all(g != run for g, _ in entries):
            entries.append((run, where))
            self.lengths.add(len(run))

    def find(self, texts: Sequence[str]) -> list[Match | None]:
        """For each text, its first n-gram (or whole short item) that a benchmark item holds (and where), or None."""
        if not self.hashes and self.first:
            runs: dict[int, list[int]] = {}
            for h, entries in self.first.items():
                for length in {len(g) for g, _ in entries}:
                    runs.setdefault(length, []).append(h)
            self.hashes = {length: np.array(sorted(hs), np.uint64) for length, hs in runs.items()}
            self.names = ["", *self.ids]  # ids are numbered in insertion order from 1
        ids: list[int] = []
        starts = []
        for text in texts:
            starts.append(len(ids))
            for turn in turns(text):
                ids += [self.ids.get(t, 0) for t in tokens(turn)]
                ids.append(0)
        out: list[Match | None] = [None] * len(texts)
        if not self.hashes:
            return out
        flat = np.array(ids, np.uint64)
        gaps = np.r_[0, np.cumsum(flat == 0)]
        begins = np.array(starts)
        for length in sorted(self.hashes, reverse=True):  # n-grams first, then the longest whole items
            windows = len(flat) - length + 1
            if windows <= 0:
                continue
            hashed = np.zeros(windows, np.uint64)
            with np.errstate(over="ignore"):
                for k in range(length):
                    hashed = hashed * _MULTIPLIER + flat[k:k + windows]
            inside = gaps[length:length + windows] == gaps[:windows]  # no unknown token or turn break inside
            hits = np.flatnonzero(inside & np.isin(hashed, self.hashes[length]))
            rows = np.searchsorted(begins, hits, side="right") - 1
            for row, at in zip(rows.tolist(), hits.tolist(), strict=True):
                if out[row] is None:
                    run = tuple(ids[at:at + length])
                    where = next((w for g, w in self.first.get(_hash(run), ()) if g == run), None)
                    if where is not None:
                        out[row] = (joined([self.names[i] for i in run]), where)
        return out


def _hash(gram: tuple[int, ...]) -> int:
    """The n-gram's hash, as `find` computes it for every window at once."""
    h = 0
    for i in gram:
        h = (h * 0x100000001B3 + i) & 0xFFFFFFFFFFFFFFFF
    return h
