"""Media in every format (design §2a): read into `record["media"]` with placeholders in the text, paths resolved
from the media root, written back as each format spells them, every item and its sha256 kept through round trips.
On LLaMA-Factory's multimodal demo (images, videos, audio) and on rows made here."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from conftest import fixture, run_prep
from media_util import data_url, make_audio, make_image
from prep.core.findings import Batch
from prep.formats.inputs import Inputs, read_inputs
from prep.stages.convert import convert
from validate_util import found, run

DEMOS = {"mllm_demo": 6, "mllm_video_demo": 3, "mllm_audio_demo": 3, "mllm_video_audio_demo": 3}
COLUMNS = {"image": "images", "video": "videos", "audio": "audios"}


@pytest.fixture(scope="module")
def registry() -> Path:
    return fixture("data", "llamafactory", "dataset_info.json")


def records(inputs: Inputs) -> tuple[list[dict[str, Any]], list[Any]]:
    got: list[dict[str, Any]] = []
    rejects: list[Any] = []
    batch: Batch[Any]
    for batch in read_inputs(inputs):
        got += batch.items
        rejects += batch.rejects
    return got, rejects


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# ---------------------------------------------------------------- reading LLaMA-Factory's demo


@pytest.mark.parametrize("name", DEMOS)
def test_every_demo_row_is_read_with_its_media_resolved_and_counted(registry: Path, name: str) -> None:
    source = json.loads((registry.parent / f"{name}.json").read_text(encoding="utf-8"))
    got, rejects = records(Inputs(registry=str(registry), datasets=[name]))
    assert (len(got), rejects) == (DEMOS[name], [])
    for row, record in zip(source, got, strict=True):
        media = record["media"]
        for kind, column in COLUMNS.items():  # the counts equal the columns, the n-th item is the n-th path
            assert [i["path"] for i in media if i["type"] == kind] == row.get(column, [])
        for item in media:
            assert item["root"] == str(registry.parent)  # the registry's folder: LLaMA-Factory's dataset_dir
            assert (Path(item["root"]) / item["path"]).is_file()
        placeholders = "".join(m["content"] for m in record["messages"]).count
        assert [placeholders(f"<{k}>") for k in COLUMNS] == [len(row.get(c, [])) for c in COLUMNS.values()]
    # the same file read directly (OpenAI-style messages beside an images column): the file's folder is the root
    direct, rejects = records(Inputs(files=[str(registry.parent / f"{name}.json")]))
    assert rejects == [] and [r["media"] for r in direct] == [r["media"] for r in got]


def test_the_demo_converts_without_dropping_its_media_columns(registry: Path, tmp_path: Path) -> None:
    done = run_prep("convert", str(registry.parent / "mllm_video_audio_demo.json"), "--to", "trl",
                    "-o", str(tmp_path / "o.jsonl"))
    assert done.returncode == 0, done.stderr.decode()
    assert b"dropped" not in done.stderr and b"read 3, wrote 3, rejected 0" in done.stderr


# ---------------------------------------------------------------- round trips


def test_llamafactory_to_openai_data_urls_to_llamafactory_files(registry: Path, tmp_path: Path) -> None:
    """Every medium of the four demos goes to OpenAI as a data URL and comes back as a file under --media-dir named
    by its sha256, the same bytes, in the same place of the same row."""
    oa, back = tmp_path / "a" / "oa.jsonl", tmp_path / "b" / "sg.jsonl"
    oa.parent.mkdir()
    result = convert(Inputs(registry=str(registry), datasets=list(DEMOS)), "openai", str(oa))
    assert (result.tally.read, result.tally.written) == (15, 15)
    sources = [row for name in DEMOS for row in json.loads((registry.parent / f"{name}.json").read_text("utf-8"))]
    wanted = [{c: [sha((registry.parent / p).read_bytes()) for p in row.get(c, [])] for c in COLUMNS.values()}
              for row in sources]
    parts = [[p for m in row["messages"] if isinstance(m["content"], list) for p in m["content"]]
             for row in lines(oa)]
    urls = [{c: [sha(base64.b64decode(_payload(p))) for p in ps if p["type"] == t]
             for c, t in (("images", "image_url"), ("videos", "video_url"), ("audios", "input_audio"))}
            for ps in parts]
    assert urls == wanted
    assert all(p["input_audio"]["format"] in ("mp3", "wav", "flac") for ps in parts for p in ps
               if p["type"] == "input_audio")
    done = run_prep("convert", str(oa), "--to", "sharegpt", "-o", str(back), "--media-dir", str(tmp_path / "b" / "m"))
    assert done.returncode == 0, done.stderr.decode()
    rows = lines(back)
    for row, want, source in zip(rows, wanted, sources, strict=True):
        for column, hashes in want.items():
            paths = row.get(column, [])
            assert [Path(p).parent.as_posix() for p in paths] == ["m"] * len(hashes)
            assert [Path(p).stem for p in paths] == hashes  # named by sha256 ...
            assert [sha((back.parent / p).read_bytes()) for p in paths] == hashes  # ... and the same bytes
        assert [t["value"] for t in row["conversations"]] == [m["content"] for m in source["messages"]]
    assert sum(len(h) for w in wanted for h in w.values()) == 8 + 6 + 6  # images, videos, audio clips
    # alpaca (LLaMA-Factory's other layout; the multi-turn rows as history), and back to records: the same media
    alpaca = tmp_path / "b" / "alpaca.json"
    assert run_prep("convert", str(oa), "--to", "alpaca", "-o", str(alpaca)).returncode == 0
    again, rejects = records(Inputs(files=[str(alpaca)]))
    assert rejects == [] and [{c: [sha(Path(i["root"], i["path"]).read_bytes()) for i in r["media"] if COLUMNS[i["type"]] == c]
             for c in COLUMNS.values()} for r in again] == wanted


def _payload(part: dict[str, Any]) -> str:
    if part["type"] == "input_audio":
        return part["input_audio"]["data"]
    return part[part["type"]]["url"].split(",", 1)[1]


def test_openai_to_trl_to_openai_keeps_every_medium(tmp_path: Path) -> None:
    """Generated images, audio and the demo's video as OpenAI parts; TRL's layout (bare parts, paths in columns,
    files under media/) in between; the same rows back."""
    clip = fixture("data", "llamafactory", "mllm_demo_data", "1.mp4")
    made = [make_image(tmp_path / "red.png", (3, 2)), make_image(tmp_path / "tall.png", (1, 7)),
            make_audio(tmp_path / "tone.wav")]
    video, (red, blue, sound) = clip.read_bytes(), (p.read_bytes() for p in made)
    rows = [
        {"messages": [{"role": "system", "content": "Describe."},
                      {"role": "user", "content": [{"type": "text", "text": "Compare "},
                                                   {"type": "image_url", "image_url": {"url": data_url(made[0], "image/png")}},
                                                   {"type": "text", "text": " and "},
                                                   {"type": "image_url", "image_url": {"url": data_url(made[1], "image/png")}}]},
                      {"role": "assistant", "content": "Red, then blue."}]},
        {"messages": [{"role": "user", "content": [{"type": "input_audio",
                                                    "input_audio": {"data": base64.b64encode(sound).decode(),
                                                                    "format": "wav"}},
                                                   {"type": "text", "text": "What is this sound?"}]},
                      {"role": "assistant", "content": "A ramp."},
                      {"role": "user", "content": [{"type": "video_url",
                                                    "video_url": {"url": data_url(clip, "video/mp4")}}]},
                      {"role": "assistant", "content": "A clip."}]},
        {"messages": [{"role": "user", "content": "No media here."}, {"role": "assistant", "content": "Fine."}]},
    ]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    trl, back = tmp_path / "t" / "trl.jsonl", tmp_path / "o" / "oa.jsonl"
    for src, to, out in ((source, "trl", trl), (trl, "openai", back)):
        out.parent.mkdir()
        done = run_prep("convert", str(src), "--to", to, "-o", str(out), "--no-ids")
        assert done.returncode == 0 and b"dropped" not in done.stderr, done.stderr.decode()
    middle = lines(trl)
    assert middle[0]["images"] == [f"media/{sha(red)}.png", f"media/{sha(blue)}.png"]
    assert (middle[1]["audios"], middle[1]["videos"]) == ([f"media/{sha(sound)}.wav"], [f"media/{sha(video)}.mp4"])
    assert middle[0]["messages"][1]["content"] == [{"type": "text", "text": "Compare "}, {"type": "image"},
                                                   {"type": "text", "text": " and "}, {"type": "image"}]
    assert [(trl.parent / p).read_bytes() for p in middle[0]["images"]] == [red, blue]
    assert "images" not in middle[2] and middle[2]["messages"][0]["content"] == "No media here."
    assert lines(back) == rows


def test_lf_parts_media_round_trip_through_sharegpt(tmp_path: Path) -> None:
    """LLaMA-Factory v1's image_url/video_url/audio_url parts: read, written as sharegpt columns, and back."""
    pics = tmp_path / "pics"
    pics.mkdir()
    make_image(pics / "a.png")
    make_audio(pics / "b.wav")
    row = {"messages": [
        {"role": "user", "content": [{"type": "image_url", "value": "pics/a.png"}, {"type": "text", "value": "Hear "},
                                     {"type": "audio_url", "value": "pics/b.wav"}], "loss_weight": 0.0},
        {"role": "assistant", "content": [{"type": "text", "value": "Green and a ramp."}], "loss_weight": 1.0}]}
    v1 = tmp_path / "v1.jsonl"
    v1.write_text(json.dumps(row) + "\n")
    sg, again = tmp_path / "sg.jsonl", tmp_path / "again.jsonl"
    assert run_prep("convert", str(v1), "--to", "sharegpt", "-o", str(sg), "--no-ids").returncode == 0
    written = lines(sg)[0]
    assert (written["images"], written["audios"]) == (["pics/a.png"], ["pics/b.wav"])  # inside the output's folder
    assert written["conversations"][0]["value"] == "<image>Hear <audio>"
    assert run_prep("convert", str(sg), "--to", "lf_parts", "-o", str(again), "--no-ids").returncode == 0
    assert lines(again) == [row]


# ---------------------------------------------------------------- roots, refusals, findings


def test_media_root_resolves_relative_paths(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "store" / "img").mkdir(parents=True)
    image = make_image(tmp_path / "store" / "img" / "a.png")
    rows = tmp_path / "data" / "rows.json"
    rows.write_text(json.dumps([{"instruction": "<image>What colour?", "input": "", "output": "Grey.",
                                 "images": ["img/a.png"]}]))
    out = tmp_path / "data" / "oa.jsonl"
    missing = run_prep("convert", str(rows), "--to", "openai", "-o", str(out))
    assert missing.returncode == 1 and b"media_missing" in missing.stderr  # data/img/a.png does not exist
    done = run_prep("convert", str(rows), "--to", "openai", "-o", str(out), "--media-root", str(tmp_path / "store"))
    assert done.returncode == 0, done.stderr.decode()
    part = lines(out)[0]["messages"][0]["content"][0]
    assert part == {"type": "image_url", "image_url": {"url": data_url(image, "image/png")}}
    assert run_prep("validate", str(rows), "--media-root", str(tmp_path / "store")).returncode == 0
    assert b"media_missing" in run_prep("validate", str(rows)).stdout
    got, _ = records(Inputs(files=[str(rows)], media_root=str(tmp_path / "store")))
    assert got[0]["media"] == [{"type": "image", "path": "img/a.png", "root": str(tmp_path / "store"),
                                "at": "$.images[0]"}]


def test_paths_that_leave_their_root_are_refused_with_the_field(tmp_path: Path) -> None:
    secret = tmp_path / "secret.png"
    make_image(secret)
    (tmp_path / "data").mkdir()
    make_image(tmp_path / "data" / "fine.png")
    rows = [{"conversations": [{"from": "human", "value": "<image>Hi"}, {"from": "gpt", "value": "Hello"}],
             "images": [path]} for path in ("../secret.png", str(secret), "ok/../../secret.png", "ok/../fine.png")]
    data = tmp_path / "data" / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = run(data)
    assert found(report) == {(n, "media_outside_root", "$.images[0]") for n in (1, 2, 3)}
    for to in ("openai", "sharegpt"):  # inlined or referenced: refused either way (files.media.locate)
        out, rejects = tmp_path / "data" / f"o-{to}.jsonl", tmp_path / f"rej-{to}.jsonl"
        done = run_prep("convert", str(data), "--to", to, "-o", str(out), "--rejects", str(rejects))
        assert done.returncode == 1 and len(lines(out)) == 1
        assert [(r["line"], r["reasons"][0]["code"], r["reasons"][0]["path"]) for r in lines(rejects)] == [
            (n, "media_outside_root", "$.images[0]") for n in (1, 2, 3)]


def test_a_placeholder_mismatch_is_a_finding_naming_the_column(tmp_path: Path) -> None:
    """The seeds' row (an image, no <image>): LLaMA-Factory's training refuses it (mm_plugin's _validate_messages);
    so does prep, naming the column, renamed by a registry too."""
    (tmp_path / "images").mkdir()
    make_image(tmp_path / "images" / "cat.jpg")
    seed = {"instruction": "이미지를 설명해줘", "input": "", "output": "이건 고양이야", "images": ["images/cat.jpg"]}
    data = tmp_path / "seed.json"
    data.write_text(json.dumps([seed, {**seed, "instruction": "<image>이미지를 설명해줘"}], ensure_ascii=False))
    assert found(run(data)) == {(1, "media_count_mismatch", "$.images")}
    renamed = tmp_path / "renamed.json"
    renamed.write_text(json.dumps([{**{k: v for k, v in seed.items() if k != "images"}, "pics": seed["images"]}]))
    (tmp_path / "dataset_info.json").write_text(json.dumps({"cats": {"file_name": "renamed.json", "columns": {
        "prompt": "instruction", "query": "input", "response": "output", "images": "pics"}}}))
    _, rejects = records(Inputs(registry=str(tmp_path), datasets=["cats"]))
    assert [(r.findings[0].code, r.findings[0].path) for r in rejects] == [("media_count_mismatch", "$.pics")]


def test_formats_that_cannot_hold_media_refuse_it(registry: Path, tmp_path: Path) -> None:
    for to in ("autotrain", "text"):
        result = convert(Inputs(registry=str(registry), datasets=["mllm_demo"]), to, str(tmp_path / f"{to}.jsonl"))
        assert (result.tally.written, dict(result.tally.rejected)) == (0, {"not_expressible": 6})


def test_a_media_dir_outside_the_output_folder_is_refused(tmp_path: Path, registry: Path) -> None:
    done = run_prep("convert", str(registry.parent / "mllm_demo.json"), "--to", "sharegpt",
                    "-o", str(tmp_path / "out" / "o.jsonl"), "--media-dir", str(tmp_path / "elsewhere"))
    assert done.returncode == 2 and b"must be inside the output's folder" in done.stderr


# ---------------------------------------------------------------- Together's own multimodal files


def together_files(cat: str, dog: str) -> dict[str, list[dict[str, Any]]]:
    """together-python's tests/unit/test_files_checks.py: its two valid multimodal files, as written there but for
    the image payloads, which Together's test elides as `data:image/jpeg;base64,...` (not base64: Together only
    looks at the prefix; prep decodes every image, so two real JPEGs stand in)."""
    question = {"type": "text", "text": "What's the difference between these two images?"}
    first, second = ({"type": "image_url", "image_url": {"url": url}} for url in (cat, dog))
    return {"valid_instruction_multimodal.jsonl": [{
                "prompt": [question, first, second],
                "completion": "The first image is a cat, the second image is a dog."}],
            "valid_conversational_multimodal_single_turn.jsonl": [{"messages": [
                {"role": "user", "content": [question, first, second]},
                {"role": "assistant", "content": [{"type": "text", "text": "Hi there!"}]}]}]}


@pytest.mark.parametrize("name", together_files("", ""))
def test_togethers_valid_multimodal_files_pass_validate(tmp_path: Path, name: str) -> None:
    jpegs = [data_url(make_image(tmp_path / f"{n}.jpg", (32 + n, 24)), "image/jpeg") for n in range(2)]
    path = tmp_path / name
    rows = together_files(*jpegs)[name]
    path.write_text("\n".join(json.dumps(item) for item in rows))  # as Together's test writes them
    done = run_prep("validate", str(path))
    assert done.returncode == 0 and b"; 0 errors, 0 warnings" in done.stdout, done.stdout.decode() + done.stderr.decode()
    got, rejects = records(Inputs(files=[str(path)]))
    assert rejects == [] and [i["type"] for i in got[0]["media"]] == ["image", "image"]
    user = (got[0].get("messages") or got[0].get("prompt"))[0]
    assert user["content"] == "What's the difference between these two images?<image><image>"


def test_a_recipe_converts_media_beside_its_stage_output(registry: Path, tmp_path: Path) -> None:
    """`prep run`: media_root in inputs (relative to the recipe), and the convert stage's files under its own
    media/ folder, which the next stage reads from the stage's folder."""
    recipe = tmp_path / "mm.yaml"
    recipe.write_text(f"name: mm\noutput: runs\ninputs:\n  files: [{registry.parent / 'mllm_demo.json'}]\n"
                      f"  media_root: {registry.parent}\nconvert:\n  to: sharegpt\nvalidate: {{}}\n")
    done = run_prep("run", str(recipe))
    assert done.returncode == 0, done.stderr.decode()
    stage = next((tmp_path / "runs").rglob("data.jsonl")).parent
    rows = lines(stage / "data.jsonl")
    assert len(rows) == 6 and all((stage / p).is_file() and p.startswith("media/") for r in rows for p in r["images"])
