"""Outputs written whole or not at all: the one temporary-name scheme and the one commit/abort protocol.

Every file or folder prep writes is first written under a hidden name beside its target, `.NAME.tmp-PID-…`
(PID: the writing process, so a later run sweeps the names of processes that are gone and never a live
one's), and put in the target's place when it is complete (`Staged`). The one name without a PID is a shard
folder's work in progress, `.NAME.tmp-resume`, which a later run into the same output resumes.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import os
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

TEMP_MARK = ".tmp-"  # what every temporary name holds after the target's name
_RESUME = "resume"


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def user_mode(path: str | Path, folder: bool = False) -> None:
    """Give a file (or folder) made by mkstemp/mkdtemp (0600/0700) the mode the user's umask gives new files:
    a manifest must be as readable as the shards beside it."""
    os.chmod(path, (0o777 if folder else 0o666) & ~_umask())


def _temp_prefix(target: Path) -> str:
    return f".{target.name}{TEMP_MARK}{os.getpid()}-"


def new_temp(target: str | Path, folder: bool = False) -> Path:
    """A new empty file (or folder) named `.NAME.tmp-PID-…` beside `target`, with the user's mode."""
    target = Path(target)
    if folder:
        path = Path(tempfile.mkdtemp(prefix=_temp_prefix(target), dir=target.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=_temp_prefix(target), dir=target.parent)
        os.close(fd)
        path = Path(name)
    user_mode(path, folder)
    return path


def resume_folder(target: str | Path) -> Path:
    """Where the work in progress on `target` is kept for a later run to resume (`.NAME.tmp-resume`): a stable
    name, which sweep_temps leaves alone; its writer holds the output's lock (see locks.locked)."""
    target = Path(target)
    return target.with_name(f".{target.name}{TEMP_MARK}{_RESUME}")


def sweep_temps(target: str | Path) -> None:
    """Remove the temporary files and folders a killed earlier run left beside `target` (their process is gone)."""
    target = Path(target)
    if not target.parent.is_dir():
        return
    for old in target.parent.glob(f".{glob.escape(target.name)}{TEMP_MARK}*"):
        pid = old.name[len(target.name) + 1 + len(TEMP_MARK):].split("-", 1)[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            _remove(old)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return True


def swap_in(new: str | Path, target: str | Path) -> None:
    """Put the finished folder (or file) `new` at `target`, replacing what is there: folders are exchanged
    atomically (Linux renameat2), so a reader or a kill sees the old output or the new one, never neither;
    the old one is then removed."""
    new, target = Path(new), Path(target)
    if not (new.is_dir() and target.is_dir() and not target.is_symlink()):
        os.replace(new, target)
        return
    if not _exchange(new, target):
        old = target.with_name(f"{_temp_prefix(target)}old")
        os.replace(target, old)
        os.replace(new, target)
        new = old
    shutil.rmtree(new, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically exchange two paths (renameat2 RENAME_EXCHANGE); False where the system cannot."""
    import ctypes  # noqa: PLC0415 - only when a folder is replaced

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


_W = TypeVar("_W", bound="AllOrNothing")


class AllOrNothing(ABC):
    """A writer under the commit/abort protocol: `close()` commits what was written, `abort()` removes it; as a
    `with` block, one that ends normally closes and one that raises aborts."""

    @abstractmethod
    def close(self) -> Any:
        """Finish and put the output in place; on any failure, abort."""

    @abstractmethod
    def abort(self) -> None:
        """Remove what was written; the earlier output, if any, is left as it was."""

    def __enter__(self: _W) -> _W:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class Staged(AllOrNothing):
    """The commit/abort protocol of every writer: `path` (a new temporary file or folder beside `target`, or the
    given `at`) is written, then `close()` puts it in the target's place (see swap_in) and `abort()` removes it.
    A close that fails, in its `finish` step (closing a file on a full disk) or in the rename, aborts: no
    half-written output is ever left. Scratch files (a spool) made by `scratch()` are removed either way."""

    def __init__(self, target: str | Path, folder: bool = False, at: Path | None = None) -> None:
        self.target = Path(target)
        self.target.parent.mkdir(parents=True, exist_ok=True)
        sweep_temps(self.target)
        self.path = at or new_temp(self.target, folder)
        self._scratch: list[Path] = []
        self._pending = True

    def scratch(self, folder: bool = False) -> Path:
        """Another temporary file (or folder) beside the target, gone when this one is closed or aborted."""
        path = new_temp(self.target, folder)
        self._scratch.append(path)
        return path

    def close(self, finish: Callable[[], Any] | None = None) -> None:
        """Run `finish` (closing what writes `path`), then put `path` in the target's place."""
        try:
            if finish is not None:
                finish()
            self._drop_scratch()
            swap_in(self.path, self.target)
            self._pending = False
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Remove what was written (nothing, once closed)."""
        if self._pending:
            _remove(self.path)
            self._pending = False
        self._drop_scratch()

    def _drop_scratch(self) -> None:
        while self._scratch:
            _remove(self._scratch.pop())


def link_others(old: Path, new: Path) -> None:
    """Give the folder `new`, about to replace `old`, the files of `old` it does not hold itself (hard links, or
    copies across devices), so swapping it in loses nothing that was beside the replaced files."""
    if not old.is_dir():
        return
    for entry in old.iterdir():
        target = new / entry.name
        if target.exists() or entry.is_dir() or TEMP_MARK in entry.name:
            continue
        try:
            os.link(entry, target, follow_symlinks=False)
        except OSError:
            shutil.copy2(entry, target, follow_symlinks=False)


@contextlib.contextmanager
def replaced(path: str | Path, folder: bool = False) -> Iterator[Path]:
    """A temporary file (or empty folder) beside `path` to write in the block; put in place of `path` when the
    block ends, removed if it fails (see Staged): readers see the old output or the new one, never half of it."""
    with Staged(path, folder) as staged:
        yield staged.path


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write `text` under a temporary name beside `path` and rename it into place (manifests, reports, stamps)."""
    with replaced(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | Path, value: Any) -> None:
    """JSON written atomically (see write_text_atomic): manifests, journals, reports, stamps."""
    write_text_atomic(path, json.dumps(value, indent=2, ensure_ascii=False) + "\n")
