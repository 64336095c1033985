"""What a verb reads: files (format detected per file unless named) and LLaMA-Factory registry
entries, as one stream of canonical record batches. Every verb that reads records starts here."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import chain
from typing import Any

from prep.core.columns import SHARD_COLUMNS
from prep.core.findings import Batch, PrepError
from prep.core.options import INPUTS, MAX_ROW_BYTES, SETTINGS, check
from prep.core.records import Record
from prep.files.paths import display_name, split_suffix
from prep.files.pieces import BATCH_ROWS, Piece, cut, pieces
from prep.files.read import read_rows
from prep.formats import Fields, detect_file, make_options, media_root, read_records, to_records
from prep.formats import llamafactory as lf


@dataclass
class Inputs:
    """What to read: files and/or registry entries, and how."""

    files: Sequence[str] = ()
    format: str = "auto"
    settings: dict[str, Any] = field(default_factory=dict)
    container: str | None = None
    txt_split: str = "file"
    registry: str | None = None
    datasets: Sequence[str] = ()
    seed: int = 42
    max_row_bytes: int = MAX_ROW_BYTES
    # Rows an earlier step rejected (`prep run`'s validate with allow_errors), by file: row numbers left
    # out, so the rest keep their own ids (`<file name>:<row>`) and are not counted again.
    skip: dict[str, list[int]] = field(default_factory=dict)
    # Input columns carried into the records (and the shards) instead of being counted as dropped.
    keep_columns: Sequence[str] = ()
    strict_fields: bool = False  # a field that would be dropped rejects its row
    split_think: bool = False  # an answer's leading <think>…</think> is its reasoning_content
    tool_calls: str | None = None  # the text dialect of tool calls to read into tool_calls (formats.toolcalls)
    # Where relative media paths are resolved; default: the folder of the file that names them (a registry's folder).
    media_root: str | None = None

    def __post_init__(self) -> None:
        """Refused here in the options table's words, however the inputs were made (CLI, recipe or Python)."""
        check("inputs", {"files": list(self.files), "format": self.format, "input_type": self.container,
                         "txt_split": self.txt_split, "dataset_info": self.registry, "datasets": list(self.datasets),
                         "seed": self.seed, "max_row_bytes": self.max_row_bytes, "keep_columns": list(self.keep_columns),
                         "strict_fields": self.strict_fields, "split_think": self.split_think, "tool_calls": self.tool_calls,
                         "media_root": self.media_root, **self.settings})
        if clash := [c for c in self.fields.keep if c in SHARD_COLUMNS]:
            raise PrepError(f"--keep-columns {', '.join(clash)}: a shard column has that name, so the input column "
                            f"could not be carried beside it; rename the column in the input (shard columns: "
                            f"{', '.join(SHARD_COLUMNS)})")

    @classmethod
    def from_options(cls, values: Mapping[str, Any]) -> Inputs:
        """Inputs from the `inputs` table's names (a recipe's `inputs:` section, the CLI's input options)."""
        v = {o.name: () if o.multiple else o.default for o in INPUTS} | {k: x for k, x in values.items() if x is not None}
        return cls(list(v["files"]), v["format"], {k: v[k] for k in SETTINGS if v[k] is not None}, v["input_type"],
                   v["txt_split"], v["dataset_info"], list(v["datasets"]), v["seed"], v["max_row_bytes"],
                   keep_columns=tuple(v["keep_columns"]), strict_fields=v["strict_fields"],
                   split_think=v["split_think"], tool_calls=v["tool_calls"], media_root=v["media_root"])

    @property
    def fields(self) -> Fields:
        keep = tuple(dict.fromkeys(c.strip() for spec in self.keep_columns for c in spec.split(",") if c.strip()))
        return Fields(keep, self.strict_fields, self.split_think, self.tool_calls)


def read_inputs(inputs: Inputs, formats_seen: dict[str, str] | None = None) -> Iterator[Batch[Record]]:
    """Canonical record batches from every input; `formats_seen` collects the format read per file."""
    if inputs.skip:
        yield from _leave_out(read_inputs(replace(inputs, skip={}), formats_seen), inputs.skip)
        return
    if not inputs.files and not inputs.datasets:
        raise PrepError("nothing to read: give input files or --dataset-info with --dataset")
    if inputs.datasets and not inputs.registry:
        raise PrepError("--dataset needs --dataset-info PATH/dataset_info.json")
    entries = [lf.load_entry(inputs.registry, name) for name in inputs.datasets]  # fail early on a bad entry

    def note(path: str, fmt: str) -> None:
        if formats_seen is not None:
            formats_seen[display_name(path)] = fmt

    fields = inputs.fields
    yield from read_records(inputs.files, inputs.format, inputs.settings, inputs.container, inputs.txt_split, note,
                            inputs.max_row_bytes, fields, inputs.media_root)
    for entry in entries:
        rows: Iterator[Batch[Any]] = chain.from_iterable(read_rows(f, max_row_bytes=inputs.max_row_bytes)
                                                         for f in entry.files)
        sampled = ""
        if entry.num_samples:
            total = sum(len(b.items) + len(b.rejects) for f in entry.files for b in read_rows(f))
            rows = lf.sample(rows, lf.sample_plan(total, entry.num_samples, inputs.seed))
            sampled = f", num_samples {entry.num_samples} of {total} rows"  # why `read` differs from the file
        for f in entry.files:
            note(f, f"{entry.format} (dataset_info: {entry.name}{sampled})")
        yield from to_records(rows, entry.format, make_options(entry.format, _entry_settings(entry, inputs)), fields)


def _entry_settings(entry: lf.Entry, inputs: Inputs) -> dict[str, Any]:
    """A registry entry's reader settings; `--media-root` stands for LLaMA-Factory's `media_dir`, whose default is
    the registry's folder (`dataset_dir`)."""
    return {**entry.settings, "media_root": media_root(".", inputs.media_root)} if inputs.media_root else entry.settings


@dataclass(frozen=True)
class Part:
    """A piece of an input (`files.Piece`) and how to read it: what a worker of `--engine ray` is given."""

    piece: Piece
    format: str
    settings: dict[str, Any]
    container: str | None = None
    txt_split: str = "file"
    max_row_bytes: int = MAX_ROW_BYTES
    fields: Fields = Fields()


def refuse_read_once(paths: Iterable[str], why: str) -> None:
    """Refuse, in one line, standard input and any input that is neither a regular file nor a folder (a pipe, a FIFO,
    a device: read once) for a verb that reads its inputs twice (`why` says so): its second pass would find them
    empty, and every row would be gone without a word."""
    for path in paths:
        if path == "-" or os.path.exists(path) and not (os.path.isfile(path) or os.path.isdir(path)):
            raise PrepError(f"{'standard input' if path == '-' else path}: {why}, and this can be read once: write it "
                            "to a file first")


def plan_inputs(inputs: Inputs, formats_seen: dict[str, str] | None = None, parts: int = 1,
                most: int = 16 * BATCH_ROWS) -> list[Part]:
    """`inputs` as parts for workers, in input order: each file's format detected here (from its first rows, as
    `read_inputs` does), plain JSONL cut on batch ends into about `parts` parts over all inputs (so a single big
    file runs on every worker), none of more than `most` rows (a part's output travels whole). `read_part` of each part, one after the other,
    gives the batches `read_inputs` gives."""
    if not inputs.files and not inputs.datasets:
        raise PrepError("nothing to read: give input files or --dataset-info with --dataset")
    if inputs.datasets and not inputs.registry:
        raise PrepError("--dataset needs --dataset-info PATH/dataset_info.json")
    refuse_read_once(inputs.files, "--engine ray reads each input in parts")  # planning would take a pipe's rows
    entries = [lf.load_entry(inputs.registry, name) for name in inputs.datasets]
    found: list[tuple[list[Piece], str, dict[str, Any], str | None, str]] = []
    for path in inputs.files:
        fmt = inputs.format
        if fmt == "auto" and (inputs.container or split_suffix(path)[0]) == "txt":
            fmt = "text"
        elif fmt == "auto":
            batches = read_rows(path, inputs.container, inputs.txt_split, max_row_bytes=inputs.max_row_bytes)
            fmt, _ = detect_file(batches, path)
            batches.close()
        if formats_seen is not None:
            formats_seen[display_name(path)] = fmt
        found.append((pieces(path, inputs.container, limit=inputs.max_row_bytes), fmt,
                      {**inputs.settings, "media_root": media_root(path, inputs.media_root)}, inputs.container,
                      inputs.txt_split))
    for entry in entries:
        if entry.num_samples:
            raise PrepError(f"--engine ray: dataset_info entry {entry.name} samples num_samples rows across its "
                            "files; run it with --engine local, or convert it to a file first")
        for f in entry.files:
            if formats_seen is not None:
                formats_seen[f] = f"{entry.format} (dataset_info: {entry.name})"
            found.append((pieces(f, limit=inputs.max_row_bytes), entry.format, _entry_settings(entry, inputs), None,
                          "file"))
    runs = cut([run for run, *_ in found], parts, most // BATCH_ROWS)
    return [Part(piece, fmt, settings, container, split, inputs.max_row_bytes, inputs.fields)
            for (_, fmt, settings, container, split), run in zip(found, runs, strict=True) for piece in run]


def read_part(part: Part, skip: dict[str, list[int]] | None = None) -> Iterator[Batch[Record]]:
    """The canonical record batches of one part, the same as `read_inputs` gives for those rows (`skip`: as
    `Inputs.skip`)."""
    rows = read_rows(part.piece.path, part.container, part.txt_split, max_row_bytes=part.max_row_bytes,
                     piece=part.piece)
    records = to_records(rows, part.format, make_options(part.format, part.settings), part.fields)
    return _leave_out(records, skip) if skip else records


def _leave_out(batches: Iterator[Batch[Record]], skip: dict[str, list[int]]) -> Iterator[Batch[Record]]:
    """The batches without the rows in `skip` (neither as records nor as rejects)."""
    rows = {file: set(numbers) for file, numbers in skip.items()}
    for batch in batches:
        kept: Batch[Record] = Batch(altered=batch.altered, dropped=batch.dropped)
        for item, source in zip(batch.items, batch.sources, strict=True):
            if source.row not in rows.get(source.file, ()):
                kept.add(item, source)
        kept.rejects = [r for r in batch.rejects if r.source.row not in rows.get(r.source.file, ())]
        yield kept
