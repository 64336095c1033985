"""prep.files.media: where a medium is (never outside its root), its bytes, and what its header tells, checked
against what Pillow and PyAV say when they decode all of it; every way a medium can be wrong is its own finding
naming the item's field."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import av
import pytest

from conftest import fixture
from media_util import (
    DEMO,
    data_url,
    decoded_audio,
    decoded_image,
    decoded_video,
    make_audio,
    make_image,
    make_video,
    sha256,
)
from prep.core.findings import RowError
from prep.files.media import Limits, data, locate, probe


def item(path: str | Path, root: Path | None, kind: str = "image", at: str = "$.images[0]") -> dict[str, Any]:
    return {"type": kind, "path": str(path), "root": None if root is None else str(root), "at": at}


def url_item(url: str, kind: str = "image") -> dict[str, Any]:
    return {"type": kind, "url": url, "at": "$.messages[0].content[1].image_url.url"}


def refused(code: str, it: dict[str, Any], deep: bool = True, **kw: Any) -> str:
    """The one finding probing `it` gives: its code and field checked, its message returned."""
    with pytest.raises(RowError) as e:
        probe(it, deep=deep, **kw)
    (f,) = e.value.findings
    assert (f.code, f.path) == (code, it["at"]), str(f)
    assert f.hint
    return f.message


# ---- images


@pytest.mark.parametrize(("name", "size", "mode", "fmt"), [
    ("rgb.jpg", (64, 48), "RGB", "jpeg"),
    ("rgba.png", (40, 30), "RGBA", "png"),
    ("gray.png", (33, 17), "L", "png"),
    ("one.png", (1, 1), "RGB", "png"),
    ("tall.jpg", (28, 5000), "RGB", "jpeg"),
    ("pic.webp", (50, 20), "RGB", "webp"),
    ("pic.gif", (21, 13), "P", "gif"),
    ("pic.bmp", (9, 7), "RGB", "bmp"),
    ("pic.tiff", (12, 34), "RGB", "tiff"),
])
def test_an_image_probe_is_what_pillow_decodes(tmp_path: Path, name: str, size: tuple[int, int], mode: str,
                                               fmt: str) -> None:
    path = make_image(tmp_path / "img" / name, size, mode)
    got = probe(item(f"img/{name}", tmp_path), deep=True)
    assert (got["width"], got["height"]) == decoded_image(path) == size
    assert got["format"] == fmt
    assert got["sha256"] == sha256(path) and got["bytes"] == path.stat().st_size
    assert got["path"] == f"img/{name}" and got["at"] == "$.images[0]"  # the item, plus what was found


@pytest.mark.parametrize("name", ["turned.jpg", "turned.png", "turned.webp"])
def test_exif_rotation_swaps_width_and_height_as_exif_transpose_does(tmp_path: Path, name: str) -> None:
    path = make_image(tmp_path / name, (40, 20), orientation=6)
    for deep in (False, True):
        got = probe(item(name, tmp_path), deep=deep)
        assert (got["width"], got["height"]) == decoded_image(path) == (20, 40)
    flipped = make_image(tmp_path / "flipped.jpg", (40, 20), orientation=2)  # a mirror: no quarter turn
    assert (probe(item("flipped.jpg", tmp_path))["width"], decoded_image(flipped)) == (40, (40, 20))


def test_a_truncated_jpeg_opens_but_does_not_decode(tmp_path: Path) -> None:
    whole = make_image(tmp_path / "whole.jpg", (300, 200), quality=95).read_bytes()
    (tmp_path / "cut.jpg").write_bytes(whole[:len(whole) * 6 // 10])
    cut = item("cut.jpg", tmp_path)
    assert probe(cut)["width"] == 300  # the header alone (tokenize) is fine
    assert "cannot be decoded" in refused("media_corrupt", cut)
    assert "cannot be decoded" in refused("media_corrupt", cut)  # and remembered so
    (tmp_path / "stub.jpg").write_bytes(whole[:10])  # not even a header: still a JPEG's first bytes
    refused("media_corrupt", item("stub.jpg", tmp_path))


def test_empty_text_and_foreign_files(tmp_path: Path) -> None:
    (tmp_path / "zero.jpg").write_bytes(b"")
    assert "empty" in refused("media_empty", item("zero.jpg", tmp_path))
    (tmp_path / "notes.jpg").write_text("not a picture at all\n")
    refused("media_unsupported", item("notes.jpg", tmp_path))
    make_image(tmp_path / "pic.ppm", (5, 5))
    assert "PPM" in refused("media_unsupported", item("pic.ppm", tmp_path))
    make_audio(tmp_path / "tone.wav")
    refused("media_unsupported", item("tone.wav", tmp_path))


def test_missing_and_unreadable(tmp_path: Path) -> None:
    assert str(tmp_path / "nope.jpg") in refused("media_missing", item("nope.jpg", tmp_path))
    refused("media_missing", item("no/such/folder.jpg", tmp_path))
    (tmp_path / "folder.jpg").mkdir()
    assert "folder" in refused("media_unreadable", item("folder.jpg", tmp_path))
    os.mkfifo(tmp_path / "pipe.jpg")  # opening it would wait for a writer forever
    refused("media_unreadable", item("pipe.jpg", tmp_path))
    if os.geteuid() != 0:  # root reads any file
        make_image(tmp_path / "secret.jpg").chmod(0)
        refused("media_unreadable", item("secret.jpg", tmp_path))


def test_limits(tmp_path: Path) -> None:
    make_image(tmp_path / "pic.png", (100, 50))
    it = item("pic.png", tmp_path)
    assert "5,000 pixels" in refused("media_too_large", it, limits=Limits(pixels=4999))
    assert probe(it, limits=Limits(pixels=5000))["width"] == 100
    refused("media_too_large", it, limits=Limits(bytes=10))
    make_video(tmp_path / "clip.mp4", frames=12, fps=6)
    assert "2.0 s" in refused("media_too_large", item("clip.mp4", tmp_path, "video"), limits=Limits(seconds=1.5))
    make_audio(tmp_path / "tone.wav", seconds=0.5)
    refused("media_too_large", item("tone.wav", tmp_path, "audio"), limits=Limits(seconds=0.25))


def test_a_changed_file_is_probed_again(tmp_path: Path) -> None:
    """Probes are cached by path, size and modification time: a file rewritten is read anew."""
    path = make_image(tmp_path / "pic.png", (10, 10))
    first = probe(item("pic.png", tmp_path))
    make_image(path, (12, 11))
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    second = probe(item("pic.png", tmp_path))
    assert (first["width"], second["width"], second["height"]) == (10, 12, 11)
    assert second["sha256"] == sha256(path) != first["sha256"]


# ---- where: a medium never leaves its root


def test_paths_that_leave_the_root_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "data"
    make_image(root / "in.jpg")
    make_image(tmp_path / "x.jpg")
    for escape in ("../x.jpg", "sub/../../x.jpg", "/etc/passwd", str(tmp_path / "x.jpg")):
        with pytest.raises(RowError) as e:
            locate(item(escape, root))
        assert [(f.code, f.path) for f in e.value.findings] == [("media_outside_root", "$.images[0]")]
        with pytest.raises(RowError):
            probe(item(escape, root))
    (root / "link.jpg").symlink_to(tmp_path / "x.jpg")
    (root / "dir").symlink_to(tmp_path)
    for link in ("link.jpg", "dir/x.jpg"):
        refused("media_outside_root", item(link, root))
    # inside the root: a relative path, the same path written absolute, `..` that stays in, a link within
    (root / "same.jpg").symlink_to(root / "in.jpg")
    for inside in ("in.jpg", str(root / "in.jpg"), "sub/../in.jpg", "same.jpg"):
        assert locate(item(inside, root)).resolve() == (root / "in.jpg").resolve()
        assert probe(item(inside, root))["sha256"] == sha256(root / "in.jpg")


def test_an_item_without_a_root_is_read_from_the_current_folder(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    make_image(tmp_path / "here.jpg")
    monkeypatch.chdir(tmp_path)
    assert probe(item("here.jpg", None))["width"] == 64
    with pytest.raises(RowError):
        locate(item("../here.jpg", None))


# ---- data URLs and other URLs


def test_a_data_url_probes_as_its_file_does(tmp_path: Path) -> None:
    path = make_image(tmp_path / "pic.png", (30, 20), "RGBA")
    got = probe(url_item(data_url(path, "image/png")), deep=True)
    on_disk = probe(item("pic.png", tmp_path))
    for key in ("sha256", "bytes", "format", "width", "height"):
        assert got[key] == on_disk[key]
    assert data(url_item(data_url(path, "image/png"))) == path.read_bytes() == data(item("pic.png", tmp_path))
    clip = make_video(tmp_path / "clip.mp4")
    assert probe(url_item(data_url(clip, "video/mp4"), "video"), deep=True)["frames"] == 12
    tone = make_audio(tmp_path / "tone.flac", codec="flac")
    assert probe(url_item(data_url(tone, "audio/flac"), "audio"))["sample_rate"] == 8000


def test_bad_data_urls(tmp_path: Path) -> None:
    png = base64.b64encode(make_image(tmp_path / "pic.png").read_bytes()).decode()
    for url in (f"data:image/png;base64,{png[:-3]}!!!",  # not base64
                f"data:image/png,{png}",  # not said to be base64
                f"data:text/plain;base64,{png}",  # not an image's type
                "data:image/png;base64"):  # no payload at all
        refused("bad_media", url_item(url))
    refused("media_empty", url_item("data:image/png;base64,"))
    refused("media_unsupported", url_item("data:image/png;base64," + base64.b64encode(b"plain text").decode()))
    truncated = base64.b64encode(make_image(tmp_path / "p.jpg", (200, 200)).read_bytes()[:900]).decode()
    refused("media_corrupt", url_item(f"data:image/jpeg;base64,{truncated}"))


def test_http_urls_are_never_fetched(tmp_path: Path) -> None:
    web = url_item("https://example.com/cat.jpg")
    assert probe(web, deep=True) == web
    with pytest.raises(RowError) as e:
        data(web)
    assert e.value.findings[0].code == "media_not_local"


# ---- video and audio


@pytest.mark.parametrize(("name", "codec"), [("clip.mp4", "libx264"), ("clip.avi", "mpeg4"), ("clip.mkv", "libx264"),
                                             ("clip.webm", "libvpx-vp9")])
def test_a_video_probe_is_what_pyav_decodes(tmp_path: Path, name: str, codec: str) -> None:
    if codec.startswith("libvpx"):
        try:
            av.codec.Codec(codec, "w")
        except av.FFmpegError:
            pytest.skip(f"FFmpeg here has no {codec} encoder")
    path = make_video(tmp_path / name, frames=15, fps=5, size=(48, 32), codec=codec)
    for deep in (False, True):
        got = probe(item(name, tmp_path, "video", "$.videos[0]"), deep=deep)
        want = decoded_video(path)
        assert (got["frames"], got["width"], got["height"]) == (want["frames"], 48, 32) == (15, 48, 32)
        assert got["fps"] == want["fps"] == 5.0
        assert got["duration"] == pytest.approx(3.0, abs=0.21)
        assert got["sha256"] == sha256(path)


def test_a_container_without_a_frame_count_is_counted_from_packets(tmp_path: Path) -> None:
    path = make_video(tmp_path / "clip.mkv", frames=23, fps=10)
    with av.open(str(path)) as c:
        assert c.streams.video[0].frames == 0  # Matroska does not say
    assert probe(item("clip.mkv", tmp_path, "video"))["frames"] == decoded_video(path)["frames"] == 23


def test_a_cut_video_is_corrupt(tmp_path: Path) -> None:
    whole = make_video(tmp_path / "whole.mp4", frames=60, size=(160, 120)).read_bytes()
    (tmp_path / "cut.mp4").write_bytes(whole[:len(whole) // 2])
    refused("media_corrupt", item("cut.mp4", tmp_path, "video"))
    # The index first (a web video): the header opens whole, and reading the packets finds the cut.
    with av.open(str(tmp_path / "fast.mp4"), "w", options={"movflags": "faststart"}) as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        for i in range(60):
            frame = av.VideoFrame.from_ndarray(__import__("numpy").random.default_rng(i).integers(
                0, 255, (120, 160, 3), dtype="uint8"), format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    fast = (tmp_path / "fast.mp4").read_bytes()
    (tmp_path / "fastcut.mp4").write_bytes(fast[:len(fast) // 2])
    it = item("fastcut.mp4", tmp_path, "video")
    assert probe(it)["frames"] == 60
    assert "ends after" in refused("media_corrupt", it)


def test_streams_of_the_wrong_kind(tmp_path: Path) -> None:
    make_video(tmp_path / "mute.mp4")
    make_video(tmp_path / "talk.mp4", audio=True)
    make_audio(tmp_path / "tone.wav")
    make_image(tmp_path / "pic.jpg")
    assert "no audio stream" in refused("media_unsupported", item("mute.mp4", tmp_path, "audio"))
    assert probe(item("talk.mp4", tmp_path, "audio"))["sample_rate"] == 16000  # audio read out of a video
    assert "no video stream" in refused("media_unsupported", item("tone.wav", tmp_path, "video"))
    assert "not a video" in refused("media_unsupported", item("pic.jpg", tmp_path, "video"))
    (tmp_path / "notes.mp4").write_text("words, not frames\n")
    refused("media_unsupported", item("notes.mp4", tmp_path, "video"))
    (tmp_path / "cut.wav").write_bytes((tmp_path / "tone.wav").read_bytes()[:30])
    refused("media_corrupt", item("cut.wav", tmp_path, "audio"))


@pytest.mark.parametrize(("name", "codec", "rate"), [("tone.wav", "pcm_s16le", 8000), ("tone.flac", "flac", 16000),
                                                     ("tone.mp3", "libmp3lame", 22050)])
def test_an_audio_probe_is_what_pyav_decodes(tmp_path: Path, name: str, codec: str, rate: int) -> None:
    path = make_audio(tmp_path / name, seconds=0.75, rate=rate, codec=codec)
    got = probe(item(name, tmp_path, "audio", "$.audios[0]"), deep=True)
    want = decoded_audio(path)
    assert got["sample_rate"] == want["sample_rate"] == rate
    assert got["duration"] == pytest.approx(want["duration"], abs=0.06)
    assert got["format"] == name.rsplit(".", 1)[1]


# ---- the real demo media (LLaMA-Factory's mllm_demo_data)


def test_the_demo_media_probe_as_they_decode() -> None:
    folder = fixture(*DEMO)
    root = folder.parent
    for path in sorted(folder.iterdir()):
        kind = {".jpg": "image", ".mp4": "video", ".avi": "video"}.get(path.suffix, "audio")
        got = probe(item(f"{folder.name}/{path.name}", root, kind), deep=True)
        assert got["sha256"] == sha256(path) and got["bytes"] == path.stat().st_size
        if kind == "image":
            assert (got["width"], got["height"]) == decoded_image(path) and got["format"] == "jpeg"
        elif kind == "video":
            want = decoded_video(path)
            assert {k: got[k] for k in want} == pytest.approx(want, abs=1e-6), path.name
            assert got["format"] == path.suffix[1:]
        else:
            want = decoded_audio(path)
            assert got["sample_rate"] == want["sample_rate"]
            assert got["duration"] == pytest.approx(want["duration"], abs=0.06), path.name
    assert probe(item(f"{folder.name}/2.avi", root, "video"))["frames"] == 270


def test_importing_the_module_loads_neither_pillow_nor_pyav() -> None:
    code = "import sys, prep.files.media; print(sorted({'PIL', 'av'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert out.stdout.strip() == "[]"
