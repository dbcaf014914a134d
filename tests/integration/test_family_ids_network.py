"""tor 0.4.9 family IDs on a real private network: two relays with one FamilyId and no MyFamily line.

The network is this module's own (three authorities, two relays), so the shared ``tor_network`` keeps its
relays' families as the other tests expect. The family key is made by ``tor --keygen-family`` and its secret
file put in each relay's KeyDirectory (DataDirectory/keys) before tor starts; both relays get the same
ContactInfo, so without the family ID they would be one operator's relays with no family (TorFamilyUndeclared).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from datetime import datetime, timedelta

import pytest

from agent.checks.registry import Context
from agent.checks.run import run_checks
from agent.config.loader import load_config
from agent.loop.collect import collect
from agent.metrics.geoip import GeoIP
from agent.metrics.relays import build_table
from agent.model.family import family_ids, operator_families
from agent.model.time import unix
from agent.testnet import network as testnet
from tests.integration.conftest import require_tor, running
from tests.integration.sockets import off_loopback

pytestmark = [pytest.mark.integration, pytest.mark.slow]
CONTACT = "allium-agent testnet family operator <family@example.invalid>"
FAMILY_CHECKS = ("TorFamilyNotMutual", "TorFamilyUndeclared", "TorFamilyCertInvalid", "TorFamilyCertExpiring")


@pytest.fixture(scope="module")
def family_network(tmp_path_factory):
    """A private network whose two relays share one FamilyId (and a contact line); its family ID."""
    require_tor()
    directory = tmp_path_factory.mktemp("family-testnet")
    network = testnet.create(directory / "net", authorities=3, relays=2)
    made = subprocess.run(["tor", "--keygen-family", str(directory / "family")], capture_output=True, text=True,
                          timeout=60, check=True)
    [family_id] = [line.split()[1] for line in made.stdout.splitlines() if line.startswith("FamilyId ")]
    assert (directory / "family.public_family_id").read_text().strip() == family_id
    for relay in network.relays:
        shutil.copy(directory / "family.secret_family_key", relay.data_dir / "keys" / "family.secret_family_key")
        lines = relay.torrc_path.read_text().splitlines()
        lines = [f"ContactInfo {CONTACT}" if line.startswith("ContactInfo ") else line for line in lines]
        assert not any(line.startswith("MyFamily") for line in lines)
        relay.torrc_path.write_text("\n".join(lines + [f"FamilyId {family_id}"]) + "\n")
    with running(network):
        yield network, family_id


def _period_with_both_descriptors(network, timeout: float = 60.0):
    """A period the agent collected (as ``once`` does) holding both relays' server descriptors."""
    config = load_config(network.directory / testnet.AGENT_CONFIG, environ={})
    wanted = {relay.fingerprint for relay in network.relays}
    end = time.monotonic() + timeout
    while True:
        snapshot = collect(config)
        if snapshot.latest_consensus() is not None \
                and wanted <= {d.fingerprint for d in snapshot.server_descriptors}:
            return config, snapshot
        assert time.monotonic() < end, "the relays' descriptors did not arrive"
        time.sleep(1.0)


def test_two_relays_with_one_family_id_are_one_family(family_network):
    network, family_id = family_network
    for node in network.nodes:
        assert off_loopback(network.pids[node.name]) == [], f"{node.name} has sockets off 127.0.0.1"
    config, snapshot = _period_with_both_descriptors(network)
    relays = {relay.fingerprint: relay.name for relay in network.relays}
    descriptors = [d for d in snapshot.server_descriptors if d.fingerprint in relays]
    now = snapshot.latest_consensus().valid_after
    for descriptor in descriptors:
        assert not descriptor.family  # no MyFamily line: the family ID is all that joins them
        [cert] = descriptor.family_certs
        print(f"\n{descriptor.nickname}: {cert.describe(unix(now))}, family ID {cert.family_id}")
        assert (cert.family_id, cert.problem) == (family_id, None)
        assert family_ids(descriptor, unix(now)) == {family_id}

    [group] = [g for g in operator_families(snapshot.server_descriptors, unix(now)) if g.contact == CONTACT.lower()]
    assert group.relays == tuple(sorted(relays)) == group.certified
    assert (group.undeclared, group.not_mutual, group.cert_problems) == ((), (), ())
    table = build_table(snapshot.latest_consensus(), snapshot.server_descriptors, GeoIP.empty())
    keys = {table.family_id[table.fingerprints.index(fingerprint)] for fingerprint in relays}
    assert len(keys) == 1 and None not in keys  # one tor_operator family series for the two

    def family_findings(at: datetime):
        found = run_checks(Context(snapshot, at, config.checks.thresholds))
        return [f for f in found if f.check in FAMILY_CHECKS]

    assert family_findings(now) == []
    # The same descriptors judged once the certs have expired (tor writes 30-day certs): the same relays are
    # then one operator's undeclared relays, so the check above had something to find had the ID not counted.
    expired = {f.check for f in family_findings(now + timedelta(days=31))}
    assert expired == {"TorFamilyUndeclared", "TorFamilyCertInvalid"}
