"""DurableMatcher's memo: same masks as the engine, bounded, and off on request."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bsc_rules.errors import UsageError
from bsc_rules.matching import durable as _durable
from bsc_rules.matching.condition import Condition
from bsc_rules.matching.python import PythonMatcher
from tests.matching_cases import (
    Spec,
    condition_specs,
    conditions_of,
    events,
    poison_durable_actions,
    reference,
)

pytestmark = pytest.mark.skipif(not _durable.available(), reason="durable_rules not importable")

CONDITIONS: tuple[Condition, ...] = (
    Condition(0, "applied", "applied"),
    Condition(1, "web", "applied", (("channel", ("web",)),)),
    Condition(2, "citizen_web", "applied", (("channel", ("web",)), ("who", ("citizen",)))),
    Condition(3, "paper", "applied", (("channel", ("counter", "mail")),)),
    Condition(4, "urgent", "reviewed", (("urgent", (True,)),)),
    Condition(5, "level_one", "reviewed", (("level", (1,)),)),
    Condition(6, "zero_ish", "paid", (("amount", (0, False, "0")),)),
)

EVENTS: list[tuple[str, dict[str, Any]]] = [
    ("applied", {}),
    ("applied", {"channel": "web"}),
    ("applied", {"channel": "web", "who": "citizen"}),
    ("applied", {"channel": "web", "who": "firm"}),
    ("applied", {"channel": "mail"}),
    ("applied", {"channel": "fax"}),
    ("reviewed", {"urgent": True, "level": 1}),
    ("reviewed", {"urgent": 1, "level": True}),
    ("paid", {"amount": False}),
    ("paid", {"amount": "0"}),
    ("paid", {"amount": None}),
    ("withdrawn", {"channel": "web"}),
]


class Spy:
    """Records every fact a matcher posts to durable."""

    def __init__(self, matcher: _durable.DurableMatcher, monkeypatch: pytest.MonkeyPatch) -> None:
        self.facts: list[dict[str, object]] = []
        original = matcher._host.assert_fact

        def assert_fact(name: str, fact: dict[str, object]) -> object:
            self.facts.append(dict(fact))
            return original(name, fact)

        monkeypatch.setattr(matcher._host, "assert_fact", assert_fact)


@pytest.fixture
def matchers() -> Iterator[list[_durable.DurableMatcher]]:
    """Matchers a test builds, closed after it."""
    built: list[_durable.DurableMatcher] = []
    yield built
    for matcher in built:
        matcher.close()


def test_memo_hit_gives_the_engine_mask(
    matchers: list[_durable.DurableMatcher], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A repeated event is answered from the memo with the mask the engine gave."""
    on = _durable.DurableMatcher(CONDITIONS)
    off = _durable.DurableMatcher(CONDITIONS, memo=False)
    matchers += [on, off]
    spy = Spy(on, monkeypatch)
    first = [on.match(t, d) for t, d in EVENTS]
    posts = len(spy.facts)
    again = [on.match(t, d) for t, d in EVENTS]
    assert len(spy.facts) == posts  # no post for a known key
    assert again == first == [off.match(t, d) for t, d in EVENTS]
    assert first == [reference(CONDITIONS, t, d) for t, d in EVENTS]


def test_memo_key_is_the_posted_fact_but_its_id(
    matchers: list[_durable.DurableMatcher], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each key is exactly what was posted to durable, the id aside."""
    matcher = _durable.DurableMatcher(CONDITIONS)
    matchers.append(matcher)
    spy = Spy(matcher, monkeypatch)
    for type_, data in EVENTS:
        matcher.match(type_, data)
    by_token = {p.token: p for p in matcher._plans.values()}
    assert all(tuple(f) == ("id", *by_token[str(f["t"])].keys) for f in spy.facts)
    posted = [tuple(f.values())[1:] for f in spy.facts]
    assert matcher._memo is not None
    assert list(matcher._memo) == posted  # one post per distinct key, kept as posted


def test_memo_shares_keys_only_between_identical_facts(
    matchers: list[_durable.DurableMatcher], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Undeclared values and untested fields share a key; declared values do not."""
    matcher = _durable.DurableMatcher(CONDITIONS)
    matchers.append(matcher)
    spy = Spy(matcher, monkeypatch)
    for n in range(50):  # free text and counters: one key
        assert matcher.match("applied", {"channel": f"fax {n}", "who": n, "x": n}) == 1
    assert len(spy.facts) == 1
    assert matcher.match("applied", {"channel": "web"}) == 0b11
    assert matcher.match("applied", {"channel": "web", "who": "citizen"}) == 0b111
    assert matcher.match("paid", {"amount": 0}) == 1 << 6
    assert matcher.match("paid", {"amount": False}) == 1 << 6  # another token, same mask
    assert matcher.match("paid", {"amount": True}) == 0
    assert len(spy.facts) == 6


def test_memo_is_bounded(
    matchers: list[_durable.DurableMatcher], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past ``memo_limit`` keys the memo is cleared; known keys are then posted again."""
    fields = tuple((f"f{i}", ("x",)) for i in range(4))  # 16 distinct keys
    conditions = [Condition(i, f"c{i}", "t", fields[i : i + 1]) for i in range(4)]
    matcher = _durable.DurableMatcher(conditions, memo_limit=5)
    matchers.append(matcher)
    spy = Spy(matcher, monkeypatch)
    assert matcher._memo is not None
    for rounds in range(2):
        for bits in range(16):
            data = {f"f{i}": "x" for i in range(4) if bits >> i & 1}
            assert matcher.match("t", data) == bits
            assert 1 <= len(matcher._memo) <= 5
        assert len(spy.facts) == 16 * (rounds + 1)  # the limit is below 16: no hit here


def test_memo_limit_defaults_and_key_budget(matchers: list[_durable.DurableMatcher]) -> None:
    """65,536 entries by default; fewer when long keys would exceed the token budget."""
    small = _durable.DurableMatcher(CONDITIONS)
    wide = _durable.DurableMatcher(
        [Condition(0, "wide", "t", tuple((f"f{i}", ("x",)) for i in range(250)))]
    )
    matchers += [small, wide]
    assert small._memo_limit == _durable.MEMO_MAX_ENTRIES == 65_536
    assert wide._memo_limit == _durable.MEMO_MAX_KEY_SLOTS // 251
    with pytest.raises(UsageError, match="memo_limit"):
        _durable.DurableMatcher(CONDITIONS, memo_limit=0)


def test_memo_off_posts_every_event(
    matchers: list[_durable.DurableMatcher], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``memo=False`` posts each event of a known type, repeated or not."""
    matcher = _durable.DurableMatcher(CONDITIONS, memo=False)
    matchers.append(matcher)
    spy = Spy(matcher, monkeypatch)
    for _ in range(3):
        for type_, data in EVENTS:
            assert matcher.match(type_, data) == reference(CONDITIONS, type_, data)
    assert matcher._memo is None
    assert len(spy.facts) == 3 * sum(1 for t, _ in EVENTS if t != "withdrawn")
    assert len({f["id"] for f in spy.facts}) == len(spy.facts)


def test_memo_keeps_nothing_from_a_failed_post(monkeypatch: pytest.MonkeyPatch) -> None:
    """An error inside the engine's action reaches the caller and is not memoised."""

    matcher = _durable.DurableMatcher(CONDITIONS)
    poison_durable_actions(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        matcher.match("applied", {"channel": "web"})
    monkeypatch.undo()
    assert matcher._memo == {}
    assert matcher.match("applied", {"channel": "web"}) == 0b11
    matcher.close()


def test_memo_does_not_outlive_close() -> None:
    """After ``close`` even a memoised event is refused, and the memo is freed."""
    matcher = _durable.DurableMatcher(CONDITIONS)
    assert matcher.match("applied", {"channel": "web"}) == 0b11
    matcher.close()
    assert matcher._memo == {}
    with pytest.raises(UsageError, match="after close"):
        matcher.match("applied", {"channel": "web"})


@settings(
    max_examples=100,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    specs=st.lists(condition_specs, min_size=1, max_size=10),
    pool=st.lists(events, min_size=1, max_size=20),
    picks=st.lists(st.integers(min_value=0, max_value=19), min_size=30, max_size=80),
    limit=st.integers(min_value=1, max_value=8),
)
def test_memo_on_and_off_agree_with_python(
    specs: list[Spec],
    pool: list[tuple[str, dict[str, Any]]],
    picks: list[int],
    limit: int,
) -> None:
    """Over streams with repeats: memo on (default and tiny limits) == memo off == Python."""
    conditions = conditions_of(specs)
    python = PythonMatcher(conditions)
    durables = [
        _durable.DurableMatcher(conditions, memo=False),
        _durable.DurableMatcher(conditions),
        _durable.DurableMatcher(conditions, memo_limit=limit),
    ]
    stream = [pool[pick % len(pool)] for pick in picks]
    try:
        for type_, data in stream:
            expected = reference(conditions, type_, data)
            assert python.match(type_, data) == expected
            for durable in durables:
                assert durable.match(type_, data) == expected, (durable._memo, type_, data)
        memo, plans = durables[1]._memo, durables[1]._plans
        assert memo is not None  # every distinct key was decided by the engine and kept
        assert set(memo) == {plans[t].tokens(d) for t, d in stream if t in plans}
    finally:
        for durable in durables:
            durable.close()
