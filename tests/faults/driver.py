"""Subprocess entry points of the fault suites: ``python tests/faults/driver.py COMMAND ...``.

``ack FILE DB``
    Ingest FILE one event at a time with ``Scorecard.ingest`` (one durable commit per
    event) into DB (a SQLite file, or a ``postgresql://`` URL: the default rules' office)
    and, once each call has returned, print ``ack<TAB>status<TAB>source<TAB>id``
    and flush: a line on standard output is an acknowledgement. With ``--until-seconds S``
    it stops after S seconds (the load producers).

``ack-offices FILE DB RULES [--lines FROM:TO]``
    The same for a many-office FILE (lines FROM to TO-1, numbered from 1) into a
    directory or a ``postgresql://`` DB: each line routed to its office's scorecard (the
    rule folder RULES), one durable commit per event, then
    ``ack<TAB>status<TAB>office<TAB>source<TAB>id`` printed and flushed. A failed write
    (the database gone) ends the process with status 1 and the error on standard error.

``limits [--fsize BYTES] [--no-dac] -- ARGV``
    Run ARGV (``os.execv``) with a file size limit (``RLIMIT_FSIZE``: writes past it fail
    with EFBIG, a full disk) and, when running as root, without the capabilities that
    let root write files whose permissions say read-only.

``cli [--kill HOOK:N] [--count FILE] -- ARGS``
    Run ``bsc_rules.cli.main(ARGS)`` in this process. ``--kill`` sends SIGKILL to this
    process right after the N-th call of the hooked function returned, so a crash lands
    exactly at a named point (after a batch commit, inside the evaluation's transaction,
    after the outbox commit and before sending, while building the digest, after the
    server took a message and before it is marked sent). ``--count`` writes how often
    every hook was called (the reference run that kill points are drawn from).
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import importlib
import json
import os
import resource
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

PR_CAPBSET_DROP, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 24, 1, 2

# name → (module, class, method) of each backend: the kill happens after the call returned.
HOOKS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "ingest-commit": (
        ("bsc_rules.store.sqlite", "SQLiteStore", "append_batch"),
        ("bsc_rules.store.postgres", "PostgresStore", "append_batch"),
    ),
    "enqueue": (("bsc_rules.notify.outbox", "Outbox", "enqueue"),),
    "morning-commit": (("bsc_rules.alerts.pipeline", "Pipeline", "morning"),),
    "digest-build": (("bsc_rules.notify.digest", "DigestBuilder", "build"),),
    "maildir-send": (("bsc_rules.notify.mailer", "MaildirMailer", "send"),),
    "smtp-send": (("bsc_rules.notify.mailer", "SmtpMailer", "send"),),
    "mark-sent": (("bsc_rules.notify.outbox", "Outbox", "mark_sent"),),
}


def _install(name: str, after: Callable[[], None]) -> None:
    for module, cls_name, method in HOOKS[name]:
        cls = getattr(importlib.import_module(module), cls_name)
        setattr(cls, method, _after(getattr(cls, method), after))


def _after(original: Callable[..., Any], after: Callable[[], None]) -> Callable[..., Any]:
    @functools.wraps(original)
    def hooked(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        after()
        return result

    return hooked


def _die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def cli(kill: str | None, count: Path | None, argv: list[str]) -> int:
    """The command line with a kill hook or call counters installed."""
    from bsc_rules.cli import main

    counts: Counter[str] = Counter()
    if kill is not None:
        name, _, nth = kill.partition(":")
        remaining = [int(nth)]

        def maybe_die() -> None:
            remaining[0] -= 1
            if remaining[0] == 0:
                _die()

        _install(name, maybe_die)
    if count is not None:
        for name in HOOKS:
            _install(name, functools.partial(counts.update, [name]))
    code = main(argv)
    if count is not None:
        count.write_text(json.dumps(counts), encoding="utf-8")
    return code


def ack(path: Path, db: str, seconds: float | None) -> int:
    """Ingest one event at a time; print an acknowledgement after each stored event."""
    from bsc_rules.rules.ruleset import load_ruleset
    from bsc_rules.scorecard import Scorecard
    from bsc_rules.store.dbform import form_of, open_store

    deadline = None if seconds is None else time.monotonic() + seconds
    out = sys.stdout
    if form_of(db) == "postgres":
        rules = load_ruleset()
        card = Scorecard(rules, store=open_store(db, rules.code), matcher="python")
    else:
        card = Scorecard.open(db, matcher="python")
    with card, path.open("rb") as lines:
        for number, raw in enumerate(lines, 1):
            if deadline is not None and time.monotonic() > deadline:
                break
            if not raw.strip():
                continue
            outcome = card.ingest(raw, line=number, origin=path.name)
            event = outcome.event
            if event is not None:
                out.write(f"ack\t{outcome.status}\t{event.source}\t{event.id}\n")
            else:
                out.write(f"rejected\t{number}\n")
            out.flush()
    return 0


def ack_offices(path: Path, db: str, rules: Path, span: str | None) -> int:
    """Ingest one event at a time into the offices' stores; an acknowledgement after each."""
    from bsc_rules.cli._common import rule_sets_of
    from bsc_rules.errors import BscRulesError
    from bsc_rules.scorecard import Scorecard
    from bsc_rules.store.dbform import open_store
    from bsc_rules.store.directory import route

    first, _, last = (span or "1:").partition(":")
    sets = rule_sets_of([rules])
    cards: dict[str, Scorecard] = {}
    out = sys.stdout
    with path.open("rb") as handle:
        numbered = ((n, raw) for n, raw in enumerate(handle, 1) if n >= int(first))
        mine = ((n, raw) for n, raw in numbered if not last or n < int(last))
        try:
            for code, number, raw in route(mine, tuple(sets), lambda r: None):
                card = cards.get(code)
                if card is None:
                    card = cards[code] = Scorecard(
                        sets[code], store=open_store(db, code), matcher="python"
                    )
                outcome = card.ingest(raw, line=number, origin=path.name)
                event = outcome.event
                if event is not None:
                    out.write(f"ack\t{outcome.status}\t{code}\t{event.source}\t{event.id}\n")
                    out.flush()
        except BscRulesError as exc:
            print(f"failed: {exc}", file=sys.stderr, flush=True)
            return 1
        finally:
            for card in cards.values():
                card.close()
    return 0


def limits(fsize: int | None, no_dac: bool, argv: list[str]) -> int:
    """Set the limits, then become ``argv``."""
    if fsize is not None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    if no_dac and os.geteuid() == 0:
        libc = ctypes.CDLL(None, use_errno=True)
        for cap in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):  # gone from the bounding set,
            if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:  # so not kept across exec
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")
    os.execv(argv[0], argv)


def main() -> int:
    """Dispatch the subcommand."""
    parser = argparse.ArgumentParser(prog="driver.py")
    sub = parser.add_subparsers(dest="command", required=True)
    a = sub.add_parser("ack")
    a.add_argument("file", type=Path)
    a.add_argument("db")
    a.add_argument("--until-seconds", type=float)
    ao = sub.add_parser("ack-offices")
    ao.add_argument("file", type=Path)
    ao.add_argument("db")
    ao.add_argument("rules", type=Path)
    ao.add_argument("--lines")
    lim = sub.add_parser("limits")
    lim.add_argument("--fsize", type=int)
    lim.add_argument("--no-dac", action="store_true")
    lim.add_argument("argv", nargs=argparse.REMAINDER)
    c = sub.add_parser("cli")
    c.add_argument("--kill")
    c.add_argument("--count", type=Path)
    c.add_argument("argv", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    if args.command == "ack":
        return ack(args.file, args.db, args.until_seconds)
    if args.command == "ack-offices":
        return ack_offices(args.file, args.db, args.rules, args.lines)
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if args.command == "limits":
        return limits(args.fsize, args.no_dac, argv)
    return cli(args.kill, args.count, argv)


if __name__ == "__main__":
    sys.exit(main())
