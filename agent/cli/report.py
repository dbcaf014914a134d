"""Turns a Snapshot into the ``once`` report: a JSON object and a table.

The JSON shape is documented in docs/once-json.md and pinned by
docs/once.schema.json; the table is for people and may change.
"""

from __future__ import annotations

from datetime import datetime, timezone

from agent.model.entries import ABSENT, entries_of
from agent.model.snapshot import AuthorityView, DocKind, FetchRecord, Outcome, SignatureReport, Snapshot, quorum

SCHEMA_ID = "allium-agent/once/1"


def _time(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:  # stem's datetimes are naive UTC
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def build_report(snapshot: Snapshot, saved=None) -> dict:
    """The documented JSON object for one collected voting period (``saved``: a store.SaveResult)."""
    names = {authority.v3ident: authority.nickname for authority in snapshot.authorities}
    latest = snapshot.latest_consensus()
    authorities = [_authority(snapshot, view, names) for view in snapshot.views.values()]
    descriptor_records = [r for r in snapshot.records if r.kind is DocKind.SERVER_DESCRIPTORS]
    served_by = next((r.authority for r in descriptor_records if r.outcome is Outcome.OK), None)
    return {
        "schema": SCHEMA_ID,
        "vantage": snapshot.vantage,
        "started_at": _time(snapshot.started_at),
        "finished_at": _time(snapshot.finished_at),
        "duration_seconds": _round((snapshot.finished_at - snapshot.started_at).total_seconds()),
        "valid_after": _time(latest.valid_after) if latest is not None else None,
        "quorum": quorum(len(snapshot.authorities)),
        "authority_changes": {
            "added": list(snapshot.changes.added),
            "missing": list(snapshot.changes.missing),
            "moved": list(snapshot.changes.moved),
        },
        "authorities": authorities,
        "server_descriptors": {
            "count": len(snapshot.server_descriptors),
            "from": served_by,
            "fetches": [_fetch(record) for record in descriptor_records],
        },
        "failures": sum(len(item["failures"]) for item in authorities)
        + sum(1 for record in descriptor_records if record.outcome is Outcome.FAILED),
        "storage": None if saved is None else {
            "points": saved.points,
            "stored": saved.stored,
            "destination": saved.destination,
            "periods_written": saved.periods_written,
            "lines_written": saved.lines_written,
            "periods_waiting": saved.periods_waiting,
            "error": saved.error,
        },
    }


def _authority(snapshot: Snapshot, view: AuthorityView, names: dict[str, str]) -> dict:
    authority = view.authority
    records = [r for r in snapshot.records_of(authority.nickname) if r.kind is not DocKind.SERVER_DESCRIPTORS]
    consensus_record = next((r for r in records if r.kind is DocKind.CONSENSUS), None)
    return {
        "nickname": authority.nickname,
        "v3ident": authority.v3ident,
        "address": authority.address,
        "dir_port": authority.dir_port,
        "reachable": any(record.answered for record in records),
        "latency_seconds": _round(consensus_record.latency_seconds) if consensus_record else None,
        "clock_skew_seconds": _round(consensus_record.clock_skew_seconds) if consensus_record else None,
        "consensus": _consensus(snapshot, view.consensus, view.consensus_signatures, names),
        "microdesc_consensus": _consensus(snapshot, view.microdesc_consensus, view.microdesc_signatures, names),
        "vote": _vote(view.vote),
        "key_certificates": len(view.key_certificates),
        "bandwidth_file": _bandwidth_file(view.bandwidth_file),
        "fetches": [_fetch(record) for record in records],
        "failures": [f"{record.kind.value}: {record.error}" for record in records
                     if record.outcome in (Outcome.FAILED, Outcome.SKIPPED)],
    }


def _consensus(snapshot: Snapshot, document, report: SignatureReport | None, names: dict[str, str]) -> dict | None:
    if document is None:
        return None
    valid = report.valid_identities if report else frozenset()
    return {
        "valid_after": _time(document.valid_after),
        "fresh_until": _time(document.fresh_until),
        "valid_until": _time(document.valid_until),
        "consensus_method": document.consensus_method,
        "votes": sum(1 for source in document.directory_authorities if not source.is_legacy),
        "relays": len(document.routers),
        "signatures": len(document.signatures),
        "valid_signatures": len(valid),
        "accepted": snapshot.accepted(report),
        "missing_signatures": sorted(name for ident, name in names.items() if ident not in valid),
        "invalid_signatures": [
            {"identity": check.identity, "authority": names.get(check.identity), "reason": check.reason}
            for check in (report.checks if report else ()) if not check.valid
        ],
    }


def _vote(vote) -> dict | None:
    if vote is None:
        return None
    entries = entries_of(vote)
    return {
        "valid_after": _time(vote.valid_after),
        "published": _time(vote.published),
        "relays": len(entries),
        "running": int(entries.has_flag("Running").sum()),
        "measured": int((entries.measured != ABSENT).sum()),
        "consensus_methods": list(vote.consensus_methods or []),
    }


def _bandwidth_file(bandwidth_file) -> dict | None:
    if bandwidth_file is None:
        return None
    return {
        "timestamp": _time(bandwidth_file.timestamp),
        "version": bandwidth_file.version,
        "measurements": len(bandwidth_file.measurements),
    }


def _fetch(record: FetchRecord) -> dict:
    return {
        "kind": record.kind.value,
        "url": record.url,
        "outcome": record.outcome.value,
        "status": record.status,
        "latency_seconds": _round(record.latency_seconds, 4),
        "bytes": record.bytes,
        "wire_bytes": record.wire_bytes,
        "clock_skew_seconds": _round(record.clock_skew_seconds),
        "digest": record.digest,
        "error": record.error,
    }


def render_table(report: dict) -> str:
    """The report as a fixed-width table for a terminal."""
    lines = [
        f"vantage {report['vantage']}, {report['started_at']}, took {report['duration_seconds']} s; "
        f"latest accepted consensus: {report['valid_after'] or 'none'} (quorum {report['quorum']})",
        f"{'AUTHORITY':<12} {'REACHABLE':<9} {'LATENCY':>8} {'SKEW':>7}  {'SERVES VALID-AFTER':<20} "
        f"{'VOTE':>6}  SIGNATURES",
    ]
    for item in report["authorities"]:
        consensus, vote = item["consensus"], item["vote"]
        latency = f"{item['latency_seconds'] * 1000:.0f} ms" if item["latency_seconds"] is not None else "-"
        skew = f"{item['clock_skew_seconds']:+.1f} s" if item["clock_skew_seconds"] is not None else "-"
        signatures = "-"
        if consensus:
            signatures = f"{consensus['valid_signatures']}/{consensus['signatures']} valid"
            if consensus["missing_signatures"]:
                signatures += f", missing {', '.join(consensus['missing_signatures'])}"
        lines.append(
            f"{item['nickname']:<12} {'yes' if item['reachable'] else 'NO':<9} {latency:>8} {skew:>7}  "
            f"{(consensus['valid_after'] if consensus else '-'):<20} "
            f"{(str(vote['relays']) if vote else '-'):>6}  {signatures}")
    changes = report["authority_changes"]
    for label in ("added", "missing", "moved"):
        if changes[label]:
            lines.append(f"authorities {label} (vs. the consensus): {', '.join(changes[label])}")
    descriptors = report["server_descriptors"]
    lines.append(f"server descriptors: {descriptors['count']} (from {descriptors['from'] or 'nobody'})")
    failures = [(item["nickname"], text) for item in report["authorities"] for text in item["failures"]]
    failures += [(f["url"], f"server-descriptors: {f['error']}") for f in descriptors["fetches"] if f["error"]]
    lines.append(f"failures: {len(failures)}")
    lines += [f"  {who}: {text}" for who, text in failures]
    storage = report["storage"]
    if storage is not None:
        lines.append(_storage_line(storage))
    return "\n".join(lines)


def _storage_line(storage: dict) -> str:
    where = (f"{storage['lines_written']} lines written to {storage['destination']}" if storage["destination"]
             else "no store.url: kept in the outbox")
    if not storage["stored"]:
        where = "NOT stored (the outbox is full)"
    line = f"points: {storage['points']}; {where}; {storage['periods_waiting']} periods waiting in the outbox"
    return line + (f" ({storage['error']})" if storage["error"] else "")
