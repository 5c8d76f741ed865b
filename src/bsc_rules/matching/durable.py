"""durable_rules behind the :class:`~bsc_rules.matching.Matcher` protocol, in its safe zone.

This is the only module that imports ``durable``, and only lazily: durable_rules 2.0.28
does not import on Python >= 3.13, where :func:`available` is ``False`` and this module
still imports.

How the conditions reach durable:

* One ``Host`` subclass whose ``_run`` starts nothing: durable's two ``threading.Timer``
  chains never exist, and everything happens synchronously inside ``assert_fact`` and
  ``retract_fact`` in the calling thread (serialised by a lock: durable skips actions
  when two threads post at once).
* One ruleset per matcher, a plain JSON dict with a unique name; no joins, no timers,
  no ``$or``/``$nex``/``$ex``: every rule is a chain of equality tests on one fact.
* Each event becomes ONE fact of short, known strings only: ``t`` is a token of the
  type, ``f<i>`` the token of the i-th field the type's conditions test (``v<j>`` for the
  j-th value declared for that field, keyed by JSON type and value so ``true``, ``1`` and
  ``"1"`` differ; ``-`` for any other value or a missing field) and ``id`` a counter, so
  identical events never collapse. Facts fire every rule they match; each rule's action
  ORs its bits into a collector; the fact is then retracted, so working memory never
  holds more than one message.
* A condition accepting several values becomes one rule per accepted combination of
  tokens; combinations shared by several conditions become one rule carrying all their
  bits. (Measured: ``$or`` branches are not shared between rules and overflow durable's
  64-entry matching stack with about 65 rules on one event, and 256 identical rules hang.)

Engine limits checked before anything is built (measured on 2.0.28; past them durable
loops forever or fails on some later event): at most 511 distinct tests after one test
(its hash set of 512 slots hangs when full), a matching stack of 64 entries for one
fact (error 303), 4,096 rules (error 106) and 253 keys per fact (error 302).

Each mask the engine gives is memoised per fact content (see :class:`DurableMatcher`).
"""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from types import ModuleType
from typing import Any, Final

from bsc_rules.errors import UsageError
from bsc_rules.matching.condition import Condition

TYPE_KEY: Final = "t"
OTHER: Final = "-"
MAX_TESTS_AFTER_ONE: Final = 511
MAX_MATCH_STACK: Final = 64
MAX_RULES: Final = 4096
MAX_FIELDS_PER_TYPE: Final = 250
MEMO_MAX_ENTRIES: Final = 65_536
MEMO_MAX_KEY_SLOTS: Final = 1 << 20  # tokens held by all memo keys: a few MB at most

_ValueKey = tuple[type, object]
_Test = tuple[str, str]  # (fact key, token)
_Path = tuple[_Test, ...]  # the equality tests of one rule, type test first
_Tokens = tuple[str, ...]  # a fact's content without its id: type token, field tokens
_ruleset_ids = itertools.count(1)
_MISSING: Final = object()


@cache
def _engine() -> ModuleType | None:
    """``durable.engine`` if durable_rules imports here, else ``None`` (cached)."""
    try:
        import durable.lang  # noqa: F401  (the DSL half must import too)
        from durable import engine
    except ImportError:
        return None
    module: ModuleType = engine
    return module


def available() -> bool:
    """Whether ``durable.engine`` and ``durable.lang`` import here (cached)."""
    return _engine() is not None


@cache
def _sync_host_class() -> type[Any]:
    """A ``durable.engine.Host`` that starts no background thread."""
    engine = _engine()
    assert engine is not None
    host: Any = engine.Host

    class SyncHost(host):  # type: ignore[misc]  # durable is untyped
        def _run(self) -> None:
            """Start nothing: durable's Host starts two Timer thread chains here."""

    return SyncHost


def _value_key(value: object) -> _ValueKey | None:
    """The lookup key of a JSON scalar (its exact type and value), else ``None``."""
    kind = type(value)
    if kind is str or kind is int or kind is bool:
        return (kind, value)
    return None


def _declared_key(value: object) -> _ValueKey:
    key = _value_key(value)
    if key is None:
        msg = f"durable matcher: condition values must be str, int or bool, got {value!r}"
        raise UsageError(msg)
    return key


@dataclass(frozen=True, slots=True)
class _Field:
    """One tested data field of a type: its fact key and its declared value tokens."""

    name: str
    key: str
    tokens: Mapping[_ValueKey, str]

    def token(self, data: Mapping[str, Any]) -> str:
        key = _value_key(data.get(self.name, _MISSING))
        return OTHER if key is None else self.tokens.get(key, OTHER)


@dataclass(frozen=True, slots=True)
class _TypePlan:
    """How events of one type become facts."""

    token: str
    fields: tuple[_Field, ...]
    index: Mapping[str, int] = field(init=False)
    keys: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "index", {f.name: i for i, f in enumerate(self.fields)})
        object.__setattr__(self, "keys", (TYPE_KEY, *(f.key for f in self.fields)))

    def tokens(self, data: Mapping[str, Any]) -> _Tokens:
        """Everything of an event its fact carries but the id: type token, field tokens."""
        return (self.token, *[f.token(data) for f in self.fields])

    def fact(self, fact_id: int, tokens: _Tokens) -> dict[str, object]:
        """The fact posted to durable: the id, then ``tokens`` under their fact keys."""
        fact: dict[str, object] = {"id": fact_id}
        fact.update(zip(self.keys, tokens, strict=True))
        return fact


def _plans(conditions: Sequence[Condition]) -> dict[str, _TypePlan]:
    """Per event type: its token and, per tested field, a token per declared value."""
    declared: dict[str, dict[str, dict[_ValueKey, str]]] = {}
    for condition in conditions:
        fields = declared.setdefault(condition.type, {})
        for name, values in condition.where:
            tokens = fields.setdefault(name, {})
            for value in values:
                tokens.setdefault(_declared_key(value), f"v{len(tokens)}")
    plans: dict[str, _TypePlan] = {}
    for n, (type_, fields) in enumerate(declared.items()):
        if len(fields) > MAX_FIELDS_PER_TYPE:
            msg = (
                f"durable matcher: {type_!r} has {len(fields)} tested fields,"
                f" at most {MAX_FIELDS_PER_TYPE}"
            )
            raise UsageError(msg)
        columns = (_Field(name, f"f{i}", tokens) for i, (name, tokens) in enumerate(fields.items()))
        plans[type_] = _TypePlan(f"k{n}", tuple(columns))
    return plans


def _accepted(condition: Condition, plan: _TypePlan) -> dict[int, list[str]]:
    """Per field index, the tokens the condition accepts (repeated fields intersect)."""
    accepted: dict[int, list[str]] = {}
    for name, values in condition.where:
        i = plan.index[name]
        tokens = list(dict.fromkeys(plan.fields[i].tokens[_declared_key(v)] for v in values))
        previous = accepted.get(i)
        accepted[i] = tokens if previous is None else [t for t in previous if t in tokens]
    return accepted


def _paths(condition: Condition, plan: _TypePlan) -> list[_Path]:
    """The rules of one condition: one chain of equality tests per accepted combination."""
    accepted = _accepted(condition, plan)
    if math.prod(len(tokens) for tokens in accepted.values()) > MAX_RULES:
        msg = f"durable matcher: condition {condition.name!r} needs over {MAX_RULES} rules"
        raise UsageError(msg)
    columns = [[(plan.fields[i].key, t) for t in accepted[i]] for i in sorted(accepted)]
    head: _Path = ((TYPE_KEY, plan.token),)
    return [head + combo for combo in itertools.product(*columns)]


def _rule_masks(
    conditions: Sequence[Condition], plans: Mapping[str, _TypePlan]
) -> dict[_Path, int]:
    """Every distinct rule and the bits of all the conditions it stands for."""
    masks: dict[_Path, int] = {}
    for condition in conditions:
        for path in _paths(condition, plans[condition.type]):
            masks[path] = masks.get(path, 0) | condition.mask
    if len(masks) > MAX_RULES:
        msg = f"durable matcher: the conditions need {len(masks)} rules, at most {MAX_RULES}"
        raise UsageError(msg)
    return masks


@dataclass(slots=True)
class _Node:
    """A node of the alpha network durable will build: the tests that follow a test."""

    children: dict[_Test, _Node] = field(default_factory=dict)

    def stack(self) -> int:
        """Worst-case matching-stack height below this node (durable pushes, LIFO, every
        child that matches; per fact key at most one child matches)."""
        if not self.children:
            return 0
        keys = len({key for key, _ in self.children})
        return max(keys, keys - 1 + max(c.stack() for c in self.children.values()))

    def widest(self) -> int:
        own = len(self.children)
        return max([own, *(c.widest() for c in self.children.values())])


def _check_engine_limits(paths: Sequence[_Path]) -> None:
    """Refuse rule sets on which durable would hang or fail on some event."""
    root = _Node()
    for path in paths:
        node = root
        for test in path:
            node = node.children.setdefault(test, _Node())
    if root.widest() > MAX_TESTS_AFTER_ONE:
        msg = f"durable matcher: more than {MAX_TESTS_AFTER_ONE} distinct tests follow one test"
        raise UsageError(msg)
    if root.stack() > MAX_MATCH_STACK:
        msg = f"durable matcher: one event could match more than {MAX_MATCH_STACK} tests at once"
        raise UsageError(msg)


class _Fired:
    """Collects the bits of the rules that fired on the current fact."""

    __slots__ = ("error", "mask")

    def __init__(self) -> None:
        self.mask = 0
        self.error: BaseException | None = None

    def action(self, mask: int) -> Callable[[object], None]:
        """A durable action (one positional parameter: durable runs it synchronously)."""

        def run(closure: object) -> None:
            try:
                self.mask |= mask
            except BaseException as exc:  # durable would swallow it into its state
                self.error = exc

        return run

    def reset(self) -> None:
        self.mask, self.error = 0, None

    def take(self) -> int:
        """The collected mask; re-raises what an action raised (durable swallows it)."""
        if self.error is not None:
            raise self.error
        return self.mask


def _test(path: _Path) -> dict[str, object]:
    tests = [{key: token} for key, token in path]
    return dict(tests[0]) if len(tests) == 1 else {"$and": tests}


def _ruleset(masks: Mapping[_Path, int], fired: _Fired) -> dict[str, object]:
    """A fresh JSON ruleset (durable's ``register_rulesets`` mutates what it gets)."""
    return {
        f"r{n}": {"all": [{"m": _test(path)}], "run": fired.action(mask)}
        for n, (path, mask) in enumerate(masks.items())
    }


class DurableMatcher:
    """The conditions compiled into one durable_rules ruleset, one fact at a time.

    Memo (``memo=True``, the default): the mask the engine gives for a fact is kept,
    keyed by the fact's whole content but its id, ``(type token, field token, ...)``
    (:meth:`_TypePlan.tokens`; the fact posted is built from that very tuple), and a
    later event with the same key gets it without a post. Sound because, for a given
    matcher, the engine's answer is a pure function of that key:

    * the ruleset is fixed at construction; its rules test ``t`` and ``f<i>`` only, by
      equality; their actions only OR constant bits into the collector (no state, no
      timers, no joins, no wall clock: see the module docstring);
    * working memory is empty before every post (each fact is retracted before
      ``match`` returns), so nothing of an earlier event can take part in a decision;
    * the id is tested by no rule: it only names the message, and a name cannot
      collide (durable's 32-bit identity hash) with a message that is not there;
    * a post that raises stores nothing.

    The engine still decides every distinct key (once per matcher, or again after a
    clear), and every event gets that decision: the ``match`` contract is unchanged.
    Keys are finite (a value no condition declares is ``-``, so free text and counters
    add none) but combinations over many fields can be very many, so the memo is
    bounded: it is cleared when it holds ``memo_limit`` entries (or, for long keys,
    :data:`MEMO_MAX_KEY_SLOTS` tokens); hostile combinations cost engine time, not memory.
    ``memo=False`` posts every event (differential tests use it to exercise the engine).
    """

    name = "durable"

    def __init__(
        self,
        conditions: Sequence[Condition],
        *,
        memo: bool = True,
        memo_limit: int = MEMO_MAX_ENTRIES,
    ) -> None:
        engine = _engine()
        if engine is None:
            msg = "matcher 'durable': durable_rules does not import on this Python"
            raise UsageError(msg)
        if memo_limit < 1:
            msg = f"matcher 'durable': memo_limit must be at least 1, got {memo_limit}"
            raise UsageError(msg)
        plans = _plans(conditions)
        masks = _rule_masks(conditions, plans)
        _check_engine_limits(list(masks))
        used = {path[0][1] for path in masks}
        self._plans = {t: p for t, p in plans.items() if p.token in used}
        key_length = max((len(p.keys) for p in self._plans.values()), default=1)
        self._memo_limit = max(1, min(memo_limit, MEMO_MAX_KEY_SLOTS // key_length))
        self._memo: dict[_Tokens, int] | None = {} if memo else None
        self._engine = engine
        self._not_handled: type[Exception] = engine.MessageNotHandledException
        self._fired = _Fired()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._name = f"bsc_rules_match_{next(_ruleset_ids)}"
        self._host: Any = _sync_host_class()()
        self._register(masks)

    def _register(self, masks: Mapping[_Path, int]) -> None:
        try:
            self._host.register_rulesets({self._name: _ruleset(masks, self._fired)})
        except Exception as exc:  # durable's errors are bare codes from its C engine
            msg = f"matcher 'durable': durable_rules rejected the conditions: {exc}"
            raise UsageError(msg) from exc

    def match(self, type_: str, data: Mapping[str, Any]) -> int:
        """Bit mask of every condition that ``(type_, data)`` satisfies."""
        self._check_open()
        plan = self._plans.get(type_)
        if plan is None:
            return 0
        tokens = plan.tokens(data)
        memo = self._memo
        if memo is not None:
            known = memo.get(tokens)
            if known is not None:
                return known
        with self._lock:
            self._check_open()
            mask = self._post(plan.fact(next(self._ids), tokens))
            if memo is not None:
                if len(memo) >= self._memo_limit:
                    memo.clear()
                memo[tokens] = mask
            return mask

    def _check_open(self) -> None:
        if self._host is None:
            msg = "matcher 'durable': used after close()"
            raise UsageError(msg)

    def _post(self, fact: dict[str, object]) -> int:
        """Assert one fact, collect the bits of every rule it fired, retract it."""
        self._fired.reset()
        try:
            self._host.assert_fact(self._name, fact)
        except self._not_handled:
            pass  # no rule matched
        finally:
            self._host.retract_fact(self._name, fact)
        return self._fired.take()

    def close(self) -> None:
        """Free the engine's ruleset; the matcher cannot be used afterwards.

        The sid's state (about 0.3 MB) is left allocated: durable's ``delete_state``
        segfaults on a state that messages created but no action ever ran on.
        """
        with self._lock:
            host, self._host = self._host, None
            if self._memo is not None:
                self._memo.clear()
            if host is not None:
                c_engine = self._engine.durable_rules_engine  # durable's C extension
                c_engine.delete_ruleset(host.get_ruleset(self._name)._handle)
