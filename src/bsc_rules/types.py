"""The closed sets of words that travel between the stages, named once.

Sections, KPI statuses, case and alert states, units, directions and kinds: every stage
imports them from here (the ground layer), so that a value one stage writes is a value
another stage reads, and mypy says so where they disagree.
"""

from __future__ import annotations

from typing import Literal

Section = Literal["registration", "records", "general_affairs", "director"]
"""The office's sections and the director (kpis.md, "Organisation")."""

KpiStatus = Literal["met", "on_track", "at_risk", "breached", "no_data", "no_target"]
"""A KPI's status in a report (kpis.md, "Status")."""

CaseStateName = Literal["due_soon", "overdue"]
"""Where an open deadline case stands at an instant."""

AlertState = Literal["due_soon", "overdue", "at_risk", "breached"]
"""The states an alert can be in (notifications.md, "Alerts")."""

AlertKind = Literal["due_soon", "overdue", "at_risk", "breached", "resolved"]
"""What a notification is about: an alert state, or its end."""

Unit = Literal["percent", "count", "pages"]
Direction = Literal["higher", "lower"]
KpiKind = Literal["rate", "progress"]
