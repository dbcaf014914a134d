"""The detectors on fragments of real hourly history (../shared/timeseries/alireza-tor-nodes: which relays
Onionoo listed as running, snapshot after snapshot, 2024-2026), through ``Detector.update`` as the daemon
calls it: a gap no longer blinds them, and one change is one alert."""

from dataclasses import replace
from pathlib import Path

import pytest

from agent.config.loader import load_config
from agent.detect.engine import Detector
from agent.detect.incident import INCIDENT, PART_OF
from agent.evaluation.evaluate import firing
from agent.evaluation.populations import periods

SERIES = Path(__file__).resolve().parents[3] / "shared" / "timeseries" / "alireza-tor-nodes"
FLOOD, REMOVAL = 13425, 13447  # 2025-11-20T20Z: 860 relays joined, 848 never seen; 2025-11-21T19Z: 926 left
START = 13250  # a week before: past the warm-up and the 72 h a memory needs before "never seen"

pytestmark = pytest.mark.skipif(not SERIES.is_dir(), reason="needs ../shared/timeseries")


@pytest.fixture(scope="module")
def history():
    """(snapshot, facts) of snapshots START..REMOVAL + 2."""
    return list(periods(SERIES, None, START, REMOVAL + 3))


@pytest.fixture(scope="module")
def settings():
    return load_config(None, environ={}).detect.settings


def replay(history, settings, skip=frozenset()):
    """Each period's DetectionResult by snapshot index, the snapshots in ``skip`` never shown."""
    detector, results = Detector(settings), {}
    for snapshot, facts in history:
        if snapshot.index not in skip:
            results[snapshot.index] = detector.update(facts)
    return results


def test_a_departure_after_a_five_hour_gap_is_caught(history, settings):
    """The four snapshots before the 926-relay removal are missing, as when the agent or the source skips
    hours: the period after the gap is compared with the last one seen. Before, a gap of more than three
    periods meant "nothing known about churn" and this departure went unreported."""
    results = replay(history, settings, skip=set(range(REMOVAL - 4, REMOVAL)))
    after = results[REMOVAL]
    left = next(v for v in after.verdicts if v.series == "left")
    assert left.observed >= 900 and left.anomalous
    assert "baseline left" in firing(after)


def test_ordinary_gap_churn_is_not_an_incident(history, settings):
    """Five missing snapshots in an ordinary stretch (no event around them): the hours of churn that piled
    up are judged against five periods' allowance, and nothing alarms."""
    gap = set(range(13380, 13385))
    results = replay(history[:140], settings, skip=gap)
    after = results[13385]
    assert next(v for v in after.verdicts if v.series == "joined").observed > 0
    assert [f.description for f in after.findings if f.silenced_by is None] == []


def test_a_flood_is_one_incident_listing_what_each_detector_saw(history, settings):
    """The 2025-11-20T20Z flood (860 relays joined, 848 never seen) fires several detectors; they become one
    warning, the parts kept and silenced as its parts."""
    result = replay(history[:FLOOD - START + 1], settings)[FLOOD]
    alarms = [f for f in result.findings if f.silenced_by is None]
    assert [f.check for f in alarms] == [INCIDENT]
    [incident] = alarms
    assert incident.severity == "warning" and incident.values["detectors"] >= 2
    parts = [f for f in result.findings if f.silenced_by == PART_OF]
    assert len(parts) == incident.values["parts"] >= 2
    assert "[baseline] joined is 860" in incident.description
    assert {"baseline joined", "rule new_relays"} <= firing(result)


def test_the_flood_does_not_echo_in_the_baselines(history, settings):
    """An anomalous period is not learned: the hours after the flood are judged against the network before
    it, and the baselines stay quiet (a few dozen stragglers of the flood still trip DocTor's 50-relay rule
    in the next hour, which is right: they are never-seen relays)."""
    results = replay(history[:FLOOD - START + 4], settings)
    for index in (FLOOD + 1, FLOOD + 2, FLOOD + 3):
        assert not {name for name in firing(results[index]) if name.startswith("baseline")}


def test_settings_follow_the_config(history, settings):
    """A higher tail multiple raises the limit: the same flood is still far beyond it."""
    calmer = replace(settings, tail_multiple=4.0)
    result = replay(history[:FLOOD - START + 1], calmer)[FLOOD]
    joined = next(v for v in result.verdicts if v.series == "joined")
    assert joined.anomalous and joined.high > next(
        v for v in replay(history[:FLOOD - START + 1], settings)[FLOOD].verdicts if v.series == "joined").high
