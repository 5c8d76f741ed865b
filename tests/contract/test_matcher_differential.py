"""Differential property: DurableMatcher == PythonMatcher == the reference, event by event."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bsc_rules.matching.durable import DurableMatcher
from bsc_rules.matching.python import PythonMatcher
from tests.matching_cases import Spec, condition_specs, conditions_of, events, reference


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
    specs: list[Spec],
    stream: list[tuple[str, dict[str, Any]]],
) -> None:
    """For random conditions and events, both matchers give the reference mask."""
    conditions = conditions_of(specs)
    durable, python = DurableMatcher(conditions), PythonMatcher(conditions)
    try:
        for type_, data in stream:
            expected = reference(conditions, type_, data)
            assert python.match(type_, data) == expected
            assert durable.match(type_, data) == expected, (type_, data)
    finally:
        durable.close()
