"""Media as a writer of rows takes them (design §2a): inlined as data URLs (OpenAI, Together), or as paths relative to
the output's folder (LLaMA-Factory, TRL), a medium outside that folder, or one that came as a data URL, written into
the media folder as `<sha256>.<ext>` (hard-linked where the file system allows, else copied; data URLs decoded).
Media are opened through `files.media` (a path that leaves its root is refused there, and a missing or damaged
file, or a data URL that is not base64 of its type, is the finding validate gives).

Files named by their content: a file already there is the same bytes, so a re-run, another output into the same
folder or several workers write each medium once. They are written while the rows are, so a run that fails may
leave media behind in the media folder, which the next run uses.
"""

from __future__ import annotations

import base64
import hashlib
import mimetypes
import os
import shutil
from dataclasses import dataclass
from pathlib import PurePosixPath

from prep.core.findings import PrepError
from prep.core.media import Item, location
from prep.files.atomic import replaced
from prep.files.errors import os_error_message
from prep.files.media import data, locate, probe

# What the platform's MIME table spells otherwise, or lacks (OpenAI's input_audio names mp3 and wav).
_EXTENSION = {"image/jpeg": ".jpg", "audio/mpeg": ".mp3", "audio/mp3": ".mp3", "audio/wav": ".wav",
              "audio/x-wav": ".wav", "audio/wave": ".wav", "audio/flac": ".flac", "audio/x-flac": ".flac",
              "audio/ogg": ".ogg", "video/mp4": ".mp4", "video/x-msvideo": ".avi", "video/avi": ".avi",
              "video/webm": ".webm", "video/quicktime": ".mov", "image/webp": ".webp"}
_MIME = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp", ".gif": "image/gif",
         ".wav": "audio/wav", ".mp3": "audio/mpeg", ".flac": "audio/flac", ".ogg": "audio/ogg", ".mp4": "video/mp4",
         ".avi": "video/x-msvideo", ".webm": "video/webm", ".mov": "video/quicktime", ".mkv": "video/x-matroska"}

MEDIA_DIR = "media"  # where media go beside an output by default


@dataclass(frozen=True)
class MediaOut:
    """Where a writer's rows go (`folder`, absolute: written paths are relative to it) and its media folder
    (`media_dir`, absolute, inside `folder`)."""

    folder: str
    media_dir: str

    @classmethod
    def beside(cls, output: str, media_dir: str | None = None) -> MediaOut:
        """For rows written to `output` (`-`: standard output, paths relative to the current folder), media into
        `media_dir` (default `media/` beside the output), which must lie inside the output's folder: the paths
        written are relative to it, and a reader refuses one that leaves its root."""
        folder = os.path.abspath(os.path.dirname(output) if output not in ("-", "") else ".")
        target = os.path.abspath(media_dir) if media_dir else os.path.join(folder, MEDIA_DIR)
        if os.path.commonpath([folder, target]) != folder:
            raise PrepError(f"--media-dir {media_dir}: must be inside the output's folder {folder} (the rows name "
                            "their media by paths relative to it)")
        return cls(folder, target)

    def place(self, media: list[Item], spelling: str) -> list[Item]:
        """The record's media as the writer spells them: `data_url` (every medium a URL; files inlined) or `files`
        (a file a path relative to `folder`; a data URL written as a file; an http(s) URL kept)."""
        return [self._inline(item) if spelling == "data_url" else self._file(item) for item in media]

    def _inline(self, item: Item) -> Item:
        if "url" in item:
            return item
        source = str(locate(item))
        return {"type": item["type"], "at": item.get("at"),
                "url": f"data:{_mime(source, item)};base64,{base64.b64encode(data(item)).decode('ascii')}"}

    def _file(self, item: Item) -> Item:
        if "url" in item and not item["url"].startswith("data:"):
            return item
        if "url" in item:
            blob = data(item)
            target = os.path.join(self.media_dir, hashlib.sha256(blob).hexdigest() + extension(item))
            if not os.path.exists(target):
                self._write(target, item, data=blob)
        else:
            source = str(locate(item))
            if os.path.commonpath([self.folder, source]) == self.folder:
                return {"type": item["type"], "path": _relative(source, self.folder), "at": item.get("at")}
            sha = probe(item)["sha256"]  # the file's findings (missing, unreadable, ...) as validate gives them
            target = os.path.join(self.media_dir, sha + (os.path.splitext(source)[1].lower() or _guess_ext(item)))
            if not os.path.exists(target):
                self._write(target, item, source=source)
        return {"type": item["type"], "path": _relative(target, self.folder), "at": item.get("at")}

    def _write(self, target: str, item: Item, data: bytes | None = None, source: str | None = None) -> None:
        """The medium at `target`, whole: hard-linked to `source` where the file system allows, else copied (or
        `data` written) under a temporary name and renamed into place."""
        try:
            os.makedirs(self.media_dir, exist_ok=True)
            if source is not None:
                try:
                    os.link(source, target)
                    return
                except FileExistsError:
                    return
                except OSError:
                    pass  # another file system, or links not allowed: copy
            with replaced(target) as tmp:
                if source is not None:
                    shutil.copyfile(source, tmp)
                else:
                    tmp.write_bytes(data or b"")
        except OSError as e:
            raise PrepError(f"cannot write {location(item)} into the media folder: {os_error_message(e)}") from None


def _relative(path: str, folder: str) -> str:
    return PurePosixPath(*os.path.relpath(path, folder).split(os.sep)).as_posix()


def extension(item: Item) -> str:
    """The file extension a data URL's MIME type names."""
    mime = item["url"][len("data:"):].split(",", 1)[0].split(";", 1)[0].strip().lower()
    return _EXTENSION.get(mime) or mimetypes.guess_extension(mime) or _guess_ext(item)


def _guess_ext(item: Item) -> str:
    return {"image": ".img", "video": ".video", "audio": ".audio"}[item["type"]]


def _mime(source: str, item: Item) -> str:
    ext = os.path.splitext(source)[1].lower()
    return _MIME.get(ext) or mimetypes.guess_type(source)[0] or f"{item['type']}/{ext.lstrip('.') or 'unknown'}"

