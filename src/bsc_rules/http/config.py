"""The door's process values, from the environment (never from the rules).

- ``BSC_RULES_TOKENS__<OFFICE>``: the office's bearer tokens, comma-separated (rotation:
  old and new both valid while senders move over);
- ``BSC_RULES_TOKENS_FILE``: a secret file of ``office=token1,token2`` lines (``#``
  comments), read at start, merged with the environment;
- ``BSC_RULES_READ_TOKEN``: reads every office (reports, status, metrics);
- ``BSC_RULES_HTTP__QUEUE``: how many requests may wait for the writer before 429;
- ``BSC_RULES_HTTP__ORIGINS``/``__RATE``: the webhook handshake's allowed origins
  (comma-separated) and per-minute rate (``*`` when unset).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from bsc_rules.errors import UsageError


class HttpLimits(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    queue: Annotated[int, Field(ge=1, le=10_000)] = 64
    origins: str = ""
    rate: Annotated[int, Field(ge=1)] | None = None


class HttpConfig(BaseSettings):
    """Tokens and limits of the door (``BSC_RULES_*`` environment variables)."""

    model_config = SettingsConfigDict(
        env_prefix="BSC_RULES_", env_nested_delimiter="__", extra="ignore", frozen=True
    )

    tokens: dict[str, SecretStr] = Field(default_factory=dict)
    tokens_file: Path | None = None
    read_token: SecretStr | None = None
    http: HttpLimits = HttpLimits()

    def office_tokens(self) -> dict[str, tuple[str, ...]]:
        """Office code (lower case) → its valid tokens, from the environment and the file."""
        found: dict[str, list[str]] = {}
        for office, secret in self.tokens.items():
            found.setdefault(office.lower(), []).extend(_split(secret.get_secret_value()))
        if self.tokens_file is not None:
            for office, tokens in _read_file(self.tokens_file):
                found.setdefault(office, []).extend(tokens)
        return {office: tuple(tokens) for office, tokens in found.items() if tokens}

    def origins(self) -> frozenset[str]:
        return frozenset(o.strip() for o in self.http.origins.split(",") if o.strip())


def _split(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _read_file(path: Path) -> list[tuple[str, list[str]]]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        msg = f"cannot read the tokens file {path}: {exc.strerror}"
        raise UsageError(msg) from None
    pairs = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        office, sep, tokens = line.partition("=")
        if not sep or not office.strip():
            msg = f"{path}:{number}: tokens: expected 'office=token1,token2'"
            raise UsageError(msg)
        pairs.append((office.strip().lower(), _split(tokens)))
    return pairs


def load_config() -> HttpConfig:
    return HttpConfig()
