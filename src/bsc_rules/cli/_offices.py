"""Commands over several offices: a many-office file ingested into the directory form or
PostgreSQL (each line routed to its office's scorecard; an office outside the deployment
rejected and kept), and the reports of several offices."""

from __future__ import annotations

import multiprocessing
from collections.abc import Collection, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from bsc_rules.cli._common import Interrupt, lines, rule_sets_of
from bsc_rules.errors import UsageError
from bsc_rules.events import Event, Rejection, parse_line
from bsc_rules.rules.ruleset import RuleSet
from bsc_rules.scorecard import IngestSummary, own_office, store_batch
from bsc_rules.store.base import EventStore
from bsc_rules.store.dbform import create_offices, open_rejected, open_store
from bsc_rules.store.directory import route

BATCH = 5000  # lines of one office committed together


@dataclass
class OfficesSummary:
    """What a many-office ingest did, per office, and to lines of no known office."""

    offices: dict[str, IngestSummary] = field(default_factory=dict)
    unknown: list[Rejection] = field(default_factory=list)

    def total(self) -> IngestSummary:
        whole = IngestSummary()
        for each in self.offices.values():
            whole.accepted += each.accepted
            whole.duplicates += each.duplicates
            whole.rejections.extend(each.rejections)
        whole.rejections.extend(self.unknown)
        whole.rejections.sort(key=lambda r: r.line or 0)
        return whole

    def add(self, other: OfficesSummary) -> None:
        """Add another worker's counts."""
        for code, each in other.offices.items():
            mine = self.offices.setdefault(code, IngestSummary())
            mine.accepted += each.accepted
            mine.duplicates += each.duplicates
            mine.rejections.extend(each.rejections)
        self.unknown.extend(other.unknown)


class RoutedIngest:
    """Each line routed to its office's log, opened on the office's first line.

    A file ingest keeps no scorecard: each line is validated (the contract and its office),
    stored durably in its office's log with its verdict (accepted, duplicate, conflict), a
    rejected one kept; the offices' state is rebuilt from the logs by whatever reads them
    next (``run``, ``serve``, ``status``), so none is built here (neither the case book
    nor a replay of what the logs already held)."""

    def __init__(self, db: str, sets: dict[str, RuleSet], origin: str, create: bool = True) -> None:
        self.db, self.sets, self.origin = db, sets, origin
        self.summary = OfficesSummary()
        self._stores: dict[str, EventStore] = {}
        self._pending: dict[str, list[tuple[int, bytes]]] = {}
        self._rejected: EventStore | None = None
        if create:
            create_offices(db, list(sets))

    def run(
        self,
        lines: Iterable[tuple[int, bytes]],
        office: str | None = None,
        mine: Collection[str] | None = None,
        keep_unknown: bool = True,
    ) -> OfficesSummary:
        """Route and ingest ``lines`` (only those of the offices ``mine``, when given; the
        lines of no known office only if ``keep_unknown``); everything routed is committed
        before returning (also when the lines stop early)."""
        keep = self._keep if keep_unknown else _drop
        pending = self._pending
        try:
            for code, number, raw in route(lines, tuple(self.sets), keep, office=office):
                if mine is not None and code not in mine:
                    continue
                waiting = pending.get(code)
                if waiting is None:
                    waiting = pending[code] = []
                waiting.append((number, raw))
                if len(waiting) >= BATCH:
                    self._flush(code)
        finally:
            for code in list(pending):
                self._flush(code)
        return self.summary

    def _keep(self, rejection: Rejection) -> None:
        if self._rejected is None:
            self._rejected = open_rejected(self.db)
        self._rejected.reject(rejection, self.origin)
        self.summary.unknown.append(rejection)

    def _flush(self, code: str) -> None:
        """Validate an office's waiting lines, keep the rejected, store the rest in one
        commit."""
        waiting = self._pending.pop(code, [])
        if not waiting:
            return
        store = self._stores.get(code)
        if store is None:
            store = self._stores[code] = open_store(self.db, code)
        done = self.summary.offices.get(code)
        if done is None:
            done = self.summary.offices[code] = IngestSummary()
        events: list[tuple[Event, int]] = []
        for number, raw in waiting:
            parsed = own_office(parse_line(raw, number), code, number)
            if isinstance(parsed, Rejection):
                store.reject(parsed, self.origin)
                done.rejections.append(parsed)
            else:
                events.append((parsed, number))
        if events:
            store_batch(store, events, done, self.origin)
            store.forget_own()  # no scorecard here asks which rows were this one's

    def close(self) -> None:
        for store in self._stores.values():
            store.close()
        if self._rejected is not None:
            self._rejected.close()

    def __enter__(self) -> RoutedIngest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _drop(rejection: Rejection) -> None:
    return None


def ingest_in_workers(
    db: str, folders: list[Path | None], path: Path, office: str | None, workers: int
) -> OfficesSummary:
    """Ingest a many-office file with ``workers`` processes, the deployment's offices dealt
    out among them (sorted codes, round robin); each process reads the file, ingests the
    lines of its offices into its own stores, and the first also keeps the lines of no
    known office. The summaries are added up."""
    codes = sorted(rule_sets_of(folders))
    create_offices(db, codes)  # once, before the workers (no two create a file at once)
    shares = [codes[k::workers] for k in range(min(workers, len(codes)))]
    context = multiprocessing.get_context("spawn")  # no connection or lock crosses a fork
    total = OfficesSummary()
    with ProcessPoolExecutor(len(shares), mp_context=context) as pool:
        futures = [
            pool.submit(_work, db, folders, path, office, share, k == 0)
            for k, share in enumerate(shares)
        ]
        for future in futures:
            total.add(future.result())
    return total


def _work(
    db: str,
    folders: list[Path | None],
    path: Path,
    office: str | None,
    share: list[str],
    keep_unknown: bool,
) -> OfficesSummary:
    """One worker process: its offices' lines of the file, into its own stores."""
    sets = rule_sets_of(folders)
    with Interrupt() as interrupt, RoutedIngest(db, sets, path.name, False) as routed:
        numbered = enumerate(lines(path, stop=interrupt), 1)
        return routed.run(numbered, office, mine=set(share), keep_unknown=keep_unknown)


def rules_for(sets: dict[str, RuleSet], office: str) -> RuleSet:
    """The rule set of ``office``, or an error naming the offices that have one."""
    if office not in sets:
        known = "、".join(sets)
        msg = f"戶所 {office!r} 沒有規則檔（--rules 給的是：{known}）"
        raise UsageError(msg)
    return sets[office]
