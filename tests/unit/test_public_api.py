"""The public API (service.md, "Install"): ``bsc_rules.__all__``, a light import, and the
README's embedding example run as written."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import orjson
import pytest

import bsc_rules
from bsc_rules.calendar import TAIPEI
from bsc_rules.errors import BscRulesError
from tests.conftest import event

ROOT = Path(__file__).resolve().parents[2]

PUBLIC = {
    "BscRulesError",
    "CaseState",
    "Clock",
    "EventError",
    "FakeClock",
    "IngestSummary",
    "Ingested",
    "KpiResult",
    "Problem",
    "Report",
    "RuleFileError",
    "RuleSet",
    "Scorecard",
    "Settings",
    "SettingsError",
    "StoreError",
    "SystemClock",
    "UsageError",
    "__version__",
    "load_ruleset",
    "load_settings",
}
ERRORS = {"EventError", "RuleFileError", "SettingsError", "StoreError", "UsageError"}
HEAVY = ("jinja2", "apscheduler", "durable", "aiosmtpd", "PIL")


def test_all_is_pinned() -> None:
    """__all__ is exactly the documented API, each name defined and listed once."""
    assert len(bsc_rules.__all__) == len(set(bsc_rules.__all__))
    assert set(bsc_rules.__all__) == PUBLIC
    for name in bsc_rules.__all__:
        assert getattr(bsc_rules, name) is not None, name


def test_errors_are_one_tree() -> None:
    """Every exported error is a BscRulesError, the base itself included."""
    assert bsc_rules.BscRulesError is BscRulesError
    for name in ERRORS:
        assert issubclass(getattr(bsc_rules, name), BscRulesError), name


def test_version_is_the_installed_distribution() -> None:
    assert bsc_rules.__version__ == importlib.metadata.version("bsc-rules")


def test_import_is_light() -> None:
    """``import bsc_rules`` loads neither Jinja2, APScheduler, durable_rules nor aiosmtpd
    (a fresh interpreter: this one has loaded them for other tests)."""
    code = f"import sys, bsc_rules; print([m for m in {HEAVY!r} if m in sys.modules])"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == "[]"


def readme_example() -> str:
    """The first Python block of README.md (the embedding example)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(r"```python\n(.*?)```", text, re.DOTALL)
    assert found is not None, "README.md has no ```python block"
    return found.group(1)


def test_readme_example_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's example, as written, stores the event in office.db and prints the
    report as JSON text that counts it."""
    monkeypatch.chdir(tmp_path)
    scanned = event("archive.scanned", "2017-03-01T10:00:00+08:00", "AS1", {"forms": 300})
    exec(readme_example(), {"event_json_line": orjson.dumps(scanned).decode()})
    report = orjson.loads(capsys.readouterr().out)
    assert report["as_of"].startswith("2017-06-30T23:59:59")
    assert report["kpis"]["AC1.1"]["numerator"] == 300
    assert (tmp_path / "office.db").stat().st_size > 0


def test_as_json_is_the_text_of_as_dict(rules: bsc_rules.RuleSet) -> None:
    """report.as_json() is the JSON text of report.as_dict()."""
    card = bsc_rules.Scorecard(rules, matcher="python")
    card.ingest(event("archive.scanned", "2017-03-01T10:00:00+08:00", "AS1", {"forms": 300}))
    report = card.report(datetime(2017, 12, 31, 23, 59, 59, tzinfo=TAIPEI))
    text = report.as_json()
    assert isinstance(text, str)
    assert orjson.loads(text) == report.as_dict()
