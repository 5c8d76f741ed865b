"""The SQL of the database seam: one text, as each engine runs it (placeholders and the
office markers of :mod:`bsc_rules.store.sqlconn`)."""

from __future__ import annotations

import pytest

from bsc_rules.store.sqlconn import compile_sql

CASES = [
    pytest.param(
        "SELECT done_us FROM runs WHERE {office} AND job = ?",
        ("SELECT done_us FROM runs WHERE 1 = 1 AND job = ?", (), 1),
        ("SELECT done_us FROM runs WHERE office = %s AND job = %s", (0,), 2),
        id="condition-first",
    ),
    pytest.param(
        "SELECT 1 FROM alerts AS a WHERE key = ? AND {a.office}",
        ("SELECT 1 FROM alerts AS a WHERE key = ? AND 1 = 1", (), 1),
        ("SELECT 1 FROM alerts AS a WHERE key = %s AND a.office = %s", (1,), 2),
        id="condition-aliased-after-a-parameter",
    ),
    pytest.param(
        "INSERT INTO runs ({office_col}job, period) VALUES ({office_val}?, ?)"
        " ON CONFLICT ({office_col}job, period) DO NOTHING",
        (
            "INSERT INTO runs (job, period) VALUES (?, ?) ON CONFLICT (job, period) DO NOTHING",
            (),
            2,
        ),
        (
            "INSERT INTO runs (office, job, period) VALUES (%s, %s, %s)"
            " ON CONFLICT (office, job, period) DO NOTHING",
            (0,),
            3,
        ),
        id="insert-and-conflict-target",
    ),
    pytest.param(
        "SELECT kpi FROM notes WHERE {office} AND text LIKE '5%' AND month = ?",
        ("SELECT kpi FROM notes WHERE 1 = 1 AND text LIKE '5%' AND month = ?", (), 1),
        ("SELECT kpi FROM notes WHERE office = %s AND text LIKE '5%%' AND month = %s", (0,), 2),
        id="percent-doubled-for-psycopg",
    ),
    pytest.param(
        "UPDATE outbox SET status = 'sent'",
        ("UPDATE outbox SET status = 'sent'", (), 0),
        ("UPDATE outbox SET status = 'sent'", (), 0),
        id="no-marker",
    ),
]


@pytest.mark.parametrize(("text", "sqlite", "postgres"), CASES)
def test_one_text_per_engine(
    text: str, sqlite: tuple[str, tuple[int, ...], int], postgres: tuple[str, tuple[int, ...], int]
) -> None:
    """Each engine gets its placeholders; the office is bound (PostgreSQL) or vanishes."""
    assert compile_sql(text, "sqlite") == sqlite
    assert compile_sql(text, "postgres") == postgres
