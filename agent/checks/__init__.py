"""Consensus-health checks: pure functions of a Snapshot (and memory of recent periods) -> findings."""

from agent.checks.registry import REGISTRY, Context, Finding, Silence, run_checks

__all__ = ["REGISTRY", "Context", "Finding", "Silence", "run_checks"]
