"""The ``bsc-rules`` command line.

Each module of this package holds a group of commands and a ``register(sub)`` that adds
them (see :func:`bsc_rules.cli._common.command`); adding a command is one module and one
line in :data:`COMMAND_MODULES`. The exit codes are in ``bsc-rules --help`` (spec/kpis.md).
Everything printed passes through :func:`bsc_rules.privacy.mask_text`.
"""

from __future__ import annotations

import argparse
import errno
import os
import sqlite3
import sys
from collections.abc import Sequence
from typing import IO

from bsc_rules.cli import (
    authoring_cmds,
    city_cmds,
    db_cmds,
    mail_cmds,
    note_cmds,
    report_cmds,
)
from bsc_rules.cli._common import (
    BAD_ARGUMENTS,
    BROKEN_PIPE,
    EXIT_CODES,
    FAILED,
    INTERRUPTED,
    BadArguments,
    Context,
    shown,
)
from bsc_rules.cli._output import PipeConsole, stderr
from bsc_rules.clock import Clock, SystemClock
from bsc_rules.errors import BscRulesError, StoreError
from bsc_rules.privacy import mask_text

__all__ = ["COMMAND_MODULES", "build_parser", "main"]

COMMAND_MODULES = (report_cmds, mail_cmds, city_cmds, note_cmds, authoring_cmds, db_cmds)
"""The modules whose ``register(sub)`` adds their sub-commands, in the order of --help."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bsc-rules",
        description="A public office's balanced scorecard as live rules.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def main(
    argv: Sequence[str] | None = None, *, clock: Clock | None = None, stdout: IO[str] | None = None
) -> int:
    """Run the command line; return the exit status (argparse exits 2 itself)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    stream = stdout or sys.stdout
    console = PipeConsole(file=stream, width=160, soft_wrap=False)
    ctx = Context(console, stream, clock or SystemClock())
    try:
        code: int = args.handler(args, ctx)
        stream.flush()
    except BrokenPipeError:
        return _closed_pipe(stream)
    except KeyboardInterrupt:
        _fail(args, "已中斷（Ctrl-C）。")
        return INTERRUPTED
    except BadArguments as exc:
        _fail(args, f"{exc}（參數說明：bsc-rules {args.command} --help）")
        return BAD_ARGUMENTS
    except BscRulesError as exc:
        _fail(args, _with_db(str(exc), args) if isinstance(exc, StoreError) else str(exc))
        return FAILED
    except sqlite3.Error as exc:  # a database fault outside the store's own checks
        _fail(args, _with_db(f"database error: {exc} (nothing partial was kept)", args))
        return FAILED
    except OSError as exc:
        if exc.errno == errno.EPIPE:
            return _closed_pipe(stream)
        _fail(args, f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": "))
        return FAILED
    return code


def _fail(args: argparse.Namespace, text: str) -> None:
    stderr().print(
        mask_text(f"bsc-rules {args.command}: 錯誤：{text}"), highlight=False, markup=False
    )


def _with_db(text: str, args: argparse.Namespace) -> str:
    """The message, naming the database file when it does not already."""
    db = getattr(args, "db", None)
    if db is None:
        return text
    where = shown(str(db))
    return text if where in text or str(db) in text else f"{text} [database: {where}]"


def _closed_pipe(stream: IO[str]) -> int:
    """The reader went away: stop quietly. What is still buffered for it goes nowhere
    (standard output now points at /dev/null, so the flush at exit cannot fail)."""
    if stream is sys.stdout:
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        except (OSError, ValueError):  # no file descriptor (a replaced stdout)
            pass
    return BROKEN_PIPE
