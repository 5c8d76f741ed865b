"""The database commands: ``db upgrade`` (the schema brought to this code's version)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from bsc_rules.cli._common import OK, Context, command, db_value
from bsc_rules.cli._output import out


def register(sub: Any) -> None:
    db = command(sub, "db", _no_action, "the database itself (its schema)")
    actions = db.add_subparsers(dest="action", required=True)
    upgrade = command(
        actions,
        "upgrade",
        _upgrade,
        "upgrade a database's schema in place (a SQLite file, every DIR/*.db of a directory,"
        " or a postgresql:// URL), and nothing else",
    )
    upgrade.add_argument(
        "--db", help="SQLite file, directory (DIR/ or an existing one) or postgresql:// URL"
        " (default: the settings' database)"
    )  # fmt: skip
    upgrade.add_argument("--settings", type=Path, help="settings file (default: ./bsc-rules.toml)")


def _no_action(args: argparse.Namespace, ctx: Context) -> int:  # pragma: no cover
    return OK  # argparse requires the action: never reached


def _upgrade(args: argparse.Namespace, ctx: Context) -> int:
    from bsc_rules.store.dbform import upgrade

    db = db_value(args)
    done = upgrade(db)
    if not done:
        out(ctx.console, f"資料庫目錄 {db} 中沒有資料庫檔（*.db），未做任何變更。")
    for each in done:
        if each.before == each.after:
            out(ctx.console, f"資料庫 {each.where}：結構版本 {each.after}，已是最新，未變更。")
        else:
            out(
                ctx.console,
                f"資料庫 {each.where}：結構版本 {each.before} → {each.after}，已升級。",
            )
    return OK
