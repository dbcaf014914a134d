"""uri-rsa and dns-rsa proof checks against real servers on 127.0.0.1, the hostile ones included."""

from __future__ import annotations

import socket
import time
from ipaddress import ip_address

import pytest

from agent import __version__
from agent.aroi.dns import MAX_LOOKUPS, ResolveError, check_dns_proof, resolve_addresses
from agent.aroi.uri import PROOF_PATH, fetch_uri_proof
from agent.model.aroi import DomainProof, Outcome, ProofBook
from agent.model.ciiss import parse_contact
from tests.integration.aroi_servers import (
    DNS_GOOD,
    DNS_MIXED,
    DNS_SERVFAIL,
    DNS_SIGNED,
    DRIBBLE,
    DRIBBLE_HEADERS,
    FP_A,
    FP_B,
    FP_C,
    GOOD,
    HOP,
    HUGE,
    INTERNAL,
    LOOP,
    MISSING,
    OFF_DOMAIN,
    PLAIN_HTTP,
    UNTRUSTED,
    WRONG_NAME,
    ProofServers,
    SilentResolver,
    aroi_config,
    elapsed,
    standard_sites,
)

pytestmark = pytest.mark.integration
NOW = 1_700_000_000


def outcome(proof: DomainProof, fingerprint: str) -> Outcome:
    """The relay's verdict under this proof, as the rest of the agent will see it."""
    contact = parse_contact(f"email:ops[]{proof.domain} url:https://{proof.domain} proof:{proof.method} "
                            "ciissversion:2")
    return ProofBook({(proof.domain, proof.method): proof}).verdict(fingerprint, contact).outcome


@pytest.fixture(scope="module")
def proof_servers(tmp_path_factory):
    with ProofServers(tmp_path_factory.mktemp("aroi")) as servers:
        yield standard_sites(servers)


@pytest.fixture
def connections(monkeypatch):
    """Every TCP connection attempt, by address; one to anywhere but loopback fails instead of leaving the host."""
    attempts: list[str] = []
    real = socket.create_connection

    def guarded(address, *args, **kwargs):
        attempts.append(address[0])
        if not ip_address(address[0]).is_loopback:
            raise OSError(f"test guard: no connection to {address[0]}")
        return real(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", guarded)
    return attempts


# -- uri-rsa ----------------------------------------------------------------------------------------------------------


def test_a_listed_relay_is_verified(proof_servers, connections):
    proof = fetch_uri_proof(GOOD, proof_servers.config(), NOW)
    assert (proof.error, proof.refused, proof.method, proof.checked_at) == (None, False, "uri-rsa", NOW)
    assert proof.listed == {FP_A, FP_B}  # the "$", lower-case and commented lines read; the malformed ones skipped
    assert outcome(proof, FP_A.lower()) is Outcome.VERIFIED
    host, path, headers = proof_servers.requests_for(GOOD)[-1]
    assert (path, headers["User-Agent"]) == (PROOF_PATH, f"allium-agent/{__version__}")
    assert connections and set(connections) == {"127.0.0.1"}


def test_a_readable_proof_without_the_relay_is_not_listed(proof_servers):
    proof = fetch_uri_proof(GOOD, proof_servers.config(), NOW)
    assert proof.readable and FP_C not in proof.listed
    assert outcome(proof, FP_C) is Outcome.NOT_LISTED


def test_a_missing_proof_is_a_failure(proof_servers):
    proof = fetch_uri_proof(MISSING, proof_servers.config(), NOW)
    assert (proof.error, proof.refused, proof.listed) == ("https: HTTP 404", False, frozenset())
    assert outcome(proof, FP_A) is Outcome.FETCH_FAILED


@pytest.mark.parametrize("domain", [DRIBBLE, DRIBBLE_HEADERS])
def test_a_dribbling_server_is_cut_off_at_the_deadline(proof_servers, domain):
    timeout = 2
    started = time.monotonic()
    proof = fetch_uri_proof(domain, proof_servers.config(timeout_seconds=timeout), NOW)
    took = elapsed(started)
    assert proof.error == f"https: timed out after {timeout} s" and not proof.refused
    assert timeout - 0.2 <= took < timeout + 2  # it waited for the server until the deadline, and no longer


@pytest.mark.parametrize("framing", sorted(HUGE))
def test_a_huge_proof_is_refused(proof_servers, framing):
    limit = 65536
    proof = fetch_uri_proof(HUGE[framing], proof_servers.config(max_proof_bytes=limit), NOW)
    assert (proof.error, proof.refused, proof.listed) == (f"https: proof larger than {limit} bytes", True,
                                                          frozenset())
    assert outcome(proof, "AB" * 20) is Outcome.REFUSED


def test_a_redirect_off_the_domain_is_refused(proof_servers):
    before = len(proof_servers.requests_for(GOOD))
    proof = fetch_uri_proof(OFF_DOMAIN, proof_servers.config(), NOW)
    assert proof.refused and proof.error == f"https: redirect to https://{GOOD}{PROOF_PATH} leaves {OFF_DOMAIN}"
    assert len(proof_servers.requests_for(GOOD)) == before  # not followed, though good.test serves a proof
    assert outcome(proof, FP_A) is Outcome.REFUSED


def test_a_redirect_to_http_is_refused(proof_servers):
    proof = fetch_uri_proof(PLAIN_HTTP, proof_servers.config(), NOW)
    assert proof.refused and proof.error == f"https: redirect to http://{PLAIN_HTTP}{PROOF_PATH} is not https"


def test_redirects_within_the_domain_are_followed(proof_servers):
    proof = fetch_uri_proof(HOP, proof_servers.config(), NOW)
    assert (proof.error, proof.listed) == (None, {FP_A})
    assert [path for _, path, _ in proof_servers.requests_for(f"www.{HOP}")][-2:] == [
        "/tor/fingerprints", "/tor/fingerprints.txt"]
    # Two redirects: one too many when only one may be followed.
    capped = fetch_uri_proof(HOP, proof_servers.config(max_redirects=1), NOW)
    assert capped.refused and capped.error == "https: more than 1 redirects"


def test_a_redirect_loop_is_capped(proof_servers):
    before = len(proof_servers.requests_for(LOOP))
    proof = fetch_uri_proof(LOOP, proof_servers.config(max_redirects=3), NOW)
    assert proof.refused and proof.error == "https: more than 3 redirects"
    assert len(proof_servers.requests_for(LOOP)) - before == 4  # the first request and three redirects


@pytest.mark.parametrize("address", sorted(INTERNAL))
def test_a_domain_at_an_internal_address_is_refused_without_connecting(proof_servers, connections, address):
    proof = fetch_uri_proof(INTERNAL[address], proof_servers.config(), NOW)
    assert proof.refused and proof.error == (f"https: {address} is not an address proofs may come from "
                                             f"({INTERNAL[address]})")
    assert connections == []
    assert outcome(proof, FP_A) is Outcome.REFUSED


def test_loopback_is_refused_unless_allowed(proof_servers, connections):
    before = proof_servers.https.connections
    proof = fetch_uri_proof(GOOD, proof_servers.config(allowed_networks=()), NOW)
    assert proof.refused and proof.error == f"https: 127.0.0.1 is not an address proofs may come from ({GOOD})"
    assert connections == [] and proof_servers.https.connections == before


@pytest.mark.parametrize("domain, reason", [
    (WRONG_NAME, f"Hostname mismatch, certificate is not valid for '{WRONG_NAME}'."),
    (UNTRUSTED, "unable to get local issuer certificate"),
])
def test_a_bad_certificate_is_a_failure(proof_servers, domain, reason):
    proof = fetch_uri_proof(domain, proof_servers.config(), NOW)
    assert proof.error == f"https: certificate verify failed: {reason} ({domain})" and not proof.refused
    assert outcome(proof, FP_A) is Outcome.FETCH_FAILED


def test_a_closed_port_is_a_failure(proof_servers):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    proof = fetch_uri_proof(GOOD, proof_servers.config(https_port=closed), NOW)
    assert proof.error == f"https: 127.0.0.1 port {closed}: Connection refused ({GOOD})" and not proof.refused


def test_an_unknown_domain_is_a_dns_failure(proof_servers):
    proof = fetch_uri_proof("nowhere.test", proof_servers.config(), NOW)
    assert (proof.error, proof.refused) == ("dns: nowhere.test does not exist (NXDOMAIN)", False)


# -- addresses ------------------------------------------------------------------------------------------------------


def test_addresses_come_from_the_configured_resolver(proof_servers):
    proof_servers.add_uri_site("dual.test", address="127.0.0.2")
    proof_servers.zone.add("dual.test", "AAAA", "::1")
    deadline = time.monotonic() + 3
    assert resolve_addresses("dual.test", proof_servers.config(), deadline) == [ip_address("127.0.0.2"),
                                                                                ip_address("::1")]
    with pytest.raises(ResolveError, match=r"^dns: nowhere\.test does not exist \(NXDOMAIN\)$"):
        resolve_addresses("nowhere.test", proof_servers.config(), deadline)


# -- dns-rsa --------------------------------------------------------------------------------------------------------


def test_a_relay_with_the_txt_record_is_verified(proof_servers):
    proof = check_dns_proof(DNS_GOOD, [FP_A.lower()], proof_servers.config(), NOW)
    assert (proof.method, proof.error, proof.listed, proof.refuted) == ("dns-rsa", None, {FP_A}, frozenset())
    assert outcome(proof, FP_A) is Outcome.VERIFIED


def test_nxdomain_and_other_txt_records_refute(proof_servers):
    proof = check_dns_proof(DNS_GOOD, [FP_A, FP_B, FP_C], proof_servers.config(), NOW)
    assert (proof.error, proof.listed, proof.refuted) == (None, {FP_A}, {FP_B, FP_C})
    assert outcome(proof, FP_B) is Outcome.NOT_LISTED and outcome(proof, FP_C) is Outcome.NOT_LISTED


def test_servfail_is_neither_listed_nor_refuted(proof_servers):
    mixed = check_dns_proof(DNS_MIXED, [FP_A, FP_B], proof_servers.config(), NOW)
    assert (mixed.error, mixed.listed, mixed.refuted) == (None, {FP_A}, frozenset())
    assert outcome(mixed, FP_B) is Outcome.NOT_CHECKED
    failed = check_dns_proof(DNS_SERVFAIL, [FP_A, FP_B], proof_servers.config(), NOW)
    assert (failed.error, failed.listed, failed.refuted) == ("dns: SERVFAIL for every lookup", frozenset(),
                                                             frozenset())
    assert outcome(failed, FP_A) is Outcome.FETCH_FAILED


def test_a_resolver_that_does_not_answer_is_an_error_within_the_deadline():
    timeout = 2
    with SilentResolver() as silent:
        started = time.monotonic()
        proof = check_dns_proof(DNS_GOOD, [FP_A, FP_B, FP_C], aroi_config(
            resolver=("127.0.0.1", silent.port), timeout_seconds=timeout), NOW)
        took = elapsed(started)
    assert (proof.error, proof.listed, proof.refuted) == (f"dns: resolver 127.0.0.1:{silent.port} did not answer",
                                                          frozenset(), frozenset())
    assert took < timeout + 2


@pytest.mark.parametrize("domain, dnssec", [(DNS_SIGNED, "secure"), (DNS_GOOD, "insecure")])
def test_the_ad_flag_says_whether_dnssec_validated(proof_servers, domain, dnssec):
    proof = check_dns_proof(domain, [FP_A, FP_C], proof_servers.config(), NOW)
    assert (proof.listed, proof.dnssec) == ({FP_A}, dnssec)


def test_lookups_are_capped(proof_servers):
    fingerprints = [f"{number:040X}" for number in range(MAX_LOOKUPS + 5)]
    with proof_servers.zone.lock:
        before = len(proof_servers.zone.queries)
    proof = check_dns_proof("many.test", fingerprints, proof_servers.config(timeout_seconds=20), NOW)
    with proof_servers.zone.lock:
        asked = {name for name, kind in proof_servers.zone.queries[before:] if kind == "TXT"}
    assert len(asked) == MAX_LOOKUPS and len(proof.refuted) == MAX_LOOKUPS
    assert f"{MAX_LOOKUPS + 4:040x}.many.test" not in asked
