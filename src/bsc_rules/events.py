"""Events: the CloudEvents envelope and each type's ``data``, validated with pydantic.

The contract is ``spec/events.md``. :func:`parse_line` turns one JSON Lines line into
either an :class:`Event` or a :class:`Rejection` that names the line, the event id, the
field and what was expected. Validation goes through a pydantic ``TypeAdapter`` over a
discriminated union of ``TypedDict``s (the fast path measured in
``reference/performance.md``); no per-event ``BaseModel`` is built.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal, NotRequired, Union

import orjson
from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
    with_config,
)
from typing_extensions import TypedDict

from bsc_rules.calendar import parse_instant, to_us
from bsc_rules.privacy import mask_text

MAX_INT = 2**53 - 1  # the largest integer every JSON reader keeps exactly


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """What one ``data`` field of an event type must hold."""

    kind: Literal["enum", "int", "bool", "str"]
    values: tuple[str, ...] = ()
    minimum: int | None = None


def _enum(*values: str) -> FieldSpec:
    return FieldSpec("enum", values)


# The event types of spec/events.md and the data fields each requires.
EVENT_TYPES: dict[str, dict[str, FieldSpec]] = {
    "registration.completed": {
        "kind": _enum(
            "birth",
            "death",
            "marriage",
            "divorce",
            "move_in",
            "move_out",
            "address_change",
            "other",
        )
    },
    "registration.error_found": {"cause": _enum("staff", "citizen")},
    "cross_notice.recorded": {"channel": _enum("hris", "non_hris", "office", "declined")},
    "seal_certificate.issued": {},
    "seal_certificate.error_found": {},
    "archive.scanned": {"forms": FieldSpec("int", minimum=1)},
    "archive.retrieved": {"mode": _enum("online", "paper"), "scanned": FieldSpec("bool")},
    "immigrant_visit.reported": {"method": _enum("phone", "home", "other")},
    "birth_subsidy.applied": {"amount": FieldSpec("int")},
    "birth_subsidy.paid": {},
    "birth_subsidy.rejected": {"reason": FieldSpec("str")},
    "care_case.identified": {"category": _enum("elderly_marriage", "divorce_with_minor")},
    "care_case.notified": {},
    "training.attended": {"employee": FieldSpec("str"), "course": FieldSpec("str")},
    "survey.completed": {"mode": _enum("online", "paper"), "pages": FieldSpec("int", minimum=0)},
}

# Events that open a case or are counted themselves (kpis.md "period events"), plus
# archive.scanned, which is counted by distinct subject too.
PERIOD_TYPES: frozenset[str] = frozenset(
    {
        "registration.completed",
        "seal_certificate.issued",
        "birth_subsidy.applied",
        "care_case.identified",
        "archive.retrieved",
        "immigrant_visit.reported",
        "training.attended",
        "survey.completed",
        "archive.scanned",
    }
)

# Follow-up type → the type of the event that opens its case.
FOLLOW_UP_OF: dict[str, str] = {
    "registration.error_found": "registration.completed",
    "cross_notice.recorded": "registration.completed",
    "seal_certificate.error_found": "seal_certificate.issued",
    "birth_subsidy.paid": "birth_subsidy.applied",
    "birth_subsidy.rejected": "birth_subsidy.applied",
    "care_case.notified": "care_case.identified",
}


@dataclass(slots=True)
class Event:
    """A valid event. ``time_us``: microseconds since the epoch; ``body``: its JSON text.

    ``body`` is the line as received (surrounding whitespace removed) or, for an event
    given as an object, its canonical JSON; two bodies of the same content may differ in
    key order and spacing (:func:`same_content` compares contents). Not frozen: a frozen
    dataclass's ``__init__`` costs five times as much, and nothing mutates an Event.
    """

    source: str
    id: str
    type: str
    time: datetime
    time_us: int
    subject: str
    office: str | None
    data: Mapping[str, Any]
    body: bytes

    @property
    def key(self) -> tuple[str, str]:
        """The idempotency key ``(source, id)``."""
        return (self.source, self.id)


@dataclass(frozen=True, slots=True)
class Rejection:
    """A bad event: where it was, which field, what was expected, and the raw input."""

    message: str
    field: str = ""
    line: int | None = None
    event_id: str | None = None
    source: str | None = None
    raw: bytes = b""

    def __str__(self) -> str:
        parts = []
        if self.line is not None:
            parts.append(f"line {self.line}")
        parts.append(f"event {self.event_id!r}" if self.event_id else "event without id")
        where = ", ".join(parts)
        field = f"{self.field}: " if self.field else ""
        return mask_text(f"{where}: {field}{self.message}")


def content_digest(body: bytes) -> bytes:
    """A digest of a body: equal digests, the same content (unequal: see same_content)."""
    return hashlib.blake2b(body, digest_size=16).digest()


def same_content(body: bytes, other: bytes) -> bool:
    """Whether two stored bodies hold the same event content (key order, spacing and
    escapes aside): what tells a duplicate from a conflict when the bytes differ."""
    if body == other:
        return True
    try:
        return canonical(_decode(body)) == canonical(_decode(other))
    except ValueError:
        return False


# ---------------------------------------------------------------- pydantic models


EARLIEST_YEAR, LATEST_YEAR = 1912, 2199  # the ROC era to a far but sane future


def _check_time(text: str) -> datetime:
    moment = parse_instant(text)
    if not EARLIEST_YEAR <= moment.year <= LATEST_YEAR:
        msg = f"expected a time between {EARLIEST_YEAR}-01-01 and {LATEST_YEAR}-12-31, got {text!r}"
        raise ValueError(msg)
    return moment


NonEmpty = Annotated[StrictStr, Field(min_length=1)]
Instant = Annotated[StrictStr, AfterValidator(_check_time)]
# The same shape checked in pydantic's Rust core (ASCII digits only, the offset required),
# for the fast path of parse_line, which then reads the time itself (_fast_instant).
_DATE_TIME = r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?"
RFC3339_SHAPE = rf"^{_DATE_TIME}([Zz]|[+-][0-9]{{2}}:[0-9]{{2}})$"
InstantShape = Annotated[StrictStr, Field(pattern=RFC3339_SHAPE)]
_OPEN = ConfigDict(extra="allow")


def _field_type(spec: FieldSpec) -> Any:
    if spec.kind == "enum":
        return Literal[spec.values]
    if spec.kind == "int":
        low = -MAX_INT if spec.minimum is None else spec.minimum
        return Annotated[StrictInt, Field(ge=low, le=MAX_INT)]
    if spec.kind == "bool":
        return StrictBool
    return StrictStr


def _data_model(type_: str, fields: Mapping[str, FieldSpec]) -> Any:
    name = "".join(part.title() for part in type_.replace(".", "_").split("_")) + "Data"
    model = TypedDict(name, {k: _field_type(v) for k, v in fields.items()})  # type: ignore[misc]
    return with_config(_OPEN)(model)


def _event_model(type_: str, fields: Mapping[str, FieldSpec], instant: Any = Instant) -> Any:
    data = _data_model(type_, fields)
    name = "".join(part.title() for part in type_.replace(".", "_").split("_")) + "Event"
    annotations: dict[str, Any] = {
        "specversion": Literal["1.0"],
        "id": NonEmpty,
        "source": NonEmpty,
        "type": Literal[type_],
        "time": instant,
        "subject": NonEmpty,
        "office": NotRequired[NonEmpty],
        "data": data if fields else NotRequired[data],
    }
    return with_config(_OPEN)(TypedDict(name, annotations))  # type: ignore[operator]


def _adapter(instant: Any) -> TypeAdapter[Any]:
    models = tuple(_event_model(t, f, instant) for t, f in EVENT_TYPES.items())
    return TypeAdapter(
        Annotated[Union[models], Field(discriminator="type")]  # type: ignore[arg-type]  # noqa: UP007
    )


_ADAPTER = _adapter(Instant)  # the contract, with its messages
_FAST_ADAPTER = _adapter(InstantShape)  # no Python call per event; time left as text


# ---------------------------------------------------------------- error messages


def _describe(value: Any) -> str:
    text = mask_text(repr(value))
    if len(text) > 60:
        text = text[:57] + "..."
    kind = {
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "string",
        list: "array",
        dict: "object",
        type(None): "null",
    }.get(type(value), type(value).__name__)
    return f"{text} ({kind})"


_EXPECTED = {
    "int_type": "expected a JSON integer",
    "bool_type": "expected true or false",
    "string_type": "expected a string",
    "string_too_short": "expected a non-empty string",
    "typed_dict_type": "expected a JSON object",
    "dict_type": "expected a JSON object",
}


def _error_text(error: Mapping[str, Any]) -> tuple[str, str]:
    loc = [str(p) for p in error["loc"]]
    kind = error["type"]
    if kind == "union_tag_invalid":
        expected = ", ".join(repr(t) for t in EVENT_TYPES)
        return "type", f"expected one of {expected}, got {_describe(error['ctx']['tag'])}"
    if kind == "union_tag_not_found":
        return "type", "required attribute is missing"
    field = ".".join(loc[1:])
    if kind == "missing":
        return field, "required field is missing"
    got = _describe(error.get("input"))
    if kind == "literal_error":
        return field, f"expected {error['ctx']['expected']}, got {got}"
    if kind == "greater_than_equal":
        return field, f"expected an integer >= {error['ctx']['ge']}, got {got}"
    if kind == "less_than_equal":
        return field, f"expected an integer <= {error['ctx']['le']}, got {got}"
    if kind == "value_error":
        return field, str(error["ctx"]["error"])
    expected = _EXPECTED.get(kind, str(error.get("msg", kind)).lower())
    return field, f"{expected}, got {got}"


# ---------------------------------------------------------------- parsing

MAX_DEPTH = 32  # nesting an event needs is 3; deeper input is refused, not walked


def _no_constant(name: str) -> Any:
    msg = f"{name} is not a JSON number"
    raise ValueError(msg)


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        msg = f"the number {text[:40]} is out of range"
        raise ValueError(msg)
    return value


def _has_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        return any("\ud800" <= c <= "\udfff" for c in value)
    if isinstance(value, dict):
        return any(_has_surrogate(k) or _has_surrogate(v) for k, v in value.items())
    return isinstance(value, list) and any(_has_surrogate(v) for v in value)


def _culprit(obj: Any, bad: Callable[[Any, int], bool], levels: int = 2) -> str:
    """The dotted path (at most ``levels`` deep) of the first member that is ``bad``."""
    path: list[str] = []
    node = obj
    while len(path) < levels and isinstance(node, dict):
        key = next((k for k, v in node.items() if bad(v, len(path) + 1)), None)
        if key is None:
            break
        path.append(str(key))
        node = node[key]
    return ".".join(path)


def _depth(value: Any, limit: int = MAX_DEPTH) -> int:
    """How deeply ``value`` nests (stops counting past ``limit``)."""
    if limit < 0 or not isinstance(value, dict | list):
        return 0
    items = value.values() if isinstance(value, dict) else value
    return 1 + max((_depth(v, limit - 1) for v in items), default=0)


def _has_float(value: Any) -> bool:
    """Whether a decoded JSON value holds a float anywhere (an iterative walk)."""
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is float:
            return True
        if kind is dict:
            stack.extend(item.values())
        elif kind is list:
            stack.extend(item)
    return False


def _has_float_member(obj: dict[str, Any]) -> bool:
    """:func:`_has_float` of an object, cheaper for the flat members of an event."""
    for value in obj.values():
        kind = type(value)
        if kind is float or ((kind is dict or kind is list) and _has_float(value)):
            return True
    return False


def _decode(raw: bytes) -> Any:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    else:
        # orjson reads integers past 64 bits as floats and numbers past the float range
        # as infinities: only a value holding a float can be such a misreading.
        if not (_has_float_member(value) if type(value) is dict else _has_float(value)):
            return value
    try:  # the stdlib keeps integers past 64 bits and (with _finite) refuses 1e400
        return json.loads(raw, parse_constant=_no_constant, parse_float=_finite)
    except json.JSONDecodeError as exc:
        msg = f"{exc.msg.lower()} at column {exc.colno}"
        raise ValueError(msg) from None
    except RecursionError:
        raise ValueError("nested too deeply") from None
    except ValueError as exc:
        text = str(exc)
        if "integer string conversion" in text:
            text = "a number with more than 4300 digits"
        raise ValueError(text) from None


def canonical(obj: Mapping[str, Any]) -> bytes:
    """Canonical JSON of an event object: sorted keys, compact, UTF-8."""
    try:
        return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # integers past 64 bits
        text = json.dumps(
            obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
        return text.encode()


def _ident(obj: Any, name: str) -> str | None:
    value = obj.get(name) if isinstance(obj, dict) else None
    return value if isinstance(value, str) and value else None


_ENVELOPE = frozenset(("specversion", "id", "source", "type", "time", "subject", "office", "data"))


def _plain(valid: dict[str, Any]) -> bool:
    """Whether a validated event holds no float (pydantic's JSON reader accepts ``NaN``,
    ``Infinity`` and ``1e400``, which the contract refuses). The envelope's fields are
    typed, so without extras only ``data`` is looked at."""
    if not valid.keys() <= _ENVELOPE:
        return not _has_float_member(valid)
    data = valid.get("data")
    return data is None or not _has_float_member(data)


def parse_line(raw: bytes | str, line: int | None = None) -> Event | Rejection:
    """Validate one JSON Lines line (or one JSON text) into an Event or a Rejection.

    The usual line is decoded and validated in one call of pydantic's JSON reader and
    stored as received (surrounding whitespace removed). A line that this fast path does
    not accept as it stands (invalid, deeply nested or holding floats: rare) takes
    :func:`parse_line_checked`, which says exactly what is wrong; both accept the same
    lines (``tests/faults/test_hostile_input.py`` checks it on hostile input).
    """
    data = raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else raw
    if data.count(b"{") + data.count(b"[") <= MAX_DEPTH:  # deeper: see parse_line_checked
        try:
            valid = _FAST_ADAPTER.validate_json(data)
        except ValidationError:
            pass
        else:
            time = _fast_instant(valid["time"])
            if time is not None and _plain(valid):
                return _event(valid, time, data.strip())
    return parse_line_checked(data, line)


def _fast_instant(text: str) -> datetime | None:
    """The instant of a time of RFC 3339 shape, as :func:`_check_time` reads it, or None
    when that would refuse it (the checked path then says why)."""
    try:  # Python's reader takes the shape as it stands, but for "t"/"z" and leap seconds
        moment = datetime.fromisoformat(text)
    except ValueError:
        try:
            moment = parse_instant(text)
        except ValueError:
            return None
    return moment if EARLIEST_YEAR <= moment.year <= LATEST_YEAR else None


def parse_line_checked(raw: bytes | str, line: int | None = None) -> Event | Rejection:
    """:func:`parse_line` without its fast path: decode, check, then validate."""
    data = raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else raw
    try:
        obj = _decode(data)
    except ValueError as exc:
        message = f"not valid JSON: {exc}" if _is_utf8(data) else "not valid UTF-8 text"
        return Rejection(message, line=line, raw=data)
    if data.count(b"{") + data.count(b"[") > MAX_DEPTH and _depth(obj) > MAX_DEPTH:
        field = _culprit(obj, lambda v, level: _depth(v) > MAX_DEPTH - level)
        message = f"expected at most {MAX_DEPTH} levels of nesting, got deeper"
        return Rejection(message, field=field, line=line, event_id=_ident(obj, "id"), raw=data)
    return parse_object(obj, line=line, raw=data)


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def parse_object(obj: Any, line: int | None = None, raw: bytes | None = None) -> Event | Rejection:
    """Validate an already decoded JSON value into an Event or a Rejection.

    ``raw``: the line ``obj`` was decoded from, kept as the event's body; without it the
    body is the canonical JSON of ``obj``.
    """
    event_id, source = _ident(obj, "id"), _ident(obj, "source")
    from_line = raw is not None
    if raw is None:
        raw = canonical(obj) if isinstance(obj, dict) else repr(obj).encode()
    if not isinstance(obj, dict):
        got = _describe(obj)
        return Rejection(f"expected a JSON object, got {got}", line=line, raw=raw)
    try:
        valid = _ADAPTER.validate_python(obj)
    except ValidationError as exc:
        texts = [_error_text(e) for e in exc.errors(include_url=False)]
        field = texts[0][0]
        message = "; ".join(f"{f}: {m}" if i else m for i, (f, m) in enumerate(texts))
        return Rejection(message, field=field, line=line, event_id=event_id, source=source, raw=raw)
    try:
        body = orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # orjson refuses lone surrogates and integers past 64 bits
        if _has_surrogate(obj):
            field = _culprit(obj, lambda v, _level: _has_surrogate(v))
            message = "expected Unicode text, got a lone UTF-16 surrogate (\\ud800-\\udfff)"
            return Rejection(
                message, field=field, line=line, event_id=event_id, source=source, raw=raw
            )
        body = canonical(obj)
    if from_line:  # stored as received, as the fast path of parse_line stores it
        body = raw.strip()
    return _event(valid, valid["time"], body)


def _event(obj: Mapping[str, Any], time: datetime, body: bytes) -> Event:
    return Event(
        source=obj["source"],
        id=obj["id"],
        type=obj["type"],
        time=time,
        time_us=to_us(time),
        subject=obj["subject"],
        office=obj.get("office"),
        data=obj.get("data", {}),
        body=body,
    )


def event_from_body(body: bytes) -> Event:
    """Rebuild an Event from a stored body (validated when it was stored)."""
    obj = _decode(body)
    time = _fast_instant(obj["time"])  # validated when stored: never None
    if time is None:
        msg = f"a stored event has an invalid time: {obj['time']!r}"
        raise ValueError(msg)
    return _event(obj, time, body)
