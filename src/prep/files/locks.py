"""One writer per output: an advisory lock beside it (`.NAME.lock`) for as long as it is written."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from prep.core.findings import PrepError

LOCK_SUFFIX = ".lock"


@contextlib.contextmanager
def locked(target: str | Path) -> Iterator[None]:
    """Hold the advisory lock of the output `target` (a hidden `.NAME.lock` beside it, holding our pid, under
    fcntl.flock) while the block runs: a second run into the same output is refused, naming the holder. The
    kernel drops the lock of a process that dies, so a lock left by a killed run is simply taken over."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    path = target.parent / f".{target.name}{LOCK_SUFFIX}"
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            raise PrepError(f"{target} is being written by another prep run (pid {holder}, lock {path}); wait for "
                            "it to finish, or write somewhere else") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:  # else the holder removed the file as we opened it: lock the new one
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
        os.close(fd)
