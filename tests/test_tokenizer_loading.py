"""prep loads tokenizers with `tokenizers` alone, into the pipeline transformers 5 builds for the same folder,
and the data verbs never import torch or transformers."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import ROOT, SAMPLES, fixture, hf_tokenizer, prep_in_one_interpreter
from prep.core.findings import PrepError
from prep.files import hashing
from prep.render.tokenizer import fingerprint, load_tokenizer

FOLDERS = ["samples", "qwen2.5", "llama3", "phi-3-mini", "smollm3"]


def _folder(name: str) -> Path:
    return SAMPLES / "tokenizer" if name == "samples" else fixture("tokenizers", name)


def _pipeline(backend: Any) -> dict[str, Any]:
    """A backend's JSON with merges in one spelling ("a b" and ["a", "b"] are the same merge)."""
    spec = json.loads(backend.to_str())
    merges = spec["model"].get("merges")
    if merges is not None:
        spec["model"]["merges"] = [m.split(" ") if isinstance(m, str) else m for m in merges]
    return spec


@pytest.mark.parametrize("name", FOLDERS)
def test_the_pipeline_is_the_one_transformers_builds(name: str) -> None:
    folder = _folder(name)
    tok, hf = load_tokenizer(folder), hf_tokenizer(folder)
    assert _pipeline(tok.backend) == _pipeline(hf._tokenizer)
    assert tok.special_tokens == hf.special_tokens_map
    assert (tok.specials.bos, tok.specials.eos) == (hf.bos_token, hf.eos_token)
    assert tok.specials.adds_bos == (hf.bos_token_id is not None and hf("a")["input_ids"][:1] == [hf.bos_token_id])
    assert tok.chat_template() == hf.get_chat_template()
    assert not tok.notes
    ours = tok.fingerprint()
    assert ours == fingerprint(hf)  # the trainer fingerprints transformers' tokenizer of the same folder
    assert {k: ours[k] for k in ("vocab_size", "special_ids", "class")} == {
        "vocab_size": len(hf), "special_ids": {k: getattr(hf, f"{k}_token_id") for k in ("bos", "eos", "pad", "unk")},
        "class": type(hf).__name__}
    text = "Hello world!\n<|im_end|> naïve — 東京 </s> ok."
    assert tok.backend.encode(text, add_special_tokens=False).ids == hf.encode(text, add_special_tokens=False)
    ids = hf.encode(text, add_special_tokens=False)
    assert tok.decode(ids) == hf.decode(ids)


@pytest.mark.parametrize("spm", [False, True], ids=["config-only", "sentencepiece"])
def test_a_folder_without_tokenizer_json_is_one_line_without_transformers(tmp_path: Path, spm: bool,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """transformers would take seconds to start and then print its many-line converter errors: prep says what is
    missing and how to write it, and never imports transformers for it (here it cannot)."""
    folder = tmp_path / "tok"
    folder.mkdir()
    shutil.copy(SAMPLES / "tokenizer" / "tokenizer_config.json", folder)
    if spm:
        (folder / "tokenizer.model").write_bytes(b"\x00")
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(PrepError) as e:
        load_tokenizer(folder)
    held = "a SentencePiece tokenizer.model but " if spm else ""
    assert str(e.value) == f"{folder}: holds {held}no tokenizer.json, which prep loads tokenizers from; write one " \
        f'with transformers: AutoTokenizer.from_pretrained("{folder}").save_pretrained("{folder}")'


def test_the_fingerprint_is_cached_by_the_files_sha256(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREP_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "tok"
    shutil.copytree(SAMPLES / "tokenizer", folder)
    first = load_tokenizer(folder).fingerprint()
    cached = list((tmp_path / "cache" / "fingerprints").iterdir())
    assert len(cached) == 1 and json.loads(cached[0].read_text())["vocab_sha256"] == first["vocab_sha256"]
    cached[0].write_text(json.dumps({**json.loads(cached[0].read_text()), "vocab_size": 7}))
    assert load_tokenizer(folder).fingerprint()["vocab_size"] == 7  # read from the cache, not recomputed
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "model_max_length": 99}))
    again = load_tokenizer(folder).fingerprint()  # other files, another entry
    assert again["vocab_size"] == first["vocab_size"] and again["sha256"] != first["sha256"]



@pytest.mark.parametrize("name", ["samples", "qwen2.5", "phi-3-mini"])
def test_a_bpe_tokenizer_loads_again_from_its_split_kept_in_the_cache(name: str, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The second load of a BPE tokenizer reads the split the first one kept (pipeline, vocab.json, merges.txt, and
    last their sizes) and is the same tokenizer: the same JSON, the same ids. phi-3's merges hold a token with a space,
    which merges.txt cannot: a `none` file says so and it loads from its file. A split cut short (an empty merges.txt
    would load, with other merges) is not read, and one that cannot be read is tried: either way the file loads and
    the split is written again."""
    from tokenizers import Tokenizer as Backend

    from prep.render import tokenizer as module

    monkeypatch.setenv("PREP_CACHE", str(tmp_path / "cache"))
    folder = _folder(name)
    first = load_tokenizer(folder)
    [kept] = (tmp_path / "cache" / "tokenizers").iterdir()
    split = name != "phi-3-mini"
    assert sorted(p.name for p in kept.iterdir()) == \
        (["merges.txt", "split.json", "tokenizer.json", "vocab.json"] if split else ["none"])
    loads: list[Path] = []
    monkeypatch.setattr(module, "_from_split", lambda at, real=module._from_split: loads.append(at) or real(at))
    second = load_tokenizer(folder)
    assert loads == ([kept] if split else [])
    assert second.backend.to_str() == first.backend.to_str()
    original = Backend.from_file(str(folder / "tokenizer.json"))
    assert second.backend.get_vocab() == original.get_vocab()
    texts = ["<|im_start|>user\nHi there, what's 2+2?<|im_end|>\n", "  naïve café\r\n\t中文 🙂 <s></s>", "x" * 300]
    assert [e.ids for e in second.backend.encode_batch(texts)] == [e.ids for e in first.backend.encode_batch(texts)]
    if split:
        for damage in ({"merges.txt": ""}, {"vocab.json": None}):  # None: not JSON, its size kept
            for file, text in damage.items():
                (kept / file).write_text(text if text is not None else "{".ljust((kept / file).stat().st_size))
            loads.clear()
            again = load_tokenizer(folder)
            assert again.backend.to_str() == first.backend.to_str()
            # cut short: not read; unreadable: tried (the split written again is read back where it is written)
            assert [at for at in loads if at == kept] == ([] if "merges.txt" in damage else [kept])
            assert load_tokenizer(folder).backend.to_str() == first.backend.to_str() and loads[-1] == kept  # rewritten


def test_a_tokenizer_file_is_hashed_once_between_runs_until_its_bytes_change(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The fingerprint's file hashes are kept between runs (start-up), by the file's times, size and inode: new bytes
    are hashed again even when the modification time is set back (the change time moves)."""
    monkeypatch.setenv("PREP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(hashing, "_SETTLED_NS", 0)  # a file written just now counts as settled
    path = tmp_path / "tokenizer.json"
    path.write_text("a")
    first = hashing.sha256_kept(path)
    assert first == hashlib.sha256(b"a").hexdigest()
    [kept] = (tmp_path / "cache" / "sha256").iterdir()
    kept.write_text(json.dumps("f" * 64))
    assert hashing.sha256_kept(path) == "f" * 64  # read from the cache, not hashed
    st = path.stat()
    time.sleep(0.05)  # past the kernel's coarse clock, so the change time moves
    path.write_text("b")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert hashing.sha256_kept(path) == hashlib.sha256(b"b").hexdigest()


def test_a_class_prep_does_not_rebuild_loads_through_transformers_with_a_note(tmp_path: Path) -> None:
    folder = tmp_path / "gpt2-like"
    shutil.copytree(SAMPLES / "tokenizer", folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "tokenizer_class": "GPT2Tokenizer"}))
    tok = load_tokenizer(folder)
    assert len(tok.notes) == 1 and "GPT2Tokenizer" in tok.notes[0] and "transformers" in tok.notes[0]
    assert _pipeline(tok.backend) == _pipeline(hf_tokenizer(folder)._tokenizer)


VERBS = {
    "convert": ["convert", "samples/openai.jsonl", "--to", "sharegpt", "-o", "{tmp}/c.jsonl"],
    "validate": ["validate", "samples/openai.jsonl", "--tokenizer", "samples/tokenizer", "--template", "chatml"],
    "template": ["template", "samples/openai.jsonl", "--tokenizer", "samples/tokenizer", "-o", "{tmp}/t.jsonl"],
    "tokenize": ["tokenize", "samples/openai.jsonl", "--tokenizer", "{qwen}", "--template", "chatml", "-o",
                 "{tmp}/tok", "-q"],
    "tokenize (images, video)": ["tokenize", "{mllm}/mllm_demo.json", "{mllm}/mllm_video_demo.json", "--tokenizer",
                                 "{qwen2vl}", "-o", "{tmp}/vl", "-q"],
    "pack": ["pack", "{tmp}/tok", "--max-len", "4096", "-o", "{tmp}/packed"],
    "verify": ["verify", "{tmp}/packed"],
    "inspect": ["inspect", "{tmp}/packed"],
    "stats": ["stats", "{tmp}/packed"],
    "report": ["report", "{tmp}/packed", "-o", "{tmp}/report.html"],
    "export": ["export", "{tmp}/packed", "--to", "jsonl", "-o", "{tmp}/e.jsonl"],
    "mix": ["mix", "samples/openai.jsonl:4", "samples/alpaca.json", "-o", "{tmp}/m.jsonl"],
    "dedup": ["dedup", "samples/openai.jsonl", "samples/alpaca.json", "-o", "{tmp}/d.jsonl"],
    "split": ["split", "samples/openai.jsonl", "--val", "0.2", "-o", "{tmp}/split"],
    "decontaminate": ["decontaminate", "samples/openai.jsonl", "--against", "samples/alpaca.json", "--field",
                      "instruction", "-o", "{tmp}/x.jsonl"],
    "run": ["run", "{tmp}/data-only.yaml", "--set", "output={tmp}/run", "-q"],  # autotrain-csv-dpo without train
}


@pytest.mark.slow
def test_the_data_verbs_import_neither_torch_nor_transformers(tmp_path: Path) -> None:
    """Every verb, in order (pack reads what tokenize wrote), in one fresh interpreter that imported nothing else,
    tokenize also on rows with images and video (Pillow and PyAV probe them, the Qwen2-VL scheme expands them); after
    each, none of the heavy libraries is in sys.modules, nor Ray (the local engine never imports it): a module stays
    imported, so the first verb to import one is the one named."""
    recipe = yaml.safe_load((ROOT / "recipes" / "autotrain-csv-dpo.yaml").read_text(encoding="utf-8"))
    del recipe["train"]
    recipe["inputs"]["files"] = [str(ROOT / "samples" / "autotrain_dpo.csv")]
    recipe["tokenize"]["tokenizer"] = str(ROOT / "samples" / "tokenizer")
    (tmp_path / "data-only.yaml").write_text(yaml.safe_dump(recipe), encoding="utf-8")
    runs = [[a.format(tmp=tmp_path, qwen=fixture("tokenizers", "qwen2.5"), mllm=fixture("data", "llamafactory"),
                      qwen2vl=fixture("processors", "qwen2-vl")) for a in args] for args in VERBS.values()]
    ran, stderr = prep_in_one_interpreter(runs, tmp_path)
    for verb, (code, loaded, _) in zip(VERBS, ran, strict=True):
        assert code in (0, 1, None), (verb, stderr)  # 1: rows rejected, as intended by the data
        assert loaded == [], f"prep {verb} imported {loaded}"
