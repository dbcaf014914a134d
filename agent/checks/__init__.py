"""Consensus-health checks: pure functions of a Snapshot (and memory of recent periods) -> findings.

``catalog.CHECKS`` lists them, ``run.run_checks`` runs them; this package
imports nothing itself, so reading ``checks.settings`` loads no check.
"""
