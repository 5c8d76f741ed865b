"""What the benchmark runs on: scales, sizes, instants and paths (full and quick)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from bsc_rules.dev.simulate import office_factor

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
DATA = BENCH / "data"  # generated inputs and databases (git-ignored)
OUT = BENCH / "out"  # results, tables and profiles (git-ignored)

YEAR = 2017
SEED = 1  # the seed `make demo` uses
OFFICE = "datong"  # the office the project's rules/ describe
#: One office-year of Datong (seed 1): the size unit of the other scales.
DATONG_EVENTS = 39_096

#: Taipei City's twelve household registration offices (the city scale).
TAIPEI = (
    "songshan", "xinyi", "daan", "zhongshan", "zhongzheng", "datong",
    "wanhua", "wenshan", "nangang", "neihu", "shilin", "beitou",
)  # fmt: skip

#: The national scale: ≈10M events a year. The generator sizes an office at 0.6–1.8×
#: Datong (mean 1.2), so Taiwan's ≈370 offices would make ≈17M events; ≈10M (the issue's
#: national volume, and the size the 2-minute target is set for) is the first ~213 codes.
NATIONAL_EVENTS = 10_000_000
QUICK_NATIONAL_SAMPLE = 1_000_000  # --quick: a sample, figures extrapolated to 10M

#: Report instants (Asia/Taipei): mid-year (open cases, period filters) and the year's
#: final figures (every follow-up in).
MID_YEAR = "2017-06-30T23:59:59+08:00"
FINAL = "2018-03-31T23:59:59+08:00"
#: The alert pipeline replay runs to the end of January, as `make demo` does.
PIPELINE_UNTIL = "2018-01-31T23:59:59+08:00"
DIGEST_MONTH = (2017, 12)


def national_offices(events: int) -> tuple[str, ...]:
    """Taipei's twelve, then ``o013``, ``o014``… until the expected volume reaches ``events``."""
    offices = list(TAIPEI)
    expected = sum(office_factor(o) for o in offices) * DATONG_EVENTS
    while expected < events:
        code = f"o{len(offices) + 1:03d}"
        offices.append(code)
        expected += office_factor(code) * DATONG_EVENTS
    return tuple(offices)


@dataclass(frozen=True)
class Plan:
    """The sizes of one run."""

    quick: bool
    national_events: int  # events of the national input actually replayed
    latency_events: int  # events ingested one at a time (commit per event)
    open_cases: int  # open deadline cases for the memory measurement
    digest_repeats: int
    repeats: int  # runs of each short (one-office) throughput measurement; the median is kept
    profile: bool  # cProfile the paths whose target is missed

    @property
    def mode(self) -> str:
        return "quick" if self.quick else "full"


FULL = Plan(
    quick=False,
    national_events=NATIONAL_EVENTS,
    latency_events=20_000,
    open_cases=100_000,
    digest_repeats=5,
    repeats=3,
    profile=True,
)
QUICK = replace(
    FULL,
    quick=True,
    national_events=QUICK_NATIONAL_SAMPLE,
    latency_events=5_000,
    digest_repeats=3,
)
