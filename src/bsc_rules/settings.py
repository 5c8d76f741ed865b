"""Process settings: ``bsc-rules.toml``, overridable by ``BSC_RULES_*`` environment variables.

Nested keys use a double underscore in the environment (``BSC_RULES_SMTP__HOST``). The
SMTP password is read only from the environment (``BSC_RULES_SMTP_PASSWORD``); a
password in the file is refused, so no secret is ever committed with the settings.

These are the process's values (database, SMTP, sender, rules folder, templates, tick,
matcher). Per-office values — recipients, alert intervals, hours, the digest day —
live in the office file (:mod:`bsc_rules.rules.office`); one given here is an error
that names its place there (service.md, "Where values live").
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from bsc_rules.errors import Problem, SettingsError, UsageError

SETTINGS_FILE = Path("bsc-rules.toml")
Address = Annotated[str, Field(pattern=r"^[^@\s<>]+@[^@\s<>]+$")]
ENV_PREFIX = "BSC_RULES_"
# Per-office values: they live in the office file (service.md, "Where values live").
OFFICE_KEYS = ("office", "recipients", "alerts", "lists", "digest", "deadlines", "closures")


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SmtpSettings(_Part):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 25
    security: Literal["none", "starttls", "tls"] = "none"
    username: str | None = None
    timeout_seconds: Annotated[float, Field(gt=0, le=300)] = 10.0


class Settings(BaseSettings):
    """Everything the process is set with; the defaults are the shipped example's."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True
    )

    database: Path = Path("out/bsc-rules.db")
    rules: Path | None = None
    templates: Path | None = None
    sender: Address = "bsc-rules@datong.example.org"
    smtp: SmtpSettings = SmtpSettings()
    smtp_password: SecretStr | None = None
    tick_minutes: Annotated[int, Field(ge=1, le=1440)] = 60
    matcher: Literal["auto", "durable", "python"] = "auto"
    # The office's public address where `bsc-rules serve` answers acknowledgement links;
    # mails carry a signed link per row only where it and the secret are set.
    public_url: Annotated[str, Field(pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$")] | None = None
    ack_secret: SecretStr | None = None  # BSC_RULES_ACK_SECRET only, never a file
    # Services sharing a PostgreSQL database (service.md, "Leases"): an office's lease
    # lasts `lease_ttl_seconds` past its last renewal, renewed every `lease_renew_seconds`.
    lease_ttl_seconds: Annotated[float, Field(gt=0, le=3600)] = 20.0
    lease_renew_seconds: Annotated[float, Field(gt=0, le=3600)] = 5.0

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


# Keys of the process: in the settings file or the environment, never in an office file
# (the door's tokens and limits are read by bsc_rules.http.config, from the environment).
PROCESS_KEYS = frozenset(
    (*Settings.model_fields, "tokens", "tokens_file", "read_token", "http", "ack_secret")
)

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


def _message(error: Any, path: Path, office_file: str) -> str:
    """Pydantic's message, with a did-you-mean for an unknown key and the right place for
    a per-office value."""
    loc = tuple(error["loc"])
    if error["type"] != "extra_forbidden" or not loc:
        return str(error["msg"])
    if len(loc) == 1 and str(loc[0]) in OFFICE_KEYS:
        return _office_message(str(loc[0]), office_file, path.name)
    close = difflib.get_close_matches(str(loc[-1]), _fields_at(loc[:-1]), n=1, cutoff=0.6)
    return "unknown key" + (f"; did you mean {close[0]!r}?" if close else "")


def _office_message(key: str, office_file: str, where: str) -> str:
    return f"per-office values live in the office file ({office_file}: {key}), not in {where}"


def _office_file(text: str | None, overrides: dict[str, Any]) -> str:
    """Where the office file is, as the settings say (for messages)."""
    import tomllib

    rules = overrides.get("rules") or os.environ.get(f"{ENV_PREFIX}RULES")
    if rules is None and text is not None:
        rules = tomllib.loads(text).get("rules")
    return f"{Path(str(rules or 'rules')).as_posix()}/office.yaml"


def _environment_problems(office_file: str) -> list[Problem]:
    """A problem for each ``BSC_RULES_*`` variable that sets a per-office value."""
    problems = []
    for name in sorted(os.environ):
        upper = name.upper()
        for key in OFFICE_KEYS:
            stem = f"{ENV_PREFIX}{key.upper()}"
            if upper == stem or upper.startswith(stem + "__"):
                message = _office_message(key, office_file, "the environment")
                problems.append(Problem("environment", None, None, name, message))
    return problems


def load_settings(path: Path | None = None, **overrides: Any) -> Settings:
    """Settings from ``path`` (default ``./bsc-rules.toml`` if present) and the environment.

    Raises :class:`~bsc_rules.errors.SettingsError` naming ``file:line: key`` for each
    problem (the line where the file sets the key; none when it came from the environment).
    A per-office value (:data:`OFFICE_KEYS`) in the file or the environment is a problem
    naming its place in the office file.
    """
    path = path if path is not None else SETTINGS_FILE
    if path != SETTINGS_FILE and not path.exists():
        msg = f"settings file {path} not found"
        raise UsageError(msg)
    text = _read_toml(path)
    office_file = _office_file(text, overrides)
    problems = _environment_problems(office_file)
    _current_file[0] = path
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        problems += [
            _located(path, text, tuple(e["loc"]), _message(e, path, office_file))
            for e in exc.errors(include_url=False)
        ]
    finally:
        _current_file[0] = None
    if problems:
        raise SettingsError(problems)
    return settings
