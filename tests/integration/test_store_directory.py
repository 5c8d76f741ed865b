"""Per-office SQLite files in one directory (`--db DIR`): one file per office, the key
(office, source, id), unknown offices' events kept in DIR/_rejected.db."""

from __future__ import annotations

import stat
from datetime import datetime
from pathlib import Path

import pytest

from bsc_rules.calendar import TAIPEI
from bsc_rules.errors import StoreError
from bsc_rules.events import Event, parse_line
from bsc_rules.scorecard import Scorecard
from bsc_rules.store.directory import OfficeDirectory, is_directory_form
from bsc_rules.store.sqlite import SQLiteStore
from tests.conftest import event, jsonl

AS_OF = datetime(2017, 12, 31, 23, 59, 59, tzinfo=TAIPEI)
VISIT = "immigrant_visit.reported"


def visit(id: str, office: str | None) -> dict:
    extra = {} if office is None else {"office": office}
    return event(VISIT, "2017-03-01T10:00:00+08:00", f"NV-{id}", {"method": "home"}, id=id, **extra)


def numbered(events: list[dict], *raw: bytes) -> list[tuple[int, bytes]]:
    return list(enumerate([*jsonl(events).splitlines(), *raw], 1))


def test_directory_form_of_db(tmp_path: Path) -> None:
    assert is_directory_form(tmp_path)
    assert is_directory_form(f"{tmp_path}/city/")
    assert not is_directory_form(tmp_path / "office.db")


def test_one_owner_only_file_per_office(tmp_path: Path) -> None:
    root = tmp_path / "city"
    with OfficeDirectory(root, ["datong", "wanhua"], create=True) as offices:
        paths = offices.create_all()
    assert paths == [root / "datong.db", root / "wanhua.db"]
    assert sorted(p.name for p in root.iterdir() if p.suffix == ".db") == ["datong.db", "wanhua.db"]
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in paths)
    with pytest.raises(StoreError, match="does not exist"):
        OfficeDirectory(tmp_path / "nope", ["datong"])


def test_codes_must_be_file_names(tmp_path: Path) -> None:
    for bad in ("_rejected", "../x", "Datong", ""):
        with pytest.raises(StoreError, match="office: expected a code"):
            OfficeDirectory(tmp_path, [bad])
    with (
        OfficeDirectory(tmp_path, ["datong"]) as offices,
        pytest.raises(StoreError, match="'wanhua' is not in the deployment"),
    ):
        offices.store("wanhua")


def test_route_by_office_and_keep_unknown_offices(tmp_path: Path) -> None:
    """Lines go to their office's file; the same (source, id) in two offices are two
    events; an unknown office's line, and one whose office cannot be told, are kept in
    DIR/_rejected.db."""
    lines = numbered(
        [visit("a", "datong"), visit("a", "wanhua"), visit("b", "zhongshan"), visit("c", None)],
        b"not json",
    )
    with OfficeDirectory(tmp_path, ["datong", "wanhua"]) as offices:
        routed = list(offices.route(lines, origin="city.jsonl"))
        assert [(o, n) for o, n, _ in routed] == [("datong", 1), ("wanhua", 2)]
        for office, _n, raw in routed:  # (per-office rule sets come with offices/*.yaml)
            store = offices.store(office)
            parsed = parse_line(raw)
            assert isinstance(parsed, Event)
            assert store.append(parsed) == "accepted"
            store.close()
        rejections = offices.rejected().rejections()
    assert [(line, field) for _o, line, _i, field, _r in rejections] == [
        (3, "office"),
        (4, "office"),
        (5, ""),
    ]
    assert "got 'zhongshan'" in rejections[0][4]
    assert "--office" in rejections[1][4]
    assert (tmp_path / "_rejected.db").is_file()
    for office in ("datong", "wanhua"):
        store = SQLiteStore(tmp_path / f"{office}.db")
        assert store.count() == 1
        store.close()


def test_route_default_office(tmp_path: Path) -> None:
    """Lines without an office take --office, or the deployment's only office; a line
    that is not JSON goes there too, to be rejected with its own reason."""
    lines = numbered([visit("a", None)], b"not json")
    with OfficeDirectory(tmp_path, ["datong", "wanhua"]) as offices:
        assert [o for o, _, _ in offices.route(lines, office="wanhua")] == ["wanhua"] * 2
    with OfficeDirectory(tmp_path, ["datong"]) as offices:
        assert [o for o, _, _ in offices.route(lines)] == ["datong"] * 2
        assert offices.existing() == []


def test_reopened_office_files_rebuild_each_scorecard(tmp_path: Path, rules) -> None:
    with OfficeDirectory(tmp_path, ["datong", "wanhua"]) as offices:
        for office, n, raw in offices.route(numbered([visit("a", "datong")])):
            with Scorecard(rules, store=offices.store(office), matcher="python") as card:
                card.ingest(raw, line=n)
    with OfficeDirectory(tmp_path, ["datong", "wanhua"]) as offices:
        assert offices.existing() == ["datong"]
        with Scorecard(rules, store=offices.store("datong"), matcher="python") as card:
            assert card.report(AS_OF).kpis["BC1.1"].value == 1
