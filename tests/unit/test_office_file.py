"""The office file's own values (service.md "Where values live"): recipients, alerts, the
hours of the mail, the digest's working day; and values that belong elsewhere, named."""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

import pytest

from bsc_rules.calendar import US_PER_DAY, iso
from bsc_rules.errors import RuleFileError
from bsc_rules.officecal import OfficeCalendar
from bsc_rules.rules.office import addr_spec
from bsc_rules.rules.ruleset import default_rules_dir, load_ruleset
from bsc_rules.scheduling.schedule import digest_day, digest_instant

SHIPPED = default_rules_dir()


def folder_with(tmp_path: Path, old: str, new: str) -> Path:
    """The shipped rules copied, with ``old`` replaced by ``new`` in the office file."""
    folder = tmp_path / "rules"
    shutil.copytree(SHIPPED, folder)
    office = folder / "office.yaml"
    text = office.read_text(encoding="utf-8")
    assert old in text, old
    office.write_text(text.replace(old, new, 1), encoding="utf-8")
    return folder


def problems(folder: Path) -> list[str]:
    with pytest.raises(RuleFileError) as info:
        load_ruleset(folder)
    return [str(p).removeprefix(f"{folder}/") for p in info.value.problems]


def test_the_shipped_office_file_holds_datongs_values() -> None:
    """Each section's and the director's address, the alert values, the hours."""
    office = load_ruleset(SHIPPED).office
    assert office.recipients.of("registration") == ("戶籍登記課 <registration@datong.example.org>",)
    assert [addr_spec(m) for s in ("records", "general_affairs", "director")
            for m in office.recipients.of(s)] == [
        "records@datong.example.org",
        "general_affairs@datong.example.org",
        "director@datong.example.org",
    ]  # fmt: skip
    assert office.recipients.secretary == []
    alerts = office.alerts
    assert (alerts.warning_window_days, alerts.escalation_days, alerts.kpi_repeat_days) == (2, 3, 7)
    assert alerts.policy().escalation_days == 3
    assert alerts.policy().kpi_repeat == 7 * US_PER_DAY
    assert office.lists.hour == 8
    assert (office.digest.working_day, office.digest.hour) == (1, 8)


def test_the_secretary_receives_what_the_director_receives(tmp_path: Path) -> None:
    """秘書, where listed, is added to the director's mailboxes (and only to those)."""
    folder = folder_with(
        tmp_path,
        '  # secretary: ["秘書 <secretary@datong.example.org>"]',
        '  secretary: ["秘書 <secretary@datong.example.org>"]',
    )
    recipients = load_ruleset(folder).office.recipients
    assert recipients.of("director") == (
        "主任 <director@datong.example.org>",
        "秘書 <secretary@datong.example.org>",
    )
    assert recipients.of("records") == ("戶籍資料課 <records@datong.example.org>",)


def test_the_office_warning_window_is_alerts_warning_window_days(tmp_path: Path) -> None:
    """A KPI without its own ``warning_window_days`` takes the office file's."""
    folder = folder_with(tmp_path, "warning_window_days: 2", "warning_window_days: 4")
    rules = load_ruleset(folder)
    assert rules.warning_window_days(rules.kpis["BP1.1"]) == 4


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "alerts:\n",
            "database: out/x.db\nalerts:\n",
            "office.yaml:{line}:1: database: a process value: it lives in the settings file "
            "(bsc-rules.toml: database) or the environment (BSC_RULES_DATABASE), "
            "not in the office file",
        ),
        (
            "alerts:\n",
            "tokens: {datong: abc}\nalerts:\n",
            "office.yaml:{line}:1: tokens: a process value: it lives in the settings file "
            "(bsc-rules.toml: tokens) or the environment (BSC_RULES_TOKENS__<OFFICE>), "
            "not in the office file",
        ),
        (
            "alerts:\n",
            "parameters: {warning_window_days: 2}\nalerts:\n",
            "office.yaml:{line}:1: parameters: the office's warning window is "
            "alerts.warning_window_days",
        ),
        (
            "  working_day: 1 ",
            "  day: 1 ",
            "office.yaml:{line}:3: digest.day: the digest goes out on the Nth working day "
            "of the month: digest.working_day",
        ),
    ],
    ids=["database", "tokens", "parameters", "digest-day"],
)
def test_a_value_in_the_wrong_place_names_the_right_one(
    tmp_path: Path, old: str, new: str, expected: str
) -> None:
    """Process values and old keys are located errors that say where the value lives."""
    folder = folder_with(tmp_path, old, new)
    lines = (folder / "office.yaml").read_text(encoding="utf-8").splitlines()
    marker = new.split(":")[0].strip()
    line = next(n for n, text in enumerate(lines, 1) if text.strip().startswith(marker + ":"))
    assert problems(folder) == [expected.format(line=line)]


@pytest.mark.parametrize(
    ("old", "new", "fragment"),
    [
        (
            '["戶籍登記課 <registration@datong.example.org>"]',
            '["戶籍登記課 registration"]',
            "recipients.registration[0]: expected an address such as",
        ),
        ('  records: ["戶籍資料課 <records@datong.example.org>"]\n', "", "recipients.records"),
        ("  director: [", "  directr: [", "recipients.directr: unknown field"),
        ("working_day: 1", "working_day: 0", "digest.working_day: expected at least 1"),
        ("  hour: 8                  # the morning", "  hour: 24  # the morning", "lists.hour"),
    ],
    ids=["address", "missing-section", "misspelt", "working-day", "lists-hour"],
)
def test_bad_office_values_are_located(tmp_path: Path, old: str, new: str, fragment: str) -> None:
    """Invalid recipients and hours report the office file, its line and the field."""
    found = "\n".join(problems(folder_with(tmp_path, old, new)))
    assert found.startswith("office.yaml:"), found
    assert fragment in found, found


# ---------------------------------------------------------------- the digest's working day


@pytest.mark.parametrize(
    ("year", "month", "n", "day"),
    [
        (2017, 2, 1, "2017-02-02"),  # 春節 until Wed 02-01
        (2017, 2, 2, "2017-02-03"),
        (2017, 10, 1, "2017-10-02"),  # Oct 1 a Sunday
        (2017, 4, 1, "2017-04-05"),  # 04-01..04 weekend, 兒童節, 清明節
        (2017, 5, 1, "2017-05-01"),  # Labour Day: a working day for a government office
        (2018, 1, 1, "2018-01-02"),  # 元旦
        (2017, 6, 3, "2017-06-03"),  # Thu 1, Fri 2, Sat 3 補行上班 (for 05-29)
    ],
)
def test_the_digest_goes_on_the_nth_working_day(year: int, month: int, n: int, day: str) -> None:
    assert str(digest_day(OfficeCalendar(), year, month, n)) == day


def test_a_closure_moves_the_digest_to_the_next_working_day() -> None:
    """A typhoon day on the digest's day: the digest goes on the next working day, 08:00."""
    closed = OfficeCalendar([date(2017, 6, 1)])
    assert iso(digest_instant(2017, 5, closed, 1, 8)) == "2017-06-02T08:00:00+08:00"
    assert iso(digest_instant(2017, 5, OfficeCalendar(), 1, 9)) == "2017-06-01T09:00:00+08:00"
