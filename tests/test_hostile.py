"""Hostile input, second round (issue 28): each test asserts what is left on disk or in memory, not only the exit."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SAMPLES, run_prep
from test_reliability import random_chats

OPENAI = SAMPLES / "openai.jsonl"


def _device(path: Path) -> Path:
    """A character device like /dev/null (1, 3) in a temp folder; skip where this process may not make one."""
    try:
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("making a device file needs root")
    return path


def test_an_output_that_is_a_device_fifo_or_special_symlink_is_refused_and_left_as_it_is(tmp_path: Path) -> None:
    device = _device(tmp_path / "null")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    (tmp_path / "to-device").symlink_to(device)
    (tmp_path / "loop").symlink_to("loop")
    cases = [("-o", device, "a character device"), ("-o", fifo, "a FIFO"),
             ("-o", tmp_path / "to-device", "a symlink to a character device"), ("-o", tmp_path / "loop", None),
             ("--rejects", device, "a character device"), ("--report", device, "a character device")]
    for flag, target, what in cases:
        args = ["validate", str(OPENAI), flag, str(target)] if flag != "-o" else \
            ["convert", str(OPENAI), "--to", "openai", "-o", str(target)]
        done = run_prep(*args)
        assert done.returncode == 2, (flag, target, done.stderr)
        words = f"{flag} {target} is {what}" if what else f"{flag} {target}: too many levels of symbolic links"
        assert words.encode() in done.stderr, done.stderr
    assert stat.S_ISCHR(os.stat(device).st_mode) and stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert os.path.islink(tmp_path / "to-device") and os.readlink(tmp_path / "loop") == "loop"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo", "loop", "null", "to-device"]


def test_configuration_files_must_be_regular_and_within_the_size_limit(tmp_path: Path) -> None:
    """/dev/zero as a template, a registry or a recipe once read until MemoryError (19.7 GB)."""
    (tmp_path / "recipe.yaml").symlink_to("/dev/zero")
    (tmp_path / "zero.jinja").symlink_to("/dev/zero")
    big = tmp_path / "big.jinja"
    with big.open("wb") as f:
        f.truncate(65 << 20)  # sparse: the size is checked, not the bytes
    cases = [(("template", str(OPENAI), "--tokenizer", str(SAMPLES / "tokenizer"), "--template", str(tmp_path / "zero.jinja")),
              "zero.jinja: the template must be a regular file, not a device, FIFO or socket"),
             (("template", str(OPENAI), "--tokenizer", str(SAMPLES / "tokenizer"), "--template", str(big)),
              f"{big}: the template is 65 MB; prep reads at most 64 MB of configuration"),
             (("convert", "--dataset", "x", "--dataset-info", "/dev/zero", "--to", "openai", "-o", str(tmp_path / "o.jsonl")),
              "/dev/zero: the registry must be a regular file"),
             (("run", str(tmp_path / "recipe.yaml")), "recipe.yaml: the recipe must be a regular file")]
    for args, words in cases:
        done = run_prep(*args)
        assert done.returncode == 2 and words.encode() in done.stderr, (args, done.stderr)
    assert not (tmp_path / "o.jsonl").exists()


BOMBS = ["{{ [1, 2] | tojson(indent=999999999) }}", "{{ 'a\nb' | indent(999999999) }}",
         "{{ 'x' | center(999999999) }}", "{{ '%999999999s' | format('x') }}", "{{ '%999999999s' % 'x' }}",
         "{{ '%*s' % (999999999, 'x') }}", "{{ '{:>999999999}'.format('x') }}", "{{ '{:.999999999f}'.format(1.0) }}",
         "{{ 'x'.rjust(999999999) }}", "{{ 'x'.ljust(999999999) }}", "{{ 'x'.zfill(999999999) }}",
         "{{ ('x' * 4000) | replace('x', 'y' * 4000) | replace('y', 'z' * 4000) }}",
         "{{ ('x' * 4000).replace('x', 'y' * 4000).replace('y', 'z' * 4000) }}",
         "{{ ('\\t' * 4000).expandtabs(999999) }}", "{{ ('x' * 3000000) | join('y' * 10) }}",
         "{{ ('y' * 10).join('x' * 3000000) }}"]


def test_template_filters_and_methods_cannot_build_gigabytes_inside_one_call() -> None:
    """Each once built 1-11 GB inside one filter call, past the 5 s / 16 M-character limits of the whole render."""
    script = f"""
import time
from prep.render.jinja import TemplateLimit, render_chat
for source in {BOMBS!r}:
    started = time.monotonic()
    try:
        render_chat(source, [], None, False, {{}})
    except TemplateLimit as e:
        print("refused", round(time.monotonic() - started, 2), e)
    else:
        print("rendered", source)
# VmHWM, not ru_maxrss: Linux keeps ru_maxrss across exec, so a child of a large pytest would report the parent's
print("peak", next(int(line.split()[1]) // 1024 for line in open("/proc/self/status") if line.startswith("VmHWM")))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    lines = done.stdout.splitlines()
    assert done.returncode == 0 and len(lines) == len(BOMBS) + 1, done.stdout + done.stderr
    assert all(line.startswith("refused") and float(line.split()[1]) < 5 for line in lines[:-1]), lines
    assert int(lines[-1].split()[1]) < 400, lines  # MB; the bombs asked for 1-11 GB


def test_bounded_filters_still_render_what_real_templates_write() -> None:
    from prep.render.jinja import render_chat

    source = ("{{ tools | tojson(indent=4) }}|{{ 'a\nb' | indent(2) }}|{{ 'x' | center(5) }}|{{ '%05d' | format(7) }}|"
              "{{ '{:>4}'.format('x') }}|{{ 'a-b' | replace('-', '+') }}|{{ ['a', 'b'] | join(', ') }}|"
              "{{ messages | map(attribute='role') | join(',') }}|{{ 'ab'.replace('a', 'c') }}")
    out = render_chat(source, [{"role": "user", "content": "hi"}], [{"a": [1]}], False, {})
    assert out == ('[\n    {\n        "a": [\n            1\n        ]\n    }\n]|a\n  b|  x  |00007|   x|a+b|a, b|'
                   'user|cb')


def test_a_recipe_input_inside_the_run_folder_is_refused_and_kept(tmp_path: Path) -> None:
    """A recipe reading `<output>/validate/rejects.jsonl` once had that file truncated to 0 bytes by validate."""
    rejects = tmp_path / "run" / "validate" / "rejects.jsonl"
    rejects.parent.mkdir(parents=True)
    rejects.write_bytes(OPENAI.read_bytes())
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: r\noutput: {tmp_path / 'run'}\ninputs:\n  files: [{rejects}]\nvalidate: {{}}\n")
    done = run_prep("run", str(recipe))
    assert done.returncode == 2, done.stderr
    assert f"the input {rejects} is inside the output folder output: {tmp_path / 'run'}".encode() in done.stderr
    assert rejects.read_bytes() == OPENAI.read_bytes()


def _rss_mb(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        return next(int(line.split()[1]) // 1024 for line in f if line.startswith("VmRSS:"))


def test_num_samples_streams_in_flat_memory_and_stops_at_sigterm(tmp_path: Path) -> None:
    """num_samples 10^12 once held every sampled row: killed by the kernel at 23.9 GB, deaf to SIGTERM meanwhile."""
    import json
    import signal
    import time

    (tmp_path / "rows.jsonl").write_bytes(OPENAI.read_bytes())
    (tmp_path / "dataset_info.json").write_text(json.dumps(
        {"big": {"file_name": "rows.jsonl", "formatting": "sharegpt", "num_samples": 10**12,
                 "columns": {"messages": "messages"},
                 "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                          "assistant_tag": "assistant", "system_tag": "system"}}}))
    out = tmp_path / "out.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "prep", "convert", "--dataset", "big", "--dataset-info",
                             str(tmp_path / "dataset_info.json"), "--to", "openai", "-o", str(out), "-q"],
                            stderr=subprocess.PIPE)
    try:
        time.sleep(6)
        first = _rss_mb(proc.pid)
        time.sleep(6)
        second = _rss_mb(proc.pid)
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else b""
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
    finally:
        proc.kill()
    assert max(first, second) < 300 and second - first < 50, (first, second)
    assert proc.returncode == 130
    assert not out.exists() and not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


KILL_AT_RENAME = """
import os, signal, sys
import prep.files.atomic as atomic
from prep.cli import main

k, calls = int(sys.argv[1]), [0]

def killing(real):
    def call(*args, **kwargs):
        calls[0] += 1
        if calls[0] == k:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)
    return call

os.replace, atomic._exchange = killing(os.replace), killing(atomic._exchange)
main(sys.argv[2:], prog_name="prep")
"""


def test_split_swaps_train_and_validation_in_as_one_unit(tmp_path: Path) -> None:
    """Killed between its two renames, split once left the new validation beside the old train (3,179 of 4,000
    validation ids also in train). Killed at every rename it makes, the folder holds the old pair or the new one."""
    out = tmp_path / "split"

    def split(seed: int, kill_at: int = 0) -> subprocess.CompletedProcess[bytes]:
        args = ["split", str(OPENAI), "--val", "0.4", "--seed", str(seed), "-o", str(out), "--rejects",
                str(out / "rejects.jsonl"), "-q"]
        return subprocess.run([sys.executable, "-c", KILL_AT_RENAME, str(kill_at), *args], capture_output=True,
                              env={**os.environ, "PYTHONPATH": str(SAMPLES.parent / "src")})

    def pair() -> tuple[bytes, bytes, bytes]:
        return tuple((out / n).read_bytes() for n in ("train.jsonl", "validation.jsonl", "manifest.json"))

    assert split(2).returncode == 0
    new = pair()
    assert split(1).returncode == 0
    old = pair()
    (out / "notes.txt").write_text("mine")
    assert old[:2] != new[:2]
    kill_at = 1
    while (done := split(2, kill_at)).returncode != 0:
        assert done.returncode == -9, done.stderr
        assert pair() in (old, new), f"killed at rename {kill_at}: a mixed pair"
        assert (out / "notes.txt").read_text() == "mine"
        kill_at += 1
    assert kill_at > 2 and pair() == new and (out / "notes.txt").read_text() == "mine"


def test_report_never_writes_over_what_it_reads_through_manifests_and_runs(tmp_path: Path) -> None:
    """`prep report PACKED -o TOK/data/shard-00000.parquet` and `prep report RUN -o RUN/pack/manifest.json` once
    overwrote what they read, rc 0."""
    import hashlib

    from test_reliability import recipe

    tok, packed = tmp_path / "tok", tmp_path / "packed"
    assert run_prep("tokenize", str(OPENAI), "--tokenizer", str(SAMPLES / "tokenizer"), "--template", "chatml",
                    "-o", str(tok), "-q").returncode == 0
    assert run_prep("pack", str(tok), "--max-len", "512", "-o", str(packed), "-q").returncode == 0
    run = tmp_path / "run"
    assert run_prep("run", str(recipe(tmp_path))).returncode in (0, 1)
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in (*tmp_path.rglob("*.parquet"),
                                                                      *tmp_path.rglob("manifest.json"))}
    for target, out in ((packed, tok / "data" / "shard-00000.parquet"), (run, run / "pack" / "manifest.json"),
                        (run, run / "run.json")):
        done = run_prep("report", str(target), "-o", str(out))
        assert done.returncode == 2, (target, out, done.stderr)
    assert before == {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in before}
    assert run_prep("report", str(run)).returncode in (0, 1) and (run / "report.html").is_file()


def test_a_full_disk_under_rejects_names_the_rejects_file(tmp_path: Path, full_disk: Path) -> None:
    """dedup, mix and decontaminate once blamed the -o file for the rejects file's full disk."""
    import json

    data = random_chats(tmp_path / "in.jsonl", 1500)
    twice = tmp_path / "twice.jsonl"
    twice.write_bytes(data.read_bytes() * 2)
    rejects = full_disk / "rejects.jsonl"
    benchmark = tmp_path / "benchmark.jsonl"
    benchmark.write_text("".join(json.dumps({"question": json.loads(line)["messages"][0]["content"]}) + "\n"
                                 for line in data.read_text().splitlines()))
    for args in (("dedup", str(twice), "--exact"), ("mix", f"{data}:0.1", f"{tmp_path / 'in.jsonl'}:0.9"),
                 ("decontaminate", str(data), "--against", str(benchmark))):
        done = run_prep(*args, "-o", str(tmp_path / "out.jsonl"), "--rejects", str(rejects))
        assert done.returncode == 2, (args, done.stderr)
        assert done.stderr.decode().startswith(f"prep: {rejects}: no space left"), (args, done.stderr)
        assert list(full_disk.iterdir()) == [] and not (tmp_path / "out.jsonl").exists(), args


def test_nul_bytes_in_paths_and_nan_losses_get_one_line(tmp_path: Path) -> None:
    """A NUL in a registry file_name or a recipe output, and a report of a run whose loss went NaN, were "internal
    error"."""
    import json

    (tmp_path / "dataset_info.json").write_text(json.dumps({"x": {"file_name": "a\0b.jsonl"}}))
    done = run_prep("convert", "--dataset", "x", "--dataset-info", str(tmp_path / "dataset_info.json"), "--to",
                    "openai", "-o", str(tmp_path / "o.jsonl"))
    assert done.returncode == 2 and b"has a file_name that is not a path (it holds a NUL byte)" in done.stderr
    (tmp_path / "r.yaml").write_text(f'name: r\noutput: "a\\0b"\ninputs:\n  files: [{OPENAI}]\nvalidate: {{}}\n')
    done = run_prep("run", str(tmp_path / "r.yaml"))
    assert done.returncode == 2 and done.stderr.decode() == f"prep: {tmp_path / 'r.yaml'}:2: output holds a NUL " \
                                                            "byte, which no path can\n"
    train = tmp_path / "train"
    train.mkdir()
    report = {"shards": str(tmp_path / "gone"), "model": "m", "method": "lora", "objective": "sft", "packed": False,
              "padding_free": False, "batching": "padded", "steps": 3, "epochs": 1.0, "runtime_s": 1.0, "tokens": 30,
              "trained_tokens": 10, "tokens_per_s": 30.0, "first_loss": float("nan"), "last_loss": 2.0,
              "eval_loss": None, "eval": {}, "peak_memory": {}, "options": {}, "notes": [],
              "loss_curve": [{"step": 1, "loss": float("nan")}, {"step": 2, "loss": float("inf")},
                             {"step": 3, "loss": 2.0, "learning_rate": 1e-4}]}
    (train / "training_report.json").write_text(json.dumps(report))
    done = run_prep("report", str(train))
    assert done.returncode == 0, done.stderr
    assert b"2 step(s) with a NaN or infinite loss are left off the chart" in done.stderr + done.stdout
    assert (train / "report.html").stat().st_size > 1000


def test_a_long_training_curve_makes_a_small_page(tmp_path: Path) -> None:
    """A 200,000-point loss curve once made a 22 MB page."""
    import json

    train = tmp_path / "train"
    train.mkdir()
    report = {"shards": str(tmp_path / "gone"), "model": "m", "method": "lora", "objective": "sft", "packed": False,
              "padding_free": False, "batching": "padded", "steps": 200_000, "epochs": 1.0, "runtime_s": 1.0,
              "tokens": 30, "trained_tokens": 10, "tokens_per_s": 30.0, "first_loss": 9.0, "last_loss": 2.0,
              "eval_loss": None, "eval": {}, "peak_memory": {}, "options": {}, "notes": [],
              "loss_curve": [{"step": i, "loss": 9 - i / 30_000, "learning_rate": 1e-4} for i in range(1, 200_001)]}
    (train / "training_report.json").write_text(json.dumps(report))
    done = run_prep("report", str(train))
    assert done.returncode == 0, done.stderr
    assert b"loss: 200,000 points drawn as 2,000" in done.stderr + done.stdout
    assert (train / "report.html").stat().st_size < 1_000_000  # was 22 MB


def test_a_stray_nul_near_the_start_is_the_rows_finding_not_the_files(tmp_path: Path) -> None:
    """A raw NUL in the first 64 bytes once refused the whole file as UTF-16/32; on line 3 it was a per-row bad_json."""
    rows = OPENAI.read_bytes().splitlines(keepends=True)
    data = tmp_path / "nul.jsonl"
    data.write_bytes(b'{"text": "a\x00b"}\n' + b"".join(rows))
    out = tmp_path / "out.jsonl"
    done = run_prep("convert", str(data), "--to", "openai", "-o", str(out), "--rejects", str(tmp_path / "rej.jsonl"))
    assert done.returncode == 1, done.stderr
    assert len(out.read_bytes().splitlines()) == len(rows)
    assert b'"line": 1' in (tmp_path / "rej.jsonl").read_bytes()
    utf16 = tmp_path / "utf16.jsonl"
    utf16.write_bytes(b"".join(rows).decode().encode("utf-16-le"))
    done = run_prep("convert", str(utf16), "--to", "openai", "-o", str(out))
    assert done.returncode == 2 and b"UTF-16 or UTF-32 without a byte-order mark" in done.stderr


def _repeating_rows() -> tuple[list[str], list[str]]:
    """JSONL lines: a row repeating its top-level `messages` (the first value, A, is what JSON readers drop), one
    repeating `role` inside a message with spaces before the colon, and clean rows whose text holds what a cheap
    count could mistake for keys (JSON text inside strings, escaped colons, `":` in text); and the same as a .json
    array."""
    a = '[{"role": "user", "content": "A: lost"}, {"role": "assistant", "content": "A"}]'
    b = '[{"role": "user", "content": "B"}, {"role": "assistant", "content": "B"}]'
    lines = [f'{{"messages": {a}, "messages": {b}}}',
             '{"messages": [{"role" : "system", "content": "s", "role" : "user"}, {"role": "assistant", "content": "x"}]}',
             '{"messages": [{"role": "user", "content": "{\\"name\\": \\"f\\", \\"a\\": {\\"b\\": 1}}"}, '
             '{"role": "assistant", "content": "a\\u003ab \\":\\" \\\\\\\\ c:d"}]}',
             '{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}], "id": "r4"}']
    return lines, [a, b]


def test_duplicate_keys_are_a_finding_and_the_dropped_value_is_kept_and_counted(tmp_path: Path) -> None:
    """`{"messages": A, "messages": B}`: A once vanished, validate said nothing, `convert --strict-fields` wrote B, rc 0."""
    import json

    import prep

    lines, (a, b) = _repeating_rows()
    jsonl = tmp_path / "rows.jsonl"
    jsonl.write_text("\n".join(lines) + "\n")
    array = tmp_path / "rows.json"
    array.write_text("[\n" + ",\n".join(lines) + "\n]")
    single = tmp_path / "one.json"
    single.write_text(lines[0])
    for path, rows in ((jsonl, 4), (array, 4), (single, 1)):
        out, rejects = tmp_path / f"{path.name}.out.jsonl", tmp_path / f"{path.name}.rejects.jsonl"
        result = prep.convert(prep.Inputs([str(path)]), "openai", str(out), rejects=str(rejects))
        repeated = 1 if rows == 1 else 2
        assert (result.tally.read, result.tally.written, result.tally.altered) == (rows, rows, {"duplicate_key": repeated})
        assert result.tally.dropped == ({"messages": 1} if rows == 1 else {"messages": 1, "messages[].role": 1})
        written = [json.loads(x) for x in out.read_text().splitlines()]
        assert written[0]["messages"] == json.loads(b)  # the last value, as every JSON reader reads it
        kept = [json.loads(x) for x in rejects.read_text().splitlines()]
        assert [k["reasons"][0]["code"] for k in kept] == ["duplicate_key"] * repeated and all(k["written"] for k in kept)
        assert kept[0]["reasons"][0]["path"] == "$.messages" and kept[0]["dropped_values"] == {"messages": 1}
        assert json.loads(b) != json.loads(a) and a in kept[0]["row"] and b in kept[0]["row"]  # A is not lost
        if rows > 1:
            assert kept[1]["reasons"][0]["path"] == "$.messages[0].role"
        strict = prep.convert(prep.Inputs([str(path)], strict_fields=True), "openai", str(out))
        assert strict.tally.written == rows - repeated and strict.tally.rejected == {"duplicate_key": repeated}
        assert len(out.read_text().splitlines()) == rows - repeated
        for strict_fields, severity in ((False, "warnings"), (True, "errors")):
            report = prep.validate(prep.Inputs([str(path)], strict_fields=strict_fields)).to_dict()
            assert report["summary"]["findings_by_code"]["duplicate_key"]["count"] == repeated, report["summary"]
            assert report["summary"][severity] >= repeated
            assert report["summary"]["rows_rejected"] == (repeated if strict_fields else 0)


def test_the_cheap_duplicate_key_test_misses_no_repeated_key() -> None:
    """The fast JSONL path sends a line to the exact pairs-aware parse only when its colons outnumber what its decoded
    value accounts for: over random rows with spaces, escapes and colons in text, no repeated key slips past it, and
    rows without one are not sent."""
    import json
    import random

    import msgspec

    from prep.files.jsondoc import may_repeat_keys, repeated_keys

    rng = random.Random(7)
    pieces = ["a", ":", '"', "\\", " ", "\\u003a", "é", '":', "{", "}", "x"]

    def text() -> str:
        return "".join(rng.choice(pieces) for _ in range(rng.randint(0, 6)))

    def value(depth: int) -> object:
        kind = rng.randint(0, 4 if depth < 3 else 1)
        if kind == 0:
            return text()
        if kind == 1:
            return rng.choice([1, 2.5, None, True])
        if kind == 2:
            return [value(depth + 1) for _ in range(rng.randint(0, 3))]
        return {text() + str(i): value(depth + 1) for i in range(rng.randint(0, 3))}

    def dumped(v: object, repeat: bool) -> str:
        if isinstance(v, dict):
            sep = rng.choice([":", ": ", " : ", "\t:"])
            pairs = [f"{json.dumps(k)}{sep}{dumped(x, repeat)}" for k, x in v.items()]
            if repeat and v:
                pairs.insert(0, f"{json.dumps(next(iter(v)))}{sep}{json.dumps(text())}")
            return "{" + ", ".join(pairs) + "}"
        if isinstance(v, list):
            return "[" + ", ".join(dumped(x, repeat) for x in v) + "]"
        return json.dumps(v, ensure_ascii=rng.random() < 0.5)

    clean = 0
    for _ in range(3000):
        row = {"k": value(0), "m": [value(1), {"r": text()}]}
        repeat = rng.random() < 0.3
        raw = dumped(row, repeat).encode()
        decoded = msgspec.json.decode(raw)
        if repeat:
            assert may_repeat_keys(raw, decoded) and repeated_keys(raw.decode()) is not None, raw
        else:
            assert repeated_keys(raw.decode()) is None, raw
            if b"\\u003" not in raw.lower():  # only a colon escape (or text spelling one) sends a clean row on
                clean += 1
                assert not may_repeat_keys(raw, decoded), raw
    assert clean > 500
