"""Hostile input, second round (issue 28): each test asserts what is left on disk or in memory, not only the exit."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from conftest import SAMPLES, run_prep

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
             ("-o", tmp_path / "to-device", "a symlink to a character device"), ("-o", tmp_path / "loop", "a symlink loop"),
             ("--rejects", device, "a character device"), ("--report", device, "a character device")]
    for flag, target, what in cases:
        args = ["validate", str(OPENAI), flag, str(target)] if flag != "-o" else \
            ["convert", str(OPENAI), "--to", "openai", "-o", str(target)]
        done = run_prep(*args)
        assert done.returncode == 2, (flag, target, done.stderr)
        assert f"{flag} {target} is {what}".encode() in done.stderr, done.stderr
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
