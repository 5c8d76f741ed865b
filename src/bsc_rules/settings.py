"""Office settings: ``bsc-rules.toml``, overridable by ``BSC_RULES_*`` environment variables.

Nested keys use a double underscore in the environment (``BSC_RULES_SMTP__HOST``). The
SMTP password is read only from the environment (``BSC_RULES_SMTP_PASSWORD``); a
password in the file is refused, so no secret is ever committed with the settings.
"""

from __future__ import annotations

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
from bsc_rules.errors import Problem, RuleFileError, UsageError

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


def _refuse_file_password(path: Path | None) -> None:
    if path is None or not path.exists():
        return
    import tomllib

    try:
        data: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise RuleFileError(
            [Problem(str(path), None, None, "", f"not valid TOML: {exc}")]
        ) from None
    smtp = data.get("smtp", {})
    if "smtp_password" in data or (isinstance(smtp, dict) and "password" in smtp):
        msg = f"{path}: the SMTP password is read only from BSC_RULES_SMTP_PASSWORD, never a file"
        raise UsageError(msg)


def load_settings(path: Path | None = None, **overrides: Any) -> Settings:
    """Settings from ``path`` (default ``./bsc-rules.toml`` if present) and the environment."""
    path = path if path is not None else SETTINGS_FILE
    if path != SETTINGS_FILE and not path.exists():
        msg = f"settings file {path} not found"
        raise UsageError(msg)
    _refuse_file_password(path)
    _current_file[0] = path
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = [
            Problem(str(path), None, None, ".".join(str(p) for p in e["loc"]), e["msg"])
            for e in exc.errors(include_url=False)
        ]
        raise RuleFileError(problems) from None
    finally:
        _current_file[0] = None
