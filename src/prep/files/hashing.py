"""Fingerprints and the cache between runs: the sha256 of a file's bytes (inputs, shards, tokenizer files), hashed
once per process for a settled file, and JSON values kept under the user's cache folder."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from prep.files.atomic import write_json

_SETTLED_NS = 5_000_000_000


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes (inputs, shards and tokenizer files are fingerprinted). A file last modified
    more than a few seconds ago is hashed once per process (by identity, size and modification time): a run that
    names an input or a tokenizer file twice reads it once. A fresh file is always read: a change within the
    clock's resolution would not show in its modification time."""
    st = os.stat(path)
    if time.time_ns() - st.st_mtime_ns < _SETTLED_NS:
        return _sha256(str(path), chunk)
    return _settled_sha256(os.path.realpath(path), st.st_size, st.st_mtime_ns, st.st_ino, chunk)


@functools.lru_cache(maxsize=4096)
def _settled_sha256(path: str, size: int, mtime_ns: int, inode: int, chunk: int) -> str:
    return _sha256(path, chunk)


def _sha256(path: str, chunk: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_kept(path: str | Path) -> str:
    """The sha256 of a file that every run reads before it starts (a tokenizer's files: qwen2.5's 18 MB
    tokenizer.json takes 40 ms to hash, a tenth of a one-row `prep tokenize`'s start-up), kept between runs under
    the cache by the file's path, device, inode, size and modification and change times: new bytes move its
    change time, which no tool sets back. A file changed in the last few seconds is hashed. Not for what `verify`
    checks (a shard's bytes can rot with its times unchanged)."""
    st = os.stat(path)
    if time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) < _SETTLED_NS:
        return _sha256(str(path), 1 << 20)
    real = os.path.realpath(path)
    key = f"{real}\0{st.st_dev}\0{st.st_ino}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}"
    cache = cache_path("sha256", hashlib.sha256(key.encode()).hexdigest() + ".json")
    kept = read_cache(cache)
    if isinstance(kept, str):
        return kept
    digest = _sha256(real, 1 << 20)
    write_cache(cache, digest)
    return digest


def cache_path(kind: str, name: str) -> Path:
    """Where prep keeps `name` of `kind` between runs: under $PREP_CACHE, else $XDG_CACHE_HOME/prep, else
    ~/.cache/prep. Everything there can be deleted at any time."""
    root = os.environ.get("PREP_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "prep"
    return Path(root) / kind / name


def read_cache(path: Path) -> Any:
    """A cached JSON value, or None when there is none (or it cannot be read)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def write_cache(path: Path, value: Any) -> None:
    """Cache a JSON value; a cache that cannot be written (a read-only home) only costs the next run time."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, value)
    except OSError:
        pass
