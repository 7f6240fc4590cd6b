"""The ``trtkit`` command line: one module per command, registered in ``COMMANDS``.

Each command module defines ``register(subparsers)``, which adds its parser and
sets ``run=<function(args) -> int>``. Commands parse, build value objects, call
one API function, and print. ``TrtkitError`` becomes ``error: ...`` and exit 1;
any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import logging
import os
import sys
from typing import Any, Sequence

from ..errors import TrtkitError

__all__ = ["COMMANDS", "main", "build_parser"]

COMMANDS: dict[str, str] = {
    "export": "trtkit.cli.export",
    "inspect": "trtkit.cli.inspect",
    "reshape": "trtkit.cli.reshape",
    "build": "trtkit.cli.build",
    "quantize": "trtkit.cli.quantize",
    "run": "trtkit.cli.run",
    "compare": "trtkit.cli.compare",
    "bench": "trtkit.cli.bench",
    "predict": "trtkit.cli.predict",
    "add-nms": "trtkit.cli.add_nms",
    "triton": "trtkit.cli.triton",
    "serve": "trtkit.cli.serve",
}


class CommandParser(argparse.ArgumentParser):
    """A subcommand's parser that lets options come between positionals
    (``trtkit predict --task detect MODEL --conf 0.3 IMG``).

    Plain ``parse_args`` stops filling positionals at the first option and rejects
    later ones as "unrecognized arguments"; the stdlib's ``parse_known_intermixed_args``
    parses options first, then all positionals. The main parser reaches a subparser
    through ``parse_known_args``, hence the override; the flag stops the recursion,
    as the stdlib implementation calls ``parse_known_args`` itself.
    """

    _intermixing = False

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:  # type: ignore[override]
        if self._intermixing:
            return super().parse_known_args(args, namespace)
        self._intermixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The full parser, or (``only``) just one command's, so a command imports only its own module."""
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="trtkit",
        description="From a trained model to a fast TensorRT engine: export, inspect, reshape, build, run, compare, bench, predict.",
    )
    parser.add_argument("--version", action="version", version=f"trtkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=CommandParser)
    for name, module in COMMANDS.items():
        if only is not None and name != only:
            continue
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            continue  # command not implemented in this build
        mod.register(sub)
    return parser


def _command_parser(parser: argparse.ArgumentParser, command: str | None) -> argparse.ArgumentParser | None:
    for action in parser._actions:  # argparse keeps the subparsers only here
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            return action.choices[command]  # type: ignore[no-any-return]
    return None


def closest_flag(arg: str, parser: argparse.ArgumentParser) -> str | None:
    """The option of ``parser`` nearest to an unknown ``--flag[=value]``, or None."""
    flags = [o for a in parser._actions for o in a.option_strings if o.startswith("--")]
    close = difflib.get_close_matches(arg.split("=", 1)[0], flags, n=1, cutoff=0.6)
    return close[0] if close else None


def _reject_unknown(parser: argparse.ArgumentParser, command: str | None, extras: Sequence[str]) -> None:
    """argparse reports a subcommand's unknown flag with the top-level usage and no hint: use the
    command's own usage (its flags are what the user mistyped) and name the closest flag."""
    sub = _command_parser(parser, command) or parser
    near = {arg: closest_flag(arg, sub) for arg in extras if arg.startswith("-")}
    hints = [f"did you mean {flag}{f' (for {arg})' if len(extras) > 1 else ''}?" for arg, flag in near.items() if flag]
    noun = "argument" if len(extras) == 1 else "arguments"
    fix = " ".join(hints) or (f"see trtkit {command} --help" if command else "see trtkit --help")
    sub.error(f"unrecognized {noun}: {' '.join(extras)}; {fix}")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    first = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(first if first in COMMANDS else None)
    args, extras = parser.parse_known_args(argv)
    if extras:
        _reject_unknown(parser, getattr(args, "command", None), extras)
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    logging.basicConfig(
        level=logging.DEBUG if getattr(args, "verbose", False) else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.run(args) or 0)
    except TrtkitError as exc:
        print(f"error: {exc.render('cli')}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # The reader (e.g. `| head`) went away: stop quietly, as Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        print("error: interrupted; no partial output was written", file=sys.stderr)
        return 130


def entry() -> None:
    sys.exit(main())
