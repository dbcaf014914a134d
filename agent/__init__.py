"""Allium Agent: watches the Tor network from the directory authorities' side."""

__version__ = "0.1.0"
