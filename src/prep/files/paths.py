"""What a path's name says: its container and compression (`a.jsonl.zst`), its stem, how it is shown."""

from __future__ import annotations

from pathlib import Path

_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv",
             ".parquet": "parquet", ".txt": "txt", ".text": "txt"}
_COMPRESSIONS = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd"}


def display_name(path: str) -> str:
    return "<stdin>" if path == "-" else path


def split_suffix(path: str) -> tuple[str | None, str | None]:
    """(container, compression) named by a path's suffixes, e.g. `a.jsonl.zst` -> ("jsonl", "zstd")."""
    suffixes = [s.lower() for s in Path(path).suffixes]
    compression = _COMPRESSIONS.get(suffixes[-1]) if suffixes else None
    if compression:
        suffixes = suffixes[:-1]
    return (_SUFFIXES.get(suffixes[-1]) if suffixes else None), compression


def stem(path: str) -> str:
    """A path's name without the suffixes `split_suffix` reads, e.g. `a.jsonl.zst` -> `a` (`a.txt.bak` stays)."""
    name = Path(path).name
    for known in (_COMPRESSIONS, _SUFFIXES):
        suffix = Path(name).suffix
        if suffix.lower() in known:
            name = name[:-len(suffix)]
    return name
