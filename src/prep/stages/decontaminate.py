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
from prep.overlap.text import Compare, compared, normalize, tokens
from prep.stages.record_writer import RecordsOut, Removes, open_rejects


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
        return [f"{b['file']}: {b['items']} items ({b['texts']} texts: {b['texts_ngrams']} by n-grams, "
                f"{b['texts_whole']} shorter than the n-gram looked for whole, {b['texts_too_short']} too short to "
                f"look for), {b['hits']} rows dropped ({b['hits_whole']} by a whole short text)"
                + (f", {b['skipped']} rows without text" if b["skipped"] else "") for b in self.benchmarks]


def load_benchmarks(paths: Sequence[str], text_field: str | None, n: int, compare: Compare,
                    floor: int | None = None) -> tuple[NgramIndex, list[dict[str, Any]]]:
    """The index of every text of every benchmark item (each of its text fields, or `text_field`'s): its n-grams,
    or, shorter than n tokens and at least `floor`, the whole text. Per benchmark: items, texts and how each was
    indexed, rows without text (or unreadable)."""
    index = NgramIndex(n, floor)
    stats = []
    names = [f.strip() for f in text_field.split(",") if f.strip()] if text_field else None
    for path in paths:
        entry = {"file": path, "items": 0, "texts": 0, "texts_ngrams": 0, "texts_whole": 0, "texts_too_short": 0,
                 "skipped": 0, "hits": 0, "hits_whole": 0}
        for batch in read_rows(path):
            entry["skipped"] += len(batch.rejects)
            for row, source in zip(batch.items, batch.sources, strict=True):
                texts = _texts(row, names)
                if not texts:
                    entry["skipped"] += 1
                    continue
                entry["items"] += 1
                for text in texts:
                    kind = index.add(normalize(text, compare), (path, source.line))
                    entry["texts"] += 1
                    entry["texts_" + ("too_short" if kind == "short" else kind)] += 1
        if not entry["texts_ngrams"] + entry["texts_whole"]:
            where = f"field {text_field!r}" if text_field else "any text field"
            raise PrepError(f"{path}: no benchmark row has {where} with at least {index.floor} tokens; name the "
                            "text field with --field, or lower --min-item-tokens")
        stats.append(entry)
    return index, stats


def _texts(row: Any, names: list[str] | None) -> list[str]:
    """The texts of a benchmark item: every string in it (question, answer, each choice, nested ones), or those of
    the fields `names`."""
    if not isinstance(row, dict):
        return []
    out: list[str] = []
    stack: list[Any] = [row[k] for k in names if k in row] if names else [row]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            out.append(value)
        elif isinstance(value, dict):
            stack += value.values()
        elif isinstance(value, list):
            stack += value
    return out


@checked("decontaminate")
def decontaminate(inputs: Inputs, output: str, *, against: Sequence[str], field: str | None = None,
                  ngram: int = 13, min_item_tokens: int = 5, rejects: str | None = None, fields: str = "all",
                  nfkc: bool = True, ignore_case: bool = True, ignore_space: bool = True, to: str = "trl",
                  progress: ProgressFn | None = None) -> DecontaminateResult:
    """Write the rows of `inputs` that share no `ngram`-gram with a text of an item of the `against` benchmarks,
    nor hold whole a text of one shorter than that (of at least `min_item_tokens` tokens)."""
    if not against:
        raise PrepError("--against: give at least one benchmark file")
    compare = Compare(fields, nfkc, ignore_case, ignore_space)
    index, stats = load_benchmarks(against, field, ngram, compare, min_item_tokens)
    result = DecontaminateResult(outputs=outputs(output=output, rejects=rejects), benchmarks=stats)
    hits: Counter[tuple[str, bool]] = Counter()
    meter = Meter(progress)
    meter.start()
    with contextlib.ExitStack() as stack:
        out = RecordsOut(stack, output, to, result.tally, open_rejects(stack, rejects, output))
        for batch in read_inputs(inputs, result.formats):
            out.write(_drop(batch, index, compare, ngram, hits))
            meter.add(len(batch.items) + len(batch.rejects))
    for entry in stats:
        entry["hits_whole"] = hits[entry["file"], True]
        entry["hits"] = hits[entry["file"], False] + entry["hits_whole"]
    return result


def _drop(batch: Batch[Record], index: NgramIndex, compare: Compare, n: int,
          hits: Counter[tuple[str, bool]]) -> Batch[Record]:
    """The per-batch step: rows holding a benchmark n-gram (or a short benchmark text whole) become rejects naming
    it."""
    out: Batch[Record] = batch.carry()
    found = index.find([compared(r, compare) for r in batch.items])
    for record, source, match in zip(batch.items, batch.sources, found, strict=True):
        if match is None:
            out.add(record, source)
            continue
        gram, (bench, line) = match
        whole = len(tokens(gram)) < n
        hits[bench, whole] += 1
        why = finding("contaminated", f"the row holds the whole text \"{gram}\" of {bench}:{line}" if whole else
                      f"the row shares the {n}-gram \"{gram}\" with {bench}:{line}")
        out.rejects.append(Reject(source, [why.at(source)], record,
                                  {"benchmark": {"file": bench, "line": line, "ngram": gram, "whole": whole}}))
    return out
