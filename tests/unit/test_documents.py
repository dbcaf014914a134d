"""Parsing real documents, and clear errors for wrong, truncated or garbage input."""

import copy
import pickle

import numpy as np
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


# -- hostile numbers, names and times: refused as tor's grammar refuses them, by name (hardening) ------------------

VOTE = "2017-07-17-17-00-00-vote-cropped"
CONSENSUS = "2022-11-19-10-00-00-consensus.xz"
BW, CERTS = "bandwidth-file-v1.4", "2022-11-certs"
PARAM = b"\nparams CircuitPriorityHalflifeMsec=30000 "
VOTE_FLAGS = b"known-flags Authority Exit Fast Guard HSDir Running Stable V2Dir Valid"


def changed(name: str, old: bytes, new: bytes, count: int = 1) -> bytes:
    """A document of tests/data with ``old`` (which must be there) replaced by ``new``."""
    raw = read_data(name)
    assert old in raw, old
    return raw.replace(old, new, count)


def known_flags_vote(count: int) -> bytes:
    """The cropped vote knowing ``count`` flags, its own and fillers sorted after them; every entry has the last."""
    fillers = [b"Z%02d" % index for index in range(count - 9)]
    flags = VOTE_FLAGS.split(b" ")[1:] + fillers
    raw = changed(VOTE, VOTE_FLAGS, b"known-flags " + b" ".join(flags))
    return raw.replace(b"\ns Fast ", b"\ns " + flags[-1] + b" Fast ").replace(b"\ns Exit ", b"\ns " + flags[-1] +
                                                                                b" Exit ")


def test_a_vote_with_64_known_flags_parses_and_its_flag_masks_keep_every_bit():
    """tor allows 64 known flags in a vote (MAX_KNOWN_FLAGS_IN_VOTE); bit 63 overflowed an int64 mask before."""
    from agent.metrics.authority import _flag_agreement

    vote = parse_document(DocKind.VOTE, known_flags_vote(64), "test")
    flags = sorted(vote.known_flags)
    assert len(flags) == 64 and all(flags[-1] in entry.flags for entry in vote.routers.values())
    bits = {flag: 1 << index for index, flag in enumerate(flags)}
    masks = vote.entries.flag_masks(bits)
    assert masks.dtype == np.uint64 and all(int(mask) >> 63 == 1 for mask in masks.tolist())
    points = {point.tags["flag"]: point.fields for point in _flag_agreement("test", vote, vote.entries, 0)}
    assert points[flags[-1]]["relays"] == points[flags[-1]]["in_both"] == 3 and points["Exit"]["relays"] == 1


def test_more_known_flags_than_tor_allows_are_refused_naming_the_document():
    with pytest.raises(DocumentError, match=r"^vote from moria1: line 14: known-flags: 65 flags, more than tor's 64"):
        parse_document(DocKind.VOTE, known_flags_vote(65), "moria1")
    unsorted = changed(VOTE, VOTE_FLAGS, b"known-flags Exit Authority Fast Guard HSDir Running Stable V2Dir Valid")
    with pytest.raises(DocumentError, match="known-flags: flags must be in order, each once"):
        parse_document(DocKind.VOTE, unsorted, "moria1")


def test_a_vote_flagging_what_its_known_flags_do_not_list_is_refused():
    with pytest.raises(DocumentError, match="an entry has the flag 'Bogus', which known-flags does not list"):
        parse_document(DocKind.VOTE, changed(VOTE, b"\ns Fast HSDir", b"\ns Bogus Fast HSDir"), "moria1")


@pytest.mark.parametrize("kind, name, old, new, problem", [
    # numbers beyond the C type tor reads each into (agent.parse.grammar names where tor sets each bound)
    ("consensus", CONSENSUS, PARAM, PARAM.replace(b"30000", b"2147483648"),
     r"line 15: params: '2147483648' is not a number from -2147483648 to 2147483647"),
    ("consensus", CONSENSUS, b"Wbd=0 ", b"Wbd=-" + b"9" * 400 + b" ", r"bandwidth-weights: '-9{39}' is not a number"),
    ("consensus", CONSENSUS, b"\nconsensus-method 32", b"\nconsensus-method 0", r"line 3: consensus-method: '0'"),
    ("consensus", CONSENSUS, b"\nvoting-delay 300 300", b"\nvoting-delay 300 " + b"9" * 400, "voting-delay: '9"),
    ("consensus", CONSENSUS, b"193.23.244.244 80 443", b"193.23.244.244 80 65536", "dir-source: '65536' is not a num"),
    ("consensus", CONSENSUS, PARAM, PARAM + b"CircuitPriorityHalflifeMsec=1 ", "params: keys must be in order, each"),
    ("vote", VOTE, b"\nshared-rand-current-value 8 ", b"\nshared-rand-current-value 18446744073709551616 ",
     "shared-rand-current-value: '18446744073709551616' is not a number"),
    ("vote", VOTE, b"Link=4 LinkAuth", b"Link=4-64 LinkAuth", r"recommended-relay-protocols: '64' is not a number fr"),
    ("vote", VOTE, b"guard-wfu=98.000%", b"guard-wfu=1e999", "flag-thresholds: 'guard-wfu=1e999' is not a number"),
    ("key-certificates", CERTS, b"\ndir-key-expires 2023-09-16 19:14:12",
     b"\ndir-key-expires 2023-09-16 19:14:12\ndir-address 1.2.3.4:99999", "dir-address: '99999' is not a number"),
    ("bandwidth-file", BW, b"\nbw=1 bw_mean=21403", b"\nbw=" + b"9" * 20 + b" bw_mean=21403",
     r"line 28: bw: '9{20}' is not a number from 0 to 9223372036854775807"),
    ("bandwidth-file", BW, b"\nbw=1 bw_mean=21403", b"\nbw=1 bw=2 bw_mean=21403", "line 28: bw= is giv"),
    ("bandwidth-file", BW, b"node_id=$F63DF6AA4F395AD2F5F363333D104279F2171381",
     b"node_id=$F63DF6AA4F395AD2F5F363333D104279F217138", "node_id '\\$F63DF6AA4F395AD2F5F363333D104279F217138' is "),
    ("bandwidth-file", BW, b"1555882497\n", b"99999999999\n", "line 1: the timestamp '99999999999'"),
    # Unicode digits, which Python's int() and str.isdigit() read as numbers and tor's strtol does not
    ("consensus", CONSENSUS, b"\nconsensus-method 32", "\nconsensus-method \u0663\u0662".encode(),
     "consensus-method: '\u0663\u0662' is not a number"),
    ("consensus", CONSENSUS, b"Wbd=0 ", "Wbd=\u0660 ".encode(), "bandwidth-weights: '\u0660' is not a number"),
    ("consensus", CONSENSUS, b"193.23.244.244 80 443", "193.23.244.244 80 \u0664\u0664\u0663".encode(), "dir-source"),
    ("vote", VOTE, b"\nvoting-delay 300 300", "\nvoting-delay 300 \uff13\uff10\uff10".encode(), "voting-delay: '"),
    ("vote", VOTE, b"guard-tk=691200", "guard-tk=\u0666\u0669".encode(), "flag-thresholds: 'guard-tk="),
    ("bandwidth-file", BW, b"\nbw=1 bw_mean=21403", "\nbw=\u0665 bw_mean=21403".encode(),
     "line 28: bw: '\u0665' is not a number"),
    ("bandwidth-file", BW, b"\nnumber_eligible_relays=6459", "\nnumber_eligible_relays=\u0665".encode(),
     r"line 11: number_eligible_relays: '\u0665' has non-ASCII digits"),
    ("bandwidth-file", BW, b"1555882497\n", "\u0661555882497\n".encode(), "line 1: the timestamp"),
    # impossible times
    ("consensus", CONSENSUS, b"\nvalid-until 2022-11-19 13:00:00", b"\nvalid-until 9999-11-19 13:00:00",
     r"line 6: valid-until: '9999-11-19 13:00:00' is not a time from 1970 to 2199"),
    ("consensus", CONSENSUS, b"\nfresh-until 2022-11-19 11:00:00", b"\nfresh-until 2022-11-19 10:00:00",
     "valid-after 2022-11-19 10:00:00, fresh-until 2022-11-19 10:00:00 and valid-until .* are not in order"),
    ("vote", VOTE, b"\nvalid-after 2017-07-17 17:00:00", "\nvalid-after \uff12017-07-17 17:00:00".encode(),
     "valid-after: '\uff12017-07-17 17:00:00' is not a time"),
    ("vote", VOTE, b"\npublished 2017-07-17 16:50:01", b"\npublished 2017-07-17 16:50:01 and more", "published: '"),
    ("key-certificates", CERTS, b"\ndir-key-expires 2023-09-16", b"\ndir-key-expires 9999-09-16",
     r"line 4: dir-key-expires: '9999-09-16 19:14:12' is not a time from 1970 to 2199"),
    ("bandwidth-file", BW, b"\nfile_created=2019-04-21T", b"\nfile_created=9999-04-21T",
     "file_created: '9999-04-21T21:35:04' is not a time from 1970 to 2199"),
])
def test_what_tors_grammar_refuses_in_what_stem_parses_is_refused_by_name(kind, name, old, new, problem):
    with pytest.raises(DocumentError, match=f"^{kind} from moria1: .*{problem}"):
        parse_document(DocKind(kind), changed(name, old, new), "moria1")


def test_a_nul_byte_is_refused_in_any_document_by_its_line():
    for kind, name in ((DocKind.CONSENSUS, CONSENSUS), (DocKind.VOTE, VOTE), (DocKind.BANDWIDTH_FILE,
                       "bandwidth-file-v1.4"), (DocKind.SERVER_DESCRIPTORS, "server-descriptors-2")):
        raw = read_data(name)
        third = raw.index(b"\n", raw.index(b"\n") + 1) + 1
        with pytest.raises(DocumentError, match=f"^{kind.value} from x: line 3: a NUL byte"):
            parse_document(kind, raw[:third + 2] + b"\x00" + raw[third + 2:], "x")
