"""Reading a finished shard folder: its tables in manifest order, or one row."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from prep.core.findings import PrepError
from prep.shards.layout import read_manifest


def iter_tables(folder: str | Path, columns: list[str] | None = None) -> Iterator[pa.Table]:
    """The shards of a finished folder, in manifest order, one row group at a time."""
    folder = Path(folder)
    for shard in read_manifest(folder)["shards"]:
        pfile = pq.ParquetFile(folder / shard["path"])
        for i in range(pfile.num_row_groups):
            yield pfile.read_row_group(i, columns=columns)


def read_row(folder: str | Path, index: int) -> dict[str, Any]:
    """Row `index` (0-based, counted across shards in manifest order) of a shard folder."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    total = manifest["counts"]["rows"]
    if not 0 <= index < total:
        raise PrepError(f"{folder}: row {index} does not exist; rows are 0 to {total - 1}")
    for shard in manifest["shards"]:
        if index < shard["rows"]:
            pfile = pq.ParquetFile(folder / shard["path"])
            for group in range(pfile.num_row_groups):  # one row group read, not the whole shard
                rows = pfile.metadata.row_group(group).num_rows
                if index < rows:
                    return pfile.read_row_group(group).slice(index, 1).to_pylist()[0]
                index -= rows
            break
        index -= shard["rows"]
    raise PrepError(f"{folder}: the manifest lists fewer rows than it counts; run `prep verify`")
