"""Alerts: the lifecycle (pure steps), the table of records, the pipeline that decides."""
