"""Signed acknowledgement links: what they grant, and what they refuse (notifications.md)."""

from __future__ import annotations

import pytest

from bsc_rules.alerts.acklink import VALID_FOR, AckClaim, AckLinkError, ack_url, sign, verify

SECRET = b"office-secret"
NOW = 1_490_000_000_000_000
CLAIM = AckClaim("datong", "case:BP1.1:BS1060315001", "overdue", NOW - 1, NOW + VALID_FOR)
OTHER = AckClaim("datong", "kpi:2017:AP2.1", "breached", 0, NOW + VALID_FOR)


def test_a_link_round_trips_to_its_claim() -> None:
    """The token verifies to exactly what was signed, until it expires."""
    token = sign(CLAIM, SECRET)
    assert verify(token, SECRET, NOW) == CLAIM
    assert verify(token, SECRET, CLAIM.expires - 1) == CLAIM
    assert ack_url("https://kpi.dthr.example/", CLAIM, SECRET) == (
        f"https://kpi.dthr.example/ack/{token}"
    )


def _other_payload(token: str, claim: AckClaim) -> str:
    """``token``'s signature under the payload of another claim."""
    return sign(claim, b"x").split(".")[0] + "." + token.split(".")[1]


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        pytest.param(lambda t: t, "expired", id="expired"),
        pytest.param(lambda t: _other_payload(t, OTHER), "forged", id="other-alert"),
        pytest.param(lambda t: t[:-2] + ("AA" if t[-2:] != "AA" else "BB"), "forged", id="altered"),
        pytest.param(lambda t: "nonsense", "malformed", id="malformed"),
        pytest.param(lambda t: t.split(".")[0], "malformed", id="no-signature"),
    ],
)
def test_refused_links_grant_nothing(make: object, reason: str) -> None:
    """Another alert under a valid signature, an altered signature, garbage or an expired
    link are refused, each with its reason."""
    token = make(sign(CLAIM, SECRET))  # type: ignore[operator]
    when = CLAIM.expires if reason == "expired" else NOW
    with pytest.raises(AckLinkError) as caught:
        verify(token, SECRET, when)
    assert caught.value.reason == reason


def test_another_secret_is_a_forgery() -> None:
    """A link signed with another office's (or an old) secret is refused."""
    with pytest.raises(AckLinkError, match="not issued"):
        verify(sign(CLAIM, b"another"), SECRET, NOW)
    with pytest.raises(AckLinkError):
        verify(sign(CLAIM, SECRET), b"", NOW)
