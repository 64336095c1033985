"""Exact keys and near duplicates by MinHash LSH.

- **Exact**: a row's key is the 128-bit BLAKE2b digest of its compared text (`text.compared`), the
  same in every process and run.
- **Near**: the text's word bigrams (character bigrams in scripts written without spaces; a
  one-token text is its token) are sketched with 128 MinHash values by rensa's R-MinHash (Rust,
  seeded, the same in every process; measured in bench/dedup.py against datasketch and a numpy
  MinHash). The values are cut into `b` bands of `r`; rows that agree on a whole band are
  candidates, and a candidate pair is a near duplicate when its estimated Jaccard similarity (the
  share of equal MinHash values) is at least the threshold. `r` is the largest band size that
  still finds 95% of the pairs exactly at the threshold (`bands`), so the estimate, not the
  banding, decides. 16 bits of each value are kept per row for that estimate (b-bit MinHash:
  two different values agree by chance once in 65,536).

Two ways to use them: `NearIndex` holds a set of rows (validate's validation rows) and answers for
rows streaming past; `near_pairs` finds every near pair in a whole set at once (dedup, split),
sorting each band's keys instead of holding a hash table per band, so memory stays at about 400
bytes a row.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache

import numpy as np
import rensa

from prep.overlap.text import tokens

NUM_PERM = 128
SEED = 1
RECALL = 0.95  # share of pairs exactly at the threshold that the bands must find
_PAIRWISE = 64  # a band bucket up to this size is checked pair by pair; a larger one against its distinct rows
_ASCII_WORDS = bytes(c if chr(c).isalnum() or c == ord("_") else ord(" ") for c in range(128)) + bytes(128)


def exact_keys(texts: Iterable[str]) -> list[bytes]:
    """The 16-byte key of each compared text: equal texts, equal keys, in any process. A list comprehension: no
    Python call per text (a million texts: ~10% less time than a call each)."""
    blake2b = hashlib.blake2b
    return [blake2b(t.encode("utf-8", "surrogatepass"), digest_size=16).digest() for t in texts]


def exact_key(text: str) -> bytes:
    """`exact_keys` of one text."""
    return exact_keys((text,))[0]


def shingles(text: str) -> list[str] | list[bytes]:
    """Word bigrams of the text (its one token, for a one-token text; none for a text without tokens). ASCII
    text is split as bytes, ten times faster than the tokens' regular expression and the same words (rensa
    hashes a str and its UTF-8 bytes alike)."""
    words: list[str] | list[bytes] = text.encode().translate(_ASCII_WORDS).split() if text.isascii() else tokens(text)
    if len(words) < 2:
        return words
    space = b" " if isinstance(words[0], bytes) else " "
    return [a + space + b for a, b in zip(words, words[1:], strict=False)]  # type: ignore[operator]


@cache
def bands(threshold: float) -> tuple[int, int]:
    """(b, r): the most rows per band (fewest chance candidates) that still find RECALL of the pairs whose
    similarity is exactly `threshold`, with b = NUM_PERM // r bands."""
    for r in range(NUM_PERM, 0, -1):
        b = NUM_PERM // r
        if 1 - (1 - threshold**r) ** b >= RECALL:
            return b, r
    return NUM_PERM, 1


@dataclass
class Sketches:
    """A batch of rows' MinHash sketches: `sigs` (n x NUM_PERM, 16 bits of each value), `keys` (n x b band
    keys) and `has` (False for a row without tokens, which is nobody's near duplicate)."""

    sigs: np.ndarray
    keys: np.ndarray
    has: np.ndarray

    def __len__(self) -> int:
        return len(self.has)


def sketch(texts: Sequence[str], threshold: float) -> Sketches:
    """Sketch a batch of compared texts (a per-batch function: no state, the same result anywhere)."""
    sets = [shingles(t) for t in texts]
    has = np.fromiter((bool(s) for s in sets), bool, len(sets))
    full = np.zeros((len(sets), NUM_PERM), np.uint32)
    if has.any():
        full[has] = np.array(rensa.RMinHash.digests_from_token_sets([s for s in sets if s], num_perm=NUM_PERM,
                                                                    seed=SEED), dtype=np.uint32)
    return Sketches(full.astype(np.uint16), band_keys(full, threshold), has)


def band_keys(sigs: np.ndarray, threshold: float) -> np.ndarray:
    """One 64-bit key per band of `r` values (FNV-style mixing over the full 32-bit values)."""
    b, r = bands(threshold)
    keys = np.empty((len(sigs), b), np.uint64)
    wide = sigs.astype(np.uint64)
    with np.errstate(over="ignore"):
        for i in range(b):
            key = np.full(len(sigs), 0xCBF29CE484222325 ^ i, np.uint64)
            for j in range(i * r, (i + 1) * r):
                key = (key ^ wide[:, j]) * np.uint64(0x100000001B3)
            keys[:, i] = key
    return keys


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Estimated Jaccard similarity of two rows' word bigrams: the share of equal MinHash values."""
    return float(np.count_nonzero(a == b)) / NUM_PERM


def concat(parts: Iterable[Sketches]) -> Sketches:
    """The sketches of several batches, in order."""
    parts = list(parts)
    if not parts:
        return Sketches(np.zeros((0, NUM_PERM), np.uint16), np.zeros((0, 0), np.uint64), np.zeros(0, bool))
    return Sketches(np.concatenate([p.sigs for p in parts]), np.concatenate([p.keys for p in parts]),
                    np.concatenate([p.has for p in parts]))


@dataclass
class NearIndex:
    """Rows held by their band keys (validate's validation rows): `add` a row, then ask which held rows a
    streaming row nearly repeats. Memory grows with the rows held, never with the rows asked about."""

    threshold: float
    refs: list[object] = field(default_factory=list)
    sigs: list[np.ndarray] = field(default_factory=list)
    buckets: list[dict[int, list[int]]] = field(default_factory=list)

    def add(self, batch: Sketches, refs: Sequence[object]) -> None:
        if not self.buckets:
            self.buckets = [{} for _ in range(batch.keys.shape[1])]
        for k in np.flatnonzero(batch.has):
            held = len(self.refs)
            self.refs.append(refs[k])
            self.sigs.append(batch.sigs[k])
            for bucket, key in zip(self.buckets, batch.keys[k].tolist(), strict=True):
                bucket.setdefault(key, []).append(held)

    def query(self, batch: Sketches, k: int) -> list[tuple[object, float]]:
        """The held rows row `k` of `batch` nearly repeats, most similar first."""
        if not self.refs or not batch.has[k]:
            return []
        seen = {held for bucket, key in zip(self.buckets, batch.keys[k].tolist(), strict=True)
                for held in bucket.get(key, ())}
        found = [(self.refs[h], similarity(batch.sigs[k], self.sigs[h])) for h in sorted(seen)]
        return sorted([f for f in found if f[1] >= self.threshold], key=lambda f: -f[1])


def near_pairs(sk: Sketches, threshold: float) -> np.ndarray:
    """Every near-duplicate pair of a whole set, as rows (i, j, similarity x 1e6) with i < j, sorted.

    Each band's keys are sorted; rows sharing a key form a bucket. A bucket of two (most of them) is one
    candidate pair, checked with the others in one step; a bucket up to 64 rows is checked pair by pair;
    a larger one (many copies of a template) row by row against the distinct rows seen in it so far."""
    rows = np.flatnonzero(sk.has)
    found: list[np.ndarray] = []
    for band in range(sk.keys.shape[1]):
        keys = sk.keys[rows, band]
        order = np.argsort(keys, kind="stable")
        ordered = keys[order]
        starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
        sizes = np.diff(np.r_[starts, len(ordered)])
        pairs = starts[sizes == 2]
        if len(pairs):
            found.append(_checked(sk, rows[order[pairs]], rows[order[pairs + 1]], threshold))
        for start, size in zip(starts[sizes > 2].tolist(), sizes[sizes > 2].tolist(), strict=True):
            members = rows[order[start:start + size]]
            found.append(_bucket_pairs(sk, members, threshold))
    if not found:
        return np.zeros((0, 3), np.int64)
    every = np.concatenate(found)
    return np.unique(every, axis=0) if len(every) else every


def _checked(sk: Sketches, i: np.ndarray, j: np.ndarray, threshold: float) -> np.ndarray:
    sim = np.count_nonzero(sk.sigs[i] == sk.sigs[j], axis=1) / NUM_PERM
    keep = sim >= threshold
    return np.stack([i[keep], j[keep], np.round(sim[keep] * 1e6).astype(np.int64)], axis=1)


def _bucket_pairs(sk: Sketches, members: np.ndarray, threshold: float) -> np.ndarray:
    """The near pairs among a bucket's rows (in input order)."""
    sigs = sk.sigs[members]
    if len(members) <= _PAIRWISE:
        sim = (sigs[:, None, :] == sigs[None, :, :]).sum(axis=2) / NUM_PERM
        i, j = np.nonzero(np.triu(sim >= threshold, k=1))
        return np.stack([members[i], members[j], np.round(sim[i, j] * 1e6).astype(np.int64)], axis=1)
    distinct: list[int] = []  # positions in the bucket of rows not near any earlier distinct row
    out = []
    for pos in range(len(members)):
        if distinct:
            sim = (sigs[distinct] == sigs[pos]).sum(axis=1) / NUM_PERM
            hit = np.flatnonzero(sim >= threshold)
            out += [(members[distinct[h]], members[pos], round(sim[h] * 1e6)) for h in hit.tolist()]
            if len(hit):
                continue
        distinct.append(pos)
    return np.array(out, np.int64).reshape(-1, 3)


def first_copies(keys: np.ndarray) -> np.ndarray:
    """For each row (16-byte exact keys, n x 16 uint8), the index of the first row with the same key."""
    if not len(keys):
        return np.zeros(0, np.int64)
    _, first, inverse = np.unique(np.ascontiguousarray(keys).view("V16").ravel(), return_index=True,
                                  return_inverse=True)
    return first[inverse.ravel()]


def keep_first(n: int, pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Greedy in input order: a row goes when it nearly repeats an earlier row that stays. Returns, per row,
    the row it repeats (-1: it stays) and the similarity x 1e6. Every row that goes names one that stays."""
    twin = np.full(n, -1, np.int64)
    score = np.zeros(n, np.int64)
    if len(pairs):
        order = np.lexsort((-pairs[:, 2], pairs[:, 0], pairs[:, 1]))  # by later row, earlier row, best first
        for i, j, sim in pairs[order].tolist():
            if twin[i] == -1 and sim > score[j]:
                twin[j], score[j] = i, sim
    return twin, score


def groups(n: int, links: Iterable[tuple[int, int]]) -> np.ndarray:
    """Connected components (union-find) over `links`: each row's group is its group's smallest row."""
    parent = np.arange(n)

    def root(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in links:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return np.array([root(x) for x in range(n)], np.int64)
