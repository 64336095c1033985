"""Shard folders whose rows hold media (design §2a): verify, inspect, pack, export and report read them.

The folders are written by the shard writer from rows built as the contract says, over the real Qwen2-VL
tokenizer (`<|vision_start|>` 151652, `<|vision_end|>` 151653, `<|image_pad|>` 151655, `<|video_pad|>` 151656)
with real images made with Pillow; each image's token count is transformers' own sizing of it.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from rich.console import Console

from conftest import fixture, prep_in_one_interpreter
from prep.core.columns import MEDIA_META
from prep.core.findings import Batch, PrepError, Source
from prep.render.tokenizer import load_tokenizer
from prep.shards.layout import read_manifest
from prep.shards.verify import verify
from prep.shards.writer import ShardWriter
from prep.stages.export import export
from prep.stages.inspect import inspect
from prep.stages.pack import pack

VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD = 151652, 151653, 151655, 151656
QWEN2_VL = {"family": "qwen2-vl", "positions": "mrope", "media_tokens": {"image": [IMAGE_PAD], "video": [VIDEO_PAD]},
            "temporal_patch_size": 2}


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(fixture("processors/qwen2-vl"))


def grid_of(width: int, height: int) -> list[int]:
    """Qwen2-VL's (t, h, w) grid for an image, by transformers' own resize rule."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    config = json.loads((fixture("processors/qwen2-vl") / "preprocessor_config.json").read_text())
    h, w = smart_resize(height, width, factor=config["patch_size"] * config["merge_size"],
                        min_pixels=config["min_pixels"], max_pixels=config["max_pixels"])
    return [1, h // config["patch_size"], w // config["patch_size"]]


def image(folder: Path, name: str, size: tuple[int, int], color: tuple[int, int, int] = (200, 40, 40)) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    Image.new("RGB", size, color).save(path)
    return path


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def enc(tok, text: str) -> list[int]:
    return tok.backend.encode(text, add_special_tokens=False).ids


def chat_row(tok, doc_id: str, prompt: str, answer: str, media: list[tuple[Path, int, str]]) -> dict[str, Any]:
    """One supervised row in Qwen2-VL's chat layout: each medium `<|vision_start|>` + its pad run +
    `<|vision_end|>` before the prompt text, the answer trained. `media`: (file, root index, path under it)."""
    ids: list[int] = enc(tok, "<|im_start|>user\n")
    items = []
    for file, root, rel in media:
        from PIL import Image

        with Image.open(file) as im:
            width, height = im.size
        grid = grid_of(width, height)
        n = grid[0] * grid[1] * grid[2] // 4
        ids.append(VISION_START)
        items.append({"type": "image", "sha256": sha(file), "root": root, "path": rel, "start": len(ids),
                      "length": n, "grid": grid, "width": width, "height": height})
        ids += [IMAGE_PAD] * n + [VISION_END]
    ids += enc(tok, f"{prompt}<|im_end|>\n<|im_start|>assistant\n")
    labels = [-100] * len(ids)
    answer_ids = enc(tok, f"{answer}<|im_end|>")
    ids += answer_ids + enc(tok, "\n")
    labels += answer_ids + [-100]
    return {"input_ids": ids, "labels": labels, "seq_lengths": [len(ids)], "num_tokens": len(ids),
            "num_loss_tokens": len(answer_ids), "ids": [doc_id], "media": items}


def write_folder(out: Path, tok, rows: list[dict[str, Any]], roots: list[str], processor: dict | None = QWEN2_VL,
                 max_len: int | None = None, inside: dict[str, Path] | None = None, overflow: str = "drop",
                 kind: str = "sft") -> Path:
    """A shard folder of `rows`, handed to the shard writer as the encoder hands them: the table's `prep.media`
    metadata names the roots the rows' `root` indexes and the files (`inside`: the files of root ".", by their
    path in the folder, given as data URLs, which the writer writes into the folder)."""
    meta = {"tokenizer": tok.fingerprint(), "template": {"name": "qwen2-vl"}, "train_on": "assistant",
            "max_len": max_len, "overflow": overflow, "inputs": []}
    if processor:
        meta["processor"] = processor
    files: dict[str, dict[str, Any]] = {}
    for m in (m for row in rows for m in row["media"]):
        file = (inside or {})[m["path"]] if m["root"] == 0 else Path(roots[m["root"]]) / m["path"]
        url = {"url": "data:image/png;base64," + base64.b64encode(file.read_bytes()).decode()} if m["root"] == 0 else {}
        files.setdefault(m["sha256"], {"sha256": m["sha256"], "root": m["root"], "path": m["path"],
                                       "bytes": file.stat().st_size, "type": m["type"], **url})
    named = {"roots": roots, "files": list(files.values()), "items": sum(len(r["media"]) for r in rows)}
    with ShardWriter(out, kind, meta, media=True) as writer:
        batch: Batch[dict[str, Any]] = Batch()
        for k, row in enumerate(rows):
            batch.add(row, Source("rows.jsonl", k + 1, k + 1))
        writer.account(batch)
        table = pa.Table.from_pylist(rows, schema=writer.schema)
        writer.add(table.replace_schema_metadata({MEDIA_META: json.dumps(named)}))
    return out


def three_rows(tmp_path: Path, tok) -> tuple[list[dict[str, Any]], dict[str, Path]]:
    """Two images under an absolute root (one named by two rows) and one inside the shard folder."""
    pics = tmp_path / "pics"
    a, b = image(pics, "a.png", (640, 480)), image(pics, "b.jpg", (56, 84), (10, 200, 10))
    inner = image(tmp_path / "staging", "c.png", (28, 28), (0, 0, 255))
    rel = f"media/{sha(inner)}.png"
    rows = [chat_row(tok, "r1", "What is this?", "A red square.", [(a, 1, "a.png")]),
            chat_row(tok, "r2", "And these?", "Red, then green.", [(a, 1, "a.png"), (b, 1, "b.jpg")]),
            chat_row(tok, "r3", "A blue dot?", "Yes.", [(inner, 0, rel)])]
    return rows, {rel: inner}


@pytest.fixture
def folder(tmp_path, tok) -> Path:
    rows, inside = three_rows(tmp_path, tok)
    return write_folder(tmp_path / "shards", tok, rows, [".", str(tmp_path / "pics")], inside=inside)


# ---------------------------------------------------------------- the writer


def test_the_manifest_lists_the_roots_and_each_distinct_file_once(folder, tmp_path):
    manifest = read_manifest(folder)
    assert manifest["media_roots"] == [".", str(tmp_path / "pics")]
    assert manifest["media"]["items"] == 4
    files = manifest["media"]["files"]
    assert [(f["root"], f["path"], f["type"]) for f in files] == [
        (1, "a.png", "image"), (1, "b.jpg", "image"), (0, f"media/{sha(tmp_path / 'staging/c.png')}.png", "image")]
    assert files[0]["bytes"] == (tmp_path / "pics/a.png").stat().st_size
    assert manifest["columns"]["media"].startswith("list<item: struct<type: string, sha256: string")


def test_a_640x480_image_is_391_tokens(folder):
    row = pq.read_table(folder / "data/shard-00000.parquet").slice(0, 1).to_pylist()[0]
    assert row["media"][0]["grid"] == [1, 34, 46] and row["media"][0]["length"] == 391


# ---------------------------------------------------------------- verify


def test_verify_passes_a_good_folder(folder):
    result = verify(folder)
    assert result.ok, [str(f) for f in result.findings]
    assert result.rows == 3


def _rewrite(folder: Path, change) -> None:
    """Change the rows of the folder's one shard and re-record its size and hash, as a buggy writer would."""
    path = folder / "data/shard-00000.parquet"
    table = pq.read_table(path)
    rows = table.to_pylist()
    change(rows)
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), path)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["shards"][0].update(sha256=sha(path), bytes=path.stat().st_size)
    (folder / "manifest.json").write_text(json.dumps(manifest))


def _codes(result) -> list[tuple[str, int, str]]:
    return [(f.code, f.line, f.path) for f in result.findings]


def test_verify_finds_a_changed_a_missing_and_a_truncated_media_file(folder, tmp_path):
    image(tmp_path / "pics", "a.png", (640, 480), (1, 2, 3))  # same size on disk? a different picture at least
    (tmp_path / "pics/b.jpg").unlink()
    inner = next((folder / "media").iterdir())
    inner.write_bytes(inner.read_bytes()[:-10])
    result = verify(folder)
    assert not result.ok
    found = {(f.code, f.file, f.line, f.path) for f in result.findings}
    assert ("media_file_changed", "data/shard-00000.parquet", 1, "$.media[0].path") in found  # a.png, row 1
    assert ("media_file_missing", "data/shard-00000.parquet", 2, "$.media[1].path") in found  # b.jpg, row 2
    assert ("media_file_changed", "data/shard-00000.parquet", 3, "$.media[0].path") in found  # truncated, row 3
    assert sum(result.counts[c] for c in ("media_file_changed", "media_file_missing")) == 3


def test_verify_hashes_each_distinct_file_once(folder, monkeypatch):
    import prep.shards.verify as v

    hashed: list[str] = []
    real = v.sha256_file
    monkeypatch.setattr(v, "sha256_file", lambda p, *a: hashed.append(str(p)) or real(p, *a))
    assert verify(folder).ok
    media = [h for h in hashed if not h.endswith(".parquet")]
    assert len(media) == 3 and len(set(media)) == 3  # a.png is named by two rows, hashed once


@pytest.mark.parametrize(("change", "row", "field", "words"), [
    (lambda rows: rows[0]["media"][0].update(start=rows[0]["media"][0]["start"] - 1), 1, "$.media[0].start",
     "not all image tokens"),
    (lambda rows: rows[0]["media"][0].update(length=rows[0]["media"][0]["length"] - 1), 1, "$.input_ids",
     "outside the row's media runs"),
    (lambda rows: rows[0]["media"][0].update(type="video"), 1, "$.media[0].start", "not all video tokens"),
    (lambda rows: rows[1]["media"][1].update(start=rows[1]["media"][0]["start"]), 2, "$.media[1].start",
     "before the previous medium ends"),
    (lambda rows: rows[0]["media"][0].update(start=10_000), 1, "$.media[0].start", "not inside the row"),
    (lambda rows: rows[0]["media"][0].update(root=7), 1, "$.media[0].root", "media_roots"),
    (lambda rows: rows[2].update(media=[]), 3, "$.input_ids", "outside the row's media runs"),
])
def test_verify_finds_media_that_disagree_with_the_ids(folder, change, row, field, words):
    _rewrite(folder, change)
    result = verify(folder)
    bad = [f for f in result.findings if f.code == "bad_media_run"]
    assert bad, _codes(result)
    assert (bad[0].file, bad[0].line, bad[0].path) == ("data/shard-00000.parquet", row, field)
    assert words in bad[0].message


def test_verify_finds_a_trained_media_token(folder):
    def train_the_image(rows):
        m = rows[0]["media"][0]
        rows[0]["labels"][m["start"]] = rows[0]["input_ids"][m["start"]]
        rows[0]["num_loss_tokens"] += 1

    _rewrite(folder, train_the_image)
    result = verify(folder)
    bad = [f for f in result.findings if f.code == "bad_media_run"]
    assert [(f.line, f.path) for f in bad] == [(1, "$.labels")]
    assert "never carry loss" in bad[0].message


# ---------------------------------------------------------------- inspect


def _inspect(folder: Path, row: int, show_ids: bool = False) -> str:
    console = Console(record=True, width=400, color_system="truecolor")
    inspect(folder, row, show_ids=show_ids, console=console)
    return console.export_text()


def test_inspect_shows_each_image_in_place_of_its_pad_run(folder):
    text = _inspect(folder, 1)
    assert "<|vision_start|><image 1: 640×480 → 391 tokens><|vision_end|>" in text
    assert "<|vision_start|><image 2: 56×84 → 6 tokens><|vision_end|>" in text
    assert "<|image_pad|>" not in text
    assert "And these?<|im_end|>" in text and "Red, then green.<|im_end|>" in text
    ids_view = _inspect(folder, 0, show_ids=True)
    assert "<image 1: 640×480 → 391 tokens>" in ids_view and ":151655" not in ids_view
    assert "'<|vision_start|>':151652 " in ids_view


def test_inspect_keeps_the_masks_around_the_image(folder):
    console = Console(record=True, width=400, color_system="truecolor")
    inspect(folder, 0, console=console)
    styled = {}
    for line in console._record_buffer:  # the segments printed, each with its style
        if line.text.strip():
            styled.setdefault(line.text, str(line.style))
    image = next(t for t in styled if t.startswith("<image 1: 640×480"))
    assert "magenta" in styled[image]
    answer = next(t for t in styled if "A red square." in t)
    assert "green" in styled[answer]  # trained
    before = next(t for t in styled if t.endswith("<|vision_start|>"))
    assert "green" not in styled[before]


def test_inspect_names_a_video_by_its_frames(tmp_path, tok):
    rows, inside = three_rows(tmp_path, tok)
    row = rows[0]
    m = row["media"][0]
    a, n = m["start"], m["length"]
    row["input_ids"][a:a + n] = [VIDEO_PAD] * n
    m.update(type="video", grid=[1, 34, 46])  # two frames: one temporal patch
    out = write_folder(tmp_path / "v", tok, rows, [".", str(tmp_path / "pics")], inside=inside)
    assert verify(out).ok
    assert "<video 1: 2 frames 640×480 → 391 tokens>" in _inspect(out, 0)
    manifest = json.loads((out / "manifest.json").read_text())
    del manifest["processor"]  # not recorded: the tokenizer folder's preprocessor_config.json tells the same
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert "<video 1: 2 frames 640×480 → 391 tokens>" in _inspect(out, 0)


# ---------------------------------------------------------------- pack

# A model whose positions are one number per token (LLaVA, Gemma 3, Idefics3): its media pack.
FLAT = {"family": "one-dimensional", "positions": "1d", "media_tokens": {"image": [IMAGE_PAD], "video": [VIDEO_PAD]}}


def _many_rows(tmp_path: Path, tok, n: int = 12) -> tuple[list[dict[str, Any]], dict[str, Path]]:
    """`n` rows with 0, 1 or 2 images of a few sizes, and one image inside the folder."""
    pics = tmp_path / "pics"
    files = [image(pics, f"{w}x{h}.png", (w, h), (w % 255, h % 255, 9)) for w, h in
             ((56, 56), (28, 112), (84, 56), (140, 140))]
    inner = image(tmp_path / "staging", "in.png", (56, 28))
    rel = f"media/{sha(inner)}.png"
    rows = []
    for k in range(n):
        media = [(f, 1, f.name) for f in files[k % 4:k % 4 + k % 3]]
        if k == 5:
            media.append((inner, 0, rel))
        rows.append(chat_row(tok, f"d{k}", "Look " * (k % 5), f"Answer {k}.", media))
    return rows, {rel: inner}


def _runs(table_rows: list[dict[str, Any]]) -> dict[str, list[tuple]]:
    """Per document id, its media as (type, sha256, path, the run's tokens, whether any is trained)."""
    out: dict[str, list[tuple]] = {}
    for row in table_rows:
        at = 0
        for n, doc in zip(row["seq_lengths"], row["ids"], strict=True):
            mine = [m for m in row["media"] if at <= m["start"] < at + n]
            out.setdefault(doc, []).extend(
                (m["type"], m["sha256"], m["path"], tuple(row["input_ids"][m["start"]:m["start"] + m["length"]]),
                 any(x != -100 for x in row["labels"][m["start"]:m["start"] + m["length"]])) for m in mine)
            at += n
    return out


def _rows(folder: Path) -> list[dict[str, Any]]:
    return [r for p in sorted((folder / "data").glob("*.parquet")) for r in pq.read_table(p).to_pylist()]


def test_pack_keeps_each_documents_media_in_order_shifted(tmp_path, tok):
    rows, inside = _many_rows(tmp_path, tok)
    src = write_folder(tmp_path / "tok", tok, rows, [".", str(tmp_path / "pics")], FLAT, inside=inside)
    assert verify(src).ok
    out = tmp_path / "packed"
    result = pack(src, out, max_len=160)
    packed = _rows(out)
    assert any(len(r["seq_lengths"]) > 1 and r["media"] for r in packed)  # documents with media share rows
    assert _runs(packed) == _runs(_rows(src))
    manifest = read_manifest(out)
    assert manifest["media_roots"] == [".", str(src.resolve()), str(tmp_path / "pics")]
    assert manifest["media"]["items"] == read_manifest(src)["media"]["items"] == sum(len(r["media"]) for r in rows)
    assert manifest["processor"] == FLAT
    assert result.tally.written == 12
    check = verify(out)
    assert check.ok, [str(f) for f in check.findings]


@pytest.mark.parametrize("processor", [QWEN2_VL, None])
def test_pack_refuses_media_rows_for_m_rope_and_says_why(tmp_path, tok, processor):
    rows, inside = _many_rows(tmp_path, tok, 4)
    src = write_folder(tmp_path / "tok", tok, rows, [".", str(tmp_path / "pics")], processor, inside=inside)
    with pytest.raises(PrepError) as e:
        pack(src, tmp_path / "packed", max_len=400)
    message = str(e.value)
    assert "M-RoPE" in message or "mrope" in message
    assert "3-D position ids" in message and "Train on the unpacked shards" in message
    assert not (tmp_path / "packed").exists()


def test_pack_of_text_rows_in_a_qwen2_vl_folder_is_not_refused(tmp_path, tok):
    rows = [chat_row(tok, f"t{k}", "Hello " * k, "Hi.", []) for k in range(5)]
    src = write_folder(tmp_path / "tok", tok, rows, ["."], QWEN2_VL)
    pack(src, tmp_path / "packed", max_len=200)
    assert verify(tmp_path / "packed").ok


def test_wrap_never_cuts_inside_a_media_run(tmp_path, tok):
    rows, inside = _many_rows(tmp_path, tok)
    src = write_folder(tmp_path / "tok", tok, rows, [".", str(tmp_path / "pics")], FLAT, inside=inside)
    out = tmp_path / "wrapped"
    pack(src, out, max_len=64, strategy="wrap")
    packed = _rows(out)
    originals = {k: v for k, v in _runs(_rows(src)).items() if v}
    assert any(r["num_tokens"] < 64 for r in packed[:-1])  # some blocks ended early, before a run
    assert all(r["num_tokens"] <= 64 for r in packed)
    kept = [m for r in packed for m in r["media"]]
    assert len(kept) == sum(len(v) for v in originals.values())
    for r in packed:
        for m in r["media"]:
            assert r["input_ids"][m["start"]:m["start"] + m["length"]] == [IMAGE_PAD] * m["length"]
    # the stream of tokens is the same, in order
    assert [t for r in packed for t in r["input_ids"]] == [t for r in rows for t in r["input_ids"]]
    check = verify(out)
    assert check.ok, [str(f) for f in check.findings]


def test_truncate_never_cuts_a_medium(tmp_path, tok):
    pics = tmp_path / "pics"
    big = image(pics, "big.png", (140, 140))  # 25 tokens
    late = chat_row(tok, "late", "x " * 30, "The end.", [])
    late_img = chat_row(tok, "img-late", "y " * 40, "Long answer " * 10, [(big, 1, "big.png")])
    early = chat_row(tok, "img-early", "z", "Long answer " * 40, [(big, 1, "big.png")])
    # the image in img-late sits after a long prompt: move it there, past the cut
    text = enc(tok, "<|im_start|>user\n" + "y " * 40)
    ids = text + [VISION_START] + [IMAGE_PAD] * 25 + [VISION_END] + enc(tok, "ok<|im_end|>\n<|im_start|>assistant\n")
    answer = enc(tok, "Fine.<|im_end|>")
    late_img.update(input_ids=ids + answer, labels=[-100] * len(ids) + answer, seq_lengths=[len(ids) + len(answer)],
                    num_tokens=len(ids) + len(answer), num_loss_tokens=len(answer))
    late_img["media"][0]["start"] = len(text) + 1
    src = write_folder(tmp_path / "tok", tok, [late, late_img, early], [".", str(pics)], FLAT, overflow="truncate")
    assert verify(src).ok
    max_len = len(text) + 10  # cuts inside img-late's image; img-early's image lies before the cut
    assert early["media"][0]["start"] + 25 < max_len - 1 < late_img["num_tokens"]
    rejects = tmp_path / "rejects.jsonl"
    result = pack(src, tmp_path / "packed", max_len=max_len, rejects=str(rejects))
    assert result.tally.rejected == {"too_long": 1}
    reject = json.loads(rejects.read_text().splitlines()[0])
    assert reject["row"]["ids"] == ["img-late"] and "would cut medium 1" in reject["reasons"][0]["message"]
    packed = _rows(tmp_path / "packed")
    (early_row,) = [r for r in packed if "img-early" in r["ids"]]
    assert len(early_row["media"]) == 1
    check = verify(tmp_path / "packed")
    assert check.ok, [str(f) for f in check.findings]


# ---------------------------------------------------------------- export


def test_export_jsonl_writes_each_documents_media_as_references(folder, tmp_path):
    out = tmp_path / "out.jsonl"
    result = export(folder, "jsonl", str(out))
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert result.tally.written == 3 and "media" in result.columns
    first = rows[0]["media"][0]
    assert first["path"] == str((tmp_path / "pics/a.png").resolve()) and first["sha256"] == sha(tmp_path / "pics/a.png")
    assert (first["width"], first["height"], first["grid"], first["length"]) == (640, 480, [1, 34, 46], 391)
    a, b = first["text_span"]
    assert rows[0]["text"][a:b] == "<|image_pad|>" * 391
    assert rows[0]["text"][:a].endswith("<|vision_start|>") and rows[0]["text"][b:].startswith("<|vision_end|>")
    assert [m["path"].rsplit("/", 1)[-1] for m in rows[1]["media"]] == ["a.png", "b.jpg"]
    assert rows[2]["media"][0]["path"] == str((folder / read_manifest(folder)["media"]["files"][2]["path"]).resolve())


def test_export_of_packed_rows_gives_each_document_its_own_media(tmp_path, tok):
    rows, inside = _many_rows(tmp_path, tok)
    src = write_folder(tmp_path / "tok", tok, rows, [".", str(tmp_path / "pics")], FLAT, inside=inside)
    pack(src, tmp_path / "packed", max_len=160)
    exported = {}
    for name in ("tok", "packed"):
        export(tmp_path / name, "jsonl", str(tmp_path / f"{name}.jsonl"))
        exported[name] = {r["id"]: r for r in map(json.loads, (tmp_path / f"{name}.jsonl").read_text().splitlines())}
    assert exported["packed"].keys() == exported["tok"].keys()
    for doc, row in exported["tok"].items():
        assert exported["packed"][doc]["media"] == row["media"], doc


def test_export_hf_dataset_has_media_and_images_for_trl(folder, tmp_path):
    datasets = pytest.importorskip("datasets")
    export(folder, "hf-dataset", str(tmp_path / "ds"))
    ds = datasets.load_from_disk(str(tmp_path / "ds"))
    assert ds.column_names == ["input_ids", "attention_mask", "labels", "media", "images"]
    assert ds[1]["images"] == [str((tmp_path / "pics" / n).resolve()) for n in ("a.png", "b.jpg")]
    assert [m["length"] for m in ds[1]["media"]] == [391, 6]
    from PIL import Image

    assert Image.open(ds[0]["images"][0]).size == (640, 480)


@pytest.mark.parametrize("to", ["axolotl", "together"])
def test_tokenized_parquet_refuses_documents_with_media(tmp_path, tok, to):
    rows = [chat_row(tok, "plain", "Hi", "Hello.", []),
            chat_row(tok, "pic", "This?", "A dot.", [(image(tmp_path / "pics", "d.png", (28, 28)), 1, "d.png")])]
    src = write_folder(tmp_path / "tok", tok, rows, [".", str(tmp_path / "pics")], FLAT)
    result = export(src, to, str(tmp_path / "out.parquet"))
    assert (result.tally.read, result.tally.written, dict(result.tally.rejected)) == (2, 1, {"not_expressible": 1})
    reject = result.tally.examples[0]
    assert reject.row == {"id": "pic"} and "has no place for its images" in reject.findings[0].message
    assert "hf-dataset" in reject.findings[0].hint
    assert pq.read_table(tmp_path / "out.parquet").column_names == ["input_ids", "attention_mask", "labels"]
    assert pq.read_table(tmp_path / "out.parquet").num_rows == 1


# ---------------------------------------------------------------- report


def test_report_samples_show_a_thumbnail_beside_the_tokens(folder, tmp_path):
    import base64

    from PIL import Image

    from prep.stages.report import report

    made = report(folder, str(tmp_path / "r.html"))
    (part,) = made.page["samples"][0]["parts"]
    (medium,) = [r for r in part["runs"] if isinstance(r, dict)]
    thumb = Image.open(io.BytesIO(base64.b64decode(medium["thumb"].split(",", 1)[1])))
    assert thumb.size == (96, 72) and thumb.getpixel((48, 36))[0] > 150  # the red 640×480 picture, small
    html = (tmp_path / "r.html").read_text()
    assert f'<img src="{medium["thumb"]}" alt="&lt;image 1: 640×480 → 391 tokens&gt;">' in html
    (tmp_path / "pics/a.png").unlink()  # a file that is gone: the label alone, the page still made
    again = report(folder, str(tmp_path / "r2.html"))
    (medium,) = [r for r in again.page["samples"][0]["parts"][0]["runs"] if isinstance(r, dict)]
    assert medium["thumb"] is None and medium["media"] == "<image 1: 640×480 → 391 tokens>"


# ---------------------------------------------------------------- the CLI


@pytest.mark.slow
def test_the_verbs_run_from_the_cli_on_media_shards_without_torch_or_transformers(tmp_path, tok):
    """verify, inspect, pack, export and report on shards with media, in order in one fresh interpreter: they work,
    and none imports the heavy libraries (Pillow only where a thumbnail is made)."""
    rows, inside = _many_rows(tmp_path, tok)
    src = write_folder(tmp_path / "tok", tok, rows, [".", str(tmp_path / "pics")], FLAT, inside=inside)
    runs = [["verify", str(src)], ["inspect", str(src), "--row", "2"],
            ["pack", str(src), "--max-len", "160", "-o", str(tmp_path / "packed"), "-q"],
            ["verify", str(tmp_path / "packed")],
            ["export", str(tmp_path / "packed"), "--to", "jsonl", "-o", str(tmp_path / "e.jsonl")],
            ["report", str(tmp_path / "packed"), "-o", str(tmp_path / "r.html")]]
    ran, stderr = prep_in_one_interpreter(runs, tmp_path, COLUMNS="300")
    for args, (code, loaded, _) in zip(runs, ran, strict=True):
        assert code in (0, None) and loaded == [], (args, stderr)
    out = {args[0]: stdout for args, (_, _, stdout) in zip(runs, ran, strict=True)}
    assert "<image 1: 84×56 → 6 tokens>" in out["inspect"] and "<image 2: 140×140 → 25 tokens>" in out["inspect"]
    assert 'class="m m-image"><img src="data:image/jpeg;base64,' in (tmp_path / "r.html").read_text()


# ---------------------------------------------------------------- on what `prep tokenize` writes


def _demo(tmp_path: Path, processor: Path) -> Path:
    """`prep tokenize` of LLaMA-Factory's multimodal demo (6 rows, 8 images of 3 JPEG files, copied into a folder
    of the test's own) with the processor folder `processor`."""
    from conftest import run_prep

    demo = fixture("data", "llamafactory")
    data = tmp_path / "demo"
    shutil.copytree(demo / "mllm_demo_data", data / "mllm_demo_data")
    shutil.copy(demo / "mllm_demo.json", data / "mllm_demo.json")
    done = run_prep("tokenize", str(data / "mllm_demo.json"), "--tokenizer", str(processor), "-o",
                    str(tmp_path / "shards"))
    assert done.returncode == 0, done.stderr.decode()
    assert read_manifest(tmp_path / "shards")["counts"]["written"] == 6
    return tmp_path / "shards"


@pytest.mark.slow
def test_the_verbs_on_qwen2_vl_shards_of_the_llamafactory_demo(tmp_path):
    """The demo tokenized with the Qwen2-VL folder, then from the CLI: verify passes and catches a changed JPEG;
    inspect shows each image as its label; pack is refused (M-RoPE) with the reason; export and report carry the
    images."""
    from conftest import run_prep

    out = _demo(tmp_path, fixture("processors/qwen2-vl"))
    data = tmp_path / "demo"
    done = run_prep("verify", str(out))
    assert done.returncode == 0, (done.stdout + done.stderr).decode()
    done = run_prep("inspect", str(out), "--row", "0")
    shown = " ".join(done.stdout.decode().split())  # as printed, lines wrapped at the terminal's width
    first = pq.read_table(out / "data/shard-00000.parquet").slice(0, 1).to_pylist()[0]
    assert len(first["media"]) == 2
    for k, m in enumerate(first["media"], 1):
        assert f"<image {k}: {m['width']}×{m['height']} → {m['length']} tokens>" in shown
        assert m["length"] == m["grid"][0] * m["grid"][1] * m["grid"][2] // 4
    assert "<|image_pad|>" not in done.stdout.decode()
    done = run_prep("pack", str(out), "--max-len", "4096", "-o", str(tmp_path / "packed"))
    assert done.returncode != 0 and "M-RoPE" in done.stderr.decode() and "Train on the unpacked shards" in done.stderr.decode()
    assert not (tmp_path / "packed").exists()
    done = run_prep("export", str(out), "--to", "jsonl", "-o", str(tmp_path / "e.jsonl"))
    assert done.returncode == 0, done.stderr.decode()
    rows = [json.loads(line) for line in (tmp_path / "e.jsonl").read_text().splitlines()]
    assert sum(len(r["media"]) for r in rows) == 8
    assert {r["media"][0]["path"] for r in rows} <= {str((data / f"mllm_demo_data/{k}.jpg").resolve()) for k in (1, 2, 3)}
    done = run_prep("report", str(out), "-o", str(tmp_path / "r.html"))
    assert done.returncode == 0, done.stderr.decode()
    assert (tmp_path / "r.html").read_text().count('<img src="data:image/jpeg;base64,') >= 1
    jpeg = data / "mllm_demo_data/1.jpg"
    body = bytearray(jpeg.read_bytes())
    body[len(body) // 2] ^= 0xFF  # one byte changed, the size the same
    jpeg.write_bytes(bytes(body))
    done = run_prep("verify", str(out))
    assert done.returncode == 1 and "media_file_changed" in (done.stdout + done.stderr).decode()


@pytest.mark.slow
def test_llava_shards_of_the_demo_pack_and_verify(tmp_path):
    """LLaVA (576 `<image>` per image, positions one per token): the demo's shards pack, each document's images in
    order in the packed rows, and both folders verify."""
    from test_vision_tokenize import _llava_folder

    _demo(tmp_path, _llava_folder(tmp_path)).rename(tmp_path / "tok")
    assert verify(tmp_path / "tok").ok
    pack(tmp_path / "tok", tmp_path / "packed", max_len=4096)
    check = verify(tmp_path / "packed")
    assert check.ok, [str(f) for f in check.findings]
    packed = _rows(tmp_path / "packed")
    assert len(packed) < 6 and _runs(packed) == _runs(_rows(tmp_path / "tok"))
    assert {len(run[3]) for runs in _runs(packed).values() for run in runs} == {576}


# ---------------------------------------------------------------- mix


def test_mix_of_shard_folders_keeps_their_media(tmp_path, tok):
    """Two folders with media (each with a file of its own root ".") and one without: the mixed rows name the same
    files, under one list of roots, and the mixed folder verifies."""
    from prep.stages.mix import mix

    rows_a, inside_a = three_rows(tmp_path / "a", tok)
    a = write_folder(tmp_path / "a" / "shards", tok, rows_a, [".", str(tmp_path / "a" / "pics")], inside=inside_a)
    rows_b, inside_b = _many_rows(tmp_path / "b", tok, 6)
    b = write_folder(tmp_path / "b" / "shards", tok, rows_b, [".", str(tmp_path / "b" / "pics")], inside=inside_b)
    c = write_folder(tmp_path / "c", tok, [chat_row(tok, "plain", "Hi", "Hello.", [])], ["."])
    result = mix([f"{a}", f"{b}:x2", f"{c}"], str(tmp_path / "mixed"))
    assert result.tally.written == 3 + 12 + 1
    manifest = read_manifest(tmp_path / "mixed")
    assert manifest["media_roots"] == [".", str(a.resolve()), str(tmp_path / "a/pics"), str(b.resolve()),
                                       str(tmp_path / "b/pics")]
    assert manifest["media"]["items"] == 4 + 2 * sum(len(r["media"]) for r in rows_b)
    check = verify(tmp_path / "mixed")
    assert check.ok, [str(f) for f in check.findings]
    mixed = _runs(_rows(tmp_path / "mixed"))
    assert all(mixed[doc] == runs for doc, runs in _runs(_rows(a)).items())



# ---------------------------------------------------------------- preference shards


def test_dpo_shards_with_media_in_the_prompt(tmp_path, tok):
    """dpo rows hold their media in prompt_input_ids: verify checks them there, inspect labels them, jsonl and
    hf-dataset carry them."""
    row = chat_row(tok, "p1", "Which colour?", "Red.", [(image(tmp_path / "pics", "a.png", (640, 480)), 1, "a.png")])
    prompt = row["input_ids"][:-len(enc(tok, "Red.<|im_end|>\n"))]
    dpo = {"prompt_input_ids": prompt, "chosen_input_ids": enc(tok, "Red.<|im_end|>"),
           "rejected_input_ids": enc(tok, "Blue.<|im_end|>"), "ids": ["p1"], "media": row["media"]}
    dpo["num_tokens"] = sum(len(dpo[c]) for c in ("prompt_input_ids", "chosen_input_ids", "rejected_input_ids"))
    folder = write_folder(tmp_path / "dpo", tok, [dpo], [".", str(tmp_path / "pics")], kind="dpo")
    assert verify(folder).ok
    shown = " ".join(_inspect(folder, 0).split())
    assert "<|vision_start|><image 1: 640×480 → 391 tokens><|vision_end|>Which colour?" in shown
    export(folder, "jsonl", str(tmp_path / "d.jsonl"))
    (line,) = [json.loads(x) for x in (tmp_path / "d.jsonl").read_text().splitlines()]
    assert line["chosen"] == "Red.<|im_end|>" and line["media"][0]["path"] == str((tmp_path / "pics/a.png").resolve())
    bad = dict(dpo, media=[{**row["media"][0], "start": row["media"][0]["start"] + 1}])
    broken = write_folder(tmp_path / "bad", tok, [bad], [".", str(tmp_path / "pics")], kind="dpo")
    found = [(f.code, f.line, f.path) for f in verify(broken).findings]
    assert ("bad_media_run", 1, "$.media[0].start") in found

def test_thumbnails_of_an_image_a_video_and_a_broken_file(tmp_path):
    import base64

    import av
    import numpy as np
    from PIL import Image

    from prep.files.media import thumbnail

    def picture(url: str) -> Image.Image:
        return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))

    tall = image(tmp_path, "tall.png", (30, 300), (0, 200, 0))
    assert picture(thumbnail(tall)).size == (10, 96)
    video = tmp_path / "clip.mp4"
    with av.open(str(video), "w") as container:
        stream = container.add_stream("mpeg4", rate=4)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        for k in range(4):
            frame = av.VideoFrame.from_ndarray(np.full((120, 160, 3), (250, 10 * k, 10), np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    first = picture(thumbnail(video, "video"))
    assert first.size == (96, 72) and first.getpixel((48, 36))[0] > 200  # the first frame: red
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really")
    assert thumbnail(broken) is None and thumbnail(tmp_path / "gone.png") is None
    assert thumbnail(tall, "audio") is None


@pytest.mark.slow
def test_qwen2_vl_video_shards_of_the_demo_verify_and_show_their_frames(tmp_path):
    """`prep tokenize` of LLaMA-Factory's video demo (mp4 and avi) with the Qwen2-VL folder: the folder verifies,
    inspect names each video by its sampled frames, and packing is refused."""
    from conftest import run_prep

    demo = fixture("data", "llamafactory")
    shutil.copytree(demo / "mllm_demo_data", tmp_path / "mllm_demo_data")
    shutil.copy(demo / "mllm_video_demo.json", tmp_path / "v.json")
    folder = tmp_path / "shards"
    done = run_prep("tokenize", str(tmp_path / "v.json"), "--tokenizer", str(fixture("processors/qwen2-vl")), "-o",
                    str(folder))
    assert done.returncode == 0, done.stderr.decode()
    check = verify(folder)
    assert check.ok, [str(f) for f in check.findings]
    for k, row in enumerate(_rows(folder)):
        (m,) = row["media"]
        assert m["type"] == "video" and set(row["input_ids"][m["start"]:m["start"] + m["length"]]) == {VIDEO_PAD}
        label = f"<video 1: {m['grid'][0] * 2} frames {m['width']}×{m['height']} → {m['length']} tokens>"
        assert label in " ".join(_inspect(folder, k).split())
    with pytest.raises(PrepError, match="M-RoPE"):
        pack(folder, tmp_path / "packed", max_len=8192)
