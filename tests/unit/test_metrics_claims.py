"""Claimed OS against the platform seen, and claimed hosters (agent/metrics/claims.py), on the real 2020-02-29
consensus and descriptors with contact lines rewritten to carry CIISS os: and hoster: fields."""

import copy

import pytest

from agent.metrics.claims import claim_points, claimed_os, seen_os
from agent.metrics.geoip import GeoIP
from agent.metrics.relays import NO_DESCRIPTOR, build_table
from tests.conftest import DATA

GEOIP = GeoIP.load(DATA / "geoip-excerpt")
TIME = 1582970400


@pytest.mark.parametrize("value, family", [
    ("Debian12", "linux"), ("ubuntu-24.04", "linux"), ("FreeBSD14.1", "freebsd"), ("OpenBSD", "openbsd"),
    ("macOS", "darwin"), ("Windows", "windows"), ("TempleOS", "other"), ("", None), (None, None)])
def test_claimed_os_values_map_to_a_few_families(value, family):
    assert claimed_os(value) == family


def test_seen_platforms_are_the_tables_families():
    assert (seen_os("Linux"), seen_os("FreeBSD"), seen_os("other"), seen_os(NO_DESCRIPTOR)) == (
        "linux", "freebsd", "other", "unknown")


def test_claims_are_counted_against_the_platform_seen_and_hosters_bounded(hour10, descriptors):
    base = build_table(hour10, descriptors, GEOIP)
    seen = {fp: platform for fp, platform in zip(base.fingerprints, base.platform) if platform != NO_DESCRIPTOR}
    linux = [fp for fp, platform in seen.items() if platform == "Linux"][:3]
    bsd = [fp for fp, platform in seen.items() if platform == "FreeBSD"][:1]
    assert len(linux) == 3 and len(bsd) == 1
    contacts = {linux[0]: "os:Debian hoster:Big-Host", linux[1]: "os:FreeBSD hoster:big-host",  # a wrong claim
                linux[2]: "hoster:Small\u00a0Host", bsd[0]: "os:freebsd13 hoster:tiny"}
    rewritten = []
    for descriptor in descriptors:
        if descriptor.fingerprint in contacts:
            descriptor = copy.copy(descriptor)
            descriptor.contact = contacts[descriptor.fingerprint].encode()
        rewritten.append(descriptor)
    table = build_table(hour10, rewritten, GEOIP)
    points = claim_points(table, table.contacts, 2, TIME)
    os_pairs = {(p.tags["claimed"], p.tags["seen"]): p.fields["relays"] for p in points
                if p.measurement == "tor_aroi_os"}
    assert os_pairs == {("linux", "linux"): 1, ("freebsd", "linux"): 1, ("freebsd", "freebsd"): 1}
    hosters = {p.tags["hoster"]: p.fields for p in points if p.measurement == "tor_aroi_hoster"}
    assert len(hosters) == 2 and hosters["big-host"]["relays"] == 2  # case folded into one tag; top 2 by weight
    weights = dict(zip(table.fingerprints, table.weight))
    expected = (weights[linux[0]] + weights[linux[1]]) / table.weight.sum()
    assert hosters["big-host"]["weight_fraction"] == pytest.approx(expected)
    assert all(tag.replace("-", "").replace("_", "").isalnum() for tag in hosters)
