"""Containers in and out: every reader streams rows with the line they start on, turns a broken
row into a reject, and every writer leaves either the whole file or nothing."""

from __future__ import annotations

import ast
import gzip
import json
import os
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import ROOT, run_prep
from prep.core.findings import PrepError
from prep.files.atomic import Staged
from prep.files.paths import split_suffix
from prep.files.pieces import BATCH_ROWS, joined, pieces
from prep.files.read import read_rows
from prep.files.write import RowWriter


def rows(path: Path | str, **kw: Any) -> tuple[list[tuple[int, Any]], list[tuple[int, str, Any]]]:
    """([(line, row)], [(line, code, raw)]) of a file, in file order."""
    good, bad = [], []
    for batch in read_rows(str(path), **kw):
        good += [(s.line, item) for item, s in zip(batch.items, batch.sources, strict=True)]
        bad += [(r.source.line, r.reason, r.row) for r in batch.rejects]
    return good, bad


def lines(good: list[tuple[int, Any]]) -> list[int]:
    return [line for line, _ in good]


def write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return path


def test_suffixes() -> None:
    assert split_suffix("a/b.JSONL.zst") == ("jsonl", "zstd")
    assert split_suffix("x.csv.gz") == ("csv", "gzip")
    assert split_suffix("data.v2.json") == ("json", None)
    assert split_suffix("noext") == (None, None)


# ---------------------------------------------------------------- .json


def test_json_array_rows_and_their_lines(tmp_path: Path) -> None:
    path = write(tmp_path / "a.json", '[\n  {"a": 1},\n\n  {"a": [1,\n 2]}, {"a": 3},\n  "scalar",\n  [4]\n]\n')
    good, bad = rows(path)
    assert good == [(2, {"a": 1}), (4, {"a": [1, 2]}), (5, {"a": 3}), (6, "scalar"), (7, [4])] and not bad


def test_json_object_holding_a_list_streams_it_coqa_style(tmp_path: Path) -> None:
    text = ('{\n "version": "1.0",\n "data": [\n  {"story": "one",\n   "questions": []},\n'
            '  {"story": "two"}\n ],\n "tail": {"x": [1]}\n}\n')
    good, _ = rows(write(tmp_path / "coqa.json", text))
    assert good == [(4, {"story": "one", "questions": []}), (6, {"story": "two"})]


def test_json_single_object_is_one_row(tmp_path: Path) -> None:
    assert rows(write(tmp_path / "o.json", '{"data": {"not": "a list"}, "text": "t"}'))[0] == [
        (1, {"data": {"not": "a list"}, "text": "t"})]
    assert rows(write(tmp_path / "e.json", "[]"))[0] == []
    assert rows(write(tmp_path / "z.json", ""))[0] == []


def test_json_values_larger_than_the_read_buffer(tmp_path: Path) -> None:
    """Values that straddle the 1 MiB read chunks come out whole, with the right lines."""
    big = [{"text": c * (700_000 + i), "n": i} for i, c in enumerate("abc")]
    path = write(tmp_path / "big.json", "[\n" + ",\n".join(json.dumps(r) for r in big) + "\n]")
    good, _ = rows(path)
    assert [r for _, r in good] == big and lines(good) == [2, 3, 4]


@pytest.mark.parametrize(("text", "where"), [
    ('[{"a": 1},\n {"a": 2},]', "a.json:2"),
    ('[{"a": 1}\n {"a": 2}]', "a.json:2"),
    ('[{"a": 1}, {"a": NaN}]', "a.json:1"),
    ('[{"a": 1}] [2]', "a.json:1"),
    ('[{"a": "unterminated}]', "a.json:1"),
    ('42', "a.json:1"),
])
def test_broken_json_document_stops_the_run_at_its_line(tmp_path: Path, text: str, where: str) -> None:
    with pytest.raises(PrepError, match=rf"/{where}: invalid JSON") as e:
        rows(write(tmp_path / "a.json", text))
    assert "\n" not in str(e.value)


def test_json_encodings(tmp_path: Path) -> None:
    text = '[{"t": "café"},\n {"t": "b"}]'
    expected = [(1, {"t": "café"}), (2, {"t": "b"})]
    assert rows(write(tmp_path / "bom.json", b"\xef\xbb\xbf" + text.encode()))[0] == expected
    assert rows(write(tmp_path / "u16.json", text.encode("utf-16")))[0] == expected
    assert rows(write(tmp_path / "u16be.json", b"\xfe\xff" + text.encode("utf-16-be")))[0] == expected
    with pytest.raises(PrepError, match="latin.json: invalid UTF-8 at byte 11"):
        rows(write(tmp_path / "latin.json", text.encode("latin-1")))
    with pytest.raises(PrepError, match="NUL bytes .* UTF-16 or UTF-32 without a byte-order mark"):
        rows(write(tmp_path / "nobom.json", text.encode("utf-16-le")))


# ---------------------------------------------------------------- .jsonl


def test_jsonl_rows_lines_and_rejects(tmp_path: Path) -> None:
    text = b'{"a": 1}\r\n\n  \n{"a": 2}\n{oops\n[1, 2]\n{"a": NaN}\n{"a": "caf\xe9"}\n"s"\n{"a": 3}'
    good, bad = rows(write(tmp_path / "a.jsonl", text))
    assert good == [(1, {"a": 1}), (4, {"a": 2}), (6, [1, 2]), (9, "s"), (10, {"a": 3})]
    assert [(line, code) for line, code, _ in bad] == [(5, "bad_json"), (7, "bad_json"), (8, "invalid_utf8")]
    assert bad[0][2] == "{oops" and bad[2][2] == '{"a": "caf\ufffd"}'


def test_jsonl_bad_line_finding_says_where(tmp_path: Path) -> None:
    batch = next(read_rows(str(write(tmp_path / "a.jsonl", '{"a": 1}\n{"a": 1,}\n'))))
    finding = batch.rejects[0].findings[0]
    assert (finding.file, finding.line, finding.code) == (str(tmp_path / "a.jsonl"), 2, "bad_json")
    assert "column 9" in finding.message and finding.hint


def test_jsonl_encodings(tmp_path: Path) -> None:
    text = '{"t": "café"}\n{"t": "☃"}\n'
    expected = [(1, {"t": "café"}), (2, {"t": "☃"})]
    assert rows(write(tmp_path / "bom.jsonl", b"\xef\xbb\xbf" + text.encode()))[0] == expected
    assert rows(write(tmp_path / "u16.jsonl", text.encode("utf-16")))[0] == expected
    assert rows(write(tmp_path / "u16crlf.jsonl", text.replace("\n", "\r\n").encode("utf-16")))[0] == expected
    with pytest.raises(PrepError, match="NUL bytes"):
        rows(write(tmp_path / "nobom.jsonl", text.encode("utf-16-le")))


def test_a_reader_closed_early_leaves_nothing_reading_a_closed_file(tmp_path: Path, monkeypatch) -> None:
    """Format detection reads a file's first batch and closes the reader (tokenize --workers 2, dedup's lane): the
    line reader of a UTF-16 file must be done before the file is closed, or its clean-up printed
    "Exception ignored ... I/O operation on closed file" on stderr (found on the second reading)."""
    import gc
    import sys

    raised: list[BaseException | None] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: raised.append(u.exc_value))
    path = write(tmp_path / "u16.jsonl", "".join(f'{{"t": {i}}}\n' for i in range(3 * BATCH_ROWS)).encode("utf-16"))
    batches = read_rows(str(path))
    assert len(next(batches).items) == BATCH_ROWS
    batches.close()
    gc.collect()
    assert raised == []


def test_batches_hold_at_most_batch_rows(tmp_path: Path) -> None:
    path = write(tmp_path / "a.jsonl", "".join(f'{{"i": {i}}}\n' if i % 5 else "bad\n" for i in range(23)))
    batches = list(read_rows(str(path), batch_rows=4))
    assert [len(b.items) + len(b.rejects) for b in batches] == [4, 4, 4, 4, 4, 3]
    assert sum(len(b.rejects) for b in batches) == 5


# ---------------------------------------------------------------- .csv / .tsv


def test_csv_quoted_multiline_fields_and_record_start_lines(tmp_path: Path) -> None:
    text = 'q,a\n1,plain\n2,"two\nlines"\n\n3,"has ""quotes"", commas\nand\nthree lines"\n4,last\n'
    good, bad = rows(write(tmp_path / "a.csv", text))
    assert good == [(2, {"q": "1", "a": "plain"}), (3, {"q": "2", "a": "two\nlines"}),
                    (6, {"q": "3", "a": 'has "quotes", commas\nand\nthree lines'}), (9, {"q": "4", "a": "last"})]
    assert not bad


def test_tsv_and_crlf(tmp_path: Path) -> None:
    good, _ = rows(write(tmp_path / "a.tsv", 'q\ta\r\n1\t"x\r\ny"\r\n2\tz\r\n'))
    assert good == [(2, {"q": "1", "a": "x\r\ny"}), (4, {"q": "2", "a": "z"})]


def test_csv_broken_records_are_rejected_with_their_raw_lines(tmp_path: Path) -> None:
    text = b'q,a\n1,ok\n2,too,many\n3\n4,"ab"c\n5,caf\xe9\n6,"still\nfine"\n7,ok\n'
    good, bad = rows(write(tmp_path / "a.csv", text))
    assert lines(good) == [2, 7, 9]
    assert bad == [(3, "csv_field_count", "2,too,many\n"), (4, "csv_field_count", "3\n"),
                   (5, "bad_csv", '4,"ab"c\n'), (6, "invalid_utf8", "5,caf\ufffd\n")]


def test_csv_unclosed_quote_does_not_swallow_rows_silently(tmp_path: Path) -> None:
    good, bad = rows(write(tmp_path / "a.csv", 'q,a\n1,ok\n2,"never closed\n3,x\n4,y\n'))
    assert lines(good) == [2]
    assert bad == [(3, "bad_csv", '2,"never closed\n3,x\n4,y\n')]
    finding = next(read_rows(str(tmp_path / "a.csv"))).rejects[0].findings[0]
    assert "never closed" in finding.message and "lines 3-5" in finding.message


def test_csv_header_problems_stop_the_run(tmp_path: Path) -> None:
    with pytest.raises(PrepError, match="each column once"):
        rows(write(tmp_path / "dup.csv", "a,a\n1,2\n"))
    with pytest.raises(PrepError, match="each column once"):
        rows(write(tmp_path / "blank.csv", "a,\n1,2\n"))
    assert rows(write(tmp_path / "empty.csv", "")) == ([], [])
    assert rows(write(tmp_path / "bom.csv", b"\xef\xbb\xbfq,a\n1,2\n"))[0] == [(2, {"q": "1", "a": "2"})]


# ---------------------------------------------------------------- .parquet


def test_parquet_rows_with_nested_values_and_nulls_as_absent(tmp_path: Path) -> None:
    table = pa.Table.from_pylist([
        {"messages": [{"role": "user", "content": "q", "weight": None}], "label": True},
        {"messages": [{"role": "assistant", "content": "a", "weight": 0}], "label": None}])
    pq.write_table(table, tmp_path / "a.parquet", row_group_size=1)
    good, _ = rows(tmp_path / "a.parquet")
    assert good == [(1, {"messages": [{"role": "user", "content": "q"}], "label": True}),
                    (2, {"messages": [{"role": "assistant", "content": "a", "weight": 0}]})]


def test_parquet_refusals(tmp_path: Path) -> None:
    with pytest.raises(PrepError, match="not a readable Parquet file"):
        rows(write(tmp_path / "bad.parquet", b"PAR1 this is not parquet"))
    write(tmp_path / "a.parquet.gz", gzip.compress(b"x"))
    with pytest.raises(PrepError, match="compressed inside already"):
        rows(tmp_path / "a.parquet.gz")


# ---------------------------------------------------------------- .txt

TXT = "First paragraph,\nsecond line.\n\n\n  \nSecond paragraph.\r\n\r\nThird\n"


@pytest.mark.parametrize(("split", "expected"), [
    ("file", [(1, TXT)]),
    ("paragraph", [(1, "First paragraph,\nsecond line."), (6, "Second paragraph."), (8, "Third")]),
    ("line", [(1, "First paragraph,"), (2, "second line."), (6, "Second paragraph."), (8, "Third")]),
])
def test_txt_splits(tmp_path: Path, split: str, expected: list[tuple[int, str]]) -> None:
    good, _ = rows(write(tmp_path / "a.txt", TXT), txt_split=split)
    assert good == [(line, {"text": t}) for line, t in expected]


def test_txt_invalid_utf8_rejects_only_its_paragraph(tmp_path: Path) -> None:
    good, bad = rows(write(tmp_path / "a.txt", b"fine\n\ncaf\xe9\nmore\n\nok\n"), txt_split="paragraph")
    assert good == [(1, {"text": "fine"}), (6, {"text": "ok"})]
    assert bad == [(3, "invalid_utf8", "caf\ufffd\nmore")]


# ---------------------------------------------------------------- compression


@pytest.mark.parametrize("container", ["jsonl", "json", "csv", "tsv", "txt"])
@pytest.mark.parametrize("compression", ["gz", "zst"])
def test_compressed_files_read_like_plain_ones(tmp_path: Path, container: str, compression: str) -> None:
    plain = {
        "jsonl": '{"a": "1"}\n{"a": "2"}\n', "json": '[{"a": "1"},\n{"a": "2"}]',
        "csv": 'a\n1\n"2"\n', "tsv": "a\n1\n2\n", "txt": "one\n\ntwo\n",
    }[container]
    path = tmp_path / f"data.{container}"
    write(path, plain)
    expected = rows(path, txt_split="paragraph")
    packed = tmp_path / f"data.{container}.{compression}"
    if compression == "gz":
        write(packed, gzip.compress(plain.encode()))
    else:
        with pa.CompressedOutputStream(str(packed), "zstd") as out:
            out.write(plain.encode())
    assert rows(packed, txt_split="paragraph") == expected and len(expected[0]) == 2


def test_corrupt_compressed_files_stop_the_run(tmp_path: Path) -> None:
    write(tmp_path / "t.jsonl.gz", gzip.compress(b'{"a": 1}\n' * 100)[:-10])
    with pytest.raises(PrepError, match=r"t.jsonl.gz: read failed"):
        rows(tmp_path / "t.jsonl.gz")
    write(tmp_path / "t.jsonl.zst", b"not zstd")
    with pytest.raises(PrepError, match=r"t.jsonl.zst: read failed"):
        rows(tmp_path / "t.jsonl.zst")


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(PrepError, match="nope.jsonl: no such file"):
        rows(tmp_path / "nope.jsonl")
    with pytest.raises(PrepError, match="is a folder"):
        rows(tmp_path)


def test_unknown_suffix_is_sniffed_or_refused(tmp_path: Path) -> None:
    assert len(rows(write(tmp_path / "rows.data", '{"a": 1}\n{"a": 2}\n'))[0]) == 2
    assert len(rows(write(tmp_path / "rows.dump", '  [{"a": 1}, {"a": 2}]'))[0]) == 2
    assert len(rows(write(tmp_path / "rows.dat", "a,b\n1,2\n"), container="csv")[0]) == 1
    with pytest.raises(PrepError, match="--input-type"):
        rows(write(tmp_path / "rows.bin", "a,b\n1,2\n"))


# ---------------------------------------------------------------- stdin (through the CLI)


def test_stdin_jsonl_json_and_csv() -> None:
    jsonl = b'{"text": "a"}\n{"text": "b"}\n'
    done = run_prep("convert", "-", "--to", "text", input=jsonl)
    assert done.returncode == 0 and done.stdout == b'{"id": "<stdin>:1", "text": "a"}\n{"id": "<stdin>:2", "text": "b"}\n'
    assert b"<stdin>: read as text" in done.stderr
    done = run_prep("convert", "-", "--to", "text", "--no-ids", input=b'[{"text": "a"}]')
    assert done.stdout == b'{"text": "a"}\n'
    done = run_prep("convert", "-", "--input-type", "csv", "--to", "text", "--no-ids", input=b'text\n"x\ny"\n')
    assert done.stdout == b'{"text": "x\\ny"}\n'
    done = run_prep("convert", "-", "--to", "text", input=b"text\nplain\n")
    assert done.returncode == 2 and b"--input-type" in done.stderr and b"Traceback" not in done.stderr


# ---------------------------------------------------------------- writers

ROWS = [{"id": "r1", "messages": [{"role": "user", "content": "hi, \"you\"\nthere"}], "label": True},
        {"id": "r2", "messages": [{"role": "assistant", "content": "☃"}], "label": False, "extra": 1.5}]


def written(path: Path) -> list[dict[str, Any]]:
    return [r for _, r in rows(path)[0]]


@pytest.mark.parametrize("name", ["o.jsonl", "o.json", "o.jsonl.gz", "o.json.zst", "o.parquet"])
def test_writers_round_trip_rows(tmp_path: Path, name: str) -> None:
    with RowWriter(str(tmp_path / name)) as w:
        w.write(ROWS[:1])
        w.write([])
        w.write(ROWS[1:])
    assert written(tmp_path / name) == ROWS
    assert os.listdir(tmp_path) == [name]


@pytest.mark.parametrize("name", ["o.csv", "o.tsv", "o.csv.gz"])
def test_csv_writers_store_nested_values_as_json(tmp_path: Path, name: str) -> None:
    with RowWriter(str(tmp_path / name)) as w:
        w.write(ROWS)
    back = written(tmp_path / name)
    assert back[0] == {"id": "r1", "messages": json.dumps(ROWS[0]["messages"], ensure_ascii=False), "label": "true",
                       "extra": ""}
    assert [json.loads(r["messages"]) for r in back] == [r["messages"] for r in ROWS]


def test_parquet_writer_falls_back_to_json_text_for_mixed_types(tmp_path: Path) -> None:
    mixed = [{"id": "a", "args": {"x": 1}}, {"id": "b", "args": {"x": "one"}}, {"id": "c", "args": [1]}]
    with RowWriter(str(tmp_path / "m.parquet")) as w:
        w.write(mixed)
    assert [json.loads(r["args"]) for r in written(tmp_path / "m.parquet")] == [r["args"] for r in mixed]


def test_empty_outputs_are_valid_files(tmp_path: Path) -> None:
    for name in ("e.json", "e.jsonl", "e.parquet", "e.csv"):
        with RowWriter(str(tmp_path / name)):
            pass
    assert (tmp_path / "e.json").read_text() == "]\n" or json.loads((tmp_path / "e.json").read_text()) == []
    assert (tmp_path / "e.jsonl").read_bytes() == b""
    assert pq.read_table(tmp_path / "e.parquet").num_rows == 0


def test_gzip_output_is_byte_identical_across_runs(tmp_path: Path) -> None:
    for name in ("a.jsonl.gz", "b.jsonl.gz"):
        with RowWriter(str(tmp_path / name)) as w:
            w.write(ROWS)
    assert (tmp_path / "a.jsonl.gz").read_bytes() == (tmp_path / "b.jsonl.gz").read_bytes()


@pytest.mark.parametrize("name", ["o.jsonl", "o.json", "o.csv", "o.parquet", "o.jsonl.zst"])
def test_a_failed_write_leaves_nothing(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_text("previous content")
    with pytest.raises(RuntimeError), RowWriter(str(tmp_path / name)) as w:
        w.write(ROWS)
        raise RuntimeError("the run fails half way")
    assert os.listdir(tmp_path) == [name] and (tmp_path / name).read_text() == "previous content"


def test_writer_refusals(tmp_path: Path) -> None:
    with pytest.raises(PrepError, match="cannot write 'txt'"):
        RowWriter(str(tmp_path / "o.txt"))
    with pytest.raises(PrepError, match="Parquet cannot be written to stdout"):
        RowWriter("-", "parquet")


def test_stdout_writer_formats() -> None:
    done = run_prep("convert", "-", "--to", "text", "--no-ids", "-o", "-", input=b'{"text": "a"}\n')
    assert done.stdout == b'{"text": "a"}\n'


def test_a_run_that_fails_half_way_leaves_no_output(tmp_path: Path) -> None:
    """A .json input broken after its first rows: exit 2, one line, no output or rejects file."""
    src = write(tmp_path / "in.json", '[{"text": "a"}, {"text": "b"},\n {"text": "c"} {"text": "d"}]')
    out, rej = tmp_path / "out" / "o.jsonl", tmp_path / "out" / "rejects.jsonl"
    done = run_prep("convert", str(src), "--to", "text", "-o", str(out), "--rejects", str(rej))
    assert done.returncode == 2
    assert done.stderr.decode().count("\n") == 1 and b"in.json:2: invalid JSON" in done.stderr
    assert sorted(os.listdir(tmp_path / "out")) == []



def test_rows_read_before_a_json_document_breaks_are_not_dropped(tmp_path: Path) -> None:
    """The rows parsed before a JSON document breaks off come out before the error, so a caller that goes
    on after it (validate) accounts for every row read: here 5, in a batch that was not full."""
    good = ",\n".join(json.dumps({"text": f"row {i}"}) for i in range(5))
    src = write(tmp_path / "a.json", f"[{good},\n" + '{"text": oops}]')
    seen: list[Any] = []
    with pytest.raises(PrepError, match="a.json:6: invalid JSON"):
        for batch in read_rows(str(src), batch_rows=1000):
            seen += batch.items + batch.rejects
    assert seen == [{"text": f"row {i}"} for i in range(5)]


def test_rows_read_before_a_compressed_stream_breaks_are_not_dropped(tmp_path: Path) -> None:
    expected = [{"text": f"row {i}"} for i in range(100_000)]
    data = gzip.compress("".join(json.dumps(r) + "\n" for r in expected).encode())
    src = write(tmp_path / "a.jsonl.gz", data[: len(data) // 2])
    seen: list[Any] = []
    with pytest.raises(PrepError, match="a.jsonl.gz: read failed"):
        for batch in read_rows(str(src), batch_rows=1000):
            seen += batch.items + batch.rejects
    # whole batches only would be a multiple of 1000 rows
    assert seen == expected[: len(seen)] and len(seen) % 1000


def test_a_lone_surrogate_is_a_reject_of_the_reader_with_its_path(tmp_path: Path) -> None:
    """JSON can spell an unpaired surrogate (\\ud800), UTF-8 cannot hold it: no writer or tokenizer could take
    the row, so the reader rejects it at its line; a surrogate pair is one character and reads fine."""
    src = write(tmp_path / "s.jsonl", '{"a": "ok \\ud83d\\ude00"}\n{"a": ["x", {"b": "y\\ud800"}]}\n{"a": "\\\\ud800"}\n')
    good, bad = rows(src)
    assert good == [(1, {"a": "ok 😀"}), (3, {"a": "\\ud800"})]
    assert [(line, code) for line, code, _ in bad] == [(2, "lone_surrogate")]
    (reject,) = next(iter(read_rows(str(src)))).rejects
    assert reject.findings[0].path == "$.a[1].b"


def test_writer_spells_a_lone_surrogate_as_json_escape_and_csv_refuses_it(tmp_path: Path) -> None:
    row = {"a": "x\ud800y", "b": "☃"}
    for name in ("o.jsonl", "o.json"):
        with RowWriter(str(tmp_path / name)) as w:
            w.write([ROWS[0], row])
        text = (tmp_path / name).read_text(encoding="utf-8")
        assert '"x\\ud800y"' in text and "hi, " in text  # escaped, read back as the same value
        assert (json.loads(text) if name.endswith(".json") else json.loads(text.splitlines()[1])) in (row, [ROWS[0], row])
    with pytest.raises(PrepError, match=r"o.csv: row 2 holds an unpaired surrogate"), \
            RowWriter(str(tmp_path / "o.csv")) as w:
        w.write([ROWS[0], row])
    assert not (tmp_path / "o.csv").exists()


def test_convert_and_tokenize_reject_a_lone_surrogate_row_without_a_traceback(tmp_path: Path) -> None:
    src = write(tmp_path / "s.jsonl", '{"messages": [{"role": "user", "content": "hi \\ud800"}, '
                '{"role": "assistant", "content": "ok"}]}\n{"messages": [{"role": "user", "content": "hi"}, '
                '{"role": "assistant", "content": "ok"}]}\n')
    rejects = tmp_path / "rejects.jsonl"
    done = run_prep("convert", str(src), "--to", "sharegpt", "-o", str(tmp_path / "o.jsonl"), "--rejects", str(rejects))
    assert done.returncode == 1 and b"internal error" not in done.stderr, done.stderr
    assert b"read 2, wrote 1, rejected 1 (lone_surrogate: 1)" in done.stderr
    (kept,) = [json.loads(line) for line in rejects.read_text(encoding="utf-8").splitlines()]
    assert kept["line"] == 1 and kept["row"]["messages"][0]["content"] == "hi \ud800"  # as read, escaped
    tok = run_prep("tokenize", str(src), "--tokenizer", str(ROOT / "samples" / "tokenizer"), "--template", "chatml",
                   "-o", str(tmp_path / "shards"))
    assert tok.returncode == 1 and b"internal error" not in tok.stderr and b"lone_surrogate" in tok.stderr, tok.stderr


def _seen(batches: Any) -> list[Any]:
    return [([(s.line, s.row) for s in b.sources], [(r.source.line, r.source.row, str(r.findings[0])) for r in b.rejects],
             b.items) for b in batches]


def test_jsonl_pieces_read_as_the_whole_file(tmp_path: Path) -> None:
    """`--engine ray` reads a JSONL file in pieces: cut after every BATCH_ROWS-th row on a line boundary, each
    piece read alone gives the whole file's batches, line numbers, row numbers and byte offsets (a BOM, blank
    lines, bad JSON and invalid UTF-8 included)."""
    path = tmp_path / "rows.jsonl"
    with path.open("wb") as f:
        f.write(b"\xef\xbb\xbf")
        for i in range(3 * BATCH_ROWS + 100):
            f.write(b"\n \n" if i % 97 == 0 else b"{bad\n" if i % 89 == 0 else b'{"t": "\xff"}\n' if i % 83 == 0
                    else json.dumps({"text": f"row {i}"}).encode() + b"\n")
    found = pieces(str(path))
    assert len(found) == 4 and [p.row for p in found] == [0, BATCH_ROWS, 2 * BATCH_ROWS, 3 * BATCH_ROWS]
    whole = _seen(read_rows(str(path)))
    assert [x for p in found for x in _seen(read_rows(str(path), piece=p))] == whole
    two = [joined(found[:2]), joined(found[2:])]  # joined runs of pieces read the same too
    assert [x for p in two for x in _seen(read_rows(str(path), piece=p))] == whole
    assert any("invalid UTF-8 at byte" in r[2] for batch in whole for r in batch[1])
    gz = tmp_path / "rows.jsonl.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    assert len(pieces(str(gz))) == len(pieces(str(ROOT / "samples" / "alpaca.json"))) == 1  # compressed, JSON: whole


# What prep writes beside an output is named by files.atomic alone: a temporary name spelled anywhere else would
# escape sweep_temps, os_error_message and the one commit/abort protocol.
_TEMP_SPELLINGS = re.compile(r"\.tmp\b|tmp-|\.partial\b")
_TEMP_CALLS = {"mkstemp", "mkdtemp", "NamedTemporaryFile", "TemporaryFile", "TemporaryDirectory", "replace", "rename"}
_ALLOWED = {("stages/validate.py", "NamedTemporaryFile")}  # a copy of stdin in the system's temp folder, not an output


def _docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def test_only_files_atomic_names_temporary_files() -> None:
    misnamed = []
    for path in sorted((ROOT / "src" / "prep").rglob("*.py")):
        name = path.relative_to(ROOT / "src" / "prep").as_posix()
        if name == "files/atomic.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docs = _docstrings(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs \
                    and _TEMP_SPELLINGS.search(node.value):
                misnamed.append(f"{name}:{node.lineno}: {node.value!r}")
            call = node.func if isinstance(node, ast.Call) else None
            called = call.attr if isinstance(call, ast.Attribute) else call.id if isinstance(call, ast.Name) else ""
            module = call.value.id if isinstance(call, ast.Attribute) and isinstance(call.value, ast.Name) else ""
            if called in _TEMP_CALLS and (called not in ("replace", "rename") or module == "os") \
                    and (name, called) not in _ALLOWED:
                misnamed.append(f"{name}:{node.lineno}: {module}.{called}()")
    assert not misnamed, misnamed


def test_a_staged_output_whose_last_step_fails_leaves_the_old_one_and_nothing_else(tmp_path: Path) -> None:
    target = write(tmp_path / "out.jsonl", "old\n")
    staged = Staged(target)
    spool = staged.scratch()
    staged.path.write_text("new\n")
    spool.write_text("spooled\n")

    def full_disk() -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        staged.close(full_disk)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"] and target.read_text() == "old\n"
    with Staged(target) as staged:
        staged.path.write_text("new\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"] and target.read_text() == "new\n"
    staged.abort()  # after the close: the output stays
    assert target.read_text() == "new\n"
