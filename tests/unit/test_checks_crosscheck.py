"""Shared-random, ORPort, vote-propagation and bandwidth-coverage checks.

The shared-random votes are real: three authorities of our private network
in the last commit round and the second reveal round of one protocol run
(tests/data/testnet-shared-random, see tests/data/README.md).
"""

from datetime import datetime, timezone

import pytest
from stem.descriptor.networkstatus import NetworkStatusDocumentV3
from stem.descriptor.router_status_entry import RouterStatusEntryV3

from agent.checks.shared_random import reveal_matches, reveal_round
from agent.fetch.crosscheck import vote_digest
from agent.model.authorities import Authority
from agent.model.snapshot import DocKind, OrPortProbe, VoteHolding
from agent.parse.documents import _strip_annotations, parse_document
from tests.conftest import DATA, parse_data, read_data
from tests.unit.test_checks import _b64, findings, snapshot

SR_CHECKS = ("TorSharedRandomCommitMismatch", "TorSharedRandomCommitDuplicated", "TorSharedRandomNoReveal",
             "TorSharedRandomRevealMissing", "TorSharedRandomRevealMismatch", "TorSharedRandomRevealInvalid")
COMMIT_ROUND, REVEAL_ROUND = "074550", "074610"
AUTH1 = "C4E37F802B0091996645191A9C6FFEE5DE82FA3A"


@pytest.fixture(scope="module")
def consensus():
    return parse_data("consensus", "2016-09-20-13-00-00-consensus.xz")


def raw_votes(round_name: str) -> dict[str, bytes]:
    return {path.stem.split("-")[1]: path.read_bytes()
            for path in sorted((DATA / "testnet-shared-random").glob(f"{round_name}-*.vote"))}


def sr_snapshot(consensus, raws: dict[str, bytes]):
    votes = {nickname: parse_document(DocKind.VOTE, raw, nickname) for nickname, raw in raws.items()}
    authorities = [Authority(n, v.directory_authorities[0].v3ident, "127.0.0.1", 1) for n, v in votes.items()]
    return snapshot(consensus, authorities=authorities, votes=votes)


def commit_line(raw: bytes, identity: str) -> bytes:
    return next(line for line in raw.split(b"\n")
                if line.startswith(b"shared-rand-commit") and identity.encode() in line)


def edited(raws: dict[str, bytes], nickname: str, old: bytes, new: bytes) -> dict[str, bytes]:
    assert raws[nickname].count(old) == 1
    return {**raws, nickname: raws[nickname].replace(old, new)}


def sr_findings(snap):
    return {check_id: findings(snap, check_id) for check_id in SR_CHECKS}


def test_phases_follow_the_voting_interval_like_tor():
    commit = parse_document(DocKind.VOTE, raw_votes(COMMIT_ROUND)["auth1"], "commit")
    reveal = parse_document(DocKind.VOTE, raw_votes(REVEAL_ROUND)["auth1"], "reveal")
    assert (reveal_round(commit), reveal_round(reveal)) == (None, 1)  # slot 11: last commit; slot 13: 2nd reveal
    live = NetworkStatusDocumentV3.create({"vote-status": "vote", "valid-after": "2016-09-20 13:00:00",
                                           "fresh-until": "2016-09-20 14:00:00"})
    assert reveal_round(live) == 1  # hourly votes: 12:00 UTC is the first reveal round


def test_real_votes_of_both_phases_raise_nothing(consensus):
    for round_name in (COMMIT_ROUND, REVEAL_ROUND):
        assert {k: v for k, v in sr_findings(sr_snapshot(consensus, raw_votes(round_name))).items() if v} == {}


def test_commit_mismatch_and_duplicate(consensus):
    raws = raw_votes(COMMIT_ROUND)
    line = commit_line(raws["auth2"], AUTH1)
    forged = line.replace(b"AAAAAGsFQHzca", b"AAAAAGsFQHzXX")
    hits = sr_findings(sr_snapshot(consensus, edited(raws, "auth2", line, forged)))
    assert [(f.subjects, f.description) for f in hits["TorSharedRandomCommitMismatch"]] == [
        ({"authority": "auth2", "peer": "auth1"},
         "auth2 records the commitment of auth1 as AAAAAGsFQHzXX/VE…; auth1 itself commits AAAAAGsFQHzca/VE…")]
    doubled = sr_findings(sr_snapshot(consensus, edited(raws, "auth3", commit_line(raws["auth3"], AUTH1),
                                                        commit_line(raws["auth3"], AUTH1) + b"\n" + forged)))
    assert [(f.subjects, f.values) for f in doubled["TorSharedRandomCommitDuplicated"]] == [
        ({"authority": "auth3", "peer": "auth1"}, {"count": 2})]


def test_reveal_family(consensus):
    raws = raw_votes(REVEAL_ROUND)
    own = commit_line(raws["auth1"], AUTH1)
    unrevealed = own.rsplit(b" ", 1)[0]
    hits = sr_findings(sr_snapshot(consensus, edited(raws, "auth1", own, unrevealed)))
    assert [f.description for f in hits["TorSharedRandomNoReveal"]] == [
        "auth1 committed but its vote of 2026-11-24 07:46:10 (reveal round 2 of 12) reveals nothing"]

    held = commit_line(raws["auth2"], AUTH1)
    hits = sr_findings(sr_snapshot(consensus, edited(raws, "auth2", held, held.rsplit(b" ", 1)[0])))
    assert [f.description for f in hits["TorSharedRandomRevealMissing"]] == [
        "auth2 has no reveal for auth1 in reveal round 2, though auth1 published it"]

    wrong = held[:-10] + b"XXXXXXXXX="
    hits = sr_findings(sr_snapshot(consensus, edited(raws, "auth2", held, wrong)))
    assert [(f.subjects, f.values["recorded"][-10:]) for f in hits["TorSharedRandomRevealMismatch"]] == [
        ({"authority": "auth2", "peer": "auth1"}, "XXXXXXXXX=")]
    assert hits["TorSharedRandomRevealInvalid"] == []  # only an authority's own reveal is judged

    hits = sr_findings(sr_snapshot(consensus, edited(raws, "auth1", own, own[:-10] + b"XXXXXXXXX=")))
    assert [f.subjects for f in hits["TorSharedRandomRevealInvalid"]] == [{"authority": "auth1"}]
    assert "does not hash to its commitment AAAAAGsFQHzca/VE" in hits["TorSharedRandomRevealInvalid"][0].description


def test_a_commitment_made_in_the_last_commit_round_is_not_held_to_reveal(consensus):
    """An authority that starts at the end of a commit phase commits in its last round (TIMESTAMP 07:45:50
    here) and tor lists that commitment without a reveal, the others lagging behind it: a demo network did
    this at its first reveal round (2026-12-06, CI). A commitment of an earlier round still must reveal."""
    import base64

    raws = raw_votes(REVEAL_ROUND)
    late_time = (int(datetime(2026, 11, 24, 7, 45, 50, tzinfo=timezone.utc).timestamp())).to_bytes(8, "big")

    def made_late(line: bytes) -> bytes:
        words = line.split(b" ")
        words[4] = base64.b64encode(late_time + base64.b64decode(words[4])[8:])
        return b" ".join(words)

    own = commit_line(raws["auth1"], AUTH1)
    late_unrevealed = made_late(own).rsplit(b" ", 1)[0]
    hits = sr_findings(sr_snapshot(consensus, edited(raws, "auth1", own, late_unrevealed)))
    assert hits["TorSharedRandomNoReveal"] == []

    late_raws = edited(raws, "auth1", own, made_late(own))  # auth1 made its commitment late and revealed
    held = commit_line(late_raws["auth2"], AUTH1)
    hits = sr_findings(sr_snapshot(consensus, edited(late_raws, "auth2", held, held.rsplit(b" ", 1)[0])))
    assert hits["TorSharedRandomRevealMissing"] == []


def test_reveal_matches_the_commit_as_srv_spec_says():
    words = commit_line(raw_votes(REVEAL_ROUND)["auth3"], AUTH1).decode().split()
    assert reveal_matches(words[4], words[5])
    assert not reveal_matches(words[4], words[5][:-4] + "AAA=")
    assert not reveal_matches("not base64!", words[5])


def test_orport_unreachable(consensus):
    snap = snapshot(consensus)
    snap.orport_probes = [OrPortProbe("moria1", "128.31.0.34:9101", 0.1),
                          OrPortProbe("moria1", "[2001:db8::1]:9101", None, "connection refused")]
    hits = findings(snap, "TorAuthorityOrPortUnreachable")
    assert [(f.subjects, f.description) for f in hits] == [
        ({"authority": "moria1", "endpoint": "[2001:db8::1]:9101"},
         "cannot connect to the ORPort of moria1 at [2001:db8::1]:9101: connection refused")]
    snap.orport_probes = snap.orport_probes[:1]
    assert findings(snap, "TorAuthorityOrPortUnreachable") == []


def test_vote_not_propagated(consensus):
    snap = snapshot(consensus)
    snap.vote_holdings = [VoteHolding(holder, "moria1", "AB" * 20, holder != "tor26") for holder in
                          ("moria1", "tor26", "gabelmoo")] + [
        VoteHolding("dizum", "moria1", "AB" * 20, None, "timed out")]
    hits = findings(snap, "TorVoteNotPropagated")
    assert [(f.subjects, f.description) for f in hits] == [
        ({"authority": "tor26", "peer": "moria1"},
         f"tor26 does not serve the current vote of moria1 (digest {'AB' * 20}); 2 authorities do")]
    snap.vote_holdings = [VoteHolding(h, "moria1", "AB" * 20, True) for h in ("moria1", "tor26")]
    assert findings(snap, "TorVoteNotPropagated") == []


def test_bandwidth_file_coverage():
    bandwidth_file = parse_data("bandwidth-file", "bandwidth-file-v1.4")
    measured = sorted(bandwidth_file.measurements)
    entries = [RouterStatusEntryV3.create({"r": f"relay{i} {_b64(fp)} {'B' * 27} 2019-04-21 12:00:00 1.2.3.4 9001 0"})
               for i, fp in enumerate(measured[:30] + [f"{i:040X}" for i in range(1, 21)])]
    consensus = NetworkStatusDocumentV3.create({"valid-after": "2019-04-21 21:00:00"}, routers=entries)
    snap = snapshot(consensus,
                    authorities=[Authority("longclaw", "23D15D965BC35114467363C165C4F724B64B4F66", "1.2.3.4", 80)])
    snap.views["longclaw"].bandwidth_file = bandwidth_file
    hits = findings(snap, "TorBandwidthFileCoverageLow", now=datetime(2019, 4, 21, 21, 30))
    assert hits == []  # 30 of 50 = 60 %
    hits = findings(snap, "TorBandwidthFileCoverageLow", bandwidth_file_min_coverage=0.7)
    assert [f.subjects for f in hits] == [{"authority": "longclaw"}]
    assert [(f.values, f.description.split(" (")[1]) for f in hits] == [
        ({"covered": 30, "relays": 50}, "60.0 %, limit 70 %)")]



def test_vote_digest_is_the_one_the_consensus_lists():
    raw_vote = _strip_annotations(read_data("2016-09-20-13-00-00-vote-maatuska.xz"))  # as a DirPort serves it
    consensus = parse_data("consensus", "2016-09-20-13-00-00-consensus.xz")
    listed = {source.nickname: source.vote_digest for source in consensus.directory_authorities}
    assert vote_digest(raw_vote) == listed["maatuska"]
    assert vote_digest(raw_vote.split(b"\ndirectory-signature ")[0]) is None  # unsigned: nothing to ask for


def test_a_vote_still_within_its_voting_delay_is_not_reported_missing(consensus):
    """A real vote of the private network (10 s periods): moments after it was published the others may not have
    fetched it yet; once its VoteSeconds + DistSeconds have passed, a missing copy is reported."""
    from datetime import timedelta

    vote = parse_document(DocKind.VOTE, read_data("testnet-shared-random/074550-auth1.vote"), "auth1")
    authorities = [Authority(name, name.upper().ljust(40, "0"), "127.0.0.1", 7000 + n, 5000 + n, "F" * 40)
                   for n, name in enumerate(("auth1", "auth2"))]
    snap = snapshot(consensus, authorities=authorities, votes={"auth1": vote})
    snap.vote_holdings = [VoteHolding("auth1", "auth1", "AB" * 20, True),
                          VoteHolding("auth2", "auth1", "AB" * 20, False)]
    settle = timedelta(seconds=vote.vote_delay + vote.dist_delay)
    assert findings(snap, "TorVoteNotPropagated", now=vote.published + settle / 2) == []
    [late] = findings(snap, "TorVoteNotPropagated", now=vote.published + settle + timedelta(seconds=1))
    assert late.subjects == {"authority": "auth2", "peer": "auth1"}
