"""Hostile input: generated event lines and rule files never crash or hang bsc_rules.

Event lines (invalid UTF-8, NUL bytes, very long lines, deep nesting, huge and
non-finite numbers, wrong types, unknown types, times in year 0001 or 9999): each is an
event or a rejection naming the field (or, when the line is no JSON object at all, saying
so); an accepted event can be stored and read back and reported on; the good events around
bad ones are counted exactly as without them. Rule files (random mutations of the shipped
``rules/*.yaml``): every outcome is a rule set that evaluates, or a ``RuleFileError``; a
YAML tag never runs code.

The fast sample is derandomized; ``BSC_FAULTS_LONG=1`` runs 10,000 cases per target
(``BSC_FAULTS_EXAMPLES`` overrides the count).
"""

from __future__ import annotations

import itertools
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bsc_rules.calendar import to_us
from bsc_rules.dev.simulate import simulate
from bsc_rules.errors import RuleFileError
from bsc_rules.events import (
    EVENT_TYPES,
    Event,
    Rejection,
    event_from_body,
    parse_line,
    parse_line_checked,
)
from bsc_rules.rules.ruleset import RuleSet, default_rules_dir, load_ruleset
from bsc_rules.scorecard import Scorecard
from tests.faults.harness import LONG, examples, ok, record, run_cli, settings_file

RULES = load_ruleset()
VALIDATOR = Scorecard(RULES, matcher="python")  # validate() only: the contract and the office
END_2017 = to_us(datetime.fromisoformat("2017-12-31T23:59:59+08:00"))
FIELDS = ("specversion", "id", "source", "type", "time", "subject", "office", "data")
FAR_YEARS = (*range(1, 1900, 37), 1, 99, 999, 1899, *range(2201, 10000, 211), 2201, 9999)


def _pool() -> dict[str, dict[str, Any]]:
    """One simulated event of every type (the good events mutations start from)."""
    pool: dict[str, dict[str, Any]] = {}
    for e in itertools.islice(simulate(seed=9), 20_000):
        pool.setdefault(e["type"], e)
    assert set(pool) == set(EVENT_TYPES)
    return pool


POOL = _pool()
TYPES = sorted(POOL)


def hypothesis_settings(fast: int) -> settings:
    """Derandomized in the fast sample; 10,000 cases per target in the long mode."""
    return settings(
        max_examples=examples(fast),
        derandomize=not LONG,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )


# ------------------------------------------------------------------ JSON with raw tokens


@dataclass(frozen=True)
class Raw:
    """JSON text put into a line as is (numbers JSON cannot hold exactly, NaN, nesting)."""

    text: str


def dumps(value: Any) -> bytes:
    """JSON of ``value``, with every :class:`Raw` written verbatim."""
    raws: list[str] = []

    def swap(v: Any) -> Any:
        if isinstance(v, Raw):
            raws.append(v.text)
            return f"\x00RAW{len(raws) - 1}\x00"
        if isinstance(v, dict):
            return {k: swap(x) for k, x in v.items()}
        if isinstance(v, list):
            return [swap(x) for x in v]
        return v

    text = json.dumps(swap(value), ensure_ascii=False)
    for n, raw in enumerate(raws):
        text = text.replace(json.dumps(f"\x00RAW{n}\x00"), raw, 1)
    return text.encode("utf-8", "surrogatepass")


def _nested(depth: int, kind: str) -> Raw:
    if kind == "list":
        return Raw("[" * depth + "]" * depth)
    return Raw('{"a":' * depth + "1" + "}" * depth)


RAW_NUMBERS = ("1e400", "-1e400", "1e-400", "-0", "0.0", "1E+2", "NaN", "Infinity",
               "-Infinity", "123456789012345678901234567890e400", "9" * 17)  # fmt: skip
numbers = st.one_of(
    st.integers(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.builds(lambda k: Raw("1" + "0" * k), st.integers(15, 6000)),
    st.sampled_from([Raw(t) for t in RAW_NUMBERS]),
)
texts = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.sampled_from("\x00\r\n\t<>&\"'\\ \u2028\ufeffA1"), max_size=30),
    st.sampled_from([Raw('"\\ud800"'), Raw('"\\udfff x"'), Raw('"\\u0000"'), ""]),
    st.builds(lambda n: "x" * n, st.sampled_from([1_000, 100_000])),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, texts)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.text(max_size=8), inner, max_size=4),
    ),
    max_leaves=8,
) | st.builds(_nested, st.integers(1, 3000), st.sampled_from(["list", "dict"]))


@st.composite
def instants(draw: st.DrawFn) -> tuple[str, bool]:
    """An RFC 3339-looking time and whether its year is far in the past or future."""
    year = draw(st.sampled_from(FAR_YEARS) | st.integers(1, 9999))
    text = "{:04d}-{:02d}-{:02d}T{:02d}:{:02d}:{:02d}{}{}".format(
        year,
        draw(st.integers(0, 13)),
        draw(st.integers(0, 32)),
        draw(st.integers(0, 25)),
        draw(st.integers(0, 61)),
        draw(st.integers(0, 61)),
        draw(st.sampled_from(["", ".5", ".123456789"])),
        draw(st.sampled_from(["+08:00", "Z", "+14:00", "-12:00", "", "+99:00", "z", "-00:00"])),
    )
    return text, year < 1900 or year > 2200


@dataclass(frozen=True)
class Case:
    """A generated line, the field its mutation aimed at and what must become of it."""

    line: bytes
    field: str  # "" when the mutation was not about one field
    must_reject: bool = False


def _ident(base: dict[str, Any], n: int) -> dict[str, Any]:
    return {**base, "id": f"hostile-{n}"}


@st.composite
def hostile_lines(draw: st.DrawFn) -> Case:
    """One hostile line: a mutated good event, or raw bytes."""
    base = _ident(POOL[draw(st.sampled_from(TYPES))], draw(st.integers(0, 10**6)))
    kind = draw(st.sampled_from(["field", "data", "extra", "drop", "type", "time", "bytes"]))
    if kind == "field":
        name = draw(st.sampled_from(FIELDS))
        return Case(dumps({**base, name: draw(values)}), name)
    if kind == "data":
        spec = EVENT_TYPES[base["type"]]
        if not spec:
            return Case(dumps({**base, "data": draw(values)}), "data")
        name = draw(st.sampled_from(sorted(spec)))
        return Case(dumps({**base, "data": {**base["data"], name: draw(values)}}), f"data.{name}")
    if kind == "extra":
        where = draw(st.sampled_from(["top", "data"]))
        key = draw(st.text(min_size=1, max_size=10).filter(lambda k: k not in base))
        if where == "top":
            return Case(dumps({**base, key: draw(values)}), "")
        return Case(dumps({**base, "data": {**base.get("data", {}), key: draw(values)}}), "")
    if kind == "drop":
        name = draw(st.sampled_from(["specversion", "id", "source", "type", "time", "subject"]))
        return Case(dumps({k: v for k, v in base.items() if k != name}), name)
    if kind == "type":
        return Case(dumps({**base, "type": draw(st.text(max_size=30))}), "type")
    if kind == "time":
        text, far = draw(instants())
        return Case(dumps({**base, "time": text}), "time", must_reject=far)
    raw = bytearray(dumps(base))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(raw)))
        raw[at:at] = draw(st.sampled_from([b"\xff", b"\xc3", b"\x00", b"\xed\xa0\x80", b"\r"]))
    return Case(bytes(raw), "")


# ------------------------------------------------------------------ event line properties


def _strict_json(body: bytes) -> Any:
    def refuse(name: str) -> Any:
        msg = f"{name} in a stored body"
        raise AssertionError(msg)

    return json.loads(body, parse_constant=refuse)


def check_outcome(case: Case) -> None:
    """An event that reads back and reports, or a rejection naming the field; the fast
    path of ``parse_line`` and the checked one give the same outcome."""
    assert parse_line(case.line, 1) == parse_line_checked(case.line, 1), case
    outcome = VALIDATOR.validate(case.line, 1)
    if isinstance(outcome, Rejection):
        text = str(outcome)
        assert outcome.message, case
        whole_line = outcome.message.startswith(("not valid JSON", "not valid UTF-8"))
        if case.field and not whole_line:
            assert outcome.field.split(".")[0] == case.field.split(".")[0], (case, text)
            if case.field.startswith("data."):
                assert outcome.field in ("data", case.field), (case, text)
        return
    assert not case.must_reject, f"accepted a time far in the past or future: {case.line[:200]!r}"
    stored = event_from_body(outcome.body)  # what reopening the log does
    assert (stored.key, stored.time_us, stored.type, stored.subject) == (
        outcome.key, outcome.time_us, outcome.type, outcome.subject
    )  # fmt: skip
    _strict_json(outcome.body)
    with Scorecard(RULES, matcher="python") as card:
        assert card.ingest(outcome.body).status == "accepted"
        card.report_at(outcome.time_us)
        card.report_at(END_2017)


@hypothesis_settings(400)
@given(case=hostile_lines())
def test_event_lines_are_events_or_rejections_naming_the_field(case: Case) -> None:
    """A hostile line is an event that stores and reports, or a rejection naming its field."""
    check_outcome(case)
    record("hostile.event-lines", inputs=1)


@hypothesis_settings(300)
@given(raw=st.binary(max_size=300) | st.text(max_size=200).map(str.encode))
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    """Any bytes at all: an event or a rejection, never an exception."""
    check_outcome(Case(raw, ""))
    record("hostile.bytes", inputs=1)


def _good_lines() -> list[bytes]:
    return [orjson.dumps(e) for e in itertools.islice(simulate(seed=10), 400)]


GOOD_LINES = _good_lines()


@hypothesis_settings(60)
@given(
    bad=st.lists(hostile_lines(), min_size=1, max_size=12),
    slots=st.lists(st.integers(0, 399), min_size=1, max_size=12),
)
def test_good_events_around_bad_ones_are_unaffected(bad: list[Case], slots: list[int]) -> None:
    """Bad lines among good ones: each rejected at its line; the good ones report as alone."""
    lines = list(GOOD_LINES)
    for case, slot in zip(bad, itertools.cycle(slots)):
        lines.insert(slot % (len(lines) + 1), case.line)
    alone = [VALIDATOR.validate(line, n) for n, line in enumerate(lines, 1)]
    rejected_at = {o.line for o in alone if isinstance(o, Rejection)}
    with Scorecard(RULES, matcher="python") as mixed, Scorecard(RULES, matcher="python") as clean:
        summary = mixed.ingest_lines(lines, batch=64)
        clean.ingest_lines(o.body for o in alone if isinstance(o, Event))
        assert {r.line for r in summary.rejections} >= rejected_at
        extra = {r.line for r in summary.rejections} - rejected_at
        for number in extra:  # conflicts: a mutated copy of an id already seen
            assert next(r for r in summary.rejections if r.line == number).field == "id"
        assert _without_rejected(mixed) == _without_rejected(clean)
    record("hostile.mixed", inputs=1)


def _without_rejected(card: Scorecard) -> dict[str, Any]:
    report = card.report_at(END_2017).as_dict()
    del report["rejected"]
    return report


_BASE = POOL["birth_subsidy.applied"]
KNOWN = {  # lines that crashed, poisoned the log or were silently changed: name → (line, field)
    "year 0001 at +08:00": (dumps({**_BASE, "time": "0001-01-01T00:00:00+08:00"}), "time"),
    "year 9999 at -12:00": (dumps({**_BASE, "time": "9999-12-31T23:59:59-12:00"}), "time"),
    "year 0001 in UTC": (dumps({**_BASE, "time": "0001-01-01T00:00:00Z"}), "time"),
    "nested 1000 deep": (dumps({**_BASE, "data": {**_BASE["data"], "x": _nested(1000, "list")}}),
                         "data.x"),
    "lone surrogate": (dumps({**_BASE, "data": {**_BASE["data"], "x": Raw('"\\ud800"')}}),
                       "data.x"),
    "1e400": (dumps({**_BASE, "data": {**_BASE["data"], "x": Raw("1e400")}}), ""),
    # pydantic's JSON reader (the fast path) accepts these three; the contract does not
    "NaN": (dumps({**_BASE, "data": {**_BASE["data"], "x": Raw("NaN")}}), ""),
    "-Infinity at the top": (dumps({**_BASE, "x": Raw("-Infinity")}), ""),
    "1e400 at the top": (dumps({**_BASE, "x": Raw("1E+400")}), ""),
    "34 deep, 31 of them in data.x": (
        dumps({**_BASE, "data": {**_BASE["data"], "x": _nested(31, "dict")}}), "data.x"
    ),
    "1e400 and a big integer": (
        dumps({**_BASE, "data": {**_BASE["data"], "x": Raw("1e400"), "y": Raw("1" + "0" * 30)}}),
        "",
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_known_hostile_lines_are_rejected_and_never_stored(name: str, tmp_path: Path) -> None:
    """Lines that crashed or poisoned the log are rejected, naming the field, never stored."""
    line, field = KNOWN[name]
    assert parse_line(line, 1) == parse_line_checked(line, 1)
    outcome = VALIDATOR.validate(line, 1)
    assert isinstance(outcome, Rejection), f"{name}: accepted as {outcome}"
    assert outcome.field == field, str(outcome)
    with Scorecard.open(tmp_path / "state.db", RULES, matcher="python") as card:
        assert card.ingest(line, line=1).status == "rejected"
    with Scorecard.open(tmp_path / "state.db", RULES, matcher="python") as card:
        card.report_at(END_2017)
    record("hostile.known", inputs=1)


# ------------------------------------------------------------------ a fixed corpus, end to end


def corpus() -> Iterator[tuple[bytes, bool]]:
    """Hostile lines for the command line: ``(line, is an event)``; four are 10 MB."""
    base = POOL["birth_subsidy.applied"]
    big = 10_000_000
    yield dumps({**_ident(base, 1), "data": {**base["data"], "blob": "A" * big}}), True
    yield b"{" + b"x" * big, False
    yield b"1" * big, False
    yield b"[" * big, False
    yield b'{"specversion": "1.0", "id": "bad-utf8-\xff\xfe"}', False
    yield dumps(_ident(base, 2)).replace(b'"BS', b'"B\x00S'), False  # a raw NUL in a string
    yield dumps({**_ident(base, 3), "subject": "BS\x00NUL"}), True  # an escaped one
    yield dumps({**_ident(base, 4), "data": {**base["data"], "x": _nested(5000, "list")}}), False
    yield dumps({**_ident(base, 5), "data": {**base["data"], "x": _nested(1000, "list")}}), False
    yield dumps({**_ident(base, 6), "data": {**base["data"], "x": _nested(20, "dict")}}), True
    yield dumps({**_ident(base, 7), "data": {"amount": Raw("1" + "0" * 5000)}}), False
    yield dumps({**_ident(base, 8), "data": {**base["data"], "x": Raw("1e400")}}), False
    yield dumps({**_ident(base, 9), "data": {**base["data"], "x": Raw("1e400"),
                                              "y": Raw("1" + "0" * 30)}}), False  # fmt: skip
    yield dumps({**_ident(base, 10), "data": {"amount": "20000"}}), False
    yield dumps({**_ident(base, 11), "type": "birth_subsidy.approved"}), False
    yield dumps({**_ident(base, 12), "time": "0001-01-01T00:00:00+08:00"}), False
    yield dumps({**_ident(base, 13), "time": "9999-12-31T23:59:59-12:00"}), False
    yield dumps({**_ident(base, 14), "time": "0001-01-01T00:00:00Z"}), False
    yield dumps({**_ident(base, 15), "time": "2017-03-15T10:23:00"}), False
    yield dumps({**_ident(base, 16), "subject": ["BS1"]}), False
    yield dumps({**_ident(base, 17), "data": {**base["data"], "x": Raw('"\\ud800"')}}), False


def test_command_line_ingests_hostile_file_then_reports_and_replays(tmp_path: Path) -> None:
    """`ingest` of good and hostile lines (10 MB too): exact counts; then reports and replays."""
    good = GOOD_LINES[:200]
    hostile = list(corpus())
    distinct = len({(e["source"], e["id"]) for e in map(orjson.loads, good)})
    lines, expect_rejected = [], []
    for n, (line, valid) in enumerate(hostile):
        lines += [*good[n * 10 : n * 10 + 10], line]
        if not valid:
            expect_rejected.append(len(lines))
    events = tmp_path / "hostile.jsonl"
    events.write_bytes(b"\n".join(lines) + b"\n")
    db = tmp_path / "state.db"
    out = ok(run_cli(["ingest", str(events), "--db", str(db)], tmp_path, timeout=600))
    accepted = distinct + sum(valid for _, valid in hostile)
    assert f"新增 {accepted} 筆" in out, out
    assert f"退回 {len(expect_rejected)} 筆" in out, out
    for number in expect_rejected:
        assert f"line {number}," in out, (number, out)
    status = ["status", "--db", str(db), "--as-of", "2017-12-31T23:59:59+08:00", "--format"]
    assert json.loads(ok(run_cli([*status, "json"], tmp_path)))["rejected"] == len(expect_rejected)
    replay = ["replay", str(events), "--until", "2017-01-08T00:00:00+08:00", "--maildir",
              str(tmp_path / "mail"), "--settings", str(settings_file(tmp_path))]  # fmt: skip
    assert "重播完成" in ok(run_cli(replay, tmp_path, timeout=600))
    record("hostile.corpus", inputs=len(lines))


# ------------------------------------------------------------------ rule files


MARK = "bsc-faults-code-ran"
YAML_TOKENS = [
    ": ", "- ", "{", "}", "[", "]", "&a ", "*a", "? ", "<<: {x: 1}", "\t", "\x00", "'", '"',
    "!!python/object/apply:os.system ['touch " + MARK + "']",
    "!!python/name:os.system", "!!binary aGk=", "!!set {a}", "!!timestamp 2017-01-01",
    "!!float nan", ".nan", ".inf", "-.inf", "null", "~", "yes", "no", "2017-01-01",
    "0x1F", "0o17", "1e400", "1" + "0" * 5000, "-1", "0", "3.5", "''", "|", ">", "#",
    "[" * 2000, "{a: " * 300, "\u2028", "\ufeff", "%YAML 1.1", "---", "...",
]  # fmt: skip
yaml_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**30), 10**30),
    st.floats(),
    st.text(max_size=20),
    st.dates(),
)
yaml_values = st.recursive(
    yaml_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*prefix, i))


@st.composite
def rule_mutations(draw: st.DrawFn) -> tuple[str, bytes]:
    """A shipped rule file and a mutated text for it."""
    folder = default_rules_dir()
    name = draw(st.sampled_from(sorted(p.name for p in folder.glob("*.yaml"))))
    text = (folder / name).read_text(encoding="utf-8")
    if draw(st.booleans()):  # text: edit lines
        lines = text.splitlines()
        for _ in range(draw(st.integers(1, 3))):
            at = draw(st.integers(0, max(len(lines) - 1, 0)))
            action = draw(st.sampled_from(["replace", "insert", "delete", "dup", "append"]))
            token = draw(st.sampled_from(YAML_TOKENS) | st.text(max_size=10))
            if action == "replace" and lines:
                lines[at] = token
            elif action == "insert":
                lines.insert(at, token)
            elif action == "delete" and lines:
                del lines[at]
            elif action == "dup" and lines:
                lines.insert(at, lines[at])
            elif lines:
                cut = draw(st.integers(0, len(lines[at])))
                lines[at] = lines[at][:cut] + token + lines[at][cut:]
        data = "\n".join(lines).encode("utf-8", "surrogatepass")
        if draw(st.integers(0, 9)) == 0:
            at = draw(st.integers(0, len(data)))
            data = data[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\x00"])) + data[at:]
        return name, data
    tree = yaml.safe_load(text)  # tree: replace, drop or add a value
    path = draw(st.sampled_from(list(_paths(tree))))
    value = draw(yaml_values)
    if not path:
        tree = value
    else:
        parent = tree
        for step in path[:-1]:
            parent = parent[step]
        action = draw(st.sampled_from(["replace", "drop", "add"]))
        if action == "replace":
            parent[path[-1]] = value
        elif action == "drop":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=8))] = value
        else:
            parent.append(value)
    return name, yaml.safe_dump(tree, allow_unicode=True).encode()


@pytest.fixture(scope="module")
def rule_copy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A copy of rules/ that each case edits one file of (restored after every case)."""
    folder = tmp_path_factory.mktemp("rules") / "rules"
    shutil.copytree(default_rules_dir(), folder)
    yield folder
    assert not (folder / MARK).exists(), "a YAML tag ran code"
    assert not Path(MARK).exists(), "a YAML tag ran code"


def _evaluates(rules: RuleSet) -> None:
    with Scorecard(rules, matcher="python") as card:
        card.ingest_lines(GOOD_LINES[:150])
        card.report_at(END_2017)


def _load(folder: Path) -> RuleSet | RuleFileError:
    try:
        return load_ruleset(folder)
    except RuleFileError as exc:
        return exc


@hypothesis_settings(100)
@given(mutation=rule_mutations())
def test_mutated_rule_files_are_a_ruleset_or_a_rule_file_error(
    rule_copy: Path, mutation: tuple[str, bytes]
) -> None:
    """A mutated rule file is a rule set that evaluates or a RuleFileError; tags run no code."""
    name, data = mutation
    target = rule_copy / name
    original = target.read_bytes()
    target.write_bytes(data)
    try:
        outcome = _load(rule_copy)
        if isinstance(outcome, RuleFileError):
            assert outcome.problems, outcome
            assert all(str(p) for p in outcome.problems), outcome
        else:
            _evaluates(outcome)
    finally:
        target.write_bytes(original)
    assert not (rule_copy / MARK).exists()
    record("hostile.rule-files", inputs=1)


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf", "1e400"])
def test_non_finite_targets_are_a_rule_file_error(rule_copy: Path, value: str) -> None:
    """A non-finite target (.nan, .inf, 1e400) is a RuleFileError when the rules load."""
    target = rule_copy / "AC1.1.yaml"
    original = target.read_bytes()
    text = original.decode()
    line = next(x for x in text.splitlines() if x.startswith("targets:"))
    target.write_text(text.replace(line, f"targets: {{2017: {value}, 2018: 100}}"), "utf-8")
    try:
        with pytest.raises(RuleFileError, match="targets"):
            load_ruleset(rule_copy)
    finally:
        target.write_bytes(original)
