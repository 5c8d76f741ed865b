"""Contract of the Matcher protocol: PythonMatcher and DurableMatcher give the same masks."""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from bsc_rules.errors import UsageError
from bsc_rules.matching import durable as _durable
from bsc_rules.matching import make_matcher
from bsc_rules.matching.condition import Condition, Matcher
from bsc_rules.matching.python import PythonMatcher
from tests.conftest import MATCHERS, needs_durable
from tests.matching_cases import poison_durable_actions, reference

LONG = "長" * 5_000 + "x" * 20_000

CONDITIONS: tuple[Condition, ...] = (
    Condition(0, "applied", "applied"),
    Condition(1, "applied_web", "applied", (("channel", ("web",)),)),
    Condition(2, "citizen_web", "applied", (("channel", ("web",)), ("applicant", ("citizen",)))),
    Condition(3, "on_paper", "applied", (("channel", ("counter", "mail")),)),
    Condition(4, "applied_too", "applied"),
    Condition(5, "urgent", "reviewed", (("urgent", (True,)),)),
    Condition(6, "level_one", "reviewed", (("level", (1,)),)),
    Condition(7, "code_one", "reviewed", (("code", ("1",)),)),
    Condition(8, "zero_ish", "paid", (("amount", (0, False, "0")),)),
    Condition(9, "unicode", "closed", (("note", ("已結案", "é", "🙂")),)),
    Condition(10, "long", "closed", (("note", (LONG,)),)),
    Condition(11, "never", "closed", (("note", ()),)),
)

ON_PAPER = 0b11001  # the two type-only conditions (bits 0 and 4) and on_paper (bit 3)
CASES: list[tuple[str, str, dict[str, Any], int]] = [
    ("type only", "applied", {}, 0b10001),
    ("type only ignores other fields", "applied", {"other": [1, {"a": 2}]}, 0b10001),
    ("one field", "applied", {"channel": "web"}, 0b10011),
    ("several fields", "applied", {"channel": "web", "applicant": "citizen"}, 0b10111),
    ("several fields, one wrong", "applied", {"channel": "web", "applicant": "firm"}, 0b10011),
    ("first accepted value", "applied", {"channel": "counter"}, ON_PAPER),
    ("second accepted value", "applied", {"channel": "mail"}, ON_PAPER),
    ("undeclared value", "applied", {"channel": "fax"}, 0b10001),
    ("value like a token", "applied", {"channel": "v0"}, 0b10001),
    ("value like the other sentinel", "applied", {"channel": "-"}, 0b10001),
    ("bool matches bool", "reviewed", {"urgent": True}, 1 << 5),
    ("int is not bool", "reviewed", {"urgent": 1}, 0),
    ("str is not bool", "reviewed", {"urgent": "true"}, 0),
    ("false is not true", "reviewed", {"urgent": False}, 0),
    ("int matches int", "reviewed", {"level": 1}, 1 << 6),
    ("bool is not int", "reviewed", {"level": True}, 0),
    ("str is not int", "reviewed", {"level": "1"}, 0),
    ("float is not int", "reviewed", {"level": 1.0}, 0),
    ("str matches str", "reviewed", {"code": "1"}, 1 << 7),
    ("int is not str", "reviewed", {"code": 1}, 0),
    ("all three at once", "reviewed", {"urgent": True, "level": 1, "code": "1"}, 0b111 << 5),
    ("mixed types: int 0", "paid", {"amount": 0}, 1 << 8),
    ("mixed types: false", "paid", {"amount": False}, 1 << 8),
    ("mixed types: str 0", "paid", {"amount": "0"}, 1 << 8),
    ("mixed types: true", "paid", {"amount": True}, 0),
    ("mixed types: null", "paid", {"amount": None}, 0),
    ("mixed types: list", "paid", {"amount": [0]}, 0),
    ("missing field", "paid", {}, 0),
    ("missing field, others present", "reviewed", {"other": True}, 0),
    ("unicode value", "closed", {"note": "已結案"}, 1 << 9),
    ("emoji value", "closed", {"note": "🙂"}, 1 << 9),
    ("unicode near miss", "closed", {"note": "已結"}, 0),
    ("very long value", "closed", {"note": LONG}, 1 << 10),
    ("very long near miss", "closed", {"note": LONG[:-1] + "y"}, 0),
    ("very long undeclared", "closed", {"note": "z" * 100_000}, 0),
    ("unknown type", "withdrawn", {"channel": "web"}, 0),
    ("type is case sensitive", "Applied", {}, 0),
]


TABLE = pytest.mark.parametrize(
    ("type_", "data", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)


def build(kind: str, conditions: Sequence[Condition]) -> Matcher:
    """A matcher of the given kind."""
    if kind == "python":
        return PythonMatcher(conditions)
    return _durable.DurableMatcher(conditions)


@pytest.fixture(params=MATCHERS)
def make(request: pytest.FixtureRequest) -> Iterator[Callable[[Sequence[Condition]], Matcher]]:
    """Builds matchers of one kind and closes them after the test."""
    built: list[Matcher] = []

    def factory(conditions: Sequence[Condition]) -> Matcher:
        built.append(build(request.param, conditions))
        return built[-1]

    yield factory
    for matcher in built:
        matcher.close()


@pytest.fixture
def matcher(make: Callable[[Sequence[Condition]], Matcher]) -> Matcher:
    """A matcher of CONDITIONS."""
    return make(CONDITIONS)


@TABLE
def test_table_is_the_reference(type_: str, data: dict[str, Any], expected: int) -> None:
    """The expected masks of the table are those of the reference semantics."""
    assert reference(CONDITIONS, type_, data) == expected


@TABLE
def test_exact_mask(matcher: Matcher, type_: str, data: dict[str, Any], expected: int) -> None:
    """Each matcher gives the exact mask of the table."""
    assert matcher.match(type_, data) == expected


def test_name(matcher: Matcher) -> None:
    """Each matcher names itself ``python`` or ``durable``."""
    assert matcher.name in {"python", "durable"}


def test_identical_events_never_collapse(matcher: Matcher) -> None:
    """10,000 identical events each give the full mask (no identity or memory collapse)."""
    data = {"channel": "web", "applicant": "citizen"}
    masks = [matcher.match("applied", data) for _ in range(10_000)]
    assert masks == [0b10111] * 10_000


def test_many_events_in_a_row(matcher: Matcher) -> None:
    """10,000 events cycling through the table each give their own mask."""
    for n in range(10_000):
        _, type_, data, expected = CASES[n % len(CASES)]
        assert matcher.match(type_, data) == expected, n


def test_data_is_not_modified(matcher: Matcher) -> None:
    """Matching leaves the event data untouched."""
    data: dict[str, Any] = {"channel": "web", "applicant": "citizen", "extra": [1]}
    matcher.match("applied", data)
    assert data == {"channel": "web", "applicant": "citizen", "extra": [1]}


def test_no_conditions(make: Callable[[Sequence[Condition]], Matcher]) -> None:
    """A matcher without conditions matches nothing."""
    assert make(()).match("applied", {"channel": "web"}) == 0


def test_close_twice(make: Callable[[Sequence[Condition]], Matcher]) -> None:
    """``close()`` returns None and may be called twice."""
    matcher = make(CONDITIONS)
    matcher.match("applied", {})
    assert matcher.close() is None
    assert matcher.close() is None


@needs_durable
def test_durable_unusable_after_close() -> None:
    """A closed DurableMatcher refuses to match instead of touching a freed ruleset."""
    matcher = _durable.DurableMatcher(CONDITIONS)
    matcher.close()
    with pytest.raises(UsageError, match="after close"):
        matcher.match("applied", {})
    with pytest.raises(UsageError, match="after close"):
        matcher.match("withdrawn", {})


@needs_durable
def test_durable_action_errors_reach_the_caller(monkeypatch: pytest.MonkeyPatch) -> None:
    """An exception inside a durable action is raised by ``match``, not swallowed."""

    matcher = _durable.DurableMatcher(CONDITIONS)
    poison_durable_actions(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        matcher.match("applied", {})
    monkeypatch.undo()
    assert matcher.match("applied", {}) == 0b10001
    matcher.close()


@needs_durable
def test_durable_builds_and_closes_many() -> None:
    """Building, using and closing 100 DurableMatchers in a row works."""
    for n in range(100):
        matcher = _durable.DurableMatcher(CONDITIONS[: 1 + n % len(CONDITIONS)])
        assert matcher.match("applied", {"channel": "web"}) & 1
        matcher.close()


@needs_durable
def test_durable_close_after_only_unmatched_events() -> None:
    """Closing after events that fired no rule does not crash (durable's delete_state would)."""
    matcher = _durable.DurableMatcher(CONDITIONS)
    assert matcher.match("reviewed", {"urgent": False}) == 0
    assert matcher.match("paid", {}) == 0
    matcher.close()


@needs_durable
def test_durable_leaves_no_thread() -> None:
    """No background thread exists while a DurableMatcher is built, used or closed."""
    before = set(threading.enumerate())
    matcher = _durable.DurableMatcher(CONDITIONS)
    for _, type_, data, _ in CASES:
        matcher.match(type_, data)
    assert set(threading.enumerate()) == before
    matcher.close()
    assert set(threading.enumerate()) == before


@needs_durable
def test_durable_working_memory_is_empty_after_match() -> None:
    """The fact asserted for an event is retracted before ``match`` returns."""
    matcher = _durable.DurableMatcher(CONDITIONS)
    assert matcher.match("applied", {"channel": "web"}) == 0b10011
    assert matcher._host.get_facts(matcher._name) == []
    matcher.close()


@needs_durable
def test_durable_unknown_type_skips_the_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    """An event type no condition mentions gives 0 without calling durable."""
    matcher = _durable.DurableMatcher(CONDITIONS)

    def fail(*args: object) -> None:
        raise AssertionError("durable was called")

    monkeypatch.setattr(matcher._host, "assert_fact", fail)
    assert matcher.match("withdrawn", {"channel": "web"}) == 0
    monkeypatch.undo()
    matcher.close()


@needs_durable
def test_durable_sees_only_known_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fact handed to durable holds only the id, short tokens and the 'other' sentinel."""
    matcher = _durable.DurableMatcher(CONDITIONS)
    seen: list[dict[str, object]] = []
    original = matcher._host.assert_fact

    def spy(name: str, fact: dict[str, object]) -> object:
        seen.append(dict(fact))
        return original(name, fact)

    monkeypatch.setattr(matcher._host, "assert_fact", spy)
    matcher.match("closed", {"note": LONG, "secret": "x" * 1000, "nested": {"a": 1}})
    matcher.match("closed", {"note": "z" * 100_000})
    monkeypatch.undo()
    matcher.close()
    assert [set(f) for f in seen] == [{"id", "t", "f0"}] * 2
    assert seen[0]["id"] != seen[1]["id"]
    assert all(len(str(v)) <= 4 for f in seen for k, v in f.items() if k != "id")
    assert seen[1]["f0"] == _durable.OTHER


@needs_durable
def test_durable_emits_no_other_warning() -> None:
    """Building, matching and closing emits no warning but durable's own deprecations."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        matcher = _durable.DurableMatcher(CONDITIONS)
        for _, type_, data, _ in CASES:
            matcher.match(type_, data)
        matcher.close()
    durable_dir = Path(_durable._engine().__file__).parent  # type: ignore[union-attr]
    own = [w for w in caught if Path(w.filename).is_relative_to(durable_dir)]
    assert [w for w in caught if w not in own] == []
    assert all(issubclass(w.category, DeprecationWarning) for w in own)


@needs_durable
def test_durable_available_is_cached() -> None:
    """``available()`` is true here and answers from a cache."""
    assert _durable.available() is True
    assert _durable.available() is True
    assert _durable._engine.cache_info().hits >= 1


@needs_durable
@pytest.mark.parametrize(
    ("conditions", "message"),
    [
        (
            [Condition(0, "wide", "t", (("f", tuple(f"v{i}" for i in range(600))),))],
            "distinct tests",
        ),
        (
            [Condition(i, f"c{i}", "t", ((f"f{i}", ("x",)),)) for i in range(65)],
            "at once",
        ),
        (
            [Condition(0, "fields", "t", tuple((f"f{i}", ("x",)) for i in range(251)))],
            "tested fields",
        ),
        (
            [Condition(0, "product", "t", tuple((f"f{i}", tuple(range(5))) for i in range(6)))],
            "rules",
        ),
        ([Condition(0, "float", "t", (("f", (1.5,)),))], "str, int or bool"),  # type: ignore[arg-type]
    ],
    ids=["511 tests after one", "65-deep match stack", "251 fields", "15,625 rules", "float value"],
)
def test_durable_refuses_what_the_engine_cannot_run(
    conditions: list[Condition], message: str
) -> None:
    """Condition sets past durable's measured limits (hang or late error) fail at build time."""
    with pytest.raises(UsageError, match=message):
        _durable.DurableMatcher(conditions)


@needs_durable
def test_durable_runs_up_to_its_limits() -> None:
    """511 values on one field and 64 fields matched at once still give exact masks."""
    values = tuple(f"v{i}" for i in range(511))
    wide = [Condition(0, "wide", "a", (("f", values),))]
    deep = [Condition(i, f"c{i}", "b", ((f"f{i}", ("x",)),)) for i in range(64)]
    matcher = _durable.DurableMatcher(wide + deep)
    assert matcher.match("a", {"f": "v510"}) == 1
    assert matcher.match("b", {f"f{i}": "x" for i in range(64)}) == (1 << 64) - 1
    matcher.close()


def test_without_durable_auto_is_python_and_durable_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where durable_rules does not import (Python >= 3.13), ``auto`` is the Python matcher
    and ``durable`` is refused with a UsageError that says why (checked on any Python)."""
    monkeypatch.setattr(_durable, "_engine", lambda: None)
    auto = make_matcher(CONDITIONS, "auto")
    assert auto.name == "python"
    auto.close()
    with pytest.raises(UsageError, match="durable_rules does not import"):
        make_matcher(CONDITIONS, "durable")
