"""`prep dedup`: exact and near-duplicate rows removed, within and across files, each removed row a
reject naming the row it repeats (`duplicate_of`).

`--exact` is one pass: each row's 16-byte key is looked up among the keys seen so far (the first row of
each key is remembered: about 300 bytes a distinct row). With near duplicates, two passes over the
inputs. The first fingerprints every row (a per-batch function: the 16-byte key
of its compared text and its MinHash sketch, prep.overlap); the driver then decides, with the whole
set in view, which rows repeat which (exact keys grouped, near pairs from the LSH bands, greedy in
input order: a row goes when it repeats an earlier row that stays). The second pass writes the
rows that stay and rejects the others. Memory: about 400 bytes a row for the sketches, none for
the rows themselves.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from prep.core.codes import ERROR
from prep.core.findings import Batch, Reject, Source, finding
from prep.core.heap import streaming
from prep.core.options import checked
from prep.core.records import Record
from prep.core.result import Meter, ProgressFn, Result, outputs
from prep.formats.inputs import Inputs, Part, plan_inputs, read_inputs, read_part
from prep.overlap import near
from prep.overlap.text import Compare, compared
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
    keys = np.frombuffer(b"".join(map(near.exact_key, texts)), np.uint8).reshape(-1, 16)
    return keys, near.sketch(texts, threshold) if threshold is not None else None


@dataclass(frozen=True)
class _Fingerprint:
    """Pass one's per-batch step over one part (`--engine ray`: on the workers): each batch's keys, sketches, the
    file of each row and the rows read."""

    compare: Compare
    threshold: float | None
    skip: dict[str, list[int]] = field(default_factory=dict)

    def batch(self, batch: Batch[Record]) -> tuple[np.ndarray, near.Sketches | None, list[str], int]:
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
        if engine.ray else map(step.batch, read_inputs(inputs, formats))
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
            for batch in _first_copies(read_inputs(inputs, result.formats), compare, meter):
                out.write(batch)
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
        for batch in _marked(read_inputs(inputs), twin, score):
            out.write(batch)


def _first_copies(batches: Iterator[Batch[Record]], compare: Compare, meter: Meter) -> Iterator[Batch[Record]]:
    """One pass, exact duplicates only: a row whose key was seen becomes a reject naming the first row with it."""
    seen: dict[bytes, tuple[str, Source]] = {}
    for batch in batches:
        keys = [near.exact_key(compared(r, compare)) for r in batch.items]  # bytes: no array row per key
        out: Batch[Record] = batch.carry()
        for record, source, key in zip(batch.items, batch.sources, keys, strict=True):
            first = seen.setdefault(key, (record["id"], source))
            if first[1] is source:
                out.add(record, source)
            else:
                out.rejects.append(_reject(record, source, *first, 1_000_000))
        meter.add(len(batch.items) + len(batch.rejects))
        yield out


def _marked(batches: Iterator[Batch[Record]], twin: np.ndarray, score: np.ndarray) -> Iterator[Batch[Record]]:
    """Pass two: the rows with a twin become rejects naming it (the twin comes earlier, so it has been seen)."""
    wanted = set(twin[twin >= 0].tolist())
    seen: dict[int, tuple[str, Source]] = {}
    index = 0
    for batch in batches:
        out: Batch[Record] = batch.carry()
        for record, source in zip(batch.items, batch.sources, strict=True):
            if index in wanted:
                seen[index] = (record["id"], source)
            if twin[index] < 0:
                out.add(record, source)
            else:
                out.rejects.append(_reject(record, source, *seen[int(twin[index])], int(score[index])))
            index += 1
        yield out


def _reject(record: Record, source: Source, twin_id: str, twin: Source, score: int) -> Reject:
    where = f"line {twin.line}" if twin.file == source.file else str(twin)
    if score == 1_000_000:
        why = finding("duplicate", f"the row repeats {where} (id {twin_id})")
    else:  # validate's near_duplicate (a validation row like a training row) warns; here the row is dropped
        why = finding("near_duplicate", f"the row is ~{score / 1e6:.0%} similar to {where} (id {twin_id})",
                      hint="the row that stays is named in duplicate_of; raise --near to keep rows this alike",
                      severity=ERROR)
    return Reject(source, [why.at(source)], record, {"duplicate_of": {
        "id": twin_id, "file": twin.file, "line": twin.line, "row_number": twin.row, "similarity": score / 1e6}})
