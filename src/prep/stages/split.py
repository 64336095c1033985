"""`prep split`: a validation set taken per source (or from all sources together), exactly the asked
number of rows, with every group of exact or near duplicates kept on one side, so no validation row
has a twin in train (LLaMA-Factory #1730 asks for the per-dataset split; its `val_size` splits the
concatenation and ignores duplicates).

Pass one fingerprints the rows (as dedup does); the driver joins rows into groups (exact copies and
near pairs, connected) and takes whole groups, in a seeded random order, for validation while they
fit what each source still needs; pass two writes each row to its side.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from prep.core.findings import Batch, PrepError, Tally
from prep.core.options import checked
from prep.core.records import Record
from prep.core.result import Meter, ProgressFn, Result, outputs
from prep.files.atomic import Staged, link_others, write_json
from prep.files.guard import is_within, reserve
from prep.files.media_out import MEDIA_DIR
from prep.formats.inputs import Inputs, read_inputs, refuse_read_once
from prep.overlap import near
from prep.overlap.text import Compare
from prep.stages.dedup import Fingerprints, fingerprint
from prep.stages.record_writer import RecordsOut, open_rejects

TRAIN, VALIDATION, MANIFEST = "train.jsonl", "validation.jsonl", "manifest.json"
reserve(TRAIN, VALIDATION)  # no other output may be written over them (files.guard)


@dataclass
class SplitResult(Result):
    formats: dict[str, str] = field(default_factory=dict)
    manifest: dict[str, Any] = field(default_factory=dict)

    def details(self) -> dict[str, Any]:
        return {"formats": self.formats, "manifest": self.manifest}

    def summary(self) -> str:
        rows = self.manifest["rows"]
        return f"{self.tally.summary()}; train {rows['train']}, validation {rows['validation']}"

    def breakdown(self) -> list[str]:
        return [f"{s['source']}: {s['validation']} of {s['rows']} rows to validation (asked {s['validation_asked']})"
                for s in self.manifest["sources"]]


@checked("split")
def split(inputs: Inputs, output: str, *, val: float, per_source: bool = False, seed: int = 42,
          rejects: str | None = None, exact: bool = False, near: float = 0.8, fields: str = "all", nfkc: bool = True,
          ignore_case: bool = True, ignore_space: bool = True, to: str = "trl",
          progress: ProgressFn | None = None) -> SplitResult:
    """Split `inputs` into `output`/train.jsonl and validation.jsonl (format `to`) and a manifest.json with the
    counts per source. `val` below 1 is a share of the rows, from 1 up a number of rows (per source with
    `per_source`)."""
    if val >= 1 and val != int(val):
        raise PrepError(f"--val {val}: give a share below 1 (0.05) or a whole number of rows (100)")
    refuse_read_once(inputs.files, "split reads its inputs twice, fingerprints then the rows")
    threshold = None if exact else near
    folder = Path(output)
    if folder.is_dir() and (sub := next((p for p in folder.iterdir() if p.is_dir() and not p.is_symlink()
                                         and p.name != MEDIA_DIR), None)):
        raise PrepError(f"-o {output}: holds the folder {sub.name}; split replaces its output folder whole, keeping "
                        f"only files beside its own (and its {MEDIA_DIR}/): give a folder without other sub-folders")
    result = SplitResult(outputs=outputs(train=folder / TRAIN, validation=folder / VALIDATION,
                                         manifest=folder / MANIFEST, rejects=rejects))
    meter = Meter(progress)
    meter.start()
    fp = fingerprint(inputs, Compare(fields, nfkc, ignore_case, ignore_space), threshold, result.formats, meter)
    group = _groups(fp, threshold)
    sources = np.zeros(len(fp), np.int64) if not per_source else fp.file_of
    names = ["all"] if not per_source else fp.files
    sizes = np.bincount(sources, minlength=len(names))
    asked = np.array([_wanted(val, int(n)) for n in sizes], np.int64)
    chosen = _choose(group, sources, asked, seed)
    train_tally, val_tally = Tally(), Tally()
    # train, validation and manifest are written into a new folder swapped in whole: a kill leaves the old pair or
    # the new one, never a new validation beside an old train
    with Staged(folder, folder=True) as staged:
        work = staged.path
        with contextlib.ExitStack() as stack:
            inside = rejects is not None and is_within(rejects, folder)
            bad = open_rejects(stack, rejects, str(folder / TRAIN), str(folder / VALIDATION),
                               at=str(work / os.path.relpath(os.path.abspath(rejects), folder.absolute()))
                               if inside else None)
            train = RecordsOut(stack, str(work / TRAIN), to, train_tally, bad)
            valid = RecordsOut(stack, str(work / VALIDATION), to, val_tally, None)
            for train_batch, val_batch in _sides(read_inputs(inputs), chosen):
                train.write(train_batch)
                valid.write(val_batch)
        result.tally.add(train_tally)
        result.tally.add(val_tally)
        got = np.bincount(sources[chosen], minlength=len(names))
        result.manifest = {
            "seed": seed, "val": val, "per_source": per_source, "near": threshold, "fields": fields,
            "rows": {"read": result.tally.read, "train": train_tally.written, "validation": val_tally.written,
                     "rejected": result.tally.rejected_total},
            "sources": [{"source": name, "rows": int(n), "validation_asked": int(a), "validation": int(g)}
                        for name, n, a, g in zip(names, sizes, asked, got, strict=True)],
            "groups": {"rows_in_groups": int(np.count_nonzero(np.bincount(group)[group] > 1)),
                       "groups": int(np.count_nonzero(np.bincount(group) > 1))},
        }
        write_json(work / MANIFEST, result.manifest)
        link_others(folder, work)
    return result


def _wanted(val: float, rows: int) -> int:
    """Validation rows asked of `rows` rows: a share rounded half up, or a count (never more than there are)."""
    return min(rows, math.floor(val * rows + 0.5) if val < 1 else int(val))


def _groups(fp: Fingerprints, threshold: float | None) -> np.ndarray:
    """Each row's group (its smallest row): exact copies with their first copy, near pairs joined."""
    first = near.first_copies(fp.keys)
    links = [(int(i), int(f)) for i, f in zip(np.flatnonzero(first != np.arange(len(fp))),
                                              first[first != np.arange(len(fp))], strict=True)]
    if fp.sketches is not None and threshold is not None:
        fp.sketches.has &= first == np.arange(len(fp))
        links += [(int(i), int(j)) for i, j, _ in near.near_pairs(fp.sketches, threshold).tolist()]
    return near.groups(len(fp), links)


def _choose(group: np.ndarray, sources: np.ndarray, asked: np.ndarray, seed: int) -> np.ndarray:
    """The validation rows: whole groups in a seeded random order, each taken when every source it has rows in
    still needs that many. Exact unless groups are too large to fit what is left (the manifest says so)."""
    need = asked.copy()
    chosen = np.zeros(len(group), bool)
    members: dict[int, list[int]] = {}
    for row, g in enumerate(group.tolist()):
        members.setdefault(g, []).append(row)
    for g in np.random.default_rng([seed]).permutation(np.array(sorted(members), np.int64)).tolist():
        if not need.any():
            break
        rows = members[g]
        counts = np.bincount(sources[rows], minlength=len(need))
        if (counts <= need).all():
            need -= counts
            chosen[rows] = True
    return chosen


def _sides(batches: Iterator[Batch[Record]], chosen: np.ndarray) -> Iterator[tuple[Batch[Record], Batch[Record]]]:
    """Pass two: each batch as its train part (with the batch's rejects) and its validation part."""
    index = 0
    for batch in batches:
        train, valid = batch.carry(), Batch[Record]()
        for record, source in zip(batch.items, batch.sources, strict=True):
            (valid if chosen[index] else train).add(record, source)
            index += 1
        yield train, valid
