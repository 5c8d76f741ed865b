"""bsc_rules: a public office's balanced scorecard as live rules.

The public API is what ``__all__`` lists; every other module and name is private and may
change. Importing this package loads neither Jinja2, APScheduler nor durable_rules: they
load when mail is rendered, the service runs or the durable matcher is chosen.

    from bsc_rules import Scorecard

    with Scorecard.open("office.db") as card:
        card.ingest(event_json_line)
        print(card.report(as_of).as_json())
"""

from importlib.metadata import PackageNotFoundError, version

from bsc_rules.clock import Clock, FakeClock, SystemClock
from bsc_rules.errors import (
    BscRulesError,
    EventError,
    Problem,
    RuleFileError,
    SettingsError,
    StoreError,
    UsageError,
)
from bsc_rules.measures.cases import CaseState
from bsc_rules.measures.report import KpiResult, Report
from bsc_rules.rules.ruleset import RuleSet, load_ruleset
from bsc_rules.scorecard import Ingested, IngestSummary, Scorecard
from bsc_rules.settings import Settings, load_settings

try:
    __version__ = version("bsc-rules")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
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
]
