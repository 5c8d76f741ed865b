"""Office settings: ``bsc-rules.toml``, overridable by ``BSC_RULES_*`` environment variables.

Nested keys use a double underscore in the environment (``BSC_RULES_SMTP__HOST``). The
SMTP password is read only from the environment (``BSC_RULES_SMTP_PASSWORD``); a
password in the file is refused, so no secret is ever committed with the settings.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from bsc_rules.alerts.lifecycle import Policy
from bsc_rules.calendar import US_PER_DAY
from bsc_rules.errors import Problem, SettingsError, UsageError

SETTINGS_FILE = Path("bsc-rules.toml")
Address = Annotated[str, Field(pattern=r"^[^@\s<>]+@[^@\s<>]+$")]
US_PER_HOUR = US_PER_DAY // 24


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SmtpSettings(_Part):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 25
    security: Literal["none", "starttls", "tls"] = "none"
    username: str | None = None
    timeout_seconds: Annotated[float, Field(gt=0, le=300)] = 10.0


class AlertSettings(_Part):
    overdue_repeat_hours: Annotated[int, Field(ge=1)] = 24
    kpi_repeat_days: Annotated[int, Field(ge=1)] = 7
    escalation_days: Annotated[int, Field(ge=0)] = 3

    def policy(self) -> Policy:
        return Policy(
            overdue_repeat=self.overdue_repeat_hours * US_PER_HOUR,
            kpi_repeat=self.kpi_repeat_days * US_PER_DAY,
            escalation_delay=self.escalation_days * US_PER_DAY,
        )


class DigestSettings(_Part):
    day: Annotated[int, Field(ge=1, le=28)] = 1
    hour: Annotated[int, Field(ge=0, le=23)] = 8


SectionCode = Literal["registration", "records", "general_affairs", "director"]
SECTIONS: tuple[SectionCode, ...] = ("registration", "records", "general_affairs", "director")


def _default_recipients() -> dict[SectionCode, list[str]]:
    return {s: [f"{s}@datong.example.org"] for s in SECTIONS}


class Settings(BaseSettings):
    """Everything an office sets; the defaults are the shipped example's."""

    model_config = SettingsConfigDict(
        env_prefix="BSC_RULES_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    database: Path = Path("out/bsc-rules.db")
    rules: Path | None = None
    templates: Path | None = None
    sender: Address = "bsc-rules@datong.example.org"
    recipients: dict[SectionCode, list[Address]] = Field(default_factory=_default_recipients)
    smtp: SmtpSettings = SmtpSettings()
    smtp_password: SecretStr | None = None
    alerts: AlertSettings = AlertSettings()
    digest: DigestSettings = DigestSettings()
    tick_minutes: Annotated[int, Field(ge=1, le=1440)] = 60
    matcher: Literal["auto", "durable", "python"] = "auto"
    # The office's public address where `bsc-rules serve` answers acknowledgement links;
    # mails carry a signed link per row only where it and the secret are set.
    public_url: Annotated[str, Field(pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$")] | None = None
    ack_secret: SecretStr | None = None  # BSC_RULES_ACK_SECRET only, never a file

    @model_validator(mode="after")
    def _every_section(self) -> Settings:
        missing = set(SECTIONS) - set(self.recipients)
        if missing:
            msg = f"recipients: every section needs an address; missing {sorted(missing)}"
            raise ValueError(msg)
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = TomlConfigSettingsSource(settings_cls, toml_file=_toml_path())
        return (init_settings, env_settings, toml)


_current_file: list[Path | None] = [None]


def _toml_path() -> Path | None:
    path = _current_file[0]
    return path if path is not None and path.exists() else None


def _read_toml(path: Path | None) -> str | None:
    """The file's text, checked: valid TOML (else located) and without a password."""
    if path is None or not path.exists():
        return None
    import tomllib

    try:
        text = path.read_text(encoding="utf-8")
        data: dict[str, Any] = tomllib.loads(text)
    except UnicodeDecodeError as exc:
        raise SettingsError([Problem(str(path), None, None, "", f"not UTF-8: {exc}")]) from None
    except tomllib.TOMLDecodeError as exc:
        at = _TOML_AT.search(str(exc))
        line, col = (int(at["line"]), int(at["col"])) if at else (None, None)
        message = f"not valid TOML: {_TOML_AT.sub('', str(exc))}"
        raise SettingsError([Problem(str(path), line, col, "", message)]) from None
    smtp = data.get("smtp", {})
    for key, present in (
        ("smtp_password", "smtp_password" in data),
        ("smtp.password", isinstance(smtp, dict) and "password" in smtp),
    ):
        if present:
            message = "the SMTP password is read only from BSC_RULES_SMTP_PASSWORD, never a file"
            raise SettingsError([_located(path, text, (key,), message)])
    if "ack_secret" in data:
        message = "the acknowledgement secret is read only from BSC_RULES_ACK_SECRET, never a file"
        raise SettingsError([_located(path, text, ("ack_secret",), message)])
    return text


_TOML_AT = re.compile(r"\s*\(at line (?P<line>\d+), column (?P<col>\d+)\)")
_TABLE = re.compile(r"^\[\[?\s*(?P<name>[^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"^(?P<key>[A-Za-z0-9_\-.\"' ]+?)\s*=")


def _dotted(key: str) -> str:
    return ".".join(part.strip().strip("\"'") for part in key.split("."))


def key_lines(text: str) -> dict[str, int]:
    """The line of each table and key of a TOML text, by dotted path (``smtp.port``).

    ``tomllib`` keeps no positions; a settings file is simple enough to scan by line.
    """
    lines: dict[str, int] = {}
    table = ""
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if header := _TABLE.match(line):
            table = _dotted(header["name"])
            lines.setdefault(table, number)
        elif key := _KEY.match(line):
            name = _dotted(key["key"])
            lines.setdefault(f"{table}.{name}" if table else name, number)
    return lines


def _located(path: Path, text: str | None, loc: tuple[Any, ...], message: str) -> Problem:
    """A problem at the line of the longest part of ``loc`` found in the file."""
    field = ".".join(str(p) for p in loc)
    lines = key_lines(text) if text is not None else {}
    for end in range(len(loc), 0, -1):
        line = lines.get(".".join(str(p) for p in loc[:end]))
        if line is not None:
            return Problem(str(path), line, None, field, message)
    return Problem(str(path), None, None, field, message)


def _fields_at(loc: tuple[Any, ...]) -> list[str]:
    """The keys the settings model accepts under ``loc`` (empty when not a model)."""
    model: Any = Settings
    for part in loc:
        info = model.model_fields.get(str(part))
        model = info.annotation if info is not None else None
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return []
    return list(model.model_fields)


def _message(error: Any) -> str:
    """Pydantic's message, with a did-you-mean for an unknown key."""
    loc = tuple(error["loc"])
    if error["type"] != "extra_forbidden" or not loc:
        return str(error["msg"])
    close = difflib.get_close_matches(str(loc[-1]), _fields_at(loc[:-1]), n=1, cutoff=0.6)
    return "unknown key" + (f"; did you mean {close[0]!r}?" if close else "")


def load_settings(path: Path | None = None, **overrides: Any) -> Settings:
    """Settings from ``path`` (default ``./bsc-rules.toml`` if present) and the environment.

    Raises :class:`~bsc_rules.errors.SettingsError` naming ``file:line: key`` for each
    problem (the line where the file sets the key; none when it came from the environment).
    """
    path = path if path is not None else SETTINGS_FILE
    if path != SETTINGS_FILE and not path.exists():
        msg = f"settings file {path} not found"
        raise UsageError(msg)
    text = _read_toml(path)
    _current_file[0] = path
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = [
            _located(path, text, tuple(e["loc"]), _message(e))
            for e in exc.errors(include_url=False)
        ]
        raise SettingsError(problems) from None
    finally:
        _current_file[0] = None
