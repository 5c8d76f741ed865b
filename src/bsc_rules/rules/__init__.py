"""The rule files: YAML with source positions (:mod:`.sourcemap`) validated into a rule
set (:mod:`.ruleset`).
"""
