"""The scorecard: the object the case workflow embeds.

It wires the stages: events in → validated (:mod:`events`) → stored
(:mod:`store`) → matched (:mod:`matching`) → measured (:mod:`measures`) → reported
(:mod:`report`). ``ingest`` acknowledges an event only once the store holds it;
``report`` is a pure function of what was ingested and the instant asked for.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from bsc_rules.calendar import to_us
from bsc_rules.events import Event, Rejection, event_from_body, parse_line, parse_object
from bsc_rules.matching import make_matcher
from bsc_rules.matching.condition import Matcher
from bsc_rules.measures.cases import CaseBook
from bsc_rules.measures.report import Report, build_report
from bsc_rules.rules.offices import reload_rules
from bsc_rules.rules.ruleset import CLOSURES_FILE, RuleSet, load_ruleset
from bsc_rules.store.base import EventStore, MemoryStore, Verdict

Status = Literal["accepted", "duplicate", "rejected"]
CONFLICT = (
    "conflicts with the event already received with the same source and id "
    "(same idempotency key, different content); the first one stands"
)


@dataclass(frozen=True, slots=True)
class Ingested:
    """What became of one event: accepted, a duplicate (no-op) or rejected."""

    status: Status
    event: Event | None = None
    rejection: Rejection | None = None

    @property
    def ok(self) -> bool:
        return self.status != "rejected"


@dataclass(slots=True)
class IngestSummary:
    """Counts of a file or stream ingest, with the rejections in order."""

    accepted: int = 0
    duplicates: int = 0
    rejections: list[Rejection] = field(default_factory=list)

    @property
    def rejected(self) -> int:
        return len(self.rejections)

    def add(self, outcome: Ingested) -> None:
        if outcome.status == "accepted":
            self.accepted += 1
        elif outcome.status == "duplicate":
            self.duplicates += 1
        elif outcome.rejection is not None:
            self.rejections.append(outcome.rejection)


class Scorecard:
    """KPI values, statuses and deadline cases, kept current one event at a time."""

    def __init__(
        self,
        rules: RuleSet | None = None,
        *,
        store: EventStore | None = None,
        matcher: str = "auto",
    ) -> None:
        self.rules = rules if rules is not None else load_ruleset()
        self.store: EventStore = store if store is not None else MemoryStore()
        self.matcher: Matcher = make_matcher(self.rules.conditions, matcher)
        self.book = CaseBook(self.rules)
        self._calendar_stamp = _calendar_stamp(self.rules)
        self._seq = 0
        self._log_seq = 0  # the last row of the SQLite log applied
        self.refresh()

    @classmethod
    def open(cls, db: Path | str, rules: RuleSet | None = None, matcher: str = "auto") -> Scorecard:
        """A scorecard over the event log of the rule set's office in ``db`` (a SQLite
        file, a directory of per-office files or a ``postgresql://`` URL; created if new),
        its state rebuilt by replaying the log; the store is closed again if that fails."""
        from bsc_rules.store.dbform import open_store

        rules = rules if rules is not None else load_ruleset()
        store = open_store(db, rules.code)
        try:
            return cls(rules, store=store, matcher=matcher)
        except BaseException:
            store.close()
            raise

    def reread_calendar(self) -> int:
        """Re-read the office calendar from the rule folder (the office file's closures
        and ``deadlines``, and ``closures.yaml``: an operator adds a typhoon day) and move
        the dues of open and closed cases with it; the KPIs themselves stay as loaded.
        Return how many cases' dues changed. A rule folder that no longer loads raises
        :class:`~bsc_rules.errors.RuleFileError` and changes nothing."""
        stamp = _calendar_stamp(self.rules)
        if stamp == self._calendar_stamp:  # the usual tick: nothing re-read, nothing moved
            return 0
        fresh = reload_rules(self.rules)
        office = self.rules.office.model_copy(
            update={"closures": fresh.office.closures, "deadlines": fresh.office.deadlines}
        )
        rules = replace(self.rules, office=office, city_closures=fresh.city_closures)
        changed = self.book.recalendar(rules)
        self.rules, self._calendar_stamp = rules, stamp
        return changed

    def refresh(self) -> int:
        """Apply events that other writers appended to the log; return how many.

        A restart runs this loop over the whole log: :meth:`_apply` is inlined and the
        lookups are bound once; the last row taken is kept even if one fails."""
        count = 0
        take_own, add, match = self.store.take_own, self.book.add, self.matcher.match
        last = self._log_seq
        try:
            rows = self.store.rows_after(last)
            for last, body in rows:
                if take_own(last):  # written (and applied) by this scorecard
                    continue
                event = event_from_body(body)
                self._seq += 1
                add(event, match(event.type, event.data), self._seq)
                count += 1
        finally:
            self._log_seq = last
        return count

    def close(self) -> None:
        self.matcher.close()
        self.store.close()

    def __enter__(self) -> Scorecard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ ingest

    def validate(
        self, event: Event | bytes | str | Mapping[str, Any], line: int | None = None
    ) -> Event | Rejection:
        """Parse and check an event against the contract and this rule set's office."""
        if isinstance(event, bytes | str):
            parsed = parse_line(event, line)
        elif isinstance(event, Event):
            parsed = event
        else:
            parsed = parse_object(dict(event), line=line)
        return self._own_office(parsed, line)

    def _own_office(self, parsed: Event | Rejection, line: int | None) -> Event | Rejection:
        return own_office(parsed, self.rules.code, line)

    def ingest(
        self,
        event: Event | bytes | str | Mapping[str, Any],
        *,
        line: int | None = None,
        origin: str = "",
    ) -> Ingested:
        """Validate, store durably and apply one event; a bad one is kept as rejected."""
        parsed = self.validate(event, line)
        if isinstance(parsed, Rejection):
            self.store.reject(parsed, origin)
            return Ingested("rejected", rejection=parsed)
        return self._settle(parsed, self.store.append(parsed), origin, line)

    def ingest_lines(
        self,
        lines: Iterable[bytes],
        *,
        origin: str = "",
        batch: int = 1000,
        progress: Callable[[int], None] | None = None,
    ) -> IngestSummary:
        """Ingest JSON Lines, committing in groups of ``batch``; blank lines are skipped."""
        return self.ingest_numbered(
            enumerate(lines, 1), origin=origin, batch=batch, progress=progress
        )

    def ingest_numbered(
        self,
        lines: Iterable[tuple[int, bytes]],
        *,
        origin: str = "",
        batch: int = 1000,
        progress: Callable[[int], None] | None = None,
    ) -> IngestSummary:
        """The same for lines that carry their own line numbers."""
        summary = IngestSummary()
        pending: list[tuple[Event, int]] = []
        for number, raw in lines:
            if not raw or raw.isspace():
                continue
            parsed = self._own_office(parse_line(raw, number), number)
            if isinstance(parsed, Rejection):
                self.store.reject(parsed, origin)
                summary.rejections.append(parsed)
                continue
            pending.append((parsed, number))
            if len(pending) >= batch:
                self._flush(pending, summary, origin)
                if progress is not None:
                    progress(number)
        self._flush(pending, summary, origin)
        return summary

    def _flush(self, pending: list[tuple[Event, int]], summary: IngestSummary, origin: str) -> None:
        """Store a batch in one commit, then apply what it accepted (counted, not wrapped
        in an Ingested each: the per-event path of a replay)."""
        if not pending:
            return
        store_batch(self.store, pending, summary, origin, self._apply)
        pending.clear()
        self._skip_own()

    def _settle(self, event: Event, verdict: Verdict, origin: str, line: int | None) -> Ingested:
        self._skip_own()
        if verdict == "accepted":
            self._apply(event)
            return Ingested("accepted", event=event)
        if verdict == "duplicate":
            return Ingested("duplicate", event=event)
        return Ingested("rejected", rejection=self._conflict(event, origin, line))

    def _conflict(self, event: Event, origin: str, line: int | None) -> Rejection:
        return conflict(self.store, event, origin, line)

    def _skip_own(self) -> None:
        """Move past the log rows this scorecard wrote right after the last one applied,
        so that the store's own writes hold only rows behind another writer's (bounded memory:
        a long replay would otherwise keep every seq it wrote)."""
        seq = self._log_seq
        while self.store.take_own(seq + 1):
            seq += 1
        self._log_seq = seq

    def _apply(self, event: Event) -> None:
        self._seq += 1
        self.book.add(event, self.matcher.match(event.type, event.data), self._seq)

    # ------------------------------------------------------------ report

    def report(self, as_of: datetime, year: int | None = None) -> Report:
        """The scorecard of ``year`` (default: the year of ``as_of``) at ``as_of``."""
        return self.report_at(to_us(as_of), year)

    def report_at(self, as_of: int, year: int | None = None) -> Report:
        """The same, at an instant in microseconds since the epoch."""
        return build_report(self.rules, self.book, as_of, year, self.store.rejected_count())


def own_office(parsed: Event | Rejection, office: str, line: int | None) -> Event | Rejection:
    """``parsed``, or its rejection when it names an office other than ``office``."""
    if isinstance(parsed, Event) and parsed.office not in (None, office):
        return Rejection(
            f"expected {office!r} (this rule set's office), got {parsed.office!r}",
            field="office",
            line=line,
            event_id=parsed.id,
            source=parsed.source,
            raw=parsed.body,
        )
    return parsed


def store_batch(
    store: EventStore,
    pending: list[tuple[Event, int]],
    summary: IngestSummary,
    origin: str,
    apply: Callable[[Event], None] | None = None,
) -> None:
    """Store ``(event, line)`` pairs in one commit, count the verdicts into ``summary``
    (a conflict kept as rejected) and, after the commit, ``apply`` each accepted event."""
    verdicts = store.append_batch([e for e, _ in pending])
    for (event, line), verdict in zip(pending, verdicts, strict=True):
        if verdict == "accepted":
            if apply is not None:
                apply(event)
            summary.accepted += 1
        elif verdict == "duplicate":
            summary.duplicates += 1
        else:
            summary.rejections.append(conflict(store, event, origin, line))


def conflict(store: EventStore, event: Event, origin: str, line: int | None) -> Rejection:
    """The rejection of an event whose key is taken by other content, kept in ``store``."""
    rejection = Rejection(
        CONFLICT, field="id", line=line, event_id=event.id, source=event.source, raw=event.body
    )
    store.reject(rejection, origin)
    return rejection


def _calendar_stamp(rules: RuleSet) -> tuple[bytes | None, ...]:
    """The contents of the files the office calendar comes from (the office file and
    ``closures.yaml``; small: read, not parsed), so that a tick re-reads the rule folder
    only when one of them changed."""
    stamp: list[bytes | None] = []
    for path in (rules.office_file, rules.directory / CLOSURES_FILE):
        try:
            stamp.append(path.read_bytes())
        except OSError:
            stamp.append(None)
    return tuple(stamp)
