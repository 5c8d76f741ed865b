"""Rule files: the shipped Datong rules, and every problem reported at once, located."""

from __future__ import annotations

import io
import shutil
from fractions import Fraction
from pathlib import Path

import pytest

from bsc_rules.cli import main
from bsc_rules.errors import RuleFileError
from bsc_rules.measures.report import effective_target
from bsc_rules.rules.ruleset import RuleSet, default_rules_dir, load_ruleset


def test_shipped_rules_hold_the_seed(rules: RuleSet) -> None:
    """The ten KPIs of the seed load with their owners, targets and parameters."""
    assert list(rules.kpis) == [
        "AC1.1",
        "AC1.2",
        "AP1.1",
        "AP2.1",
        "BC1.1",
        "BP1.1",
        "CC1.1",
        "CP1.1",
        "TF1.1",
        "TL1.1",
    ]
    owners = {k: v.spec.owner for k, v in rules.kpis.items()}
    assert owners == {
        "AC1.1": "records",
        "AC1.2": "records",
        "AP1.1": "records",
        "AP2.1": "registration",
        "BC1.1": "registration",
        "BP1.1": "registration",
        "CC1.1": "registration",
        "CP1.1": "registration",
        "TF1.1": "general_affairs",
        "TL1.1": "general_affairs",
    }
    assert rules.kpis["AC1.1"].spec.parameters["required_forms"] == 200_000
    assert rules.kpis["TL1.1"].spec.parameters["headcount"] == 40
    assert rules.kpis["CC1.1"].spec.parameters["due_day"] == 10
    assert rules.kpis["TF1.1"].spec.targets == {2017: 1250, 2018: 1300, 2019: 1350}
    assert rules.kpis["CP1.1"].spec.history == {2014: 6.79, 2015: 9.02, 2016: 52.71}
    assert rules.kpis["BP1.1"].spec.objective.name == "打造「樂婚、願生、能養」幸福臺北"
    assert rules.kpis["TL1.1"].spec.action_plans[0].budget[2017] == 38_400
    assert rules.office.sections["records"].name == "戶籍資料課"
    assert rules.warning_window_days(rules.kpis["BP1.1"]) == 2


@pytest.mark.parametrize(
    ("kpi", "year", "expected"),
    [
        ("AP2.1", 2017, Fraction(100)),  # mean(99.98, 99.97, 99.97) = 99.973 < 100
        ("CP1.1", 2017, Fraction(80)),  # mean(6.79, 9.02, 52.71) = 22.84 < 80
        ("BC1.1", 2017, Fraction(379)),  # mean(27, 379) = 203 (2014 skipped) < 379
        ("BP1.1", 2017, Fraction(0)),  # no floor
        ("AP2.1", 2020, None),  # no stated target
    ],
)
def test_effective_targets(rules: RuleSet, kpi: str, year: int, expected: Fraction | None) -> None:
    """The floor never loosens a stated target; years without a target have none."""
    assert effective_target(rules.kpis[kpi], year) == expected


def test_floor_binds_when_history_is_higher(tmp_path: Path) -> None:
    """A three-year mean above the stated target becomes the effective target."""
    folder = _copy(tmp_path)
    path = folder / "CP1.1.yaml"
    path.write_text(
        path.read_text().replace(
            "{2014: 6.79, 2015: 9.02, 2016: 52.71}", "{2014: 85, 2015: 86, 2016: 90}"
        )
    )
    rules = load_ruleset(folder)
    assert effective_target(rules.kpis["CP1.1"], 2017) == Fraction(87)


def _copy(tmp_path: Path) -> Path:
    folder = tmp_path / "rules"
    shutil.copytree(default_rules_dir(), folder)
    return folder


def _edit(folder: Path, name: str, old: str, new: str) -> None:
    path = folder / name
    text = path.read_text()
    assert old in text, f"{old!r} not in {name}"
    path.write_text(text.replace(old, new, 1))


def _problems(folder: Path) -> list[str]:
    with pytest.raises(RuleFileError) as info:
        load_ruleset(folder)
    return [str(p) for p in info.value.problems]


BROKEN = [
    pytest.param(
        "AP2.1.yaml",
        "owner: registration",
        "ownr: registration",
        [
            "AP2.1.yaml:1:1: owner: required field is missing",
            "AP2.1.yaml:10:1: ownr: unknown field; did you mean 'owner'?",
        ],
        id="misspelt-key",
    ),
    pytest.param(
        "AP2.1.yaml",
        "cause: citizen}",
        "cuase: citizen}",
        ["has no data field 'cuase'"],
        id="unknown-data-field",
    ),
    pytest.param(
        "AP2.1.yaml",
        "cause: staff}",
        "cause: nobody}",
        ["expected one of 'staff', 'citizen', got 'nobody'"],
        id="bad-enum-value",
    ),
    pytest.param(
        "BC1.1.yaml",
        "type: immigrant_visit.reported",
        "type: immigrant.visited",
        ["unknown event type 'immigrant.visited'"],
        id="unknown-type",
    ),
    pytest.param(
        "TL1.1.yaml",
        "per: headcount",
        "per: staff",
        ["parameter 'staff' is not set"],
        id="missing-parameter",
    ),
    pytest.param(
        "BP1.1.yaml",
        "kind: rate",
        "kind: progress",
        ["does not fit a 'deadline' measure"],
        id="kind-mismatch",
    ),
    pytest.param(
        "AP1.1.yaml",
        "{type: seal_certificate.error_found}",
        "{type: birth_subsidy.paid}",
        ["'birth_subsidy.paid' is not a follow-up of 'seal_certificate.issued'"],
        id="foreign-follow-up",
    ),
    pytest.param(
        "CC1.1.yaml", "due_day: 10", "due_day: 31", ["must be a day 1-28"], id="due-day-range"
    ),
    pytest.param(
        "TF1.1.yaml",
        "2017: 1250",
        "2017: lots",
        ["TF1.1.yaml:16:", "targets.2017", "'lots'"],
        id="target-type",
    ),
    pytest.param(
        "office.yaml",
        "  code: datong",
        "  code: Datong Office",
        ["office.yaml:3:9: office.code"],
        id="office-code",
    ),
]


@pytest.mark.parametrize(("name", "old", "new", "expected"), BROKEN)
def test_broken_rule_files_are_located(
    tmp_path: Path, name: str, old: str, new: str, expected: list[str]
) -> None:
    """Each kind of mistake is reported with the file, the place and what was expected."""
    folder = _copy(tmp_path)
    _edit(folder, name, old, new)
    text = "\n".join(_problems(folder))
    for fragment in expected:
        assert fragment in text
    assert name in text


def test_every_problem_of_every_file_at_once(tmp_path: Path) -> None:
    """Mistakes in two files come back together, sorted by file."""
    folder = _copy(tmp_path)
    _edit(folder, "AP2.1.yaml", "unit: percent", "unit: percents")
    _edit(folder, "TF1.1.yaml", "direction: higher", "direction: up")
    _edit(folder, "TF1.1.yaml", "owner: general_affairs", "owner: finance")
    problems = _problems(folder)
    assert len(problems) == 3
    assert [p.split(":")[0].rsplit("/", 1)[-1] for p in problems] == [
        "AP2.1.yaml",
        "TF1.1.yaml",
        "TF1.1.yaml",
    ]


def test_duplicate_kpi_and_missing_office(tmp_path: Path) -> None:
    """A KPI defined twice and a missing office file are both reported."""
    folder = _copy(tmp_path)
    shutil.copy(folder / "AP2.1.yaml", folder / "AP2.1-copy.yaml")
    (folder / "office.yaml").unlink()
    text = "\n".join(_problems(folder))
    assert "office file is missing" in text
    assert "AP2.1 is also defined in" in text


def test_rule_files_cannot_run_code(tmp_path: Path) -> None:
    """A python tag in a rule file is refused, never executed."""
    folder = _copy(tmp_path)
    marker = tmp_path / "ran"
    _edit(
        folder,
        "AP2.1.yaml",
        "name_en: Registration accuracy",
        f"name_en: !!python/object/apply:os.system ['touch {marker}']",
    )
    assert any("not allowed" in p for p in _problems(folder))
    assert not marker.exists()


def test_check_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`bsc-rules check` exits 0 on the shipped rules and 1 with the problems listed."""
    out = io.StringIO()
    assert main(["check"], stdout=out) == 0
    assert "KPI 10 項" in out.getvalue()
    folder = _copy(tmp_path)
    _edit(folder, "AP2.1.yaml", "owner: registration", "ownr: registration")
    assert main(["check", str(folder)], stdout=io.StringIO()) == 1
    assert "did you mean 'owner'?" in capsys.readouterr().err
