"""Rows in and out of files: .jsonl .json .csv .tsv .parquet .txt, optionally .gz/.zst, and `-`.

Readers stream (a 2 GB JSONL never sits in memory) and turn a broken line into a `Reject` with its
line number instead of stopping. Writers write to a temporary name and rename on success, so a
failed run never leaves half a file behind.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import errno
import fcntl
import functools
import glob
import gzip
import hashlib
import io
import itertools
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import msgspec

from prep.core.findings import Batch, Finding, PrepError, Source
from prep.core.options import CONTAINERS, MAX_ROW_BYTES

if TYPE_CHECKING:
    import pyarrow as pa

_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv",
             ".parquet": "parquet", ".txt": "txt", ".text": "txt"}
_COMPRESSIONS = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd"}
# A top-level JSON object whose value under one of these keys is an array is a container of rows
# (CoQA's {"version", "data": [...]}, exports with "rows"/"examples"); any other object is one row.
CONTAINER_KEYS = ("data", "rows", "examples", "records", "instances", "items", "train")
BATCH_ROWS = 1024
_UTF8_BOM = codecs.BOM_UTF8
_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
_ENCODING_HINT = "re-encode the file as UTF-8, e.g. `iconv -f latin1 -t utf-8 IN > OUT`"

_BLANKS = re.compile(r"[ \t\r\n]*")
# UTF-8 text cannot hold a UTF-16 surrogate, so a decoded JSON value holds one only through an escape like
# \ud800: rows whose text has none (nearly all) are not walked.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_BLANK_CHARS = " \t\r\n"
# After a value in an array: the comma and the blanks around it, so the next value can be read at once.
_NEXT_ELEMENT = re.compile(r"[ \t\r\n]*,[ \t\r\n]*")

csv.field_size_limit(2**31 - 1)


def _arrow() -> Any:
    """pyarrow, imported on first use: it costs a quarter second at start-up, and plain
    JSONL/CSV runs never need it."""
    import pyarrow  # noqa: PLC0415 - start-up time: Arrow only for Parquet and zstd

    return pyarrow


def _arrow_errors() -> tuple[type[Exception], ...]:
    """Arrow's exceptions, if Arrow is in use (it cannot have raised anything otherwise)."""
    return (sys.modules["pyarrow"].ArrowException,) if "pyarrow" in sys.modules else ()


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes (inputs, shards and tokenizer files are fingerprinted). A file last modified
    more than a few seconds ago is hashed once per process (by identity, size and modification time): a run that
    names an input or a tokenizer file twice reads it once. A fresh file is always read: a change within the
    clock's resolution would not show in its modification time."""
    st = os.stat(path)
    if time.time_ns() - st.st_mtime_ns < _SETTLED_NS:
        return _sha256(str(path), chunk)
    return _settled_sha256(os.path.realpath(path), st.st_size, st.st_mtime_ns, st.st_ino, chunk)


_SETTLED_NS = 5_000_000_000


@functools.lru_cache(maxsize=4096)
def _settled_sha256(path: str, size: int, mtime_ns: int, inode: int, chunk: int) -> str:
    return _sha256(path, chunk)


def _sha256(path: str, chunk: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


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


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def user_mode(path: str | Path, folder: bool = False) -> None:
    """Give a file (or folder) made by mkstemp/mkdtemp (0600/0700) the mode the user's umask gives new files:
    a manifest must be as readable as the shards beside it."""
    os.chmod(path, (0o777 if folder else 0o666) & ~_umask())


def temp_prefix(target: Path) -> str:
    """The hidden name prefix of `target`'s temporary files, with this process's id: a later run sweeps the
    names of processes that are gone (see sweep_temps) and never a live one's."""
    return f".{target.name}.tmp-{os.getpid()}-"


def sweep_temps(target: str | Path) -> None:
    """Remove the temporary files and folders a killed earlier run left beside `target` (their process is gone)."""
    target = Path(target)
    if not target.parent.is_dir():
        return
    for old in target.parent.glob(f".{glob.escape(target.name)}.tmp-*"):
        pid = old.name[len(target.name) + 6:].split("-", 1)[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink(missing_ok=True)


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
        old = target.with_name(f"{temp_prefix(target)}old")
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


@contextlib.contextmanager
def replaced(path: str | Path, folder: bool = False) -> Iterator[Path]:
    """A temporary file (or empty folder) beside `path` to write; put in place of `path` when the block ends (see
    swap_in), removed if it fails: readers see the old output or the new one, never half of it."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep_temps(target)
    if folder:
        tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(target), dir=target.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=temp_prefix(target), dir=target.parent)
        os.close(fd)
        tmp = Path(name)
    user_mode(tmp, folder)
    try:
        yield tmp
        swap_in(tmp, target)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write `text` under a temporary name beside `path` and rename it into place (manifests, reports, stamps)."""
    with replaced(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | Path, value: Any) -> None:
    """JSON written atomically (see write_text_atomic): manifests, journals, reports, stamps."""
    write_text_atomic(path, json.dumps(value, indent=2, ensure_ascii=False) + "\n")



# ---------------------------------------------------------------- guarding outputs

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


_RESERVED = ("manifest.json", ".journal.json", "data", "prep-stage.json", "train.jsonl", "validation.jsonl")


def _real(path: str) -> tuple[Path, tuple[int, int] | None]:
    real = Path(os.path.realpath(path))
    try:
        st = os.stat(path)
    except OSError:
        return real, None
    return real, (st.st_dev, st.st_ino)


def _within(path: Path, folder: Path) -> bool:
    return path != folder and path.is_relative_to(folder)


def is_shard_folder(path: str | Path) -> bool:
    """A folder prep wrote shards into (finished, or an interrupted run's)."""
    p = Path(path)
    return p.is_dir() and ((p / "manifest.json").is_file() or (p / "data").is_dir() or (p / ".journal.json").exists())


def check_outputs(inputs: Iterable[str | Path | None], outputs: dict[str, str | Path | None]) -> None:
    """Refuse, before anything is read or written, outputs that would destroy what the run reads or writes: an
    output (`outputs`: option -> path) that is an input (the same file through symlinks or hard links), one that is
    another output, one inside an input folder prep wrote (shards), one inside an output folder where that folder's
    own files go, and an output folder holding an input."""
    ins = [(str(i), *_real(str(i))) for i in inputs if i is not None and str(i) != "-" and os.path.exists(i)]
    outs = [(flag, str(o), *_real(str(o))) for flag, o in outputs.items() if o is not None and str(o) != "-"]
    for flag, given, real, ident in outs:
        for name, in_real, in_ident in ins:
            if real == in_real or (ident is not None and ident == in_ident):
                raise PrepError(f"{flag} {given} is the input {name}: writing it would destroy what is read; "
                                "write somewhere else")
            if _within(real, in_real) and is_shard_folder(in_real):
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


_ERRNO_WORDS = {
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


_OWN_NAME = re.compile(r"^\.(.+?)(?:\.tmp-\d+-.*|\.lock|\.partial)$")


def os_error_message(e: OSError) -> str:
    """One line for an operating-system error: the path and what to do, by its class (no space, read-only, a symlink
    loop, ...). prep's own temporary names are shown as the output they stand for."""
    code, where = e.errno or 0, "" if e.filename is None else str(e.filename)
    if where and code in (errno.EEXIST, errno.ENOENT) and _looping(where):
        code = errno.ELOOP
    if where and (own := _OWN_NAME.match(os.path.basename(where))):
        where = os.path.join(os.path.dirname(where), own.group(1))
    words = _ERRNO_WORDS.get(code) or (e.strerror or str(e))
    return f"{where}: {words}" if where else words


def _looping(path: str) -> bool:
    """Whether resolving `path` (or a folder above it) runs into a symlink loop."""
    try:
        os.stat(path)
    except OSError as e:
        return e.errno == errno.ELOOP
    return False


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


def _open_binary(path: str) -> IO[bytes]:
    if path == "-":
        return sys.stdin.buffer
    _, compression = split_suffix(path)
    try:
        if compression == "gzip":
            return gzip.open(path, "rb")
        if compression == "zstd":
            pa = _arrow()
            return io.BufferedReader(pa.CompressedInputStream(pa.OSFile(path, "rb"), "zstd"))
        return open(path, "rb")  # noqa: SIM115 - closed by the caller's ExitStack
    except OSError as e:
        raise PrepError(f"{path}: cannot open: {e.strerror or e}") from None


def _sniff_container(stream: IO[bytes], name: str) -> str:
    """For stdin or a file without a known suffix: `[` means a JSON array, `{` means JSONL."""
    head = stream.peek(4096)[:4096] if hasattr(stream, "peek") else b""
    text = head.lstrip(_UTF8_BOM).lstrip()
    if text.startswith(b"["):
        return "json"
    if text.startswith(b"{"):
        return "jsonl"
    raise PrepError(f"{name}: cannot tell the file type from its name or first bytes; "
                    "give a .jsonl/.json/.csv/.tsv/.parquet/.txt name or pass --input-type")


def _text_encoding(head: bytes, name: str) -> str:
    """"utf-8" or "utf-16" (with a BOM) from a file's first bytes; refuse text in other encodings
    that would otherwise come out as a column of garbage rows (NUL bytes: UTF-16/32 without a BOM)."""
    if head.startswith(_UTF16_BOMS):
        return "utf-16"
    if b"\x00" in head:
        raise PrepError(f"{name}: NUL bytes at the start: this is UTF-16 or UTF-32 without a byte-order mark, "
                        f"or not a text file; {_ENCODING_HINT.replace('latin1', 'utf-16le')}")
    return "utf-8"


def _head(stream: IO[bytes]) -> bytes:
    return stream.peek(64)[:64] if hasattr(stream, "peek") else b""


class _TooLarge:
    """A line longer than the row limit, in place of its bytes (which were skipped, not kept): its size and start."""

    def __init__(self, head: bytes, size: int, limit: int) -> None:
        self.head, self.size, self.limit = head, size, limit

    def finding(self) -> Finding:
        return Finding("too_large", f"the row is {self.size:,} bytes, over the limit of {self.limit:,}; it was not "
                       "read", "split the row, or raise --max-row-bytes if rows this large are meant")

    def preview(self) -> str:
        return self.head.decode("utf-8", "replace") + f"… ({self.size:,} bytes, not kept)"


_PREVIEW = 200


def _binary_lines(stream: IO[bytes], name: str, limit: int = MAX_ROW_BYTES, start: bool = True
                  ) -> Iterator[bytes | _TooLarge]:
    """Lines as UTF-8 bytes: a UTF-8 BOM is dropped, a UTF-16 file (with BOM) is transcoded as it streams. A line
    longer than `limit` bytes comes as a _TooLarge, read past in 1 MB pieces: memory stays within the limit.
    `start=False`: the stream is mid-file (a JSONL piece), where neither a BOM nor UTF-16 is looked for."""
    if start and _text_encoding(_head(stream), name) == "utf-16":
        text = io.TextIOWrapper(stream, encoding="utf-16", newline=None)
        try:
            for line in text:
                yield line.encode("utf-8")
        except UnicodeDecodeError as e:
            raise PrepError(f"{name}: invalid UTF-16 ({e.reason}); {_ENCODING_HINT.replace('latin1', 'utf-16')}") \
                from None
        finally:
            text.detach()  # the caller owns (and closes) the stream
        return
    first = start
    while line := stream.readline(limit + 1):
        if first:
            first = False
            line = line.removeprefix(_UTF8_BOM)
        if len(line) <= limit or line.endswith(b"\n"):
            yield line
            continue
        size, head = len(line), line[:_PREVIEW]
        del line
        while more := stream.readline(1 << 20):
            size += len(more)
            if more.endswith(b"\n"):
                break
        yield _TooLarge(head, size, limit)


def _decoded(raw: bytes, offset: int, where: str) -> tuple[str, Finding | None]:
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as e:
        return raw.decode("utf-8", "replace"), Finding(
            "invalid_utf8", f"invalid UTF-8 at byte {offset + e.start} of the file ({where})", _ENCODING_HINT)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_JSON = json.JSONDecoder(parse_constant=_no_constant)
# msgspec refuses NaN/Infinity, lone surrogates, invalid UTF-8 and numbers out of float range, which the careful
# path turns into findings (or, for out-of-range numbers, reads as json does); what it takes, it reads as json does.
_decode_fast = msgspec.json.Decoder().decode
Item = tuple[Source, Any, "Finding | None"]


@dataclass(frozen=True, slots=True)
class Piece:
    """A part of one input file that a worker reads on its own (`--engine ray`): the whole file, or for a plain
    JSONL file a run of whole lines from byte `seek` on, with the lines, rows and bytes before it, so every row
    keeps the line, row number and id it has when the whole file is read. A file's pieces end where one of the
    reader's batches ends (a multiple of `BATCH_ROWS` rows), so the batches, and what each stage makes of them,
    are the whole file's."""

    path: str
    seek: int = 0  # where the piece starts in the file
    lines: int | None = None  # lines in the piece (None: to the end of the file)
    line: int = 0  # lines before the piece
    row: int = 0  # rows (non-blank lines) before the piece
    offset: int = 0  # bytes before the piece as the reader counts them (a UTF-8 BOM left out), for its findings


def pieces(path: str, container: str | None = None, rows: int = BATCH_ROWS,
           limit: int = MAX_ROW_BYTES) -> list[Piece]:
    """`path` as pieces of `rows` rows (a multiple of BATCH_ROWS): one piece unless it is plain UTF-8 JSONL,
    which is cut after every `rows`-th row. One pass over the bytes, line by line as the reader takes them (a
    line over `limit` is one row, skipped past), parsing nothing."""
    if rows % BATCH_ROWS:
        raise ValueError(f"pieces hold whole batches: {rows} is not a multiple of {BATCH_ROWS}")
    kind, compression = split_suffix(path) if path != "-" else (None, None)
    if path == "-" or (container or kind) != "jsonl" or compression or not os.path.isfile(path):
        return [Piece(path)]
    found: list[Piece] = []
    start = Piece(path)
    offset = line = row = 0
    with open(path, "rb") as f:
        head = f.peek(64)[:64]
        if _text_encoding(head, path) == "utf-16":
            return [Piece(path)]
        seek = len(_UTF8_BOM) if head.startswith(_UTF8_BOM) else 0  # the reader drops a BOM: not in its offsets
        for line, raw in enumerate(_binary_lines(f, path, limit), 1):  # noqa: B007 - the last line ends the piece
            size = raw.size if isinstance(raw, _TooLarge) else len(raw)
            seek += size
            offset += size
            if not isinstance(raw, _TooLarge) and (not raw or raw.isspace()):
                continue
            row += 1
            if row % rows == 0:
                found.append(replace(start, lines=line - start.line))
                start = Piece(path, seek, None, line, row, offset)
    if start.line < line or not found:
        found.append(start)
    return found


def joined(run: Sequence[Piece]) -> Piece:
    """Consecutive pieces of one file as one."""
    lines = None if run[-1].lines is None else sum(p.lines or 0 for p in run)
    return replace(run[0], lines=lines)


def cut(files: Sequence[Sequence[Piece]], parts: int, most: int = 16) -> list[list[Piece]]:
    """Each file's pieces joined into runs of whole batches so that all the files make about `parts` parts, none
    of more than `most` batches (a piece holds one batch)."""
    batches = sum(len(run) for run in files)
    size = max(1, min(most, batches // max(parts, 1)))
    return [[joined(run[k:k + size]) for k in range(0, len(run), size)] for run in files]


def _piece_lines(stream: IO[bytes], name: str, piece: Piece, limit: int) -> Iterator[bytes | _TooLarge]:
    """The piece's lines: from the file's start (BOM and UTF-16 handled there), else from its byte on."""
    if piece.seek:
        stream.seek(piece.seek)
    lines = _binary_lines(stream, name, limit, start=not piece.seek)
    return lines if piece.lines is None else itertools.islice(lines, piece.lines)


def _read_jsonl(stream: IO[bytes], name: str, limit: int = MAX_ROW_BYTES, piece: Piece | None = None
                ) -> Iterator[Item]:
    piece = piece or Piece(name)
    offset, row = piece.offset, piece.row
    for lineno, raw in enumerate(_piece_lines(stream, name, piece, limit), piece.line + 1):
        if isinstance(raw, _TooLarge):
            offset += raw.size
            row += 1
            yield Source(name, lineno, row), raw.preview(), raw.finding()
            continue
        start, offset = offset, offset + len(raw)
        if not raw or raw.isspace():  # not .strip(): no copy of every line
            continue
        row += 1
        source = Source(name, lineno, row)
        try:  # the fast path: msgspec takes only lines json takes too, and gives the same values
            yield source, _decode_fast(raw), None
            continue
        except (msgspec.MsgspecError, RecursionError):
            pass  # the careful path below says what is wrong with the line (or takes what json takes and msgspec not)
        text, bad = _decoded(raw.rstrip(b"\r\n"), start, f"line {lineno}")
        if bad:
            yield source, text, bad
            continue
        try:
            value = _JSON.decode(text)
        except RecursionError:
            yield source, text[:_PREVIEW], Finding(
                "too_deep", "the line nests arrays or objects deeper than can be read", "flatten the row")
            continue
        except ValueError as e:
            msg = f"{e.msg} at column {e.colno}" if isinstance(e, json.JSONDecodeError) else str(e)
            yield source, text, Finding(
                "bad_json", f"line is not valid JSON: {msg}", "fix or remove the line; each line must hold one JSON object")
            continue
        escaped = b"\\u" in raw and _SURROGATE_ESCAPE.search(text)  # bytes first: a faster search than in text
        yield source, value, _lone_surrogate(value) if escaped else None


def _lone_surrogate(value: Any, path: str = "$") -> Finding | None:
    """A finding for the first string (or key) in `value` holding an unpaired UTF-16 surrogate, which
    JSON can spell (\\ud800) but UTF-8 cannot hold: no output file or tokenizer could take the row."""
    if isinstance(value, str):
        if m := _SURROGATE.search(value):
            return Finding("lone_surrogate", f"an unpaired surrogate at character {m.start()}",
                           "remove the unpaired UTF-16 surrogate escape (\\ud800-\\udfff); it cannot be written "
                           "as UTF-8", path)
        return None
    if isinstance(value, dict):
        for k, v in value.items():
            if found := _lone_surrogate(k, path) or _lone_surrogate(v, f"{path}.{k}"):
                return found
    elif isinstance(value, list):
        for i, v in enumerate(value):
            if found := _lone_surrogate(v, f"{path}[{i}]"):
                return found
    return None


class _JsonText:
    """Incremental reader over a JSON document: decodes one value at a time, counting lines."""

    def __init__(self, stream: IO[bytes], name: str) -> None:
        self.stream, self.name = stream, name
        self.encoding = "utf-8"
        self.decoder = codecs.getincrementaldecoder(self.encoding)()
        self.buf, self.pos, self.line, self.bytes, self.eof = "", 0, 1, 0, False
        self.started = False
        self.escapes = False  # whether the last value's text holds a surrogate escape
        self.escape_at = -1  # where the buffer's next "\\u" is (-1: none ahead)

    def _fill(self, size: int = 1 << 20) -> bool:
        if self.eof:
            return False
        chunk = self.stream.read(max(size, 1 << 20))
        try:
            if not self.started:
                self.started = True
                self.encoding = _text_encoding(chunk[:64], self.name)
                self.decoder = codecs.getincrementaldecoder(self.encoding)()
                chunk = chunk.removeprefix(_UTF8_BOM)
            text = self.decoder.decode(chunk, final=not chunk)
        except UnicodeDecodeError as e:
            raise PrepError(f"{self.name}: invalid {self.encoding.upper()} at byte {self.bytes + e.start}; "
                            f"{_ENCODING_HINT}") from None
        self.bytes += len(chunk)
        self.eof = not chunk
        self._carry_escape(chunk)
        self.buf = self.buf[self.pos:] + text
        self.pos = 0
        if self.escape_at == -2:
            self.escape_at = self.buf.find("\\u")
        return bool(chunk)

    def _carry_escape(self, chunk: bytes) -> None:
        """`escape_at` for the buffer about to be buf[pos:] + the chunk's text; -2: search the new buffer. A
        chunk of UTF-8 holds "\\u" exactly where its text does, and bytes are searched many times faster."""
        if 0 <= self.escape_at < self.pos:  # passed: nothing is known about the rest of the part kept
            self.escape_at = self.buf.find("\\u", self.pos)
        if self.escape_at >= 0:
            self.escape_at -= self.pos
        elif self.encoding != "utf-8" or b"\\u" in chunk or (chunk[:1] == b"u" and self.buf.endswith("\\")):
            self.escape_at = -2

    def _escaped(self, start: int, end: int) -> bool:
        """Whether buf[start:end] spells a surrogate escape. The buffer's next "\\u" is looked for once and
        kept, not per value: most files have none, and a search per value costs as much as decoding it."""
        if 0 <= self.escape_at < start:
            self.escape_at = self.buf.find("\\u", start)
        return 0 <= self.escape_at < end and _SURROGATE_ESCAPE.search(self.buf, start, end) is not None

    def _advance(self, end: int) -> None:
        self.line += self.buf.count("\n", self.pos, end)
        self.pos = end

    def peek(self) -> str:
        """The next non-blank character ('' at the end), consuming the blanks before it."""
        if self.pos < len(self.buf) and self.buf[self.pos] not in _BLANK_CHARS:  # no blanks to skip (most calls)
            return self.buf[self.pos]
        while True:
            self._advance(_BLANKS.match(self.buf, self.pos).end())
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self._fill():
                return ""

    def take(self, char: str) -> None:
        found = self.peek()
        if found != char:
            self.fail(f"expected {char!r} but found {found!r}" if found else f"expected {char!r} but the file ended")
        self._advance(self.pos + 1)

    def value(self) -> Any:
        self.peek()
        while True:
            try:
                value, end = _JSON.raw_decode(self.buf, self.pos)
                if end < len(self.buf) or self.eof:
                    self.escapes = self._escaped(self.pos, end)
                    self._advance(end)
                    return value
            except ValueError as e:
                if self.eof:
                    self.fail(e.msg if isinstance(e, json.JSONDecodeError) else str(e))
            except RecursionError:
                self.fail("a value nests arrays or objects deeper than can be read")
            self._fill(len(self.buf))  # a value may end past the buffer: read on and try again

    def fail(self, message: str) -> None:
        raise PrepError(f"{self.name}:{self.line}: invalid JSON ({message}); the rest of the file cannot be read, "
                        "fix it there or convert the file to JSONL so bad lines can be skipped")


def _read_json(stream: IO[bytes], name: str) -> Iterator[Item]:
    doc = _JsonText(stream, name)
    first = doc.peek()
    row = 0

    def elements() -> Iterator[Item]:
        nonlocal row
        doc.take("[")
        if doc.peek() == "]":
            doc.take("]")
            return
        while True:
            row += 1
            doc.peek()
            line = doc.line
            value = doc.value()
            yield Source(name, line, row), value, _lone_surrogate(value) if doc.escapes else None
            sep = _NEXT_ELEMENT.match(doc.buf, doc.pos)
            if sep and sep.end() < len(doc.buf):  # the next value starts in the buffer: skip the comma at once
                doc._advance(sep.end())
            elif doc.peek() == ",":
                doc.take(",")
            else:
                doc.take("]")
                return

    if first == "[":
        yield from elements()
    elif first == "{":
        doc.take("{")
        whole: dict[str, Any] = {}
        streamed = False
        while doc.peek() != "}":
            if whole or streamed:
                doc.take(",")
            key = doc.value()
            doc.take(":")
            if key in CONTAINER_KEYS and not streamed and doc.peek() == "[":
                streamed = True
                yield from elements()
            else:
                whole[key] = doc.value()
        doc.take("}")
        if not streamed:
            yield Source(name, 1, 1), whole, _lone_surrogate(whole)
    elif first:
        doc.fail("a .json file must hold an array of rows or an object")
    if doc.peek():
        doc.fail("extra data after the end of the JSON document")


def _read_csv(stream: IO[bytes], name: str, delimiter: str, limit: int = MAX_ROW_BYTES) -> Iterator[Item]:
    """Rows as {column: cell}; a record that cannot be read is rejected with its raw lines.

    Strict quoting: a stray quote must not silently swallow the records after it into one cell."""
    bad: dict[int, Finding] = {}
    pending: dict[int, str] = {}  # the raw lines of the record being read, for rejects

    def text_lines() -> Iterator[str]:
        offset = 0
        for lineno, raw in enumerate(_binary_lines(stream, name, limit), 1):
            if isinstance(raw, _TooLarge):  # a one-cell placeholder the record's finding replaces
                bad[lineno], offset, pending[lineno] = raw.finding(), offset + raw.size, raw.preview()
                yield "…\n"
                continue
            text, finding = _decoded(raw, offset, f"line {lineno}")
            offset += len(raw)
            if finding:
                bad[lineno] = finding
            pending[lineno] = text
            yield text

    def raw_record(first: int, last: int) -> str:
        text = "".join(pending.pop(n, "") for n in range(first, last + 1))
        pending.clear()
        return text

    reader = csv.reader(text_lines(), delimiter=delimiter, strict=True)
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as e:
        raise PrepError(f"{name}:1: cannot read the header: {e}") from None
    if len(set(header)) != len(header) or "" in header:
        raise PrepError(f"{name}:1: the header must name each column once, without blanks: {header}")
    end, row = reader.line_num, 0
    pending.clear()
    while True:
        start = end + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            row += 1
            end = reader.line_num
            if str(e) == "unexpected end of data":
                finding = Finding("bad_csv", f"a quoted field opened in this record is never closed, so lines "
                                  f"{start}-{end} (the rest of the file) were read as one record",
                                  "close the quote, or double a quote that is part of the text (\"\")")
            else:
                finding = Finding("bad_csv", f"unreadable record: {e}",
                                  "quote the whole field, and double quotes inside it (\"\")")
            yield Source(name, start, row), raw_record(start, end), finding
            continue
        end = reader.line_num
        if not cells:
            pending.clear()
            continue
        row += 1
        source = Source(name, start, row)
        broken = next((bad.pop(n) for n in range(start, end + 1) if n in bad), None)
        if not broken and sum(pending.get(n, "").count('"') for n in range(start, end + 1)) % 2:
            # Quotes come in pairs in a well-formed record; an odd count is the tail of a record a stray quote
            # broke (or a stray quote itself): what it holds is a fragment, never a row.
            broken = Finding("bad_csv", "an odd number of quote characters: this record is the rest of a broken "
                             "one, or holds a stray quote", "quote the whole field, and double quotes inside it (\"\")")
        if broken:
            yield source, raw_record(start, end), broken
        elif len(cells) != len(header):
            yield source, raw_record(start, end), Finding(
                "csv_field_count", f"record has {len(cells)} fields but the header has {len(header)}",
                "quote fields that contain the delimiter or a line break")
        else:
            pending.clear()
            yield source, dict(zip(header, cells, strict=True)), None


def drop_nulls(value: Any) -> Any:
    """Arrow structs give every row every field; a null field in a Parquet row means 'absent'."""
    if isinstance(value, dict):
        return {k: drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [drop_nulls(v) for v in value]
    return value


def _read_parquet(path: str, name: str) -> Iterator[Item]:
    if path == "-" or split_suffix(path)[1]:
        raise PrepError(f"{name}: Parquet is read from a plain file (it is compressed inside already)")
    try:
        import pyarrow.parquet as pq  # noqa: PLC0415 - start-up time: Arrow only for Parquet and zstd

        pfile = pq.ParquetFile(path)
    except (OSError, *_arrow_errors()) as e:
        raise PrepError(f"{name}: not a readable Parquet file: {e}") from None
    row = 0
    for table in pfile.iter_batches(batch_size=BATCH_ROWS):
        for value in table.to_pylist():
            row += 1
            yield Source(name, row, row), drop_nulls(value), None


def _read_txt(stream: IO[bytes], name: str, split: str, limit: int = MAX_ROW_BYTES) -> Iterator[Item]:
    if split == "file":
        lines: list[bytes] | None = []
        size = 0
        for line in _binary_lines(stream, name, limit):
            size += line.size if isinstance(line, _TooLarge) else len(line)
            if isinstance(line, _TooLarge) or size > limit:
                lines = None  # the document is too large: counted on, not kept
            elif lines is not None:
                lines.append(line)
        if lines is None:
            yield Source(name, 1, 1), f"({size:,} bytes, not kept)", _TooLarge(b"", size, limit).finding()
            return
        raw = b"".join(lines)
        text, bad = _decoded(raw, 0, "text file")
        if text.strip():
            yield Source(name, 1, 1), text if bad else {"text": text}, bad
        return
    block: list[str] = []
    block_start, offset, row = 0, 0, 0
    problem: Finding | None = None

    def flush() -> Iterator[Item]:
        nonlocal row, problem
        if block:
            row += 1
            text = "".join(block).rstrip("\r\n")
            yield Source(name, block_start, row), text if problem else {"text": text}, problem
        block.clear()
        problem = None

    for lineno, raw in enumerate(_binary_lines(stream, name, limit), 1):
        if isinstance(raw, _TooLarge):
            yield from flush()
            row += 1
            offset += raw.size
            yield Source(name, lineno, row), raw.preview(), raw.finding()
            continue
        text, bad = _decoded(raw, offset, f"line {lineno}")
        offset += len(raw)
        if not text.strip():
            yield from flush()
            continue
        if not block:
            block_start = lineno
        block.append(text)
        problem = problem or bad
        if split == "line":
            yield from flush()
    yield from flush()


def readable_file(path: str) -> str | None:
    """Why `path` cannot be read as a file of rows (None: it can; pipes and /dev/stdin can)."""
    if os.path.isdir(path):
        return "is a folder; give the files in it"
    if not os.path.exists(path):
        return _ERRNO_WORDS[errno.ELOOP] if _looping(path) else "no such file"
    return None


def read_rows(path: str, container: str | None = None, txt_split: str = "file",
              batch_rows: int = BATCH_ROWS, max_row_bytes: int = MAX_ROW_BYTES,
              piece: Piece | None = None) -> Iterator[Batch[Any]]:
    """Stream one file (or one `piece` of it, see `pieces`) as batches of parsed rows; rows that do not parse come
    as rejects, and so do rows (lines) of more than `max_row_bytes`, which are not read."""
    name = display_name(path)
    if path != "-" and (problem := readable_file(path)):
        raise PrepError(f"{name}: {problem}")
    container = container or split_suffix(path)[0]
    with contextlib.ExitStack() as stack:
        if container == "parquet":
            items = _read_parquet(path, name)
        else:
            stream = stack.enter_context(_open_binary(path)) if path != "-" else _open_binary(path)
            container = container or _sniff_container(stream, name)
            if container == "jsonl":
                items = _read_jsonl(stream, name, max_row_bytes, piece)
            elif container == "json":
                items = _read_json(stream, name)
            elif container in ("csv", "tsv"):
                items = _read_csv(stream, name, "," if container == "csv" else "\t", max_row_bytes)
            elif container == "txt":
                items = _read_txt(stream, name, txt_split, max_row_bytes)
            else:
                raise PrepError(f"{name}: unknown input type {container!r}; one of {', '.join(CONTAINERS)}")
        batch: Batch[Any] = Batch()
        try:
            for source, value, finding in items:
                if finding:
                    batch.reject(source, [finding], value)
                else:
                    batch.add(value, source)
                if len(batch.items) + len(batch.rejects) >= batch_rows:
                    yield batch
                    batch = Batch()
        except (PrepError, OSError, EOFError, *_arrow_errors()) as e:
            # The file broke off (a JSON document that goes wrong, a corrupt .gz): the rows parsed before
            # the break still reach whoever catches the error (validate counts and checks them).
            if batch.items or batch.rejects:
                yield batch
            if isinstance(e, PrepError):
                raise
            raise PrepError(f"{name}: read failed: {e}") from None
        if batch.items or batch.rejects:
            yield batch


# ---------------------------------------------------------------- writing


def _cell(value: Any) -> str:
    """A CSV cell: strings as they are, everything else as JSON (so lists and booleans round-trip)."""
    if isinstance(value, str):
        return value
    return "" if value is None else json.dumps(value, ensure_ascii=False)


class RowWriter:
    """Writes rows to a temporary file beside `path`; `close()` renames it into place."""

    def __init__(self, path: str, container: str | None = None) -> None:
        self.path = path
        suffix_container, self.compression = split_suffix(path) if path != "-" else (None, None)
        self.container = container or suffix_container or "jsonl"
        if self.container not in CONTAINERS or self.container == "txt":
            raise PrepError(f"{path}: cannot write {self.container!r}; write .jsonl, .json, .csv, .tsv or .parquet")
        if path == "-" and self.container == "parquet":
            raise PrepError("Parquet cannot be written to stdout; give -o FILE.parquet")
        if path != "-" and os.path.isdir(path):
            raise PrepError(f"{path}: is a folder; give a file name to write")
        self.rows = 0
        if path != "-":
            sweep_temps(path)
        self.tmp = None if path == "-" else _temp_name(path, "tmp")
        # CSV needs every column before the header, Parquet one schema: both spool rows as JSONL first.
        self.spool = _temp_name(path, "spool") if self.container in ("csv", "tsv", "parquet") else None
        self.target = self.spool or self.tmp  # None: standard output
        if self.target is None:
            self.out: IO[bytes] = sys.stdout.buffer
        else:
            Path(self.target).parent.mkdir(parents=True, exist_ok=True)
            self.out = self._open_out(self.target, compress=self.spool is None)
        if self.container == "json":
            self.out.write(b"[")

    def _open_out(self, path: str, compress: bool) -> IO[bytes]:
        if compress and self.compression:
            # Arrow's gzip header has no file name and no time (Python's gzip would record the
            # temporary name): same rows, same bytes.
            pa = _arrow()
            return pa.CompressedOutputStream(pa.OSFile(path, "wb"), self.compression)
        return open(path, "wb")  # noqa: SIM115 - closed in close()/abort()

    def write(self, rows: Iterable[Any]) -> None:
        lines = [json.dumps(r, ensure_ascii=False) for r in rows]
        if not lines:
            return
        try:
            data = self._joined(lines).encode("utf-8")
        except UnicodeEncodeError:
            data = self._joined([_utf8_line(line, self.rows + k + 1, self) for k, line in enumerate(lines)]).encode()
        self.out.write(data)
        self.rows += len(lines)

    def _joined(self, lines: list[str]) -> str:
        if self.container == "json":
            return ("\n" if self.rows == 0 else ",\n") + ",\n".join(lines)
        return "\n".join(lines) + "\n"

    def close(self) -> None:
        """Finish the file and move it into place; if that fails (a full disk), nothing half-written is left."""
        try:
            self._finish()
        except BaseException:
            self.abort()
            raise

    def _finish(self) -> None:
        if self.container == "json":
            self.out.write(b"\n]\n" if self.rows else b"]\n")
        if self.target is None:  # stdout
            self.out.flush()
            return
        self.out.close()
        if self.spool:
            if self.container == "parquet":
                _spool_to_parquet(self.spool, self.tmp)
            else:
                with self._open_out(self.tmp, compress=True) as out:
                    _spool_to_csv(self.spool, out, "," if self.container == "csv" else "\t")
            os.unlink(self.spool)
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        """Drop whatever was written: no half-written output is left behind."""
        if self.target is not None:
            with contextlib.suppress(Exception):
                self.out.close()
        for name in (self.spool, self.tmp):
            if name and os.path.exists(name):
                os.unlink(name)

    def __enter__(self) -> RowWriter:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _utf8_line(line: str, row: int, writer: RowWriter) -> str:
    """A row's JSON that UTF-8 can hold. A string with an unpaired surrogate (JSON can spell one, UTF-8
    cannot; readers reject such rows, so it is a caller's own value or a kept reject) is written with JSON
    escapes, which read back as the same value; CSV and Parquet have no way to hold it."""
    try:
        line.encode("utf-8")
        return line
    except UnicodeEncodeError as e:
        if writer.spool:
            raise PrepError(f"{writer.path}: row {row} holds an unpaired surrogate ({line[e.start]!r}), which "
                            f"{writer.container.upper()} cannot hold; reject the row or write JSON/JSONL") from None
        return json.dumps(json.loads(line), ensure_ascii=True)


def _temp_name(path: str, tag: str) -> str:
    p = Path(path)
    return str(p.with_name(f"{temp_prefix(p)}{tag}"))


def _spooled(spool: str) -> Iterator[list[dict[str, Any]]]:
    with open(spool, "rb") as f:
        chunk: list[dict[str, Any]] = []
        for line in f:
            chunk.append(json.loads(line))
            if len(chunk) >= BATCH_ROWS * 8:
                yield chunk
                chunk = []
        if chunk:
            yield chunk


def _spool_to_csv(spool: str, out: IO[bytes], delimiter: str) -> None:
    columns: dict[str, None] = {}
    for chunk in _spooled(spool):
        for row in chunk:
            columns.update(dict.fromkeys(row))
    text = io.TextIOWrapper(out, encoding="utf-8", newline="")
    writer = csv.writer(text, delimiter=delimiter, lineterminator="\n")
    writer.writerow(columns)
    for chunk in _spooled(spool):
        writer.writerows([_cell(row.get(c)) for c in columns] for row in chunk)
    text.flush()
    text.detach()


def _spool_to_parquet(spool: str, out: str) -> None:
    """One schema for all rows: every column any row has (absent: null), each column's Arrow
    type unified over all rows; a column whose values cannot share a type (tool arguments of
    different shapes, numbers beside strings) is stored as JSON text instead."""
    pa = _arrow()
    columns: dict[str, None] = {}
    for chunk in _spooled(spool):
        for row in chunk:
            columns.update(dict.fromkeys(row))
    types: dict[str, pa.DataType | None] = {}  # None: JSON text
    for chunk in _spooled(spool):
        for c in columns:
            if c in types and types[c] is None:
                continue
            try:
                found = pa.array([row.get(c) for row in chunk]).type
                if c in types:
                    found = pa.unify_schemas([pa.schema([(c, types[c])]), pa.schema([(c, found)])],
                                             promote_options="permissive").field(c).type
                types[c] = found
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError):
                types[c] = None
    schema = pa.schema([(c, types.get(c) or pa.string()) for c in columns])

    def table(chunk: list[dict[str, Any]]) -> pa.Table:
        arrays = [pa.array([row.get(c) if types.get(c) else _json_text(row.get(c)) for row in chunk],
                           type=schema.field(c).type) for c in columns]
        return pa.Table.from_arrays(arrays, schema=schema)

    _write_parquet((table(chunk) for chunk in _spooled(spool)), schema, out)


def _json_text(value: Any) -> str | None:
    return value if value is None or isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _write_parquet(tables: Iterable[pa.Table], schema: pa.Schema, out: str) -> None:
    import pyarrow.parquet as pq  # noqa: PLC0415 - start-up time: Arrow only for Parquet and zstd

    with pq.ParquetWriter(out, schema, compression="zstd") as writer:
        for table in tables:
            writer.write_table(table)
