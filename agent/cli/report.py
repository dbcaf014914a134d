"""Turns a Snapshot into the ``once`` report: a JSON object and a table.

The JSON shape is documented in docs/once-json.md and pinned by
docs/once.schema.json; the table is for people and may change.
"""

from __future__ import annotations

import os
import re
import time
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit

from agent.cli.human import duration, number, plural, table
from agent.model.entries import ABSENT, entries_of
from agent.model.snapshot import AuthorityView, DocKind, FetchRecord, Outcome, SignatureReport, Snapshot, quorum

SCHEMA_ID = "allium-agent/once/1"
_IMPORTED = time.monotonic()  # imported as ``once`` starts: command_seconds' fallback


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
    extra_records = [r for r in snapshot.records if r.kind is DocKind.EXTRA_INFOS]
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
        # Each relay's newest extra-info held (remembered or fetched now), the relays whose descriptors name one,
        # and this period's requests by digest (best effort: what the deadline cuts off comes next period).
        "extra_infos": {
            "held": len(snapshot.extra_infos),
            "named": len(snapshot.extra_info_digests),
            "fetches": [_fetch(record) for record in extra_records],
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
    records = [r for r in snapshot.records_of(authority.nickname)
               if r.kind not in (DocKind.SERVER_DESCRIPTORS, DocKind.EXTRA_INFOS)]
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


def render_table(report: dict, wall_seconds: float | None = None) -> str:
    """The report for a terminal: a header, one aligned row per authority, the failures by cause, where the points
    went and, given ``wall_seconds``, how long the whole command took."""
    consensus = report["valid_after"] or "none accepted"
    lines = [f"vantage {report['vantage']} at {report['started_at']}: latest consensus {consensus} "
             f"(quorum {plural(report['quorum'], 'signature')})"]
    rows = []
    for item in report["authorities"]:
        served, vote = item["consensus"], item["vote"]
        signatures = "-"
        if served:
            signatures = f"{served['valid_signatures']}/{served['signatures']} valid"
            if served["missing_signatures"]:
                signatures += f", missing {', '.join(served['missing_signatures'])}"
        skew = item["clock_skew_seconds"]
        rows.append((item["nickname"], "yes" if item["reachable"] else "NO", duration(item["latency_seconds"]),
                     "-" if skew is None else ("+" if skew >= 0 else "") + duration(skew),
                     served["valid_after"] if served else "-", number(vote["relays"]) if vote else "-", signatures))
    lines += table(rows, ("authority", "reachable", "latency", "skew", "serves valid-after", "vote", "signatures"),
                   right={2, 3, 5})
    changes = report["authority_changes"]
    for label in ("added", "missing", "moved"):
        if changes[label]:
            lines.append(f"authorities {label} (vs. the consensus): {', '.join(changes[label])}")
    descriptors = report["server_descriptors"]
    lines.append(f"server descriptors: {number(descriptors['count'])} (from {descriptors['from'] or 'nobody'})")
    extra = report.get("extra_infos") or {}
    if extra.get("named") or extra.get("fetches"):
        fetches = extra["fetches"]
        lines.append(f"extra-infos: {number(extra['held'])} held of {number(extra['named'])} named; "
                     f"{number(len(fetches))} requests by digest this period, "
                     f"{number(sum(fetch['bytes'] or 0 for fetch in fetches))} bytes")
    lines.append(f"failures: {number(report['failures'])}")
    lines += [f"  {line}" for line in failure_lines(report)]
    if report["storage"] is not None:
        lines.append(_storage_line(report["storage"]))
    fetching = f"fetching {duration(report['duration_seconds'])}"
    lines.append(f"took {duration(wall_seconds)} in all, from the command's start ({fetching})"
                 if wall_seconds is not None else f"took: {fetching}")
    return "\n".join(lines)


def failure_lines(report: dict) -> list[str]:
    """One line per authority and cause, the cause first, the documents it cost after it in brackets:
    ``auth1: connection refused (127.0.0.1:9231) [key-certificates]`` (the address on an authority's first
    line); a failure repeated ``n`` times for one kind of document as ``[server-descriptors: same failure ×n]``."""
    where = {f"{item['address']}:{item['dir_port']}": item["nickname"] for item in report["authorities"]}
    addresses = {item["nickname"]: f"{item['address']}:{item['dir_port']}" for item in report["authorities"]}
    failed = [(item["nickname"], text.partition(": ")[0], text.partition(": ")[2])
              for item in report["authorities"] for text in item["failures"]]
    for fetch in report["server_descriptors"]["fetches"]:
        if fetch["error"]:
            host = urlsplit(fetch["url"]).netloc
            failed.append((where.get(host, host), fetch["kind"], fetch["error"]))
    grouped: dict[tuple[str, str], dict[str, int]] = {}
    for who, kind, error in failed:
        kinds = grouped.setdefault((who, cause(error)), {})
        kinds[kind] = kinds.get(kind, 0) + 1
    lines, named = [], set()
    for (who, why), kinds in grouped.items():
        address = f" ({addresses[who]})" if who in addresses and who not in named else ""
        named.add(who)
        documents = ", ".join(kind + (f": same failure ×{count}" if count > 1 else "") for kind, count in kinds.items())
        lines.append(f"{who}: {why}{address} [{documents}]")
    return lines


_DOCUMENT_FROM = re.compile(r"^[\w-]+ from \S+ \(\S+\): ")  # "consensus from auth1 (http://...): " of a parse error
_ERRNO = re.compile(r"\[Errno -?\d+\] ([^'\")\]]+)")
_NOISE = (re.compile(r"\w+Pool\(host=[^)]*\): ?"), re.compile(r"Max retries exceeded with url: \S+ ?"),
          re.compile(r"\(Caused by \w+\(['\"]?"), re.compile(r"<[^>]* object at 0x[0-9a-f]+>:? ?"))
DOWNLOAD_FAILED = "download failed: "
#: agent.fetch.http keeps this many characters of an error it does not recognise, after DOWNLOAD_FAILED.
KEPT_OF_AN_ERROR = 200


def cause(error: str | None) -> str:
    """Why a fetch failed, in a few words and first: the system's reason (``connection refused``, ``no route to
    host``) rather than the HTTP library's wrapping of it, and without the URL a parse error repeats."""
    text = _DOCUMENT_FROM.sub("", (error or "unknown").strip())
    errno = _ERRNO.search(text)
    if errno:
        reason = errno.group(1).strip().rstrip(".")
        return reason[:1].lower() + reason[1:]
    if not text.startswith(DOWNLOAD_FAILED):
        return text
    cut = len(text) >= len(DOWNLOAD_FAILED) + KEPT_OF_AN_ERROR
    for noise in _NOISE:
        text = noise.sub("", text)
    if "Failed to establish a new connection" in text or text.endswith("Failed to"):
        return "cannot connect (the reason was cut short)"
    return text.rstrip(" :(") + (" (the reason was cut short)" if cut else "")


def command_seconds() -> float:
    """How long this process has run, by the wall clock: from its start (/proc/self/stat) where Linux says,
    else from when this module was imported (the command's start, near enough)."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])  # field 22, starttime
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        elapsed = uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        elapsed = -1.0
    return elapsed if 0 <= elapsed < time.monotonic() - _IMPORTED + 3600 else time.monotonic() - _IMPORTED


def _storage_line(storage: dict) -> str:
    where = (f"{plural(storage['lines_written'], 'line')} written to {storage['destination']}"
             if storage["destination"] else "no store: kept in the outbox")
    if not storage["stored"]:
        where = "NOT stored (the outbox is full)"
    line = (f"points: {number(storage['points'])}; {where}; {plural(storage['periods_waiting'], 'period')} "
            "waiting in the outbox")
    return line + (f" ({storage['error']})" if storage["error"] else "")
