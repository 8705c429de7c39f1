"""``otgen`` command line: one thin subcommand per module, dispatched from here.

Each subcommand lives in ``otgen.cli.<name>_cmd`` and exposes ``add_parser(subparsers)``,
which registers its flags and sets ``func=run`` with ``run(args) -> int``. Adding ``train``,
``sample`` or ``eval`` means writing that module and listing it in ``COMMANDS``.

Errors a user can fix (bad files, bad flags, invalid problems) are printed as one line,
``otgen: error: <message>``, with exit code 2; set ``OTGEN_DEBUG=1`` to get the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from otgen.cli._common import CLIError

__all__ = ["main", "build_parser", "COMMANDS"]

#: Subcommand modules, ``otgen.cli.<name>_cmd``, in the order shown by ``otgen --help``.
COMMANDS: tuple[str, ...] = ("train", "sample", "eval", "ot", "geodesic", "gradflow", "dynamic")


class _UsageError(Exception):
    """Raised instead of argparse's print-usage-and-exit, so ``main`` returns 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise _UsageError(f"{message} (see '{self.prog} --help')")


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("otgen")
    except Exception:  # noqa: BLE001 - not installed as a distribution
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    """The ``otgen`` parser with every subcommand in ``COMMANDS`` registered."""
    parser = _Parser(
        prog="otgen",
        description="Optimal transport and transport-based generative modelling in PyTorch.",
    )
    parser.add_argument("--version", action="version", version=f"otgen {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"otgen.cli.{name}_cmd").add_parser(sub)
    return parser


def _fail(exc: BaseException | str, code: int) -> int:
    msg = " ".join(str(exc).split()) or type(exc).__name__
    print(f"otgen: error: {msg}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``otgen`` command line; returns the process exit code.

    Args:
        argv: Arguments without the program name (default ``sys.argv[1:]``).
    Returns:
        0 on success, 2 for user errors (bad flags, files or problems), 1 for I/O errors
        while writing outputs, 130 when interrupted.
    Example:
        >>> main(["ot", "source.csv", "target.csv", "--out", "runs/demo"])  # doctest: +SKIP
        0
    """
    debug = os.environ.get("OTGEN_DEBUG", "") not in ("", "0")
    try:
        parser = build_parser()
        args = parser.parse_args(list(argv) if argv is not None else None)
        return int(args.func(args) or 0)
    except SystemExit as e:  # --help / --version
        return e.code if isinstance(e.code, int) else (0 if e.code is None else _fail(e.code, 2))
    except KeyboardInterrupt:
        print("otgen: interrupted", file=sys.stderr)
        return 130
    except (_UsageError, CLIError, ValueError, TypeError, FileNotFoundError) as e:
        if debug:
            raise
        return _fail(e, 2)
    except OSError as e:
        if debug:
            raise
        return _fail(e, 1)


if __name__ == "__main__":
    sys.exit(main())
