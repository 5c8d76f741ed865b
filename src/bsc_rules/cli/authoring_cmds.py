"""The rule authors' commands: ``test`` (rule test files) and ``whatif`` (two rule sets)."""

from __future__ import annotations

import argparse
from typing import Any

from bsc_rules.authoring import commands as authoring
from bsc_rules.cli._common import Context


def _test(args: argparse.Namespace, ctx: Context) -> int:
    return authoring.run_test(args, ctx.console)


def _whatif(args: argparse.Namespace, ctx: Context) -> int:
    return authoring.run_whatif(args, ctx.console)


def register(sub: Any) -> None:
    authoring.add_test_parser(sub).set_defaults(handler=_test)
    authoring.add_whatif_parser(sub).set_defaults(handler=_whatif)
