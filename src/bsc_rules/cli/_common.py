"""What every command shares: exit codes, the context, argument helpers, reading lines.

A command module defines ``register(sub)``, which adds its sub-commands with
:func:`command`; each handler takes ``(args, ctx)`` and returns an exit code.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import IO, TYPE_CHECKING, Any

from rich.console import Console

from bsc_rules.calendar import TAIPEI, parse_instant
from bsc_rules.clock import Clock
from bsc_rules.errors import UsageError

if TYPE_CHECKING:
    from bsc_rules.rules.ruleset import RuleSet
    from bsc_rules.settings import Settings
    from bsc_rules.store.base import EventStore
    from bsc_rules.store.sqlconn import Db

OK = 0
"""It ran, and every line was accepted (duplicates included)."""
FAILED = 1
"""It could not run: unreadable file, invalid rules or settings, database error."""
BAD_ARGUMENTS = 2
"""The arguments are wrong (what argparse refuses, a ``--year`` after ``--as-of``...)."""
REJECTED = 3
"""It ran to the end, but some lines were rejected (the report is printed in full)."""
INTERRUPTED = 130
"""Stopped by Ctrl-C (128 + SIGINT)."""
BROKEN_PIPE = 141
"""The reader of standard output went away (128 + SIGPIPE), e.g. ``| head``."""

EXIT_CODES = f"""exit status (evaluate, ingest, status, replay):
  {OK}    it ran and every line was accepted (duplicates included), whatever the statuses
  {REJECTED}    it ran to the end but some lines were rejected (the report is still printed)
  {BAD_ARGUMENTS}    bad arguments (e.g. an --as-of without offset, a --year after --as-of)
  {FAILED}    it could not run (unreadable file, invalid rules or settings, database error)
  {INTERRUPTED}  interrupted (Ctrl-C); ingest keeps what it had stored and says so
  {BROKEN_PIPE}  standard output was closed early (e.g. | head); it ends quietly
other commands exit {OK} on success, {BAD_ARGUMENTS} on bad arguments and {FAILED} on failure."""


class BadArguments(UsageError):
    """Arguments that parse but cannot go together (exit 2)."""


@dataclass(frozen=True, slots=True)
class Context:
    """What a handler gets besides its arguments."""

    console: Console
    stdout: IO[str]
    clock: Clock


Handler = Callable[[argparse.Namespace, Context], int]


def command(sub: Any, name: str, handler: Handler, help: str) -> argparse.ArgumentParser:
    """Add the sub-command ``name`` run by ``handler``; returns its parser for arguments."""
    cmd: argparse.ArgumentParser = sub.add_parser(name, help=help, description=help)
    cmd.set_defaults(handler=handler)
    return cmd


def exit_for(rejected: int) -> int:
    """The exit code of a run that completed: 3 when lines were rejected, else 0."""
    return REJECTED if rejected else OK


# ---------------------------------------------------------------- arguments


def instant(text: str) -> datetime:
    """An ``--as-of``/``--until`` value: RFC 3339 with an explicit offset."""
    try:
        return parse_instant(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_rules(cmd: argparse.ArgumentParser) -> None:
    """``--rules`` and ``--matcher`` (no default: an explicit one overrides the settings)."""
    cmd.add_argument("--rules", type=Path, help="rule folder (default: the project's rules/)")
    cmd.add_argument(
        "--matcher",
        choices=("auto", "durable", "python"),
        help="condition matcher (default: the settings', else auto)",
    )


def add_settings(cmd: argparse.ArgumentParser, db: bool = False) -> None:
    cmd.add_argument("--settings", type=Path, help="settings file (default: ./bsc-rules.toml)")
    if db:
        cmd.add_argument("--db", type=Path, help="database (default: from the settings)")


def matcher(args: argparse.Namespace) -> str:
    """The matcher of a command without settings: the explicit one, else auto."""
    return str(args.matcher or "auto")


def check_year(args: argparse.Namespace, as_of: datetime) -> None:
    """A ``--year`` after the year of ``as_of`` (in Taipei) is a bad argument."""
    current = as_of.astimezone(TAIPEI).year
    if args.year is not None and args.year > current:
        msg = (
            f"--year {args.year} is after the year of --as-of ({current});"
            " a report cannot look ahead"
        )
        raise BadArguments(msg)


def load(args: argparse.Namespace) -> Settings:
    """The settings file, with what the command line says explicitly on top."""
    from bsc_rules.settings import load_settings

    overrides: dict[str, Any] = {}
    if getattr(args, "rules", None) is not None:
        overrides["rules"] = args.rules
    if getattr(args, "matcher", None) is not None:
        overrides["matcher"] = args.matcher
    if getattr(args, "db", None) is not None and form_of(str(args.db)) != "postgres":
        overrides["database"] = args.db  # a URL is not a path: read it with db_value
    return load_settings(args.settings, **overrides)


def require_db(db: Path) -> None:
    if not db.exists():
        hint = f"create it with: bsc-rules ingest FILE --db {db}"
        msg = f"database {db} does not exist ({hint})"
        raise UsageError(msg)


# ---------------------------------------------------------------- input


def lines(
    path: Path,
    progress: Callable[[int], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> Iterator[bytes]:
    """The lines of ``path`` (bytes); ``progress`` gets the bytes read, ``stop`` ends early."""
    try:
        handle = path.open("rb")
    except OSError as exc:
        msg = f"cannot read {path}: {exc.strerror}"
        raise UsageError(msg) from None
    with handle:
        done = 0
        for raw in handle:
            if stop is not None and stop():
                return
            done += len(raw)
            if progress is not None:
                progress(done)
            yield raw


class Interrupt:
    """Ctrl-C as a flag while the block runs: the work stops at the next line, keeps what
    it stored and reports it. A second Ctrl-C raises ``KeyboardInterrupt`` as usual."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __call__(self) -> bool:
        return self.requested

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True
        signal.signal(signal.SIGINT, self._previous)

    def __enter__(self) -> Interrupt:
        if _main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def binary_stdout(stdout: IO[str]) -> IO[bytes] | IO[str]:
    """Where ``--out -`` writes: the bytes under ``stdout`` when it has them."""
    buffer = getattr(stdout, "buffer", None)
    if buffer is not None and stdout is sys.stdout:
        stdout.flush()
        return buffer  # type: ignore[no-any-return]
    return stdout


def open_db(
    args: argparse.Namespace, codes: list[str] | None = None
) -> tuple[Settings, EventStore, Db]:
    """The settings, the store and the office tables (:class:`Db`) of the one office a
    command about stored state works on (outbox, ack, history, comment): ``--db`` in any
    of its forms (it must exist: such a command never creates an empty one), ``--office``
    where the database holds several offices (``codes``: the deployment's, if known)."""
    from bsc_rules.alerts.pipeline import office_db

    settings = load(args)
    db = db_value(args)
    office = getattr(args, "office", None)
    if form_of(db) != "file" or (office is None and codes):
        office = pick_office(db, office, codes or [], listing=False)
    store = open_store(db, office or "", create=False)
    try:
        return settings, store, office_db(store)
    except BaseException:
        store.close()
        raise


# ---------------------------------------------------------------- --db in its three forms


def add_db(cmd: argparse.ArgumentParser, *, required: bool = True) -> None:
    """``--db`` in its three forms, and ``--office`` for a database of several offices."""
    cmd.add_argument(
        "--db",
        required=required,
        help="SQLite file, directory of per-office files (DIR/ or an existing one),"
        " or postgresql:// URL",
    )
    cmd.add_argument("--office", help="office code, where the database holds several")


def add_rule_sets(cmd: argparse.ArgumentParser) -> None:
    """``--rules`` repeatable (one rule folder per office of the deployment), ``--matcher``."""
    cmd.add_argument(
        "--rules",
        type=Path,
        action="append",
        help="rule folder of an office, or of several (with offices/<code>.yaml); repeatable:"
        " one per office of the deployment (default: the project's rules/)",
    )
    cmd.add_argument(
        "--matcher",
        choices=("auto", "durable", "python"),
        help="condition matcher (default: auto)",
    )


def rule_sets(args: argparse.Namespace) -> dict[str, RuleSet]:
    """The deployment's offices and their rule sets, from the ``--rules`` folders."""
    return rule_sets_of(args.rules or [None])


def rule_sets_of(folders: list[Path | None]) -> dict[str, RuleSet]:
    """The rule sets of the offices of ``folders``: one per one-office folder, one per
    ``offices/<code>.yaml`` of a multi-office folder (bsc_rules.rules.offices)."""
    from bsc_rules.rules.offices import load_deployment

    found: dict[str, RuleSet] = {}
    for folder in folders:
        for code, rules in load_deployment(folder).offices.items():
            if code in found:
                msg = f"--rules {folder}: office {code!r} is given twice"
                raise BadArguments(msg)
            found[code] = rules
    return found


def db_value(args: argparse.Namespace) -> str:
    """The ``--db`` value as given (a URL stays a URL), else the settings' database."""
    if getattr(args, "db", None) is not None:
        return str(args.db)
    return str(load(args).database)


def open_store(db: str, office: str, *, create: bool = True) -> EventStore:
    """The event store of ``office`` in the database ``db`` (any of the three forms); with
    ``create`` false, a database or office file that does not exist is an error."""
    from bsc_rules.store.dbform import open_store as open_form

    if not create:
        if form_of(db) == "file":
            require_db(Path(db))
        elif form_of(db) == "directory":
            require_db(Path(db) / f"{office}.db")
    return open_form(db, office)


def pick_office(db: str, office: str | None, codes: list[str], *, listing: bool = True) -> str:
    """The one office a command is about: ``--office``, else the only one the database
    holds (the only rule set's, for a SQLite file or an empty database); ``listing``: the
    command has ``--all-offices`` (the error suggests it)."""
    from bsc_rules.store.dbform import held_offices, shown

    held = held_offices(db)
    if office is not None:
        if form_of(db) != "file" and held and office not in held:
            msg = f"資料庫 {shown(db)} 中沒有戶所 {office!r}（現有：{'、'.join(held)}）"
            raise BadArguments(msg)
        return office
    candidates = held or codes
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise UsageError(f"資料庫 {shown(db)} 中尚無任何戶所的資料")
    msg = f"資料庫 {shown(db)} 有多個戶所（{'、'.join(candidates)}），請以 --office 指定其一"
    if listing:
        msg += "（或以 --all-offices 列出全部）"
    raise BadArguments(msg)


def form_of(db: str) -> str:
    from bsc_rules.store.dbform import form_of as form

    return form(db)


def shown(db: str) -> str:
    """``--db`` as it may be printed (a URL without its password)."""
    from bsc_rules.store.dbform import shown as show

    return show(db)
