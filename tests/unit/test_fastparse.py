"""The fast path against stem, field by field, on every real document we have: zero mismatches.

Documents: every network status document and server-descriptor file in
tests/data, and, when the shared data set sits beside the repository
(../shared/tordata, as in CI), every one there too. A document stem's
validating parser rejects is left out (the fast path has nothing to be
compared with) and counted.
"""

import base64
import io
import lzma
import pickle
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import stem.descriptor
from hypothesis import given, settings
from hypothesis import strategies as st
from stem.descriptor.networkstatus import NetworkStatusDocumentV3

from agent.model.entries import ABSENT, RouterEntries, entries_of, read_stats, read_stats_lines, read_vote_stats
from agent.model.errors import DocumentError
from agent.model.snapshot import DocKind
from agent.parse import fastdesc, fastparse
from agent.parse.documents import _strip_annotations, parse_document
from tests.conftest import DATA

SHARED = Path(__file__).resolve().parents[3] / "shared" / "tordata"
ENTRY_FIELDS = ("nickname", "fingerprint", "digest", "published", "address", "or_port", "dir_port", "or_addresses",
                "flags", "version_line", "version", "bandwidth", "measured", "is_unmeasured",
                "unrecognized_bandwidth_entries")
DESCRIPTOR_FIELDS = ("nickname", "fingerprint", "address", "or_port", "published", "platform", "contact", "family",
                     "average_bandwidth", "burst_bandwidth", "observed_bandwidth", "hibernating", "uptime",
                     "ed25519_master_key")


def read(path: Path) -> bytes:
    raw = path.read_bytes()
    return lzma.decompress(raw) if path.suffix == ".xz" else raw


def documents(kind: str) -> list[Path]:
    """Real files whose first document is ``kind`` (network-status or server-descriptor)."""
    roots = [DATA] + ([SHARED] if SHARED.is_dir() else [])
    found = []
    for root in roots:
        for path in sorted(root.rglob("*")):
            if not path.is_file() or path.suffix in (".md", ".tsv", ".json", ".gz", ".tar", ".bz2"):
                continue
            try:
                raw_head = read(path)[:4096]
            except (lzma.LZMAError, OSError):
                continue
            if b"@type bridge-" in raw_head:
                continue  # bridges' documents: the agent does not read them
            head = _strip_annotations(raw_head)
            if kind == "network-status" and head.startswith(b"network-status-version 3"):
                found.append(path)
            elif kind == "server-descriptor" and head.startswith(b"router ") and b"\nbandwidth " in read(path):
                found.append(path)
    return found


def test_router_entries_match_stem_on_every_real_network_status_document():
    """Every field of every entry, and every column the metrics and checks read, against stem."""
    compared = {"documents": 0, "entries": 0, "fields": 0, "columns": 0, "stem_rejects": 0}
    mismatches = []
    for path in documents("network-status"):
        raw = _strip_annotations(read(path))
        try:
            reference = NetworkStatusDocumentV3(raw, validate=True)
        except ValueError:
            compared["stem_rejects"] += 1
            continue
        header, entries, footer = fastparse.split_network_status(raw)
        ours = fastparse.parse_router_entries(entries, reference.is_microdescriptor)
        assert list(ours) == list(reference.routers), path.name
        for fingerprint, expected in reference.routers.items():
            entry = ours[fingerprint]
            for name in ENTRY_FIELDS + (("microdescriptor_digest",) if reference.is_microdescriptor else ()):
                if reference.is_microdescriptor and name == "digest":
                    continue  # a microdesc entry has no descriptor digest; stem leaves it None
                compared["fields"] += 1
                if getattr(entry, name) != getattr(expected, name):
                    mismatches.append((path.name, fingerprint, name, getattr(entry, name), getattr(expected, name)))
            compared["entries"] += 1
        mismatches += [(path.name,) + problem for problem in column_mismatches(ours, reference)]
        compared["columns"] += len(COLUMNS)
        compared["documents"] += 1
    print(f"\nrouter status entries compared with stem: {compared}")
    assert mismatches == [], mismatches[:10]
    assert compared["documents"] >= 6 and compared["entries"] >= 40_000


COLUMNS = ("has_flag", "flag_counts", "flag_sets", "bandwidth", "measured", "ipv6_orport", "addresses", "or_ports",
           "nicknames")


def column_mismatches(ours, reference) -> list[tuple]:
    """The columns consumers read (entries.py), against stem's entries one by one."""
    expected = list(reference.routers.values())
    problems = []
    for flag in sorted(set(reference.known_flags) | {"Running", "Authority", "BadExit"}):
        if ours.has_flag(flag).tolist() != [flag in entry.flags for entry in expected]:
            problems.append(("has_flag", flag))
    if dict(ours.flag_counts()) != dict(Counter(flag for entry in expected for flag in entry.flags)):
        problems.append(("flag_counts",))
    if ours.flag_sets() != [frozenset(entry.flags) for entry in expected]:
        problems.append(("flag_sets",))
    if ours.bandwidth.tolist() != [ABSENT if e.bandwidth is None else e.bandwidth for e in expected]:
        problems.append(("bandwidth",))
    if ours.measured.tolist() != [ABSENT if e.measured is None else e.measured for e in expected]:
        problems.append(("measured",))
    if ours.has_ipv6_orport().tolist() != [any(v6 for _, _, v6 in e.or_addresses) for e in expected]:
        problems.append(("ipv6_orport",))
    for column, attribute in (("addresses", "address"), ("nicknames", "nickname")):
        if list(getattr(ours, column)) != [getattr(e, attribute) for e in expected]:
            problems.append((column,))
    if ours.or_ports.tolist() != [e.or_port for e in expected]:
        problems.append(("or_ports",))
    return problems


def test_server_descriptors_match_stem_on_every_real_file():
    compared = {"files": 0, "descriptors": 0, "fields": 0}
    mismatches = []
    for path in documents("server-descriptor"):
        raw = read(path)
        reference = list(stem.descriptor.parse_file(io.BytesIO(raw), "server-descriptor 1.0", validate=True))
        ours = fastdesc.parse_server_descriptors(raw)
        assert [d.fingerprint for d in ours] == [d.fingerprint for d in reference], path.name
        for mine, expected in zip(ours, reference):
            for name in DESCRIPTOR_FIELDS:
                compared["fields"] += 1
                if getattr(mine, name) != getattr(expected, name):
                    mismatches.append((path.name, expected.fingerprint, name, getattr(mine, name),
                                       getattr(expected, name)))
            compared["fields"] += 1
            if mine.exit_policy_v6.is_exiting_allowed() != expected.exit_policy_v6.is_exiting_allowed() or \
                    str(mine.exit_policy_v6) != str(expected.exit_policy_v6):
                mismatches.append((path.name, expected.fingerprint, "exit_policy_v6", str(mine.exit_policy_v6),
                                   str(expected.exit_policy_v6)))
            compared["descriptors"] += 1
        compared["files"] += 1
    print(f"\nserver descriptors compared with stem: {compared}")
    assert mismatches == [], mismatches[:10]
    assert compared["descriptors"] >= 580


@pytest.mark.parametrize("line, problem", [
    (b"r relay1 AAAA!!notbase64 x 2020-02-29 10:00:00 1.2.3.4 9001 0", "not base64"),
    (b"r relay1 AAAAAAAAAAAAAAAAAAAAAAAAAAA xxxxxxxxxxxxxxxxxxxxxxxxxxx 2020-02-29 10:00:00 1.2.3.999 9001 0",
     "not an IPv4 address"),
    (b"r relay1 AAAAAAAAAAAAAAAAAAAAAAAAAAA xxxxxxxxxxxxxxxxxxxxxxxxxxx 2020-02-29 10:00:00 1.2.3.4 0 0",
     "not a port"),
    (b"r relay1 AAAAAAAAAAAAAAAAAAAAAAAAAAA 2020-02-29 10:00:00 1.2.3.4 9001 0", "has 7 fields"),
])
def test_malformed_entries_are_named(line, problem):
    with pytest.raises(ValueError, match=problem):
        fastparse.parse_router_entries(line + b"\ns Fast\nw Bandwidth=1\n", microdesc=False)


def test_a_malformed_entry_rejects_the_document_with_its_source_named():
    raw = read(DATA / "2020-02-29-10-00-00-consensus.xz")
    broken = raw.replace(b"\nw Bandwidth=", b"\nw Bandwidth=lots ", 1)
    with pytest.raises(DocumentError, match=r"consensus from moria1: .*Bandwidth= needs a number"):
        parse_document(DocKind.CONSENSUS, broken, "moria1")


@pytest.mark.parametrize("change, problem, refused_line", [
    ((b"\nw Bandwidth=", b"\nw Bandwidth=lots "), "Bandwidth= needs a number", b"\nw Bandwidth=lots "),
    ((b"\ns ", b"\ns Fast\ns "), "a second 's' line", b"\ns Fast\ns "),  # the second one is named
    ((b" 9001 0\n", b" 9001 x\n"), "is not a port", b"\nr "),
    ((b"\nv Tor", b"\nunknown\nv Tor"), "Bandwidth= needs a number", b"\nw Bandwidth=lots "),  # skipped lines count
])
def test_a_refused_line_is_named_by_its_number_in_the_file(change, problem, refused_line):
    raw = read(DATA / "2020-02-29-10-00-00-consensus.xz")  # CollecTor's: an @type line first
    middle = raw.index(change[0], len(raw) // 2)
    changed = raw[:middle] + raw[middle:].replace(*change, 1)
    if b"Bandwidth=lots" not in changed and b"Bandwidth" in problem.encode():  # also break the next w line
        changed = changed[:middle] + changed[middle:].replace(b"\nw Bandwidth=", b"\nw Bandwidth=lots ", 1)
    where = changed.index(refused_line, middle) if refused_line != b"\nr " else \
        changed.rfind(b"\nr ", 0, changed.index(b" 9001 x\n"))
    if refused_line == b"\ns Fast\ns ":
        where += len(b"\ns Fast")
    expected = changed.count(b"\n", 0, where + 1) + 1  # the line after that newline, counted from 1
    with pytest.raises(DocumentError, match=rf"consensus from moria1: line {expected}: .*{problem}"):
        parse_document(DocKind.CONSENSUS, changed, "moria1")


def test_a_descriptor_without_bandwidth_is_refused():
    raw = read(DATA / "2020-02-29-10-05-00-server-descriptors.xz")
    start = raw.index(b"\nbandwidth ")
    broken = raw[:start] + raw[raw.index(b"\n", start + 1):]
    with pytest.raises(DocumentError, match="no bandwidth line"):
        parse_document(DocKind.SERVER_DESCRIPTORS, broken, "moria1")


def test_a_descriptor_with_a_malformed_uptime_is_refused_as_stem_refuses_it():
    raw = read(DATA / "2020-02-29-10-05-00-server-descriptors.xz")
    start = raw.index(b"\nuptime ")
    broken = raw[:start] + b"\nuptime soon" + raw[raw.index(b"\n", start + 1):]
    with pytest.raises(ValueError, match="must have a numeric value"):
        list(stem.descriptor.parse_file(io.BytesIO(broken), "server-descriptor 1.0", validate=True))
    with pytest.raises(DocumentError, match="'uptime soon' needs a number"):
        parse_document(DocKind.SERVER_DESCRIPTORS, broken, "moria1")


@pytest.mark.parametrize("w_line", [b"w Bandwidth=5 Measured=", b"w Bandwidth=5 Measured=x", b"w Bandwidth=x"])
def test_malformed_bandwidth_is_refused(w_line):
    r_line = b"r relay1 AAAAAAAAAAAAAAAAAAAAAAAAAAA AAAAAAAAAAAAAAAAAAAAAAAAAAA 2020-02-29 10:00:00 1.2.3.4 9001 0"
    with pytest.raises(ValueError, match="needs a number"):
        fastparse.parse_router_entries(r_line + b"\ns Fast\n" + w_line + b"\n", microdesc=False)


@pytest.mark.parametrize("change, refused", [
    ((b"\ns Exit Fast", b"\nopt s Exit Fast"), None),  # the old "opt" prefix
    ((b"\ns Exit Fast", b"\ns"), None),  # a keyword alone: no flags
    ((b"\ns Exit Fast", b"\ns\tExit Fast"), None),  # a tab after the keyword, as stem allows
    ((b"\nw Bandwidth=", b"\nw \t Bandwidth="), None),  # spaces and tabs
    ((b"\ns Exit Fast", b"\nsExit Fast"), "no 's' line"),  # not an s line: then the entry has none
    ((b"\ns Exit Fast", b"\nunknown-keyword 1\ns Exit Fast"), None),  # a line we skip before one we read
    ((b"\nw Bandwidth=", b"\nw Unmeasured=0 Bandwidth="), "must start with Bandwidth="),  # stem refuses it too
    ((b"\nw Bandwidth=", b"\nw Bandwidth=1\nw Bandwidth="), "a second 'w' line"),  # so does stem
])
def test_unusual_entries_still_match_stem(change, refused):
    raw = _strip_annotations(read(DATA / "2020-02-29-10-00-00-consensus.xz"))
    old, new = change
    assert old in raw
    changed = raw.replace(old, new, 1)
    header, entries, footer = fastparse.split_network_status(changed)
    if refused:
        with pytest.raises(ValueError):
            NetworkStatusDocumentV3(changed, validate=True)
        with pytest.raises(ValueError, match=refused):
            fastparse.parse_router_entries(entries, microdesc=False)
        return
    reference = NetworkStatusDocumentV3(changed, validate=True)
    ours = fastparse.parse_router_entries(entries, microdesc=False)
    for fingerprint, expected in reference.routers.items():
        assert [getattr(ours[fingerprint], name) for name in ENTRY_FIELDS] == \
            [getattr(expected, name) for name in ENTRY_FIELDS], fingerprint
    assert column_mismatches(ours, reference) == []


@pytest.mark.parametrize("change, refused", [
    ((b"\nm ", b"\nx "), "no 'm' line"),
    ((b"\nm ", b"\nm AAAA\nm "), "a second 'm' line"),
])
def test_a_microdesc_entry_needs_exactly_one_m_line_as_stem_says(change, refused):
    raw = _strip_annotations(read(DATA / "2022-11-19-10-00-00-consensus-microdesc.xz"))
    changed = raw.replace(*change, 1)
    with pytest.raises(ValueError):
        NetworkStatusDocumentV3(changed, validate=True)
    with pytest.raises(ValueError, match=refused):
        fastparse.parse_router_entries(fastparse.split_network_status(changed)[1], microdesc=True)


def test_the_last_line_needs_no_newline():
    raw = _strip_annotations(read(DATA / "2020-02-29-10-00-00-consensus.xz"))
    header, entries, footer = fastparse.split_network_status(raw)
    whole = fastparse.parse_router_entries(entries, microdesc=False)
    cut = fastparse.parse_router_entries(entries.rstrip(b"\n"), microdesc=False)
    last = list(whole)[-1]
    assert whole[last].bandwidth is not None and column_mismatches(cut, NetworkStatusDocumentV3(raw)) == []


def test_columns_of_a_document_stem_built_and_the_mapping_they_still_are():
    raw = _strip_annotations(read(DATA / "2020-02-29-10-00-00-consensus.xz"))
    reference = NetworkStatusDocumentV3(raw, validate=True)
    attributes = dict(vars(reference))
    converted = entries_of(reference)  # stem's entries (as tests' .create() documents have) become columns
    assert column_mismatches(converted, reference) == []
    again = entries_of(reference)  # converted again: nothing is kept on, or written onto, stem's object
    assert again is not converted and again.fingerprints == converted.fingerprints
    assert vars(reference) == attributes
    parsed = parse_document(DocKind.CONSENSUS, raw, "moria1")
    assert entries_of(parsed) is parsed.entries is parsed.routers  # a parsed document holds its columns
    header, entries, footer = fastparse.split_network_status(raw)
    ours = fastparse.parse_router_entries(entries, microdesc=False)
    first, last = list(reference.routers)[0], list(reference.routers)[-1]
    assert first in ours and "F" * 40 not in ours and ours.get("F" * 40) is None
    assert ours[first] is ours[first]  # an entry is built once
    assert len(ours) == len(reference.routers) and list(ours.keys())[-1] == last
    half = RouterEntries.from_entries({fp: ours[fp] for fp in list(ours)[::2]})
    rows = ours.indices_in(half)
    assert rows[::2].tolist() == list(range(len(half))) and set(rows[1::2].tolist()) == {-1}


def test_the_r_line_cache_keeps_the_document_at_hand_when_full(monkeypatch):
    monkeypatch.setattr(fastparse, "_R_CACHES", {False: {}, True: {}})
    monkeypatch.setattr(fastparse, "R_CACHE_LIMIT", 8000)
    documents = [fastparse.split_network_status(_strip_annotations(read(DATA / name)))[1]
                 for name in ("2020-02-29-10-00-00-consensus.xz", "2016-09-20-13-00-00-consensus.xz")]
    first = fastparse.parse_router_entries(documents[0], microdesc=False)
    assert len(fastparse._R_CACHES[False]) == len(first) > 6000
    second = fastparse.parse_router_entries(documents[1], microdesc=False)  # 6,400 + 7,200 lines do not fit
    cache = fastparse._R_CACHES[False]
    assert len(cache) == len(second) and all(value[1] in second for value in cache.values())
    again = fastparse.parse_router_entries(documents[1], microdesc=False)  # all from the cache now
    assert again.fingerprints == second.fingerprints and again.published == second.published
    assert again.addresses == second.addresses and (again.or_ports == second.or_ports).all()


# -- hostile numbers, names and times in the fast paths: refused as tor's grammar refuses them (hardening) ----------

R_LINE = "r relay1 AAAAAAAAAAAAAAAAAAAAAAAAAAA AAAAAAAAAAAAAAAAAAAAAAAAAAA 2020-02-29 10:00:00 1.2.3.4 9001 0"


def entry_text(r_line: str = R_LINE, s_line: str = "s Fast", w_line: str = "w Bandwidth=1") -> bytes:
    return "\n".join([r_line, s_line, w_line, ""]).encode("utf-8", "surrogateescape")


@pytest.mark.parametrize("entry, problem", [
    (entry_text(w_line="w Bandwidth=4294967296"), r"Bandwidth= is out of range \(0-4294967295\)"),
    (entry_text(w_line="w Bandwidth=1 Measured=99999999999"), r"Measured= is out of range"),
    (entry_text(w_line="w Bandwidth=" + "9" * 400), r"Bandwidth= is out of range"),
    (entry_text(w_line="w Bandwidth=\u0665\u0660\u0660\u0660"), "Bandwidth= needs a number"),
    (entry_text(w_line="w Bandwidth=1 Measured=\uff15"), "Measured= needs a number"),
    (entry_text(w_line="w Bandwidth=+5"), "Bandwidth= needs a number"),
    (entry_text(R_LINE.replace("9001", "\u0669\u0660\u0660\u0661")), "is not a port"),
    (entry_text(R_LINE.replace("9001", "\u00b2")), "is not a port"),
    (entry_text(R_LINE.replace("relay1", "a\x00b")), r"nickname 'a\\x00b' is not 1-19 letters and digits"),
    (entry_text(R_LINE.replace("relay1", "\udcff\udcfe")), "nickname '.*' is not 1-19 letters and digits"),
    (entry_text(R_LINE.replace("relay1", "x" * 20)), "nickname 'x{20}' is not 1-19"),
    (entry_text(R_LINE.replace("relay1", "n\u00efck")), "nickname 'n\u00efck' is not 1-19"),
    (entry_text(R_LINE.replace("2020-02-29", "9999-02-29")), "'9999-02-29 10:00:00' is not a time"),
    (entry_text(R_LINE.replace("2020-02-29", "1969-12-31")), "'1969-12-31 10:00:00' is not a time from 1970"),
    (entry_text(R_LINE.replace("2020-02-29", "\uff12020-02-29")), "is not a time"),
    (entry_text(R_LINE.replace("AAAAAAAAAAAAAAAAAAAAAAAAAAA ", "AAAA ", 1)), "'AAAA' is not the base64 of 20 bytes"),
    (entry_text(s_line="s Fast Fast"), "'s Fast Fast' gives a flag twice or an empty one"),
    (entry_text(s_line="s Fast  Running"), "gives a flag twice or an empty one"),
])
def test_hostile_router_entries_are_refused_by_name(entry, problem):
    with pytest.raises(ValueError, match=f"line [0-9]+: .*{problem}"):
        fastparse.parse_router_entries(entry, microdesc=False)


def test_the_largest_numbers_tor_allows_are_read():
    entries = fastparse.parse_router_entries(entry_text(w_line="w Bandwidth=4294967295 Measured=4294967295"), False)
    assert entries.bandwidth.tolist() == entries.measured.tolist() == [4294967295]


def test_a_microdesc_entry_whose_digest_is_not_a_digest_is_refused():
    raw = _strip_annotations(read(DATA / "2022-11-19-10-00-00-consensus-microdesc.xz"))
    digest = raw[raw.index(b"\nm ") + 3:raw.index(b"\n", raw.index(b"\nm ") + 1)]
    for bad in (b"!!!", digest[:-1], digest + b"A", "\u0665".encode() + digest[1:]):
        entries = fastparse.split_network_status(raw.replace(b"\nm " + digest + b"\n", b"\nm " + bad + b"\n", 1))[1]
        with pytest.raises(ValueError, match="is not a microdescriptor digest"):
            fastparse.parse_router_entries(entries, microdesc=True)


def test_a_non_utf8_nickname_is_refused_naming_the_document():
    raw = read(DATA / "2020-02-29-10-00-00-consensus.xz")
    start = raw.index(b"\nr ") + 3
    broken = raw[:start] + b"\xff\xfe" + raw[raw.index(b" ", start):]
    with pytest.raises(DocumentError, match=r"^consensus from moria1: line \d+: nickname '\ufffd\ufffd' is not 1-19"):
        parse_document(DocKind.CONSENSUS, broken, "moria1")


DESCRIPTORS = DATA / "2020-02-29-10-05-00-server-descriptors.xz"


def first_descriptor_line(keyword: bytes) -> bytes:
    raw = read(DESCRIPTORS)
    start = raw.index(b"\n" + keyword + b" ") + 1
    return raw[start:raw.index(b"\n", start)]


@pytest.mark.parametrize("keyword, new, problem", [
    (b"bandwidth", b"bandwidth 1 1 " + b"9" * 400, "needs 3 numbers: average 1-2147483647, burst and observed"),
    (b"bandwidth", b"bandwidth 2147483648 1 1", "needs 3 numbers"),
    (b"bandwidth", b"bandwidth 0 0 0", "needs 3 numbers: average 1-2147483647"),
    (b"bandwidth", "bandwidth \u0665\u0660\u0660\u0660 1 1".encode(), "needs 3 numbers"),
    (b"uptime", b"uptime " + b"9" * 30, "'uptime 9{30}' needs a number"),
    (b"uptime", "uptime \u0665".encode(), "needs a number"),
    (b"published", b"published 9999-02-29 10:00:00", "published '9999-02-29 10:00:00' is not a time"),
    (b"published", "published \uff12020-02-29 10:00:00".encode(), "published '.*' is not a time"),
    (b"published", b"published 2020-02-29 10:00:00 and more", "published '.*' is not a time"),
    (b"fingerprint", b"fingerprint 0x" + b"A" * 38, "fingerprint '0x.*' is malformed"),
    (b"fingerprint", b"fingerprint " + b"A_" * 20, "is malformed"),
    (b"family", b"family $" + b"A" * 39, "has a member that is neither a nickname nor a \\$fingerprint"),
    (b"family", b"family \xff", "has a member that is neither"),
    (b"ipv6-policy", "ipv6-policy accept \u0668\u0660".encode(), "is not accept or reject and ports"),
])
def test_hostile_server_descriptors_are_refused_by_name(keyword, new, problem):
    raw = read(DESCRIPTORS)
    line = first_descriptor_line(keyword) if keyword != b"ipv6-policy" else b"router-signature"
    if keyword == b"ipv6-policy":
        new = new + b"\nrouter-signature"
    with pytest.raises(DocumentError, match=f"^server-descriptors from moria1: server descriptor \\w+: .*{problem}"):
        parse_document(DocKind.SERVER_DESCRIPTORS, raw.replace(line, new, 1), "moria1")


@pytest.mark.parametrize("router, problem", [
    (b"router anonion 31.54.58.167 65536 0 0", "'65536' is not a port"),
    (b"router anonion 31.54.58.167 0 0 0", "'0' is not a port"),
    ("router anonion 31.54.58.167 \u0664\u0664\u0663 0 0".encode(), "'\u0664\u0664\u0663' is not a port"),
    (b"router anonion 31.54.58.167 443 0 99999", "'99999' is not a port"),
    (b"router anonion 31.54.58.999 443 0 0", "'31.54.58.999' is not an IPv4 address"),
    (b"router anon\xffion 31.54.58.167 443 0 0", "the nickname is not 1-19 letters and digits"),
    (b"router " + b"x" * 20 + b" 31.54.58.167 443 0 0", "the nickname is not 1-19 letters and digits"),
])
def test_a_hostile_router_line_is_refused_by_name(router, problem):
    raw = read(DATA / "server-descriptors-2")
    with pytest.raises(DocumentError, match=f"^server-descriptors from x: server descriptor 'router .*': {problem}"):
        parse_document(DocKind.SERVER_DESCRIPTORS, raw.replace(b"router anonion 31.54.58.167 443 0 0", router, 1), "x")


def test_metrics_read_an_impossible_descriptor_bandwidth_as_unknown_never_overflowing():
    """A descriptor made otherwise than by the parser (stem's, in tests) may carry any number."""
    from agent.metrics import network, relays

    class Descriptor:
        average_bandwidth, burst_bandwidth, observed_bandwidth = 10 ** 400, 5000, -1

    assert relays._advertised([Descriptor()]).tolist() == [5000.0]

    class Consensus:
        bandwidth_weights = {"Wgg": 10 ** 400, "Wmm": 10000}

    assert network.bandwidth_weights(Consensus()) == {"Wmm": 10000}


@pytest.mark.parametrize("keyword", [b"bandwidth", b"uptime", b"published", b"fingerprint", b"family", b"contact"])
def test_a_descriptor_giving_a_line_twice_is_refused(keyword):
    line = first_descriptor_line(keyword)
    raw = read(DESCRIPTORS).replace(line, line + b"\n" + line, 1)
    with pytest.raises(DocumentError, match=f"server descriptor \\w+: a second '{keyword.decode()}' line"):
        parse_document(DocKind.SERVER_DESCRIPTORS, raw, "moria1")


# -- a vote's stats lines (votes since tor 0.4.7, tor#40314): kept, and never a reason to refuse the vote -----------

TESTNET_VOTES = sorted((DATA / "testnet-shared-random").glob("*.vote"))  # our private network's: with stats lines
RELAY1, AUTH1 = "8499E9F410962F1C9F6B3577592624E1677F1931", "49ABAE9C2BB358A3D94D66B60FA8FDE7070F6484"
RELAY1_STATS = b"\nstats wfu=1.000000 tk=54 mtbf=54\nm 32,33,34,35 sha256=uuz2dR7C"  # relay1's line in 074550-auth1


def stats_by_hand(raw: bytes) -> dict[str, tuple]:
    """Fingerprint -> (wfu, tk, mtbf) of each entry's stats line, read line by line here (tor's shape only)."""
    found, fingerprint = {}, None
    for line in raw.decode().split("\n"):
        if line.startswith("r "):
            fingerprint = base64.b64decode(line.split(" ")[2] + "=").hex().upper()
        elif line.startswith("stats "):
            words = dict(word.split("=") for word in line.split(" ")[1:])
            found[fingerprint] = (float(words["wfu"]), float(words["tk"]), float(words["mtbf"]))
    return found


def vote_entries(raw: bytes) -> RouterEntries:
    return parse_document(DocKind.VOTE, raw, "testnet").entries


def figures(entries: RouterEntries) -> dict[str, tuple]:
    """Fingerprint -> the parsed figures of every entry that has some."""
    return {fingerprint: entries[fingerprint].stats for fingerprint in entries if entries[fingerprint].stats}


def test_stats_lines_are_kept_from_real_votes():
    for path in TESTNET_VOTES:
        raw = path.read_bytes()
        entries = vote_entries(raw)
        expected = stats_by_hand(raw)
        assert len(expected) == len(entries) == 6, path.name  # every entry has one
        assert figures(entries) == expected, path.name
        assert read_vote_stats(raw) == expected, path.name  # the reading of bytes, for what has no parsed vote
        assert entries.stats.shape == (6, 3) and entries.stats.dtype == np.float64
    entries = vote_entries((DATA / "testnet-shared-random" / "074550-auth1.vote").read_bytes())
    # relay1: stats wfu=1.000000 tk=54 mtbf=54; auth1: stats wfu=0.000000 tk=0 mtbf=0
    assert entries[RELAY1].stats == (1.0, 54.0, 54.0) and entries[AUTH1].stats == (0.0, 0.0, 0.0)
    assert entries.stats_of(entries.rows[RELAY1]) == (1.0, 54.0, 54.0)


def test_flag_lines_parse_as_before_beside_stats_lines():
    """A stats line starts with "s", as a flags line does: the vote parses as it does without its stats lines."""
    for path in TESTNET_VOTES:
        raw = path.read_bytes()
        stripped = re.sub(rb"\nstats [^\n]*", b"", raw)
        assert stripped.count(b"\nstats") == 0 < raw.count(b"\nstats ")
        with_stats, without = vote_entries(raw), vote_entries(stripped)
        assert without.stats is None and figures(without) == {}
        assert list(with_stats) == list(without)
        for fingerprint in with_stats:
            assert [getattr(with_stats[fingerprint], name) for name in ENTRY_FIELDS] == \
                [getattr(without[fingerprint], name) for name in ENTRY_FIELDS], (path.name, fingerprint)
        assert column_mismatches(with_stats, NetworkStatusDocumentV3(raw, validate=True)) == []
    raw = (DATA / "testnet-shared-random" / "074550-auth1.vote").read_bytes()
    start = raw.index(b"\nr relay1 ")
    s_line = raw[start:].index(b"\ns ") + start
    without_s = raw[:s_line] + raw[raw.index(b"\n", s_line + 1):]  # relay1 keeps its stats line, loses its flags
    with pytest.raises(DocumentError, match="no 's' line in the entry"):
        vote_entries(without_s)
    flags_like = vote_entries(raw.replace(RELAY1_STATS, RELAY1_STATS.replace(
        b"stats wfu=1.000000 tk=54 mtbf=54", b"stats Fast Guard"), 1))
    assert flags_like[RELAY1].flags == vote_entries(raw)[RELAY1].flags and flags_like[RELAY1].stats is None
    not_stats = vote_entries(raw.replace(RELAY1_STATS, RELAY1_STATS.replace(b"\nstats ", b"\ntats "), 1))
    assert not_stats[RELAY1].stats is None and not_stats[AUTH1].stats == (0.0, 0.0, 0.0)  # "tats" is not "stats"


def test_a_refused_line_after_stats_lines_is_named_by_its_number_in_the_file():
    raw = (DATA / "testnet-shared-random" / "074550-auth1.vote").read_bytes()
    where = raw.index(b"w Bandwidth=0 Measured=1300")  # relay1's, after three entries' stats lines
    broken = raw[:where] + b"w Bandwidth=lots" + raw[where + len(b"w Bandwidth=0 Measured=1300"):]
    number = broken.count(b"\n", 0, where) + 1
    with pytest.raises(DocumentError, match=rf"^vote from testnet: line {number}: Bandwidth= needs a number"):
        vote_entries(broken)


@pytest.mark.parametrize("line, expected", [
    (b"stats wfu=1.5 tk=54 mtbf=54", None),  # a WFU above 1
    (b"stats wfu=nan tk=54 mtbf=54", None),
    (b"stats wfu=1.000000 tk=-54 mtbf=54", None),
    (b"stats wfu=1.000000 tk=1e3 mtbf=54", None),
    ("stats wfu=1.000000 tk=\u0665\u0664 mtbf=54".encode(), None),  # Unicode digits
    (b"stats wfu=1.000000 tk=54 mtbf=" + b"9" * 21, None),  # more digits than an unsigned 64-bit number has
    (b"stats wfu=1.000000 tk=54 tk=54 mtbf=54", None),  # a key twice
    (b"stats wfu=1.000000 tk=54 mtbf", None),  # a word that is no key=value
    (b"stats wfu=1.000000 \xff tk=54 mtbf=54", None),
    (b"stats", None),
    (b"stats future=1", None),  # nothing known
    (b"stats tk=54", (None, 54.0, None)),  # a key left out
    (b"stats mtbf=5 future=x wfu=0.25", (0.25, None, 5.0)),  # any order; unknown keys ignored
    (b"stats  wfu=1  tk=2 mtbf=3.5\r", (1.0, 2.0, 3.5)),
])
def test_a_stats_line_is_read_whole_or_not_at_all_and_never_refuses_the_vote(line, expected):
    raw = (DATA / "testnet-shared-random" / "074550-auth1.vote").read_bytes()
    changed = raw.replace(RELAY1_STATS, RELAY1_STATS.replace(b"stats wfu=1.000000 tk=54 mtbf=54", line), 1)
    assert changed != raw
    entries = vote_entries(changed)
    assert entries[RELAY1].stats == expected
    others = {fingerprint: values for fingerprint, values in stats_by_hand(raw).items() if fingerprint != RELAY1}
    assert {key: value for key, value in figures(entries).items() if key != RELAY1} == others
    assert read_vote_stats(changed) == figures(entries)


@pytest.mark.parametrize("second", [b"stats wfu=1.000000 tk=54 mtbf=54", b"stats wfu=0.500000 tk=9 mtbf=9",
                                    b"stats nonsense"])
def test_an_entry_with_two_stats_lines_gets_no_figures_and_the_vote_stands(second):
    raw = (DATA / "testnet-shared-random" / "074550-auth1.vote").read_bytes()
    changed = raw.replace(RELAY1_STATS, RELAY1_STATS.replace(b"\nm ", b"\n" + second + b"\nm ", 1), 1)
    entries = vote_entries(changed)
    assert entries[RELAY1].stats is None and not np.isnan(entries.stats).all()
    assert entries[AUTH1].stats == (0.0, 0.0, 0.0) and len(figures(entries)) == 5
    assert read_vote_stats(changed) == figures(entries)


def test_documents_without_stats_lines_have_none():
    for name in ("2016-09-20-13-00-00-vote-maatuska.xz", "2017-07-17-17-00-00-vote-cropped"):
        raw = read(DATA / name)
        assert b"\nstats " not in raw
        entries = vote_entries(raw)
        assert len(entries) > 0 and entries.stats is None and figures(entries) == {}
        assert read_vote_stats(raw) == {}
    consensus = parse_document(DocKind.CONSENSUS, read(DATA / "2020-02-29-10-00-00-consensus.xz"), "moria1")
    assert consensus.entries.stats is None


def test_stats_survive_pickling_and_the_column_operations():
    entries = vote_entries((DATA / "testnet-shared-random" / "074550-auth1.vote").read_bytes())
    expected = figures(entries)
    assert figures(pickle.loads(pickle.dumps(entries))) == expected
    assert figures(RouterEntries.from_entries({fp: entries[fp] for fp in entries})) == expected
    plain = vote_entries(read(DATA / "2017-07-17-17-00-00-vote-cropped"))  # no stats lines
    picked = RouterEntries.picked(entries, plain, np.array([len(entries), entries.rows[RELAY1], len(entries) + 1]))
    assert [picked.stats_of(row) for row in range(3)] == [None, (1.0, 54.0, 54.0), None]
    assert RouterEntries.picked(plain, plain, np.array([0, 1])).stats is None


#: Figures as tor writes them ("wfu=%.6f tk=%lu mtbf=%.0f"), and figures for lines of its shape that it would not
#: write (out of range, too long, not plain numbers).
TOR_FIGURES = st.one_of(st.integers(0, 2 ** 64 - 1).map(str), st.floats(0, 1).map("{:.6f}".format))
ODD_TEXTS = ["", "1.", ".5", "-1", "+1", "1e3", "nan", "inf", "\u0665", "\uff15", "9" * 21, "0." + "5" * 21, "00.5",
             "1.0000001", "1.5", "2", "0x1", "1_0", "1 ", " 1"]
ODD_FIGURES = st.one_of(st.floats(0, 2).map("{:.6f}".format), st.integers(2 ** 64, 2 ** 70).map(str),
                        st.sampled_from(ODD_TEXTS))
TOR_WFU = st.floats(0, 1).map("{:.6f}".format)
LINES_AS_WRITTEN = st.builds("wfu={} tk={} mtbf={}".format, TOR_WFU, TOR_FIGURES, TOR_FIGURES)
OTHER_LINES = st.one_of(st.builds("wfu={} tk={} mtbf={}".format, st.one_of(TOR_WFU, ODD_FIGURES),
                                  st.one_of(TOR_FIGURES, ODD_FIGURES), st.one_of(TOR_FIGURES, ODD_FIGURES)),
                        st.text(st.sampled_from("wfutkmb= .0123456789-e\u0665\r\t"), max_size=40))


@settings(max_examples=400, deadline=None)
@given(st.lists(LINES_AS_WRITTEN, max_size=12), st.lists(OTHER_LINES, max_size=2), st.randoms())
def test_the_bulk_reading_of_stats_lines_is_read_stats_line_by_line(as_written, others, random):
    """Lines as tor writes them, read in bulk, with none, one or two others among them (each tries the bulk check)."""
    values = as_written + [value.replace("\n", " ") for value in others]
    random.shuffle(values)
    if not values:
        return
    column = fastparse._stats(list(range(len(values))), values, len(values))
    expected = [read_stats(value) for value in values]
    assert [tuple(None if np.isnan(x) else x for x in row) if not np.isnan(row).all() else None
            for row in column.tolist()] == expected


def test_each_odd_figure_among_lines_as_written_is_read_as_read_stats_reads_it():
    written = ["wfu=1.000000 tk=54 mtbf=54", "wfu=0.000000 tk=0 mtbf=0"]
    for odd in ODD_TEXTS:
        for position in range(3):
            figures = ["0.500000", "7", "8"]
            figures[position] = odd
            values = written + ["wfu={} tk={} mtbf={}".format(*figures)]
            expected = [read_stats(value) or (None,) * 3 for value in values]
            read = read_stats_lines(values).tolist()
            assert [[None if x != x else x for x in row] for row in read] == [list(row) for row in expected], values
