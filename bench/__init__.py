"""Benchmarks of bsc_rules at office, city and national scale, beside the alternatives.

``make bench`` (or ``python -m bench``) generates seeded inputs with the project's own
generator, runs every measurement in a fresh process (so peak RSS is per measurement),
and prints one table: each figure, its baseline, the ratio and the target it is held to.
``make bench QUICK=1`` (``--quick``) uses a smaller national sample and fewer samples and
takes a few minutes. See ``docs/benchmarks.md``.
"""
