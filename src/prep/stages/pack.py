"""`prep pack`: unpacked token shards in, rows of at most `max_len` tokens out (the algorithms are in
prep.shards.packing).

Rows with media keep them (design §2a): the packed folder's `media_roots` are ".", the unpacked folder (where its
own media files stay) and its other roots, so the packed rows name the same files (the tables go to the shard
writer with the `prep.media` metadata that names those roots and files). For a model whose position ids
are multi-dimensional (Qwen2-VL's M-RoPE), packing rows with media is refused: their per-document 3-D positions
are not built here, and the unpacked shards train as they are."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prep.core.columns import MEDIA_COLUMN, MEDIA_META
from prep.core.columns import schema as shard_schema
from prep.core.findings import PrepError, Source
from prep.core.options import checked, parse_size
from prep.core.result import Meter, ProgressFn, Result, outputs
from prep.files.guard import check_outputs
from prep.files.hashing import sha256_file
from prep.shards.layout import MANIFEST, SCHEMAS, read_manifest
from prep.shards.media import has_media, media_count, multi_dimensional_positions
from prep.shards.packing import Wrapper, bfd_bins, bfd_window, check_lengths, overflow, packed_rows
from prep.shards.reader import iter_tables, open_shard, take_rows
from prep.shards.writer import PartSpec, PartWriter, ShardWriter, WrittenPart
from prep.stages.engine import LOCAL, Engine, Ran, parts_wanted, run_parts

DEFAULT_WINDOW = 100_000
_SCHEMA = SCHEMAS["sft"]


@dataclass
class PackResult(Result):
    manifest: dict[str, Any] = field(default_factory=dict)

    def details(self) -> dict[str, Any]:
        return {"manifest": self.manifest}

    def summary(self) -> str:
        c, packing, rows = self.manifest["counts"], self.manifest["packing"], self.manifest["counts"]["rows"]
        return (f"read {c['read']} documents, packed {c['written']} into {rows} row{'' if rows == 1 else 's'} of <= "
                f"{self.manifest['max_len']} tokens ({packing['strategy']}, efficiency "
                f"{packing.get('efficiency', 0):.2%}), rejected {sum(c['rejected'].values())}")


@checked("pack")
def pack(shards: str | Path, output: str | Path, max_len: int, *, strategy: str = "bfd", seed: int = 0,
         window: int = DEFAULT_WINDOW, shard_size: str = "256MB",
         rejects: str | None = None, progress: ProgressFn | None = None, engine: str = "local",
         ray_address: str | None = None, ray_workers: int = 0) -> PackResult:
    """Pack the unpacked shards in `shards` into rows of at most `max_len` tokens in `output`.

    `engine="ray"` (bfd): best-fit decreasing runs here over the documents' lengths alone, and Ray workers build
    the packed rows from the shards (design §13): the same output."""
    shard_rows, shard_mb = parse_size(shard_size)
    source = read_manifest(shards)
    if source["kind"] not in ("sft", "pretrain"):
        raise PrepError(f"{shards}: {source['kind']} shards are not packed (pairs and prompts are trained row by row)")
    if (source.get("packing") or {}).get("strategy", "none") != "none":
        raise PrepError(f"{shards}: these shards are packed already ({source['packing']['strategy']}); pack the "
                        f"unpacked folder they came from ({(source.get('source') or {}).get('path', 'prep tokenize')})")
    check_outputs([shards], {"-o": output, "--rejects": rejects})
    media = has_media(source)
    if media and media_count(source):
        _refuse_multi_dimensional(Path(shards), source)
    window = window or 2**62
    options = {"max_len": max_len, "strategy": strategy, "seed": seed, "window": window, "shard_rows": shard_rows,
               "shard_mb": shard_mb}
    source_sha = sha256_file(Path(shards) / MANIFEST)
    meta = {k: v for k, v in source.items()
            if k in ("tokenizer", "template", "train_on", "overflow", "inputs", "processor")}
    meta.update(max_len=max_len, packing={"strategy": strategy, "seed": seed, "window": window},
                source={"path": str(shards), "manifest_sha256": source_sha, "counts": source["counts"]})
    key = hashlib.sha256(json.dumps([source_sha, options, meta], sort_keys=True).encode()).hexdigest()
    policy = source.get("overflow") or "drop"
    rng = random.Random(seed)
    wrapper = Wrapper(max_len) if strategy == "wrap" else None
    meter = Meter(progress)
    where, ran, notes = Engine(engine, ray_address, ray_workers), Ran(), []
    if where.ray and wrapper:
        notes.append("--strategy wrap cuts one stream of tokens in order, which runs here: --engine ray packs bfd")
        where = LOCAL
    named = _media_meta(Path(shards), source) if media else None
    with ShardWriter(output, source["kind"], meta, rejects=rejects, shard_rows=shard_rows, shard_mb=shard_mb,
                     resume_key=key, media=media) as writer:
        if where.ray:
            _pack_on_ray(Path(shards), source, window, max_len, policy, rng, writer, meter, where, ran, named)
        for table, sources in _windows(Path(shards), source, window) if not where.ray else ():
            meter.add(table.num_rows, int(pc.sum(table["num_tokens"]).as_py() or 0))
            # wrap cuts documents wherever the blocks end, so no document is too long for it
            table, docs = check_lengths(table, sources, max_len if wrapper is None else 2**62, policy)
            writer.account(docs)
            packed = wrapper.add(table) if wrapper else bfd_window(table, max_len, rng)
            if packed is not None:
                writer.add(_naming(packed, named))
        if wrapper and (last := wrapper.add(None)) is not None:
            writer.add(_naming(last, named))
    manifest = read_manifest(output)
    carried = source.get("carried") or []
    notes += [f"carried columns {', '.join(carried)} are not packed (a packed row holds several documents); they "
              f"stay in {shards}, found by each document's id"] if carried else []
    return PackResult(tally=writer.tally, outputs=outputs(output=output, rejects=rejects),
                      manifest=manifest, notes=notes, engine=ran.to_dict() if where.ray else {})


def _refuse_multi_dimensional(folder: Path, manifest: dict[str, Any]) -> None:
    """Refuse rows with media for a model whose positions are not one number per token, saying why."""
    grids = []
    if not (manifest.get("processor") or {}).get("positions"):  # the manifest does not say: the first medium's grid
        for table in iter_tables(folder, [MEDIA_COLUMN]):
            grids = [m["grid"] for m in pc.list_flatten(table[MEDIA_COLUMN]).to_pylist()[:1]]
            if grids:
                break
    if why := multi_dimensional_positions(manifest, grids):
        raise PrepError(f"{folder}: its rows hold media and {why}: packed, each document's media would need its own "
                        "3-D position ids restarting at the document, which prep does not build (yet), and the model "
                        "would see positions that differ from the unpacked row's. Train on the unpacked shards (prep "
                        "train reads them as they are; leave out prep pack / the recipe's pack section)")


def _media_meta(folder: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """What the shard writer is told the packed rows' media `root` indexes: the unpacked folder's roots, its "." as
    the folder itself (so the packed folder's roots are ".", the unpacked folder, then its other roots), and its
    files."""
    return {"roots": [str(folder.resolve()), *[str(r) for r in (manifest.get("media_roots") or ["."])[1:]]],
            "files": (manifest.get("media") or {}).get("files") or []}


def _naming(table: pa.Table, named: dict[str, Any] | None) -> pa.Table:
    """Packed rows with the metadata that names their media's roots and files (design §2a, `prep.media`)."""
    if named is None:
        return table
    items = int(pc.sum(table[MEDIA_COLUMN].combine_chunks().value_lengths()).as_py() or 0)
    return table.replace_schema_metadata({MEDIA_META: json.dumps({**named, "items": items})})


def _columns(manifest: dict[str, Any]) -> list[str]:
    """The columns packing reads: the tokens, and the media where the rows hold them."""
    return list(_SCHEMA.names) + ([MEDIA_COLUMN] if has_media(manifest) else [])


@dataclass(frozen=True)
class _Rows:
    """One part of a window's packed rows for a Ray worker: its documents in row order, as (shard file, 0-based
    row) or, for a truncated document, the row itself; and how many documents each row takes."""

    files: tuple[str, ...]
    file_index: np.ndarray  # per document: index into files, or -1 for the next truncated row
    rows: np.ndarray  # per document: its row in that file
    truncated: list[dict[str, Any]]
    bin_sizes: np.ndarray
    schema: pa.Schema  # the columns read (the media column too where the rows hold media)


def _build_rows(part: _Rows) -> Iterator[pa.Table]:
    """A Ray worker's work: read the part's documents from the shards, and pack them (`packing.packed_rows`)."""
    tables, where = [], np.zeros(len(part.rows), np.int64)
    taken = 0
    for k, path in enumerate(part.files):
        mine = np.flatnonzero(part.file_index == k)
        if len(mine):
            tables.append(take_rows(path, part.rows[mine], part.schema.names))
            where[mine] = taken + np.arange(len(mine))
            taken += len(mine)
    cut = np.flatnonzero(part.file_index < 0)
    if len(cut):
        tables.append(pa.Table.from_pylist(part.truncated, schema=part.schema))
        where[cut] = taken + np.arange(len(cut))
    yield packed_rows(pa.concat_tables(tables).take(pa.array(where, pa.int64())), part.bin_sizes)


def _long_rows(sources: list[Source], lengths: np.ndarray, max_len: int, columns: list[str]
               ) -> dict[int, dict[str, Any]]:
    """The documents of a window longer than `max_len` (to cut or reject), read whole from their shards, by index."""
    long = np.flatnonzero(lengths > max_len)
    found: dict[int, dict[str, Any]] = {}
    for file in dict.fromkeys(sources[i].file for i in long):
        mine = [int(i) for i in long if sources[i].file == file]
        rows = take_rows(file, np.array([sources[i].line - 1 for i in mine]), columns).to_pylist()
        found.update(zip(mine, rows, strict=True))
    return found


def _pack_on_ray(indir: Path, manifest: dict[str, Any], window: int, max_len: int, policy: str, rng: random.Random,
                 writer: ShardWriter, meter: Meter, engine: Engine, ran: Ran, named: dict[str, Any] | None) -> None:
    """bfd under Ray: each window's lengths read and packed into bins here, as the local engine does; the rows
    built by the workers, a few parts per worker and window, and written here in order."""
    parts: list[_Rows] = []
    per_window = parts_wanted(engine)
    columns = _columns(manifest)
    schema = shard_schema(manifest["kind"], (), has_media(manifest))
    for lengths_table, sources in _windows(indir, manifest, window, ["num_tokens"]):
        lengths = lengths_table["num_tokens"].to_numpy()
        keep, truncated, docs = overflow(lengths, sources, max_len, policy,
                                         _long_rows(sources, lengths, max_len, columns).__getitem__)
        writer.account(docs)
        packable = [s for s, k in zip(sources, keep.tolist(), strict=True) if k]
        bins = bfd_bins(np.concatenate((lengths[keep], np.full(len(truncated), max_len))).astype(lengths.dtype),
                        max_len, rng)
        files = tuple(dict.fromkeys(s.file for s in packable))
        number = {f: k for k, f in enumerate(files)}
        size = max(1, -(-len(bins) // per_window))
        for start in range(0, len(bins), size):
            chosen = bins[start:start + size]
            order = list(chain.from_iterable(chosen))
            mine = [i - len(packable) for i in order if i >= len(packable)]
            parts.append(_Rows(files, np.array([number[packable[i].file] if i < len(packable) else -1 for i in order]),
                               np.array([packable[i].line - 1 if i < len(packable) else 0 for i in order], np.int64),
                               [truncated[i] for i in mine], np.array([len(b) for b in chosen], np.int64), schema))
    if named is None:  # the workers write their parts' shards; here they are adopted in order
        spec = dataclasses.replace(writer.parts(), rejects=False)  # a document is rejected here, before the bins
        with contextlib.closing(run_parts(list(enumerate(parts)), _BuildAndWrite(spec), engine, ran)) as written:
            for part, documents in written:
                meter.add(documents, part.tokens)
                writer.adopt(part)
        return
    for table in run_parts(parts, _build_rows, engine, ran):  # rows with media: the driver numbers their roots
        meter.add(_documents(table), int(pc.sum(table["num_tokens"]).as_py() or 0))
        writer.add(_naming(table, named))


def _documents(table: pa.Table) -> int:
    """The documents packed into `table`'s rows."""
    return int(pc.sum(table["seq_lengths"].combine_chunks().value_lengths()).as_py() or 0)


@dataclass(frozen=True)
class _BuildAndWrite:
    """A Ray worker's work when it writes its part itself (design §13): the part's packed rows (`_build_rows`)
    written with a `PartWriter` into the output's folder being made. It hands back the part's shard list and the
    documents it packed, never its rows."""

    spec: PartSpec

    def __call__(self, job: tuple[int, _Rows]) -> Iterator[tuple[WrittenPart, int]]:
        index, part = job
        documents = 0
        with PartWriter(self.spec, index) as writer:
            for table in _build_rows(part):
                documents += _documents(table)
                writer.add(table)
        assert writer.written is not None
        yield writer.written, documents


def _windows(indir: Path, manifest: dict[str, Any], window: int, columns: list[str] | None = None
             ) -> Iterator[tuple[pa.Table, list[Source]]]:
    """Windows of input rows (only `columns`, default all), with each row's place (shard file, row in it) for
    findings."""
    pending: list[pa.Table] = []
    sources: list[Source] = []
    for shard in manifest["shards"]:
        path = str(indir / shard["path"])
        pfile = open_shard(indir, shard)
        row = 0
        for group in range(pfile.num_row_groups):
            table = pfile.read_row_group(group, columns=columns or _columns(manifest))
            pending.append(table)
            sources += [Source(path, row + k + 1, len(sources) + k + 1) for k in range(table.num_rows)]
            row += table.num_rows
            while len(sources) >= window:
                whole = pa.concat_tables(pending)
                yield whole.slice(0, window).combine_chunks(), sources[:window]
                pending, sources = [whole.slice(window)], sources[window:]
    if sources:
        yield pa.concat_tables(pending).combine_chunks(), sources
