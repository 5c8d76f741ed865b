"""``--db`` in its three forms for ``ingest`` and ``status`` (service.md, "Deployments and
--db"): a many-office file ingested into a directory of per-office files or into
PostgreSQL reports, office by office, what each office's own SQLite file reports; an
office outside the deployment is rejected and kept; ``--office`` where ambiguous;
``status --all-offices`` one report per office."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import Any

import orjson
import pytest

from bsc_rules.cli import main
from bsc_rules.dev.simulate import simulate
from bsc_rules.rules.ruleset import default_rules_dir
from bsc_rules.store.directory import is_directory_form
from bsc_rules.store.postgres import PostgresStore
from bsc_rules.store.sqlite import SQLiteStore

AS_OF = "2017-02-28T23:59:59+08:00"
OFFICES = ("datong", "wanhua")


def run(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    code = main(argv, stdout=out)
    return code, out.getvalue()


@pytest.fixture(scope="module")
def city(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two months of two offices (Datong's rule set, and a copy of it for Wanhua), plus a
    line of an office outside the deployment; each office's own file; its rule folders."""
    root = tmp_path_factory.mktemp("city")
    rules: dict[str, Path] = {}
    for code in OFFICES:
        folder = root / f"rules-{code}"
        shutil.copytree(default_rules_dir(), folder, ignore=shutil.ignore_patterns("tests"))
        office = folder / "office.yaml"
        office.write_text(
            office.read_text(encoding="utf-8").replace("code: datong", f"code: {code}")
        )
        rules[code] = folder
    events = []
    for e in simulate(year=2017, seed=7, offices=OFFICES):
        if e["time"] >= "2017-03-01":
            break
        events.append(e)
    stranger = dict(events[0], id="beitou-1", office="beitou", source="/taipei/beitou/records")
    mixed = [*events[:100], stranger, *events[100:]]
    both = root / "both.jsonl"
    both.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in mixed))
    per_office = {}
    for code in OFFICES:
        path = root / f"{code}.jsonl"
        path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events if e["office"] == code))
        per_office[code] = path
    return {"rules": rules, "both": both, "files": per_office, "root": root}


def rules_args(city: dict[str, Any]) -> list[str]:
    return [arg for code in OFFICES for arg in ("--rules", str(city["rules"][code]))]


@pytest.fixture(scope="module")
def expected(city: dict[str, Any]) -> dict[str, Any]:
    """Each office's report from its own SQLite file (the one-office deployment)."""
    reports = {}
    for code in OFFICES:
        db = city["root"] / f"only-{code}.db"
        rules = ["--rules", str(city["rules"][code]), "--matcher", "python"]
        assert run(["ingest", str(city["files"][code]), "--db", str(db), *rules])[0] == 0
        code_, text = run(["status", "--db", str(db), "--as-of", AS_OF, "--format", "json", *rules])
        assert code_ == 0
        reports[code] = json.loads(text)
    assert reports["datong"] != reports["wanhua"]  # two offices, two different reports
    return reports


def status(db: str, city: dict[str, Any], *extra: str) -> tuple[int, str]:
    return run(["status", "--db", db, "--as-of", AS_OF, *rules_args(city), "--matcher", "python",
                *extra])  # fmt: skip


def ingest_both(db: str, city: dict[str, Any]) -> str:
    code, text = run(["ingest", str(city["both"]), "--db", db, *rules_args(city),
                      "--matcher", "python"])  # fmt: skip
    assert code == 3, text  # the line of beitou was rejected
    assert "不屬本部署之戶所：退回 1 筆" in text
    return text


def kept_ids(db: str) -> list[str]:
    """``bsc-rules rejected --office _rejected``: the ids of the lines of no known office;
    every office of the city has none of its own."""
    for code in OFFICES:
        done, text = run(["rejected", "--db", db, "--office", code, "--format", "json"])
        assert (done, json.loads(text)) == (0, [])
    done, text = run(["rejected", "--db", db, "--office", "_rejected", "--format", "json"])
    assert done == 0
    return [row["id"] for row in json.loads(text)]


def check_reports(db: str, city: dict[str, Any], expected: dict[str, Any]) -> None:
    for code in OFFICES:
        done, text = status(db, city, "--office", code, "--format", "json")
        assert done == 0, text
        assert json.loads(text) == expected[code]
    done, text = status(db, city, "--all-offices", "--format", "json")
    assert done == 0
    assert json.loads(text) == expected
    done, text = status(db, city, "--all-offices")
    assert text.index("（datong）】") < text.index("（wanhua）】")  # 【name（code）】
    assert text.count("年度平衡計分卡") == 2


def test_postgres_reports_what_each_office_file_reports(
    pg_url: str, city: dict[str, Any], expected: dict[str, Any]
) -> None:
    ingest_both(pg_url, city)
    check_reports(pg_url, city, expected)
    assert kept_ids(pg_url) == ["beitou-1"]
    again = ingest_both(pg_url, city)  # idempotent: all duplicates
    assert "新增 0 筆" in again


def test_the_directory_form_reports_what_each_office_file_reports(
    tmp_path: Path, city: dict[str, Any], expected: dict[str, Any]
) -> None:
    db = f"{tmp_path / 'city'}/"
    assert is_directory_form(db)
    ingest_both(db, city)
    names = sorted(p.name for p in (tmp_path / "city").glob("*.db"))
    assert names == ["_rejected.db", "datong.db", "wanhua.db"]
    check_reports(db, city, expected)
    assert kept_ids(db) == ["beitou-1"]


def test_office_is_required_where_ambiguous(
    tmp_path: Path, city: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "city"
    db.mkdir()
    for code in OFFICES:
        SQLiteStore(db / f"{code}.db").close()
    assert status(str(db), city, "--format", "json")[0] == 2
    err = capsys.readouterr().err
    assert "--office" in err
    assert "datong、wanhua" in err
    assert status(str(db), city, "--office", "beitou")[0] == 2
    assert "沒有戶所 'beitou'" in capsys.readouterr().err
    assert status(str(db), city, "--office", "datong", "--all-offices")[0] == 2


def test_a_sqlite_file_needs_no_office(tmp_path: Path, city: dict[str, Any]) -> None:
    """One rule set, one file: as before, no --office needed (nor a second rule set)."""
    db = tmp_path / "office.db"
    rules = ["--rules", str(city["rules"]["wanhua"]), "--matcher", "python"]
    assert run(["ingest", str(city["files"]["wanhua"]), "--db", str(db), *rules])[0] == 0
    done, text = run(["status", "--db", str(db), "--as-of", AS_OF, *rules, "--all-offices",
                      "--format", "json"])  # fmt: skip
    assert done == 0
    assert list(json.loads(text)) == ["wanhua"]


def test_the_offices_postgres_holds_are_read_back_exactly(pg_url: str) -> None:
    """Any office code (upper case, CJK, a quote) comes back from its partition as given."""
    from bsc_rules.store.dbform import held_offices

    assert held_offices(pg_url) == []
    codes = ["datong", "Datong", "大同", "o'x", "a\\b"]
    for code in codes:
        PostgresStore(pg_url, code).close()
    PostgresStore(pg_url, "_rejected", partition=False).close()
    assert held_offices(pg_url) == sorted(codes)


@pytest.mark.parametrize("form", ["directory", "postgres"])
def test_two_workers_ingest_what_one_process_does(
    form: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    city: dict[str, Any],
    expected: dict[str, Any],
) -> None:
    """``--workers 2`` on two offices, dealt to two processes: the summary adds them
    up to the single process's counts, the reports are each office file's, the line of an
    office outside the deployment is kept once."""
    db = request.getfixturevalue("pg_url") if form == "postgres" else f"{tmp_path / 'city'}/"
    single = tmp_path / "single"
    one = run(["ingest", str(city["both"]), "--db", f"{single}/", *rules_args(city),
               "--matcher", "python"])  # fmt: skip
    two = run(["ingest", str(city["both"]), "--db", db, *rules_args(city), "--matcher",
               "python", "--workers", "2"])  # fmt: skip
    assert two[0] == one[0] == 3
    assert two[1].replace(db, "DB") == one[1].replace(f"{single}/", "DB")
    assert "  datong：新增" in two[1]
    assert "  wanhua：新增" in two[1]
    check_reports(db, city, expected)
    if form == "directory":
        kept = SQLiteStore(tmp_path / "city" / "_rejected.db")
    else:
        kept = PostgresStore(db, "_rejected", partition=False)
    assert [r[2] for r in kept.rejections()] == ["beitou-1"]
    kept.close()


def test_workers_need_a_multi_office_database(
    tmp_path: Path, city: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "office.db")
    code, _ = run(["ingest", str(city["files"]["datong"]), "--db", db, "--workers", "2"])
    assert code == 2
    assert "--workers" in capsys.readouterr().err
    assert not Path(db).exists()


def test_a_password_in_the_url_is_never_printed(capsys: pytest.CaptureFixture[str]) -> None:
    from tests import pg

    url = f"postgresql://bsc:s3cret-pw@127.0.0.1:{pg.free_port()}/city"
    for argv in (["status", "--db", url, "--office", "datong"], ["db", "upgrade", "--db", url]):
        assert run(argv)[0] == 1
        err = capsys.readouterr().err
        assert "127.0.0.1" in err
        assert "s3cret-pw" not in err
    assert run(["status", "--db", f"{url}?password=s3cret-pw", "--office", "datong"])[0] == 1
    assert "s3cret-pw" not in capsys.readouterr().err
