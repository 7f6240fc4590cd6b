"""The ``trtkit`` command line: one module per command, registered in ``COMMANDS``.

Each command module defines ``register(subparsers)``, which adds its parser and
sets ``run=<function(args) -> int>``. Commands parse, build value objects, call
one API function, and print. ``TrtkitError`` becomes ``error: ...`` and exit 1;
any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
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


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    first = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(first if first in COMMANDS else None)
    args = parser.parse_args(argv)
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
        print(f"error: {exc}", file=sys.stderr)
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
