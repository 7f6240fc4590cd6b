"""The CLI shell: help, unknown commands, registry, error formatting."""

from __future__ import annotations

import pytest

from trtkit.cli import COMMANDS, build_parser

from tests.conftest import assert_clean_error


def test_help_lists_every_registered_command(cli):
    result = cli("--help")
    assert result.code == 0
    missing = [name for name in COMMANDS if name not in result.out]
    assert not missing, f"commands not registered: {missing}"


def test_every_command_module_registers_a_runner():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name in COMMANDS:
        assert name in sub.choices, name
        assert sub.choices[name].get_default("run") is not None, name


def test_no_command_prints_help_and_fails(cli):
    result = cli()
    assert result.code == 2
    assert "COMMAND" in result.out


def test_missing_model_file_is_a_clean_error(cli, tmp_path):
    result = cli("run", tmp_path / "missing.onnx")
    assert_clean_error(result, "missing.onnx")


def test_unknown_flag_shows_the_commands_usage_and_the_closest_flag(cli, tmp_path):
    result = cli("reshape", tmp_path / "m.onnx", "-o", tmp_path / "o.onnx", "--dynamic-bach")
    assert result.code == 2
    assert result.err.startswith("usage: trtkit reshape"), result
    assert "error: unrecognized argument: --dynamic-bach; did you mean --dynamic-batch?" in result.err
    result = cli("bench", "m.onnx", "--warmup-msec=5", "--duraton", "1")
    assert result.err.startswith("usage: trtkit bench"), result
    assert "did you mean --warmup-ms (for --warmup-msec=5)?" in result.err
    assert "did you mean --duration (for --duraton)?" in result.err


def test_unknown_flag_without_a_near_one_points_at_the_commands_help(cli):
    result = cli("run", "m.onnx", "--zzzzzz")
    assert result.code == 2 and result.err.startswith("usage: trtkit run")
    assert "unrecognized argument: --zzzzzz; see trtkit run --help" in result.err


@pytest.mark.parametrize(
    "args, cli_words, api_words",
    [
        (["run", "model.xyz"], ["--backend onnxruntime|ort-cuda|tensorrt"], ["backend=", "in Python"]),
    ],
)
def test_cli_errors_name_flags_not_keyword_arguments(cli, tmp_path, args, cli_words, api_words):
    (tmp_path / "model.xyz").write_bytes(b"\0" * 16)
    result = cli(*args, cwd=tmp_path)
    assert_clean_error(result, *cli_words)
    for word in api_words:
        assert word not in result.err, (word, result)


def test_run_on_an_image_points_at_predict(cli, tmp_path):
    image = tmp_path / "messi5.jpg"
    image.write_bytes(b"\xff\xd8\xff\xe0" + b"\0" * 16)
    result = cli("run", image)
    assert_clean_error(result, "messi5.jpg' is an image", "trtkit predict --task TASK MODEL IMAGE")
    assert "backend=" not in result.err
