"""Tests of the event generator ``bsc_rules.dev.simulate`` against the events and KPI specs."""

from __future__ import annotations

import copy
import inspect
import io
import json
import re
import tracemalloc
from collections import Counter, defaultdict
from datetime import date, datetime, timedelta, timezone
from itertools import islice, pairwise
from typing import Any

import pytest

from bsc_rules.dev.simulate import office_factor, simulate, write_jsonl

TAIPEI = timezone(timedelta(hours=8))
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")

# spec/events.md: every data field a type requires, with its JSON type and allowed values.
REQUIRED_DATA: dict[str, dict[str, tuple[type, frozenset[Any] | None]]] = {
    "registration.completed": {
        "kind": (str, frozenset({"birth", "death", "marriage", "divorce", "move_in",
                                 "move_out", "address_change", "other"})),
    },
    "registration.error_found": {"cause": (str, frozenset({"staff", "citizen"}))},
    "cross_notice.recorded": {
        "channel": (str, frozenset({"hris", "non_hris", "office", "declined"})),
    },
    "seal_certificate.issued": {},
    "seal_certificate.error_found": {},
    "archive.scanned": {"forms": (int, None)},
    "archive.retrieved": {"mode": (str, frozenset({"online", "paper"})), "scanned": (bool, None)},
    "immigrant_visit.reported": {"method": (str, frozenset({"phone", "home", "other"}))},
    "birth_subsidy.applied": {"amount": (int, None)},
    "birth_subsidy.paid": {},
    "birth_subsidy.rejected": {"reason": (str, None)},
    "care_case.identified": {
        "category": (str, frozenset({"elderly_marriage", "divorce_with_minor"})),
    },
    "care_case.notified": {},
    "training.attended": {"employee": (str, None), "course": (str, None)},
    "survey.completed": {"mode": (str, frozenset({"online", "paper"})), "pages": (int, None)},
}  # fmt: skip

# spec/kpis.md, Organisation: the section that owns each type's KPI produces it.
SECTION = {
    "registration": {"registration.completed", "registration.error_found",
                     "cross_notice.recorded", "birth_subsidy.applied", "birth_subsidy.paid",
                     "birth_subsidy.rejected", "care_case.identified", "care_case.notified",
                     "immigrant_visit.reported"},
    "records": {"seal_certificate.issued", "seal_certificate.error_found", "archive.scanned",
                "archive.retrieved"},
    "general_affairs": {"training.attended", "survey.completed"},
}  # fmt: skip

# Yearly counts of distinct events for Datong, seed 0 (the brief's ranges).
YEARLY = {
    "registration.completed": (9_000, 10_800),
    "cross_notice.recorded": (13_000, 18_000),
    "registration.error_found": (3, 5),
    "seal_certificate.issued": (7_200, 9_500),
    "seal_certificate.error_found": (1, 1),
    "birth_subsidy.applied": (900, 1_150),
    "birth_subsidy.paid": (880, 1_140),
    "birth_subsidy.rejected": (3, 25),
    "care_case.identified": (144, 168),
    "care_case.notified": (140, 168),
    "archive.scanned": (200, 500),
    "archive.retrieved": (960, 1_800),
    "immigrant_visit.reported": (379, 420),
    "training.attended": (40, 200),
    "survey.completed": (350, 800),
}
OPENING = {
    "registration.error_found": "registration.completed",
    "cross_notice.recorded": "registration.completed",
    "seal_certificate.error_found": "seal_certificate.issued",
    "birth_subsidy.paid": "birth_subsidy.applied",
    "birth_subsidy.rejected": "birth_subsidy.applied",
    "care_case.notified": "care_case.identified",
}


def local(event: dict[str, Any]) -> datetime:
    """The event's time in Asia/Taipei."""
    return datetime.fromisoformat(event["time"]).astimezone(TAIPEI)


def subsidy_due(applied: datetime) -> datetime:
    """BP1.1 due: 00:00 of the 8th day after the application's local date."""
    return datetime.combine(applied.date() + timedelta(days=8), datetime.min.time(), TAIPEI)


def care_due(identified: datetime) -> datetime:
    """CC1.1 due: 00:00 of the 11th of the month after identification."""
    year, month = identified.year + identified.month // 12, identified.month % 12 + 1
    return datetime(year, month, 11, tzinfo=TAIPEI)


@pytest.fixture(scope="module")
def stream() -> list[dict[str, Any]]:
    """Datong 2017, seed 0, in arrival order (duplicates included)."""
    return list(simulate(2017, 0, ("datong",)))


@pytest.fixture(scope="module")
def events(stream: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The stream without its repeated deliveries, in arrival order."""
    seen: set[str] = set()
    unique = []
    for event in stream:
        if event["id"] not in seen:
            seen.add(event["id"])
            unique.append(event)
    return unique


@pytest.fixture(scope="module")
def by_type(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Distinct events grouped by type."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        groups[event["type"]].append(event)
    return groups


def jsonl(**kwargs: Any) -> bytes:
    """The simulation written as JSON Lines."""
    out = io.BytesIO()
    write_jsonl(simulate(**kwargs), out)
    return out.getvalue()


def test_same_seed_gives_identical_bytes() -> None:
    """The same arguments give byte-identical output."""
    assert jsonl(seed=7) == jsonl(seed=7)


def test_different_seed_gives_different_output() -> None:
    """Another seed gives another stream."""
    assert jsonl(seed=1) != jsonl(seed=2)


def test_envelope_attributes(stream: list[dict[str, Any]]) -> None:
    """Every event has the CloudEvents envelope of spec/events.md with the office's sources."""
    sources = {t: f"/taipei/datong/{s}" for s, types in SECTION.items() for t in types}
    keys = {"specversion", "id", "source", "type", "time", "subject", "office", "data"}
    for event in stream:
        assert set(event) == keys, event
        assert event["specversion"] == "1.0"
        assert isinstance(event["id"], str)
        assert event["id"].startswith("datong-2017-")
        assert event["source"] == sources[event["type"]]
        assert isinstance(event["subject"], str)
        assert event["subject"]
        assert event["office"] == "datong"
        assert RFC3339.match(event["time"]), event["time"]


def test_data_fields_have_spec_types(stream: list[dict[str, Any]]) -> None:
    """Every required data field is present with its JSON type (no bool for int) and value."""
    for event in stream:
        data = event["data"]
        assert isinstance(data, dict)
        for name, (kind, allowed) in REQUIRED_DATA[event["type"]].items():
            value = data[name]
            assert type(value) is kind, (event["id"], name, value)
            assert allowed is None or value in allowed, (event["id"], name, value)
        assert all(type(v) in (str, int, bool) for v in data.values())


def test_int_fields_are_in_range(by_type: dict[str, list[dict[str, Any]]]) -> None:
    """Forms, pages and amounts are sensible integers."""
    assert all(200 <= e["data"]["forms"] <= 500 for e in by_type["archive.scanned"])
    assert all(e["data"]["pages"] >= 0 for e in by_type["survey.completed"])
    assert {e["data"]["amount"] for e in by_type["birth_subsidy.applied"]} == {20_000}


def test_events_are_json_ready(stream: list[dict[str, Any]]) -> None:
    """Events survive a JSON round trip unchanged."""
    for event in stream[:5000]:
        assert json.loads(json.dumps(event, ensure_ascii=False)) == event


def test_times_have_offsets_and_some_utc_crosses_local_date(events: list[dict[str, Any]]) -> None:
    """Times are mostly +08:00; ~5 % are UTC, some of them on another date than local."""
    utc = [e for e in events if e["time"].endswith(("Z", "+00:00"))]
    assert all(e["time"].endswith(("+08:00", "Z", "+00:00")) for e in events)
    assert 0.03 < len(utc) / len(events) < 0.07
    assert {e["time"][-1] for e in utc} == {"Z", "0"}
    crossing = [e for e in utc if e["time"][:10] != local(e).date().isoformat()]
    assert len(crossing) >= 10


def test_times_are_office_hours_on_working_days(by_type: dict[str, list[dict[str, Any]]]) -> None:
    """Registrations happen 08:00-17:00 local, on weekdays and a few make-up Saturdays."""
    times = [local(e) for e in by_type["registration.completed"]]
    assert all(8 <= t.hour < 17 for t in times)
    assert all(t.weekday() < 6 for t in times)
    assert {t.date() for t in times if t.weekday() == 5} == {
        date(2017, 2, 18), date(2017, 6, 3), date(2017, 9, 30)}  # fmt: skip
    assert all(t.year == 2017 for t in times)


def test_yearly_counts_per_type(by_type: dict[str, list[dict[str, Any]]]) -> None:
    """Distinct events per type fall in the calibrated yearly ranges."""
    assert set(by_type) == set(REQUIRED_DATA)
    counts = {t: len(v) for t, v in by_type.items()}
    for etype, (lo, hi) in YEARLY.items():
        assert lo <= counts[etype] <= hi, (etype, counts[etype])
    assert 28_000 <= sum(counts.values()) <= 40_000


def test_registration_kinds_and_monthly_volume(by_type: dict[str, list[dict[str, Any]]]) -> None:
    """Kinds follow domain.md §2.3 and months hold about 800-850 cases."""
    cases = by_type["registration.completed"]
    kinds = Counter(e["data"]["kind"] for e in cases)
    monthly = {"birth": 100, "death": 87, "marriage": 65, "divorce": 25, "move_in": 290,
               "address_change": 150, "move_out": 20, "other": 68}  # fmt: skip
    for kind, per_month in monthly.items():
        assert 0.85 * 12 * per_month <= kinds[kind] <= 1.15 * 12 * per_month, kind
    months = Counter(local(e).month for e in cases)
    assert all(740 <= months[m] <= 900 for m in range(1, 13)), months


def test_marriages_dip_in_ghost_month(by_type: dict[str, list[dict[str, Any]]]) -> None:
    """Marriages per working day fall by about half during 鬼月 2017-08-22..09-19."""
    days = Counter(local(e).date() for e in by_type["registration.completed"])
    marriages = Counter(
        local(e).date()
        for e in by_type["registration.completed"]
        if e["data"]["kind"] == "marriage"
    )
    ghost = [d for d in days if date(2017, 8, 22) <= d <= date(2017, 9, 19)]
    rest = [d for d in days if date(2017, 3, 1) <= d <= date(2017, 7, 31)]
    per_day = [sum(marriages[d] for d in ds) / len(ds) for ds in (ghost, rest)]
    assert per_day[0] < 0.7 * per_day[1]


def test_seal_certificates_fall_after_may(by_type: dict[str, list[dict[str, Any]]]) -> None:
    """Seal certificates are 600-900 a month and fall by ~25 % after 2017-05-31."""
    months = Counter(local(e).month for e in by_type["seal_certificate.issued"])
    assert all(650 <= months[m] <= 900 for m in range(1, 6)), months
    assert all(500 <= months[m] <= 700 for m in range(6, 13)), months
    before, after = (
        sum(months[m] for m in range(1, 6)) / 5,
        sum(months[m] for m in range(6, 13)) / 7,
    )
    assert 0.65 < after / before < 0.85


def test_cross_notice_score_near_target(by_type: dict[str, list[dict[str, Any]]]) -> None:
    """CP1.1's per-case score averages 80-90 % with ~40 % declined and some repeats."""
    channels: dict[str, list[str]] = defaultdict(list)
    for event in by_type["cross_notice.recorded"]:
        channels[event["subject"]].append(event["data"]["channel"])
    weight = {"hris": 0.65, "non_hris": 0.30, "office": 0.05}
    cases = [e["subject"] for e in by_type["registration.completed"]]
    scores = [
        1.0 if "declined" in channels[s] else sum(weight[c] for c in set(channels[s]))
        for s in cases
    ]
    assert 0.80 <= sum(scores) / len(cases) <= 0.90
    declined = sum("declined" in channels[s] for s in cases) / len(cases)
    assert 0.35 < declined < 0.45
    assert any(len(v) != len(set(v)) for v in channels.values())
    assert set(channels) <= set(cases)


def test_registration_errors(by_type: dict[str, list[dict[str, Any]]]) -> None:
    """2-3 staff and 1-2 citizen errors, found days to weeks after their case."""
    completed = {e["subject"]: local(e) for e in by_type["registration.completed"]}
    errors = by_type["registration.error_found"]
    causes = Counter(e["data"]["cause"] for e in errors)
    assert 2 <= causes["staff"] <= 3
    assert 1 <= causes["citizen"] <= 2
    for error in errors:
        assert timedelta(days=2) <= local(error) - completed[error["subject"]] <= timedelta(days=60)
    assert len(by_type["seal_certificate.error_found"]) == 1


def test_subsidy_payments_and_deadlines(by_type: dict[str, list[dict[str, Any]]]) -> None:
    """Most payments are 1-6 days after; some are late, rejected, never paid, or both."""
    applied = {e["subject"]: local(e) for e in by_type["birth_subsidy.applied"]}
    paid = {e["subject"]: local(e) for e in by_type["birth_subsidy.paid"]}
    rejected = {e["subject"]: local(e) for e in by_type["birth_subsidy.rejected"]}
    assert set(paid) | set(rejected) <= set(applied)
    delays = Counter((paid[s].date() - applied[s].date()).days for s in paid)
    assert sum(delays[d] for d in range(1, 7)) / len(paid) > 0.97
    late = [s for s in paid if paid[s] >= subsidy_due(applied[s])]
    assert 1 <= len(late) <= 0.03 * len(applied)
    assert any(rejected[s] < subsidy_due(applied[s]) for s in rejected)
    assert any(rejected[s] >= subsidy_due(applied[s]) for s in rejected)
    assert 1 <= len(set(applied) - set(paid) - set(rejected)) <= 6
    assert len(set(paid) & set(rejected)) >= 1


def test_december_subsidies_followed_up_in_january(
    by_type: dict[str, list[dict[str, Any]]],
) -> None:
    """Some December applications are paid in January 2018, within the stream."""
    applied = {e["subject"]: local(e) for e in by_type["birth_subsidy.applied"]}
    january = [
        e for e in by_type["birth_subsidy.paid"]
        if applied[e["subject"]].month == 12 and local(e).date() >= date(2018, 1, 1)
    ]  # fmt: skip
    assert january
    assert all(e["id"].startswith("datong-2017-") for e in january)


def test_care_cases_notified_mostly_on_time(by_type: dict[str, list[dict[str, Any]]]) -> None:
    """Care cases: 12-14 a month, notified before the 11th of next month but 1-2 late."""
    identified = {e["subject"]: e for e in by_type["care_case.identified"]}
    notified = {e["subject"]: local(e) for e in by_type["care_case.notified"]}
    categories = Counter(e["data"]["category"] for e in identified.values())
    assert 12 <= categories["elderly_marriage"] <= 36
    assert 120 <= categories["divorce_with_minor"] <= 144
    late = [s for s, t in notified.items() if t >= care_due(local(identified[s]))]
    assert 1 <= len(late) <= 2
    assert len(set(identified) - set(notified)) <= 1
    assert all(notified[s] > local(identified[s]) for s in notified)


def test_archive_scanning_and_retrieval(by_type: dict[str, list[dict[str, Any]]]) -> None:
    """Scans sum to ~100,000 forms; the scanned share of retrievals rises; scanned ≈ online."""
    forms = sum(e["data"]["forms"] for e in by_type["archive.scanned"])
    assert 100_000 <= forms <= 101_000
    retrievals = by_type["archive.retrieved"]
    months = Counter(local(e).month for e in retrievals)
    assert all(80 <= months[m] <= 150 for m in range(1, 13)), months
    h1 = [e["data"]["scanned"] for e in retrievals if local(e).month <= 6]
    h2 = [e["data"]["scanned"] for e in retrievals if local(e).month > 6]
    assert sum(h1) / len(h1) < sum(h2) / len(h2)
    scanned = [e["data"]["mode"] for e in retrievals if e["data"]["scanned"]]
    assert 0.95 <= scanned.count("online") / len(scanned) < 1.0
    assert all(e["data"]["mode"] == "paper" for e in retrievals if not e["data"]["scanned"])


def test_immigrant_visits(by_type: dict[str, list[dict[str, Any]]]) -> None:
    """At least 379 visits, ~80 % by phone."""
    methods = Counter(e["data"]["method"] for e in by_type["immigrant_visit.reported"])
    total = sum(methods.values())
    assert total >= 379
    assert 0.72 < methods["phone"] / total < 0.88


def test_training_covers_roster_by_november(by_type: dict[str, list[dict[str, Any]]]) -> None:
    """All 40 employees attend a session by November; some attend several."""
    attended = by_type["training.attended"]
    by_november = {e["data"]["employee"] for e in attended if local(e).month <= 11}
    assert by_november == {f"E{n:03d}" for n in range(1, 41)}
    assert {e["data"]["course"] for e in attended} == {"戶政法令", "資安管理", "服務禮儀"}
    assert max(Counter(e["data"]["employee"] for e in attended).values()) >= 2


def test_survey_pages_in_quarterly_waves(by_type: dict[str, list[dict[str, Any]]]) -> None:
    """Online surveys save ~1,300 pages a year, in four quarterly waves."""
    surveys = by_type["survey.completed"]
    online = [e for e in surveys if e["data"]["mode"] == "online"]
    assert 1_250 <= sum(e["data"]["pages"] for e in online) <= 1_450
    assert len(online) > 0.7 * len(surveys)
    assert {local(e).month for e in surveys} == {3, 6, 9, 12}


def test_duplicates_are_exact_and_rare(stream: list[dict[str, Any]]) -> None:
    """About 0.5 % of events are sent twice, with identical content."""
    first: dict[str, dict[str, Any]] = {}
    repeats = 0
    for event in stream:
        if event["id"] in first:
            assert first[event["id"]] == event
            repeats += 1
        else:
            first[event["id"]] = event
    assert 0.002 < repeats / len(first) < 0.01


def test_some_events_arrive_late(events: list[dict[str, Any]]) -> None:
    """About 1 % of events arrive after events with a later time."""
    times = [local(e) for e in events]
    inversions = sum(b < a for a, b in pairwise(times))
    assert 0.004 < inversions / len(events) < 0.02
    assert max(a - b for a, b in pairwise(times)) <= timedelta(days=8)


def test_follow_ups_arrive_before_their_opening_event(stream: list[dict[str, Any]]) -> None:
    """Some payments and cross-agency records arrive before the event that opens their case."""
    seen: set[tuple[str, str]] = set()
    early: Counter[str] = Counter()
    for event in stream:
        seen.add((event["type"], event["subject"]))
        opening = OPENING.get(event["type"])
        if opening and (opening, event["subject"]) not in seen:
            early[event["type"]] += 1
    assert early["cross_notice.recorded"] >= 1
    assert early["birth_subsidy.paid"] >= 1


def test_subjects_are_office_style_and_unique(by_type: dict[str, list[dict[str, Any]]]) -> None:
    """Case ids read like RG1060315001, one prefix per kind of case, unique per opening."""
    prefixes = {
        "registration.completed": "RG", "seal_certificate.issued": "SC",
        "birth_subsidy.applied": "BS", "care_case.identified": "CC",
        "immigrant_visit.reported": "NV", "archive.scanned": "AS", "archive.retrieved": "AR",
        "training.attended": "TR", "survey.completed": "SV",
    }  # fmt: skip
    for etype, prefix in prefixes.items():
        subjects = [e["subject"] for e in by_type[etype]]
        assert len(set(subjects)) == len(subjects), etype
        assert all(re.fullmatch(prefix + r"10[67]\d{4}\d{3,}", s) for s in subjects), etype
        assert all(e["subject"][2:9] == _roc(local(e).date()) for e in by_type[etype])


def _roc(day: date) -> str:
    """ROC date as in case ids: 2017-03-15 → 1060315."""
    return f"{day.year - 1911:03d}{day.month:02d}{day.day:02d}"


def test_two_offices_have_distinct_ids_and_sources() -> None:
    """Two offices give disjoint event ids and sources, each with its own office code."""
    ids: dict[str, set[str]] = defaultdict(set)
    sources: dict[str, set[str]] = defaultdict(set)
    for event in simulate(offices=("datong", "zhongshan")):
        ids[event["office"]].add(event["id"])
        sources[event["office"]].add(event["source"])
    assert set(ids) == {"datong", "zhongshan"}
    assert not ids["datong"] & ids["zhongshan"]
    assert not sources["datong"] & sources["zhongshan"]
    assert all(s.startswith("/taipei/zhongshan/") for s in sources["zhongshan"])


def test_office_factor_scales_volumes() -> None:
    """Datong has factor 1; other offices a stable factor in [0.6, 1.8] that scales volumes."""
    assert office_factor("datong") == 1.0
    factors = [office_factor(f"office{n:03d}") for n in range(200)]
    assert all(0.6 <= f <= 1.8 for f in factors)
    assert max(factors) - min(factors) > 0.8
    counts = Counter(e["office"] for e in simulate(offices=("datong", "wanhua")))
    assert counts["wanhua"] / counts["datong"] == pytest.approx(office_factor("wanhua"), rel=0.1)


def test_streams_twelve_offices_lazily() -> None:
    """Twelve offices stream from a generator, interleaved by time, in small memory."""
    offices = [f"office{n:02d}" for n in range(12)]
    assert inspect.isgenerator(simulate(offices=offices))
    events = simulate(offices=offices)
    tracemalloc.start()
    try:
        head = [(e["office"], e["time"][:7]) for e in islice(events, 60_000)]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert {office for office, _ in head} == set(offices)
    assert {month for _, month in head} <= {"2017-01", "2017-02", "2017-03", "2016-12"}
    assert peak < 40 * 2**20


def test_bad_office_arguments() -> None:
    """A bare string or repeated office codes are refused."""
    with pytest.raises(TypeError):
        next(simulate(offices="datong"))
    with pytest.raises(ValueError, match="distinct"):
        next(simulate(offices=("datong", "datong")))


def test_write_jsonl_compact_utf8_lines() -> None:
    """write_jsonl writes compact UTF-8 lines to binary or text streams and reports progress."""
    events = list(islice(simulate(), 3_000))
    binary, text, seen = io.BytesIO(), io.StringIO(), list[int]()
    assert write_jsonl(iter(events), binary, progress=seen.append, chunk=1_000) == 3_000
    assert write_jsonl(events, text) == 3_000
    lines = binary.getvalue().decode("utf-8").splitlines()
    assert lines == text.getvalue().splitlines()
    for line, event in zip(lines, events, strict=True):
        assert line == json.dumps(event, ensure_ascii=False, separators=(",", ":"))
    assert seen == [1_000, 2_000, 3_000, 3_000]
    chinese = io.BytesIO()
    write_jsonl([{"data": {"course": "戶政法令"}}], chinese)
    assert chinese.getvalue() == '{"data":{"course":"戶政法令"}}\n'.encode()


def test_editing_a_yielded_event_leaves_its_duplicate_alone() -> None:
    """A consumer may edit what it is given: the duplicates still equal the originals."""
    untouched = [copy.deepcopy(e) for e in islice(simulate(seed=4), 6000)]
    seen = []
    for e in islice(simulate(seed=4), 6000):
        seen.append(copy.deepcopy(e))
        e["id"] = "edited"
        e["data"]["edited"] = True
    assert seen == untouched
    keys = [(e["source"], e["id"]) for e in seen]
    assert len(keys) > len(set(keys))  # duplicates were among them
