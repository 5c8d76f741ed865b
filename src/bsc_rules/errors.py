"""The exception tree: every error bsc_rules raises on purpose is a ``BscRulesError``."""

from __future__ import annotations

from dataclasses import dataclass


class BscRulesError(Exception):
    """Base of every error bsc_rules raises on purpose."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One problem found in a rule or settings file, located as precisely as known."""

    path: str
    line: int | None
    col: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = self.path
        if self.line is not None:
            where += f":{self.line}"
            if self.col is not None:
                where += f":{self.col}"
        return (
            f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"
        )


class RuleFileError(BscRulesError):
    """One or more rule files are invalid; ``problems`` lists every problem found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        count = len(self.problems)
        head = f"{count} problem{'s' if count != 1 else ''} in the rule files"
        super().__init__(head + ":\n" + "\n".join(f"  {p}" for p in self.problems))


class SettingsError(BscRulesError):
    """The settings (``bsc-rules.toml`` and ``BSC_RULES_*``) are invalid; ``problems``
    lists every problem found, each located ``file:line: key: ...`` where the file says it."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        count = len(self.problems)
        head = f"{count} problem{'s' if count != 1 else ''} in the settings"
        super().__init__(head + ":\n" + "\n".join(f"  {p}" for p in self.problems))


class EventError(BscRulesError):
    """An event failed validation; see :class:`bsc_rules.events.Rejection` for the details."""


class StoreError(BscRulesError):
    """The event store cannot be opened, read or written."""


class UsageError(BscRulesError):
    """A command or API call was given arguments it cannot work with."""
