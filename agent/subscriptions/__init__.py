"""Relay-operator subscriptions: double opt-in, relay events, HTTP endpoints."""
