"""Shared test helpers: event builders, the project's rule set, and the matchers to test
(durable_rules only where it imports: not on Python >= 3.13)."""

from __future__ import annotations

import itertools
from typing import Any

import orjson
import pytest

from bsc_rules.matching import durable_available
from bsc_rules.rules.ruleset import RuleSet, load_ruleset

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
