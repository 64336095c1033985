"""LLaMA-Factory registries: every demo file of the shared fixtures converted through its
dataset_info.json entry, counts and contents checked; num_samples; refused entries."""

from __future__ import annotations

import base64
import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from conftest import SAMPLES, fixture, run_prep
from prep.formats.inputs import Inputs
from prep.stages.convert import convert


def through_registry(registry: Path | str, name: str, tmp_path: Path, to: str = "openai",
                     seed: int = 42) -> tuple[Any, list[dict[str, Any]]]:
    out = tmp_path / f"{name}-{seed}.jsonl"
    result = convert(Inputs(registry=str(registry), datasets=[name], seed=seed), to, str(out))
    return result.tally, [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def registry() -> Path:
    return fixture("data", "llamafactory", "dataset_info.json")


def test_alpaca_demo(registry: Path, tmp_path: Path) -> None:
    tally, rows = through_registry(registry, "alpaca_en_demo", tmp_path)
    assert (tally.read, tally.written, tally.rejected_total) == (999, 999, 0)
    source = json.loads(fixture("data", "llamafactory", "alpaca_en_demo.json").read_text(encoding="utf-8"))
    for row, src in zip(rows, source, strict=True):
        query = "\n".join(q for q in (src["instruction"], src["input"]) if q)
        assert row["messages"] == [{"role": "user", "content": query}, {"role": "assistant", "content": src["output"]}]
    assert rows[0]["id"] == "alpaca_en_demo.json:1" and rows[-1]["id"] == "alpaca_en_demo.json:999"


def test_glaive_function_calls_become_openai_tool_calls(registry: Path, tmp_path: Path) -> None:
    tally, rows = through_registry(registry, "glaive_toolcall_en_demo", tmp_path)
    assert (tally.read, tally.written) == (300, 300)
    source = json.loads(fixture("data", "llamafactory", "glaive_toolcall_en_demo.json").read_text(encoding="utf-8"))
    calls = results = 0
    for row, src in zip(rows, source, strict=True):
        turns, messages = src["conversations"], row["messages"]
        assert len(messages) == len(turns)
        for turn, m, prev in zip(turns, messages, [None, *messages[:-1]], strict=True):
            if turn["from"] == "function_call":
                calls += 1
                spec = json.loads(turn["value"])
                (call,) = m["tool_calls"]
                assert m["role"] == "assistant" and m["content"] == ""
                assert call["type"] == "function" and call["function"]["name"] == spec["name"]
                assert json.loads(call["function"]["arguments"]) == spec["arguments"]  # openai: JSON text
            elif turn["from"] == "observation":
                results += 1
                assert m["role"] == "tool" and m["content"] == turn["value"]
                assert m["tool_call_id"] == prev["tool_calls"][0]["id"]
            else:
                assert m == {"role": {"human": "user", "gpt": "assistant"}[turn["from"]], "content": turn["value"]}
        specs = json.loads(src["tools"])
        assert row.get("tools", []) == [{"type": "function", "function": spec} for spec in specs]
    assert (calls, results) == (211, 211)


def test_glaive_tool_calls_keep_arguments_as_objects_in_trl(registry: Path, tmp_path: Path) -> None:
    """TRL and transformers chat templates want arguments as objects, not JSON text."""
    _, rows = through_registry(registry, "glaive_toolcall_en_demo", tmp_path, to="trl")
    args = [c["function"]["arguments"] for r in rows for m in r["messages"] for c in m.get("tool_calls", [])]
    assert len(args) == 211 and all(isinstance(a, dict) for a in args)


def test_dpo_demo(registry: Path, tmp_path: Path) -> None:
    tally, rows = through_registry(registry, "dpo_en_demo", tmp_path, to="trl")
    assert (tally.read, tally.written) == (300, 300)
    source = json.loads(fixture("data", "llamafactory", "dpo_en_demo.json").read_text(encoding="utf-8"))
    for row, src in zip(rows, source, strict=True):
        assert len(row["prompt"]) == len(src["conversations"]) and row["prompt"][-1]["role"] == "user"
        assert row["chosen"] == [{"role": "assistant", "content": src["chosen"]["value"]}]
        assert row["rejected"] == [{"role": "assistant", "content": src["rejected"]["value"]}]


def test_kto_demo(registry: Path, tmp_path: Path) -> None:
    tally, rows = through_registry(registry, "kto_en_demo", tmp_path, to="trl")
    assert (tally.read, tally.written) == (300, 300)
    assert Counter(r["label"] for r in rows) == {True: 150, False: 150}
    source = json.loads(fixture("data", "llamafactory", "kto_en_demo.json").read_text(encoding="utf-8"))
    for row, src in zip(rows, source, strict=True):
        assert row["prompt"] + row["completion"] == src["messages"] and row["label"] is src["label"]
        assert row["completion"][0]["role"] == "assistant"


def test_c4_demo_is_text(registry: Path, tmp_path: Path) -> None:
    tally, rows = through_registry(registry, "c4_demo", tmp_path, to="text")
    assert (tally.read, tally.written) == (300, 300)
    lines = fixture("data", "llamafactory", "c4_demo.jsonl").read_text(encoding="utf-8").splitlines()
    source = [json.loads(line) for line in lines]
    assert [r["text"] for r in rows] == [s["text"] for s in source]


def test_mllm_demo_keeps_images(registry: Path, tmp_path: Path) -> None:
    """Every image of the demo comes out inlined for OpenAI and as a file for ShareGPT, the same bytes in order
    (tests/test_media_formats.py covers every format and the video and audio demos)."""
    tally, rows = through_registry(registry, "mllm_demo", tmp_path)
    assert (tally.read, tally.written) == (6, 6)
    source = json.loads(fixture("data", "llamafactory", "mllm_demo.json").read_text(encoding="utf-8"))
    wanted = [[(registry.parent / p).read_bytes() for p in s["images"]] for s in source]
    inlined = [[base64.b64decode(part["image_url"]["url"].split(",", 1)[1]) for m in r["messages"]
                if isinstance(m["content"], list) for part in m["content"] if part["type"] == "image_url"]
               for r in rows]
    assert inlined == wanted
    _, back = through_registry(registry, "mllm_demo", tmp_path, to="sharegpt")
    assert [[(tmp_path / p).read_bytes() for p in r["images"]] for r in back] == wanted
    assert all(p.startswith("media/") for r in back for p in r["images"])


def test_formats_that_cannot_hold_images_reject_those_rows(registry: Path, tmp_path: Path) -> None:
    tally, rows = through_registry(registry, "mllm_demo", tmp_path, to="autotrain")
    assert (tally.written, dict(tally.rejected)) == (0, {"not_expressible": 6})


def test_every_local_entry_of_the_fixture_registry_converts(registry: Path, tmp_path: Path) -> None:
    info = json.loads(registry.read_text(encoding="utf-8"))
    local = [n for n, e in info.items() if "file_name" in e and (registry.parent / e["file_name"]).exists()]
    # the video and audio demos (mllm_video_demo, mllm_audio_demo, mllm_video_audio_demo) are the multimodal issue's
    local = [n for n in local if n not in ("mllm_video_demo", "mllm_audio_demo", "mllm_video_audio_demo")]
    assert sorted(local) == ["alpaca_en_demo", "c4_demo", "dpo_en_demo", "glaive_toolcall_en_demo",
                             "kto_en_demo", "mllm_demo"]
    result = convert(Inputs(registry=str(registry.parent), datasets=local), "trl", str(tmp_path / "all.jsonl"))
    assert (result.tally.read, result.tally.rejected_total) == (999 + 300 + 300 + 300 + 300 + 6, 0)


def test_sample_registry(tmp_path: Path) -> None:
    """samples/dataset_info.json: every local entry converts; columns and ranking are honoured."""
    info = json.loads((SAMPLES / "dataset_info.json").read_text(encoding="utf-8"))
    counts = {}
    for name, entry in info.items():
        if "file_name" in entry:
            tally, rows = through_registry(SAMPLES / "dataset_info.json", name, tmp_path, to="trl")
            assert tally.rejected_total == 0, name
            counts[name] = len(rows)
    assert counts == {"alpaca_demo": 12, "alpaca_ko_demo": 7, "alpaca_preference_demo": 6, "alpaca_kto_demo": 7,
                      "sharegpt_tools_demo": 6, "sharegpt_preference_demo": 5, "text_demo": 6}
    _, rows = through_registry(SAMPLES / "dataset_info.json", "alpaca_demo", tmp_path, to="trl")
    assert rows[5]["messages"][0]["content"].startswith("I'm baking")  # history column mapped
    assert rows[3]["messages"][0]["role"] == "system"  # system column mapped


# ---------------------------------------------------------------- num_samples, columns


def make_registry(folder: Path, entries: dict[str, Any], files: dict[str, str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, source in (files or {}).items():
        shutil.copy(source, folder / name)
    (folder / "dataset_info.json").write_text(json.dumps(entries), encoding="utf-8")
    return folder / "dataset_info.json"


def ids(rows: list[dict[str, Any]]) -> list[str]:
    return [r["id"] for r in rows]


def test_num_samples_subset_is_seeded(tmp_path: Path) -> None:
    reg = make_registry(tmp_path / "reg", {"a": {"file_name": "a.json", "num_samples": 50}},
                        {"a.json": fixture("data", "llamafactory", "alpaca_en_demo.json")})
    tally, first = through_registry(reg, "a", tmp_path)
    _, again = through_registry(reg, "a", tmp_path / "again")
    _, other = through_registry(reg, "a", tmp_path, seed=7)
    assert (tally.read, tally.written) == (50, 50) and len(set(ids(first))) == 50
    assert ids(first) == ids(again) and ids(first) != ids(other)
    done = run_prep("convert", "--dataset-info", str(reg), "--dataset", "a", "--to", "openai", "-o",
                    str(tmp_path / "cli.jsonl"))
    assert "(dataset_info: a, num_samples 50 of 999 rows)" in done.stderr.decode()
    numbers = [int(i.split(":")[1]) for i in ids(first)]
    assert numbers == sorted(numbers)  # a subset kept in file order


def test_num_samples_oversampling_keeps_every_row(tmp_path: Path) -> None:
    reg = make_registry(tmp_path / "reg", {"a": {"file_name": "a.jsonl", "columns": {"prompt": "text"},
                                                              "num_samples": 8}},
                        {"a.jsonl": SAMPLES / "text.jsonl"})
    tally, rows = through_registry(reg, "a", tmp_path, to="text")
    assert (tally.read, tally.written) == (8, 8)
    counts = Counter(ids(rows))
    assert set(counts) == {f"a.jsonl:{i}" for i in range(1, 7)} and sum(counts.values()) == 8
    assert ids(rows) == ids(through_registry(reg, "a", tmp_path / "again", to="text")[1])


def test_num_samples_counts_broken_rows_too(tmp_path: Path) -> None:
    """Sampling picks rows by position, broken ones included, so the accounting still adds up."""
    (tmp_path / "reg").mkdir()
    (tmp_path / "reg" / "t.jsonl").write_text("".join('{"text": "ok"}\n' if i % 2 else "broken\n" for i in range(10)))
    reg = make_registry(tmp_path / "reg", {"t": {"file_name": "t.jsonl", "columns": {"prompt": "text"},
                                                 "num_samples": 10}})
    tally, _ = through_registry(reg, "t", tmp_path, to="text")
    assert (tally.read, tally.written, dict(tally.rejected)) == (10, 5, {"bad_json": 5})


def test_columns_and_folders(tmp_path: Path) -> None:
    data = tmp_path / "reg" / "orca"
    data.mkdir(parents=True)
    (data / "part-1.jsonl").write_text(json.dumps({"question": "q1", "response": "a1", "system_prompt": "s"}) + "\n")
    (data / "part-2.jsonl").write_text(json.dumps({"question": "q2", "response": "a2", "system_prompt": ""}) + "\n")
    (data / "README.md").write_text("not data")
    reg = make_registry(tmp_path / "reg", {"orca": {
        "file_name": "orca", "columns": {"prompt": "question", "response": "response", "system": "system_prompt"}}})
    _, rows = through_registry(reg, "orca", tmp_path, to="trl")
    assert [r["messages"] for r in rows] == [
        [{"role": "system", "content": "s"}, {"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"}],
        [{"role": "user", "content": "q2"}, {"role": "assistant", "content": "a2"}]]


# ---------------------------------------------------------------- refused entries (CLI)


def one_line_error(done: Any) -> str:
    err = done.stderr.decode()
    assert done.returncode == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("file_name", ["../outside.json", "/etc/hostname", "sub/../../outside.json"])
def test_file_name_escaping_the_registry_is_refused(tmp_path: Path, file_name: str) -> None:
    (tmp_path / "outside.json").write_text('[{"instruction": "q", "output": "a"}]')
    reg = make_registry(tmp_path / "reg", {"evil": {"file_name": file_name}})
    err = one_line_error(run_prep("convert", "--dataset-info", str(reg), "--dataset", "evil", "--to", "openai"))
    assert "outside the registry's folder" in err and "evil" in err


def test_symlink_out_of_the_registry_is_refused(tmp_path: Path) -> None:
    (tmp_path / "outside.json").write_text('[{"instruction": "q", "output": "a"}]')
    reg = make_registry(tmp_path / "reg", {"link": {"file_name": "link.json"}})
    (tmp_path / "reg" / "link.json").symlink_to(tmp_path / "outside.json")
    err = one_line_error(run_prep("convert", "--dataset-info", str(reg), "--dataset", "link", "--to", "openai"))
    assert "outside the registry's folder" in err


def test_hub_only_entry_gets_a_clear_message() -> None:
    done = run_prep("convert", "--dataset-info", str(SAMPLES / "dataset_info.json"), "--dataset", "alpaca_hub_only",
                    "--to", "openai")
    err = one_line_error(done)
    assert "'alpaca_hub_only' is not a local file (hf_hub_url: tatsu-lab/alpaca)" in err and "file_name" in err


@pytest.mark.parametrize(("entries", "message"), [
    ({"x": {"file_name": "missing.json"}}, "file missing.json not found"),
    ({"x": {"file_name": "d.json", "formatting": "xml"}}, "formatting 'xml'"),
    ({"x": {"file_name": "d.json", "num_samples": 0}}, "num_samples must be a positive integer"),
    ({"x": {"file_name": "d.json", "columns": ["prompt"]}}, "columns must be an object"),
    ({"x": "not an object"}, "entry 'x' must be an object"),
    ({"alpaca_x": {"file_name": "d.json"}, "y": {}}, "no dataset named 'alpaca'; did you mean alpaca_x?"),
])
def test_bad_entries_are_refused(tmp_path: Path, entries: dict[str, Any], message: str) -> None:
    reg = make_registry(tmp_path, entries)
    (tmp_path / "d.json").write_text("[]")
    name = "alpaca" if "alpaca_x" in entries else "x"
    assert message in one_line_error(run_prep("convert", "--dataset-info", str(reg), "--dataset", name,
                                              "--to", "openai"))


def test_registry_itself_unreadable(tmp_path: Path) -> None:
    (tmp_path / "dataset_info.json").write_text("{not json")
    assert "not valid JSON" in one_line_error(run_prep("convert", "--dataset-info", str(tmp_path), "--dataset", "x",
                                                       "--to", "openai"))
    assert "cannot read the registry" in one_line_error(
        run_prep("convert", "--dataset-info", str(tmp_path / "nope.json"), "--dataset", "x", "--to", "openai"))
    assert "--dataset needs --dataset-info" in one_line_error(run_prep("convert", "--dataset", "x", "--to", "openai"))
