"""Fault and abuse suites: crashes, database faults, hostile input, personal data, load.

Each suite runs a fast sample in ``make test``; ``BSC_FAULTS_LONG=1`` (``make faults-long``)
runs the long mode whose results ``docs/guarantees.md`` records.
"""
