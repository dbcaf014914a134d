"""Probes run after the documents are in: authority ORPorts, and who holds whose vote.

DocTor connected to every authority's ORPort (IPv4 and each IPv6
``or-address``); depictor showed an N×N matrix of which authority serves
which other authority's vote. Both run here under the cycle's deadline, in
daemon worker threads, and are waited for only until the deadline (or its
cancel); their results are plain data on the Snapshot for the checks to judge.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import Executor

from agent.fetch.http import Deadline, download, new_session, probe_tcp
from agent.fetch.workers import DaemonPool, wait_for
from agent.model.authorities import Authority
from agent.model.snapshot import DocKind, OrPortProbe, Outcome, VoteHolding

#: Enough of a vote to see what it is; the rest is not downloaded.
_VOTE_HEAD_BYTES = 4096
_SIGNED_PORTION_END = b"\ndirectory-signature "


def vote_digest(raw_vote: bytes) -> str | None:
    """The digest a consensus lists as ``vote-digest``: SHA1 of the signed portion, upper-case hex (None: unsigned)."""
    end = raw_vote.find(_SIGNED_PORTION_END)
    if end < 0:
        return None
    return hashlib.sha1(memoryview(raw_vote)[:end + len(_SIGNED_PORTION_END)]).hexdigest().upper()


def orport_endpoints(authority: Authority, consensus) -> list[tuple[str, int]]:
    """The authority's IPv4 ORPort plus every IPv6 ``a`` line its consensus entry lists."""
    endpoints = [(authority.address, authority.or_port)] if authority.or_port else []
    entry = consensus.routers.get(authority.fingerprint) if consensus is not None and authority.fingerprint else None
    for address, port, is_ipv6 in getattr(entry, "or_addresses", []) or []:
        if is_ipv6 and (address, port) not in endpoints:
            endpoints.append((address, port))
    return endpoints


def probe_orports(authorities: list[Authority], consensus, deadline: Deadline, timeout: float) -> list[OrPortProbe]:
    """One TCP connect per ORPort address of every authority, all at once (their own threads)."""
    targets = [(authority.nickname, host, port) for authority in authorities
               for host, port in orport_endpoints(authority, consensus)]
    if not targets:
        return []
    pool = DaemonPool(min(len(targets), 32), "orport")
    try:
        futures = [pool.submit(probe_tcp, host, port, deadline, timeout) for _, host, port in targets]
        wait_for(futures, deadline)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    probes = []
    for (nickname, host, port), future in zip(targets, futures):
        endpoint = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        if future.done():
            latency, error = future.result()
        else:
            latency, error = None, "the cycle's deadline was reached during the connect"
        probes.append(OrPortProbe(nickname, endpoint, latency, error))
    return probes


def vote_holdings(pool: Executor, holders: list[Authority], digests: dict[str, str],
                  deadline: Deadline, timeout: float) -> list[VoteHolding]:
    """Asks every answering authority for every vote we fetched, by digest.

    ``digests`` maps an author's nickname to the ``vote_digest`` of the vote it served us. The author
    is asked last: if even it no longer serves that digest, the voting period
    rotated during the probe and its column says nothing (held is None)
    rather than accusing the others of not holding the vote.
    """
    futures = {author: pool.submit(_column, holders, author, digest, deadline, timeout)
               for author, digest in sorted(digests.items())}
    wait_for(futures.values(), deadline)
    holdings = []
    for author, future in futures.items():
        if future.done() and future.exception() is None:
            holdings.extend(future.result())
        else:
            holdings.extend(VoteHolding(h.nickname, author, digests[author], None,
                                        "the cycle's deadline was reached") for h in holders)
    return holdings


def _column(holders: list[Authority], author: str, digest: str, deadline: Deadline,
            timeout: float) -> list[VoteHolding]:
    ordered = sorted(holders, key=lambda holder: holder.nickname == author)
    with new_session() as session:
        answers = [_ask(session, holder, author, digest, deadline, timeout) for holder in ordered]
    own = next((answer for answer in answers if answer.holder == author), None)
    if own is not None and own.held is False:
        return [VoteHolding(a.holder, author, digest, None, f"{author} itself no longer serves this vote: "
                            "the voting period rotated during the probe") for a in answers]
    return answers


def _ask(session, holder: Authority, author: str, digest: str, deadline: Deadline, timeout: float) -> VoteHolding:
    fetched = download(session, holder, DocKind.VOTE, deadline, timeout,
                       path=f"/tor/status-vote/current/d/{digest}", head_bytes=_VOTE_HEAD_BYTES)
    record = fetched.record
    if record.outcome is Outcome.OK:
        if fetched.body.startswith(b"network-status-version 3") and b"\nvote-status vote" in fetched.body:
            return VoteHolding(holder.nickname, author, digest, True)
        return VoteHolding(holder.nickname, author, digest, None, "answered with something that is not a vote")
    if record.status == 404:
        return VoteHolding(holder.nickname, author, digest, False, "HTTP 404: does not hold it")
    return VoteHolding(holder.nickname, author, digest, None, record.error)
