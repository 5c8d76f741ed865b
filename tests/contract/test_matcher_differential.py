"""Differential property: DurableMatcher == PythonMatcher == the reference, event by event."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import reduce
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bsc_rules._durable import DurableMatcher
from bsc_rules.matching import Condition, PythonMatcher, Scalar, matches

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


def reference(conditions: Sequence[Condition], type_: str, data: Mapping[str, Any]) -> int:
    """The mask the reference semantics ``matching.matches`` gives."""
    hits = (c.mask for c in conditions if matches(c, type_, data))
    return reduce(lambda a, b: a | b, hits, 0)


@settings(
    max_examples=150,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    specs=st.lists(condition_specs, min_size=1, max_size=12),
    stream=st.lists(events, min_size=40, max_size=80),
)
def test_durable_equals_python_equals_reference(
    specs: list[tuple[str, tuple[tuple[str, tuple[Scalar, ...]], ...]]],
    stream: list[tuple[str, dict[str, Any]]],
) -> None:
    """For random conditions and events, both matchers give the reference mask."""
    conditions = [Condition(n, f"c{n}", type_, where) for n, (type_, where) in enumerate(specs)]
    durable, python = DurableMatcher(conditions), PythonMatcher(conditions)
    try:
        for type_, data in stream:
            expected = reference(conditions, type_, data)
            assert python.match(type_, data) == expected
            assert durable.match(type_, data) == expected, (type_, data)
    finally:
        durable.close()
