"""Matching: which declared per-event conditions an event satisfies.

A :class:`Condition` is the declarative unit of the rule files: an event type and, for
some ``data`` fields, the values that count (any of them). The KPI measures never look
at raw fields; they look at the bit mask of the conditions an event matched.

Two matchers with identical semantics implement :class:`Matcher`:

* :class:`PythonMatcher`, plain Python, always available;
* ``DurableMatcher`` (``bsc_rules.matching.durable``), the same conditions compiled into a
  durable_rules ruleset, used only inside its safe zone (one fact at a time, no joins,
  no timers).

Semantics, shared by both: an event matches a condition when its type equals the
condition's type and, for every listed field, the event's ``data`` has that field with
a value equal to one of the listed values *and of the same JSON type* (``true`` is not
``1``, ``"1"`` is not ``1``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

Scalar = str | int | bool


@dataclass(frozen=True, slots=True)
class Condition:
    """One declared condition; ``bit`` is its position in a match mask."""

    bit: int
    name: str
    type: str
    where: tuple[tuple[str, tuple[Scalar, ...]], ...] = ()

    @property
    def mask(self) -> int:
        return 1 << self.bit


def same_value(actual: object, expected: Scalar) -> bool:
    """Equality of two JSON scalars that also requires the same JSON type."""
    return type(actual) is type(expected) and actual == expected


def matches(condition: Condition, type_: str, data: Mapping[str, Any]) -> bool:
    """The reference semantics of one condition (used by tests and the Python matcher)."""
    if type_ != condition.type:
        return False
    for field, values in condition.where:
        if field not in data:
            return False
        actual = data[field]
        if not any(same_value(actual, v) for v in values):
            return False
    return True


class Matcher(Protocol):
    """Gives the mask of the conditions an event matches."""

    name: str

    def match(self, type_: str, data: Mapping[str, Any]) -> int:
        """Bit mask of every condition that ``(type_, data)`` satisfies."""
        ...

    def close(self) -> None:
        """Release what the matcher holds."""
        ...
