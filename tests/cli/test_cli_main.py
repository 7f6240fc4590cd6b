"""The CLI shell: help, unknown commands, registry, error formatting."""

from __future__ import annotations

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
