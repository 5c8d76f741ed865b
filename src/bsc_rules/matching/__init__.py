"""Matching: which declared per-event conditions an event satisfies.

:mod:`~bsc_rules.matching.condition` holds the declared unit and the reference semantics;
:mod:`~bsc_rules.matching.python` and :mod:`~bsc_rules.matching.durable` are two matchers
with identical semantics; :func:`make_matcher` picks one.
"""

from __future__ import annotations

from collections.abc import Sequence

from bsc_rules.errors import UsageError
from bsc_rules.matching.condition import Condition, Matcher, Scalar, matches, same_value
from bsc_rules.matching.python import PythonMatcher

__all__ = [
    "Condition",
    "Matcher",
    "PythonMatcher",
    "Scalar",
    "durable_available",
    "make_matcher",
    "matches",
    "same_value",
]


def durable_available() -> bool:
    """Whether durable_rules can be imported here (it cannot on Python >= 3.13)."""
    from bsc_rules.matching import durable as _durable

    return _durable.available()


def make_matcher(conditions: Sequence[Condition], kind: str = "auto") -> Matcher:
    """Build the matcher a setting asks for: ``auto``, ``durable`` or ``python``.

    ``auto`` is durable_rules where it is installed (the user's choice) and the Python
    matcher otherwise.
    """
    if kind not in ("auto", "durable", "python"):
        msg = f"matcher: expected 'auto', 'durable' or 'python', got {kind!r}"
        raise UsageError(msg)
    if kind == "python" or (kind == "auto" and not durable_available()):
        return PythonMatcher(conditions)
    from bsc_rules.matching import durable as _durable

    return _durable.DurableMatcher(conditions)
