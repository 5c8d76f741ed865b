"""Tests for bsc_rules.rules.sourcemap: safe, located YAML loading and plain-worded errors."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field, field_validator

from bsc_rules.errors import Problem, RuleFileError
from bsc_rules.rules.sourcemap import load_and_validate, load_many, load_yaml, validate


class Where(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cause: Literal["late", "lost"]


class Event(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    where: Where


class Rules(BaseModel):
    model_config = ConfigDict(extra="forbid")

    owner: str
    weight: int = Field(default=1, ge=0)
    mode: Literal["daily", "weekly"] = "daily"
    cap: int | Literal["none"] = "none"
    events: list[Event] = []
    targets: dict[int, float] = {}

    @field_validator("owner")
    @classmethod
    def _owner_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("owner must not be blank")
        return value


class Email(BaseModel):
    model_config = ConfigDict(extra="forbid")

    via: Literal["email"]
    to: str


class Sms(BaseModel):
    model_config = ConfigDict(extra="forbid")

    via: Literal["sms"]
    number: str


class Alerts(BaseModel):
    model_config = ConfigDict(extra="forbid")

    alerts: list[Annotated[Email | Sms, Field(discriminator="via")]]


def _write(tmp_path: Path, content: str | bytes, name: str = "rules.yaml") -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def _shown(problems: list[Problem], tmp_path: Path) -> list[str]:
    return [str(problem).replace(f"{tmp_path}/", "") for problem in problems]


def _problems(tmp_path: Path, content: str | bytes, model: type[BaseModel] = Rules) -> list[str]:
    result = load_and_validate(model, _write(tmp_path, content))
    assert isinstance(result, list), f"expected problems, got {result!r}"
    return _shown(result, tmp_path)


VALIDATION_CASES = [
    ("missing field", "weight: 1\n", "rules.yaml:1:1: owner: required field is missing"),
    (
        "unknown key, did you mean",
        "owner: a\nownr: b\n",
        "rules.yaml:2:1: ownr: unknown field; did you mean 'owner'?",
    ),
    (
        "nested unknown key",
        "owner: a\nevents:\n  - name: e\n    where:\n      cause: late\n      cuase: lost\n",
        "rules.yaml:6:7: events[0].where.cuase: unknown field; did you mean 'cause'?",
    ),
    (
        "unknown key, nothing close",
        "owner: a\nzzz: 1\n",
        "rules.yaml:2:1: zzz: unknown field; allowed here: "
        "'owner', 'weight', 'mode', 'cap', 'events', 'targets'",
    ),
    (
        "nested missing field at its parent mapping",
        "owner: a\nevents:\n  - where: {cause: late}\n",
        "rules.yaml:3:5: events[0].name: required field is missing",
    ),
    (
        "wrong type",
        "owner: a\nweight: abc\n",
        "rules.yaml:2:9: weight: expected an integer, got 'abc' (string)",
    ),
    (
        "wrong literal",
        "owner: a\nmode: hourly\n",
        "rules.yaml:2:7: mode: expected one of 'daily', 'weekly', got 'hourly'",
    ),
    (
        "nested wrong literal",
        "owner: a\nevents:\n  - name: e\n    where: {cause: gone}\n",
        "rules.yaml:4:20: events[0].where.cause: expected one of 'late', 'lost', got 'gone'",
    ),
    (
        "out of range",
        "owner: a\nweight: -3\n",
        "rules.yaml:2:9: weight: expected at least 0, got -3",
    ),
    (
        "custom validator message",
        "owner: '  '\n",
        "rules.yaml:1:8: owner: owner must not be blank, got '  '",
    ),
    (
        "union members folded into one message",
        "owner: a\ncap: [1]\n",
        "rules.yaml:2:6: cap: expected an integer or 'none', got [1] (list)",
    ),
    (
        "int-keyed dict value",
        "owner: a\ntargets:\n  2017: high\n",
        "rules.yaml:3:9: targets.2017: expected a number, got 'high' (string)",
    ),
    (
        "int-keyed dict with a text key",
        "owner: a\ntargets:\n  next: 1.5\n",
        "rules.yaml:3:3: targets.next: expected an integer as the key, got 'next' (string)",
    ),
    (
        "null value",
        "owner:\n",
        "rules.yaml:1:7: owner: expected a string, got null",
    ),
    (
        "long value truncated",
        f"owner: a\nweight: {'x' * 100}\n",
        f"rules.yaml:2:9: weight: expected an integer, got '{'x' * 56}... (string)",
    ),
]


@pytest.mark.parametrize(
    ("content", "expected"),
    [case[1:] for case in VALIDATION_CASES],
    ids=[case[0] for case in VALIDATION_CASES],
)
def test_validation_error_message(tmp_path: Path, content: str, expected: str) -> None:
    """Each kind of validation error becomes one located, plain-worded problem."""
    assert _problems(tmp_path, content) == [expected]


UNION_CASES = [
    (
        "unknown discriminator value",
        "alerts:\n  - {via: fax, to: x}\n",
        "rules.yaml:2:11: alerts[0].via: expected one of 'email', 'sms', got 'fax'",
    ),
    (
        "missing discriminator",
        "alerts:\n  - {to: x}\n",
        "rules.yaml:2:5: alerts[0].via: required field is missing "
        "(it says which kind of entry this is)",
    ),
    (
        "unknown key inside the chosen member",
        "alerts:\n  - via: sms\n    numbr: '1'\n",
        "rules.yaml:2:5: alerts[0].number: required field is missing",
    ),
]


@pytest.mark.parametrize(
    ("content", "expected"),
    [case[1:] for case in UNION_CASES],
    ids=[case[0] for case in UNION_CASES],
)
def test_discriminated_union_message(tmp_path: Path, content: str, expected: str) -> None:
    """Errors in a discriminated union point at the tag field or the chosen member."""
    assert expected in _problems(tmp_path, content, Alerts)


def test_did_you_mean_inside_discriminated_union_member(tmp_path: Path) -> None:
    """The did-you-mean for a union member uses that member's fields."""
    shown = _problems(tmp_path, "alerts:\n  - via: sms\n    numbr: '1'\n", Alerts)
    assert "rules.yaml:3:5: alerts[0].numbr: unknown field; did you mean 'number'?" in shown


def test_several_errors_in_one_file_all_reported(tmp_path: Path) -> None:
    """Every error of a file is reported, in file order, in one RuleFileError."""
    path = _write(tmp_path, "ownr: a\nweight: -1\nmode: hourly\n")
    with pytest.raises(RuleFileError) as caught:
        validate(Rules, load_yaml(path), path)
    assert _shown(caught.value.problems, tmp_path) == [
        "rules.yaml:1:1: owner: required field is missing",
        "rules.yaml:1:1: ownr: unknown field; did you mean 'owner'?",
        "rules.yaml:2:9: weight: expected at least 0, got -1",
        "rules.yaml:3:7: mode: expected one of 'daily', 'weekly', got 'hourly'",
    ]
    assert str(caught.value).startswith("4 problems in the rule files:\n  ")


def test_errors_across_files_reported_together(tmp_path: Path) -> None:
    """load_many raises one RuleFileError holding the problems of every file."""
    good = _write(tmp_path, "owner: a\n", "good.yaml")
    bad_load = _write(tmp_path, "owner: a\nowner: b\n", "dup.yaml")
    bad_model = _write(tmp_path, "owner: a\nweight: x\n", "type.yaml")
    with pytest.raises(RuleFileError) as caught:
        load_many(Rules, [good, bad_load, bad_model])
    assert _shown(caught.value.problems, tmp_path) == [
        "dup.yaml:2:1: owner: duplicate key 'owner' (first at line 1); keep only one",
        "type.yaml:2:9: weight: expected an integer, got 'x' (string)",
    ]


def test_load_many_returns_models_in_order(tmp_path: Path) -> None:
    """load_many returns the validated models in the order of the paths."""
    paths = [_write(tmp_path, f"owner: o{i}\n", f"f{i}.yaml") for i in range(3)]
    assert [rules.owner for rules in load_many(Rules, paths)] == ["o0", "o1", "o2"]


LOAD_CASES = [
    (
        "syntax error with line and column",
        "owner: a\nevents: [1, 2\nweight: 1\n",
        "rules.yaml:3:7: YAML syntax error: expected ',' or ']', but got ':' "
        "(while parsing a flow sequence at line 2)",
    ),
    (
        "unquoted colon",
        "owner: a: b\n",
        "rules.yaml:1:9: YAML syntax error: mapping values are not allowed here; "
        "put quotes around a value that contains ': '",
    ),
    (
        "tab indentation",
        "owner:\n\tname: a\n",
        "rules.yaml:2:1: YAML syntax error: found character '\\t' that cannot start any token; "
        "indent with spaces, not tabs",
    ),
    (
        "duplicate key",
        "owner: a\nevents:\n  - name: x\n    name: y\n",
        "rules.yaml:4:5: events[0].name: duplicate key 'name' (first at line 3); keep only one",
    ),
    (
        "alias",
        "base: &b {cause: late}\nother: *b\n",
        "rules.yaml:2:8: aliases (*b) are not allowed; write the value out in full",
    ),
    (
        "merge key",
        "owner: a\n<<: {weight: 1}\n",
        "rules.yaml:2:1: merge keys ('<<') are not supported",
    ),
    (
        "set tag",
        "owner: !!set {a, b}\n",
        "rules.yaml:1:8: owner: the tag !!set is not allowed; write a plain value",
    ),
    (
        "custom tag",
        "owner: !vault secret\n",
        "rules.yaml:1:8: owner: the tag !vault is not allowed; write a plain value",
    ),
    (
        "bad explicit int",
        "weight: !!int abc\n",
        "rules.yaml:1:9: weight: 'abc' is not a valid !!int",
    ),
    (
        "complex key",
        "? [a, b]\n: 1\n",
        "rules.yaml:1:3: a key must be a plain value (text or a number)",
    ),
    (
        "top level is a list",
        "- owner: a\n",
        "rules.yaml:1:1: the top level must be a mapping of 'key: value' lines, got a list",
    ),
    (
        "top level is a scalar",
        "just words\n",
        "rules.yaml:1:1: the top level must be a mapping of 'key: value' lines, "
        "got the single value 'just words' (string)",
    ),
    (
        "empty file",
        "",
        "rules.yaml: the file is empty; expected a mapping of 'key: value' lines",
    ),
    (
        "comments only",
        "# nothing yet\n\n",
        "rules.yaml: the file is empty; expected a mapping of 'key: value' lines",
    ),
    (
        "invalid UTF-8",
        b"owner: a\nname: caf\xe9\n",
        "rules.yaml:2:10: the file is not valid UTF-8 (byte 0xe9); save it as UTF-8",
    ),
    (
        "control character",
        "owner: a\x07\n",
        "rules.yaml:1:9: the file contains the control character U+0007; remove it",
    ),
    (
        "two documents",
        "owner: a\n---\nowner: b\n",
        "rules.yaml:2:1: the file holds more than one YAML document ('---'); keep one per file",
    ),
    (
        "nested too deeply",
        "owner: " + "[" * 3000 + "]" * 3000 + "\n",
        "rules.yaml: the YAML is nested too deeply",
    ),
]


@pytest.mark.parametrize(
    ("content", "expected"),
    [case[1:] for case in LOAD_CASES],
    ids=[case[0] for case in LOAD_CASES],
)
def test_load_problem_message(tmp_path: Path, content: str | bytes, expected: str) -> None:
    """A file that cannot be loaded safely yields one located problem, and no model."""
    assert _problems(tmp_path, content) == [expected]


def test_python_tag_rejected_and_never_run(tmp_path: Path) -> None:
    """A !!python/object tag is a problem, and the code it names is never run."""
    marker = tmp_path / "pwned"
    content = f"owner: !!python/object/apply:os.system ['touch {marker}']\n"
    assert _problems(tmp_path, content) == [
        "rules.yaml:1:8: owner: the tag !!python/object/apply:os.system is not allowed; "
        "write a plain value"
    ]
    assert not marker.exists()


def test_all_load_problems_of_a_file_reported(tmp_path: Path) -> None:
    """Duplicate keys and refused tags anywhere in a file are all reported at once."""
    content = "owner: a\nowner: b\nevents: !!python/name:os.system\nmode: x\nmode: y\n"
    assert _problems(tmp_path, content) == [
        "rules.yaml:2:1: owner: duplicate key 'owner' (first at line 1); keep only one",
        "rules.yaml:3:9: events: the tag !!python/name:os.system is not allowed; "
        "write a plain value",
        "rules.yaml:5:1: mode: duplicate key 'mode' (first at line 4); keep only one",
    ]


def test_missing_file(tmp_path: Path) -> None:
    """A file that does not exist is a problem naming the file, not a crash."""
    result = load_and_validate(Rules, tmp_path / "absent.yaml")
    assert isinstance(result, list)
    assert _shown(result, tmp_path) == [
        "absent.yaml: cannot read the file: No such file or directory"
    ]


def test_int_keys_preserved(tmp_path: Path) -> None:
    """YAML integer keys stay ints in the data and validate into dict[int, ...]."""
    path = _write(tmp_path, "owner: a\ntargets:\n  2017: 1.5\n  2018: 2\n  '2019': 3\n")
    located = load_yaml(path)
    assert located.data["targets"] == {2017: 1.5, 2018: 2, "2019": 3}
    assert [type(key) for key in located.data["targets"]] == [int, int, str]
    assert validate(Rules, located, path).targets == {2017: 1.5, 2018: 2.0, 2019: 3.0}


SCALAR_CASES = [
    ("plain text", "x: hello", "hello"),
    ("integer", "x: 42", 42),
    ("hex integer", "x: 0x1F", 31),
    ("float", "x: 1.5", 1.5),
    ("true", "x: True", True),
    ("false", "x: false", False),
    ("null", "x: ~", None),
    ("empty value", "x:", None),
    ("yes stays text", "x: yes", "yes"),
    ("off stays text", "x: off", "off"),
    ("clock time stays text", "x: 12:30", "12:30"),
    ("date stays text", "x: 2024-01-31", "2024-01-31"),
    ("explicit str", "x: !!str 2017", "2017"),
    ("quoted number", "x: '7'", "7"),
]


@pytest.mark.parametrize(
    ("content", "expected"),
    [case[1:] for case in SCALAR_CASES],
    ids=[case[0] for case in SCALAR_CASES],
)
def test_scalar_values(tmp_path: Path, content: str, expected: object) -> None:
    """Scalars load as plain Python values, with YAML 1.2 booleans and no base-60 numbers."""
    value = load_yaml(_write(tmp_path, content + "\n")).data["x"]
    assert value == expected
    assert type(value) is type(expected)


def test_boolean_and_null_keys_stay_text(tmp_path: Path) -> None:
    """Keys spelled like booleans or null keep their text, so `on:` stays the key 'on'."""
    located = load_yaml(_write(tmp_path, "on: 1\ntrue: 2\nnull: 3\n"))
    assert located.data == {"on": 1, "true": 2, "null": 3}


def test_utf8_bom_and_cjk_text(tmp_path: Path) -> None:
    """A UTF-8 byte-order mark is skipped and non-ASCII text loads intact."""
    located = load_yaml(_write(tmp_path, "\ufeffowner: 公文科\n"))
    assert located.data == {"owner": "公文科"}


POSITION_CASES = [
    ("top level", (), (1, 1)),
    ("a value", ("owner",), (1, 8)),
    ("an int key's value", ("targets", 2017), (3, 9)),
    ("a list item", ("events", 0), (5, 5)),
    ("a nested value", ("events", 0, "where", "cause"), (6, 20)),
    ("missing key falls back to parent", ("events", 0, "where", "nope"), (6, 12)),
    ("missing index falls back to list", ("events", 7, "name"), (5, 3)),
]


@pytest.mark.parametrize(
    ("loc", "expected"),
    [case[1:] for case in POSITION_CASES],
    ids=[case[0] for case in POSITION_CASES],
)
def test_position(tmp_path: Path, loc: tuple[str | int, ...], expected: tuple[int, int]) -> None:
    """position() gives the 1-based line:col of a value, else of its nearest ancestor."""
    content = "owner: a\ntargets:\n  2017: 1.5\nevents:\n  - name: e\n    where: {cause: late}\n"
    assert load_yaml(_write(tmp_path, content)).position(loc) == expected


def test_key_position(tmp_path: Path) -> None:
    """key_position() gives the position of the key itself, not of its value."""
    located = load_yaml(_write(tmp_path, "owner: a\ntargets:\n  2017: 1.5\n"))
    assert located.key_position(("targets", 2017)) == (3, 3)
    assert located.key_position(("targets",)) == (2, 1)
    assert located.key_position(("targets", 1999)) == (3, 3)
