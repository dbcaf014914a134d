"""Unit-test fixtures: no embedded store.

The unit tests run as on a machine without Debian's victoria-metrics: with
no ``store.url`` every period waits in the outbox. The embedded store is
started for real by tests/integration/test_embedded_store.py and by the
integration tests that run the agent with its default store.
"""

import pytest


@pytest.fixture(autouse=True)
def _no_embedded_store(monkeypatch):
    import agent.store.store

    monkeypatch.setattr(agent.store.store, "start_embedded", lambda config: None)
