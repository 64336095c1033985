"""`prep pack`: unpacked token shards in, rows of at most `max_len` tokens out (the algorithms are in
prep.shards.packing)."""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from prep.core.findings import PrepError, Source
from prep.core.options import check
from prep.core.result import Meter, ProgressFn, Result, outputs
from prep.files import check_outputs, sha256_file
from prep.shards.layout import MANIFEST, SCHEMAS, read_manifest
from prep.shards.packing import Wrapper, bfd_window, check_lengths
from prep.shards.reader import open_shard
from prep.shards.writer import ShardWriter

DEFAULT_WINDOW = 100_000
_SCHEMA = SCHEMAS["sft"]


@dataclass
class PackResult(Result):
    manifest: dict[str, Any] = field(default_factory=dict)

    def details(self) -> dict[str, Any]:
        return {"manifest": self.manifest}


def pack(shards: str | Path, output: str | Path, max_len: int, *, strategy: str = "bfd", seed: int = 0,
         window: int = DEFAULT_WINDOW, shard_rows: int = 100_000, shard_mb: float = 256.0,
         rejects: str | None = None, progress: ProgressFn | None = None) -> PackResult:
    """Pack the unpacked shards in `shards` into rows of at most `max_len` tokens in `output`."""
    check("pack", {"max_len": max_len, "strategy": strategy, "seed": seed, "window": window, "rejects": rejects})
    source = read_manifest(shards)
    if source["kind"] not in ("sft", "pretrain"):
        raise PrepError(f"{shards}: {source['kind']} shards are not packed (pairs and prompts are trained row by row)")
    if (source.get("packing") or {}).get("strategy", "none") != "none":
        raise PrepError(f"{shards}: these shards are packed already ({source['packing']['strategy']}); pack the "
                        f"unpacked folder they came from ({(source.get('source') or {}).get('path', 'prep tokenize')})")
    check_outputs([shards], {"-o": output, "--rejects": rejects})
    window = window or 2**62
    options = {"max_len": max_len, "strategy": strategy, "seed": seed, "window": window, "shard_rows": shard_rows,
               "shard_mb": shard_mb}
    source_sha = sha256_file(Path(shards) / MANIFEST)
    meta = {k: v for k, v in source.items() if k in ("tokenizer", "template", "train_on", "overflow", "inputs")}
    meta.update(max_len=max_len, packing={"strategy": strategy, "seed": seed, "window": window},
                source={"path": str(shards), "manifest_sha256": source_sha, "counts": source["counts"]})
    key = hashlib.sha256(json.dumps([source_sha, options, meta], sort_keys=True).encode()).hexdigest()
    policy = source.get("overflow") or "drop"
    rng = random.Random(seed)
    wrapper = Wrapper(max_len) if strategy == "wrap" else None
    meter = Meter(progress)
    with ShardWriter(output, source["kind"], meta, rejects=rejects, shard_rows=shard_rows, shard_mb=shard_mb,
                     resume_key=key) as writer:
        for table, sources in _windows(Path(shards), source, window):
            meter.add(table.num_rows, int(pc.sum(table["num_tokens"]).as_py() or 0))
            # wrap cuts documents wherever the blocks end, so no document is too long for it
            table, docs = check_lengths(table, sources, max_len if wrapper is None else 2**62, policy)
            writer.account(docs)
            packed = wrapper.add(table) if wrapper else bfd_window(table, max_len, rng)
            if packed is not None:
                writer.add(packed)
        if wrapper and (last := wrapper.add(None)) is not None:
            writer.add(last)
    manifest = read_manifest(output)
    carried = source.get("carried") or []
    notes = [f"carried columns {', '.join(carried)} are not packed (a packed row holds several documents); they "
             f"stay in {shards}, found by each document's id"] if carried else []
    return PackResult(tally=writer.tally, outputs=outputs(output=output, rejects=rejects),
                      manifest=manifest, notes=notes)


def _windows(indir: Path, manifest: dict[str, Any], window: int) -> Iterator[tuple[pa.Table, list[Source]]]:
    """Windows of input rows, with each row's place (shard file, row in it) for findings."""
    pending: list[pa.Table] = []
    sources: list[Source] = []
    for shard in manifest["shards"]:
        path = str(indir / shard["path"])
        pfile = open_shard(indir, shard)
        row = 0
        for group in range(pfile.num_row_groups):
            table = pfile.read_row_group(group, columns=list(_SCHEMA.names))
            pending.append(table)
            sources += [Source(path, row + k + 1, len(sources) + k + 1) for k in range(table.num_rows)]
            row += table.num_rows
            while len(sources) >= window:
                whole = pa.concat_tables(pending)
                yield whole.slice(0, window).combine_chunks(), sources[:window]
                pending, sources = [whole.slice(window)], sources[window:]
    if sources:
        yield pa.concat_tables(pending).combine_chunks(), sources
