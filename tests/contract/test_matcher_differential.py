"""Differential property: DurableMatcher == PythonMatcher == the reference, event by event
(the durable half skips, with its reason, where durable_rules does not import)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bsc_rules.matching import make_matcher
from tests.conftest import MATCHERS
from tests.matching_cases import Spec, condition_specs, conditions_of, events, reference


@pytest.mark.parametrize("kind", MATCHERS)
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
    kind: str,
    specs: list[Spec],
    stream: list[tuple[str, dict[str, Any]]],
) -> None:
    """For random conditions and events, each matcher gives the reference mask."""
    conditions = conditions_of(specs)
    matcher = make_matcher(conditions, kind)
    assert matcher.name == kind
    try:
        for type_, data in stream:
            assert matcher.match(type_, data) == reference(conditions, type_, data), (type_, data)
    finally:
        matcher.close()
