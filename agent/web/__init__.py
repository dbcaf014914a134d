"""The HTTP face: the subscription endpoints."""
