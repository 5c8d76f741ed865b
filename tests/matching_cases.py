"""What the matcher tests share: the reference mask, generated conditions and events, and
a durable action that fails."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import reduce
from typing import Any

import pytest
from hypothesis import strategies as st

from bsc_rules.matching.condition import Condition, Scalar, matches

TYPES = ["applied", "reviewed", "paid", "已結案"]
FIELDS = ["channel", "level", "urgent", "備註"]

# A small domain of mixed JSON types, so that events often hit declared values and
# true / 1 / "1" (and false / 0 / "0" / "") meet each other.
scalars: st.SearchStrategy[Scalar] = st.one_of(
    st.booleans(),
    st.integers(min_value=-2, max_value=2),
    st.text(alphabet="01é", max_size=1),
    st.sampled_from(["v0", "-", "k0", "f0"]),  # look like the DurableMatcher's own tokens
)
# Values only events carry: other JSON types the matchers must never confuse.
other_values = st.one_of(
    st.none(),
    st.floats(min_value=-2, max_value=2, allow_nan=False),
    st.lists(scalars, max_size=2),
    st.dictionaries(st.sampled_from(FIELDS), scalars, max_size=2),
)
clauses = st.tuples(st.sampled_from(FIELDS), st.lists(scalars, max_size=3).map(tuple))
condition_specs = st.tuples(st.sampled_from(TYPES), st.lists(clauses, max_size=3).map(tuple))
events = st.tuples(
    st.sampled_from([*TYPES, "withdrawn"]),
    st.dictionaries(
        st.sampled_from([*FIELDS, "extra"]),
        st.one_of(scalars, scalars, scalars, other_values),
        max_size=len(FIELDS) + 1,
    ),
)

Spec = tuple[str, tuple[tuple[str, tuple[Scalar, ...]], ...]]


def conditions_of(specs: Sequence[Spec]) -> list[Condition]:
    """Generated condition specs as numbered conditions."""
    return [Condition(n, f"c{n}", type_, where) for n, (type_, where) in enumerate(specs)]


def reference(conditions: Sequence[Condition], type_: str, data: Mapping[str, Any]) -> int:
    """The mask the reference semantics ``matching.matches`` gives."""
    hits = (c.mask for c in conditions if matches(c, type_, data))
    return reduce(lambda a, b: a | b, hits, 0)


def poison_durable_actions(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the next durable action raise KeyboardInterrupt (``monkeypatch.undo`` ends it)."""
    from bsc_rules.matching import durable as _durable

    class Poisoned:
        def __or__(self, other: object) -> object:
            raise KeyboardInterrupt

    def poison(fired: Any) -> None:
        fired.mask, fired.error = Poisoned(), None

    monkeypatch.setattr(_durable._Fired, "reset", poison)
