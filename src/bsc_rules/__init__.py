"""bsc_rules: a public office's balanced scorecard as live rules."""

__version__ = "0.1.0"
