"""The rule folder that ``python -m bench --only offices`` generates for its inputs."""

from __future__ import annotations

from pathlib import Path

from bench.offices import write_deployment

from bsc_rules.rules.offices import load_deployment


def test_every_office_of_the_input_gets_a_valid_office_file(tmp_path: Path) -> None:
    folder = write_deployment(tmp_path / "rules", ("datong", "o013", "o014"))
    deployment = load_deployment(folder)
    assert sorted(deployment.offices) == ["datong", "o013", "o014"]
    assert deployment.offices["o013"].office.office.name == "測試戶政事務所（o013）"
    # the shared KPI files are the project's, linked, not copied
    assert (folder / "AC1.1.yaml").is_symlink()
    assert not (folder / "office.yaml").exists()


def test_a_second_run_starts_from_a_fresh_folder(tmp_path: Path) -> None:
    write_deployment(tmp_path / "rules", ("datong", "o013"))
    folder = write_deployment(tmp_path / "rules", ("datong",))
    assert sorted(load_deployment(folder).offices) == ["datong"]
