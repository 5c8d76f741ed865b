"""The clock: the only module that reads the wall clock.

Everything else receives a :class:`Clock` (or an explicit instant), so tests and
replays drive time themselves and a year replays in seconds, identically every time.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """A source of the current instant (timezone-aware)."""

    def now(self) -> datetime:
        """The current instant, timezone-aware."""
        ...


class SystemClock:
    """The real wall clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class FakeClock:
    """A clock that moves only when told to (tests, replays)."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            msg = f"FakeClock needs a timezone-aware start, got {start.isoformat()}"
            raise ValueError(msg)
        self._now = start

    def now(self) -> datetime:
        return self._now

    def set(self, instant: datetime) -> None:
        """Move to ``instant`` (never backwards)."""
        if instant < self._now:
            msg = f"FakeClock cannot go back from {self._now.isoformat()} to {instant.isoformat()}"
            raise ValueError(msg)
        self._now = instant

    def advance(self, delta: timedelta) -> datetime:
        """Move forward by ``delta`` and return the new instant."""
        self.set(self._now + delta)
        return self._now
