"""The office file: one office's description and its own values (service.md, "Where values
live").

``rules/office.yaml`` for one office (``offices/<code>.yaml`` in a multi-office
deployment: the same keys) holds what differs from office to office: ``office`` (code,
name), ``sections``, ``recipients`` (section → addresses, plus an optional ``secretary``
who receives what the director receives), ``alerts`` (``warning_window_days``,
``escalation_days``, ``kpi_repeat_days``), ``lists.hour`` (the morning mail's hour),
``digest`` (``working_day``: the Nth working day of the month; ``hour``), ``deadlines`` and
``closures``. Process values (database, SMTP, sender, tokens, secrets, …) live in the
settings file and the environment; one written here is an error naming its place
(:func:`misplaced`), as :mod:`bsc_rules.settings` does the other way round.
"""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from bsc_rules.alerts.lifecycle import Policy
from bsc_rules.calendar import US_PER_DAY
from bsc_rules.errors import Problem
from bsc_rules.rules.sourcemap import Located
from bsc_rules.settings import ENV_PREFIX, PROCESS_KEYS, SETTINGS_FILE
from bsc_rules.types import Section as SectionName

SectionCode = SectionName
SECTIONS: tuple[SectionCode, ...] = ("registration", "records", "general_affairs", "director")
DIRECTOR: SectionCode = "director"
Year = Annotated[int, Field(ge=1912, le=2200)]
Day = Annotated[date, Field(ge=date(1912, 1, 1), le=date(2200, 12, 31))]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Section(_Strict):
    name: str
    name_en: str
    duties: list[str] = []


class Named(_Strict):
    name: str
    name_en: str = ""


class OfficeInfo(_Strict):
    code: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
    name: str
    name_en: str
    city: str
    strategy_year: Year


class Closure(_Strict):
    """A whole-day closure of the office (typhoon day 停止上班): a day off."""

    date: Day
    reason: str = ""


def _closure(value: Any) -> Any:
    """A closure written as a bare date is a closure without a reason."""
    return value if isinstance(value, dict) else {"date": value}


ClosureEntry = Annotated[Closure, BeforeValidator(_closure)]


class ClosuresFile(_Strict):
    """``closures.yaml`` beside the rules: the deployment's city-wide closures."""

    closures: list[ClosureEntry] = []


# ---------------------------------------------------------------- recipients

_MAILBOX = re.compile(
    r"^(?:(?P<name>[^<>@,;\"]*?)\s*<(?P<spec>[^@\s<>,;]+@[^@\s<>,;]+)>"
    r"|(?P<bare>[^@\s<>,;]+@[^@\s<>,;]+))$"
)


def addr_spec(mailbox: str) -> str:
    """The address of a mailbox: ``戶籍登記課 <registration@x.org>`` → ``registration@x.org``."""
    found = _MAILBOX.match(mailbox.strip())
    if found is None:
        return mailbox.strip()
    return found["spec"] or found["bare"]


def _mailbox(value: str) -> str:
    value = value.strip()
    if _MAILBOX.match(value) is None:
        msg = (
            "expected an address such as 'registration@datong.example.org' or "
            "'戶籍登記課 <registration@datong.example.org>'"
        )
        raise ValueError(msg)
    return value


Mailbox = Annotated[str, AfterValidator(_mailbox)]
Mailboxes = Annotated[list[Mailbox], Field(min_length=1)]


class Recipients(_Strict):
    """Who receives each section's mail; the secretary (秘書), if listed, receives what
    the director receives."""

    registration: Mailboxes
    records: Mailboxes
    general_affairs: Mailboxes
    director: Mailboxes
    secretary: list[Mailbox] = []

    def of(self, section: str) -> tuple[str, ...]:
        """The mailboxes of ``section`` (the director's with the secretary's), once each."""
        listed: list[str] = getattr(self, section)
        if section == DIRECTOR:
            listed = [*listed, *self.secretary]
        return tuple(dict.fromkeys(listed))

    def by_section(self) -> dict[str, tuple[str, ...]]:
        """Every section's mailboxes (:meth:`of`), by section code."""
        return {section: self.of(section) for section in SECTIONS}


# ---------------------------------------------------------------- timing


class AlertValues(_Strict):
    """``alerts``: the warning window, the escalation delay, the KPI repeat interval."""

    warning_window_days: Annotated[int, Field(ge=0, le=60)] = 2
    escalation_days: Annotated[int, Field(ge=0, le=60)] = 3
    kpi_repeat_days: Annotated[int, Field(ge=1, le=366)] = 7

    def policy(self) -> Policy:
        """The alert lifecycle's policy (a case is listed each morning while it stays)."""
        return Policy(
            kpi_repeat=self.kpi_repeat_days * US_PER_DAY, escalation_days=self.escalation_days
        )


Hour = Annotated[int, Field(ge=0, le=23)]


class ListValues(_Strict):
    """``lists``: the morning mail and the director's list go out at ``hour``."""

    hour: Hour = 8


class DigestValues(_Strict):
    """``digest``: on the ``working_day``-th working day of the month, at ``hour``."""

    working_day: Annotated[int, Field(ge=1, le=10)] = 1
    hour: Hour = 8


class OfficeFile(_Strict):
    office: OfficeInfo
    mission: str
    vision: str
    core_values: list[str]
    sections: dict[SectionCode, Section]
    themes: dict[str, Named]
    perspectives: dict[Literal["C", "P", "L", "F"], Named]
    recipients: Recipients
    alerts: AlertValues = AlertValues()
    lists: ListValues = ListValues()
    digest: DigestValues = DigestValues()
    # kpis.md "Per-case deadlines": move a last allowed day off days off, or not
    deadlines: Literal["working_day_end", "calendar"] = "calendar"
    closures: list[ClosureEntry] = []

    @model_validator(mode="after")
    def _all_sections(self) -> OfficeFile:
        missing = set(SECTIONS) - set(self.sections)
        if missing:
            msg = f"sections: every section must be described; missing {sorted(missing)}"
            raise ValueError(msg)
        return self


# ---------------------------------------------------------------- values in the wrong place

# Keys that were once elsewhere in the office file, and where they are now.
_MOVED: dict[tuple[str, ...], str] = {
    ("parameters",): "the office's warning window is alerts.warning_window_days",
    ("digest", "day"): (
        "the digest goes out on the Nth working day of the month: digest.working_day"
    ),
    ("alerts", "overdue_repeat_hours"): (
        "an overdue case is listed in every morning mail; there is no repeat interval to set"
    ),
}


def _process_message(key: str) -> str:
    env = f"{ENV_PREFIX}{key.upper()}" + ("__<OFFICE>" if key == "tokens" else "")
    return (
        f"a process value: it lives in the settings file ({SETTINGS_FILE}: {key}) or the "
        f"environment ({env}), not in the office file"
    )


def misplaced(located: Located, path: Path) -> list[Problem]:
    """A problem, at its key, for every value that belongs elsewhere."""
    problems = []
    for key in located.data:
        if str(key) in PROCESS_KEYS:
            line, col = located.key_position((key,))
            problems.append(Problem(str(path), line, col, str(key), _process_message(str(key))))
    for loc, message in _MOVED.items():
        node: Any = located.data
        for part in loc:
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None:
            line, col = located.key_position(loc)
            problems.append(Problem(str(path), line, col, ".".join(loc), message))
    return problems


def without_misplaced(located: Located) -> Located:
    """``located`` without the keys :func:`misplaced` reports (so they are reported once)."""
    data = {k: v for k, v in located.data.items() if str(k) not in PROCESS_KEYS}
    data.pop("parameters", None)
    for section, key in (("digest", "day"), ("alerts", "overdue_repeat_hours")):
        if isinstance(data.get(section), dict) and key in data[section]:
            data[section] = {k: v for k, v in data[section].items() if k != key}
    return Located(data, located.values, located.keys)
