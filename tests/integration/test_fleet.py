"""Many offices in one service (scheduling/fleet.py): the Taipei example's twelve offices
on a directory of SQLite files and on PostgreSQL shared by two services, each office's
mail to its own sections, the city's digest once, and a service whose lease was taken
over committing nothing more in the office's name. Time is a fake clock; the leases are
ticked by hand (``background=False``)."""

from __future__ import annotations

import io
import shutil
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from email import message_from_bytes
from email.policy import default
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from bsc_rules.calendar import TAIPEI, to_us
from bsc_rules.cli import main
from bsc_rules.clock import FakeClock
from bsc_rules.dev.simulate import simulate
from bsc_rules.errors import StoreError
from bsc_rules.notify.mailer import MaildirMailer
from bsc_rules.scheduling.fleet import CITY, Fleet, city_instant
from bsc_rules.settings import Settings
from bsc_rules.store.lock import DatabaseBusy

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "taipei"
FEB_2 = datetime(2017, 2, 2, 8, 0, tzinfo=TAIPEI)  # January's digests, the morning mail
FEB_3 = datetime(2017, 2, 3, 8, 0, tzinfo=TAIPEI)
CITY_TO = "household@civil-affairs.taipei.example.org"


@pytest.fixture(scope="module")
def january(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """January 2017 of the twelve offices, as the workflow would send them."""
    path = tmp_path_factory.mktemp("taipei") / "january.jsonl"
    with path.open("wb") as handle:
        for event in simulate(year=2017, seed=5, offices=_codes()):
            if event["time"] >= "2017-02":
                break
            handle.write(orjson.dumps(event) + b"\n")
    return path


def _codes() -> tuple[str, ...]:
    return tuple(sorted(p.stem for p in (EXAMPLE / "offices").glob("*.yaml")))


def ingest(events: Path, db: str) -> None:
    out = io.StringIO()
    argv = ["ingest", str(events), "--db", db, "--rules", str(EXAMPLE), "--matcher", "python"]
    assert main(argv, stdout=out, clock=FakeClock(FEB_2)) == 0, out.getvalue()


def settings(tmp_path: Path, db: str = "unused.db") -> Settings:
    rules = tmp_path / "rules"
    if not rules.exists():
        shutil.copytree(EXAMPLE, rules)
    return Settings(database=Path(db), rules=rules, matcher="python", tick_minutes=60)


def maildir(path: Path) -> list[Any]:
    """Every message written into the Maildir ``path``."""
    return [
        message_from_bytes(f.read_bytes(), policy=default) for f in sorted((path / "new").glob("*"))
    ]


def office_of(message: Any) -> str:
    """The office a message speaks for, from its recipients' domains (one per message)."""
    domains = {
        a.addr_spec.split("@")[1].split(".")[0]
        for h in ("To", "Cc")
        for a in (message[h].addresses if message[h] else ())
    }
    assert len(domains) == 1, domains
    return domains.pop()


# ---------------------------------------------------------------- a directory


def test_a_directory_fleet_mails_each_office_to_its_own_sections_and_the_city_once(
    tmp_path: Path, january: Path
) -> None:
    """One service for the twelve files: on 2 February each office's January digests and
    morning mail go to that office's own addresses, the city's digest goes once to 民政局;
    a second tick sends nothing more; a second service on the directory is refused."""
    db = f"{tmp_path / 'offices'}/"
    ingest(january, db)
    clock = FakeClock(FEB_2)
    box = tmp_path / "mail"
    with Fleet(settings(tmp_path, db), clock, db, mailer=MaildirMailer(box)) as fleet:
        fleet.start(background=False)
        assert fleet.held() == fleet.deployment.ordered()
        fleet.tick(to_us(clock.now()))  # again: nothing twice
        mail = maildir(box)
        ids = Counter(m["Message-ID"] for m in mail)
        assert ids
        assert max(ids.values()) == 1
        by_office = Counter(office_of(m) for m in mail)
        assert set(by_office) == {*_codes(), "civil-affairs"}
        assert by_office["civil-affairs"] == 1
        city = next(m for m in mail if office_of(m) == "civil-affairs")
        assert [a.addr_spec for a in city["To"].addresses] == [CITY_TO]
        assert city["X-BSC-Kind"] == "city"
        assert "106年1月" in city["Subject"]
        for code in _codes():  # each office's digest to its own director
            digests = [m for m in mail if office_of(m) == code and m["X-BSC-Kind"] == "digest"]
            assert any(f"director@{code}.example.org" in m["To"] for m in digests), code
        with pytest.raises(DatabaseBusy):
            Fleet(settings(tmp_path, db), clock, db, mailer=MaildirMailer(box)).start(
                background=False
            )


def test_the_city_digest_waits_for_the_last_office_and_goes_once(
    tmp_path: Path, january: Path
) -> None:
    """With one office sending its digest on the 3rd working day, the city's digest of
    January waits for it (the latest of the offices' instants), then goes once."""
    db = f"{tmp_path / 'offices'}/"
    ingest(january, db)
    config = settings(tmp_path, db)
    xinyi = config.rules / "offices" / "xinyi.yaml" if config.rules else None
    assert xinyi is not None
    text = xinyi.read_text(encoding="utf-8")
    xinyi.write_text(text.replace("  working_day: 1 ", "  working_day: 2 ", 1), "utf-8")
    clock = FakeClock(FEB_2)
    box = tmp_path / "mail"
    with Fleet(config, clock, db, mailer=MaildirMailer(box)) as fleet:
        assert city_instant(fleet.deployment, 2017, 1) == to_us(FEB_3)
        fleet.start(background=False)
        assert not [m for m in maildir(box) if m["X-BSC-Kind"] == "city"]
        clock.set(FEB_3)
        fleet.tick(to_us(FEB_3))
        fleet.tick(to_us(FEB_3))
        assert len([m for m in maildir(box) if m["X-BSC-Kind"] == "city"]) == 1


def test_an_office_outside_the_deployment_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="--office taichung: not in the deployment"):
        Fleet(settings(tmp_path), FakeClock(FEB_2), f"{tmp_path}/db/", offices=["taichung"])


# ---------------------------------------------------------------- PostgreSQL


@pytest.fixture
def two(tmp_path: Path, january: Path, pg_url: str) -> Iterator[dict[str, Any]]:
    """Two services on one PostgreSQL database, their offices spread by the leases."""
    ingest(january, pg_url)
    clock = FakeClock(FEB_2)
    box = tmp_path / "mail"
    config = settings(tmp_path)
    a = Fleet(config, clock, pg_url, mailer=MaildirMailer(box), holder="a")
    b = Fleet(config, clock, pg_url, mailer=MaildirMailer(box), holder="b")
    try:
        a.start(background=False)  # alone: every office and the city
        b.start(background=False)  # the others' leases still run: nothing yet
        assert len(a.held()) == 12
        assert b.held() == []
        a.apply(a.leases.tick())  # two live services: a lets go of its extra share
        b.apply(b.leases.tick())  # and b takes them
        yield {"a": a, "b": b, "clock": clock, "box": box, "url": pg_url}
    finally:
        a.close()
        b.close()


def holders(url: str) -> dict[str, str]:
    with psycopg.connect(url) as conn:
        return dict(conn.execute("SELECT office, holder FROM leases").fetchall())


def test_two_services_share_the_offices_and_send_each_message_once(
    two: dict[str, Any],
) -> None:
    """Twelve offices and the city over two services (7 and 6), each served by one; the
    mail of the first start from both goes out once per Message-ID, each office's to its
    own sections, the city's once."""
    a, b = two["a"], two["b"]
    assert set(a.held()).isdisjoint(b.held())
    assert sorted(a.held() + b.held()) == sorted(_codes())
    assert (a.city is None) != (b.city is None)  # the city's lease is held like an office's
    assert holders(two["url"])[CITY] == ("a" if a.city else "b")
    assert Counter(holders(two["url"]).values()) == Counter({"a": 7, "b": 6})
    now = to_us(two["clock"].now())
    a.tick(now)
    b.tick(now)
    mail = maildir(two["box"])
    assert max(Counter(m["Message-ID"] for m in mail).values()) == 1
    assert set(Counter(office_of(m) for m in mail)) == {*_codes(), "civil-affairs"}
    assert len([m for m in mail if m["X-BSC-Kind"] == "city"]) == 1


def test_a_service_whose_lease_was_taken_commits_nothing_more_for_the_office(
    two: dict[str, Any],
) -> None:
    """Another holder takes one of a's offices (the epoch moves on): a's next morning
    mail for that office rolls back (nothing queued in its name) while its other offices
    go on; a's next lease tick closes the office's service."""
    a, url = two["a"], two["url"]
    office = a.held()[0]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "UPDATE leases SET holder = 'c', epoch = epoch + 1,"
            " expires_at = now() + interval '1 hour' WHERE office = %s",
            (office,),
        )
    two["clock"].set(FEB_3)
    a.scheduled()  # logs the failed office, goes on with the others
    with psycopg.connect(url) as conn:
        queued = dict(
            conn.execute(
                "SELECT office, count(*) FROM outbox WHERE created_us >= %s GROUP BY office",
                (to_us(FEB_3),),
            ).fetchall()
        )
    assert office not in queued
    assert queued
    assert set(queued) <= set(a.held()) - {office}
    a.apply(a.leases.tick())
    assert office not in a.held()
    assert a.service(office) is None
    assert holders(url)[office] == "c"


def test_an_office_whose_connection_was_lost_is_opened_again_at_its_epoch(
    tmp_path: Path, january: Path, pg_url: str
) -> None:
    """The server ends one office's session (as a restart ends them all): its next read
    fails, and the keeper's next turn (``heal``) opens the office again at the epoch it
    holds, its state rebuilt from the log; the other offices' services are left as they
    were."""
    ingest(january, pg_url)
    clock = FakeClock(FEB_3)
    with Fleet(settings(tmp_path), clock, pg_url, mailer=MaildirMailer(tmp_path / "mail")) as fleet:
        fleet.start(background=False)
        office, other = fleet.held()[:2]
        lost, kept = fleet.service(office), fleet.service(other)
        assert lost is not None
        epoch = fleet.leases.held()[office]
        with psycopg.connect(pg_url, autocommit=True) as admin:
            pid = lost.pipeline.db.connection.info.backend_pid
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(StoreError):
            lost.pick_up()
        fleet.heal()
        again = fleet.service(office)
        assert again is not None
        assert again is not lost
        assert fleet.service(other) is kept
        assert fleet.leases.held()[office] == epoch
        assert again.pick_up() == 0  # the whole log applied when it opened
        again.tick(to_us(clock.now()))  # writes under the same epoch: the fence lets them in
