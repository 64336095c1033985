"""`prep validate`, file-level checks: empty files, byte-order marks, UTF-16, invalid UTF-8 (with
its byte offset), NUL bytes, blank lines, lines that are not objects or not JSON, mixed formats,
unreadable JSON documents, too few rows, compressed input. One planted defect each."""

from __future__ import annotations

import codecs
import gzip
import json
from pathlib import Path

import pytest

from prep.checks import bytescan
from validate_util import assert_exactly, chat, run, write_rows

GOOD = [chat("Hello?", "Hi."), chat("Day?", "Monday."), chat("Colour?", "Teal.")]


def lines(rows: list) -> bytes:
    return b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in rows)


@pytest.mark.parametrize("content", [b"", b"  \n\n"])
def test_empty_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_bytes(content)
    report = run(path)
    assert_exactly(report, {(0, "empty_file", "$")})
    assert report.exit_code == 1 and report.rows_read == 0


def test_empty_json_array(tmp_path: Path) -> None:
    path = tmp_path / "empty.json"
    path.write_text("[]\n")
    assert_exactly(run(path), {(0, "empty_file", "$")})


def test_utf8_bom_is_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "bom.jsonl"
    path.write_bytes(codecs.BOM_UTF8 + lines(GOOD))
    report = run(path)
    assert_exactly(report, {(1, "utf8_bom", "$")})
    assert report.rows_accepted == 3 and report.exit_code == 0
    assert run(path, strict=True).exit_code == 1


def test_utf16_with_bom_is_read_but_reported(tmp_path: Path) -> None:
    path = tmp_path / "utf16.jsonl"
    path.write_bytes(lines(GOOD).decode().encode("utf-16"))
    report = run(path)
    assert_exactly(report, {(1, "utf16_encoding", "$")})
    assert report.rows_accepted == 3


def test_utf16_without_bom_cannot_be_read(tmp_path: Path) -> None:
    path = tmp_path / "utf16le.jsonl"
    path.write_bytes(lines(GOOD).decode().encode("utf-16-le"))
    report = run(path)
    assert_exactly(report, {(1, "utf16_encoding", "$")})
    assert report.rows_read == 0


def test_invalid_utf8_with_byte_offset(tmp_path: Path) -> None:
    data = lines(GOOD[:2]) + b'{"messages": [{"role": "user", "content": "caf\xe9"}]}\n' + lines(GOOD[2:])
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(data)
    report = run(path)
    assert_exactly(report, {(3, "invalid_utf8", "$")})
    assert f"byte {data.index(bytes([0xE9]))}" in report.findings.stored[0].message
    # A JSON document stops at the bad byte: reported with its offset and line, nothing read after it.
    doc = b'[\n' + b",\n".join(json.dumps(r).encode() for r in GOOD) + b',\n{"text": "na\xefve"}\n]\n'
    path = tmp_path / "latin1.json"
    path.write_bytes(doc)
    report = run(path)
    assert_exactly(report, {(5, "invalid_utf8", "$")})
    assert f"byte {doc.index(bytes([0xEF]))}" in report.findings.stored[0].message


def test_nul_bytes(tmp_path: Path) -> None:
    data = lines([GOOD[0], b'{"messages": "a\x00b"}', *GOOD[1:]])
    path = tmp_path / "nul.jsonl"
    path.write_bytes(data)
    report = run(path)
    assert_exactly(report, {(2, "nul_byte", "$")})
    assert f"byte {data.index(bytes([0]))}" in report.findings.stored[0].message
    path = tmp_path / "nul.json"
    path.write_bytes(b"[\n" + json.dumps(GOOD[0]).encode() + b",\n\x00\n]")
    assert_exactly(run(path), {(3, "nul_byte", "$")})


def test_blank_lines_not_objects_bad_json(tmp_path: Path) -> None:
    path = tmp_path / "lines.jsonl"
    path.write_bytes(lines([GOOD[0], b"", GOOD[1], b"[1, 2]", b"42", b'{"messages": [', GOOD[2], b"   "]))
    report = run(path)
    assert_exactly(report, {(2, "blank_line", "$"), (4, "not_an_object", "$"), (5, "not_an_object", "$"),
                            (6, "bad_json", "$"), (8, "blank_line", "$")})
    assert report.rows_read == 6 and report.rows_rejected == 3


def test_blank_lines_and_nul_bytes_found_wherever_the_chunks_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                  ) -> None:
    """The byte pass counts a chunk's lines without walking them when it holds no NUL and no blank line; lines
    that span chunks are followed across them. Every chunk size finds the same lines."""
    path = tmp_path / "chunks.jsonl"
    data = lines([GOOD[0], b"", GOOD[1], b" \t", b'{"messages": "a\x00b"}', GOOD[2], b"\r", GOOD[0], GOOD[1]])
    path.write_bytes(data)
    clean = tmp_path / "clean.jsonl"
    clean.write_bytes(lines(GOOD * 3))
    want = {(2, "blank_line"), (4, "blank_line"), (7, "blank_line")}
    for size in range(1, len(data) + 2):
        monkeypatch.setattr(bytescan, "_CHUNK", size)
        found = bytescan.scan(str(path), "chunks.jsonl", "jsonl")
        assert {(f.line, f.code) for f in found.findings} == want, size
        assert list(found.nul_lines) == [5] and f"byte {data.index(bytes([0]))}" in found.nul_lines[5].message, size
        assert bytescan.scan(str(clean), "clean.jsonl", "jsonl").findings == [], size


def test_mixed_formats(tmp_path: Path) -> None:
    rows = [{"instruction": "Hi", "output": "Hello."}, {"instruction": "Bye", "output": "Ciao."},
            {"conversations": [{"from": "human", "value": "Yo"}, {"from": "gpt", "value": "Hey."}]},
            {"instruction": "Thanks", "output": "Welcome."}]
    report = run(write_rows(tmp_path / "mixed.jsonl", rows))
    assert_exactly(report, {(3, "mixed_formats", "$")})
    assert report.files[0].format == "alpaca"


def test_unknown_format(tmp_path: Path) -> None:
    report = run(write_rows(tmp_path / "odd.jsonl", [{"foo": 1}, {"bar": 2}]), min_rows=0)
    assert_exactly(report, {(1, "unknown_format", "$"), (2, "unknown_format", "$")})


def test_unreadable_json_document_keeps_the_rows_before(tmp_path: Path) -> None:
    path = tmp_path / "cut.json"
    path.write_text("[\n" + ",\n".join(json.dumps(r) for r in GOOD) + ',\n{"messages": [\n')
    report = run(path)
    assert {f.code for f in report.findings.stored} == {"unreadable_file"}
    assert report.rows_read == 3 and report.rows_accepted == 3


def test_too_few_rows(tmp_path: Path) -> None:
    report = run(write_rows(tmp_path / "small.jsonl", GOOD), min_rows=10)
    assert_exactly(report, {(0, "too_few_rows", "$")})


def test_csv_field_count(tmp_path: Path) -> None:
    path = tmp_path / "alpaca.csv"
    path.write_text("instruction,input,output\nSay hi,,Hi.\nSay bye,,Bye.,extra\nSay yes,,Yes.\n")
    report = run(path)
    assert_exactly(report, {(3, "csv_field_count", "$")})
    assert report.files[0].format == "alpaca"


def test_gzip_input(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl.gz"
    path.write_bytes(gzip.compress(lines([GOOD[0], b"", *GOOD[1:]])))
    assert_exactly(run(path), {(2, "blank_line", "$")})


def test_rejects_file_keeps_rows_with_their_reasons(tmp_path: Path) -> None:
    path = tmp_path / "mix.jsonl"
    path.write_bytes(lines([GOOD[0], b"oops", chat("Only a question?"), GOOD[1],
                            b'{"messages": [{"role": "user", "content": "\\ud800"}, '
                            b'{"role": "assistant", "content": "ok"}]}']))
    rejects = tmp_path / "rejects.jsonl"
    report = run(path, rejects=str(rejects))
    kept = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert [r["line"] for r in kept] == [2, 3, 5]
    assert [r["reasons"][0]["code"] for r in kept] == ["bad_json", "no_assistant", "lone_surrogate"]
    assert kept[1]["row"] == chat("Only a question?")
    assert kept[2]["row"]["messages"][0]["content"] == "\ud800"  # a JSON escape: reads back as it was read
    assert report.rows_read == report.rows_accepted + len(kept)


def test_parquet_values_json_has_no_type_for(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"instruction": ["Say hi", "Say bye", "Say yes"], "output": [b"binary", None, None]}),
                   str(path))
    rejects = tmp_path / "rejects.jsonl"
    report = run(path, format="alpaca", rejects=str(rejects))
    assert_exactly(report, {(1, "wrong_type", "$.output"), (2, "missing_field", "$.output"),
                            (3, "missing_field", "$.output"), (0, "too_few_rows", "$")})
    assert json.loads(rejects.read_text().splitlines()[0])["row"]["output"] == repr(b"binary")


def test_a_fifo_is_validated_whole(tmp_path: Path) -> None:
    """A named pipe (or `<(zcat x.gz)`) can be read once; validate reads its input twice (the byte pass, then the
    rows), so it is spooled first, as standard input is: every row is read, not an empty file."""
    import os
    import subprocess

    rows = write_rows(tmp_path / "rows.jsonl", [chat(f"q{k}", f"a{k}") for k in range(300)])
    fifo = tmp_path / "in.jsonl"
    os.mkfifo(fifo)
    writer = subprocess.Popen(["sh", "-c", 'cat "$0" > "$1"', str(rows), str(fifo)])
    report = run(fifo)
    assert writer.wait(5) == 0
    assert report.rows_read == 300 and report.findings.errors == 0
