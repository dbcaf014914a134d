"""Allium's reliability category for verified operators (agent/metrics/aroi_reliability.py), on the real
2020-02-29 consensus with 30 relays' contact lines rewritten to claim one domain and 5 another."""

import copy
import math

import numpy as np
import pytest

from agent.metrics.aroi_reliability import MIN_RELAYS, aroi_reliability_points
from agent.metrics.geoip import GeoIP
from agent.metrics.relays import NO_DESCRIPTOR, build_table
from agent.model.aroi import DomainProof, ProofBook
from tests.conftest import DATA

TIME = 1582970400


def claim(domain):
    return f"url:https://{domain} proof:uri-rsa ciissversion:2".encode()


@pytest.fixture(scope="module")
def scenario(hour10, descriptors):
    base = build_table(hour10, descriptors, GeoIP.load(DATA / "geoip-excerpt"))
    chosen = [fp for fp, platform in zip(base.fingerprints, base.platform) if platform != NO_DESCRIPTOR][:36]
    big, small, impostor = chosen[:30], chosen[30:35], chosen[35]
    contacts = {fp: claim("big.example") for fp in big + [impostor]} | {fp: claim("small.example") for fp in small}
    rewritten = []
    for descriptor in descriptors:
        if descriptor.fingerprint in contacts:
            descriptor = copy.copy(descriptor)
            descriptor.contact = contacts[descriptor.fingerprint]
        rewritten.append(descriptor)
    table = build_table(hour10, rewritten, GeoIP.load(DATA / "geoip-excerpt"))
    proofs = ProofBook({("big.example", "uri-rsa"): DomainProof("big.example", "uri-rsa", TIME, frozenset(big)),
                        ("small.example", "uri-rsa"): DomainProof("small.example", "uri-rsa", TIME,
                                                                  frozenset(small))})
    return table, proofs, big, impostor


def test_the_reliability_champion_is_the_weighted_uptime_of_verified_relays(scenario):
    table, proofs, big, impostor = scenario
    rows = {fp: index for index, fp in enumerate(table.fingerprints)}
    running = np.full(len(table), np.nan)
    for number, fp in enumerate(big):
        running[rows[fp]] = 0.5 if number % 2 else 1.0
    running[rows[big[0]]] = np.nan  # unknown: left out
    running[rows[impostor]] = 0.0  # claims the domain, not listed: does not count
    points = aroi_reliability_points(table, running, proofs, TIME)
    [operator] = [p for p in points if p.measurement == "tor_aroi_operator"]
    known = [rows[fp] for fp in big[1:]]
    weights = table.weight[known]
    expected = float((running[known] * weights).sum() / weights.sum())
    assert operator.tags == {"domain": "big.example"}  # small.example has fewer than MIN_RELAYS relays
    assert operator.fields["running_30d"] == pytest.approx(expected) and 0.5 < expected < 1.0
    [champion] = [p for p in points if p.measurement == "tor_aroi_champion"]
    assert champion.tags == {"category": "reliability", "domain": "big.example"}
    assert champion.fields["score"] == pytest.approx(expected)
    assert len(big) >= MIN_RELAYS


def test_without_proofs_or_scores_nothing_is_written(scenario):
    table, proofs, big, _ = scenario
    assert aroi_reliability_points(table, np.ones(len(table)), None, TIME) == []
    assert aroi_reliability_points(table, np.full(len(table), math.nan), proofs, TIME) == []
