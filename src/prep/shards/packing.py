"""Packing documents into rows of at most `max_len` tokens: the algorithms behind `prep pack`.

`bfd` (best-fit decreasing) places whole documents into rows across a window of the input
(100k documents by default, or everything), then shuffles the rows with the seed so training
does not see the longest documents first. `wrap` (pretraining) concatenates documents (each
already ends with EOS) and cuts blocks of exactly `max_len`; the last block holds the remainder.

Each packed row keeps `seq_lengths` (one per document piece) and `ids` (one per piece), so
position ids restart per document and no document attends to another. The first label of every
piece is set to -100: in a packed row that token would otherwise be predicted from the previous
document's last token (TRL's padding-free collator masks it the same way).

Documents with media (design §2a) keep them, in order, in the packed row, each `start` shifted by where its
document begins. No packer cuts inside a medium's run: `truncate` refuses a document it would cut a medium out
of (too_long), and `wrap` ends a block before a run that would cross its end.
"""

from __future__ import annotations

import random
from bisect import bisect_left, insort
from collections.abc import Callable
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np
import pyarrow as pa

from prep.core.codes import ERROR
from prep.core.columns import MEDIA_COLUMN
from prep.core.findings import Batch, PrepError, Source, finding
from prep.shards.layout import SCHEMAS

_SCHEMA = SCHEMAS["sft"]


def best_fit_decreasing(lengths: np.ndarray, capacity: int) -> list[list[int]]:
    """Bins of item indices, each summing to at most `capacity`; longest items placed first, each
    into the open bin it fills most tightly. Open bins are kept by remaining capacity in a sorted
    list, so each placement is a bisect: a million items take seconds."""
    caps: list[int] = []  # distinct remaining capacities that have an open bin, ascending
    open_bins: dict[int, list[int]] = {}  # remaining capacity -> bins with exactly that room
    bins: list[list[int]] = []
    for i in np.argsort(-lengths, kind="stable").tolist():
        n = int(lengths[i])
        k = bisect_left(caps, n)
        if k < len(caps):
            room = caps[k]
            same = open_bins[room]
            b = same.pop()
            if not same:
                del open_bins[room]
                caps.pop(k)
            bins[b].append(i)
            rest = room - n
        else:
            b, rest = len(bins), capacity - n
            bins.append([i])
        if rest > 0:
            if rest in open_bins:
                open_bins[rest].append(b)
            else:
                open_bins[rest] = [b]
                insort(caps, rest)
    return [sorted(b) for b in bins]


@dataclass
class _Docs:
    """A window of documents as flat numpy columns (one entry per token, per piece, per row)."""

    input_ids: np.ndarray
    labels: np.ndarray
    seq_lengths: np.ndarray  # piece lengths, in order
    ids: list[str]  # one per piece
    row_tokens: np.ndarray  # tokens per input row
    row_pieces: np.ndarray  # pieces per input row


def _flat(table: pa.Table) -> _Docs:
    def values(name: str) -> np.ndarray:
        return table[name].combine_chunks().flatten().to_numpy(zero_copy_only=False)

    return _Docs(values("input_ids"), values("labels"), values("seq_lengths"),
                 table["ids"].combine_chunks().flatten().to_pylist(),
                 table["num_tokens"].to_numpy().astype(np.int64),
                 table["seq_lengths"].combine_chunks().value_lengths().to_numpy().astype(np.int64))


def _rows_table(input_ids: np.ndarray, labels: np.ndarray, seq_lengths: np.ndarray, ids: list[str],
                row_tokens: np.ndarray, row_pieces: np.ndarray) -> pa.Table:
    """Packed rows from flat columns and per-row token/piece counts; masks the first label of each piece."""
    labels = labels.copy()
    starts = np.concatenate(([0], np.cumsum(seq_lengths)[:-1])).astype(np.int64)
    labels[starts] = -100
    token_offsets = np.concatenate(([0], np.cumsum(row_tokens))).astype(np.int32)
    piece_offsets = np.concatenate(([0], np.cumsum(row_pieces))).astype(np.int32)
    trained = np.concatenate(([0], np.cumsum(labels != -100)))
    return pa.table({
        "input_ids": pa.ListArray.from_arrays(token_offsets, pa.array(input_ids, pa.int32())),
        "labels": pa.ListArray.from_arrays(token_offsets, pa.array(labels, pa.int32())),
        "seq_lengths": pa.ListArray.from_arrays(piece_offsets, pa.array(seq_lengths, pa.int32())),
        "num_tokens": pa.array(row_tokens, pa.int32()),
        "num_loss_tokens": pa.array(trained[token_offsets[1:]] - trained[token_offsets[:-1]], pa.int32()),
        "ids": pa.ListArray.from_arrays(piece_offsets, pa.array(ids, pa.string())),
    }, schema=_SCHEMA)


def bfd_bins(lengths: np.ndarray, max_len: int, rng: random.Random) -> list[list[int]]:
    """The rows of a window: best-fit decreasing over the documents' lengths alone, the rows shuffled."""
    bins = best_fit_decreasing(lengths, max_len)
    rng.shuffle(bins)
    return bins


def packed_rows(docs: pa.Table, bin_sizes: np.ndarray) -> pa.Table:
    """Packed rows from documents in row order: the first `bin_sizes[0]` documents make the first row, and so on.
    Each row depends only on its own documents, so any run of rows can be built apart (`--engine ray`)."""
    flat = _flat(docs)
    row_start = np.concatenate(([0], np.cumsum(bin_sizes)[:-1])).astype(np.int64)
    table = _rows_table(flat.input_ids, flat.labels, flat.seq_lengths, flat.ids,
                        np.add.reduceat(flat.row_tokens, row_start), np.add.reduceat(flat.row_pieces, row_start))
    if MEDIA_COLUMN not in docs.column_names:
        return table
    # where each document begins in its row: its tokens before it, less those of the rows before its row
    before = np.concatenate(([0], np.cumsum(flat.row_tokens)[:-1]))
    offsets = (before - np.repeat(before[row_start], bin_sizes)).tolist()
    media = docs[MEDIA_COLUMN].to_pylist()
    rows, at = [], 0
    for size in bin_sizes.tolist():
        rows.append([{**m, "start": m["start"] + offsets[d]} for d in range(at, at + size) for m in media[d] or ()])
        at += size
    return table.append_column(docs.schema.field(MEDIA_COLUMN), pa.array(rows, docs.schema.field(MEDIA_COLUMN).type))


def bfd_window(table: pa.Table, max_len: int, rng: random.Random) -> pa.Table | None:
    """A window's documents packed best-fit decreasing, the rows in random order (None: no document left in it)."""
    if not table.num_rows:  # every document of the window was too long and rejected
        return None
    bins = bfd_bins(table["num_tokens"].to_numpy(), max_len, rng)
    return packed_rows(table.take(pa.array(list(chain.from_iterable(bins)), pa.int64())),
                       np.array([len(b) for b in bins]))


class Wrapper:
    """Cuts the concatenation of all documents into blocks of `max_len`, carrying the tail between windows. A block
    that would end inside a medium's run ends before it (shorter), and the run starts the next block."""

    def __init__(self, max_len: int) -> None:
        self.max_len = max_len
        self.tail = _Docs(np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, np.int64), [],
                          np.zeros(0, np.int64), np.zeros(0, np.int64))
        self.media: list[dict[str, Any]] = []  # the tail's media, `start` counted from the tail's first token
        self.media_field: pa.Field | None = None

    def add(self, table: pa.Table | None) -> pa.Table | None:
        """Full blocks from the tail plus `table`; with None (the end), the tail too as a last, shorter block."""
        new = _flat(table) if table is not None else None
        if table is not None and MEDIA_COLUMN in table.column_names:
            self.media_field = table.schema.field(MEDIA_COLUMN)
            doc_starts = (len(self.tail.input_ids) + np.concatenate(([0], np.cumsum(new.row_tokens)[:-1]))).tolist()
            self.media += [{**m, "start": m["start"] + at}
                           for at, media in zip(doc_starts, table[MEDIA_COLUMN].to_pylist(), strict=True)
                           for m in media or ()]
        ids = np.concatenate([self.tail.input_ids] + ([new.input_ids] if new else []))
        labels = np.concatenate([self.tail.labels] + ([new.labels] if new else []))
        pieces = np.concatenate([self.tail.seq_lengths] + ([new.seq_lengths] if new else [])).astype(np.int64)
        piece_ids = self.tail.ids + (new.ids if new else [])
        total = len(ids)
        ends = self._block_ends(total, final=new is None)
        cut = int(ends[-1]) if len(ends) else 0
        if cut == 0:
            self.tail = _Docs(ids, labels, pieces, piece_ids, np.zeros(0, np.int64), np.zeros(0, np.int64))
            return None
        # Split pieces at block boundaries: every piece end and every block end is a boundary.
        piece_ends = np.cumsum(pieces)
        bounds = np.union1d(piece_ends, ends)
        bounds = bounds[bounds <= cut]
        starts = np.concatenate(([0], bounds[:-1]))
        owner = np.searchsorted(piece_ends, starts, side="right")  # which piece each cut piece comes from
        block = np.searchsorted(ends, starts, side="right")
        row_pieces = np.bincount(block, minlength=int(block.max()) + 1)
        out = _rows_table(ids[:cut], labels[:cut], bounds - starts, [piece_ids[k] for k in owner],
                          np.bincount(block, weights=bounds - starts).astype(np.int64), row_pieces)
        if self.media_field is not None:
            out = out.append_column(self.media_field, pa.array(self._block_media(ends), self.media_field.type))
        # What is left: the rest of the piece cut at `cut`, then the pieces after it.
        first = int(np.searchsorted(piece_ends, cut, side="right"))
        left = piece_ends[first:] - cut if first < len(pieces) else np.zeros(0, np.int64)
        left = np.concatenate((left[:1], np.diff(left))) if len(left) else left
        self.tail = _Docs(ids[cut:], labels[cut:], left, piece_ids[first:], np.zeros(0, np.int64),
                          np.zeros(0, np.int64))
        self.media = [{**m, "start": m["start"] - cut} for m in self.media if m["start"] >= cut]
        return out

    def _block_ends(self, total: int, final: bool) -> np.ndarray:
        """Where the blocks of `total` tokens end: every `max_len`, or before a medium's run that would cross the end;
        at the end (`final`), the last, shorter block too."""
        n = self.max_len
        if not self.media:
            full = total - total % n
            ends = np.arange(n, full + 1, n, dtype=np.int64)
            return np.append(ends, total) if final and full < total else ends
        runs = sorted((m["start"], m["start"] + m["length"]) for m in self.media)
        out, at, k = [], 0, 0
        while total - at >= n:
            end = at + n
            while k < len(runs) and runs[k][1] <= end:
                k += 1
            if k < len(runs) and runs[k][0] < end:  # the next run crosses the block's end: end the block before it
                if runs[k][0] <= at:
                    raise PrepError(f"a medium of {runs[k][1] - runs[k][0]} tokens is longer than --max-len {n}; a "
                                    "block cannot hold it whole: raise --max-len")
                end = runs[k][0]
            out.append(end)
            at = end
        if final and at < total:
            out.append(total)
        return np.array(out, np.int64)

    def _block_media(self, ends: np.ndarray) -> list[list[dict[str, Any]]]:
        """The media of each block, `start` counted from the block's first token."""
        begins = np.concatenate(([0], ends[:-1])).tolist()
        rows: list[list[dict[str, Any]]] = [[] for _ in begins]
        for m in self.media:
            if m["start"] < ends[-1]:
                b = int(np.searchsorted(ends, m["start"], side="right"))
                rows[b].append({**m, "start": m["start"] - begins[b]})
        return rows


def check_lengths(table: pa.Table, sources: list[Source], max_len: int, policy: str) -> tuple[pa.Table, Batch[Any]]:
    """Rows longer than `max_len`, handled as the input manifest's overflow policy says, never silently.

    Returns the rows to pack and a Batch that accounts for every input row of the window."""
    keep, truncated, batch = overflow(table["num_tokens"].to_numpy(), sources, max_len, policy,
                                      lambda i: table.slice(i, 1).to_pylist()[0])
    if keep.all():
        return table, batch
    kept = table.filter(pa.array(keep))
    return pa.concat_tables([kept, pa.Table.from_pylist(truncated, schema=table.schema)]) if truncated else kept, batch


def overflow(lengths: np.ndarray, sources: list[Source], max_len: int, policy: str,
             row: Callable[[int], dict[str, Any]]) -> tuple[np.ndarray, list[dict[str, Any]], Batch[Any]]:
    """`check_lengths` over the lengths alone: which documents are packed as they are (a mask), the truncated rows
    that are packed after them, and the Batch that accounts for every document. `row(i)` reads document i whole;
    it is called only for the documents longer than `max_len`."""
    batch: Batch[Any] = Batch()
    long = set(np.flatnonzero(lengths > max_len).tolist())
    keep = np.ones(len(lengths), bool)
    truncated = []
    for i, source in enumerate(sources):
        if i not in long:
            batch.add(None, source)
            continue
        keep[i] = False
        doc = row(i)
        cut_media = [k for k, m in enumerate(doc.get(MEDIA_COLUMN) or (), 1) if m["start"] + m["length"] > max_len - 1]
        if policy == "truncate" and len(doc["seq_lengths"]) == 1 and cut_media:
            batch.reject(source, [finding("too_long", f"{int(lengths[i])} tokens, more than --max-len {max_len}, and "
                                          f"cutting it there would cut medium {cut_media[0]} of the row (a medium's "
                                          "tokens are all there or the model's processor refuses the row)",
                                          hint="re-run `prep tokenize` with this --max-len and --overflow turns, or "
                                          "raise --max-len", severity=ERROR)], {"ids": doc["ids"]})
        elif policy == "truncate" and len(doc["seq_lengths"]) == 1:
            for col in ("input_ids", "labels"):
                doc[col] = doc[col][: max_len - 1] + doc[col][-1:]  # keep the end-of-turn token and its label
            doc.update(seq_lengths=[max_len], num_tokens=max_len,
                       num_loss_tokens=sum(x != -100 for x in doc["labels"]))
            truncated.append(doc)
            batch.add(None, source)
            batch.alter(source, [finding("truncated", f"{int(lengths[i])} tokens cut to {max_len}")],
                        {"ids": doc["ids"]})
        else:
            batch.reject(source, [finding("too_long", f"{int(lengths[i])} tokens, more than --max-len {max_len}",
                                          hint="re-run `prep tokenize` with this --max-len and the --overflow you "
                                          "want", severity=ERROR)],
                         {"ids": doc["ids"]})
    return keep, truncated, batch
