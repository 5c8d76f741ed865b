"""A multi-office rule folder (service.md, "Deployments and --db"): the shared KPI files,
``offices/<code>.yaml`` per office with its own values where its scorecard differs,
``closures.yaml`` for every office, ``deployment.yaml`` for the city; the Taipei example."""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

import pytest

from bsc_rules.errors import RuleFileError
from bsc_rules.rules.offices import load_deployment, load_office
from bsc_rules.rules.ruleset import default_rules_dir, load_ruleset
from bsc_rules.scorecard import Scorecard
from tests.conftest import event

TAIPEI = Path(__file__).resolve().parents[2] / "examples" / "taipei"
CODES = {
    "songshan", "xinyi", "daan", "zhongshan", "zhongzheng", "datong",
    "wanhua", "wenshan", "nangang", "neihu", "shilin", "beitou",
}  # fmt: skip


def taipei(tmp_path: Path) -> Path:
    """A copy of the Taipei example (the linked KPI files copied as files)."""
    folder = tmp_path / "taipei"
    shutil.copytree(TAIPEI, folder)
    return folder


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, old
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def problems(folder: Path) -> list[str]:
    with pytest.raises(RuleFileError) as caught:
        load_deployment(folder)
    return [str(p).removeprefix(f"{folder}/") for p in caught.value.problems]


def test_the_taipei_example_has_twelve_offices_on_datongs_scorecard() -> None:
    deployment = load_deployment(TAIPEI)
    assert set(deployment.offices) == CODES
    assert deployment.ordered()[:3] == ["songshan", "xinyi", "daan"]
    assert deployment.ordered()[-1] == "beitou"
    datong = load_ruleset(default_rules_dir())
    for code, rules in deployment.offices.items():
        assert rules.code == code
        assert rules.office_file == TAIPEI / "offices" / f"{code}.yaml"
        assert rules.office.recipients.of("records") == (
            f"戶籍資料課 <records@{code}.example.org>",
        )
        assert {k: v.spec for k, v in rules.kpis.items()} == {
            k: v.spec for k, v in datong.kpis.items()
        }
        if code != "datong":  # each file says whose targets it has
            assert "Datong's" in rules.office_file.read_text(encoding="utf-8")
    city = deployment.city
    assert city is not None
    assert city.department == "臺北市政府民政局"
    assert city.recipients[0].endswith("example.org>")


def test_an_office_states_its_own_targets_history_and_parameters(tmp_path: Path) -> None:
    """Year by year and name by name over the shared file; the other offices keep it."""
    folder = taipei(tmp_path)
    edit(
        folder / "offices" / "xinyi.yaml",
        "kpis: {}",
        "kpis:\n  TL1.1:\n    targets: {2018: 95}\n    history: {2016: 98.5}\n"
        "    parameters: {headcount: 36}\n",
    )
    deployment = load_deployment(folder)
    own = deployment.offices["xinyi"].kpis["TL1.1"].spec
    assert own.targets == {2017: 100, 2018: 95, 2019: 100}
    assert own.history == {2014: 100, 2015: 100, 2016: 98.5}
    assert own.parameters == {"headcount": 36}
    shared = deployment.offices["songshan"].kpis["TL1.1"].spec
    assert (shared.targets[2018], shared.parameters["headcount"]) == (100, 40)


def test_a_kpi_a_parameter_or_a_value_the_kpi_file_refuses_is_located(tmp_path: Path) -> None:
    folder = taipei(tmp_path)
    edit(
        folder / "offices" / "wanhua.yaml",
        "kpis: {}",
        "kpis:\n  XX9.9: {targets: {2017: 1}}\n  TL1.1:\n    parameters: {staff: 3}\n"
        "  CC1.1:\n    parameters: {due_day: 31}\n",
    )
    found = problems(folder)
    line = len((folder / "offices" / "wanhua.yaml").read_text(encoding="utf-8").splitlines()) - 5
    assert found[0].startswith(f"offices/wanhua.yaml:{line}:3: kpis.XX9.9: no KPI file defines")
    assert found[1].startswith(
        f"offices/wanhua.yaml:{line + 2}:18: kpis.TL1.1.parameters.staff: TL1.1 has no parameter"
    )
    assert found[2] == (
        f"offices/wanhua.yaml:{line + 3}:3: kpis.CC1.1: "
        "measure.due.day_parameter: parameters.due_day must be a day 1-28"
    )
    assert len(found) == 3


def test_the_office_file_is_validated_as_an_office_file(tmp_path: Path) -> None:
    """Every office file's problems at once, located; the code is the file's name."""
    folder = taipei(tmp_path)
    edit(folder / "offices" / "daan.yaml", "code: daan", "code: da_an")
    edit(folder / "offices" / "beitou.yaml", "hour: 8 ", "hour: 25")
    found = problems(folder)
    assert found == [
        "offices/beitou.yaml:64:9: lists.hour: expected at most 23, got 25",
        "offices/daan.yaml:6:9: office.code: expected 'daan', the name of the file, got 'da_an'",
    ]


def test_a_folder_cannot_be_both_one_office_and_several(tmp_path: Path) -> None:
    folder = taipei(tmp_path)
    shutil.copy(default_rules_dir() / "office.yaml", folder / "office.yaml")
    edit(folder / "deployment.yaml", "shilin, beitou]", "shilin, beitou, tianmu]")
    found = problems(folder)
    assert found[0].startswith("office.yaml: a rule folder with offices/ describes each office")
    assert found[1].startswith("deployment.yaml:14:27: city.order[12]: 'tianmu' has no office")
    one = tmp_path / "one"
    shutil.copytree(default_rules_dir(), one, ignore=shutil.ignore_patterns("tests"))
    shutil.copy(folder / "deployment.yaml", one / "deployment.yaml")
    with pytest.raises(RuleFileError, match="belongs to a multi-office rule folder"):
        load_ruleset(one)


def test_city_closures_apply_to_every_office_and_an_offices_own_to_it(tmp_path: Path) -> None:
    folder = taipei(tmp_path)
    (folder / "closures.yaml").write_text("closures: [2017-07-31]\n", encoding="utf-8")
    edit(folder / "offices" / "neihu.yaml", "closures: []", "closures: [2017-08-01]")
    deployment = load_deployment(folder)
    for code, rules in deployment.offices.items():
        assert date(2017, 7, 31) in rules.calendar.closures
        assert (date(2017, 8, 1) in rules.calendar.closures) == (code == "neihu")


def test_a_scorecard_rereads_its_own_office_file(tmp_path: Path) -> None:
    """The service's calendar re-read reads offices/<code>.yaml, not office.yaml."""
    folder = taipei(tmp_path)
    card = Scorecard(load_office(folder, "nangang"), matcher="python")
    source = "/taipei/nangang/registration"
    applied = event("birth_subsidy.applied", "2017-03-15T10:00:00+08:00", "BS1", {"amount": 1},
                    source=source, office="nangang")  # fmt: skip
    assert card.ingest(applied).status == "accepted"
    assert card.reread_calendar() == 0
    edit(folder / "offices" / "nangang.yaml", "closures: []", "closures: [2017-03-22]")
    assert card.reread_calendar() == 1
    assert date(2017, 3, 22) in card.rules.calendar.closures
    assert card.rules.office_file == folder / "offices" / "nangang.yaml"
