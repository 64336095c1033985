"""Opening a medium (design §2a): the one place prep reads an image, video or audio, from a file under its
root or from a data URL, and tells what its header says.

`locate(item)` is the file of a `path` item, refused when it leaves its root; `data(item)` its bytes (a data
URL decoded, a file read when asked); `probe(item)` the item plus `sha256`, `bytes`, `format` and, for an image,
`width`/`height` after EXIF rotation, for a video `duration`/`fps`/`frames`/`width`/`height`, for an audio
`duration`/`sample_rate`. Pillow reads images and PyAV (FFmpeg) videos and audio, from the headers only:
`deep=True` (validate) also decodes, which is what catches a truncated JPEG (its header opens fine). An
http(s) URL is never fetched: `probe` gives it back as it is. What goes wrong is a `RowError` naming the item's
field (`item["at"]`): media_outside_root, media_missing, media_unreadable, media_empty, media_corrupt,
media_unsupported, media_too_large, bad_media (a data URL that is not base64 of its type), and media_not_local
from `data` for an http(s) URL. `format` is Pillow's name of the image's format, lowercased (jpeg, png, webp,
gif, bmp, tiff), or FFmpeg's name of the container (mp4, avi, matroska, wav, mp3, flac, ...).

Probes are cached for the process, by the file's resolved path, size, modification time and inode, and a data
URL's by its sha256: datasets name the same image on many rows.
"""

from __future__ import annotations

import base64
import binascii
import errno
import hashlib
import io
import os
import re
import stat
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prep.core.findings import row_error
from prep.core.media import Item, location
from prep.core.options import MAX_MEDIA_BYTES, MAX_MEDIA_PIXELS, MAX_MEDIA_SECONDS
from prep.files.hashing import sha256_file

# Pillow's names of the image formats prep takes, and the name prep gives each (MPO: a camera's JPEG).
IMAGE_FORMATS = {"JPEG": "jpeg", "MPO": "jpeg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp",
                 "TIFF": "tiff"}
_ROTATED = (5, 6, 7, 8)  # EXIF orientations that turn the picture a quarter: width and height swap
_ORIENTATION = 0x0112
# First bytes of the files prep takes, to tell a damaged one (media_corrupt) from another kind of file
# (media_unsupported) when the decoder cannot open it.
_MAGIC = {
    "image": (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*"),
    "video": (b"\x1aE\xdf\xa3", b"OggS", b"FLV", b"\x00\x00\x01\xba"),
    "audio": (b"fLaC", b"OggS", b"ID3", b"\xff\xfb", b"\xff\xf3", b"\xff\xf2", b"\xff\xf1", b"\xff\xf9",
              b"#!AMR", b"\x1aE\xdf\xa3"),
}
_RIFF = {"image": b"WEBP", "video": b"AVI ", "audio": b"WAVE"}
_A = {"image": "an image", "video": "a video", "audio": "an audio"}
_DATA_URL = re.compile(r"data:(?P<mime>[^;,]*)(?P<params>(?:;[^;,]*)*),(?P<payload>.*)", re.DOTALL)
_CACHE_SIZE = 100_000
_cache: dict[tuple[Any, ...], dict[str, Any] | _Failure] = {}


@dataclass(frozen=True)
class Limits:
    """What a medium may hold before it is media_too_large (validate's --max-media-* options)."""

    pixels: int = MAX_MEDIA_PIXELS
    bytes: int = MAX_MEDIA_BYTES
    seconds: float = MAX_MEDIA_SECONDS


LIMITS = Limits()


class _Failure(Exception):
    """What is wrong with a medium, before it is said about one item (cached: the same file on many rows)."""

    def __init__(self, code: str, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.hint = code, message, hint


def locate(item: Item) -> Path:
    """The file of a `path` item: `path` under `root` (the current folder when the item has none). A path that
    leaves its root, absolute, through `..` or by a symlink pointing out, is refused (media_outside_root)."""
    root = Path(item.get("root") or ".")
    joined = Path(os.path.normpath(os.path.abspath(root / item["path"])))
    base = Path(os.path.abspath(root))
    if not joined.is_relative_to(base):
        raise row_error("media_outside_root", f"{location(item)} is outside the media root {base}", item["at"])
    real, real_base = Path(os.path.realpath(joined)), Path(os.path.realpath(base))
    if not real.is_relative_to(real_base):
        raise row_error("media_outside_root", f"{location(item)} is a link to {real}, outside the media root "
                        f"{real_base}", item["at"])
    return joined


def data(item: Item) -> bytes:
    """The medium's bytes: a data URL decoded (bad_media when it is not base64 of the item's type), a file read
    now. An http(s) URL is not fetched (media_not_local)."""
    if "url" not in item:
        path = locate(item)
        _stat(item, path)
        try:
            return path.read_bytes()
        except OSError as e:
            raise _as_error(item, _os_failure(e, path)) from None
    url = item["url"]
    if not url.startswith("data:"):
        raise row_error("media_not_local", f"{location(item)} is a URL; prep does not fetch it", item["at"])
    return _data_url(item, url)


@dataclass(frozen=True)
class _Source:
    """Where a medium's bytes are: a file, or a data URL's decoded payload."""

    path: str = ""
    blob: bytes = b""

    def open(self) -> Any:
        """What Pillow and PyAV open: the file's name, or the bytes as a file."""
        return io.BytesIO(self.blob) if self.blob else self.path

    def head(self) -> bytes:
        if self.blob:
            return self.blob[:16]
        with open(self.path, "rb") as f:
            return f.read(16)


def probe(item: Item, *, deep: bool = False, limits: Limits = LIMITS) -> Item:
    """The item plus what its header tells (see the module docstring). `deep`: decode it too (validate), which
    finds truncated and damaged files a header does not show. An http(s) URL comes back unchanged."""
    kind = item["type"]
    if "url" in item:
        if not item["url"].startswith("data:"):
            return dict(item)
        blob = data(item)
        digest = hashlib.sha256(blob).hexdigest()
        key: tuple[Any, ...] = ("data", kind, digest)
        source, size, subtype = _Source(blob=blob), len(blob), _mime(item["url"]).partition("/")[2]
    else:
        path = locate(item)
        st = _stat(item, path)
        key = ("file", kind, os.path.realpath(path), st.st_size, st.st_mtime_ns, st.st_ino)
        source, size, subtype = _Source(path=str(path)), st.st_size, path.suffix.lower().lstrip(".")
        digest = ""
    try:
        if not size:
            raise _Failure("media_empty", f"{location(item)} is empty (0 bytes)")
        if size > limits.bytes:
            raise _Failure("media_too_large", f"{location(item)} is {size:,} bytes; at most {limits.bytes:,} are "
                           f"taken", "shrink or re-encode it, or raise --max-media-bytes")
        fields = _cached(key, lambda: {"sha256": digest or sha256_file(source.path), "bytes": size,
                                       **_read(kind, source, subtype, deep=False)})
        _within(item, fields, limits)
        if deep:
            _cached(("deep", *key), lambda: _read(kind, source, subtype, deep=True))
    except _Failure as failure:
        raise _as_error(item, failure) from None
    return {**item, **fields}


def _read(kind: str, source: _Source, subtype: str, *, deep: bool) -> dict[str, Any]:
    return _image(source, deep) if kind == "image" else _av(kind, source, subtype, deep)


def _cached(key: tuple[Any, ...], measure: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """`measure()` once per key (a failure is remembered too)."""
    found = _cache.get(key)
    if found is None:
        try:
            found = measure()
        except _Failure as failure:
            found = failure
        if len(_cache) >= _CACHE_SIZE:
            _cache.clear()
        _cache[key] = found
    if isinstance(found, _Failure):
        raise found
    return found


def _as_error(item: Item, failure: _Failure) -> Exception:
    message = failure.message if failure.message.startswith(location(item)) else \
        f"{location(item)}: {failure.message}"
    return row_error(failure.code, message, item["at"], hint=failure.hint)


def _within(item: Item, fields: dict[str, Any], limits: Limits) -> None:
    pixels = fields.get("width", 0) * fields.get("height", 0)
    if pixels > limits.pixels:
        raise _Failure("media_too_large", f"{location(item)} is {fields['width']}×{fields['height']} = {pixels:,} "
                       f"pixels; at most {limits.pixels:,} are taken", "resize it, or raise --max-media-pixels")
    if fields.get("duration", 0) > limits.seconds:
        raise _Failure("media_too_large", f"{location(item)} lasts {fields['duration']:.1f} s; at most "
                       f"{limits.seconds:g} s are taken", "cut it, or raise --max-media-seconds")


def _stat(item: Item, path: Path) -> os.stat_result:
    """The file's status; a missing file, a folder, a device or a file prep may not read is a finding."""
    try:
        st = path.stat()
    except OSError as e:
        raise _as_error(item, _os_failure(e, path)) from None
    if stat.S_ISDIR(st.st_mode):
        raise _as_error(item, _Failure("media_unreadable", f"{path} is a folder, not a file", "name the file"))
    if not stat.S_ISREG(st.st_mode):
        raise _as_error(item, _Failure("media_unreadable", f"{path} is not a regular file (a device or a pipe)",
                                       "name a file"))
    if not os.access(path, os.R_OK):
        raise _as_error(item, _Failure("media_unreadable", f"{path}: permission denied"))
    return st


def _os_failure(e: OSError, path: Path) -> _Failure:
    if e.errno in (errno.ENOENT, errno.ENOTDIR):
        return _Failure("media_missing", f"no such file: {path}")
    return _Failure("media_unreadable", f"{path}: {e.strerror or e}")


def _mime(url: str) -> str:
    m = _DATA_URL.match(url[:256])
    return m.group("mime").strip().lower() if m else ""


def _data_url(item: Item, url: str) -> bytes:
    m = _DATA_URL.match(url)
    kind = item["type"]
    if not m:
        raise row_error("bad_media", f"{location(item)} is not a data URL (data:MIME;base64,DATA)", item["at"])
    mime = m.group("mime").strip().lower()
    if not mime.startswith(f"{kind}/"):
        raise row_error("bad_media", f"a {kind} given as a data URL of type {mime or 'none'!r}", item["at"],
                        hint=f"write it as data:{kind}/...;base64,...")
    if "base64" not in (p.strip().lower() for p in m.group("params").split(";")):
        raise row_error("bad_media", f"the {kind}'s data URL is not base64", item["at"],
                        hint=f"write it as data:{mime};base64,...")
    try:
        return base64.b64decode(re.sub(r"\s+", "", m.group("payload")), validate=True)
    except (binascii.Error, ValueError):
        raise row_error("bad_media", f"the {kind}'s data URL does not hold valid base64", item["at"],
                        hint="encode the file with base64 (standard alphabet, padded)") from None


def _unopened(kind: str, source: _Source, why: str) -> _Failure:
    """A file the decoder cannot open: damaged if it starts as a file of its kind does, else another kind of file."""
    head = source.head()
    looks = head[8:12] == _RIFF[kind] if head.startswith(b"RIFF") else \
        head.startswith(_MAGIC[kind]) or (kind != "image" and head[4:8] == b"ftyp")  # MP4/MOV/M4A: after the box size
    if looks:
        return _Failure("media_corrupt", f"{_A[kind]} file, damaged ({why})")
    return _Failure("media_unsupported", f"not {_A[kind]} file prep reads ({why})")


def _image(source: _Source, deep: bool) -> dict[str, Any]:
    """Format and size after EXIF rotation from the header (Pillow opens lazily); `deep`: decode the pixels with
    truncated images refused."""
    from PIL import Image, ImageFile, UnidentifiedImageError  # noqa: PLC0415 - start-up time: rows with images only

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # prep's own limit decides (media_too_large)
        try:
            im = Image.open(source.open())
        except Image.DecompressionBombError as e:
            raise _Failure("media_too_large", str(e), "resize it; Pillow opens no image over twice its limit") \
                from None
        except UnidentifiedImageError:
            raise _unopened("image", source, "Pillow cannot identify it") from None
        except (OSError, SyntaxError, ValueError, EOFError) as e:
            raise _Failure("media_corrupt", f"a damaged image ({e})") from None
    with im:
        name = IMAGE_FORMATS.get(im.format or "")
        if name is None:
            raise _Failure("media_unsupported", f"a {im.format} image; prep takes JPEG, PNG, WEBP, GIF, BMP and TIFF",
                           "convert it to PNG or JPEG")
        width, height = im.size
        try:
            if _orientation(im, Image) in _ROTATED:
                width, height = height, width
        except (OSError, SyntaxError, ValueError, TypeError, EOFError):
            pass  # a damaged EXIF block or Orientation value: taken as unturned
        if deep:
            truncated = ImageFile.LOAD_TRUNCATED_IMAGES
            ImageFile.LOAD_TRUNCATED_IMAGES = False
            try:
                im.load()
            except (OSError, SyntaxError, ValueError, EOFError) as e:
                raise _Failure("media_corrupt", f"the {name.upper()} image cannot be decoded ({e})") from None
            finally:
                ImageFile.LOAD_TRUNCATED_IMAGES = truncated
    return {"format": name, "width": width, "height": height}


def _orientation(im: Any, image_module: Any) -> int:
    """The EXIF Orientation tag from the header, as ImageOps.exif_transpose reads it (PNG: its eXIf chunk before
    the image data, since Pillow's PNG getexif decodes the pixels to look after them)."""
    if im.format == "PNG":
        raw = im.info.get("exif")
        if not raw:
            return 1
        exif = image_module.Exif()
        exif.load(raw)
        return int(exif.get(_ORIENTATION, 1))
    return int(im.getexif().get(_ORIENTATION, 1))


def _av(kind: str, source: _Source, subtype: str, deep: bool) -> dict[str, Any]:
    """A video's or audio's format, duration and stream facts from the container and stream headers; a video's
    frames counted from its packets when the container does not say (some AVI). `deep`: read every packet and
    decode the first frame, which finds a cut or damaged file."""
    import av  # noqa: PLC0415 - start-up time: FFmpeg's libraries load only for rows with video or audio

    try:
        container = av.open(source.open(), metadata_errors="ignore")
    except av.FFmpegError as e:
        raise _unopened(kind, source, f"FFmpeg: {e.strerror or e}") from None
    with container:
        names = container.format.name.split(",")
        name = subtype if subtype in names else names[0].removesuffix("_pipe")
        if kind == "video" and any(n.endswith("_pipe") or n == "image2" for n in names):
            raise _Failure("media_unsupported", f"a {name} image, not a video", "give it as an image, or a video file")
        streams = container.streams.video if kind == "video" else container.streams.audio
        if not streams:
            raise _Failure("media_unsupported", f"the {name} file has no {kind} stream", f"give a file with {kind} in it")
        s = streams[0]
        duration = float(s.duration * s.time_base) if s.duration and s.time_base else \
            container.duration / 1_000_000 if container.duration else 0.0
        out: dict[str, Any] = {"format": name, "duration": round(duration, 6)}
        try:
            packets, stamped = _packets(container, s, decode=deep) if deep or (kind == "video" and not s.frames) \
                else (0, 0)
        except av.FFmpegError as e:
            raise _Failure("media_corrupt", f"the {kind} cannot be read ({e.strerror or e})") from None
        if deep and kind == "video" and stamped < s.frames:
            raise _Failure("media_corrupt", f"the video ends after {stamped} of its {s.frames} frames")
        if kind == "audio":
            out["sample_rate"] = s.codec_context.sample_rate or s.sample_rate
            return out
        rate = s.average_rate or s.guessed_rate or s.base_rate
        out.update(fps=round(float(rate), 6) if rate else 0.0, frames=s.frames or packets,
                   width=s.codec_context.width, height=s.codec_context.height)
    if not (out["width"] and out["height"]):
        raise _Failure("media_corrupt", "the video stream has no frame size")
    return out


def _packets(container: Any, stream: Any, *, decode: bool) -> tuple[int, int]:
    """The stream read to its end: its packets with data, and its packets with a time (an AVI's empty packet
    stands for a repeated frame, and is one of the frames its header counts); `decode`: the first frame decoded
    too (a stream that ends before a frame decodes is damaged)."""
    sized = stamped = 0
    decoded = not decode
    for packet in container.demux(stream):
        sized += packet.size > 0
        stamped += packet.size > 0 or packet.pts is not None
        if not decoded:
            decoded = bool(packet.decode())
    if not decoded:
        raise _Failure("media_corrupt", f"no {stream.type} frame decodes")
    return sized, stamped


def thumbnail(path: Path | None, kind: str = "image", size: int = 96) -> str | None:
    """A small JPEG of an image (after its EXIF rotation) or of a video's first frame, as a data URL: a page shows
    it inline, fetching nothing (`prep report`). None when the file cannot be read: the page shows its label alone."""
    if path is None or kind not in ("image", "video"):
        return None
    try:
        from PIL import Image, ImageOps  # noqa: PLC0415 - start-up time: rows with media only

        if kind == "video":
            import av  # noqa: PLC0415 - start-up time: rows with video only

            with av.open(str(path)) as container:
                picture = next(container.decode(video=0)).to_image()
        else:
            with Image.open(path) as im:
                picture = ImageOps.exif_transpose(im)
                picture.load()
        picture.thumbnail((size, size))
        if picture.mode not in ("RGB", "L"):
            picture = picture.convert("RGB")
        out = io.BytesIO()
        picture.save(out, "JPEG", quality=80)
    except Exception:  # noqa: BLE001 - Pillow and PyAV raise many types for a file they cannot read; no thumbnail
        return None
    return "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode()
