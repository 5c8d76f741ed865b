"""Office time (Asia/Taipei, ROC dates, deadlines) and ID masking."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest

from bsc_rules import calendar as cal
from bsc_rules.clock import FakeClock
from bsc_rules.privacy import find_ids, is_valid_id, mask_text, mask_value


def us(text: str) -> int:
    return cal.to_us(datetime.fromisoformat(text))


@pytest.mark.parametrize(
    ("opened", "due"),
    [
        ("2017-03-15T00:00:00+08:00", "2017-03-23T00:00:00+08:00"),
        ("2017-03-15T23:59:59+08:00", "2017-03-23T00:00:00+08:00"),
        ("2017-03-15T15:59:59+00:00", "2017-03-23T00:00:00+08:00"),  # 23:59:59 local
        ("2017-03-15T16:00:00+00:00", "2017-03-24T00:00:00+08:00"),  # 03-16 local
        ("2017-12-28T10:00:00+08:00", "2018-01-05T00:00:00+08:00"),
    ],
)
def test_days_after_deadline(opened: str, due: str) -> None:
    """次日起7日內: due at 00:00 of the 8th day after the local date."""
    assert cal.due_days_after(us(opened), 7) == us(due)


@pytest.mark.parametrize(
    ("opened", "due"),
    [
        ("2017-01-31T16:00:00+08:00", "2017-02-11T00:00:00+08:00"),
        ("2017-01-31T16:30:00+00:00", "2017-03-11T00:00:00+08:00"),  # 02-01 local
        ("2017-12-01T09:00:00+08:00", "2018-01-11T00:00:00+08:00"),
    ],
)
def test_next_month_deadline(opened: str, due: str) -> None:
    """每月彙整: due at 00:00 of the 11th of the following month."""
    assert cal.due_next_month(us(opened), 10) == us(due)


def test_year_bounds_and_completion() -> None:
    """A year runs from local 01-01 00:00 and is complete from 12-31 23:59:59."""
    lo, hi = cal.year_bounds(2017)
    assert cal.iso(lo) == "2017-01-01T00:00:00+08:00"
    assert cal.iso(hi) == "2018-01-01T00:00:00+08:00"
    assert cal.iso(cal.year_complete_at(2017)) == "2017-12-31T23:59:59+08:00"
    assert cal.year_of(us("2017-12-31T16:00:00+00:00")) == 2018


def test_roc_dates() -> None:
    """ROC year = Gregorian − 1911, in the body, table and compact forms."""
    day = date(2017, 3, 22)
    assert (cal.roc_date(day), cal.roc_slash(day), cal.roc_compact(day)) == (
        "106年3月22日",
        "106/03/22",
        "1060322",
    )
    assert cal.last_allowed_day(us("2017-03-23T00:00:00+08:00")) == day


@pytest.mark.parametrize(
    "text",
    ["2017-03-15T10:23:00", "2017-03-15", "15/03/2017 10:23+08:00", "2017-03-15T10:23+08:00"],
)
def test_instants_need_rfc3339_with_offset(text: str) -> None:
    """Naive, date-only and other shapes are refused with a message quoting the input."""
    with pytest.raises(ValueError, match="expected"):
        cal.parse_instant(text)


def test_fake_clock_only_moves_forward() -> None:
    """The fake clock advances when told and refuses to go back."""
    start = datetime(2017, 1, 1, tzinfo=timezone(timedelta(hours=8)))
    clock = FakeClock(start)
    assert clock.advance(timedelta(days=1)) == start + timedelta(days=1)
    with pytest.raises(ValueError, match="cannot go back"):
        clock.set(start)


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        pytest.param("A123456788", "A12345****", id="national-id-wrong-check-digit"),
        pytest.param("A323456789", "A323456789", id="no-such-second-character"),
        pytest.param("AB12345679", "AB1234****", id="old-arc-wrong-check-digit"),
        pytest.param("A900000017", "A90000****", id="new-arc-wrong-check-digit"),
        pytest.param("a123456788", "a12345****", id="lower-case"),
        pytest.param("主旨：A123456788君", "主旨：A12345****君", id="glued-to-cjk"),
        pytest.param("BS1060315001", "BS1060315001", id="case-id-untouched"),
        pytest.param("A12345678", "A12345678", id="too-short"),
        pytest.param("A1234567890", "A1234567890", id="too-long"),
        pytest.param("A323456789X", "A323456789X", id="glued-to-latin"),
        pytest.param("AE12345678", "AE12345678", id="not-an-arc-letter"),
    ],
)
def test_masking_by_shape(text: str, masked: str) -> None:
    """A string shaped like an ID is masked even when its check digit is wrong (a mistyped
    number is still a person's number); case ids and other shapes are left alone."""
    assert mask_text(text) == masked
    assert find_ids(masked) == []


@pytest.mark.parametrize(
    ("text", "valid"),
    [
        ("A123456789", True),
        ("A123456788", False),
        ("AA00000009", True),
        ("A800000014", True),
        ("A900000016", True),
        ("A323456789", False),
        ("I134567890", False),
    ],
)
def test_id_checksums(text: str, valid: bool) -> None:
    """National IDs and both resident certificate formats are checksum-validated."""
    assert is_valid_id(text) is valid


def test_masking_everywhere() -> None:
    """ID numbers are masked to the first six characters in text and nested values."""
    assert mask_text("申請人A123456789、居留證AA00000009") == "申請人A12345****、居留證AA0000****"
    assert mask_text("case BS1060315001 and A123456789") == "case BS1060315001 and A12345****"
    value = mask_value({"A123456789": ["x a123456789", 5]})
    assert value == {"A12345****": ["x a12345****", 5]}
    assert find_ids(str(value)) == []
