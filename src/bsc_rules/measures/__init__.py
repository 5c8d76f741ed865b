"""Measures: case records per subject, KPI aggregates and deadlines (:mod:`.cases`);
targets, statuses and the JSON report (:mod:`.report`).
"""
