"""Seeded inputs: JSON Lines from the project's generator, cached beside a manifest.

A rule set serves one office: an event whose ``office`` differs is rejected. The city and
national inputs therefore put every office's events into one office's stream: ``office``
becomes ``datong`` and ``subject`` gets the original office as a prefix
(``songshan/RG1060315001``), so that cases of different offices stay distinct (event
``id``s and ``source``s already name the office). One scorecard then carries the whole
city's or nation's state, which is what the scaling question asks: does the cost per
event stay flat as the state and the log grow? (One scorecard per office would only
show N copies of the one-office figures.) The one-office input is the generator's
output unchanged, so the DuckDB cross-check reads exactly what `bsc-rules evaluate` reads.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from bench.config import DATA, OFFICE, SEED, YEAR
from bsc_rules.dev import simulate as sim

CHUNK = 8192


@dataclass(frozen=True)
class Input:
    """One generated input file and what it holds."""

    name: str
    path: Path
    offices: int
    events: int
    bytes: int
    rewritten: bool
    seconds: float  # generation time when it was made (0 when read from the cache)


def _generator_version() -> str:
    """A digest of the generator's source: a changed generator invalidates the cache."""
    return hashlib.sha256(inspect.getsource(sim).encode()).hexdigest()[:16]


#: Bump when the rewrite changes: the cached inputs are then made again.
REWRITE_VERSION = 2


def _one_office(events: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every event as the one office's, its case id prefixed with its own office.

    A copy, never the generator's dict: ``simulate`` copies an event it has already yielded
    to make its duplicates, so changing the yielded dict would change them too (they
    would come out prefixed twice: a conflict, not a duplicate).
    """
    for event in events:
        yield {**event, "subject": f"{event['office']}/{event['subject']}", "office": OFFICE}


def _write(events: Iterable[dict[str, Any]], path: Path) -> int:
    count, lines = 0, []
    with path.open("wb") as out:
        for event in events:
            lines.append(orjson.dumps(event))
            count += 1
            if len(lines) == CHUNK:
                out.write(b"\n".join(lines) + b"\n")
                lines.clear()
        if lines:
            out.write(b"\n".join(lines) + b"\n")
    return count


def ensure(name: str, offices: tuple[str, ...], *, rewrite: bool) -> Input:
    """The input ``name`` for ``offices``, generated unless the cached copy matches."""
    DATA.mkdir(parents=True, exist_ok=True)
    path = DATA / f"{name}.jsonl"
    manifest = path.with_suffix(".json")
    key = {
        "year": YEAR,
        "seed": SEED,
        "offices": list(offices),
        "rewrite": REWRITE_VERSION if rewrite else None,
        "generator": _generator_version(),
    }
    if manifest.exists() and path.exists():
        saved = json.loads(manifest.read_text())
        if saved.get("key") == key and saved.get("bytes") == path.stat().st_size:
            return Input(name, path, len(offices), saved["events"], saved["bytes"], rewrite, 0.0)
    start = time.perf_counter()
    events = sim.simulate(year=YEAR, seed=SEED, offices=offices)
    count = _write(_one_office(events) if rewrite else events, path)
    seconds = time.perf_counter() - start
    made = Input(name, path, len(offices), count, path.stat().st_size, rewrite, seconds)
    record = {"key": key, **{k: v for k, v in asdict(made).items() if k != "path"}}
    manifest.write_text(json.dumps(record, indent=1))
    return made
