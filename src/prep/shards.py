"""Token shards on disk (DESIGN §5): `data/shard-NNNNN.parquet` (zstd) plus `manifest.json`.

Each shard is written under a temporary name and renamed when complete; the manifest (counts,
token totals, every shard's sha256) is written last and atomically, so a folder with a manifest
is a finished dataset and one without is not. Row groups have a fixed size, so the bytes depend
only on the rows, never on how the stages batched them: same inputs + options, same shards.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from prep import __version__
from prep.files import RowWriter, sha256_file
from prep.findings import Batch, PrepError, Tally

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
DATA_DIR = "data"
ROW_GROUP_ROWS = 4096
_IDS = pa.list_(pa.int32())
_COMMON = [("num_tokens", pa.int32()), ("ids", pa.list_(pa.string()))]
_TOKENS = pa.schema([("input_ids", _IDS), ("labels", _IDS), ("seq_lengths", _IDS), ("num_tokens", pa.int32()),
                     ("num_loss_tokens", pa.int32()), ("ids", pa.list_(pa.string()))])
SCHEMAS: dict[str, pa.Schema] = {
    "sft": _TOKENS,
    "pretrain": _TOKENS,
    "dpo": pa.schema([("prompt_input_ids", _IDS), ("chosen_input_ids", _IDS), ("rejected_input_ids", _IDS), *_COMMON]),
    "kto": pa.schema([("prompt_input_ids", _IDS), ("completion_input_ids", _IDS), ("label", pa.bool_()), *_COMMON]),
}
KINDS = tuple(SCHEMAS)


def shard_name(index: int) -> str:
    return f"{DATA_DIR}/shard-{index:05d}.parquet"


class ShardWriter:
    """Writes rows of one kind into size-bounded shards and, on success, the manifest.

    `meta` is what the producing stage knows (tokenizer fingerprint, template, train_on, max_len,
    overflow, packing, inputs, options); the writer adds counts, token totals and the shard list.
    """

    def __init__(self, outdir: str | Path, kind: str, meta: dict[str, Any], *, rejects: str | None = None,
                 shard_rows: int = 100_000, shard_mb: float = 256.0) -> None:
        if kind not in SCHEMAS:
            raise PrepError(f"unknown shard kind {kind!r}; one of {', '.join(KINDS)}")
        if shard_rows < 1 or shard_mb <= 0:
            raise PrepError("shard size must be positive")
        self.outdir, self.kind, self.meta = Path(outdir), kind, meta
        self.schema = SCHEMAS[kind]
        self.shard_rows, self.shard_bytes = shard_rows, int(shard_mb * 1024 * 1024)
        self.tally = Tally()
        self.tokens = self.loss_tokens = 0
        self.shards: list[dict[str, Any]] = []
        self.pending: list[dict[str, Any]] = []
        self._writer: pq.ParquetWriter | None = None
        self._rows = self._bytes = self._tokens = 0
        (self.outdir / DATA_DIR).mkdir(parents=True, exist_ok=True)
        (self.outdir / MANIFEST).unlink(missing_ok=True)  # the folder is unfinished until we say otherwise
        self.rejects = RowWriter(rejects, "jsonl") if rejects else None

    def write(self, batch: Batch[dict[str, Any]]) -> None:
        """Take a batch at the end of the pipeline: rows go to shards, rejects and alterations are kept."""
        self.tally.count(batch)
        if self.rejects:
            self.rejects.write([r.to_dict() for r in batch.rejects] + [a.to_dict(written=True) for a in batch.altered])
        for row in batch.items:
            self.pending.append(row)
            n = row["num_tokens"]
            self.tokens += n
            self.loss_tokens += row.get("num_loss_tokens", 0)
            self._rows += 1
            self._tokens += n
            self._bytes += 8 * n + 64  # ids and labels as int32, plus per-row overhead: an estimate
            if len(self.pending) >= ROW_GROUP_ROWS:
                self._flush_group()
            if self._rows >= self.shard_rows or self._bytes >= self.shard_bytes:
                self._close_shard()

    def _flush_group(self) -> None:
        if not self.pending:
            return
        if self._writer is None:
            self._tmp = self.outdir / f"{shard_name(len(self.shards))}.tmp"
            self._writer = pq.ParquetWriter(self._tmp, self.schema, compression="zstd")
        self._writer.write_table(pa.Table.from_pylist(self.pending, schema=self.schema))
        self.pending = []

    def _close_shard(self) -> None:
        self._flush_group()
        if self._writer is None:
            return
        self._writer.close()
        self._writer = None
        final = self.outdir / shard_name(len(self.shards))
        os.replace(self._tmp, final)
        self.shards.append({"path": shard_name(len(self.shards)), "sha256": sha256_file(final), "rows": self._rows,
                            "tokens": self._tokens, "bytes": final.stat().st_size})
        self._rows = self._bytes = self._tokens = 0

    def close(self) -> dict[str, Any]:
        """Finish the last shard, drop stale shards of an earlier run, write the manifest last."""
        self._close_shard()
        keep = {s["path"] for s in self.shards}
        for old in (self.outdir / DATA_DIR).glob("shard-*.parquet*"):
            if f"{DATA_DIR}/{old.name}" not in keep:
                old.unlink()
        if self.rejects:
            self.rejects.close()
        manifest = self.manifest()
        tmp = self.outdir / f".{MANIFEST}.tmp"
        tmp.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(tmp, self.outdir / MANIFEST)
        return manifest

    def manifest(self) -> dict[str, Any]:
        packing = dict(self.meta.get("packing") or {"strategy": "none"})
        max_len = self.meta.get("max_len")
        if packing.get("strategy", "none") != "none" and max_len and self.tally.written:
            packing["efficiency"] = round(self.tokens / (self.tally.written * max_len), 6)
        return {
            "schema_version": SCHEMA_VERSION,
            "prep_version": __version__,
            "kind": self.kind,
            **{k: v for k, v in self.meta.items() if k != "packing"},
            "packing": packing,
            "columns": {f.name: str(f.type) for f in self.schema},
            "counts": self.tally.to_dict(),
            "tokens": {"total": self.tokens, "loss": self.loss_tokens},
            "shards": self.shards,
        }

    def abort(self) -> None:
        """Remove the shard being written; finished shards stay for a re-run to check, no manifest is written."""
        if self._writer is not None:
            self._writer.close()
            self._tmp.unlink(missing_ok=True)
            self._writer = None
        if self.rejects:
            self.rejects.abort()

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The manifest of a finished shard folder, or a PrepError saying why there is none."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise PrepError(f"{folder}: no {MANIFEST}; not a finished shard folder (was the run interrupted?)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise PrepError(f"{path}: not valid JSON: {e}") from None
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise PrepError(f"{path}: schema version {manifest.get('schema_version')!r}, this prep reads {SCHEMA_VERSION}")
    return manifest


def iter_tables(folder: str | Path, columns: list[str] | None = None) -> Iterator[pa.Table]:
    """The shards of a finished folder, in manifest order, one row group at a time."""
    folder = Path(folder)
    for shard in read_manifest(folder)["shards"]:
        pfile = pq.ParquetFile(folder / shard["path"])
        for i in range(pfile.num_row_groups):
            yield pfile.read_row_group(i, columns=columns)
