"""The CloudEvents HTTP protocol binding 1.0, as the door reads it.

Three modes: structured (``application/cloudevents+json``: the body is the event),
binary (a ``ce-specversion`` header: attributes in ``ce-*`` headers, percent-encoded, the
body is ``data`` and must be ``application/json``, which becomes ``datacontenttype``) and batched
(``application/cloudevents-batch+json``: a JSON array of structured events). Request-level
problems raise :class:`HttpProblem`; the events themselves are validated by
:mod:`bsc_rules.events` afterwards, one verdict each.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import unquote

import orjson

MAX_BODY = 4 * 1024 * 1024  # bytes a request may carry, as received
MAX_BATCH = 1000  # events a batch may carry
STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
JSON = "application/json"
Mode = Literal["structured", "binary", "batch"]


class HttpProblem(Exception):
    """A request-level failure: its status code and what was expected."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status, self.message = status, message
        self.headers = dict(headers or {})


@dataclass(frozen=True, slots=True)
class Item:
    """One event as received: its JSON text (``raw``) or its decoded value (``obj``)."""

    raw: bytes | None = None
    obj: Any = None
    binary_problem: str | None = None  # binary mode: why the body is not JSON data


def media_type(value: str | None) -> str:
    """The media type without parameters, lower-cased."""
    return (value or "").split(";", 1)[0].strip().lower()


def mode_of(headers: Mapping[str, str]) -> Mode:
    """The binding mode of a request, or 415 (an encoded body, an unknown media type)."""
    if headers.get("content-encoding", "").strip().lower() not in ("", "identity"):
        raise HttpProblem(415, "Content-Encoding: expected none (send the body uncompressed)")
    kind = media_type(headers.get("content-type"))
    if "ce-specversion" in headers:
        if kind != JSON:
            raise HttpProblem(415, f"Content-Type: binary mode expects {JSON}, got {kind!r}")
        return "binary"
    if kind == STRUCTURED:
        return "structured"
    if kind == BATCH:
        return "batch"
    expected = f"{STRUCTURED}, {BATCH}, or ce-* headers with {JSON}"
    raise HttpProblem(415, f"Content-Type: expected {expected}, got {kind!r}")


def declared_length(headers: Mapping[str, str]) -> None:
    """413 before reading when ``Content-Length`` already says too much."""
    text = headers.get("content-length")
    if text is not None and text.strip().isdigit() and int(text) > MAX_BODY:
        raise HttpProblem(413, f"body: expected at most {MAX_BODY} bytes, got {int(text)}")


async def read_limited(chunks: AsyncIterator[bytes]) -> bytes:
    """The body, read until its end or until it passes the limit (413)."""
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > MAX_BODY:
            raise HttpProblem(413, f"body: expected at most {MAX_BODY} bytes, got more")
        parts.append(chunk)
    return b"".join(parts)


def items_of(mode: Mode, headers: Mapping[str, str], body: bytes) -> list[Item]:
    """The events of a request body in the given mode (batch: 400 or 413 as a whole)."""
    if mode == "structured":
        return [Item(raw=body)]
    if mode == "binary":
        return [_binary(headers, body)]
    expected = "body: expected a JSON array of CloudEvents"
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise HttpProblem(400, f"{expected}, got invalid JSON ({exc})") from None
    if not isinstance(value, list):
        raise HttpProblem(400, f"{expected}, got {type(value).__name__}")
    if len(value) > MAX_BATCH:
        raise HttpProblem(413, f"body: expected at most {MAX_BATCH} events, got {len(value)}")
    return [Item(obj=element) for element in value]


def _binary(headers: Mapping[str, str], body: bytes) -> Item:
    obj: dict[str, Any] = {
        name[3:]: unquote(value, errors="surrogateescape")
        for name, value in headers.items()
        if name.startswith("ce-") and len(name) > 3
    }
    obj["datacontenttype"] = JSON  # the binding maps Content-Type to datacontenttype
    if not body.strip():
        return Item(obj=obj)
    try:
        obj["data"] = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return Item(obj=obj, binary_problem=f"expected JSON data in the body ({exc})")
    return Item(obj=obj)
