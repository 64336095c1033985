"""Where things are in a shard folder and what its files hold (design §5): `manifest.json` plus
`data/shard-NNNNN.parquet` (zstd), the Arrow schema of each kind, and how a packed row's
documents are told apart."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prep.core.columns import SHARD_KINDS, schema
from prep.core.findings import PrepError
from prep.files.guard import reserve
from prep.files.media_out import MEDIA_DIR

if TYPE_CHECKING:
    import pyarrow as pa

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
JOURNAL = ".journal.json"
DATA_DIR = "data"
ROW_GROUP_ROWS = 4096
KINDS = SHARD_KINDS


class _Schemas(Mapping[str, "pa.Schema"]):
    """The Arrow schema of each shard kind, built on first use: `prep` imports this module before any verb runs
    (its names are guarded, see is_shard_folder), and verbs that never touch shards do not load Arrow."""

    def __getitem__(self, kind: str) -> pa.Schema:
        if kind not in SHARD_KINDS:
            raise KeyError(kind)
        return schema(kind)

    def __iter__(self) -> Iterator[str]:
        return iter(SHARD_KINDS)

    def __len__(self) -> int:
        return len(SHARD_KINDS)


SCHEMAS = _Schemas()


def is_shard_folder(path: str | Path) -> bool:
    """A folder prep wrote shards into (finished, or an interrupted run's)."""
    p = Path(path)
    return p.is_dir() and ((p / MANIFEST).is_file() or (p / DATA_DIR).is_dir() or (p / JOURNAL).exists())


# No other output may be written over these, nor inside a shard folder being read (files.guard).
reserve(MANIFEST, JOURNAL, DATA_DIR, MEDIA_DIR, kind=is_shard_folder)


def position_ids(seq_lengths: list[int]) -> list[int]:
    """Position ids for a packed row: they restart at 0 for every document, which is what keeps
    documents from attending to each other (transformers derives the block mask from them)."""
    return [p for n in seq_lengths for p in range(n)]


def shard_name(index: int) -> str:
    return f"{DATA_DIR}/shard-{index:05d}.parquet"


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
