"""Capacity forecast per role (guard, middle, exit), 7 and 30 days ahead, from the agent's daily means.

``model`` holds the forecaster the period flow feeds (River SNARIMAX against a
seasonal-naive baseline, the better one on rolling-origin evidence
published as ``tor_forecast`` points) and its state file; ``backtest``
scores both on the real 2010-2019 history (docs/forecast.md). A stage: it
depends on agent/model only.
"""
