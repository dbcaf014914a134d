"""Pure metrics: Snapshot (+ the previous period's relays) -> points (``period.snapshot_points``).

The metric catalogue is ``catalogue.csv``; this package imports nothing itself.
"""
