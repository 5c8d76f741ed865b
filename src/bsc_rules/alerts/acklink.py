"""Signed acknowledgement links (notifications.md, "Acknowledging").

A link grants one thing: acknowledging one alert of one office in one state, the state
that began at ``since``, until ``expires`` (the sending time + 14 days). It is an
HMAC-SHA256 signature over those fields with the secret ``BSC_RULES_ACK_SECRET``, so it
needs no table; a forged, altered or expired link is refused, and once the state ended or
was acknowledged the HTTP door says so instead of acting. The token is URL-safe:
``<payload>.<signature>``, both base64url without padding; the payload is the compact JSON
of the claim, so a page can show what a link is about before checking anything else.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import asdict, dataclass

from bsc_rules.calendar import US_PER_DAY
from bsc_rules.errors import BscRulesError

VALID_FOR = 14 * US_PER_DAY


class AckLinkError(BscRulesError):
    """A link that grants nothing; ``reason`` is ``malformed``, ``forged`` or ``expired``."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class AckClaim:
    """What a link may do: acknowledge ``key`` of ``office`` in ``state`` begun at ``since``."""

    office: str
    key: str
    state: str
    since: int
    expires: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(payload: str, secret: bytes) -> str:
    return _b64(hmac.new(secret, payload.encode("ascii"), hashlib.sha256).digest())


def sign(claim: AckClaim, secret: bytes) -> str:
    """The token of ``claim``."""
    if not secret:
        raise AckLinkError("forged", "no secret to sign acknowledgement links with")
    body = json.dumps(asdict(claim), ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    payload = _b64(body.encode("utf-8"))
    return f"{payload}.{_mac(payload, secret)}"


def claim_of(token: str) -> AckClaim:
    """What a token says, unchecked (for showing a refused link's alert)."""
    try:
        payload, _ = token.split(".", 1)
        data = json.loads(_unb64(payload))
        return AckClaim(
            str(data["office"]), str(data["key"]), str(data["state"]),
            int(data["since"]), int(data["expires"]),
        )  # fmt: skip
    except (ValueError, KeyError, TypeError) as exc:
        raise AckLinkError("malformed", "this acknowledgement link is damaged") from exc


def verify(token: str, secret: bytes, now: int) -> AckClaim:
    """The claim of a genuine, unexpired token; :class:`AckLinkError` otherwise (the
    signature is compared in constant time, before the expiry is looked at)."""
    claim = claim_of(token)
    payload, signature = token.split(".", 1)
    if not secret or not hmac.compare_digest(_mac(payload, secret), signature):
        raise AckLinkError("forged", "this acknowledgement link was not issued by bsc_rules")
    if now >= claim.expires:
        raise AckLinkError("expired", "this acknowledgement link has expired (14 days)")
    return claim


def ack_url(public_url: str, claim: AckClaim, secret: bytes) -> str:
    """The link a mail shows: ``<public_url>/ack/<token>``."""
    return f"{public_url.rstrip('/')}/ack/{sign(claim, secret)}"
