"""Atomic output: nothing half-written, clear errors for bad paths."""

from __future__ import annotations

import os

import pytest

from trtkit.atomic import atomic_output, check_output_path, write_bytes_atomic
from trtkit.errors import OutputPathError


def test_write_replaces_target_only_on_success(tmp_path):
    target = tmp_path / "engine.plan"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_output(target) as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("build failed half way")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["engine.plan"]


def test_keyboard_interrupt_leaves_no_temp_file(tmp_path):
    target = tmp_path / "model.onnx"
    with pytest.raises(KeyboardInterrupt):
        with atomic_output(target) as tmp:
            tmp.write_bytes(b"x" * 1000)
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_success_renames(tmp_path):
    target = write_bytes_atomic(tmp_path / "a.bin", b"data")
    assert target.read_bytes() == b"data"
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]


def test_missing_directory_is_named_with_fix(tmp_path):
    with pytest.raises(OutputPathError, match="does not exist; create it first"):
        check_output_path(tmp_path / "nope" / "out.plan")


def test_directory_as_output_is_refused(tmp_path):
    with pytest.raises(OutputPathError, match="is a directory"):
        check_output_path(tmp_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write to read-only directories")
def test_unwritable_directory(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(OutputPathError, match="not writable"):
            check_output_path(ro / "x.plan")
    finally:
        ro.chmod(0o700)


def test_unwritable_filesystem_is_a_clean_error():
    # /proc refuses new files even for root; os.access would say yes.
    with pytest.raises(OutputPathError, match="cannot write in directory '/proc'"):
        check_output_path("/proc/x.plan")


def test_output_equal_to_input_is_refused(tmp_path):
    src = tmp_path / "model.onnx"
    src.write_bytes(b"model")
    with pytest.raises(OutputPathError, match="is the input file"):
        check_output_path(tmp_path / "." / "model.onnx", inputs=[src])
    assert src.read_bytes() == b"model"


def test_write_error_inside_the_block_becomes_output_path_error(tmp_path):
    with pytest.raises(OutputPathError, match="writing failed"):
        with atomic_output(tmp_path / "x.bin") as tmp:
            os.mkdir(tmp.with_suffix(".d"))
            os.rmdir(tmp.with_suffix(".d"))
            raise OSError(28, "No space left on device")
    assert list(tmp_path.iterdir()) == []
