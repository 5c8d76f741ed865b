"""The store's seam: where accepted and rejected events are kept.

:class:`EventStore` is the protocol every backend implements (SQLite, PostgreSQL);
:class:`MemoryStore` has the same semantics without a file (``evaluate``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Literal, Protocol

from bsc_rules.events import Event, Rejection, content_digest, same_content

Verdict = Literal["accepted", "duplicate", "conflict"]


class EventStore(Protocol):
    """Where accepted and rejected events are kept."""

    def append(self, event: Event) -> Verdict:
        """Store one event durably; say whether it was new, a duplicate or a conflict."""
        ...

    def append_batch(self, events: Iterable[Event]) -> list[Verdict]:
        """Store several events in one commit."""
        ...

    def reject(self, rejection: Rejection, origin: str = "") -> None:
        """Keep a rejected event (once per origin, line and content)."""
        ...

    def rejected_count(self) -> int:
        """How many rejections are kept."""
        ...

    def replay(self) -> Iterator[bytes]:
        """The bodies of the accepted events, in arrival order."""
        ...

    def close(self) -> None:
        """Release the store."""
        ...


class MemoryStore:
    """The same idempotency semantics, in memory only (nothing is durable)."""

    def __init__(self) -> None:
        self._bodies: dict[tuple[str, str], bytes] = {}
        self._rejected: set[tuple[str, int, bytes]] = set()

    def append(self, event: Event) -> Verdict:
        known = self._bodies.get(event.key)
        if known is None:
            self._bodies[event.key] = event.body
            return "accepted"
        return "duplicate" if same_content(known, event.body) else "conflict"

    def append_batch(self, events: Iterable[Event]) -> list[Verdict]:
        return [self.append(e) for e in events]

    def reject(self, rejection: Rejection, origin: str = "") -> None:
        self._rejected.add((origin, rejection.line or 0, content_digest(rejection.raw)))

    def rejected_count(self) -> int:
        return len(self._rejected)

    def replay(self) -> Iterator[bytes]:
        return iter(())

    def close(self) -> None:
        return None
