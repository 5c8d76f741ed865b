"""The fault suites' session hooks: the totals of a long run go to out/faults-long.json."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import pytest

from tests.faults.harness import LONG, RESULTS, TALLY


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return platform.processor() or platform.machine()
    for line in text.splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Write what a long run did, with the date, the machine and the failures."""
    if not LONG or not TALLY:
        return
    summary = {
        "date": time.strftime("%Y-%m-%d %H:%M %z"),
        "machine": {
            "cores": os.cpu_count(),
            "cpu": _cpu_model(),
            "python": platform.python_version(),
            "system": platform.platform(),
        },
        "tests": session.testscollected,
        "failures": session.testsfailed,
        "exit_status": int(exitstatus),
        "suites": {suite: dict(counts) for suite, counts in sorted(TALLY.items())},
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
