"""Load YAML files safely, remember where every value came from, explain validation errors.

:func:`load_yaml` composes a file with PyYAML's ``SafeLoader`` and builds the plain Python
value itself from the node tree, so no tag can run code: only the standard YAML tags for
mappings, sequences, strings, numbers, booleans and null are accepted, and aliases
(``*name``) are refused outright (no alias expansion bombs). Every value and every key
keeps its 1-based ``(line, col)``. Duplicate keys are problems, not silently overwritten.

Scalars follow YAML 1.1 as PyYAML resolves them, with two YAML 1.2 corrections that matter
for hand-written files: only ``true``/``false`` (any case) are booleans (``yes``, ``no``,
``on``, ``off`` stay strings; pydantic still reads them into ``bool`` fields), and
``12:30`` stays the string ``'12:30'`` instead of the base-60 number 750. Dates stay
strings (pydantic parses them into ``date`` fields). Integer keys such as ``2017`` stay
``int``; a key written as ``true``/``null`` stays its text.

:func:`validate` turns a pydantic ``ValidationError`` into one located, plain-worded
:class:`~bsc_rules.errors.Problem` per error, e.g.::

    rules.yaml:4:3: kpis[0].ownr: unknown field; did you mean 'owner'?
    rules.yaml:7:12: targets.2017: expected at least 0, got -1

:func:`load_and_validate` and :func:`load_many` let a caller gather the problems of many
files and raise a single :class:`~bsc_rules.errors.RuleFileError`.
"""

from __future__ import annotations

import difflib
import enum
import types
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from bsc_rules.errors import Problem, RuleFileError

M = TypeVar("M", bound=BaseModel)
Key = str | int | float
Loc = tuple[Key, ...]
Position = tuple[int, int]

_TAG = "tag:yaml.org,2002:"
_MAP, _SEQ = _TAG + "map", _TAG + "seq"
_SCALAR_TAGS = {_TAG + name for name in ("str", "null", "bool", "int", "float", "timestamp")}
_SCALAR_TAGS.add(_TAG + "value")  # the plain scalar "=" resolves to this; it stays a string
_ABSENT = object()
_MAX_REPR = 60
_SAFE = yaml.constructor.SafeConstructor()
_KINDS: tuple[tuple[type, str], ...] = (
    (str, "string"),
    (int, "integer"),
    (float, "number"),
    (list, "list"),
    (dict, "mapping"),
)


@dataclass(frozen=True, slots=True)
class Located:
    """A loaded YAML file: the plain ``data`` and the position of every value and key."""

    data: dict[Key, Any]
    values: Mapping[Loc, Position]
    keys: Mapping[Loc, Position]

    def position(self, loc: Sequence[Key]) -> Position:
        """``(line, col)`` of the value at ``loc``, else of its nearest existing ancestor."""
        loc = tuple(loc)
        for end in range(len(loc), -1, -1):
            found = self.values.get(loc[:end])
            if found is not None:
                return found
        return (1, 1)

    def key_position(self, loc: Sequence[Key]) -> Position:
        """``(line, col)`` of the mapping key that ends ``loc``, else :meth:`position`."""
        return self.keys.get(tuple(loc)) or self.position(loc)


# --------------------------------------------------------------------------- loading


class _Refused(yaml.MarkedYAMLError):
    """Valid YAML that this loader refuses (an alias)."""


class _NoAliasLoader(yaml.SafeLoader):
    """A ``SafeLoader`` whose composer refuses aliases before they are ever expanded."""

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise _Refused(
                problem=f"aliases (*{event.anchor}) are not allowed; write the value out in full",
                problem_mark=event.start_mark,
            )
        return super().compose_node(parent, index)


def load_yaml(path: Path) -> Located:
    """Load one YAML file whose top level is a mapping; raise ``RuleFileError`` if unusable."""
    source = str(path)
    text = _read_text(path)
    root = _compose(text, source)
    if root is None:
        raise _one(source, None, "the file is empty; expected a mapping of 'key: value' lines")
    builder = _Builder(source)
    try:
        data = builder.node(root, (), "")
    except RecursionError:
        raise _one(source, root.start_mark, "the YAML is nested too deeply") from None
    if not builder.problems and not isinstance(data, dict):
        what = "a list" if isinstance(data, list) else f"the single value {_show(data, True)}"
        builder.fail(root, "", f"the top level must be a mapping of 'key: value' lines, got {what}")
    if builder.problems:
        raise RuleFileError(builder.problems)
    assert isinstance(data, dict)
    return Located(data, builder.values, builder.keys)


def _one(source: str, mark: yaml.Mark | None, message: str) -> RuleFileError:
    line, col = _position(mark) if mark is not None else (None, None)
    return RuleFileError([Problem(source, line, col, "", message)])


def _position(mark: yaml.Mark) -> Position:
    return (mark.line + 1, mark.column + 1)


def _read_text(path: Path) -> str:
    """The file's text; a missing, unreadable or non-UTF-8 file raises ``RuleFileError``."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise RuleFileError(
            [Problem(str(path), None, None, "", f"cannot read the file: {exc.strerror or exc}")]
        ) from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        start = raw.rfind(b"\n", 0, exc.start) + 1
        line = raw.count(b"\n", 0, exc.start) + 1
        col = len(raw[start : exc.start].decode("utf-8", "replace")) + 1
        message = f"the file is not valid UTF-8 (byte 0x{raw[exc.start]:02x}); save it as UTF-8"
        raise RuleFileError([Problem(str(path), line, col, "", message)]) from None


def _compose(text: str, source: str) -> yaml.Node | None:
    """The node tree of ``text``; syntax errors and refusals raise ``RuleFileError``."""
    try:
        return yaml.compose(text, Loader=_NoAliasLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = _position(mark) if mark is not None else (None, None)
        raise RuleFileError([Problem(source, line, col, "", _syntax_message(exc))]) from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        col = exc.position - text.rfind("\n", 0, exc.position)
        code = exc.character if isinstance(exc.character, int) else ord(exc.character)
        message = f"the file contains the control character U+{code:04X}; remove it"
        raise RuleFileError([Problem(source, line, col, "", message)]) from None
    except RecursionError:
        raise _one(source, None, "the YAML is nested too deeply") from None


_SYNTAX_HINTS = {
    "mapping values are not allowed here": "; put quotes around a value that contains ': '",
    "found character '\\t' that cannot start any token": "; indent with spaces, not tabs",
}


def _syntax_message(exc: yaml.MarkedYAMLError) -> str:
    if isinstance(exc, _Refused):
        return str(exc.problem)
    if exc.problem == "but found another document":
        return "the file holds more than one YAML document ('---'); keep one per file"
    message = f"YAML syntax error: {exc.problem}" + _SYNTAX_HINTS.get(str(exc.problem), "")
    if exc.context and exc.context_mark is not None:
        message += f" ({exc.context} at line {exc.context_mark.line + 1})"
    return message


class _Builder:
    """Builds plain Python values from a node tree, recording positions and problems."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[Problem] = []
        self.values: dict[Loc, Position] = {}
        self.keys: dict[Loc, Position] = {}

    def fail(self, node: yaml.Node, field: str, message: str) -> None:
        line, col = _position(node.start_mark)
        self.problems.append(Problem(self.source, line, col, field, message))

    def node(self, node: yaml.Node, loc: Loc, field: str) -> Any:
        self.values[loc] = _position(node.start_mark)
        if isinstance(node, yaml.MappingNode) and node.tag == _MAP:
            return self.mapping(node, loc, field)
        if isinstance(node, yaml.SequenceNode) and node.tag == _SEQ:
            items = enumerate(node.value)
            return [self.node(item, (*loc, i), f"{field}[{i}]") for i, item in items]
        if isinstance(node, yaml.ScalarNode) and node.tag in _SCALAR_TAGS:
            return self.scalar(node, field)
        return self.fail(node, field, _tag_refused(node.tag))

    def mapping(self, node: yaml.MappingNode, loc: Loc, field: str) -> dict[Key, Any]:
        result: dict[Key, Any] = {}
        for key_node, value_node in node.value:
            key = self.key(key_node, field)
            if key is None:
                continue
            key_loc, key_field = (*loc, key), f"{field}.{key}" if field else str(key)
            if key in result:
                first = self.keys[key_loc][0]
                message = f"duplicate key {key!r} (first at line {first}); keep only one"
                self.fail(key_node, key_field, message)
                continue
            self.keys[key_loc] = _position(key_node.start_mark)
            result[key] = self.node(value_node, key_loc, key_field)
        return result

    def key(self, node: yaml.Node, field: str) -> Key | None:
        """The key a node spells, or ``None`` (after recording a problem) if it cannot be one."""
        if isinstance(node, yaml.ScalarNode) and node.tag in _SCALAR_TAGS:
            key: Key | bool | None = self.scalar(node, field)
            return node.value if key is None or isinstance(key, bool) else key
        if node.tag == _TAG + "merge":
            self.fail(node, field, "merge keys ('<<') are not supported")
        elif isinstance(node, yaml.ScalarNode):
            self.fail(node, field, _tag_refused(node.tag))
        else:
            self.fail(node, field, "a key must be a plain value (text or a number)")
        return None

    def scalar(self, node: yaml.ScalarNode, field: str) -> Any:
        tag, text = node.tag.removeprefix(_TAG), node.value
        if tag == "null":
            return None
        if tag == "bool":
            return {"true": True, "false": False}.get(text.lower(), text)
        if tag not in ("int", "float") or ":" in text:
            return text
        construct = _SAFE.construct_yaml_int if tag == "int" else _SAFE.construct_yaml_float
        try:
            return construct(node)
        except ValueError:
            return self.fail(node, field, f"{text!r} is not a valid !!{tag}")


def _tag_refused(tag: str) -> str:
    short = "!!" + tag.removeprefix(_TAG) if tag.startswith(_TAG) else tag
    return f"the tag {short} is not allowed; write a plain value"


# --------------------------------------------------------------------------- validating


def validate(model: type[M], located: Located, path: Path) -> M:
    """``model.model_validate(located.data)``; errors raise one located ``RuleFileError``."""
    try:
        return model.model_validate(located.data)
    except ValidationError as exc:
        raise RuleFileError(explain(model, located, path, exc)) from None


def load_and_validate(model: type[M], path: Path) -> M | list[Problem]:
    """The validated model of one file, or every problem found in it."""
    try:
        return validate(model, load_yaml(path), path)
    except RuleFileError as exc:
        return exc.problems


def load_many(model: type[M], paths: Iterable[Path]) -> list[M]:
    """Load and validate every file; raise one ``RuleFileError`` with all files' problems."""
    results = [load_and_validate(model, path) for path in paths]
    problems = [problem for result in results if isinstance(result, list) for problem in result]
    if problems:
        raise RuleFileError(problems)
    return [result for result in results if not isinstance(result, list)]


@dataclass(frozen=True, slots=True)
class _Finding:
    """One explained error: where (as a data path), what was expected, what was found."""

    loc: Loc
    at_key: bool
    text: str
    got: str | None
    typed: str


def explain(
    model: type[BaseModel], located: Located, path: Path, exc: ValidationError
) -> list[Problem]:
    """One located, plain-worded ``Problem`` per error in ``exc``, sorted by position."""
    findings = [_finding(model, located.data, error) for error in exc.errors()]
    problems = [_problem(located, path, finding) for finding in _merge(findings)]
    return sorted(problems, key=lambda p: (p.line or 0, p.col or 0))


def _problem(located: Located, path: Path, finding: _Finding) -> Problem:
    where = located.key_position if finding.at_key else located.position
    line, col = where(finding.loc)
    message = finding.text + (f", got {finding.got}" if finding.got is not None else "")
    return Problem(str(path), line, col, _dotted(located.data, finding.loc), message)


def _finding(model: type[BaseModel], data: Any, error: ErrorDetails) -> _Finding:
    kind, value, ctx = error["type"], error.get("input"), error.get("ctx") or {}
    raw_loc: tuple[int | str, ...] = tuple(error["loc"])
    discriminator = str(ctx.get("discriminator", ""))
    if kind.startswith("union_tag_") and discriminator.startswith("'"):
        raw_loc, value = (*raw_loc, discriminator.strip("'")), ctx.get("tag")
    missing = kind in ("missing", "union_tag_not_found")
    loc, at_key = _data_loc(data, raw_loc, keep_last=missing)
    text, got = _describe(model, error)
    if at_key and text.startswith("expected "):
        text += " as the key"
    typed = _show(value, typed=True)
    shown = None if got is None else typed if got == "typed" else _show(value, typed=False)
    return _Finding(loc, at_key or kind == "extra_forbidden", text, shown, typed)


def _merge(findings: list[_Finding]) -> list[_Finding]:
    """Fold the per-member errors of a union at one place into a single "expected A or B"."""
    groups: dict[tuple[Loc, bool], list[_Finding]] = {}
    for finding in findings:
        groups.setdefault((finding.loc, finding.at_key), []).append(finding)
    merged: list[_Finding] = []
    for group in groups.values():
        unique = list(dict.fromkeys(group))
        if len(unique) > 1 and all(f.text.startswith("expected ") and f.got for f in unique):
            wants = dict.fromkeys(f.text.removeprefix("expected ") for f in unique)
            first = unique[0]
            text = "expected " + " or ".join(wants)
            merged.append(_Finding(first.loc, first.at_key, text, first.typed, first.typed))
        else:
            merged.extend(unique)
    return merged


def _child(node: Any, part: Key) -> Any:
    if isinstance(node, dict):
        return node.get(part, _ABSENT)
    if isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
        return node[part]
    return _ABSENT


def _data_loc(data: Any, loc: Sequence[int | str], *, keep_last: bool) -> tuple[Loc, bool]:
    """The path into ``data`` of a pydantic ``loc`` (union member names dropped); at a key?"""
    path: list[Key] = []
    at_key, node = False, data
    for index, part in enumerate(loc):
        child = _child(node, part)
        if part == "[key]" and child is _ABSENT:
            at_key = True
        elif child is not _ABSENT:
            path.append(part)
            node = child
        elif keep_last and index == len(loc) - 1:
            path.append(part)
    return tuple(path), at_key


def _dotted(data: Any, loc: Loc) -> str:
    """``loc`` as a readable field path: ``events[0].where.cause``, ``targets.2017``."""
    text, node = "", data
    for part in loc:
        if isinstance(node, list):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
        node = _child(node, part)
    return text


def _show(value: Any, typed: bool) -> str:
    """A value as YAML-minded text (``null``, ``true``), truncated, with its kind if typed."""
    if value is None or isinstance(value, bool):
        return "null" if value is None else str(value).lower()
    text = repr(value)
    text = text if len(text) <= _MAX_REPR else text[: _MAX_REPR - 3] + "..."
    return f"{text} ({_kind(value)})" if typed else text


def _kind(value: Any) -> str:
    return next((name for cls, name in _KINDS if isinstance(value, cls)), type(value).__name__)


# --------------------------------------------------------------------------- wording

_Got = Literal["plain", "typed"] | None

_TYPE_WORDS = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "string_type": "a string",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "list_type": "a list",
    "tuple_type": "a list",
    "set_type": "a list",
    "dict_type": "a mapping of 'key: value' lines",
    "model_type": "a mapping of 'key: value' lines",
    "model_attributes_type": "a mapping of 'key: value' lines",
    "date_type": "a date like 2024-01-31",
    "date_parsing": "a date like 2024-01-31",
    "date_from_datetime_parsing": "a date like 2024-01-31",
    "datetime_type": "a date and time like 2024-01-31T09:00:00+08:00",
    "datetime_parsing": "a date and time like 2024-01-31T09:00:00+08:00",
    "time_type": "a time like 09:30",
    "time_parsing": "a time like 09:30",
    "none_required": "nothing (null)",
}
_BOUNDS = {
    "greater_than": ("gt", "more than"),
    "greater_than_equal": ("ge", "at least"),
    "less_than": ("lt", "less than"),
    "less_than_equal": ("le", "at most"),
    "multiple_of": ("multiple_of", "a multiple of"),
}
_LENGTHS = {
    "too_short": ("min_length", "at least", "item"),
    "too_long": ("max_length", "at most", "item"),
    "string_too_short": ("min_length", "at least", "character"),
    "string_too_long": ("max_length", "at most", "character"),
}


def _describe(model: type[BaseModel], error: ErrorDetails) -> tuple[str, _Got]:
    """Plain words for one error, and how (whether) to show the offending value."""
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind in _TYPE_WORDS:
        return f"expected {_TYPE_WORDS[kind]}", "typed"
    if kind in _BOUNDS:
        name, words = _BOUNDS[kind]
        return f"expected {words} {ctx[name]}", "plain"
    if kind in _LENGTHS:
        name, words, unit = _LENGTHS[kind]
        count = ctx[name]
        return f"expected {words} {count} {unit}{'s' if count != 1 else ''}", "plain"
    if kind == "missing":
        return "required field is missing", None
    if kind == "extra_forbidden":
        return _unknown_field(model, error["loc"]), None
    if kind in ("literal_error", "enum"):
        return _one_of(model, error["loc"], str(ctx.get("expected", ""))), "plain"
    return _describe_more(kind, ctx, error)


def _describe_more(kind: str, ctx: dict[str, Any], error: ErrorDetails) -> tuple[str, _Got]:
    if kind in ("value_error", "assertion_error"):
        container = isinstance(error.get("input"), dict | list)
        return str(ctx.get("error", error["msg"])), None if container else "plain"
    if kind == "string_pattern_mismatch":
        return f"expected text matching the pattern {ctx['pattern']!r}", "plain"
    if kind == "union_tag_invalid":
        return f"expected one of {ctx['expected_tags']}", "plain"
    if kind == "union_tag_not_found":
        return "required field is missing (it says which kind of entry this is)", None
    message = error["msg"]
    if message.startswith("Input should be "):
        return "expected " + message.removeprefix("Input should be "), "typed"
    return message, "plain"


def _unknown_field(model: type[BaseModel], loc: tuple[int | str, ...]) -> str:
    names = _field_names(_types_at(model, loc[:-1]))
    close = difflib.get_close_matches(str(loc[-1]), names, n=1)
    if close:
        return f"unknown field; did you mean {close[0]!r}?"
    if names:
        listed = ", ".join(repr(name) for name in names[:12])
        return f"unknown field; allowed here: {listed}" + (", ..." if len(names) > 12 else "")
    return "unknown field"


def _one_of(model: type[BaseModel], loc: tuple[int | str, ...], fallback: str) -> str:
    choices: list[Any] = []
    for tp in _types_at(model, loc):
        if get_origin(tp) is Literal:
            choices.extend(get_args(tp))
        elif isinstance(tp, type) and issubclass(tp, enum.Enum):
            choices.extend(member.value for member in tp)
    listed = ", ".join(_show(choice, typed=False) for choice in dict.fromkeys(choices))
    if len(choices) == 1:
        return f"expected {listed}"
    return f"expected one of {listed or fallback}"


# --------------------------------------------------------------------------- model walking


def _types_at(model: type[BaseModel], loc: Sequence[int | str]) -> list[Any]:
    """The annotations (union members spread out) a pydantic error ``loc`` may point into."""
    current = _members(model)
    for index, part in enumerate(loc):
        if part == "[key]":
            continue
        as_key = index + 1 < len(loc) and loc[index + 1] == "[key]"
        named = [tp for tp in current if getattr(tp, "__name__", None) == part]
        inner = [annotation for tp in current for annotation in _step(tp, part, as_key)]
        stepped = [member for annotation in inner for member in _members(annotation)]
        current = stepped or named or current
    return current


def _members(tp: Any) -> list[Any]:
    """``tp`` with ``Annotated`` removed and unions (``Optional`` too) spread into members."""
    origin = get_origin(tp)
    if origin is Annotated:
        return _members(get_args(tp)[0])
    if origin is Union or origin is types.UnionType:
        return [member for arg in get_args(tp) for member in _members(arg)]
    return [tp]


def _step(tp: Any, part: int | str, as_key: bool) -> list[Any]:
    """The annotation(s) one ``loc`` step below ``tp``; empty if ``part`` does not fit."""
    origin, args = get_origin(tp), get_args(tp)
    if origin is None and isinstance(tp, type) and issubclass(tp, BaseModel):
        fields = tp.model_fields.items()
        return [f.annotation for name, f in fields if part in (name, f.alias, f.validation_alias)]
    if not isinstance(origin, type) or not args:
        return []
    if issubclass(origin, Mapping) and len(args) == 2:
        return [args[0] if as_key else args[1]]
    if issubclass(origin, tuple) and isinstance(part, int):
        variadic = len(args) == 2 and args[1] is Ellipsis
        return [args[0]] if variadic else list(args[part : part + 1])
    if issubclass(origin, Iterable) and isinstance(part, int):
        return [args[0]]
    return []


def _field_names(types: Iterable[Any]) -> list[str]:
    """The keys (names and string aliases) the models among ``types`` accept."""
    names: dict[str, None] = {}
    for tp in types:
        if get_origin(tp) is None and isinstance(tp, type) and issubclass(tp, BaseModel):
            for name, info in tp.model_fields.items():
                for spelling in (info.alias, info.validation_alias, name):
                    if isinstance(spelling, str):
                        names.setdefault(spelling)
    return list(names)
