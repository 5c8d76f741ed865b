"""The record of runs: which scheduled job ran for which period, and when.

One row per ``(job, period)`` (per office on PostgreSQL): a month's digest
(``digest``, ``2017-05``), the pipeline's clock (``pipeline``, ``clock``), the service's
first start (``service``, ``started``). On either engine, through :class:`~.sqlconn.Db`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bsc_rules.store.sqlconn import Db

if TYPE_CHECKING:
    from bsc_rules.store.sqlconn import AnyConnection

_GET = "SELECT done_us FROM runs WHERE {office} AND job = ? AND period = ?"
_INSERT = "INSERT INTO runs ({office_col}job, period, done_us) VALUES ({office_val}?, ?, ?)"
_RECORD = _INSERT + (
    " ON CONFLICT ({office_col}job, period) DO UPDATE SET done_us = excluded.done_us"
)
_RECORD_ONCE = _INSERT + " ON CONFLICT DO NOTHING"


class Runs:
    """The ``runs`` table of one office."""

    def __init__(self, db: Db | AnyConnection) -> None:
        self.db = Db.of(db)

    def get(self, job: str, period: str) -> int | None:
        """When ``job`` ran for ``period`` (µs since the epoch), if it did."""
        row = self.db.execute(_GET, (job, period)).fetchone()
        return None if row is None else int(row[0])

    def done(self, job: str, period: str) -> bool:
        """Whether ``job`` ran for ``period``."""
        return self.get(job, period) is not None

    def record(self, job: str, period: str, at: int) -> None:
        """Record that ``job`` ran for ``period`` at ``at`` (replacing an earlier record),
        in the caller's transaction if one is open."""
        with self.db.transaction():
            self.db.execute(_RECORD, (job, period, at))

    def record_once(self, job: str, period: str, at: int) -> int:
        """Record ``at`` unless ``job`` has a record for ``period``; return the record that
        stands (``at``, or the earlier one)."""
        with self.db.transaction():
            self.db.execute(_RECORD_ONCE, (job, period, at))
            stood = self.get(job, period)
        return at if stood is None else stood
