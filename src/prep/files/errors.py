"""Operating-system errors in one line each: the path, and what to do by the error's class."""

from __future__ import annotations

import errno
import os
import re

from prep.files.atomic import TEMP_MARK
from prep.files.locks import LOCK_SUFFIX

ERRNO_WORDS = {
    errno.ENOSPC: "no space left on the device; free some space or write to another disk",
    errno.EDQUOT: "disk quota exceeded; free some space or write to another disk",
    errno.EFBIG: "the file is larger than the file system allows; write to another disk",
    errno.EROFS: "the file system is read-only; write somewhere else",
    errno.EISDIR: "is a folder where a file is needed; give a file name",
    errno.ENOTDIR: "a part of the path is a file where a folder is needed",
    errno.ELOOP: "too many levels of symbolic links (a symlink loop); fix the link or give the real path",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOENT: "no such file or folder",
    errno.EEXIST: "already exists",
    errno.ENAMETOOLONG: "the file name is too long",
    errno.EMFILE: "too many open files; raise the limit (ulimit -n)",
    errno.EIO: "input/output error: the disk or the file system failed",
}

# prep's own names beside an output (atomic's temporary names, locks' lock), to show as the output itself
_OWN_NAME = re.compile(rf"^\.(.+?)(?:{re.escape(TEMP_MARK)}.*|{re.escape(LOCK_SUFFIX)})$")


def os_error_message(e: OSError) -> str:
    """One line for an operating-system error: the path and what to do, by its class (no space, read-only, a symlink
    loop, ...). prep's own temporary names are shown as the output they stand for."""
    code, where = e.errno or 0, "" if e.filename is None else str(e.filename)
    if where and code in (errno.EEXIST, errno.ENOENT) and looping(where):
        code = errno.ELOOP
    if where and (own := _OWN_NAME.match(os.path.basename(where))):
        where = os.path.join(os.path.dirname(where), own.group(1))
    words = ERRNO_WORDS.get(code) or (e.strerror or str(e))
    return f"{where}: {words}" if where else words


def looping(path: str) -> bool:
    """Whether resolving `path` (or a folder above it) runs into a symlink loop."""
    try:
        os.stat(path)
    except OSError as e:
        return e.errno == errno.ELOOP
    return False
