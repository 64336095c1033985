"""Exact sampling plans: how many copies of each row a source gives when asked for exactly `target` rows
(or tokens). Whole passes over the source first, then a sample without replacement for the rest, so
no row is repeated more than once more than any other, and the counts are exactly the asked ones
(tokens: within one row of the budget, never over it). The same seed gives the same plan anywhere.

    >>> row_counts(4, 10, seed=(0,)).tolist()  # two whole passes, then 2 of the 4 rows once more
    [2, 2, 3, 3]
    >>> int(token_counts(np.array([5, 3, 8]), 30, seed=(0,)) @ np.array([5, 3, 8]))  # a pass (16), then rows that fit 14
    29
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _rng(seed: Sequence[int]) -> np.random.Generator:
    return np.random.default_rng(list(seed))


def row_counts(size: int, target: int, seed: Sequence[int]) -> np.ndarray:
    """Copies of each of `size` rows that add up to exactly `target` (`seed`: e.g. (seed, source number))."""
    if size == 0:
        return np.zeros(0, np.int64)
    passes, rest = divmod(target, size)
    counts = np.full(size, passes, np.int64)
    counts[_rng(seed).choice(size, rest, replace=False)] += 1
    return counts


def token_counts(tokens: np.ndarray, budget: int, seed: Sequence[int]) -> np.ndarray:
    """Copies of each row (of `tokens` tokens each) whose tokens add up to at most `budget`, short of it by
    less than one row: whole passes, then rows in a seeded random order while they fit."""
    total = int(tokens.sum())
    if total == 0:
        return np.zeros(len(tokens), np.int64)
    passes, rest = divmod(budget, total)
    counts = np.full(len(tokens), passes, np.int64)
    order = _rng(seed).permutation(len(tokens))
    fits = int(np.searchsorted(np.cumsum(tokens[order]), rest, side="right"))
    counts[order[:fits]] += 1
    return counts
