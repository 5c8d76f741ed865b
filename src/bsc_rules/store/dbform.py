"""The three forms of ``--db`` (service.md, "Deployments and --db"): a ``postgresql://``
URL, a directory of per-office SQLite files (an existing directory, or a path ending in
``/``), else one SQLite file; what each holds, its stores, and its schema upgrade.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from bsc_rules.errors import StoreError
from bsc_rules.store.base import EventStore
from bsc_rules.store.directory import REJECTED, OfficeDirectory, check_code, is_directory_form

Form = Literal["postgres", "directory", "file"]
_URL_SCHEMES = ("postgresql://", "postgres://")


def form_of(db: str | Path) -> Form:
    """Which form a ``--db`` value has."""
    text = str(db)
    if text.startswith(_URL_SCHEMES):
        return "postgres"
    return "directory" if is_directory_form(text) else "file"


def shown(db: str | Path) -> str:
    """``--db`` as it may be printed: a URL's password (in the user part or the query)
    replaced by ``***``."""
    text = str(db)
    if form_of(text) != "postgres":
        return text
    parts = urlsplit(text)
    netloc = parts.netloc
    if parts.password is not None:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.partition(':')[0]}:***@{host}"
    query = re.sub(r"(?i)(^|&)(password=)[^&]*", r"\1\2***", parts.query)
    return urlunsplit(parts._replace(netloc=netloc, query=query))


@dataclass(frozen=True, slots=True)
class Upgraded:
    """One database brought to this code's schema: where, and the versions before/after."""

    where: str
    before: int
    after: int


def upgrade(db: str | Path) -> list[Upgraded]:
    """Bring the schema of ``db`` up to this code's version in place: the SQLite file, every
    ``DIR/*.db`` of a directory, or the PostgreSQL database. Nothing else is done; a file
    or directory that does not exist is an error (nothing is created)."""
    form = form_of(db)
    if form == "postgres":
        return [_upgrade_postgres(str(db))]
    path = Path(db)
    if form == "directory":
        if not path.is_dir():
            raise StoreError(f"the database directory {path} does not exist")
        return [_upgrade_file(p) for p in sorted(path.glob("*.db"))]
    if not path.is_file():
        raise StoreError(f"the database {path} does not exist")
    return [_upgrade_file(path)]


def _upgrade_file(path: Path) -> Upgraded:
    from bsc_rules.store.db import check_integrity, connect, migrate, schema_version

    conn = connect(path)
    try:
        check_integrity(conn, path)
        before = schema_version(conn)
        after = migrate(conn, path)
    finally:
        conn.close()
    return Upgraded(str(path), before, after)


def _upgrade_postgres(url: str) -> Upgraded:
    from bsc_rules.store.db import migrate, schema_version
    from bsc_rules.store.postgres import connect, describe

    where = describe(url)
    conn = connect(url, upgrade=False)
    try:
        before = schema_version(conn)
        after = migrate(conn, where)
    finally:
        conn.close()
    return Upgraded(where, before, after)


def held_offices(db: str | Path) -> list[str]:
    """The offices a multi-office database holds, sorted: those with a file in the
    directory form (``DIR/_rejected.db`` and ``DIR/_city.db`` are none), those with an
    events partition in PostgreSQL. A single SQLite file does not say (empty)."""
    form = form_of(db)
    if form == "directory":
        root = Path(db)
        found = sorted(p.stem for p in root.glob("*.db")) if root.is_dir() else []
        return [code for code in found if not code.startswith("_")]  # _rejected, _city
    if form == "postgres":
        from bsc_rules.store.postgres import offices

        return offices(str(db))
    return []


def open_store(db: str | Path, office: str) -> EventStore:
    """The event store of ``office`` in ``db`` (created if new: the directory and its
    ``DIR/<office>.db``, the office's partition)."""
    form = form_of(db)
    if office == REJECTED and form != "file":
        return open_rejected(db)
    if form == "postgres":
        from bsc_rules.store.postgres import PostgresStore

        return PostgresStore(str(db), office)
    from bsc_rules.store.sqlite import SQLiteStore

    if form == "file":
        return SQLiteStore(Path(db))
    root = Path(db)
    if not root.is_dir():
        try:  # owner-only, as each file is: the logs hold the offices' case data
            root.mkdir(mode=0o700, parents=True)
        except OSError as exc:
            raise StoreError(f"cannot create the database directory {root}: {exc}") from exc
    return SQLiteStore(root / f"{check_code(office)}.db")


def create_offices(db: str | Path, offices: list[str]) -> None:
    """What ``ingest`` into a multi-office database does first: in the directory form, the
    directory and ``DIR/<code>.db`` of every office of the deployment (created or upgraded);
    in PostgreSQL, nothing (an office's partition comes with its first store)."""
    if form_of(db) == "directory":
        with OfficeDirectory(db, offices, create=True) as directory:
            directory.create_all()


def open_rejected(db: str | Path) -> EventStore:
    """Where the events of an office outside the deployment are kept: ``DIR/_rejected.db``,
    or PostgreSQL's rejected table under the office ``_rejected``."""
    if form_of(db) == "postgres":
        from bsc_rules.store.postgres import PostgresStore

        return PostgresStore(str(db), REJECTED, partition=False)
    from bsc_rules.store.sqlite import SQLiteStore

    return SQLiteStore(Path(db) / f"{REJECTED}.db")


def rejections(store: EventStore) -> list[tuple[str, int, str | None, str, str]]:
    """``(origin, line, event id, field, reason)`` of every rejection a database's store
    keeps, oldest first."""
    from bsc_rules.store.sqlite import SQLiteStore

    if isinstance(store, SQLiteStore):
        return store.rejections()
    from bsc_rules.store.postgres import PostgresStore

    if isinstance(store, PostgresStore):
        return store.rejections()
    raise StoreError("this store keeps no rejections to list")  # pragma: no cover
