"""Storage: the outbox every period goes through, then the TSDB (``store.Store``); the only influxdb_client user.

This package imports nothing itself, so reading ``store.settings`` stays light.
"""
