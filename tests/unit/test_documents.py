"""Parsing real documents, and clear errors for wrong, truncated or garbage input."""

import pytest
from stem.descriptor.networkstatus import NetworkStatusDocumentV3
from stem.descriptor.router_status_entry import RouterStatusEntryV3

from agent.documents import parse_document
from agent.errors import DocumentError
from agent.snapshot import DocKind
from tests.conftest import read_data


def test_real_consensus_and_microdesc_consensus(consensus, microdesc_consensus):
    assert len(consensus.routers) == 6088 and len(consensus.signatures) == 8
    assert len(microdesc_consensus.routers) == 6088
    assert consensus.valid_after == microdesc_consensus.valid_after


def test_real_vote_with_collector_annotation():
    vote = parse_document(DocKind.VOTE, read_data("2017-07-17-17-00-00-vote-cropped"), "test")
    assert vote.is_vote and len(vote.routers) == 3
    assert vote.directory_authorities[0].nickname == "dannenberg"


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
