"""Reading a finished shard folder: its tables in manifest order, or one row. Every shard's size and sha256 are
checked against the manifest before it is read: a changed or corrupted shard is refused by name, never read on
into a new dataset."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from prep.core.findings import PrepError
from prep.files.hashing import sha256_file
from prep.shards.layout import read_manifest


def open_shard(folder: str | Path, shard: dict[str, Any]) -> pq.ParquetFile:
    """One shard of a folder's manifest, once its size and sha256 match the manifest's."""
    path = Path(folder) / shard["path"]
    problem = shard_problem(folder, shard)
    if problem:
        raise PrepError(f"{path}: {problem}; the folder cannot be trusted: run `prep verify {folder}` and rebuild it "
                        "with the command that made it")
    return pq.ParquetFile(path)


def shard_problem(folder: str | Path, shard: dict[str, Any]) -> str | None:
    """Why a shard listed in the manifest is not the one the manifest describes (None: it is)."""
    path = Path(folder) / shard["path"]
    if not path.is_file():
        return "listed in the manifest but missing"
    size = path.stat().st_size
    if size != shard.get("bytes"):
        return f"{size} bytes, the manifest says {shard.get('bytes')} (truncated or replaced)"
    if sha256_file(path) != shard.get("sha256"):
        return "sha256 differs from the manifest: the shard was changed or corrupted"
    return None


def folder_problem(folder: str | Path) -> str | None:
    """Why a finished shard folder is not what its manifest says, by size and sha256 of every shard (None: it
    is): what `prep run` checks before a later stage reads a stage it skipped."""
    try:
        manifest = read_manifest(folder)
    except PrepError as e:
        return str(e)
    for shard in manifest.get("shards", []):
        if problem := shard_problem(folder, shard):
            return f"{Path(folder) / shard['path']}: {problem}"
    return None


def iter_tables(folder: str | Path, columns: list[str] | None = None) -> Iterator[pa.Table]:
    """The shards of a finished folder, in manifest order, one row group at a time."""
    folder = Path(folder)
    for shard in read_manifest(folder)["shards"]:
        pfile = open_shard(folder, shard)
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
            pfile = open_shard(folder, shard)
            for group in range(pfile.num_row_groups):  # one row group read, not the whole shard
                rows = pfile.metadata.row_group(group).num_rows
                if index < rows:
                    return pfile.read_row_group(group).slice(index, 1).to_pylist()[0]
                index -= rows
            break
        index -= shard["rows"]
    raise PrepError(f"{folder}: the manifest lists fewer rows than it counts; run `prep verify`")


def take_rows(path: str | Path, rows: np.ndarray, columns: list[str] | None = None) -> pa.Table:
    """Rows `rows` (0-based, in this order, repeats allowed) of one shard file, reading only the row groups that
    hold them."""
    pfile = pq.ParquetFile(path)
    sizes = [pfile.metadata.row_group(g).num_rows for g in range(pfile.num_row_groups)]
    starts = np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)
    group_of = np.searchsorted(starts, rows, side="right") - 1
    groups = np.unique(group_of)
    table = pfile.read_row_groups(groups.tolist(), columns=columns)
    # where each wanted row sits in the groups read: its row minus the rows of the groups skipped before it
    read_before = np.concatenate(([0], np.cumsum(np.array(sizes)[groups])))[:-1]
    offset = np.zeros(len(sizes), np.int64)
    offset[groups] = starts[groups] - read_before
    index = rows - offset[group_of]
    return table.take(pa.array(index, pa.int64()))
