"""Imports every check module so their checks are in the registry (order = report order within a severity)."""

from agent.checks import authority, bandwidth, consensus, probes, shared_random, votes  # noqa: F401
