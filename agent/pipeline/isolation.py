"""Which of a period's documents break judging: found by judging the snapshot with documents left out.

Whatever one authority serves can cost only that authority's records. When
judging a period fails (metrics raise, or a check fails), ``isolate``
judges the period again from no documents up, adding one kind of document
at a time (consensuses first, server descriptors last) and, where a kind
breaks it, one document at a time: a document that breaks judging with the
ones kept so far is rejected, the rest are kept. A check that fails with
every document of a kind (more than one) is the check's fault, not the
authorities': its failure is tolerated and the documents kept.

Pure: ``attempt`` judges a candidate snapshot and reports what failed;
snapshots are copied, never changed.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from itertools import groupby
from typing import Any, Generic, TypeVar

from agent.model.snapshot import DocKind, FetchRecord, Outcome, Snapshot

R = TypeVar("R")
#: One document of a snapshot: (its view's key, its kind); server descriptors: (the authority that served them, kind).
Document = tuple[str, DocKind]
#: The documents of an AuthorityView, in the order they are tried: each kind's view attributes.
VIEW_DOCUMENTS = {
    DocKind.CONSENSUS: ("consensus", "consensus_signatures"),
    DocKind.MICRODESC_CONSENSUS: ("microdesc_consensus", "microdesc_signatures"),
    DocKind.KEY_CERTIFICATES: ("key_certificates",),
    DocKind.VOTE: ("vote",),
    DocKind.BANDWIDTH_FILE: ("bandwidth_file",),
}
REJECTED = "rejected: judging the period with it fails: "  # how a rejected document's record begins its error
RAISED = "judging"  # the key of ``Trial.failed`` when judging raised (check failures are keyed by check ID)


@dataclass(frozen=True)
class Trial(Generic[R]):
    """One attempt at judging a snapshot: its result (None if judging raised) and what failed, by name."""

    result: R | None
    failed: Mapping[str, BaseException] = field(default_factory=dict)

    def fine(self, tolerated: Collection[str] = ()) -> bool:
        """Judging gave a result and nothing failed beyond ``tolerated``."""
        return self.result is not None and all(name in tolerated for name in self.failed)

    @property
    def problem(self) -> str:
        """What failed first, for a rejected document's record and the log."""
        name, error = next(iter(self.failed.items()))
        where = "" if name == RAISED else f"check {name} failed: "
        return f"{where}{describe(error)}"


@dataclass(frozen=True)
class Isolated(Generic[R]):
    """The outcome of ``isolate``: the trial of the documents kept (None if nothing helps) and the rejected."""

    trial: Trial[R] | None
    reasons: dict[Document, str]
    tolerated: frozenset[str] = frozenset()


def describe(error: BaseException) -> str:
    """An exception in one line: type, message (cut short) and the stage functions it came from (innermost last)."""
    try:
        message = " ".join(str(error).split())[:300]
    except Exception:  # an exception whose message itself fails
        message = "(its message cannot be shown)"
    frames = [frame for frame in traceback.extract_tb(error.__traceback__)
              if "/agent/" in frame.filename and "/agent/pipeline/" not in frame.filename]  # the stages' frames
    chain = ", ".join(f"{frame.filename.rsplit('/agent/', 1)[1]}:{frame.name}" for frame in frames[-2:])
    where = f" (in {chain})" if chain else ""
    return f"{type(error).__name__}: {message}{where}"


def isolate(snapshot: Snapshot, attempt: Callable[[Snapshot], Trial[R]], first: Trial[R]) -> Isolated[R]:
    """The documents to reject so that ``attempt`` succeeds, and the trial without them.

    ``first`` is the failed trial of the whole snapshot. Failures that
    happen without any document are not the documents' fault: they are
    tolerated, and if judging raises even then, nothing helps
    (``Isolated.trial`` is None).
    """
    documents = documents_of(snapshot)
    everything = frozenset(documents)
    base = attempt(without(snapshot, everything))
    if base.result is None:
        return Isolated(None, {})
    tolerated = set(base.failed)
    if first.fine(tolerated):
        return Isolated(first, {}, frozenset(tolerated))
    kept: set[Document] = set()
    reasons: dict[Document, str] = {}
    best = base
    for _, grouped in groupby(documents, key=lambda document: document[1]):
        group = list(grouped)
        trial = attempt(without(snapshot, everything - kept - set(group)))
        if trial.fine(tolerated):
            kept.update(group)
            best = trial
            continue
        failing = {}
        for document in group:
            trial = attempt(without(snapshot, everything - kept - {document}))
            if trial.fine(tolerated):
                kept.add(document)
                best = trial
            else:
                failing[document] = trial
        if _the_checks_fault(group, failing):
            tolerated.update(name for failed in failing.values() for name in failed.failed)
            trial = attempt(without(snapshot, everything - kept - set(failing)))
            if trial.fine(tolerated):
                kept.update(failing)
                best = trial
                continue
        reasons.update((document, REJECTED + failed.problem) for document, failed in failing.items())
    return Isolated(best, reasons, frozenset(tolerated))


def _the_checks_fault(group: list[Document], failing: Mapping[Document, Trial[R]]) -> bool:
    """Every document of a kind (more than one) fails, each only a check: the check is broken, not they."""
    return 1 < len(group) == len(failing) and all(trial.result is not None for trial in failing.values())


def documents_of(snapshot: Snapshot) -> list[Document]:
    """Every document the authorities served in ``snapshot``, grouped by kind in the order isolation tries them.

    An archived snapshot's consensus is the period itself and not among them.
    """
    documents = [(key, kind) for kind in VIEW_DOCUMENTS for key, view in snapshot.views.items()
                 if _present(getattr(view, VIEW_DOCUMENTS[kind][0]))]
    if snapshot.server_descriptors:
        documents.append((descriptor_source(snapshot), DocKind.SERVER_DESCRIPTORS))
    return documents


def _present(document: object) -> bool:
    return document is not None and not (isinstance(document, list) and not document)  # no key certificates


def descriptor_source(snapshot: Snapshot) -> str:
    """The authority whose server descriptors the snapshot holds (the last fetched; "files" for an archive)."""
    served = [record.authority for record in snapshot.records
              if record.kind is DocKind.SERVER_DESCRIPTORS and record.outcome is Outcome.OK]
    return served[-1] if served else "files"


def without(snapshot: Snapshot, documents: Collection[Document]) -> Snapshot:
    """A copy of ``snapshot`` without ``documents`` (the views it changes are copies too)."""
    if not documents:
        return snapshot
    views = dict(snapshot.views)
    for key, kind in documents:
        if kind is DocKind.SERVER_DESCRIPTORS:
            continue
        cleared: dict[str, Any] = {name: [] if name == "key_certificates" else None for name in VIEW_DOCUMENTS[kind]}
        views[key] = replace(views[key], **cleared)
    descriptors = [] if any(kind is DocKind.SERVER_DESCRIPTORS for _, kind in documents) \
        else snapshot.server_descriptors
    return replace(snapshot, views=views, server_descriptors=descriptors)


def rejecting(snapshot: Snapshot, reasons: Mapping[Document, str]) -> tuple[Snapshot, list[FetchRecord]]:
    """``snapshot`` without the documents in ``reasons``, their fetch records marked rejected with the reason.

    A live snapshot without a record of a document gets one; an archived
    snapshot's records are left as they are (it fetched nothing), and the
    rejection is only returned.
    """
    records = list(snapshot.records)
    rejected = []
    for (key, kind), reason in reasons.items():
        view = snapshot.views.get(key)
        name = view.authority.nickname if view is not None else key
        marked = FetchRecord(name, kind, "", snapshot.started_at, error=reason, rejected=True)
        index = next((i for i, record in enumerate(records) if record.authority == name and record.kind is kind
                      and record.outcome is Outcome.OK), None)
        if index is not None:
            marked = replace(records[index], outcome=Outcome.FAILED, error=reason, rejected=True)
            records[index] = marked
        elif not snapshot.archived:
            records.append(marked)
        rejected.append(marked)
    return replace(without(snapshot, reasons), records=records), rejected
