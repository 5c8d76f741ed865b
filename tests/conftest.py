"""Shared test helpers: event builders, the project's rule set, and the matchers to test
(durable_rules only where it imports: not on Python >= 3.13)."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from bsc_rules.matching import durable_available
from bsc_rules.rules.ruleset import RuleSet, load_ruleset
from tests import pg

# A test about durable_rules itself skips, with this reason, where it is absent.
needs_durable = pytest.mark.skipif(
    not durable_available(), reason="durable_rules is not importable here (Python >= 3.13?)"
)
# Parametrise over the matchers: both where durable_rules imports, else python (durable skips).
MATCHERS = ["python", pytest.param("durable", marks=needs_durable)]

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


# ---------------------------------------------------------------- rule test files
# The shipped rule tests (rules/tests/*.test.yaml) run as pytest items, one per named
# test, whenever this folder is collected (`make test`): pytest offers this conftest
# itself to pytest_collect_file, and the collector hangs the rule test files off it.

RULE_TESTS = Path(__file__).resolve().parents[1] / "rules" / "tests"


class RuleTestFailure(Exception):
    """A rule test whose expectations did not hold (the diff is the message)."""


class RuleTestFile(pytest.File):
    """One ``*.test.yaml``: its named tests as items; a bad file fails as one item."""

    def collect(self) -> Iterator[pytest.Item]:
        from bsc_rules.authoring.testfile import load_tests
        from bsc_rules.errors import RuleFileError

        try:
            loaded = load_tests(self.path)
        except RuleFileError as exc:
            yield RuleTestItem.from_parent(self, name="(test file)", loaded=None, error=str(exc))
            return
        for index, case in enumerate(loaded.model.tests):
            yield RuleTestItem.from_parent(self, name=case.name, loaded=loaded, index=index)


class RuleTestItem(pytest.Item):
    """One named rule test, run by the same runner as `bsc-rules test`."""

    def __init__(
        self, *, loaded: Any, index: int = 0, error: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.loaded, self.index, self.error = loaded, index, error

    def runtest(self) -> None:
        from bsc_rules.authoring.ruletest import Runner

        if self.error is not None:
            raise RuleTestFailure(self.error)
        result = Runner().run_case(self.loaded, self.index)
        if not result.passed:
            raise RuleTestFailure(result.explain())

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, RuleTestFailure):
            return f"rule test {self.name!r} failed:\n{excinfo.value}"
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"rule test: {self.name}"


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if file_path == Path(__file__).resolve() and RULE_TESTS.is_dir():
        return RuleTestDir.from_parent(parent, path=RULE_TESTS)
    return None


class RuleTestDir(pytest.Directory):
    """rules/tests/, collected from this conftest."""

    def collect(self) -> Iterator[pytest.Collector]:
        for path in sorted(self.path.glob("*.test.yaml")):
            yield RuleTestFile.from_parent(self, path=path)


# ---------------------------------------------------------------- PostgreSQL (tests/pg.py)

_pg_dbs = itertools.count(1)


def no_browser(reason: str) -> None:
    """In CI a missing browser (Chromium, Playwright) fails the run; elsewhere its tests
    are skipped with the reason (.ci/run installs them)."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}: CI must run the browser tests (.ci/run installs chromium)")
    pytest.skip(reason)


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
