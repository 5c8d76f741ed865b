"""Shared test helpers: event builders and the project's rule set."""

from __future__ import annotations

import itertools
from typing import Any

import orjson
import pytest

from bsc_rules.rules.ruleset import RuleSet, load_ruleset

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
