"""`prep decontaminate`: training rows that share an n-gram with a benchmark item are dropped, each reject
naming the benchmark file, line and n-gram (GPT-3's 13-gram test, as datatrove and NeMo Curator run it
for pretraining; prep.overlap.ngrams).

The benchmarks are read first (the driver builds the n-gram index); then the training rows stream
through a per-batch lookup, so memory grows with the benchmarks, not with the training data.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prep.core.findings import Batch, PrepError, Reject, finding
from prep.core.options import checked
from prep.core.records import Record
from prep.core.result import Meter, ProgressFn, Result, outputs
from prep.files.read import read_rows
from prep.formats.inputs import Inputs, read_inputs
from prep.overlap.ngrams import NgramIndex
from prep.overlap.text import Compare, compared, normalize
from prep.stages.record_writer import RecordsOut, Removes, open_rejects

TEXT_FIELDS = ("text", "question", "prompt", "problem", "input", "instruction", "query")


@dataclass
class DecontaminateResult(Removes, Result):
    purpose = ("contaminated",)
    formats: dict[str, str] = field(default_factory=dict)
    benchmarks: list[dict[str, Any]] = field(default_factory=list)

    def details(self) -> dict[str, Any]:
        return {"formats": self.formats, "benchmarks": self.benchmarks}

    def summary(self) -> str:
        hits = ", ".join(f"{Path(b['file']).name}: {b['hits']}" for b in self.benchmarks)
        return f"{self.tally.summary()} (hits {hits})"

    def breakdown(self) -> list[str]:
        return [f"{b['file']}: {b['items']} items, {b['hits']} rows dropped"
                + (f", {b['shorter_than_ngram']} items shorter than the n-gram" if b["shorter_than_ngram"] else "")
                + (f", {b['skipped']} rows without text" if b["skipped"] else "") for b in self.benchmarks]


def load_benchmarks(paths: Sequence[str], text_field: str | None, n: int, compare: Compare) -> tuple[
        NgramIndex, list[dict[str, Any]]]:
    """The n-gram index of every benchmark item, and per benchmark: items, items shorter than n tokens, rows
    without the text field (or unreadable)."""
    index = NgramIndex(n)
    stats = []
    for path in paths:
        entry = {"file": path, "items": 0, "shorter_than_ngram": 0, "skipped": 0, "hits": 0}
        for batch in read_rows(path):
            entry["skipped"] += len(batch.rejects)
            for row, source in zip(batch.items, batch.sources, strict=True):
                text = _text(row, text_field)
                if text is None:
                    entry["skipped"] += 1
                    continue
                entry["items"] += 1
                if not index.add(normalize(text, compare), (path, source.line)):
                    entry["shorter_than_ngram"] += 1
        if not entry["items"]:
            where = f"field {text_field!r}" if text_field else f"any of the fields {', '.join(TEXT_FIELDS)}"
            raise PrepError(f"{path}: no benchmark row has {where} as text; name the field with --field")
        stats.append(entry)
    return index, stats


def _text(row: Any, text_field: str | None) -> str | None:
    if not isinstance(row, dict):
        return None
    for name in (text_field,) if text_field else TEXT_FIELDS:
        if isinstance(row.get(name), str):
            return row[name]
    return None


@checked("decontaminate")
def decontaminate(inputs: Inputs, output: str, *, against: Sequence[str], field: str | None = None,
                  ngram: int = 13, rejects: str | None = None, fields: str = "all", nfkc: bool = True,
                  ignore_case: bool = True, ignore_space: bool = True, to: str = "trl",
                  progress: ProgressFn | None = None) -> DecontaminateResult:
    """Write the rows of `inputs` that share no `ngram`-gram with an item of the `against` benchmarks."""
    if not against:
        raise PrepError("--against: give at least one benchmark file")
    compare = Compare(fields, nfkc, ignore_case, ignore_space)
    index, stats = load_benchmarks(against, field, ngram, compare)
    result = DecontaminateResult(outputs=outputs(output=output, rejects=rejects), benchmarks=stats)
    hits: Counter[str] = Counter()
    meter = Meter(progress)
    meter.start()
    with contextlib.ExitStack() as stack:
        out = RecordsOut(stack, output, to, result.tally, open_rejects(stack, rejects, output))
        for batch in read_inputs(inputs, result.formats):
            out.write(_drop(batch, index, compare, ngram, hits))
            meter.add(len(batch.items) + len(batch.rejects))
    for entry in stats:
        entry["hits"] = hits[entry["file"]]
    return result


def _drop(batch: Batch[Record], index: NgramIndex, compare: Compare, n: int, hits: Counter[str]) -> Batch[Record]:
    """The per-batch step: rows holding a benchmark n-gram become rejects naming it."""
    out: Batch[Record] = batch.carry()
    found = index.find([compared(r, compare) for r in batch.items])
    for record, source, match in zip(batch.items, batch.sources, found, strict=True):
        if match is None:
            out.add(record, source)
            continue
        gram, (bench, line) = match
        hits[bench] += 1
        why = finding("contaminated", f"the row shares the {n}-gram \"{gram}\" with {bench}:{line}")
        out.rejects.append(Reject(source, [why.at(source)], record,
                                  {"benchmark": {"file": bench, "line": line, "ngram": gram}}))
    return out
