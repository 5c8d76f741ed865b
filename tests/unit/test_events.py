"""Tests for bsc_rules.events: every rejection path of spec/events.md and its message."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from bsc_rules.calendar import parse_instant
from bsc_rules.events import (
    EVENT_TYPES,
    MAX_INT,
    Event,
    Rejection,
    event_from_body,
    parse_line,
    parse_line_checked,
    parse_object,
)
from bsc_rules.privacy import find_ids
from bsc_rules.scorecard import Scorecard

DROP = object()  # marks an attribute to leave out

EVENT_ID = "datong-2017-000123"
SOURCE = "/taipei/datong/registration"
BASE: dict[str, Any] = {
    "specversion": "1.0",
    "id": EVENT_ID,
    "source": SOURCE,
    "type": "birth_subsidy.applied",
    "time": "2017-03-15T10:23:00+08:00",
    "subject": "BS1060315001",
    "office": "datong",
    "data": {"amount": 20000},
}
BASE_US = 1489544580_000000  # 2017-03-15T02:23:00Z

# A valid ``data`` for every type of the spec (empty for the types without data fields).
VALID_DATA: dict[str, dict[str, Any]] = {
    "registration.completed": {"kind": "birth"},
    "registration.error_found": {"cause": "staff"},
    "cross_notice.recorded": {"channel": "hris"},
    "seal_certificate.issued": {},
    "seal_certificate.error_found": {},
    "archive.scanned": {"forms": 12},
    "archive.retrieved": {"mode": "online", "scanned": True},
    "immigrant_visit.reported": {"method": "phone"},
    "birth_subsidy.applied": {"amount": 20000},
    "birth_subsidy.paid": {},
    "birth_subsidy.rejected": {"reason": "not a resident"},
    "care_case.identified": {"category": "elderly_marriage"},
    "care_case.notified": {},
    "training.attended": {"employee": "E0042", "course": "records law"},
    "survey.completed": {"mode": "paper", "pages": 3},
}
TYPES_WITH_DATA = [t for t, d in VALID_DATA.items() if d]
TYPES_WITHOUT_DATA = [t for t, d in VALID_DATA.items() if not d]
REQUIRED_FIELDS = [(t, f) for t, d in VALID_DATA.items() for f in d]

NATIONAL_ID = "A123456789"  # checksum-valid
MASKED_ID = "A12345****"


def event(type_: str | None = None, **changes: Any) -> dict[str, Any]:
    """A copy of BASE (or of a valid event of ``type_``) with ``changes``; DROP removes a key."""
    obj: dict[str, Any] = json.loads(json.dumps(BASE))
    if type_ is not None:
        obj["type"] = type_
        obj["data"] = json.loads(json.dumps(VALID_DATA[type_]))
    for key, value in changes.items():
        if value is DROP:
            obj.pop(key, None)
        else:
            obj[key] = value
    return obj


def encode(obj: Any) -> bytes:
    """One JSON Lines line."""
    return json.dumps(obj, ensure_ascii=False).encode()


def reject(obj: Any, line: int | None = 7) -> Rejection:
    """Parse ``obj`` (a JSON value, or raw bytes/str) and insist it is rejected."""
    raw = obj if isinstance(obj, bytes | str) else encode(obj)
    result = parse_line(raw, line)
    assert isinstance(result, Rejection), f"expected a rejection, got {result!r}"
    return result


def accept(obj: Any) -> Event:
    """Parse ``obj`` and insist it is accepted."""
    raw = obj if isinstance(obj, bytes | str) else encode(obj)
    result = parse_line(raw, 1)
    assert isinstance(result, Event), f"expected an event, got {result}"
    return result


def assert_says(rejection: Rejection, field: str, *fragments: str) -> None:
    """The rejection names ``field`` and every fragment (what was expected, what was got)."""
    assert rejection.field == field, str(rejection)
    for fragment in fragments:
        assert fragment in rejection.message, f"{fragment!r} not in {rejection.message!r}"
        assert fragment in str(rejection), f"{fragment!r} not in {str(rejection)!r}"
    assert f"{field}: " in str(rejection)


@pytest.fixture
def card() -> Scorecard:
    return Scorecard(matcher="python")


# ---------------------------------------------------------------- not JSON, not an object


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"not json", id="garbage"),
        pytest.param(b'{"specversion": "1.0", "id": "x",', id="truncated-object"),
        pytest.param(b"{'id': 'x'}", id="single-quotes"),
        pytest.param(b'{"id": "x"} trailing', id="trailing-garbage"),
        pytest.param("{不是 JSON}", id="str-input"),
    ],
)
def test_not_json_is_rejected_as_not_valid_json(raw: bytes | str) -> None:
    """A line that is not JSON is rejected with 'not valid JSON', no field, no id, raw kept."""
    rejection = reject(raw, line=3)
    assert rejection.message.startswith("not valid JSON"), rejection.message
    assert rejection.field == ""
    assert rejection.event_id is None
    assert rejection.line == 3
    assert str(rejection).startswith("line 3, event without id: not valid JSON")
    expected_raw = raw.encode() if isinstance(raw, str) else raw
    assert rejection.raw == expected_raw


def test_not_json_message_names_only_the_file_line() -> None:
    """A not-JSON rejection names the file's line number only, not the decoder's own 'line 1'."""
    text = str(reject(b"not json", line=3))
    assert re.findall(r"\bline \d+", text) == ["line 3"], text


@pytest.mark.parametrize(
    "literal",
    [
        pytest.param("NaN", id="nan"),
        pytest.param("Infinity", id="infinity"),
        pytest.param("-Infinity", id="minus-infinity"),
    ],
)
def test_non_json_number_literals_are_rejected(literal: str) -> None:
    """NaN/Infinity are not JSON (RFC 8259): rejected even in an extra data key, never stored."""
    raw = encode(event()).replace(
        b'"amount": 20000}', f'"amount": 20000, "x": {literal}}}'.encode()
    )
    assert literal.encode() in raw
    rejection = reject(raw)
    assert rejection.message.startswith("not valid JSON"), rejection.message


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"\xff\xfe{}", id="bom-like-bytes"),
        pytest.param(b'{"id": "\xff"}', id="bad-byte-in-string"),
        pytest.param(
            encode(event(subject="BS1")).replace(b"BS1", b"BS\xc3\x28"), id="bad-sequence-in-event"
        ),
        pytest.param(b"\xe6\x88", id="truncated-sequence"),
    ],
)
def test_invalid_utf8_bytes_are_rejected_as_not_utf8(raw: bytes) -> None:
    """Bytes that are not UTF-8 are rejected with 'not valid UTF-8 text' and kept as they came."""
    rejection = reject(raw, line=4)
    assert rejection.message == "not valid UTF-8 text"
    assert rejection.field == ""
    assert str(rejection) == "line 4, event without id: not valid UTF-8 text"
    assert rejection.raw == raw


def test_invalid_utf8_read_as_surrogateescape_text_is_rejected_as_not_utf8() -> None:
    """Text holding undecodable (surrogateescape) bytes is reported as not UTF-8, not bad JSON."""
    raw = b'{"id": "\xff"}'
    rejection = reject(raw.decode("utf-8", "surrogateescape"), line=4)
    assert rejection.message == "not valid UTF-8 text", rejection.message
    assert rejection.raw == raw


@pytest.mark.parametrize(
    ("value", "got"),
    [
        pytest.param([], "[] (array)", id="empty-array"),
        pytest.param([BASE], "(array)", id="array-of-event"),
        pytest.param("event", "'event' (string)", id="string"),
        pytest.param(42, "42 (integer)", id="integer"),
        pytest.param(4.5, "4.5 (number)", id="float"),
        pytest.param(True, "True (boolean)", id="true"),
        pytest.param(None, "None (null)", id="null"),
    ],
)
def test_json_value_that_is_not_an_object_is_rejected(value: Any, got: str) -> None:
    """A JSON array/string/number/literal is rejected: 'expected a JSON object, got <what>'."""
    rejection = reject(encode(value), line=2)
    assert rejection.message.startswith("expected a JSON object, got "), rejection.message
    assert got in rejection.message
    assert rejection.field == ""
    assert str(rejection).startswith("line 2, event without id: expected a JSON object")


def test_parse_object_rejects_a_non_object_too() -> None:
    """parse_object (already decoded input) rejects a list the same way as parse_line."""
    rejection = parse_object([1, 2], line=5)
    assert isinstance(rejection, Rejection)
    assert rejection.message == "expected a JSON object, got [1, 2] (array)"
    assert rejection.line == 5


def test_empty_object_is_rejected_naming_the_missing_type() -> None:
    """{} is rejected on field 'type' as a missing required attribute, without an id."""
    rejection = reject({}, line=9)
    assert_says(rejection, "type", "missing")
    assert rejection.event_id is None
    assert str(rejection).startswith("line 9, event without id: type: ")


# ---------------------------------------------------------------- envelope attributes

ENVELOPE_CASES = [
    pytest.param({"specversion": DROP}, "specversion", ["missing"], id="specversion-missing"),
    pytest.param(
        {"specversion": "0.3"},
        "specversion",
        ["expected '1.0'", "got '0.3' (string)"],
        id="specversion-0.3",
    ),
    pytest.param(
        {"specversion": 1.0},
        "specversion",
        ["expected '1.0'", "got 1.0 (number)"],
        id="specversion-number",
    ),
    pytest.param({"id": DROP}, "id", ["missing"], id="id-missing"),
    pytest.param(
        {"id": ""}, "id", ["expected a non-empty string", "got '' (string)"], id="id-empty"
    ),
    pytest.param({"id": 123}, "id", ["expected a string", "got 123 (integer)"], id="id-integer"),
    pytest.param({"id": None}, "id", ["expected a string", "got None (null)"], id="id-null"),
    pytest.param({"source": DROP}, "source", ["missing"], id="source-missing"),
    pytest.param(
        {"source": ""},
        "source",
        ["expected a non-empty string", "got '' (string)"],
        id="source-empty",
    ),
    pytest.param({"source": ["/x"]}, "source", ["expected a string", "(array)"], id="source-array"),
    pytest.param({"type": DROP}, "type", ["missing"], id="type-missing"),
    pytest.param({"time": DROP}, "time", ["missing"], id="time-missing"),
    pytest.param(
        {"time": "2017-03-15T10:23:00"},
        "time",
        ["explicit offset", "got '2017-03-15T10:23:00'"],
        id="time-without-offset",
    ),
    pytest.param(
        {"time": "2017-03-15T10:23:00.250"},
        "time",
        ["explicit offset", "got '2017-03-15T10:23:00.250'"],
        id="time-fraction-without-offset",
    ),
    pytest.param(
        {"time": "2017-03-15"}, "time", ["RFC 3339", "got '2017-03-15'"], id="time-date-only"
    ),
    pytest.param(
        {"time": 1489544580},
        "time",
        ["expected a string", "got 1489544580 (integer)"],
        id="time-number",
    ),
    pytest.param({"time": "garbage"}, "time", ["RFC 3339", "got 'garbage'"], id="time-garbage"),
    pytest.param(
        {"time": "2017-03-15T10:23:00+0800"},
        "time",
        ["RFC 3339", "got '2017-03-15T10:23:00+0800'"],
        id="time-offset-without-colon",
    ),
    pytest.param(
        {"time": "2017-02-30T10:00:00+08:00"},
        "time",
        ["RFC 3339", "got '2017-02-30T10:00:00+08:00'"],
        id="time-impossible-date",
    ),
    pytest.param({"subject": DROP}, "subject", ["missing"], id="subject-missing"),
    pytest.param(
        {"subject": ""},
        "subject",
        ["expected a non-empty string", "got '' (string)"],
        id="subject-empty",
    ),
    pytest.param(
        {"subject": 7}, "subject", ["expected a string", "got 7 (integer)"], id="subject-integer"
    ),
    pytest.param(
        {"office": ""},
        "office",
        ["expected a non-empty string", "got '' (string)"],
        id="office-empty",
    ),
    pytest.param(
        {"office": 1}, "office", ["expected a string", "got 1 (integer)"], id="office-integer"
    ),
]


@pytest.mark.parametrize(("changes", "field", "fragments"), ENVELOPE_CASES)
def test_bad_envelope_attribute_is_rejected_with_field_and_expectation(
    changes: dict[str, Any], field: str, fragments: list[str]
) -> None:
    """Each bad envelope attribute is rejected naming the field, what was expected and got."""
    rejection = reject(event(**changes))
    assert_says(rejection, field, *fragments)
    has_id = isinstance(changes.get("id", EVENT_ID), str) and changes.get("id", EVENT_ID) != ""
    if has_id:
        assert rejection.event_id == EVENT_ID
        assert str(rejection) == f"line 7, event '{EVENT_ID}': {field}: {rejection.message}"
    else:
        assert rejection.event_id is None
        assert str(rejection) == f"line 7, event without id: {field}: {rejection.message}"


def test_unknown_type_is_rejected_listing_every_known_type() -> None:
    """An unknown type is rejected on 'type', listing all 15 known types and the value got."""
    rejection = reject(event(type="birth_subsidy.approved"))
    assert_says(rejection, "type", "expected one of", "got 'birth_subsidy.approved' (string)")
    assert len(EVENT_TYPES) == 15
    for known in VALID_DATA:
        assert repr(known) in rejection.message, known


def test_type_of_wrong_json_kind_is_rejected() -> None:
    """A type that is not a string is rejected on 'type' (never accepted as some type)."""
    rejection = reject(event(type=5))
    assert rejection.field == "type"


# ---------------------------------------------------------------- office


def test_other_office_is_rejected_naming_the_rule_set_office(card: Scorecard) -> None:
    """Via Scorecard, office 'wanhua' is rejected on field office naming 'datong' and 'wanhua'."""
    outcome = card.ingest(encode(event(office="wanhua")), line=5)
    assert outcome.status == "rejected"
    rejection = outcome.rejection
    assert rejection is not None
    assert_says(rejection, "office", "expected 'datong'", "got 'wanhua'")
    assert rejection.event_id == EVENT_ID
    assert str(rejection).startswith(f"line 5, event '{EVENT_ID}': office: ")
    assert b'"wanhua"' in rejection.raw


@pytest.mark.parametrize(
    "office",
    [pytest.param("datong", id="own-office"), pytest.param(DROP, id="absent")],
)
def test_own_or_absent_office_is_accepted(card: Scorecard, office: Any) -> None:
    """An event for the rule set's office, or with no office, is accepted."""
    assert card.ingest(encode(event(office=office))).status == "accepted"


# ---------------------------------------------------------------- data


@pytest.mark.parametrize("type_", TYPES_WITH_DATA)
def test_missing_data_is_rejected_when_the_type_has_fields(type_: str) -> None:
    """A type with required data fields rejects an event without 'data'."""
    rejection = reject(event(type_, data=DROP))
    assert_says(rejection, "data", "missing")
    assert rejection.event_id == EVENT_ID


@pytest.mark.parametrize(
    ("type_", "data", "got"),
    [
        pytest.param("birth_subsidy.applied", [20000], "[20000] (array)", id="array"),
        pytest.param("birth_subsidy.applied", "20000", "'20000' (string)", id="string"),
        pytest.param("birth_subsidy.applied", 20000, "20000 (integer)", id="integer"),
        pytest.param("birth_subsidy.applied", None, "None (null)", id="null"),
        pytest.param("birth_subsidy.paid", [], "[] (array)", id="array-for-type-without-fields"),
    ],
)
def test_data_that_is_not_an_object_is_rejected(type_: str, data: Any, got: str) -> None:
    """'data' that is not a JSON object is rejected: 'expected a JSON object, got <what>'."""
    rejection = reject(event(type_, data=data))
    assert_says(rejection, "data", "expected a JSON object", f"got {got}")


@pytest.mark.parametrize(
    ("type_", "name"), REQUIRED_FIELDS, ids=[f"{t}-{f}" for t, f in REQUIRED_FIELDS]
)
def test_each_required_data_field_missing_is_rejected(type_: str, name: str) -> None:
    """Every data field the spec lists for a type is required: missing, it is rejected."""
    data = dict(VALID_DATA[type_])
    del data[name]
    rejection = reject(event(type_, data=data))
    assert_says(rejection, f"data.{name}", "missing")


ENUMS = [
    (
        "registration.completed",
        "kind",
        ("birth", "death", "marriage", "divorce", "move_in", "move_out", "address_change", "other"),
    ),
    ("registration.error_found", "cause", ("staff", "citizen")),
    ("cross_notice.recorded", "channel", ("hris", "non_hris", "office", "declined")),
    ("archive.retrieved", "mode", ("online", "paper")),
    ("survey.completed", "mode", ("online", "paper")),
    ("immigrant_visit.reported", "method", ("phone", "home", "other")),
    ("care_case.identified", "category", ("elderly_marriage", "divorce_with_minor")),
]


@pytest.mark.parametrize(
    ("type_", "name", "allowed", "bad", "got"),
    [
        pytest.param(t, f, v, bad, got, id=f"{t}-{f}-{label}")
        for t, f, v in ENUMS
        for bad, got, label in (
            ("bogus", "got 'bogus' (string)", "unknown"),
            (v[0].upper(), f"got {v[0].upper()!r} (string)", "wrong-case"),
            (1, "got 1 (integer)", "integer"),
        )
    ],
)
def test_enum_field_with_wrong_value_is_rejected_listing_the_allowed_values(
    type_: str, name: str, allowed: tuple[str, ...], bad: Any, got: str
) -> None:
    """A wrong enum value is rejected on data.<field>, listing every allowed value and got."""
    data = dict(VALID_DATA[type_], **{name: bad})
    rejection = reject(event(type_, data=data))
    assert_says(rejection, f"data.{name}", "expected ", got)
    for value in allowed:
        assert repr(value) in rejection.message, value


@pytest.mark.parametrize(
    ("type_", "name", "allowed"), [pytest.param(*e, id=f"{e[0]}-{e[1]}") for e in ENUMS]
)
def test_every_enum_value_is_accepted(type_: str, name: str, allowed: tuple[str, ...]) -> None:
    """Each value the spec lists for an enum field is accepted."""
    for value in allowed:
        assert (
            accept(event(type_, data=dict(VALID_DATA[type_], **{name: value}))).data[name] == value
        )


INT_FIELDS = [
    ("birth_subsidy.applied", "amount"),
    ("archive.scanned", "forms"),
    ("survey.completed", "pages"),
]


@pytest.mark.parametrize(
    ("type_", "name", "bad", "got"),
    [
        pytest.param(t, f, bad, got, id=f"{f}-{label}")
        for t, f in INT_FIELDS
        for bad, got, label in (
            ("20000", "got '20000' (string)", "string"),
            (True, "got True (boolean)", "true"),
            (False, "got False (boolean)", "false"),
            (20000.0, "got 20000.0 (number)", "float-integral"),
            (2.5, "got 2.5 (number)", "float"),
            (None, "got None (null)", "null"),
        )
    ],
)
def test_int_field_of_wrong_json_kind_is_rejected(
    type_: str, name: str, bad: Any, got: str
) -> None:
    """An int field given as string, boolean, float or null: 'expected a JSON integer'."""
    data = dict(VALID_DATA[type_], **{name: bad})
    rejection = reject(event(type_, data=data))
    assert_says(rejection, f"data.{name}", "expected a JSON integer", got)


@pytest.mark.parametrize(
    ("type_", "name", "bad", "bound"),
    [
        pytest.param("archive.scanned", "forms", 0, ">= 1", id="forms-0"),
        pytest.param("archive.scanned", "forms", -3, ">= 1", id="forms-negative"),
        pytest.param("survey.completed", "pages", -1, ">= 0", id="pages-minus-1"),
    ],
)
def test_int_field_below_its_minimum_is_rejected(
    type_: str, name: str, bad: int, bound: str
) -> None:
    """forms must be >= 1 and pages >= 0: a smaller value is rejected naming the bound."""
    data = dict(VALID_DATA[type_], **{name: bad})
    rejection = reject(event(type_, data=data))
    assert_says(rejection, f"data.{name}", f"expected an integer {bound}", f"got {bad} (integer)")


@pytest.mark.parametrize(
    ("type_", "name", "value"),
    [
        pytest.param("archive.scanned", "forms", 1, id="forms-1"),
        pytest.param("survey.completed", "pages", 0, id="pages-0"),
        pytest.param("birth_subsidy.applied", "amount", MAX_INT, id="amount-max-exact-int"),
    ],
)
def test_int_field_at_its_bound_is_accepted(type_: str, name: str, value: int) -> None:
    """The boundary values themselves (forms 1, pages 0, 2**53-1) are accepted."""
    assert accept(event(type_, data=dict(VALID_DATA[type_], **{name: value}))).data[name] == value


@pytest.mark.parametrize(
    ("type_", "name", "value", "bound"),
    [
        *(
            pytest.param(t, f, v, f"<= {MAX_INT}", id=f"{f}-{label}")
            for t, f in INT_FIELDS
            for v, label in ((10**30, "10e30"), (2**53, "2e53"))
        ),
        pytest.param(
            "birth_subsidy.applied", "amount", -(10**30), f">= {-MAX_INT}", id="amount-minus-10e30"
        ),
        pytest.param(
            "birth_subsidy.applied", "amount", -(2**53), f">= {-MAX_INT}", id="amount-minus-2e53"
        ),
        pytest.param("archive.scanned", "forms", -(10**30), ">= 1", id="forms-minus-10e30"),
        pytest.param("survey.completed", "pages", -(10**30), ">= 0", id="pages-minus-10e30"),
    ],
)
def test_huge_integer_is_rejected_with_a_clear_bound(
    type_: str, name: str, value: int, bound: str
) -> None:
    """An integer JSON readers cannot keep exactly (|n| > 2**53-1) is rejected naming the bound."""
    data = dict(VALID_DATA[type_], **{name: value})
    rejection = reject(event(type_, data=data))
    assert_says(rejection, f"data.{name}", f"expected an integer {bound}", f"got {value} (integer)")


@pytest.mark.parametrize(
    ("bad", "got"),
    [
        pytest.param(1, "got 1 (integer)", id="one"),
        pytest.param(0, "got 0 (integer)", id="zero"),
        pytest.param("true", "got 'true' (string)", id="string-true"),
        pytest.param(None, "got None (null)", id="null"),
    ],
)
def test_bool_field_of_wrong_json_kind_is_rejected(bad: Any, got: str) -> None:
    """archive.retrieved 'scanned' must be JSON true/false: 1, 0, "true", null are rejected."""
    rejection = reject(event("archive.retrieved", data={"mode": "paper", "scanned": bad}))
    assert_says(rejection, "data.scanned", "expected true or false", got)


@pytest.mark.parametrize(
    ("type_", "name", "bad", "got"),
    [
        pytest.param("birth_subsidy.rejected", "reason", 5, "got 5 (integer)", id="reason-integer"),
        pytest.param("training.attended", "employee", None, "got None (null)", id="employee-null"),
        pytest.param(
            "training.attended", "course", ["law"], "got ['law'] (array)", id="course-array"
        ),
    ],
)
def test_string_field_of_wrong_json_kind_is_rejected(
    type_: str, name: str, bad: Any, got: str
) -> None:
    """A string data field given another JSON kind is rejected: 'expected a string'."""
    data = dict(VALID_DATA[type_], **{name: bad})
    rejection = reject(event(type_, data=data))
    assert_says(rejection, f"data.{name}", "expected a string", got)


def test_several_errors_in_one_event_are_reported_together() -> None:
    """All errors of one event (time, subject, two data fields) are reported in one rejection."""
    bad = event(
        "survey.completed",
        time="2017-03-15T10:23:00",
        subject="",
        data={"mode": "web", "pages": -1},
    )
    rejection = reject(bad)
    text = str(rejection)
    assert rejection.field == "time"  # the first error names the rejection's field
    for fragment in (
        "time: expected a date-time with an explicit offset",
        "subject: expected a non-empty string",
        "data.mode: expected 'online' or 'paper', got 'web'",
        "data.pages: expected an integer >= 0, got -1",
    ):
        assert fragment in text, f"{fragment!r} not in {text!r}"
    assert text.startswith(f"line 7, event '{EVENT_ID}': time: ")


def test_several_missing_envelope_attributes_are_reported_together() -> None:
    """Missing id and source and a bad time are all named in one rejection."""
    rejection = reject(event(id=DROP, source=DROP, time="x"))
    text = str(rejection)
    assert text.startswith("line 7, event without id: id: ")
    for fragment in (
        "id: required field is missing",
        "source: required field is missing",
        "time: ",
    ):
        assert fragment in text


# ---------------------------------------------------------------- what is accepted


def test_unknown_extra_data_keys_are_kept() -> None:
    """Unknown extra keys in data are not rejected and are kept in event.data and the body."""
    extra = {"amount": 20000, "note": "twins", "nested": {"a": [1, 2]}, "flag": None}
    parsed = accept(event(data=extra))
    assert dict(parsed.data) == extra
    assert json.loads(parsed.body)["data"] == extra


def test_unknown_extension_attributes_are_kept() -> None:
    """An unknown top-level (CloudEvents extension) attribute is accepted and kept in the body."""
    parsed = accept(event(traceparent="00-abc-01"))
    assert json.loads(parsed.body)["traceparent"] == "00-abc-01"


@pytest.mark.parametrize("type_", TYPES_WITHOUT_DATA)
@pytest.mark.parametrize(
    "data",
    [
        pytest.param(DROP, id="no-data"),
        pytest.param({}, id="empty-data"),
        pytest.param({"x": 1}, id="extra-data"),
    ],
)
def test_type_without_data_fields_accepts_missing_or_any_object_data(type_: str, data: Any) -> None:
    """A type with no data fields accepts a missing data, an empty one, or one with extra keys."""
    parsed = accept(event(type_, data=data))
    assert parsed.type == type_
    assert dict(parsed.data) == ({} if data is DROP else data)


@pytest.mark.parametrize("type_", list(VALID_DATA))
def test_every_type_with_valid_data_is_accepted(type_: str) -> None:
    """Each of the 15 types is accepted with its listed data, every field kept."""
    parsed = accept(event(type_))
    assert parsed.type == type_
    assert parsed.id == EVENT_ID
    assert parsed.source == SOURCE
    assert parsed.subject == "BS1060315001"
    assert parsed.office == "datong"
    assert dict(parsed.data) == VALID_DATA[type_]


@pytest.mark.parametrize(
    ("time", "us"),
    [
        pytest.param("2017-03-15T02:23:00Z", BASE_US, id="Z"),
        pytest.param("2017-03-15T02:23:00z", BASE_US, id="lowercase-z"),
        pytest.param("2017-03-15T02:23:00+00:00", BASE_US, id="plus-00-00"),
        pytest.param("2017-03-15T10:23:00+08:00", BASE_US, id="plus-08-00"),
        pytest.param("2017-03-14T21:23:00-05:00", BASE_US, id="minus-05-00"),
        pytest.param("2017-03-15t10:23:00+08:00", BASE_US, id="lowercase-t"),
        pytest.param("2017-03-15T10:23:00.5+08:00", BASE_US + 500_000, id="fraction-1-digit"),
        pytest.param("2017-03-15T02:23:00.123456Z", BASE_US + 123_456, id="fraction-6-digits"),
        pytest.param("2017-03-15T02:23:00.123456789Z", BASE_US + 123_456, id="fraction-9-digits"),
    ],
)
def test_valid_rfc3339_times_are_accepted(time: str, us: int) -> None:
    """RFC 3339 times with Z, an offset or fractional seconds are accepted at the right instant."""
    parsed = accept(event(time=time))
    assert parsed.time_us == us
    assert parsed.time.utcoffset() is not None


def test_time_us_is_equal_across_offsets_of_the_same_instant() -> None:
    """The same instant written with different offsets gives the same time_us."""
    times = [
        "2017-03-15T02:23:00Z",
        "2017-03-15T02:23:00+00:00",
        "2017-03-15T10:23:00+08:00",
        "2017-03-15T11:53:00+09:30",
        "2017-03-14T21:23:00-05:00",
    ]
    assert {accept(event(time=t)).time_us for t in times} == {BASE_US}


# ---------------------------------------------------------------- idempotency


def test_same_key_different_content_is_rejected_as_conflict(card: Scorecard) -> None:
    """Same (source, id) with other content is rejected on 'id' as a conflict."""
    assert card.ingest(encode(event())).status == "accepted"
    outcome = card.ingest(encode(event(data={"amount": 10000})), line=2)
    assert outcome.status == "rejected"
    rejection = outcome.rejection
    assert rejection is not None
    assert_says(rejection, "id", "conflicts")
    assert "same source and id" in rejection.message
    assert rejection.event_id == EVENT_ID
    assert rejection.source == SOURCE
    assert str(rejection).startswith(f"line 2, event '{EVENT_ID}': id: ")
    assert b"10000" in rejection.raw


def test_conflict_keeps_the_first_event(card: Scorecard) -> None:
    """After a conflict the first event stands: sending it again is still a duplicate."""
    card.ingest(encode(event()))
    card.ingest(encode(event(subject="OTHER")))
    assert card.ingest(encode(event())).status == "duplicate"


@pytest.mark.parametrize(
    "variant",
    [
        pytest.param(
            lambda o: json.dumps(dict(reversed(list(o.items())))).encode(), id="keys-reordered"
        ),
        pytest.param(
            lambda o: json.dumps(o, indent=4).replace("\n", " ").encode(), id="extra-whitespace"
        ),
        pytest.param(lambda o: json.dumps(o, separators=(",", ":")).encode(), id="compact"),
        pytest.param(
            lambda o: json.dumps({**o, "data": dict(reversed(list(o["data"].items())))}).encode(),
            id="data-keys-reordered",
        ),
        pytest.param(lambda o: json.dumps(o, ensure_ascii=True).encode(), id="unicode-escaped"),
    ],
)
def test_same_content_differently_written_is_a_duplicate(card: Scorecard, variant: Any) -> None:
    """The same content with keys reordered or other whitespace/escaping is a duplicate (no-op)."""
    original = event(
        "training.attended", subject="TR-大同-1", data={"employee": "E1", "course": "戶籍法"}
    )
    original["data"]["room"] = "3F"
    assert card.ingest(encode(original)).status == "accepted"
    outcome = card.ingest(variant(original))
    assert outcome.status == "duplicate", outcome


def test_same_id_from_another_source_is_not_a_conflict(card: Scorecard) -> None:
    """The idempotency key is (source, id): the same id from another source is a new event."""
    assert card.ingest(encode(event())).status == "accepted"
    assert (
        card.ingest(encode(event(source="/taipei/datong/other", data={"amount": 1}))).status
        == "accepted"
    )


def test_conflict_and_duplicate_within_one_file(card: Scorecard) -> None:
    """In one ingest_lines call a repeat is a duplicate and a changed repeat a conflict."""
    first = encode(event())
    reordered = json.dumps(dict(reversed(list(event().items())))).encode()
    changed = encode(event(data={"amount": 1}))
    summary = card.ingest_lines([first, reordered, changed], origin="events.jsonl")
    assert (summary.accepted, summary.duplicates) == (1, 1)
    assert [(r.line, r.field, r.event_id) for r in summary.rejections] == [(3, "id", EVENT_ID)]
    assert "conflicts" in summary.rejections[0].message


# ---------------------------------------------------------------- files: line numbers, no stop


def test_bad_lines_never_stop_the_lines_after_them(tmp_path: Path) -> None:
    """Five lines, bad ones between: good ones all accepted in order, bad ones named by line."""
    good = [encode(event(id=f"datong-2017-{n}", data={"amount": n})) for n in (1, 3, 5)]
    lines = [
        good[0],
        b"{not json",
        good[1],
        encode(event(id="datong-2017-4", data={"amount": "4"})),
        good[2],
    ]
    with Scorecard.open(tmp_path / "events.db", matcher="python") as card:
        summary = card.ingest_lines(lines, origin="events.jsonl")
        assert summary.accepted == 3
        assert summary.duplicates == 0
        assert [r.line for r in summary.rejections] == [2, 4]
        replayed = [json.loads(body)["id"] for body in card.store.replay()]
    assert replayed == ["datong-2017-1", "datong-2017-3", "datong-2017-5"]
    not_json, bad_amount = summary.rejections
    assert str(not_json).startswith("line 2, event without id: not valid JSON")
    assert bad_amount.event_id == "datong-2017-4"
    assert str(bad_amount).startswith(
        "line 4, event 'datong-2017-4': data.amount: expected a JSON integer"
    )


def test_line_numbers_count_blank_lines(card: Scorecard) -> None:
    """Blank lines are skipped but still counted, so the line number matches the file."""
    summary = card.ingest_lines([b"\n", encode(event()), b"   \n", b"[]\n"])
    assert summary.accepted == 1
    assert [r.line for r in summary.rejections] == [4]


def test_rejection_without_line_does_not_mention_a_line() -> None:
    """A rejection from a library call (no line) starts with the event, not a line number."""
    rejection = reject(event(subject=""), line=None)
    assert rejection.line is None
    assert str(rejection) == f"event '{EVENT_ID}': subject: {rejection.message}"


def test_rejections_are_kept_in_the_rejected_store(tmp_path: Path) -> None:
    """Every rejection of a file is kept in the rejected-events store with line, id, field."""
    lines = [b"nope", encode(event(subject="")), encode(event(id="ok-1"))]
    with Scorecard.open(tmp_path / "events.db", matcher="python") as card:
        card.ingest_lines(lines, origin="f.jsonl")
        assert card.store.rejected_count() == 2
        kept = card.store.rejections()  # type: ignore[attr-defined]
    assert [(origin, line, event_id, field) for origin, line, event_id, field, _ in kept] == [
        ("f.jsonl", 1, None, ""),
        ("f.jsonl", 2, EVENT_ID, "subject"),
    ]


# ---------------------------------------------------------------- personal data


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param(
            {"type": "registration.completed", "data": {"kind": NATIONAL_ID}}, id="enum-value"
        ),
        pytest.param(
            {"type": "registration.completed", "data": {"kind": NATIONAL_ID.lower()}},
            id="enum-lowercase",
        ),
        pytest.param({"time": NATIONAL_ID}, id="time"),
        pytest.param({"specversion": NATIONAL_ID}, id="specversion"),
        pytest.param({"type": NATIONAL_ID}, id="type"),
        pytest.param({"data": {"amount": NATIONAL_ID}}, id="int-field"),
        pytest.param({"id": NATIONAL_ID, "subject": ""}, id="event-id"),
        pytest.param(
            {"type": "registration.completed", "data": {"kind": f"id {NATIONAL_ID} given"}},
            id="inside-text",
        ),
        pytest.param(
            {
                "type": "registration.completed",
                "data": {"kind": "note " + "." * 41 + f" {NATIONAL_ID} tail"},
            },
            id="long-value-truncated-inside-id",
        ),
        pytest.param(
            {
                "type": "registration.completed",
                "data": {"kind": "note " + "." * 42 + f" {NATIONAL_ID} tail"},
            },
            id="long-value-truncated-inside-id-2",
        ),
    ],
)
def test_national_id_in_bad_value_is_masked_but_raw_is_kept(changes: dict[str, Any]) -> None:
    """A national ID in a bad value never shows unmasked, even partly, in str(); raw keeps it."""
    rejection = reject(event(**changes))
    text = str(rejection)
    assert find_ids(text) == [], text
    assert NATIONAL_ID[:7] not in text.upper(), text  # no more than the masked prefix A12345
    assert NATIONAL_ID.encode() in rejection.raw.upper()


def test_national_id_is_shown_masked() -> None:
    """The masked form A12345**** stands where the ID was."""
    text = str(reject(event(type="registration.completed", data={"kind": NATIONAL_ID})))
    assert f"got '{MASKED_ID}' (string)" in text


def test_national_id_in_other_office_is_masked(card: Scorecard) -> None:
    """An ID given as the office is masked in the office rejection; the raw bytes keep it."""
    rejection = card.ingest(encode(event(office=NATIONAL_ID))).rejection
    assert rejection is not None
    assert rejection.field == "office"
    assert MASKED_ID in str(rejection)
    assert find_ids(str(rejection)) == []
    assert NATIONAL_ID.encode() in rejection.raw


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(f'{{"id": "{NATIONAL_ID}", "x": '.encode(), id="not-json"),
        pytest.param(f'{{"id": "{NATIONAL_ID}", "x": "\xff"}}'.encode("latin-1"), id="not-utf8"),
    ],
)
def test_national_id_in_unreadable_line_is_not_shown_but_kept(raw: bytes) -> None:
    """An unreadable line holding an ID never shows it in str(), and keeps the raw bytes."""
    rejection = reject(raw)
    assert NATIONAL_ID not in str(rejection)
    assert rejection.raw == raw


@pytest.mark.parametrize(
    "text",
    [
        "2017-06-30T23:59:59+08:00",
        "2017-06-30t23:59:59z",
        "2017-06-30 23:59:59.123456789-03:30",
        "2017-06-30T23:59:59.9999999Z",
        "1912-01-01T00:00:00.5+14:00",
    ],
)
def test_a_stored_body_reads_back_the_instant_it_was_accepted_with(text: str) -> None:
    """Reading the log back (restart) gives the instant validation gave, to the microsecond."""
    line = json.dumps(event(time=text)).encode()
    accepted = parse_line(line)
    assert isinstance(accepted, Event), accepted
    stored = event_from_body(accepted.body)
    assert stored == accepted
    assert stored.time == parse_instant(text)


@pytest.mark.parametrize(
    "text",
    [
        "2017-06-30T23:59:59+08:00",
        "2017-06-30t23:59:59z",
        "2017-06-30 23:59:59.1234567+08:00",
        "2017-12-31T23:59:60+08:00",  # a leap second: Python has none
        "2017-13-01T00:00:00+08:00",
        "2017-02-29T00:00:00+08:00",
        "2017-06-30T24:00:00+08:00",
        "2017-06-30T23:59:59+24:00",
        "2017-06-30T23:59:59+0800",
        "2017-06-30T23:59:59",
        "\uff12\uff10\uff11\uff17-06-30T23:59:59+08:00",  # full-width digits
        "2017-06-30T23:59:5\u0669+08:00",  # an Arabic-Indic digit
        "1911-12-31T23:59:59+08:00",
        "2200-01-01T00:00:00+08:00",
        "1912-01-01T00:00:00+14:00",  # 1911 in UTC, 1912 where it was written
        "2017-06-30T23:59:59.+08:00",
        "2017-06-30T23:59:59Z ",
    ],
)
def test_fast_and_checked_paths_agree_on_times(text: str) -> None:
    """The fast path checks a time's shape in pydantic's core and reads it with Python's
    reader; it accepts exactly the times the checked path accepts, as the same instant."""
    line = json.dumps(event(), ensure_ascii=True).replace(json.dumps(BASE["time"]), f'"{text}"')
    assert f'"time": "{text}"' in line
    fast, checked = parse_line(line.encode(), 1), parse_line_checked(line.encode(), 1)
    assert fast == checked
