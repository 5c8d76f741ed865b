"""The owner sections' analysis and improvement notes, per KPI and month.

``bsc-rules comment KPI --month 2017-05 --by NAME --text …`` adds a note; nothing is ever
overwritten: a corrected note is a new entry, and the history keeps every one. The monthly
digest shows, per KPI, the latest note each author entered for the month before the
digest was sent. The notes are one office's, on either engine
(:class:`bsc_rules.store.sqlconn.Db`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bsc_rules.errors import UsageError
from bsc_rules.store.sqlconn import Db

if TYPE_CHECKING:
    from bsc_rules.store.sqlconn import AnyConnection

_MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
MAX_TEXT = 2000  # characters: a note is a paragraph of a briefing book, not a report


@dataclass(frozen=True, slots=True)
class Note:
    """One entry: who wrote what about a KPI's month, and when."""

    kpi: str
    month: str
    author: str
    text: str
    at: int


def check_month(month: str) -> str:
    """``YYYY-MM``, or a :class:`UsageError` naming the field."""
    if not _MONTH.match(month):
        msg = f"--month: expected YYYY-MM (e.g. 2017-05), got {month!r}"
        raise UsageError(msg)
    return month


class Notes:
    """The notes table of one office (a :class:`Db`, or a connection wrapped in one)."""

    def __init__(self, db: Db | AnyConnection) -> None:
        self.db = Db.of(db)

    def add(self, kpi: str, month: str, author: str, text: str, now: int) -> Note:
        """Keep a new note (an earlier one for the same KPI and month stays in history)."""
        check_month(month)
        author, text = author.strip(), text.strip()
        if not author:
            raise UsageError("--by: who writes the note is required")
        if not text:
            raise UsageError("--text: the note is empty")
        if len(text) > MAX_TEXT:
            msg = f"--text: at most {MAX_TEXT} characters, got {len(text)}"
            raise UsageError(msg)
        with self.db.transaction():
            self.db.execute(
                "INSERT INTO notes ({office_col}kpi, month, author, text, at_us)"
                " VALUES ({office_val}?, ?, ?, ?, ?)",
                (kpi, month, author, text, now),
            )
        return Note(kpi, month, author, text, now)

    def history(self, kpi: str | None = None, month: str | None = None) -> list[Note]:
        """Every note, oldest first, optionally of one KPI and/or month."""
        query = "SELECT kpi, month, author, text, at_us FROM notes WHERE {office}"
        args: list[Any] = []
        if kpi is not None:
            query += " AND kpi = ?"
            args.append(kpi)
        if month is not None:
            query += " AND month = ?"
            args.append(check_month(month))
        return [Note(*row) for row in self.db.execute(query + " ORDER BY seq", args)]

    def for_month(self, month: str, before: int) -> dict[str, list[Note]]:
        """Per KPI, the latest note of each author for ``month`` entered before ``before``
        (what a digest sent at ``before`` shows), in the order they were first written."""
        latest: dict[tuple[str, str], Note] = {}
        for note in self.history(month=month):
            if note.at < before:
                latest[(note.kpi, note.author)] = note
        shown: dict[str, list[Note]] = {}
        for (kpi, _), note in latest.items():
            shown.setdefault(kpi, []).append(note)
        return shown
