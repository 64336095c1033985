"""`prep dedup`: exact and near-duplicate rows removed, within and across files, each removed row a
reject naming the row it repeats (`duplicate_of`).

`--exact` is one pass: each row's 16-byte key is looked up among the keys seen so far (the first row of
each key is remembered, as a number in a plain chat block: 1M short rows peak at 190 MB). With near
duplicates, two passes over the inputs. The first fingerprints every row (a per-batch function: the 16-byte key
of its compared text and its MinHash sketch, prep.overlap); the driver then decides, with the whole
set in view, which rows repeat which (exact keys grouped, near pairs from the LSH bands, greedy in
input order: a row goes when it repeats an earlier row that stays). The second pass writes the
rows that stay and rejects the others. Memory: about 400 bytes a row for the sketches, none for
the rows themselves.

Locally, batches of plain chat rows (formats.chat_lines) take a fast lane (`_lanes`): no records, the keys,
sketches and output lines made straight from the typed rows. The same bytes out as the careful path
(tests/test_dedup_lanes.py).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import compress
from operator import ne
from typing import Any, NamedTuple

import numpy as np

from prep.core.codes import ERROR
from prep.core.findings import Batch, Reject, Source, finding
from prep.core.heap import streaming
from prep.core.options import checked
from prep.core.records import Record
from prep.core.result import Meter, ProgressFn, Result, outputs
from prep.formats.chat_lines import ChatLines, read_chats
from prep.formats.inputs import Inputs, Part, plan_inputs, read_part, refuse_read_once
from prep.overlap import near
from prep.overlap.text import Compare, compared, tagged_turns
from prep.stages.engine import LOCAL, Engine, Ran, parts_wanted, run_parts
from prep.stages.record_writer import RecordsOut, Removes, open_rejects


@dataclass
class Fingerprints:
    """Every readable row of a run, in input order: its exact key, its sketch (None: exact only) and file."""

    keys: np.ndarray
    sketches: near.Sketches | None
    files: list[str]
    file_of: np.ndarray  # index into `files` per row

    def __len__(self) -> int:
        return len(self.keys)


def fingerprint_batch(records: list[Record], compare: Compare, threshold: float | None) -> tuple[
        np.ndarray, near.Sketches | None]:
    """The per-batch step: 16-byte exact keys (n x 16 uint8) and, with a threshold, the MinHash sketches."""
    texts = [compared(r, compare) for r in records]
    keys = np.frombuffer(b"".join(near.exact_keys(texts)), np.uint8).reshape(-1, 16)
    return keys, near.sketch(texts, threshold) if threshold is not None else None


class _Done(NamedTuple):
    """What `_ChatStep` makes of plain chat rows: their exact keys and sketches (each when asked) and ids."""

    keys: list[bytes] | None  # 16 bytes a row
    sketches: near.Sketches | None
    ids: list[str] | None  # None: each row's is its place (ChatLines.ids)


@dataclass(frozen=True)
class _ChatStep:
    """The work on a batch of plain chat rows (formats.chat_lines): None when the lines are not all plain chat rows
    (then they are read the careful way)."""

    compare: Compare | None  # None: no keys (pass two)
    threshold: float | None  # sketches too

    def __call__(self, chats: ChatLines) -> _Done | None:
        if not chats.plain():
            return None
        assert chats.rows is not None
        compare = self.compare
        texts = [] if compare is None else tagged_turns(*chats.turns(), compare)
        return _Done(None if compare is None else near.exact_keys(texts),
                     near.sketch(texts, self.threshold) if self.threshold is not None else None, chats.ids())


Laned = Batch[Record] | tuple[ChatLines, _Done]


def _lanes(items: Iterator[Batch[Record] | ChatLines], step: _ChatStep) -> Iterator[Laned]:
    """`read_chats`'s batches in order, each `ChatLines` with `step` done on it, or read the careful way when it is
    not plain."""
    for item in items:
        if not isinstance(item, ChatLines):
            yield item
        elif (done := step(item)) is None:
            yield from item.careful()
        else:
            yield item, done


@dataclass(frozen=True)
class _Fingerprint:
    """Pass one's per-batch step over one part (`--engine ray`: on the workers): each batch's keys, sketches, the
    file of each row and the rows read."""

    compare: Compare
    threshold: float | None
    skip: dict[str, list[int]] = field(default_factory=dict)

    def batch(self, batch: Laned) -> tuple[np.ndarray, near.Sketches | None, list[str], int]:
        if isinstance(batch, tuple):  # plain chat rows, fingerprinted already
            chats, done = batch
            assert done.keys is not None
            return (np.frombuffer(b"".join(done.keys), np.uint8).reshape(-1, 16), done.sketches,
                    [chats.file] * len(chats), len(chats))
        keys, sketches = fingerprint_batch(batch.items, self.compare, self.threshold)
        return keys, sketches, [src.file for src in batch.sources], len(batch.items) + len(batch.rejects)

    def __call__(self, part: Part) -> Iterator[tuple[np.ndarray, near.Sketches | None, list[str], int]]:
        return map(self.batch, read_part(part, self.skip))


def fingerprint(inputs: Inputs, compare: Compare, threshold: float | None, formats: dict[str, str],
                meter: Meter, engine: Engine = LOCAL, ran: Ran | None = None) -> Fingerprints:
    """Pass one: fingerprint every readable row of `inputs` (on Ray's workers with a ray `engine`)."""
    keys, sketches, files, file_of = [], [], {}, []
    step = _Fingerprint(compare, threshold, inputs.skip)
    batches = run_parts(plan_inputs(inputs, formats, parts_wanted(engine)), step, engine, ran or Ran()) \
        if engine.ray else map(step.batch, _lanes(read_chats(inputs, formats), _ChatStep(compare, threshold)))
    for k, s, row_files, read in batches:
        keys.append(k)
        if s is not None:
            sketches.append(s)
        file_of += [files.setdefault(f, len(files)) for f in row_files]
        meter.add(read)
    return Fingerprints(np.concatenate(keys) if keys else np.zeros((0, 16), np.uint8),
                        near.concat(sketches) if threshold is not None else None, list(files),
                        np.array(file_of, np.int64))


def duplicates(fp: Fingerprints, threshold: float | None) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the row it repeats (-1: none) and how alike they are (x 1e6; 1e6 for an exact copy)."""
    first = near.first_copies(fp.keys)
    twin = np.where(first != np.arange(len(fp)), first, -1)
    score = np.where(twin >= 0, 1_000_000, 0)
    if fp.sketches is not None and threshold is not None:
        fp.sketches.has &= twin < 0  # an exact copy goes with its first copy; only first copies are compared
        near_twin, near_score = near.keep_first(len(fp), near.near_pairs(fp.sketches, threshold))
        found = near_twin >= 0
        twin[found], score[found] = near_twin[found], near_score[found]
    return twin, score


@dataclass
class DedupResult(Removes, Result):
    purpose = ("duplicate", "near_duplicate")
    formats: dict[str, str] = field(default_factory=dict)
    exact: int = 0
    near: int = 0

    def details(self) -> dict[str, Any]:
        return {"formats": self.formats, "removed": {"exact": self.exact, "near": self.near}}


@checked("dedup")
@streaming()
def dedup(inputs: Inputs, output: str, *, rejects: str | None = None, exact: bool = False, near: float = 0.8,
          fields: str = "all", nfkc: bool = True, ignore_case: bool = True, ignore_space: bool = True,
          to: str = "trl", progress: ProgressFn | None = None, engine: str = "local", ray_address: str | None = None,
          ray_workers: int = 0) -> DedupResult:
    """Write the rows of `inputs` without duplicates to `output`; each removed row goes to `rejects` with
    `duplicate_of` (the id, file and line of the row it repeats, which stays) and the similarity.

    `engine="ray"` fingerprints the rows on a Ray cluster (pass one, also for `exact`); the driver decides and
    writes as locally (design §13): the same output."""
    if not exact:  # (on Ray, planning the parts refuses them too)
        refuse_read_once(inputs.files, "near-duplicate dedup reads its inputs twice, fingerprints then the rows it "
                                       "keeps (--exact is one pass)")
    compare = Compare(fields, nfkc, ignore_case, ignore_space)
    result = DedupResult(outputs=outputs(output=output, rejects=rejects))
    meter = Meter(progress)
    meter.start()
    where, ran = Engine(engine, ray_address, ray_workers), Ran()
    if where.ray:  # two passes, the first on the workers; for exact copies the same rows go as in one pass
        threshold = None if exact else near
        fp = fingerprint(inputs, compare, threshold, result.formats, meter, where, ran)
        _remove(inputs, fp, threshold, output, rejects, to, result)
        result.engine = ran.to_dict()
        return result
    if exact:
        with contextlib.ExitStack() as stack:
            out = RecordsOut(stack, output, to, result.tally, open_rejects(stack, rejects, output))
            step = _ChatStep(compare, None)
            _first_copies(_lanes(read_chats(inputs, result.formats), step), compare, meter, out)
        result.exact = result.tally.rejected["duplicate"]
        return result
    _remove(inputs, fingerprint(inputs, compare, near, result.formats, meter), near, output, rejects, to, result)
    return result


def _remove(inputs: Inputs, fp: Fingerprints, threshold: float | None, output: str, rejects: str | None, to: str,
            result: DedupResult) -> None:
    """Decide which rows repeat which (the whole set in view), then pass two: write the rest."""
    twin, score = duplicates(fp, threshold)
    result.exact = int(np.count_nonzero(score == 1_000_000))
    result.near = int(np.count_nonzero(twin >= 0)) - result.exact
    with contextlib.ExitStack() as stack:
        bad = open_rejects(stack, rejects, output)
        out = RecordsOut(stack, output, to, result.tally, bad)
        _marked(_lanes(read_chats(inputs), _ChatStep(None, None)), twin, score, out)


# A row that stays, as a reject names it: its id (None: `<file name>:<row>`, as record_id makes it), file, line and
# row number (a tuple: one per distinct row is kept)
First = tuple[str | None, str, int, int]


def _first_copies(batches: Iterator[Laned], compare: Compare, meter: Meter, out: RecordsOut) -> None:
    """One pass, exact duplicates only: a row whose key was seen becomes a reject naming the first row with it.
    A plain chat block's first copies are remembered as numbers (block << 32 | row in it), set a block at a time by
    C calls; the block's ids and place say which row a number is when a later row repeats it."""
    seen: dict[bytes, First | int] = {}
    blocks: list[tuple[list[str] | None, str, int, int]] = []  # per plain block: its ids, file, first line and row

    def first_row(first: First | int) -> First:
        if isinstance(first, tuple):
            return first
        ids, file, line, row = blocks[first >> 32]
        k = first & 0xFFFFFFFF
        return (ids[k] if ids else None, file, line + k, row + k)

    for batch in batches:
        if isinstance(batch, tuple):  # plain chat rows, with their keys
            chats, done = batch
            assert done.keys is not None
            base = len(blocks) << 32
            blocks.append((done.ids, chats.file, chats.part.piece.line + 1, chats.part.piece.row + 1))
            numbers, before = range(base, base + len(done.keys)), len(seen)
            firsts = list(map(seen.setdefault, done.keys, numbers))
            gone = [] if len(seen) - before == len(firsts) else \
                list(compress(range(len(firsts)), map(ne, firsts, numbers)))  # the rows whose key was there
            rejects = [_reject(chats.record(k), chats.source(k), first_row(firsts[k]), 1_000_000) for k in gone]
            out.write_chats(chats, gone, rejects, done.ids)
            meter.add(len(chats))
            continue
        kept: Batch[Record] = batch.carry()
        for record, source in zip(batch.items, batch.sources, strict=True):
            first = seen.setdefault(near.exact_key(compared(record, compare)), entry := (record["id"], *_place(source)))
            if first is entry:
                kept.add(record, source)
            else:
                kept.rejects.append(_reject(record, source, first_row(first), 1_000_000))
        meter.add(len(batch.items) + len(batch.rejects))
        out.write(kept)


def _place(source: Source) -> tuple[str, int, int]:
    return source.file, source.line, source.row


def _marked(batches: Iterator[Laned], twin: np.ndarray, score: np.ndarray, out: RecordsOut) -> None:
    """Pass two: the rows with a twin become rejects naming it (the twin comes earlier, so it has been seen)."""
    wanted = np.zeros(len(twin), bool)
    wanted[twin[twin >= 0]] = True
    seen: dict[int, First] = {}
    index = 0
    for batch in batches:
        if isinstance(batch, tuple):  # plain chat rows
            chats, done = batch
            for k in np.flatnonzero(wanted[index:index + len(chats)]).tolist():
                seen[index + k] = (done.ids[k] if done.ids else None, *_place(chats.source(k)))
            gone = np.flatnonzero(twin[index:index + len(chats)] >= 0).tolist()
            rejects = [_reject(chats.record(k), chats.source(k), seen[int(twin[index + k])], int(score[index + k]))
                       for k in gone]
            index += len(chats)
            out.write_chats(chats, gone, rejects, done.ids)
            continue
        kept: Batch[Record] = batch.carry()
        for record, source in zip(batch.items, batch.sources, strict=True):
            if wanted[index]:
                seen[index] = (record["id"], *_place(source))
            if twin[index] < 0:
                kept.add(record, source)
            else:
                kept.rejects.append(_reject(record, source, seen[int(twin[index])], int(score[index])))
            index += 1
        out.write(kept)


def _reject(record: Record, source: Source, first: First, score: int) -> Reject:
    twin = Source(*first[1:])
    twin_id = first[0] or f"{os.path.basename(twin.file)}:{twin.row}"  # a plain chat row's place is its id
    where = f"line {twin.line}" if twin.file == source.file else str(twin)
    if score == 1_000_000:
        why = finding("duplicate", f"the row repeats {where} (id {twin_id})")
    else:  # validate's near_duplicate (a validation row like a training row) warns; here the row is dropped
        why = finding("near_duplicate", f"the row is ~{score / 1e6:.0%} similar to {where} (id {twin_id})",
                      hint="the row that stays is named in duplicate_of; raise --near to keep rows this alike",
                      severity=ERROR)
    return Reject(source, [why.at(source)], record, {"duplicate_of": {
        "id": twin_id, "file": twin.file, "line": twin.line, "row_number": twin.row, "similarity": score / 1e6}})
