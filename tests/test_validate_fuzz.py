"""`prep validate` never crashes on user data: arbitrary JSON values and arbitrary bytes give
findings (and an exit code), never an exception, and every row is accounted for."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prep.core.codes import CODES
from prep.stages.validate import validate
from validate_util import inputs

KEYS = ["messages", "role", "content", "conversations", "from", "value", "instruction", "input", "output", "system",
        "history", "chosen", "rejected", "prompt", "completion", "label", "kto_tag", "text", "tools", "tool_calls",
        "tool_call_id", "function", "name", "arguments", "type", "weight", "images", "image_url", "url",
        "preferred_output", "non_preferred_output", "story", "questions", "answers", "input_text", "id"]
WORDS = ["user", "assistant", "system", "tool", "function", "human", "gpt", "observation", "function_call", "text",
         "image_url", "<image>", "", " ", "\x00", "\ud800", "\u200b\u200b\u200b", '{"name": "f"}', "data:image/png;base64,"]

text = st.one_of(st.sampled_from(WORDS), st.text(max_size=12),
                 st.lists(st.integers(0xD800, 0xDFFF).map(chr), min_size=1, max_size=2).map("".join))
leaf = st.one_of(st.none(), st.booleans(), st.integers(-2, 2), st.integers(), st.floats(allow_nan=False,
                 allow_infinity=False), text)
values = st.recursive(leaf, lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=6)), inner, max_size=5)), max_leaves=25)
FORMATS = ["auto", "openai", "sharegpt", "alpaca", "trl", "autotrain", "coqa", "text"]
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check(paths: list[str], **options: object) -> None:
    report = validate(inputs(paths, options), **options)
    assert report.balanced
    assert report.rows_read == report.rows_accepted + report.rows_rejected
    assert all(code in CODES for code in report.findings.counts)
    assert report.exit_code in (0, 1)
    json.dumps(report.to_dict(), ensure_ascii=True)


@SETTINGS
@given(rows=st.lists(values, min_size=1, max_size=6), fmt=st.sampled_from(FORMATS), kind=st.sampled_from(
    [None, "sft", "dpo", "kto", "pretrain"]))
def test_any_json_values(rows: list, fmt: str, kind: str | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        jsonl, array = Path(tmp, "rows.jsonl"), Path(tmp, "rows.json")
        jsonl.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
        array.write_text(json.dumps(rows, indent=1))
        rejects = str(Path(tmp, "rejects.jsonl"))
        _check([str(jsonl)], format=fmt, kind=kind, rejects=rejects)
        _check([str(array)], format=fmt, kind=kind)
        _check([str(jsonl), str(array)], validation=[str(jsonl)])


@SETTINGS
@given(data=st.one_of(st.binary(max_size=300), st.lists(st.sampled_from(
    [b"{", b"}", b"[", b"]", b'"messages"', b":", b",", b"\n", b"\x00", b"\xff", b"\xef\xbb\xbf", b"\xfe\xff",
     b'"', b"a", b" ", b"\r\n", b"instruction,output", b"\xe9"]), max_size=40).map(b"".join)),
       suffix=st.sampled_from([".jsonl", ".json", ".csv", ".tsv", ".txt", ".jsonl.gz", ""]))
def test_any_bytes(data: bytes, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "input" + suffix)
        if suffix.endswith(".gz"):
            import gzip
            data = gzip.compress(data)
        path.write_bytes(data)
        _check([str(path)], rejects=str(Path(tmp, "rejects.jsonl")))
