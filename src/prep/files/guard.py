"""Refusing, before a verb reads or writes anything, outputs that would destroy what it reads or writes.

The names a layer writes inside its output folders belong to that layer, which registers them with
`reserve` when it is imported (shards.layout: manifest, journal, data; stages.split: its two files;
recipes.runner: its stamp); this layer imports nothing above it. So what is guarded is what the code loaded
in the process can write.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterable
from pathlib import Path

from prep.core.findings import PrepError
from prep.files.errors import ERRNO_WORDS

_RESERVED: dict[str, None] = {}  # names written inside output folders, in the order registered
_FOLDER_KINDS: list[Callable[[Path], bool]] = []  # each tells a folder of one kind prep writes


def reserve(*names: str, kind: Callable[[Path], bool] | None = None) -> None:
    """Register `names` as written by their layer inside its output folders: no other output may be one of them.
    `kind` tells a folder that layer wrote (shards): no output may go inside such a folder when it is read."""
    _RESERVED.update(dict.fromkeys(names))
    if kind is not None and kind not in _FOLDER_KINDS:
        _FOLDER_KINDS.append(kind)


def written_by_prep(path: str | Path) -> bool:
    """A folder of a kind registered with `reserve` (shards: finished, or an interrupted run's)."""
    return any(kind(Path(path)) for kind in _FOLDER_KINDS)


def _real(path: str) -> tuple[Path, tuple[int, int] | None]:
    real = Path(os.path.realpath(path))
    try:
        st = os.stat(path)
    except OSError:
        return real, None
    return real, (st.st_dev, st.st_ino)


_LOOP = "a symlink loop"
_KINDS = ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO"),
          (stat.S_ISSOCK, "a socket"))


def _special(path: str) -> str | None:
    """What makes `path` no place for an output: a device, FIFO or socket, a symlink to one, or a symlink loop
    (None: a regular file, a folder, a symlink to either, or nothing yet)."""
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        return _LOOP if e.errno == errno.ELOOP else None
    what = next((name for test, name in _KINDS if test(mode)), None)
    if what and os.path.islink(path):
        return f"a symlink to {what}"
    return what


def _within(path: Path, folder: Path) -> bool:
    return path != folder and path.is_relative_to(folder)


def is_within(path: str | Path, folder: str | Path) -> bool:
    """Whether `path` lies inside `folder` (through symlinks too)."""
    return _within(Path(os.path.realpath(path)), Path(os.path.realpath(folder)))


def check_outputs(inputs: Iterable[str | Path | None], outputs: dict[str, str | Path | None]) -> None:
    """Refuse, before anything is read or written, outputs that would destroy what the run reads or writes: an
    output (`outputs`: option -> path) that is an input (the same file through symlinks or hard links), one that is
    another output, one inside an input folder prep wrote (shards), one inside an output folder where that folder's
    own files go (see reserve), and an output folder holding an input."""
    ins = [(str(i), *_real(str(i))) for i in inputs if i is not None and str(i) != "-" and os.path.exists(i)]
    outs = [(flag, str(o), *_real(str(o))) for flag, o in outputs.items() if o is not None and str(o) != "-"]
    for flag, given, *_ in outs:
        special = _special(given)
        if special == _LOOP:
            raise PrepError(f"{flag} {given}: {ERRNO_WORDS[errno.ELOOP]}")
        if special:
            raise PrepError(f"{flag} {given} is {special}: prep writes a new file and renames it into place, which "
                            "would replace it; give the path of a regular file (or `-` for standard output)")
    for flag, given, real, ident in outs:
        for name, in_real, in_ident in ins:
            if real == in_real or (ident is not None and ident == in_ident):
                raise PrepError(f"{flag} {given} is the input {name}: writing it would destroy what is read; "
                                "write somewhere else")
            if _within(real, in_real) and written_by_prep(in_real):
                raise PrepError(f"{flag} {given} is inside the input folder {name}; write somewhere else")
            if _within(in_real, real) and os.path.isdir(real):
                raise PrepError(f"the input {name} is inside the output folder {flag} {given}, which the run "
                                "replaces; write somewhere else")
    for k, (flag, given, real, ident) in enumerate(outs):
        for flag2, given2, real2, ident2 in outs[k + 1:]:
            if real == real2 or (ident is not None and ident == ident2):
                raise PrepError(f"{flag} and {flag2} are the same file ({given}); give each its own path")
            for (f1, g1, r1), (f2, g2, r2) in (((flag, given, real), (flag2, given2, real2)),
                                               ((flag2, given2, real2), (flag, given, real))):
                if _within(r2, r1) and r2.relative_to(r1).parts[0] in _RESERVED:
                    raise PrepError(f"{f2} {g2} would overwrite {r2.relative_to(r1).parts[0]} of the output "
                                    f"folder {f1} {g1}; give it another path")
