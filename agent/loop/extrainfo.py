"""Extra-info descriptors, fetched incrementally: only those the agent has not read, by digest.

All extra-infos of the live network (``/tor/extra/all``) are 20-30 MB, too
much for every period. A relay publishes a new one only with a new server
descriptor (every ~18 h, or on a change), and the server descriptor names
it by ``extra-info-digest``. So each period this asks the authority that
served the server descriptors for the digests they name that the agent has
not read yet (``agent.model.extrainfo.wanted_digests``): all of them the
first period (as many as the deadline allows; the rest come next period),
then about 1/18 of ~9,000 an hour (~1-2 MB).

The digests go ``BATCH`` to a request (``/tor/extra/d/D1+D2+...``), so a
URL stays under 4 KB; stem's ``MAX_FINGERPRINTS`` is the same 96. Requests
run one after another on the descriptor job's worker, after the server
descriptors and within the cycle's deadline, so the consensus work never
waits for them; at the deadline what has arrived is kept and the rest is
recorded as skipped. Each request is one FetchRecord of kind
``extra-infos``; an answer may only bring documents that were asked for
(by digest), and a bad document costs only itself.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from datetime import datetime, timezone

from agent.fetch.http import PATHS, Deadline, download
from agent.model.authorities import Authority
from agent.model.errors import DocumentError
from agent.model.extrainfo import ExtraInfo, newest_per_relay, wanted_digests
from agent.model.snapshot import DocKind, FetchRecord, Outcome
from agent.parse.extrainfo import parse_extra_infos

log = logging.getLogger(__name__)

#: Digests per request (stem.descriptor.remote.MAX_FINGERPRINTS): 96 x 41 characters keep a URL under 4 KB.
BATCH = 96


class ExtraInfoJob:
    """Fetches the wanted extra-infos from one authority, readable (and abandoned) at the deadline.

    ``remembered``: each relay's newest extra-info from earlier periods (the state's).
    """

    def __init__(self, remembered: Mapping[str, ExtraInfo] | None = None):
        self.remembered = dict(remembered or {})
        self.named: dict[str, str] = {}  # fingerprint -> extra-info-digest its server descriptor names
        self.fetched: list[ExtraInfo] = []
        self.records: list[FetchRecord] = []
        self._authority: Authority | None = None
        self._batches: list[list[str]] = []
        self._started = 0  # batches whose request began
        self._stopped: str | None = None  # why the batches left were not attempted
        self._lock = threading.Lock()
        self._abandoned = False

    def run(self, session, authority: Authority, named: dict[str, str], deadline: Deadline, timeout: float) -> None:
        """Fetches, batch after batch, what ``named`` names that is not remembered; never raises."""
        wanted = wanted_digests(named, self.remembered)
        batches = [wanted[start:start + BATCH] for start in range(0, len(wanted), BATCH)]
        with self._lock:
            self.named, self._authority, self._batches = named, authority, batches
        log.debug("%d extra-infos to fetch from %s in %d requests", len(wanted), authority.nickname, len(batches))
        for batch in batches:
            with self._lock:
                if self._abandoned or self._stopped:
                    return
                self._started += 1
            try:
                self._fetch(session, authority, batch, deadline, timeout)
            except Exception:  # a surprise costs the rest of the extra-infos, never the cycle
                log.exception("fetching extra-infos from %s failed unexpectedly", authority.nickname)
                with self._lock:
                    self._stopped = "not attempted: an earlier extra-info request failed unexpectedly"
                return

    def _fetch(self, session, authority: Authority, batch: list[str], deadline: Deadline, timeout: float) -> None:
        fetched = download(session, authority, DocKind.EXTRA_INFOS, deadline, timeout,
                           path=PATHS[DocKind.EXTRA_INFOS] + "+".join(batch))
        record, documents = fetched.record, []
        if fetched.body is not None:
            try:
                parsed, problems = parse_extra_infos(fetched.body)
            except DocumentError as error:
                record.outcome, record.error, record.rejected = Outcome.FAILED, f"{error}", True
                parsed, problems = [], []
            asked = set(batch)
            documents = [extra for extra in parsed if extra.digest in asked]
            unasked = len(parsed) - len(documents)
            if problems or unasked:
                log.warning("extra-infos from %s: %d rejected%s%s", authority.nickname, len(problems),
                            f" (first: {problems[0]})" if problems else "",
                            f"; {unasked} not asked for, dropped" if unasked else "")
        with self._lock:
            if self._abandoned:
                return
            self.records.append(record)
            self.fetched.extend(documents)
            if record.outcome is Outcome.SKIPPED:  # the deadline came before this request
                self._stopped = record.error
            elif not record.answered:  # no point in asking a silent authority again this period
                self._stopped = f"not attempted: {authority.nickname} did not answer an earlier extra-info request"

    def collect(self) -> tuple[dict[str, ExtraInfo], dict[str, str], list[FetchRecord]]:
        """Stops the job: each relay's newest extra-info (remembered or fetched), the digests named, the records.

        A request cut by the deadline is a failed record; the batches not
        attempted are one skipped record, saying how many digests wait for
        the next period.
        """
        with self._lock:
            self._abandoned = True
            records = list(self.records)
            authority = self._authority
            if authority is not None:
                url = authority.base_url + PATHS[DocKind.EXTRA_INFOS]
                if self._started > len(self.records):
                    records.append(FetchRecord(authority.nickname, DocKind.EXTRA_INFOS, url,
                                               started_at=datetime.now(timezone.utc),
                                               error="the cycle's deadline was reached during this download"))
                left = sum(len(batch) for batch in self._batches[self._started:])
                if left:
                    why = self._stopped or "not attempted: the cycle's deadline was reached"
                    records.append(FetchRecord(authority.nickname, DocKind.EXTRA_INFOS, url,
                                               started_at=datetime.now(timezone.utc), outcome=Outcome.SKIPPED,
                                               error=f"{why} ({left} extra-infos left for the next period)"))
            return newest_per_relay(self.remembered, self.fetched), dict(self.named), records
