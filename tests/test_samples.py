"""samples/: every hand-made file converts cleanly with the counts its README states, and the
project's tokenizer is reproducible and loads in transformers with a working chat template."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from conftest import SAMPLES
from prep.formats.inputs import Inputs
from prep.stages.convert import convert

TOKENIZER = SAMPLES / "tokenizer"


def _readme_table() -> dict[str, tuple[str, int]]:
    """file -> (kind, rows) from the table in samples/README.md."""
    table = {}
    for line in (SAMPLES / "README.md").read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[3].isdigit():
            table[cells[0]] = (cells[2].split()[0], int(cells[3]))
    return table


def test_readme_lists_every_sample_file() -> None:
    data = {p.name for p in SAMPLES.iterdir() if p.suffix in (".json", ".jsonl", ".csv", ".txt")}
    assert set(_readme_table()) | {"dataset_info.json"} == data


@pytest.mark.parametrize("name", sorted(_readme_table()))
def test_sample_converts_without_rejects(name: str, tmp_path) -> None:
    kind, rows = _readme_table()[name]
    out = tmp_path / "out.jsonl"
    result = convert(Inputs([str(SAMPLES / name)], txt_split="paragraph"), "trl", str(out))
    assert (result.tally.read, result.tally.written, result.tally.rejected_total) == (rows, rows, 0)
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    key = {"chat": "messages", "preference": "chosen", "feedback": "label", "text": "text"}[kind]
    assert all(key in r for r in records), f"{name}: expected {kind} records"


def test_tokenizer_script_is_deterministic(tmp_path) -> None:
    """Re-running make_tokenizer.py gives the committed files byte for byte."""
    subprocess.run([sys.executable, str(SAMPLES / "make_tokenizer.py"), str(tmp_path)], check=True,
                   capture_output=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (tmp_path / name).read_bytes() == (TOKENIZER / name).read_bytes(), (
            f"samples/tokenizer/{name} is stale: run `python samples/make_tokenizer.py` and commit it")


def test_vision_sample_script_is_deterministic(tmp_path) -> None:
    """Re-running make_vision_sample.py gives the committed processor folder and images byte for byte."""
    subprocess.run([sys.executable, str(SAMPLES / "make_vision_sample.py"), str(tmp_path)], check=True,
                   capture_output=True)
    made = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert made == sorted(p.relative_to(SAMPLES) for d in ("vision", "images") for p in (SAMPLES / d).iterdir())
    for name in made:
        assert (tmp_path / name).read_bytes() == (SAMPLES / name).read_bytes(), (
            f"samples/{name} is stale: run `python samples/make_vision_sample.py` and commit it")


@pytest.fixture(scope="module")
def tokenizer():
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(str(TOKENIZER))


def test_tokenizer_special_tokens(tokenizer) -> None:
    assert 2000 <= len(tokenizer) <= 4000
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    assert tokenizer.bos_token is None
    for token in ("<|endoftext|>", "<|im_start|>", "<|im_end|>"):
        ids = tokenizer.encode(token, add_special_tokens=False)
        assert ids == [tokenizer.convert_tokens_to_ids(token)]


def test_tokenizer_is_lossless_on_any_text(tokenizer) -> None:
    text = (SAMPLES / "text.txt").read_text(encoding="utf-8") + "서울 ☃ 😀 \t tabs\r\n and unseen bytes \x00\x7f"
    assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text


def test_chat_template_is_chatml_without_default_system(tokenizer) -> None:
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    assert tokenizer.apply_chat_template(messages, tokenize=False) == (
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n")
    with_system = [{"role": "system", "content": "Be brief."}, *messages]
    assert tokenizer.apply_chat_template(with_system, tokenize=False, add_generation_prompt=True).startswith(
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi")


def test_chat_template_renders_tools_calls_and_results(tokenizer) -> None:
    """The sample with tool calls renders as Qwen2.5 would: <tools>, <tool_call>, <tool_response>."""
    row = json.loads((SAMPLES / "openai.jsonl").read_text(encoding="utf-8").splitlines()[3])
    for m in row["messages"]:
        for call in m.get("tool_calls", []):
            call["function"]["arguments"] = json.loads(call["function"]["arguments"])
    text = tokenizer.apply_chat_template(row["messages"], tools=row["tools"], tokenize=False)
    assert text.startswith("<|im_start|>system\n# Tools\n")
    assert '<tool_call>\n{"name": "stock_level", "arguments": {"sku": "MUG-BLUE"}}\n</tool_call>' in text
    # two results in a row share one user turn
    assert re.search(r"<\|im_start\|>user\n<tool_response>\n.*MUG-BLUE.*\n</tool_response>\n<tool_response>\n"
                     r".*TEAPOT-RED.*\n</tool_response><\|im_end\|>", text)
