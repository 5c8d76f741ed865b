"""Who is asking: bearer tokens per office, the read token, compared in constant time.

Every configured token is compared (``hmac.compare_digest`` over SHA-256 digests, so
lengths do not show either), whatever matched first: a wrong token and a missing one take
the same path and get the same answer.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

ALL = "*"  # the read token's scope: every office


@dataclass(frozen=True, slots=True)
class Credentials:
    """The token a request presented, or why its form is wrong."""

    token: str | None
    problem: str | None = None


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated caller: an office, or every office (``ALL``) for reading only."""

    office: str

    def may_read(self, office: str) -> bool:
        return self.office in (ALL, office)


def credentials(authorization: str | None, query_token: str | None, basic: bool) -> Credentials:
    """The token of a request: ``Bearer`` (or ``Basic`` when ``basic``), or the query's.

    Both a header token and ``?access_token=`` → a problem (RFC 6750 §2: 400).
    """
    header_token = _from_header(authorization, basic) if authorization else None
    if header_token is not None and query_token is not None:
        return Credentials(None, "send the token either in Authorization or in ?access_token=")
    return Credentials(header_token if header_token is not None else query_token)


def _from_header(value: str, basic: bool) -> str | None:
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() == "bearer":
        return rest.strip()
    if basic and scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(rest.strip(), validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return ""
        return decoded.partition(":")[2]
    return ""  # an Authorization header of another scheme: a token that matches nothing


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


class TokenBook:
    """The configured tokens: office tokens (write and read their office), the read token."""

    def __init__(self, offices: dict[str, tuple[str, ...]], read_token: str | None) -> None:
        self._entries = [(_digest(t), office) for office, ts in offices.items() for t in ts]
        self._read = _digest(read_token) if read_token else None

    def office_of(self, token: str | None) -> str | None:
        """The office whose token this is, or None (every token compared each time)."""
        given = _digest(token or "")
        found: str | None = None
        for digest, office in self._entries:
            if hmac.compare_digest(given, digest) and found is None:
                found = office
        return found if token else None

    def reader(self, token: str | None) -> Caller | None:
        """Who may read with this token: its office, every office, or nobody."""
        office = self.office_of(token)
        is_read = self._read is not None and hmac.compare_digest(_digest(token or ""), self._read)
        if office is not None:
            return Caller(office)
        return Caller(ALL) if is_read and token else None
