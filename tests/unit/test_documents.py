"""Parsing real documents, and clear errors for wrong, truncated or garbage input."""

import copy
import pickle

import pytest
from stem.descriptor import DigestEncoding, DigestHash
from stem.descriptor.networkstatus import NetworkStatusDocumentV3
from stem.descriptor.router_status_entry import RouterStatusEntryV3

from agent.model.entries import RouterEntries, entries_of
from agent.model.errors import DocumentError
from agent.model.network_status import NetworkStatus
from agent.model.snapshot import DocKind
from agent.parse.documents import _strip_annotations, parse_document
from tests.conftest import read_data


def test_real_consensus_and_microdesc_consensus(consensus, microdesc_consensus):
    assert len(consensus.routers) == 6088 and len(consensus.signatures) == 8
    assert len(microdesc_consensus.routers) == 6088
    assert consensus.valid_after == microdesc_consensus.valid_after


def test_real_vote_with_collector_annotation():
    vote = parse_document(DocKind.VOTE, read_data("2017-07-17-17-00-00-vote-cropped"), "test")
    assert vote.is_vote and len(vote.routers) == 3
    assert vote.directory_authorities[0].nickname == "dannenberg"


def test_a_network_status_wraps_stem_header_our_entries_and_the_consensus_bytes(consensus, consensus_bytes):
    assert isinstance(consensus, NetworkStatus) and isinstance(consensus.header, NetworkStatusDocumentV3)
    assert isinstance(consensus.entries, RouterEntries) and consensus.routers is consensus.entries
    assert entries_of(consensus) is consensus.entries
    assert consensus.raw == _strip_annotations(consensus_bytes) == consensus.get_bytes()
    assert len(consensus.header.routers) == 0  # nothing written onto stem's object: it has header and footer
    assert b"\nr " not in consensus.header.get_bytes()
    vote = parse_document(DocKind.VOTE, read_data("2017-07-17-17-00-00-vote-cropped"), "test")
    assert vote.raw is None and vote.get_bytes() == vote.header.get_bytes()  # a vote's bytes are not kept


@pytest.mark.parametrize("name, kind", [
    ("2022-11-19-10-00-00-consensus.xz", DocKind.CONSENSUS),
    ("2022-11-19-10-00-00-consensus-microdesc.xz", DocKind.MICRODESC_CONSENSUS),
    ("2017-07-17-17-00-00-vote-cropped", DocKind.VOTE),
])
def test_a_network_status_reads_as_stem_reads_the_whole_document(name, kind):
    raw = read_data(name)
    ours = parse_document(kind, raw, "test")
    whole = NetworkStatusDocumentV3(_strip_annotations(raw))  # stem, entries and all
    for field in ("valid_after", "fresh_until", "valid_until", "is_vote", "is_consensus", "is_microdescriptor",
                  "directory_authorities", "signatures", "known_flags", "flag_thresholds", "params",
                  "consensus_method", "consensus_methods", "bandwidth_weights", "client_versions", "server_versions",
                  # not properties of ours: looked up on stem's header by __getattr__
                  "version_flavor", "recommended_relay_protocols", "shared_randomness_current_value",
                  "shared_randomness_previous_value", "published", "vote_delay", "packages"):
        assert getattr(ours, field) == getattr(whole, field), field
    assert ours.meets_consensus_method(26) == whole.meets_consensus_method(26)
    assert list(ours.routers) == list(whole.routers)
    if kind is not DocKind.VOTE:  # a vote's digest and bytes are of its header and footer, as before
        assert ours.get_bytes() == whole.get_bytes()
        for hash_type in (DigestHash.SHA1, DigestHash.SHA256):
            for encoding in (DigestEncoding.HEX, DigestEncoding.BASE64):
                assert ours.digest(hash_type, encoding) == whole.digest(hash_type, encoding)
        assert ours.digest(encoding=DigestEncoding.RAW).digest() == whole.digest(encoding=DigestEncoding.RAW).digest()


def test_what_stem_would_answer_wrongly_or_privately_is_not_delegated(consensus):
    with pytest.raises(AttributeError, match="check_signatures"):
        consensus.validate_signatures([])
    assert not hasattr(consensus, "_raw_contents") and not hasattr(consensus, "no_such_field")
    assert "known_flags" in dir(consensus) and "validate_signatures" not in dir(consensus)
    assert "ns consensus" in repr(consensus) and "6088 entries" in repr(consensus)


def test_a_network_status_pickles_and_copies(consensus):
    consensus.entries.indices_in(consensus.entries)  # a cache keyed by this process's ids: not pickled
    again = pickle.loads(pickle.dumps(consensus, pickle.HIGHEST_PROTOCOL))
    assert isinstance(again, NetworkStatus) and again is not consensus
    assert again.raw == consensus.raw and again.valid_after == consensus.valid_after
    assert again.entries.fingerprints == consensus.entries.fingerprints and again.entries._rows_in == {}
    assert (again.entries.flag_code == consensus.entries.flag_code).all()
    assert [s.identity for s in again.signatures] == [s.identity for s in consensus.signatures]
    shallow = copy.copy(consensus)
    assert shallow is not consensus and shallow.header is consensus.header and shallow.entries is consensus.entries
    deep = copy.deepcopy(consensus)
    assert deep.entries is not consensus.entries and deep.entries.fingerprints == consensus.entries.fingerprints


def test_an_attribute_set_on_a_network_status_is_read_instead_and_stays_off_stem(consensus):
    edited = copy.copy(consensus)
    edited.shared_randomness_current_value = None  # delegated to stem otherwise
    edited.valid_after = consensus.valid_after.replace(year=2000)  # named on the class
    assert edited.shared_randomness_current_value is None and edited.valid_after.year == 2000
    assert consensus.shared_randomness_current_value is not None and consensus.valid_after.year == 2022
    assert consensus.header.shared_randomness_current_value is not None
    again = pickle.loads(pickle.dumps(edited))
    assert again.shared_randomness_current_value is None and again.valid_after.year == 2000


def test_real_certificates_bandwidth_file_and_descriptors(certificates):
    assert len(certificates) == 9
    bandwidth = parse_document(DocKind.BANDWIDTH_FILE, read_data("bandwidth-file-v1.4"), "test")
    assert bandwidth.version == "1.4.0" and len(bandwidth.measurements) == 58
    descriptors = parse_document(DocKind.SERVER_DESCRIPTORS, read_data("server-descriptors-2"), "test")
    assert [d.nickname for d in descriptors] == ["anonion", "Unnamed"]


def test_wrong_flavour_or_kind_names_both(microdesc_bytes, consensus_bytes):
    with pytest.raises(DocumentError, match="consensus from moria1: expected ns consensus, got microdesc consensus"):
        parse_document(DocKind.CONSENSUS, microdesc_bytes, "moria1")
    with pytest.raises(DocumentError, match="vote from moria1: expected vote, got ns consensus"):
        parse_document(DocKind.VOTE, consensus_bytes, "moria1")
    with pytest.raises(DocumentError, match="not a v3 network status document .starts 'router anonion"):
        parse_document(DocKind.CONSENSUS, read_data("server-descriptors-2"), "moria1")


@pytest.mark.parametrize("cut", [0.5, 0.999])
def test_truncated_consensus_is_rejected(consensus_bytes, cut):
    with pytest.raises(DocumentError, match="^consensus from x: "):
        parse_document(DocKind.CONSENSUS, consensus_bytes[:int(len(consensus_bytes) * cut)], "x")


def test_consensus_without_signatures_is_rejected():
    unsigned = NetworkStatusDocumentV3.create({"vote-status": "consensus"}, routers=[RouterStatusEntryV3.create()])
    raw = unsigned.get_bytes().split(b"directory-signature")[0]
    with pytest.raises(DocumentError):
        parse_document(DocKind.CONSENSUS, raw, "x")


@pytest.mark.parametrize("raw", [b"", b"   \n", b"\x00\xff garbage", b"<html>busy</html>"])
def test_garbage_is_rejected_for_every_kind(raw):
    for kind in DocKind:
        with pytest.raises(DocumentError, match=f"^{kind.value} from x: "):
            parse_document(kind, raw, "x")


def test_inputs_stem_would_hang_on_or_explode_with_are_refused(consensus_bytes):
    versioned_without_terminator = b"1700000000\nversion=1.4.0\nbw=1 node_id=$AA\n"
    with pytest.raises(DocumentError, match="no header terminator line"):
        parse_document(DocKind.BANDWIDTH_FILE, versioned_without_terminator, "x")
    wide = consensus_bytes.replace(b"\nrecommended-relay-protocols Cons=2 ",
                                   b"\nrecommended-relay-protocols Cons=1-2000000000 ", 1)
    assert wide != consensus_bytes
    with pytest.raises(DocumentError, match="protocol range 1-2000000000 is implausibly wide"):
        parse_document(DocKind.CONSENSUS, wide, "x")
    # In a router entry's "pr" line the same range is harmless: the fast path does not expand "pr" lines.
    in_entry = consensus_bytes.replace(b"\npr Cons=1-2 ", b"\npr Cons=1-2000000000 ", 1)
    assert in_entry != consensus_bytes
    assert len(parse_document(DocKind.CONSENSUS, in_entry, "x").routers) == 6088


def test_any_parser_exception_becomes_a_named_document_error(consensus_bytes):
    huge_timestamp = b"9" * 40 + b"\nbw=1 node_id=$" + b"A" * 40 + b"\n"
    with pytest.raises(DocumentError, match="^bandwidth-file from x: "):
        parse_document(DocKind.BANDWIDTH_FILE, huge_timestamp, "x")
