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

    def rows_after(self, seq: int) -> Iterator[tuple[int, bytes]]:
        """``(seq, body)`` of the accepted events stored after ``seq``, in arrival order
        (by any writer of the store)."""
        ...

    def take_own(self, seq: int) -> bool:
        """Whether the event at ``seq`` was written through this store object (already
        applied by its writer); it is forgotten once asked. Only committed writes count:
        a batch rolled back leaves nothing here."""
        ...

    def own_writes(self) -> frozenset[int]:
        """The seqs written through this store object and not yet taken."""
        ...

    def forget_own(self) -> None:
        """Forget the seqs written so far (a writer that keeps no state: nothing will
        ask ``take_own`` about them)."""
        ...

    def close(self) -> None:
        """Release the store."""
        ...


class OwnWrites:
    """The seqs a store object committed itself, until its reader takes them."""

    def __init__(self) -> None:
        self._seqs: set[int] = set()

    def add(self, committed: Iterable[int]) -> None:
        self._seqs.update(committed)

    def take(self, seq: int) -> bool:
        if seq in self._seqs:
            self._seqs.discard(seq)
            return True
        return False

    def pending(self) -> frozenset[int]:
        return frozenset(self._seqs)

    def clear(self) -> None:
        self._seqs.clear()


class KeepsOwnWrites:
    """``take_own``/``own_writes`` of the protocol for a store that records its committed
    seqs in ``self._own`` (an :class:`OwnWrites`)."""

    _own: OwnWrites

    def take_own(self, seq: int) -> bool:
        return self._own.take(seq)

    def own_writes(self) -> frozenset[int]:
        return self._own.pending()

    def forget_own(self) -> None:
        self._own.clear()


class MemoryStore(KeepsOwnWrites):
    """The same semantics as the SQLite store, in memory only (nothing is durable)."""

    def __init__(self) -> None:
        self._seqs: dict[tuple[str, str], int] = {}
        self._log: list[bytes] = []  # seq n is self._log[n - 1]
        self._rejected: set[tuple[str, int, bytes]] = set()
        self._own = OwnWrites()

    def append(self, event: Event) -> Verdict:
        return self.append_batch([event])[0]

    def append_batch(self, events: Iterable[Event]) -> list[Verdict]:
        """All or nothing: if iterating ``events`` raises, nothing of the batch is kept."""
        staged: dict[tuple[str, str], bytes] = {}
        verdicts: list[Verdict] = []
        for event in events:
            seq = self._seqs.get(event.key)
            known = staged.get(event.key) if seq is None else self._log[seq - 1]
            if known is None:
                staged[event.key] = event.body
                verdicts.append("accepted")
            else:
                verdicts.append("duplicate" if same_content(known, event.body) else "conflict")
        start = len(self._log)
        for key, body in staged.items():
            self._log.append(body)
            self._seqs[key] = len(self._log)
        self._own.add(range(start + 1, len(self._log) + 1))
        return verdicts

    def reject(self, rejection: Rejection, origin: str = "") -> None:
        self._rejected.add((origin, rejection.line or 0, content_digest(rejection.raw)))

    def rejected_count(self) -> int:
        return len(self._rejected)

    def replay(self) -> Iterator[bytes]:
        return iter(list(self._log))

    def rows_after(self, seq: int) -> Iterator[tuple[int, bytes]]:
        start = max(seq, 0)
        return iter(list(enumerate(self._log[start:], start + 1)))

    def close(self) -> None:
        return None
