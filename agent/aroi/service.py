"""The AROI proofs as the daemon, ``once``, the web endpoints and the CLI use them: one cache, one verifier.

The daemon judges each period with the proofs as they stand
(``OperatorProofs.book``) and then hands the period's claims to a background
verifier (``after_period``), so checking proofs never delays a cycle: a
relay whose proof is checked during this period counts as verified from the
next one.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from agent.aroi.cache import ProofCache
from agent.aroi.refresh import BackgroundVerifier, Verifier
from agent.aroi.settings import AroiConfig
from agent.model.aroi import EMPTY, ProofBook

log = logging.getLogger(__name__)
PROOFS_FILE = "aroi-proofs.json"


def proof_path(state_dir: Path) -> Path:
    return Path(state_dir) / PROOFS_FILE


def read_book(state_dir: Path) -> ProofBook:
    """The proofs as last saved (empty when none were checked yet, or the file cannot be read)."""
    path = proof_path(state_dir)
    if not path.exists():
        return EMPTY
    try:
        return ProofCache(path).book()
    except Exception:
        log.exception("the AROI proofs in %s cannot be read; operators count as unverified", path)
        return EMPTY


class OperatorProofs:
    """The daemon's proofs: read once from the state directory, refreshed by a background thread when
    ``aroi.verify`` is on (started by the first period that hands it claims)."""

    def __init__(self, settings: AroiConfig, state_dir: Path):
        self.settings = settings
        self.cache = ProofCache(proof_path(state_dir))
        self.verifier = Verifier(settings, self.cache)
        self.background: BackgroundVerifier | None = None

    def book(self) -> ProofBook:
        return self.background.book() if self.background is not None else self.cache.book()

    def after_period(self, result: Any) -> None:
        """Notes which listed relays the period's consensus lacks and queues its claims for checking.

        ``result`` is the judged period (``agent.pipeline.judge.PeriodResult``): its relay table already
        holds each consensus relay's contact line read as CIISS, and only relays of the consensus count
        (descriptors of relays that are not running cost an attacker nothing).
        """
        snapshot, table = result.snapshot, result.table
        if snapshot is None or table is None or snapshot.archived:
            return
        time = result.time
        running = frozenset(table.fingerprints)
        claims = {fingerprint: contact for fingerprint, contact in zip(table.fingerprints, table.contacts)
                  if contact.raw}
        if self.background is None and self.settings.verify:
            self.background = BackgroundVerifier(self.verifier)
        if self.background is not None:
            self.background.note_consensus(running, time)
            if claims:  # a period without descriptors says nothing about who claims what
                self.background.submit(claims, time)
        else:
            self.cache.note_consensus(running, time)
            self.cache.save()

    def stop(self, timeout: float = 10) -> None:
        if self.background is not None:
            self.background.stop(timeout)
