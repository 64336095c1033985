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
