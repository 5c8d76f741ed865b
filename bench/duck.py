"""DuckDB: what an analyst would write by hand, one SQL query per KPI over the JSON Lines.

The queries follow ``spec/kpis.md`` (not bsc_rules' code): duplicates (same ``source`` and
``id``) count once; a case is its subject's earliest opening event (by time, then arrival);
follow-ups count when ``time <= as_of``; deadlines in Asia/Taipei. Office parameters are
written into the queries as an analyst would copy them from the rule files. Their figures
must equal ``bsc-rules evaluate``'s report: :func:`cross_check` compares them.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

from bench.cases import Result, Timer, case, instant, peak_rss

LOAD = """
CREATE TABLE ev AS
WITH raw AS (
    SELECT row_number() OVER () AS seq, *
    FROM read_json(?, format = 'newline_delimited', columns = {
        specversion: 'VARCHAR', id: 'VARCHAR', source: 'VARCHAR', type: 'VARCHAR',
        time: 'VARCHAR', subject: 'VARCHAR', office: 'VARCHAR', data: 'JSON'})
)
SELECT seq, type, subject, CAST(time AS TIMESTAMPTZ) AS ts,
       epoch_us(CAST(time AS TIMESTAMPTZ)) AS t, data
FROM raw
WHERE coalesce(office, 'datong') = 'datong'
QUALIFY row_number() OVER (PARTITION BY source, id ORDER BY seq) = 1
"""

# A case: the earliest event of its type and subject (by time, then arrival), kept when it
# falls in the year and at or before as_of.
_OPENING = """
    SELECT subject, ts, t, data FROM ev WHERE type = '{type}'
    QUALIFY row_number() OVER (PARTITION BY subject ORDER BY t, seq) = 1
"""


def _cases(type_: str) -> str:
    """CTEs ``o`` (the cases of ``type_``) and ``c`` (those opened in the year by as_of)."""
    year = "SELECT * FROM o WHERE t >= $lo AND t < $hi AND t <= $as_of"
    return f"o AS ({_OPENING.format(type=type_)}), c AS ({year})"


KPI_SQL: dict[str, str] = {
    # Σ forms of every scan before the year's end (cumulative) / required_forms = 200000
    "AC1.1": f"""
WITH o AS ({_OPENING.format(type="archive.scanned")})
SELECT coalesce(sum(CAST(data->>'forms' AS BIGINT)), 0) AS num, 200000 AS den
FROM o WHERE t < $hi AND t <= $as_of""",
    # retrievals of scanned documents: online / all
    "AC1.2": f"""
WITH {_cases("archive.retrieved")}
SELECT count(*) FILTER (WHERE data->>'mode' = 'online') AS num, count(*) AS den
FROM c WHERE (data->'scanned')::VARCHAR = 'true'""",
    # certificates issued without an error found (by as_of) / issued
    "AP1.1": f"""
WITH {_cases("seal_certificate.issued")},
e AS (SELECT DISTINCT subject FROM ev
      WHERE type = 'seal_certificate.error_found' AND t <= $as_of)
SELECT count(*) FILTER (WHERE e.subject IS NULL) AS num, count(*) AS den
FROM c LEFT JOIN e USING (subject)""",
    # (N - Ec - Es) / (N - Ec): citizen errors left out, staff errors fail
    "AP2.1": f"""
WITH {_cases("registration.completed")},
e AS (SELECT subject, bool_or(data->>'cause' = 'citizen') AS citizen,
             bool_or(data->>'cause' = 'staff') AS staff
      FROM ev WHERE type = 'registration.error_found' AND t <= $as_of GROUP BY subject)
SELECT count(*) FILTER (WHERE NOT coalesce(citizen, false) AND NOT coalesce(staff, false)) AS num,
       count(*) FILTER (WHERE NOT coalesce(citizen, false)) AS den
FROM c LEFT JOIN e USING (subject)""",
    # visits reported
    "BC1.1": f"""
WITH {_cases("immigrant_visit.reported")}
SELECT count(*) AS num, NULL AS den FROM c""",
    # overdue / applications not left out; due 00:00 of the 8th day after the local date;
    # ended by the first payment or rejection; rejected before due: left out
    "BP1.1": f"""
WITH {_cases("birth_subsidy.applied")},
ends AS (SELECT subject, type, t FROM ev
         WHERE type IN ('birth_subsidy.paid', 'birth_subsidy.rejected') AND t <= $as_of
         QUALIFY row_number() OVER (PARTITION BY subject ORDER BY t, seq) = 1),
d AS (SELECT epoch_us(date_trunc('day', c.ts) + INTERVAL 8 DAY) AS due,
             ends.type AS end_type, ends.t AS end_t
      FROM c LEFT JOIN ends USING (subject)),
s AS (SELECT CASE WHEN end_type = 'birth_subsidy.rejected' THEN end_t >= due ELSE true END
                 AS counted,
             CASE WHEN end_type IS NULL THEN $as_of >= due ELSE end_t >= due END AS overdue
      FROM d)
SELECT count(*) FILTER (WHERE counted AND overdue) AS num,
       count(*) FILTER (WHERE counted) AS den FROM s""",
    # notified before due / (notified + open past due); due 00:00 of the 11th of next month
    "CC1.1": f"""
WITH {_cases("care_case.identified")},
n AS (SELECT subject, min(t) AS first_t FROM ev
      WHERE type = 'care_case.notified' AND t <= $as_of GROUP BY subject),
d AS (SELECT epoch_us(date_trunc('month', c.ts) + INTERVAL 1 MONTH + INTERVAL 10 DAY) AS due,
             first_t
      FROM c LEFT JOIN n USING (subject))
SELECT count(*) FILTER (WHERE first_t IS NOT NULL AND first_t < due) AS num,
       count(*) FILTER (WHERE first_t IS NOT NULL OR $as_of >= due) AS den FROM d""",
    # Σ case scores / registrations: declined 1.0, else .65 hris + .30 non_hris + .05 office
    "CP1.1": f"""
WITH {_cases("registration.completed")},
ch AS (SELECT subject,
              bool_or(data->>'channel' = 'declined') AS declined,
              bool_or(data->>'channel' = 'hris') AS hris,
              bool_or(data->>'channel' = 'non_hris') AS non_hris,
              bool_or(data->>'channel' = 'office') AS office
       FROM ev WHERE type = 'cross_notice.recorded' AND t <= $as_of GROUP BY subject),
s AS (SELECT CASE WHEN coalesce(declined, false) THEN 10000
                  ELSE least(10000, 6500 * coalesce(hris, false)::INT
                                    + 3000 * coalesce(non_hris, false)::INT
                                    + 500 * coalesce(office, false)::INT) END AS score
      FROM c LEFT JOIN ch USING (subject))
SELECT coalesce(sum(score), 0) / 10000 AS num, count(*) AS den FROM s""",
    # distinct employees trained / headcount = 40
    "TL1.1": f"""
WITH {_cases("training.attended")}
SELECT count(DISTINCT data->>'employee') AS num, 40 AS den FROM c""",
    # Σ pages of online surveys
    "TF1.1": f"""
WITH {_cases("survey.completed")}
SELECT coalesce(sum(CAST(data->>'pages' AS BIGINT)), 0) AS num, NULL AS den
FROM c WHERE data->>'mode' = 'online'""",
}

#: KPIs whose value is a count or a sum (the report's numerator and denominator are null).
PLAIN = {"BC1.1", "TF1.1"}


def _figures(kpi: str, num: Any, den: Any) -> dict[str, Any]:
    num = Fraction(str(num))
    if kpi in PLAIN:
        return {"value": float(num), "numerator": None, "denominator": None}
    den = Fraction(str(den))
    value = None if den == 0 else float(100 * num / den)
    return {"value": value, "numerator": float(num), "denominator": float(den)}


@case
def case_duckdb(path: str, as_ofs: list[str], year: int, threads: int = 1) -> Result:
    """Load the JSON Lines into DuckDB and run the ten KPI queries at each instant."""
    import duckdb

    from bsc_rules.calendar import year_bounds

    lo, hi = year_bounds(year)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'Asia/Taipei'")
    con.execute(f"SET threads = {int(threads)}")
    with Timer() as load:
        con.execute(LOAD, [path])
    events = con.execute("SELECT count(*) FROM ev").fetchone()[0]  # type: ignore[index]
    values: dict[str, dict[str, Any]] = {}
    timings = []
    for text in as_ofs:
        params = {"lo": lo, "hi": hi, "as_of": instant(text)}
        with Timer() as q:
            rows = {
                kpi: con.execute(
                    sql, {k: v for k, v in params.items() if f"${k}" in sql}
                ).fetchone()
                for kpi, sql in KPI_SQL.items()
            }
        timings.append(q.wall)
        values[text] = {k: _figures(k, *row) for k, row in rows.items()}  # type: ignore[misc]
    con.close()
    with open(path, "rb") as handle:
        lines = sum(1 for _ in handle)
    return {
        "events": lines,
        "distinct_events": events,
        "load_seconds": load.wall,
        "query_seconds": timings[0],
        "seconds": load.wall + timings[0],
        "events_per_s": lines / (load.wall + timings[0]),
        "threads": threads,
        "values": values,
        "peak_rss": peak_rss(),
        "version": duckdb.__version__,
    }


def cross_check(
    duck: dict[str, dict[str, Any]], report: dict[str, dict[str, Any]]
) -> list[tuple[str, str, Any, Any, bool]]:
    """Per KPI and figure: (kpi, figure, DuckDB, bsc_rules, equal)."""
    rows = []
    for kpi, mine in report.items():
        theirs = duck.get(kpi, {})
        for figure in ("value", "numerator", "denominator"):
            a, b = theirs.get(figure), mine.get(figure)
            same = a == b if a is None or b is None else abs(a - b) <= 1e-9 * max(1, abs(b))
            rows.append((kpi, figure, a, b, same))
    return rows
