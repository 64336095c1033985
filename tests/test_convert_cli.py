"""`prep convert` as a user runs it: exit codes, one-line refusals, help, options end to end."""

from __future__ import annotations

import gzip
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from conftest import SAMPLES, run_prep
from prep import __version__


def out_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def refusal(*args: str, cwd: Path | None = None) -> str:
    """Run prep expecting exit 2 with exactly one line on stderr, no traceback, nothing on stdout."""
    done = run_prep(*args, cwd=cwd)
    err = done.stderr.decode()
    assert done.returncode == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert done.stdout == b""
    return err


def test_version_and_help() -> None:
    assert run_prep("--version").stdout.decode().strip() == f"prep, version {__version__}"
    text = run_prep("convert", "--help").stdout.decode()
    assert "convert [OPTIONS] [FROM] INPUT..." in text
    assert "prep convert coqa coqa-dev-v1.0.json --to openai -o coqa.jsonl" in text
    for option in ("--to", "--rejects", "--dataset-info", "--dataset", "--input-type", "--txt-split", "--system",
                   "--text-column", "--rejected-text-column", "--prompt-text-column", "--human-prefix",
                   "--bot-prefix", "--ids / --no-ids", "--seed", "--quiet"):
        assert option in text
    assert "alpaca, sharegpt, openai, lf_parts, trl," in " ".join(text.split())


def test_exit_0_when_every_row_converts(tmp_path: Path) -> None:
    done = run_prep("convert", str(SAMPLES / "openai.jsonl"), "--to", "trl", "-o", str(tmp_path / "o.jsonl"))
    assert done.returncode == 0 and done.stdout == b""
    assert done.stderr.decode().splitlines() == [
        f"{SAMPLES / 'openai.jsonl'}: read as openai", f"read 6, wrote 6, rejected 0 (openai -> trl) -> {tmp_path / 'o.jsonl'}"]


def test_exit_1_names_the_first_rejects_and_suggests_a_rejects_file(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_text('{"text": "ok"}\n' + "not json\n" * 5)
    done = run_prep("convert", str(path), "--to", "text")
    err = done.stderr.decode().splitlines()
    assert done.returncode == 1
    assert err[1] == "read 6, wrote 1, rejected 5 (bad_json: 5) (text -> text)"
    assert err[2].startswith(f"  {path}:2 $ bad_json: line is not valid JSON")
    assert err[5:] == ["  … and 2 more", "  keep every rejected row with its reasons: --rejects FILE"]


@pytest.mark.parametrize(("args", "message"), [
    (("convert", "missing.jsonl", "--to", "openai"), "prep: missing.jsonl: no such file"),
    (("convert", str(SAMPLES / "alpaca.json"), "--to", "yaml"), "--to yaml: must be one of openai"),
    (("convert", str(SAMPLES / "alpaca.json")), "Missing option '--to'"),
    (("convert", "--to", "openai"), "give INPUT files, or --dataset-info FILE --dataset NAME"),
    (("convert", str(SAMPLES / "alpaca.json"), "--to", "openai", "--txt-split", "words"), "--txt-split words: must be one of file, paragraph, line"),
    (("convert", "openai", "--from", "alpaca", str(SAMPLES / "alpaca.json"), "--to", "openai"), "disagree"),
    (("convert", "coqa", str(SAMPLES / "alpaca.json"), "--to", "openai", "--bogus"), "No such option '--bogus'"),
    (("convert", str(SAMPLES), "--to", "openai"), "is a folder"),
    (("convert", str(SAMPLES / "alpaca.json"), "--to", "openai", "-o", "out.txt"), "cannot write 'txt'"),
    (("convert", str(SAMPLES / "alpaca.json"), "--to", "openai", "-o", "o.jsonl", "--rejects", "./o.jsonl"),
     "-o and --rejects are the same file"),
    (("convert", str(SAMPLES / "alpaca.json"), "--to", "openai", "-o", "-", "--input-type", "parquet"),
     "not a readable Parquet file"),
])
def test_could_not_run_is_exit_2_with_one_line(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    assert message in refusal(*args, cwd=tmp_path)
    assert os.listdir(tmp_path) == []


def test_unreadable_files_are_exit_2(tmp_path: Path) -> None:
    (tmp_path / "cut.jsonl.gz").write_bytes(gzip.compress(b'{"text": "a"}\n' * 1000)[:-20])
    assert "cut.jsonl.gz: read failed" in refusal("convert", str(tmp_path / "cut.jsonl.gz"), "--to", "text", "-o",
                                                 str(tmp_path / "o.jsonl"))
    (tmp_path / "u16.jsonl").write_bytes('{"text": "a"}\n'.encode("utf-16-le"))
    assert "UTF-16 or UTF-32 without a byte-order mark" in refusal("convert", str(tmp_path / "u16.jsonl"), "--to",
                                                                   "text")
    (tmp_path / "odd.jsonl").write_text('{"question": "q", "answer": "a"}\n')
    assert "cannot tell the format from the first row (fields: answer, question)" in refusal(
        "convert", str(tmp_path / "odd.jsonl"), "--to", "text")
    assert sorted(os.listdir(tmp_path)) == ["cut.jsonl.gz", "odd.jsonl", "u16.jsonl"]


def test_from_is_positional_or_an_option_and_a_file_named_like_a_format_is_a_file(tmp_path: Path) -> None:
    a = run_prep("convert", "coqa", str(SAMPLES / "coqa.json"), "--to", "openai")
    b = run_prep("convert", "--from", "coqa", str(SAMPLES / "coqa.json"), "--to", "openai")
    assert a.returncode == b.returncode == 0 and a.stdout == b.stdout and len(a.stdout.splitlines()) == 4
    (tmp_path / "text").write_text('{"text": "a file called text"}\n')
    done = run_prep("convert", "text", "--to", "text", "--no-ids", cwd=tmp_path)
    assert done.stdout == b'{"text": "a file called text"}\n'


def test_coqa_system_prompt_option() -> None:
    done = run_prep("convert", "coqa", str(SAMPLES / "coqa.json"), "--to", "openai", "--system", "Story:\n{story}")
    first = json.loads(done.stdout.splitlines()[0])
    assert first["id"] == "3a1b9c7e2d"
    assert first["messages"][0]["content"].startswith("Story:\nMaria had a small brown dog")
    default = json.loads(run_prep("convert", str(SAMPLES / "coqa_hf.jsonl"), "--to", "openai").stdout.splitlines()[0])
    assert default["messages"][0]["content"].startswith(
        "Read the story and extract answers for the questions.\nStory: Maria had")
    assert default["messages"][1:3] == [{"role": "user", "content": "What kind of pet did Maria have?"},
                                        {"role": "assistant", "content": "a dog"}]


def test_autotrain_columns_and_prefixes_from_the_command_line(tmp_path: Path) -> None:
    src = tmp_path / "chat.csv"
    src.write_text('dialogue\n"### Human: hi\n### Assistant: hello"\n')
    out = tmp_path / "o.csv"
    done = run_prep("convert", "autotrain", str(src), "--to", "autotrain", "-o", str(out), "--no-ids",
                    "--text-column", "dialogue", "--human-prefix", "### Human:", "--bot-prefix", "### Assistant:")
    assert done.returncode == 0, done.stderr
    assert out.read_text() == 'dialogue\n"### Human: hi\n### Assistant: hello"\n'
    done = run_prep("convert", "autotrain", str(src), "--to", "openai", "--no-ids", "--text-column", "dialogue",
                    "--human-prefix", "### Human:", "--bot-prefix", "### Assistant:")
    assert json.loads(done.stdout) == {"messages": [{"role": "user", "content": "hi"},
                                                    {"role": "assistant", "content": "hello"}]}


def test_autotrain_dpo_sample_to_openai_dpo() -> None:
    rows = [json.loads(x) for x in run_prep("convert", str(SAMPLES / "autotrain_dpo.csv"), "--to", "openai").stdout
            .splitlines()]
    assert len(rows) == 5
    assert rows[2]["input"]["messages"] == [
        {"role": "user", "content": "Write a short greeting for a birthday card,\nfor my grandmother."}]
    assert rows[2]["non_preferred_output"] == [{"role": "assistant", "content": "hbd"}]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    path = tmp_path_factory.mktemp("ref") / "ref.jsonl"
    assert run_prep("convert", str(SAMPLES / "openai.jsonl"), "--to", "openai", "-o", str(path)).returncode == 0
    return out_rows(path)


@pytest.mark.parametrize("name", ["o.jsonl", "o.json", "o.csv", "o.tsv", "o.parquet", "o.jsonl.gz", "o.json.zst"])
def test_every_output_container_reads_back_the_same_records(tmp_path: Path, name: str,
                                                            reference: list[dict[str, Any]]) -> None:
    out = tmp_path / name
    assert run_prep("convert", str(SAMPLES / "openai.jsonl"), "--to", "openai", "-o", str(out)).returncode == 0
    again = tmp_path / "again.jsonl"
    done = run_prep("convert", "openai", str(out), "--to", "openai", "-o", str(again))
    assert done.returncode == 0, done.stderr
    assert out_rows(again) == reference


def test_several_inputs_each_detected(tmp_path: Path) -> None:
    files = [str(SAMPLES / n) for n in ("alpaca.json", "sharegpt.jsonl", "trl_prompt_completion.jsonl",
                                        "autotrain.csv")]
    done = run_prep("convert", *files, "--to", "trl", "-o", str(tmp_path / "o.jsonl"))
    lines = done.stderr.decode().splitlines()
    assert done.returncode == 0
    assert lines[:4] == [f"{f}: read as {fmt}" for f, fmt in zip(files, ["alpaca", "sharegpt", "trl", "autotrain"],
                                                                   strict=True)]
    assert re.match(r"read 32, wrote 32, rejected 0", lines[4])
    assert len({r["id"] for r in out_rows(tmp_path / "o.jsonl")}) == 32


def test_ids_option() -> None:
    with_ids = json.loads(run_prep("convert", str(SAMPLES / "text.jsonl"), "--to", "text").stdout.splitlines()[0])
    without = json.loads(run_prep("convert", str(SAMPLES / "text.jsonl"), "--to", "text", "--no-ids").stdout
                         .splitlines()[0])
    assert with_ids["id"] == "text.jsonl:1" and "id" not in without


def test_txt_split_option() -> None:
    def count(*extra: str) -> int:
        return len(run_prep("convert", str(SAMPLES / "text.txt"), "--to", "text", *extra).stdout.splitlines())

    assert (count(), count("--txt-split", "paragraph"), count("--txt-split", "line")) == (1, 5, 5)


def test_registry_and_files_in_one_run(tmp_path: Path) -> None:
    done = run_prep("convert", str(SAMPLES / "text.jsonl"), "--dataset-info", str(SAMPLES), "--dataset", "text_demo",
                    "--dataset", "alpaca_ko_demo", "--to", "trl", "-o", str(tmp_path / "o.jsonl"))
    assert done.returncode == 0, done.stderr
    assert "read 19, wrote 19, rejected 0" in done.stderr.decode()
    assert "(dataset_info: alpaca_ko_demo)" in done.stderr.decode()


def test_conversion_chain_through_every_writable_format_keeps_a_simple_chat(tmp_path: Path) -> None:
    chat = {"id": "c1", "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}
    src = tmp_path / "c.jsonl"
    src.write_text(json.dumps(chat) + "\n")
    for fmt in ("sharegpt", "alpaca", "autotrain", "trl", "openai"):
        out = tmp_path / f"{fmt}.jsonl"
        done = run_prep("convert", str(src), "--to", fmt, "-o", str(out))
        assert done.returncode == 0, (fmt, done.stderr)
        src = out
    assert out_rows(src) == [chat]
