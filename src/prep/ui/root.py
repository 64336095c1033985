"""The one folder `prep ui` reads and writes: every path the page sends is relative to it, and a path that
leaves it (`..`, an absolute path, a symlink whose target is outside) is refused before anything opens it."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from prep.core.findings import PrepError
from prep.core.options import CONTAINERS

WORK = ".prep-ui"  # the UI's own files under ROOT: uploads' scratch, previews, a run's events and log
_DATA = tuple(f".{c}" for c in CONTAINERS)
_SQUEEZED = (".gz", ".zst")
MAX_LISTED = 5000  # files a listing walks before it stops (a ROOT as large as a home folder still answers)


class Refused(PrepError):
    """A path outside ROOT; the page shows the message, the server answers 403."""


class Root:
    """ROOT, resolved once; `path(rel)` is the only way from a name the page sent to a file."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder).resolve()
        if not self.folder.is_dir():
            raise PrepError(f"{folder}: no such folder (prep ui serves a folder: the current one by default)")

    def path(self, rel: str) -> Path:
        """`rel` under ROOT, or Refused: absolute, a drive, `..`, a NUL byte, or a symlink that leads out."""
        if not isinstance(rel, str) or not rel.strip():
            raise Refused("give a path under ROOT")
        if "\0" in rel or PurePosixPath(rel).is_absolute() or PureWindowsPath(rel).drive or rel.startswith("~"):
            raise Refused(f"{rel}: not under ROOT (give a path relative to {self.folder})")
        if ".." in PurePosixPath(rel.replace("\\", "/")).parts:
            raise Refused(f"{rel}: `..` leaves ROOT; prep ui reads and writes only under {self.folder}")
        full = self.folder / rel
        self.inside(full, rel)
        return full

    def inside(self, full: str | Path, shown: str | None = None) -> Path:
        """`full` itself, when it is under ROOT after following every symlink; else Refused."""
        real = Path(os.path.realpath(full))
        if real != self.folder and self.folder not in real.parents:
            raise Refused(f"{shown or full}: leads outside ROOT ({real}); prep ui reads and writes only under "
                          f"{self.folder}")
        return Path(full)

    def rel(self, full: str | Path) -> str:
        """How the page names `full` (under ROOT)."""
        return Path(os.path.relpath(full, self.folder)).as_posix()

    def listing(self) -> dict[str, list[Any]]:
        """What the pages offer to pick: data files, recipes, tokenizer and model folders, run folders (hidden
        folders and the UI's own left out; symlinks out of ROOT left out)."""
        found: dict[str, list[Any]] = {"data": [], "recipes": [], "tokenizers": [], "models": [], "runs": []}
        seen = 0
        for top, dirs, files in os.walk(self.folder):
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in ("__pycache__", "node_modules"))
            here = Path(top)
            names = set(files)
            if "tokenizer.json" in names or "tokenizer_config.json" in names:
                found["tokenizers"].append(self.rel(here))
            if "config.json" in names and any(n.endswith((".safetensors", ".bin")) for n in names):
                found["models"].append(self.rel(here))
            if "run.json" in names:
                found["runs"].append(self.rel(here))
            for name in sorted(files) if "manifest.json" not in names else ():  # a shard folder's files are its own
                seen += 1
                full = here / name
                if os.path.islink(full) and not _within(full, self.folder):
                    continue
                stem = name[: -len(s)] if (s := next((x for x in _SQUEEZED if name.endswith(x)), "")) else name
                if stem.endswith(_DATA) and not stem.endswith("manifest.json") and name not in (
                        "run.json", "prep-stage.json", "tokenizer.json", "tokenizer_config.json", "config.json"):
                    found["data"].append(self.rel(full))
                elif name.endswith((".yaml", ".yml")):
                    found["recipes"].append(self.rel(full))
            if seen > MAX_LISTED:
                break
        return found


def _within(full: Path, folder: Path) -> bool:
    real = Path(os.path.realpath(full))
    return real == folder or folder in real.parents
