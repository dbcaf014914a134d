"""The shared vocabulary every stage speaks.

Points, findings and severities, time helpers, the Snapshot, authorities,
router entry columns, alerts and the exception tree. Imports nothing else of
the agent.
"""
