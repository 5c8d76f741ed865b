"""Shared test helpers: event builders and the project's rule set."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from bsc_rules.rules.ruleset import RuleSet, load_ruleset
from tests import pg

_ids = itertools.count(1)


def event(
    type_: str,
    time: str,
    subject: str,
    data: dict[str, Any] | None = None,
    *,
    id: str | None = None,
    source: str = "/taipei/datong/registration",
    **extra: Any,
) -> dict[str, Any]:
    """A CloudEvent dict in the shape of spec/events.md."""
    obj: dict[str, Any] = {
        "specversion": "1.0",
        "id": id or f"t-{next(_ids):07d}",
        "source": source,
        "type": type_,
        "time": time,
        "subject": subject,
    }
    if data is not None:
        obj["data"] = data
    obj.update(extra)
    return obj


def jsonl(events: list[dict[str, Any]]) -> bytes:
    """Events as JSON Lines bytes."""
    return b"".join(orjson.dumps(e) + b"\n" for e in events)


@pytest.fixture(scope="session")
def rules() -> RuleSet:
    """The project's own rule set (rules/)."""
    return load_ruleset()


# ---------------------------------------------------------------- PostgreSQL (tests/pg.py)

_pg_dbs = itertools.count(1)


def _no_postgres(reason: str) -> None:
    """In CI a missing PostgreSQL fails the run; elsewhere its tests are skipped."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"PostgreSQL is required in CI: {reason}", pytrace=False)
    pytest.skip(f"no PostgreSQL to test against: {reason}")


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[pg.Cluster]:
    """One PostgreSQL server for the session: BSC_RULES_TEST_PG, else a throwaway cluster."""
    try:
        import psycopg  # noqa: F401  (the driver must be there too)
    except ImportError:
        _no_postgres("psycopg is not installed (pip install -e '.[dev]')")
    try:
        with pg.cluster() as cluster:
            yield cluster
    except pg.PgUnavailable as exc:
        _no_postgres(str(exc))


@pytest.fixture
def pg_url(pg_cluster: pg.Cluster) -> Iterator[str]:
    """The URL of a database of this test's own, dropped afterwards."""
    import psycopg

    name = f"bsc_test_{os.getpid()}_{next(_pg_dbs)}"
    with psycopg.connect(pg_cluster.admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield pg_cluster.url(name)
    with psycopg.connect(pg_cluster.admin_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
