"""The `prep` command's process: the console script and `python -m prep` start here.

The Rust tokenizer allocates and frees a small buffer for nearly every word it touches, and under glibc's malloc
that is a third of its work (19,980 alpaca chats, one thread: 1.83 CPU-s, of which malloc and free ~0.6; 1.05 CPU-s
under mimalloc, 1.32 under jemalloc). A library loads its own allocator only before the process starts
(`LD_PRELOAD`), so a verb that tokenizes many rows (`FAST_MALLOC_VERBS`) starts itself again, at once, before any
import, with mimalloc (or else jemalloc) preloaded when the machine has one (`MALLOC_LIBRARIES`; Debian and Ubuntu:
`apt-get install libmimalloc2.0`), after any library `LD_PRELOAD` already names. The new process takes the same
arguments, standard streams and process id (what the interpreter or the loader print as they start, such as
`-X importtime`, shows twice); it puts `LD_PRELOAD` back as it was, so nothing it starts inherits the allocator.
`PREP_MALLOC` names another library to preload, or `system` to keep glibc's. Nothing prep writes depends on the
allocator: it changes only the time.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Mapping, MutableMapping, Sequence

FAST_MALLOC_VERBS = frozenset({"tokenize"})
# mimalloc first (a fifth less CPU than jemalloc here), where Debian, Ubuntu, Fedora and a source build install them
MALLOC_LIBRARIES = tuple(f"{folder}/lib{name}.so.2" for name in ("mimalloc", "jemalloc") for folder in (
    f"/usr/lib/{getattr(sys.implementation, '_multiarch', '')}", "/usr/lib64", "/usr/local/lib"))
_BEFORE = "_PREP_LD_PRELOAD"  # in the process started again: what LD_PRELOAD was before it


def main() -> None:
    """Run the `prep` command, in a process started again with a faster allocator where that pays (see above)."""
    restarted = with_fast_malloc(sys.argv, os.environ)
    # only a process that is this command (not a program that called main() with argv of its own) starts again
    if restarted is not None and sys.orig_argv[len(sys.orig_argv) - len(sys.argv) + 1:] == sys.argv[1:]:
        sys.stdout.flush()
        with contextlib.suppress(OSError):  # not started again: the same run, with the system's allocator
            os.execve(sys.executable, sys.orig_argv, restarted)
    put_back_preload(os.environ)
    from prep.cli import run  # noqa: PLC0415 - after the decision: a process started again imports it once

    run()


def with_fast_malloc(argv: Sequence[str], environ: Mapping[str, str]) -> dict[str, str] | None:
    """The environment to start this command again in, with a faster allocator preloaded after whatever `LD_PRELOAD`
    holds (a user's own allocator or sanitizer comes first and wins); None to run it as it is: not Linux, not a verb
    in FAST_MALLOC_VERBS, already started again, `PREP_MALLOC=system`, or no library found. `PREP_MALLOC` is a path
    to a shared library (a path that is not one is said on stderr and left out), or a bare file name the dynamic
    loader looks for in its own folders."""
    verb = next((a for a in argv[1:] if not a.startswith("-")), None)
    if not sys.platform.startswith("linux") or verb not in FAST_MALLOC_VERBS or _BEFORE in environ:
        return None
    wanted = environ.get("PREP_MALLOC", "")
    if wanted == "system":
        return None
    if "/" in wanted:
        if not _shared_library(wanted):
            print(f"prep: PREP_MALLOC={wanted} is not a shared library; running with the system's malloc (set "
                  "PREP_MALLOC to a malloc library's path, such as /usr/lib/x86_64-linux-gnu/libmimalloc.so.2, or to "
                  "'system')", file=sys.stderr)
            return None
        wanted = os.path.abspath(wanted)
    library = wanted or next((p for p in MALLOC_LIBRARIES if os.path.isfile(p)), None)
    before = environ.get("LD_PRELOAD", "")
    if library is None or library in before.replace(":", " ").split():
        return None
    return {**environ, "LD_PRELOAD": f"{before} {library}".strip(), _BEFORE: before}


def _shared_library(path: str) -> bool:
    """Whether `path` is an ELF file (what the dynamic loader can preload)."""
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


def put_back_preload(environ: MutableMapping[str, str]) -> None:
    """In a process `with_fast_malloc` started again: `LD_PRELOAD` as it was before (the allocator stays loaded), so
    the processes it starts (a Ray cluster's, a tool's) inherit none."""
    if _BEFORE in environ:
        before = environ.pop(_BEFORE)
        if before:
            environ["LD_PRELOAD"] = before
        else:
            environ.pop("LD_PRELOAD", None)


if __name__ == "__main__":
    main()
