"""Matching: which declared per-event conditions an event satisfies.

A :class:`Condition` is the declarative unit of the rule files: an event type and, for
some ``data`` fields, the values that count (any of them). The KPI measures never look
at raw fields; they look at the bit mask of the conditions an event matched.

Two matchers with identical semantics implement :class:`Matcher`:

* :class:`PythonMatcher`, plain Python, always available;
* ``DurableMatcher`` (``bsc_rules._durable``), the same conditions compiled into a
  durable_rules ruleset, used only inside its safe zone (one fact at a time, no joins,
  no timers).

Semantics, shared by both: an event matches a condition when its type equals the
condition's type and, for every listed field, the event's ``data`` has that field with
a value equal to one of the listed values *and of the same JSON type* (``true`` is not
``1``, ``"1"`` is not ``1``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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


class _TypeTable:
    """One event type's tested conditions compiled into per-field lookup tables.

    For each field some condition tests, ``values[field]`` maps a typed value
    ``(type, value)`` to the mask of the conditions that accept it there, and
    ``testers[field]`` is the mask of the conditions testing the field. A condition
    matches when every field it tests accepts the event's value: starting from all
    tested conditions, each field keeps those that accept its value or do not test it.
    Keying by ``(type, value)`` keeps ``true`` apart from ``1`` (they hash alike).
    """

    __slots__ = ("fields", "tested")

    def __init__(self, conditions: Sequence[Condition]) -> None:
        self.tested = 0
        values: dict[str, dict[tuple[type, Scalar], int]] = {}
        testers: dict[str, int] = {}
        for condition in conditions:
            self.tested |= condition.mask
            wanted: dict[str, set[tuple[type, Scalar]]] = {}
            for field, accepted in condition.where:  # a field tested twice: both must hold
                keys = {(type(v), v) for v in accepted}
                wanted[field] = wanted[field] & keys if field in wanted else keys
            for field, keys in wanted.items():
                testers[field] = testers.get(field, 0) | condition.mask
                table = values.setdefault(field, {})
                for key in keys:
                    table[key] = table.get(key, 0) | condition.mask
        # (field, accepting table, mask of the conditions NOT testing the field)
        self.fields = tuple((f, values[f], self.tested & ~testers[f]) for f in testers)

    def match(self, data: Mapping[str, Any]) -> int:
        mask = self.tested
        for field, table, untested in self.fields:
            value = data.get(field, _ABSENT)
            kind = type(value)
            accepted = table.get((kind, value), 0) if kind in _SCALARS else 0
            mask &= accepted | untested
            if not mask:
                break
        return mask


_ABSENT = object()
_SCALARS = frozenset((str, int, bool))


class PythonMatcher:
    """The plain-Python matcher: per event type, one mask for the conditions that test
    no field and lookup tables (:class:`_TypeTable`) for those that do; the semantics
    are :func:`matches`' (the contract tests compare them on generated conditions)."""

    name = "python"

    def __init__(self, conditions: Sequence[Condition]) -> None:
        by_type: dict[str, list[Condition]] = {}
        for condition in conditions:
            by_type.setdefault(condition.type, []).append(condition)
        # Per type: conditions without a field test collapse into one mask.
        self._plain: dict[str, int] = {}
        self._tables: dict[str, _TypeTable] = {}
        for type_, group in by_type.items():
            self._plain[type_] = sum(c.mask for c in group if not c.where)
            tested = [c for c in group if c.where]
            if tested:
                self._tables[type_] = _TypeTable(tested)

    def match(self, type_: str, data: Mapping[str, Any]) -> int:
        mask = self._plain.get(type_, 0)
        table = self._tables.get(type_)
        return mask if table is None else mask | table.match(data)

    def close(self) -> None:
        return None


def durable_available() -> bool:
    """Whether durable_rules can be imported here (it cannot on Python >= 3.13)."""
    from bsc_rules import _durable

    return _durable.available()


def make_matcher(conditions: Sequence[Condition], kind: str = "auto") -> Matcher:
    """Build the matcher a setting asks for: ``auto``, ``durable`` or ``python``.

    ``auto`` is durable_rules where it is installed (the user's choice) and the Python
    matcher otherwise.
    """
    if kind not in ("auto", "durable", "python"):
        from bsc_rules.errors import UsageError

        msg = f"matcher: expected 'auto', 'durable' or 'python', got {kind!r}"
        raise UsageError(msg)
    if kind == "python" or (kind == "auto" and not durable_available()):
        return PythonMatcher(conditions)
    from bsc_rules import _durable

    return _durable.DurableMatcher(conditions)
