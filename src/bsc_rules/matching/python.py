"""The plain-Python matcher: the declared conditions compiled into per-field lookup tables.

Same semantics as :func:`bsc_rules.matching.condition.matches` (the reference) and as the
durable_rules matcher.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bsc_rules.matching.condition import Condition, Scalar


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
