"""Authority list parsing and the merge with a consensus's dir-source lines."""

import pytest

from agent.model.authorities import Authority, default_authorities, from_consensus, merge, parse_dir_authority_line


def test_default_list_matches_tor_0_4_9():
    authorities = {a.nickname: a for a in default_authorities()}
    assert len(authorities) == 9 and "Serge" not in authorities
    moria1 = authorities["moria1"]
    assert (moria1.address, moria1.dir_port, moria1.or_port) == ("128.31.0.39", 9231, 9201)
    assert moria1.v3ident == "F533C81CEF0BC0267857C99B2F471ADF249FA232"
    assert authorities["tor26"].fingerprint == "FAA4BCA4A6AC0FB4CA2F8AD5A11D9E122BA894F6"
    assert authorities["maatuska"].dir_port == 443


def test_line_with_ipv6_and_grouped_fingerprint():
    line = ("gabelmoo orport=443 v3ident=ED03BB616EB2F60BEC80151114BB25CEF515B226 "
            "ipv6=[2001:638:a000:4140::ffff:189]:443 131.188.40.189:80 "
            "F204 4413 DAC2 E02E 3D6B CF47 35A1 9BCA 1DE9 7281")
    authority = parse_dir_authority_line(line)
    assert authority == Authority("gabelmoo", "ED03BB616EB2F60BEC80151114BB25CEF515B226", "131.188.40.189", 80,
                                  443, "F2044413DAC2E02E3D6BCF4735A19BCA1DE97281")


@pytest.mark.parametrize("line, message", [
    ("Serge orport=9001 bridge 66.111.2.131:9030 BA44A889E64B93FAA2B114E02C2A279A8555C533", "no v3ident"),
    ("x orport=1 v3ident=F533C81CEF0BC0267857C99B2F471ADF249FA232 no-address-here", "no IPv4:DirPort"),
    ("x v3ident=F533C81CEF0BC0267857C99B2F471ADF249FA232 1.2.3.4:0", "dir_port of x must be a port number"),
    ("bad-name! v3ident=F533C81CEF0BC0267857C99B2F471ADF249FA232 1.2.3.4:80", "not a valid tor nickname"),
    ("x v3ident=F533C81CEF0BC0267857C99B2F471ADF249FA232 1.2.3.4:80 ABCD", "fingerprint of x must be 40 hex"),
])
def test_bad_lines_say_what_is_wrong(line, message):
    with pytest.raises(ValueError, match=message):
        parse_dir_authority_line(line)


def test_dir_sources_of_a_real_consensus(consensus):
    listed = {a.nickname: a for a in from_consensus(consensus)}
    assert set(listed) == {"tor26", "longclaw", "bastet", "dizum", "gabelmoo", "moria1", "dannenberg",
                           "maatuska", "Faravahar"}
    assert listed["moria1"].v3ident == "D586D18309DED4CD6D57C18FDB97EFA96D330566"  # moria1's key in 2022


def test_merge_follows_the_consensus_and_reports_changes(consensus, caplog):
    known = list(default_authorities())
    merged, changes = merge(known, from_consensus(consensus))
    # Since this 2022 consensus, moria1, tor26 and Faravahar changed their v3
    # identity keys and dizum moved: the old keys are new to today's list, and
    # today's keys are missing from the 2022 consensus. Nothing raises.
    assert set(changes.added) == {"moria1", "tor26", "Faravahar"}
    assert set(changes.missing) == {"moria1", "tor26", "faravahar"}
    assert changes.moved == ("dizum",)
    dizum = next(a for a in merged if a.nickname == "dizum")
    assert dizum.address != "45.66.35.11"
    assert dizum.address == next(a.address for a in from_consensus(consensus) if a.nickname == "dizum")
    assert dizum.fingerprint == "7EA6EAD6FD83083C538F44038BBFA077587DD755"  # kept from the bootstrap list
    assert len(merged) == 12
    assert "authority moria1 is listed in the consensus but was not known" in caplog.text
    assert "authority dizum moved" in caplog.text


def test_merge_of_identical_lists_changes_nothing():
    known = list(default_authorities())
    merged, changes = merge(known, known)
    assert merged == known
    assert not (changes.added or changes.missing or changes.moved)
