"""Shared-random commit and reveal checks across the authorities' votes (prop 250, srv-spec).

DocTor shipped these as no-ops (they never returned their issues, and the
mismatch branch was unreachable); here they run every period. The phase is
worked out the way tor does, from the vote's voting interval: a protocol
run is 12 commit rounds then 12 reveal rounds, so on the live network the
commit phase is 00:00-12:00 UTC and on a test network with 10-second
intervals it lasts two minutes.

A commitment made in the last commit round or later (its TIMESTAMP, srv-spec:
the valid-after of the vote it was first published in) has had no round to
become authoritative before the reveal phase: tor then lists it without a
reveal, and the others lag behind it. That happens when an authority starts
(or restarts) at the end of a commit phase, as a private network often does;
the reveal checks leave such a commitment alone for that protocol run.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import hashlib

from agent.checks.registry import Context, check
from agent.model.findings import Hit

ROUNDS_PER_PHASE = 12


def reveal_round(vote) -> int | None:
    """0 for the first reveal round, 1 for the next...; None in the commit phase."""
    interval = (vote.fresh_until - vote.valid_after).total_seconds()
    if interval <= 0:
        return None
    slot = int(calendar.timegm(vote.valid_after.timetuple()) // interval) % (2 * ROUNDS_PER_PHASE)
    return slot - ROUNDS_PER_PHASE if slot >= ROUNDS_PER_PHASE else None


def commit_time(commit: str) -> int | None:
    """The commitment's TIMESTAMP (Unix seconds), or None when it does not decode."""
    try:
        raw = base64.b64decode(commit, validate=True)
    except (binascii.Error, ValueError):
        return None
    return int.from_bytes(raw[:8], "big") if len(raw) >= 8 else None


def late_commit(commit: str, vote) -> bool:
    """True when ``commit`` was made in the last commit round of the vote's protocol run or later (see above)."""
    round_number = reveal_round(vote)
    made = commit_time(commit)
    if round_number is None or made is None:
        return False
    interval = (vote.fresh_until - vote.valid_after).total_seconds()
    reveal_start = calendar.timegm(vote.valid_after.timetuple()) - round_number * interval
    return made >= reveal_start - interval


def _participants(context: Context):
    """(nickname, v3ident, vote, commitments by identity) for every vote that takes part."""
    found = []
    for view in context.snapshot.views.values():
        vote = view.vote
        if vote is None or not vote.directory_authorities:
            continue
        commitments: dict[str, list] = {}
        for commitment in vote.directory_authorities[0].shared_randomness_commitments or []:
            commitments.setdefault(commitment.identity, []).append(commitment)
        if commitments:
            found.append((view.authority.nickname, vote.directory_authorities[0].v3ident, vote, commitments))
    return found


def _own_commitments(participants) -> dict[str, tuple[str, object]]:
    """v3ident -> (nickname, the commitment that authority lists for itself)."""
    return {ident: (nickname, commitments[ident][0]) for nickname, ident, _, commitments in participants
            if ident in commitments}


def _others(participants):
    """(holder nickname, holder vote, author nickname, author's own commitment, holder's record of it)."""
    own = _own_commitments(participants)
    for nickname, ident, vote, commitments in participants:
        for author_ident, recorded in sorted(commitments.items()):
            if author_ident != ident and author_ident in own:
                author, original = own[author_ident]
                yield nickname, vote, author, original, recorded[0]


@check("TorSharedRandomCommitMismatch", "warning",
       "An authority records another authority's shared-random commitment differently than that authority",
       doctor="SHARED_RANDOM_COMMITMENT_MISMATCH")
def commit_mismatch(context: Context):
    for holder, _, author, original, recorded in _others(_participants(context)):
        if recorded.commit != original.commit:
            yield Hit({"authority": holder, "peer": author},
                      f"{holder} records the commitment of {author} as {recorded.commit[:16]}…; "
                      f"{author} itself commits {original.commit[:16]}…",
                      {"recorded": recorded.commit, "own": original.commit})


@check("TorSharedRandomCommitDuplicated", "warning",
       "A vote lists more than one shared-random commitment for one authority",
       doctor="SHARED_RANDOM_MULTIPLE_REVEAL / REVEAL_DUPLICATED")
def commit_duplicated(context: Context):
    names = {authority.v3ident: authority.nickname for authority in context.snapshot.authorities}
    for nickname, _, _, commitments in _participants(context):
        for ident, listed in sorted(commitments.items()):
            if len(listed) > 1:
                yield Hit({"authority": nickname, "peer": names.get(ident, ident)},
                          f"the vote of {nickname} lists {len(listed)} commitments for {names.get(ident, ident)}",
                          {"count": len(listed)})


@check("TorSharedRandomNoReveal", "warning",
       "An authority that committed does not reveal its value in the reveal phase", doctor="SHARED_RANDOM_NO_REVEAL")
def no_reveal(context: Context):
    for nickname, ident, vote, commitments in _participants(context):
        own = commitments.get(ident, [None])[0]
        if reveal_round(vote) is not None and own is not None and not own.reveal and not late_commit(own.commit, vote):
            yield Hit({"authority": nickname},
                      f"{nickname} committed but its vote of {vote.valid_after:%Y-%m-%d %H:%M:%S} "
                      f"(reveal round {reveal_round(vote) + 1} of {ROUNDS_PER_PHASE}) reveals nothing", {})


@check("TorSharedRandomRevealMissing", "warning",
       "An authority lacks another authority's published shared-random reveal", doctor="SHARED_RANDOM_REVEAL_MISSING")
def reveal_missing(context: Context):
    for holder, vote, author, original, recorded in _others(_participants(context)):
        # In the first reveal round nobody can have seen the others' reveals yet.
        round_number = reveal_round(vote)
        if round_number and original.reveal and not recorded.reveal and not late_commit(original.commit, vote):
            yield Hit({"authority": holder, "peer": author},
                      f"{holder} has no reveal for {author} in reveal round {round_number + 1}, "
                      f"though {author} published it", {})


@check("TorSharedRandomRevealMismatch", "warning",
       "An authority records another authority's shared-random reveal differently than that authority",
       doctor="SHARED_RANDOM_REVEAL_MISMATCH")
def reveal_mismatch(context: Context):
    for holder, _, author, original, recorded in _others(_participants(context)):
        if original.reveal and recorded.reveal and recorded.reveal != original.reveal:
            yield Hit({"authority": holder, "peer": author},
                      f"{holder} records the reveal of {author} as {recorded.reveal[:16]}…; "
                      f"{author} itself reveals {original.reveal[:16]}…",
                      {"recorded": recorded.reveal, "own": original.reveal})


@check("TorSharedRandomRevealInvalid", "warning",
       "An authority's shared-random reveal does not match its own commitment")
def reveal_invalid(context: Context):
    for nickname, ident, _, commitments in _participants(context):
        own = commitments[ident][0] if ident in commitments else None
        if own is not None and own.reveal and not reveal_matches(own.commit, own.reveal):
            yield Hit({"authority": nickname},
                      f"{nickname} reveals {own.reveal[:16]}…, which does not hash to its commitment "
                      f"{own.commit[:16]}… (srv-spec: COMMIT = TIMESTAMP || SHA3-256(REVEAL))", {})


def reveal_matches(commit: str, reveal: str) -> bool:
    """True when the base64 commit is the reveal's timestamp and the SHA3-256 of the base64 reveal."""
    try:
        commit_bytes, reveal_bytes = base64.b64decode(commit, validate=True), base64.b64decode(reveal, validate=True)
    except (binascii.Error, ValueError):
        return False
    return commit_bytes[:8] == reveal_bytes[:8] and commit_bytes[8:] == hashlib.sha3_256(reveal.encode()).digest()

