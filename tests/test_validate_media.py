"""`prep validate`, media rules: every image, video and audio of a row opened and decoded, each problem a finding
at the field the row wrote the medium in; the same medium twice is a warning; OpenAI's and Together's rules for
images in files in OpenAI's format.

The rules are run on records as the readers deliver them (`record["media"]`, design §2a); the end-to-end runs of
`prep validate` on files need readers that fill `record["media"]`, and skip (saying so) where they do not yet."""

from __future__ import annotations

import base64
import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from conftest import fixture, run_prep
from media_util import DEMO, data_url, make_audio, make_image, make_video
from prep.checks.dataset_stats import Stats
from prep.checks.rules import media
from prep.core.findings import RowError
from prep.files.media import Limits
from prep.formats import make_options, module
from prep.stages.validate import Report
from prep.stages.validate_report import summary_lines


def lf_record(root: Path, *items: tuple[str, str]) -> dict[str, Any]:
    """A LLaMA-Factory row as its reader gives it: one placeholder per item in the user message, the items from
    the `images`/`videos`/`audios` columns (kind, path relative to `root`)."""
    seen: Counter[str] = Counter()
    out = []
    for kind, path in items:
        out.append({"type": kind, "path": path, "root": str(root), "at": f"$.{kind}s[{seen[kind]}]"})
        seen[kind] += 1
    marks = "".join(f"<{kind}>" for kind, _ in items)
    return {"id": "r:1", "messages": [{"role": "user", "content": f"{marks}What is this?"},
                                      {"role": "assistant", "content": "A test pattern."}], "media": out}


def openai_record(*parts: tuple[str, str, str], answer_parts: tuple[tuple[str, str], ...] = ()) -> dict[str, Any]:
    """An OpenAI row as its reader gives it: content parts (kind, url, JSON path of the url) become placeholders,
    in order, the user's first and then the assistant's."""
    items = [{"type": kind, "url": url, "at": at} for kind, url, at in parts]
    items += [{"type": "image", "url": url, "at": at} for url, at in answer_parts]
    user = "".join(f"<{kind}>" for kind, _, _ in parts) + "What is this?"
    answer = "<image>" * len(answer_parts) + "A test pattern."
    return {"id": "r:1", "messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}],
            "media": items}


def codes(found: list[Any]) -> set[tuple[str, str]]:
    return {(f.code, f.path) for f in found}


def part_url(i: int, message: int = 0) -> str:
    return f"$.messages[{message}].content[{i}].image_url.url"


# ---- every medium opened and decoded


def test_good_media_pass_and_are_counted(tmp_path: Path) -> None:
    make_image(tmp_path / "a.jpg")
    make_image(tmp_path / "b.png", (20, 20), "RGBA")
    make_video(tmp_path / "c.mp4")
    make_audio(tmp_path / "d.wav")
    counts: Counter[str] = Counter()
    record = lf_record(tmp_path, ("image", "a.jpg"), ("image", "b.png"), ("video", "c.mp4"), ("audio", "d.wav"))
    assert media.check(record, "sharegpt", counts=counts) == []
    stats = Stats(media=counts)
    assert stats.to_dict()["media_checked"] == {"image": {"items": 2, "with_errors": 0},
                                                "video": {"items": 1, "with_errors": 0},
                                                "audio": {"items": 1, "with_errors": 0}}
    assert "media opened and decoded: 2 images, 1 video, 1 audio; 0 with errors" in summary_lines(Report(stats=stats))
    other = Stats(media=Counter({"image": 3, "image errors": 1}))
    stats.merge(other)  # a Ray worker's batch
    assert stats.to_dict()["media_checked"]["image"] == {"items": 5, "with_errors": 1}


def test_each_broken_medium_is_a_finding_at_its_field(tmp_path: Path) -> None:
    whole = make_image(tmp_path / "whole.jpg", (300, 200), quality=95).read_bytes()
    (tmp_path / "cut.jpg").write_bytes(whole[:len(whole) // 2])
    (tmp_path / "zero.png").write_bytes(b"")
    (tmp_path / "words.jpg").write_text("a caption, not a picture\n")
    (tmp_path / "folder.jpg").mkdir()
    make_image(tmp_path.parent / f"{tmp_path.name}-outside.jpg")
    clip = make_video(tmp_path / "clip.mp4", frames=60, size=(160, 120)).read_bytes()
    (tmp_path / "cut.mp4").write_bytes(clip[:len(clip) // 2])
    make_audio(tmp_path / "tone.wav")
    record = lf_record(tmp_path, ("image", "whole.jpg"), ("image", "cut.jpg"), ("image", "zero.png"),
                       ("image", "words.jpg"), ("image", "missing.jpg"), ("image", "folder.jpg"),
                       ("image", f"../{tmp_path.name}-outside.jpg"), ("video", "cut.mp4"), ("video", "tone.wav"))
    counts: Counter[str] = Counter()
    found = media.check(record, "alpaca", counts=counts)
    assert codes(found) == {("media_corrupt", "$.images[1]"), ("media_empty", "$.images[2]"),
                            ("media_unsupported", "$.images[3]"), ("media_missing", "$.images[4]"),
                            ("media_unreadable", "$.images[5]"), ("media_outside_root", "$.images[6]"),
                            ("media_corrupt", "$.videos[0]"), ("media_unsupported", "$.videos[1]")}
    assert all(f.severity == "error" and f.hint for f in found)
    assert counts["image errors"] == 6 and counts["video errors"] == 2 and counts["image"] == 7


def test_limits_come_from_the_options(tmp_path: Path) -> None:
    make_image(tmp_path / "wide.png", (400, 100))
    make_audio(tmp_path / "tone.wav", seconds=1.0)
    record = lf_record(tmp_path, ("image", "wide.png"), ("audio", "tone.wav"))
    assert media.check(record, "sharegpt") == []
    small = Limits(pixels=39_999, seconds=0.5)
    assert codes(media.check(record, "sharegpt", small)) == {("media_too_large", "$.images[0]"),
                                                             ("media_too_large", "$.audios[0]")}
    assert codes(media.check(record, "sharegpt", Limits(bytes=1000))) == {("media_too_large", "$.images[0]"),
                                                                          ("media_too_large", "$.audios[0]")}


def test_the_same_medium_twice_is_a_warning(tmp_path: Path) -> None:
    make_image(tmp_path / "a.jpg")
    shutil.copy(tmp_path / "a.jpg", tmp_path / "copy.jpg")
    make_image(tmp_path / "b.jpg", (10, 10))
    found = media.check(lf_record(tmp_path, ("image", "a.jpg"), ("image", "b.jpg"), ("image", "copy.jpg"),
                                  ("image", "a.jpg")), "sharegpt")
    assert codes(found) == {("duplicate_media", "$.images[2]"), ("duplicate_media", "$.images[3]")}
    assert all(f.severity == "warning" and "$.images[0]" in f.message for f in found)


def test_a_url_prep_does_not_fetch_is_a_warning(tmp_path: Path) -> None:
    record = lf_record(tmp_path, ("image", "x"))
    record["media"][0] = {"type": "image", "url": "https://example.com/cat.jpg", "at": "$.images[0]"}
    (f,) = media.check(record, "sharegpt")
    assert (f.code, f.severity, f.path) == ("media_not_local", "warning", "$.images[0]")


# ---- OpenAI's and Together's rules, for files in OpenAI's format


def test_valid_openai_images_pass(tmp_path: Path) -> None:
    urls = [data_url(make_image(tmp_path / "a.jpg"), "image/jpeg"),
            data_url(make_image(tmp_path / "b.png", (16, 16), "RGBA"), "image/png"),
            data_url(make_image(tmp_path / "c.webp", (16, 8)), "image/webp")]
    record = openai_record(*[("image", u, part_url(i + 1)) for i, u in enumerate(urls)])
    assert media.check(record, "openai") == []


def test_openai_target_rules(tmp_path: Path) -> None:
    jpeg = data_url(make_image(tmp_path / "a.jpg"), "image/jpeg")
    gif = data_url(make_image(tmp_path / "a.gif", mode="P"), "image/gif")
    clip = data_url(make_video(tmp_path / "a.mp4"), "video/mp4")
    record = openai_record(("image", "https://example.com/cat.png", part_url(1)), ("image", gif, part_url(2)),
                           ("video", clip, "$.messages[0].content[3].video_url.url"),
                           answer_parts=((jpeg, part_url(0, 1)),))
    assert codes(media.check(record, "openai")) == {
        ("bad_image", part_url(1)),  # not a data URL (and not fetched, so no other finding)
        ("bad_image", part_url(2)),  # a GIF
        ("media_not_allowed", "$.messages[0].content[3].video_url.url"),
        ("image_not_allowed", part_url(0, 1)),  # in the assistant's answer
    }
    # The same row in another format (TRL, LLaMA-Factory) trains locally: no target rules.
    assert codes(media.check(record, "trl")) == {("media_not_local", part_url(1))}
    # Nor LLaMA-Factory's messages with an images column, which read as OpenAI's format.
    assert media.check(lf_record(tmp_path, ("image", "a.gif"), ("video", "a.mp4")), "openai") == []


def test_at_most_ten_images_of_at_most_ten_megabytes(tmp_path: Path) -> None:
    pngs = [data_url(make_image(tmp_path / f"{i}.png", (8 + i, 8)), "image/png") for i in range(11)]
    record = openai_record(*[("image", u, part_url(i + 1)) for i, u in enumerate(pngs)])
    assert codes(media.check(record, "openai")) == {("too_many_images", "$")}
    assert media.check(openai_record(*[("image", u, part_url(i + 1)) for i, u in enumerate(pngs[:10])]),
                       "openai") == []
    noise = np.random.default_rng(0).integers(0, 256, (1900, 2000, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "noise.png", compress_level=0)
    assert (tmp_path / "noise.png").stat().st_size > 10 * 2**20
    (f,) = media.check(openai_record(("image", data_url(tmp_path / "noise.png", "image/png"), part_url(1))), "openai")
    assert (f.code, f.path) == ("image_too_large", part_url(1)) and "10.9 MB" in f.message


# ---- prep validate on files (needs readers that fill record["media"])


def _reads_media(fmt: str, row: dict[str, Any]) -> bool:
    try:
        return "media" in module(fmt).read(row, make_options(fmt, {}))
    except RowError:
        return False


_LF_ROW = {"instruction": "<image>Who?", "input": "", "output": "A cat.", "images": ["a.jpg"]}
_OPENAI_ROW = {"messages": [{"role": "user", "content": [
    {"type": "text", "text": "Who?"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
    {"role": "assistant", "content": "A cat."}]}
needs_lf_media = pytest.mark.skipif(not _reads_media("alpaca", _LF_ROW),
                                    reason="the LLaMA-Factory readers do not fill record['media'] yet (mm-formats)")
needs_openai_media = pytest.mark.skipif(not _reads_media("openai", _OPENAI_ROW),
                                        reason="the OpenAI reader does not fill record['media'] yet (mm-formats)")


def _prep(*args: str) -> tuple[int, str, str]:
    """`prep ARGS` as a user runs it: exit code, standard output and error."""
    done = run_prep(*args)
    return done.returncode, done.stdout.decode(), done.stderr.decode()


def _write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@needs_lf_media
def test_prep_validate_names_file_line_and_field_of_each_broken_medium(tmp_path: Path) -> None:
    make_image(tmp_path / "img" / "good.jpg")
    whole = make_image(tmp_path / "img" / "whole.jpg", (300, 200), quality=95).read_bytes()
    (tmp_path / "img" / "cut.jpg").write_bytes(whole[:len(whole) // 2])
    make_video(tmp_path / "clip.mp4")

    def row(n: int, images: list[str], text: str = "<image>Who is this?", **extra: Any) -> dict[str, Any]:
        return {"instruction": text, "input": "", "output": f"Person number {n}.", "images": images, **extra}

    data = _write(tmp_path / "mm.jsonl", [
        row(1, ["img/good.jpg"]),
        row(2, ["img/cut.jpg"]),                                        # a truncated JPEG
        row(3, ["img/nope.jpg"]),                                       # missing
        row(4, ["img/good.jpg", "img/good.jpg"], "<image><image>Twice?"),  # the same image twice (a warning)
        row(5, ["img/good.jpg"], "No placeholder."),                    # placeholders and images disagree
        row(6, ["../outside.jpg"]),                                     # leaves the dataset's folder
        row(7, [], "<video>What happens?", videos=["clip.mp4"]),
    ])
    report = tmp_path / "report.json"
    code, out, err = _prep("validate", str(data), "--report", str(report))
    assert code == 1, err
    got = {(f["line"], f["code"], f["path"]) for f in json.loads(report.read_text())["findings"]}
    assert got == {(2, "media_corrupt", "$.images[0]"), (3, "media_missing", "$.images[0]"),
                   (4, "duplicate_media", "$.images[1]"), (5, "media_count_mismatch", "$.images"),
                   (6, "media_outside_root", "$.images[0]")}
    assert all(f["file"] == str(data) for f in json.loads(report.read_text())["findings"])
    assert "media opened and decoded: 6 images, 1 video; 3 with errors" in out


@needs_lf_media
def test_the_llamafactory_demo_validates_clean(tmp_path: Path) -> None:
    """The demo's media all open and decode; its first row names the same image in two turns (a warning)."""
    demo = fixture(*DEMO).parent
    for name, shown, warned in (("mllm_demo.json", "8 images", 2), ("mllm_video_demo.json", "3 videos", 0),
                                ("mllm_audio_demo.json", "3 audios", 0),
                                ("mllm_video_audio_demo.json", "3 videos, 3 audios", 0)):
        report = tmp_path / f"{name}.report.json"
        code, out, err = _prep("validate", str(demo / name), "--report", str(report))
        assert code == 0, out + err
        assert f"media opened and decoded: {shown}; 0 with errors" in out
        findings = json.loads(report.read_text())["findings"]
        assert [f["code"] for f in findings] == ["duplicate_media"] * warned


@needs_openai_media
def test_together_style_multimodal_rows_pass(tmp_path: Path) -> None:
    jpeg = base64.b64encode(make_image(tmp_path / "a.jpg").read_bytes()).decode()
    rows = [{"messages": [{"role": "user", "content": [
        {"type": "text", "text": "How many stripes?"},
        {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{jpeg}"}}]},
        {"role": "assistant", "content": "Three."}]}]
    code, out, err = _prep("validate", str(_write(tmp_path / "together.jsonl", rows)), "--strict")
    assert code == 0, out + err
    assert "media opened and decoded: 1 image; 0 with errors" in out


def test_the_limit_options_are_checked_as_every_option_is(tmp_path: Path) -> None:
    data = _write(tmp_path / "t.jsonl", [{"instruction": "Hi", "input": "", "output": "Hello."}])
    for flag, value, words in (("--max-media-pixels", "0", "must be an integer of at least 1"),
                               ("--max-media-bytes", "-5", "must be an integer of at least 1"),
                               ("--max-media-seconds", "0", "must be a number above 0")):
        code, _, err = _prep("validate", str(data), flag, value)
        assert code == 2 and words in err, err
    assert _prep("validate", str(data), "--max-media-seconds", "0.5", "--max-media-pixels", "10")[0] == 0
