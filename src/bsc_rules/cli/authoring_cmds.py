"""The rule authors' commands: ``test`` (rule test files) and ``whatif`` (two rule sets).

The arguments are declared and checked here, like every command's; the bodies are in
:mod:`bsc_rules.authoring.commands`.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from bsc_rules.authoring import commands as authoring
from bsc_rules.cli._common import BadArguments, Context, command, instant


def _test(args: argparse.Namespace, ctx: Context) -> int:
    for pattern in args.run or ():
        try:
            re.compile(pattern)
        except re.error as exc:
            msg = f"--run: not a valid regular expression: {exc}"
            raise BadArguments(msg) from None
    return authoring.run_test(args, ctx.console)


def _whatif(args: argparse.Namespace, ctx: Context) -> int:
    if len(args.rules) != 2:
        msg = f"--rules: give two rule folders (A, B), got {len(args.rules)}"
        raise BadArguments(msg)
    return authoring.run_whatif(args, ctx.console)


def register(sub: Any) -> None:
    test = command(sub, "test", _test, "run rule test files (rules/tests/*.test.yaml)")
    test.add_argument(
        "paths", nargs="*", type=Path, help="test files or folders (default: the rules' tests/)"
    )
    test.add_argument(
        "--run", action="append", metavar="NAME", help="only tests whose name matches (regex)"
    )
    test.add_argument("--junit", type=Path, metavar="FILE", help="also write JUnit XML here")
    test.add_argument(
        "--rules", type=Path, help="run against this rule folder instead of each file's own"
    )
    whatif = command(sub, "whatif", _whatif, "replay events under two rule sets and compare")
    whatif.add_argument("events", type=Path, help="CloudEvents JSON Lines file")
    whatif.add_argument(
        "--rules", type=Path, action="append", required=True, help="rule folder (give two: A, B)"
    )
    whatif.add_argument(
        "--until", type=instant, help="RFC 3339 instant (default: last event's month end)"
    )
    whatif.add_argument("--format", choices=("table", "json", "html"), default="table")
    whatif.add_argument("--out", type=Path, help="write the output to this file")
    whatif.add_argument(
        "--settings", type=Path, help="settings file (sender, tick); recipients: the office files"
    )
