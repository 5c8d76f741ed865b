"""The wheel as a user gets it (service.md, "Install"; issue 9, "Done when").

A wheel is built from a copy of the project's files, installed with its dependencies (from
the index pip uses here) into a clean venv outside the checkout, and the installed
``bsc-rules`` runs ``check``, ``simulate``, ``evaluate`` and ``replay --maildir`` from
another folder. Run by ``make wheel-check`` (and CI); deselected from ``make test``
(marker ``package``: it installs a venv, 1-2 min).
"""

from __future__ import annotations

import email
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime
from email.policy import default
from pathlib import Path

import orjson
import pytest

from bsc_rules import Scorecard, load_ruleset
from bsc_rules.calendar import TAIPEI

pytestmark = pytest.mark.package

ROOT = Path(__file__).resolve().parents[2]
# What a wheel is built from: the project's metadata, code and shipped data (no tests,
# no build/ or egg-info left over from earlier builds).
SOURCES = ("pyproject.toml", "README.md", "src", "rules", "notifications")
AS_OF = "2017-12-31T23:59:59+08:00"
UNTIL = "2017-03-01T09:00:00+08:00"  # two monthly digests (Feb 1 and Mar 1, 08:00)


@dataclass(frozen=True)
class Installed:
    venv: Path
    work: Path  # a folder outside the checkout, the commands' working directory

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
        env["PATH"] = f"{self.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        return subprocess.run(
            args, cwd=self.work, env=env, capture_output=True, text=True, check=check
        )

    def python(self, code: str) -> str:
        return self.run(str(self.venv / "bin" / "python"), "-c", code).stdout.strip()


def _copy_project(into: Path) -> Path:
    """The files a wheel is built from, symlinks (the package data) kept as links."""
    into.mkdir()
    for name in SOURCES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(
                source,
                into / name,
                symlinks=True,
                ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"),
            )
        else:
            shutil.copy2(source, into / name)
    return into


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    base = tmp_path_factory.mktemp("wheel")
    project = _copy_project(base / "project")
    dist = base / "dist"
    pip = [sys.executable, "-m", "pip"]
    subprocess.run([*pip, "wheel", "-q", "--no-deps", "-w", dist, project], check=True)
    wheels = list(dist.glob("bsc_rules-*.whl"))
    assert len(wheels) == 1, wheels
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    subprocess.run([venv / "bin" / "python", "-m", "pip", "install", "-q", wheels[0]], check=True)
    work = base / "work"
    work.mkdir()
    return Installed(venv, work)


def _files(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def test_shipped_data_is_the_projects(installed: Installed) -> None:
    """The installed defaults are the wheel's package data, with the repo's files in them."""
    code = (
        "from bsc_rules.rules.ruleset import default_rules_dir as r;"
        "from bsc_rules.notify.render import DEFAULT_TEMPLATES as t;"
        "print(r()); print(t)"
    )
    rules_dir, templates = map(Path, installed.python(code).splitlines())
    for folder, name in ((rules_dir, "rules"), (templates, "notifications")):
        assert folder.is_relative_to(installed.venv), folder
        assert folder.parts[-2:] == ("data", name)
        assert _files(folder) == _files(ROOT / name)


def test_runs_without_the_demo_extra(installed: Installed) -> None:
    """aiosmtpd (the `demo` extra) is not installed, and `import bsc_rules` is the public API."""
    assert (
        installed.run(
            str(installed.venv / "bin" / "python"), "-c", "import aiosmtpd", check=False
        ).returncode
        != 0
    )
    version = installed.python("import bsc_rules; print(bsc_rules.__version__)")
    assert version == installed.python(
        "import importlib.metadata as m; print(m.version('bsc-rules'))"
    )


def test_check(installed: Installed) -> None:
    """`bsc-rules check` from another folder finds and validates the shipped rules."""
    out = installed.run("bsc-rules", "check").stdout
    kpis = len(load_ruleset().kpis)
    assert f"KPI {kpis} 項" in out, out


@pytest.fixture(scope="module")
def events(installed: Installed) -> Path:
    path = installed.work / "events.jsonl"
    installed.run("bsc-rules", "simulate", "--year", "2017", "--seed", "5", "--out", str(path))
    return path


def test_evaluate(installed: Installed, events: Path) -> None:
    """`bsc-rules evaluate` gives the report the checkout computes for the same file."""
    out = installed.run("bsc-rules", "evaluate", str(events), "--as-of", AS_OF, "--format", "json")
    card = Scorecard(matcher="python")
    card.ingest_lines(events.read_bytes().splitlines(keepends=True), origin=str(events))
    expected = card.report(datetime(2017, 12, 31, 23, 59, 59, tzinfo=TAIPEI)).as_json()
    assert orjson.loads(out.stdout) == orjson.loads(expected)
    assert len(orjson.loads(out.stdout)["kpis"]) == len(load_ruleset().kpis)


def test_replay_to_maildir(installed: Installed, events: Path) -> None:
    """`bsc-rules replay --maildir` renders the shipped templates into mail on disk."""
    maildir = installed.work / "mail"
    installed.run("bsc-rules", "replay", str(events), "--until", UNTIL, "--maildir", str(maildir))
    mails = [
        email.message_from_bytes(p.read_bytes(), policy=default)
        for p in sorted((maildir / "new").iterdir())
    ]
    assert mails
    subjects = [str(m["Subject"]) for m in mails]
    assert all(s.startswith("【") for s in subjects), subjects
    assert sum("月報" in s for s in subjects) >= 2, subjects
    assert all(m.get_body(("html",)) is not None for m in mails)
