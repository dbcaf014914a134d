"""The ``aroi`` commands: operators' CIISS claims, their proofs checked now, and the proofs as they stand.

``aroi contacts`` reads contact lines (from descriptor files, or the
authorities live) and counts how they parse as CIISS; ``aroi verify`` checks
the proofs of every complete claim now, with a progress bar, into the same
cache ``run`` keeps; ``aroi status`` shows that cache, one row per domain
and proof type. Every time is UTC.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_PROBLEM, EXIT_CONFIG = 0, 1, 2


def add_commands(commands, with_config) -> None:
    aroi = commands.add_parser("aroi", help="authenticated relay operators (CIISS claims and their proofs)")
    aroi_commands = aroi.add_subparsers(dest="aroi_command", required=True)
    contacts = with_config(aroi_commands.add_parser(
        "contacts", help="how the relays' contact lines parse as CIISS (statuses, proof types, problems)"), _contacts)
    verify = with_config(aroi_commands.add_parser(
        "verify", help="check the proofs of every complete CIISS claim now (into the cache `run` keeps)"), _verify)
    for command in (contacts, verify):
        command.add_argument("--from", dest="paths", nargs="+", action="extend", metavar="PATH",
                             help="read server descriptors from these files, directories or archives instead of "
                                  "fetching them from the authorities (repeatable)")
    verify.add_argument("--all", action="store_true",
                        help="check every claimed domain again, not only those due (refresh_hours, retry_hours)")
    status = with_config(aroi_commands.add_parser(
        "status", help="the proofs as last checked: one row per domain and proof type"), _status)
    for command in (contacts, verify, status):
        command.add_argument("--json", action="store_true", help="print JSON instead of tables")


def _descriptors(arguments, config) -> tuple[list[Any], list[str]]:
    """Server descriptors from ``--from`` paths, else fetched as ``once`` fetches them; and reading problems."""
    if not arguments.paths:
        from agent.loop.collect import collect

        return collect(config).server_descriptors, []
    from agent.loop.archived import parse_raw
    from agent.model.snapshot import DocKind
    from agent.parse.archive import ReadReport, read_paths

    report = ReadReport()
    found: list[Any] = []
    for document in read_paths([Path(path) for path in arguments.paths], report):
        if document.kind is DocKind.SERVER_DESCRIPTORS:
            found.extend(parse_raw(document, report) or [])
    return found, list(report.unreadable or [])


def _contacts(arguments) -> int:
    from agent.cli.human import number, table
    from agent.config.loader import load_config
    from agent.model.ciiss import summary

    config = load_config(arguments.config)
    descriptors, problems = _descriptors(arguments, config)
    for problem in problems:
        print(f"problem: {problem}", file=sys.stderr)
    found = summary(getattr(descriptor, "contact", None) for descriptor in descriptors)
    if arguments.json:
        print(json.dumps({"descriptors": len(descriptors), "contact_lines": found.lines, "ciiss": found.ciiss,
                          "by_status": dict(found.by_status), "by_proof": dict(found.by_proof),
                          "problems": dict(found.problems)}, indent=2))
        return EXIT_OK
    print(f"{len(descriptors)} descriptors, {found.lines} distinct contact lines, {found.ciiss} declare CIISS "
          f"({number(100 * found.ciiss / found.lines if found.lines else 0, 3)} %)")
    for title, counts in (("status", found.by_status), ("proof", found.by_proof), ("problem in", found.problems)):
        if counts:
            print()
            print("\n".join(table([[key, value] for key, value in counts.most_common()], [title, "lines"],
                                  right={1})))
    return EXIT_OK


def _verify(arguments) -> int:
    from tqdm import tqdm

    from agent.aroi.cache import ProofCache
    from agent.aroi.refresh import Verifier, claims_of
    from agent.aroi.service import proof_path
    from agent.config.loader import load_config

    config = load_config(arguments.config)
    descriptors, problems = _descriptors(arguments, config)
    for problem in problems:
        print(f"problem: {problem}", file=sys.stderr)
    claims = claims_of(descriptors)
    cache = ProofCache(proof_path(config.state_dir))
    now = int(time.time())
    verifier = Verifier(config.aroi, cache)
    with tqdm(total=0, unit="proof", desc="checking proofs", disable=arguments.json or None, file=sys.stderr) as bar:
        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.n = done
            bar.refresh()

        report = verifier.refresh(claims, now, progress=progress, everything=arguments.all)
    if not arguments.json:
        print(f"{report.checked} proofs checked in {report.duration_seconds:.1f} s: {report.verified} domains verify "
              f"at least one relay, {report.failed} could not be read, {report.refused} refused")
    return _show(cache.book(), claims, arguments.json)


def _status(arguments) -> int:
    from agent.aroi.service import read_book
    from agent.config.loader import load_config

    config = load_config(arguments.config)
    return _show(read_book(config.state_dir), None, arguments.json)


def _show(book, claims: dict | None, as_json: bool) -> int:
    """One row per (domain, method): relays listed, claiming relays verified, when checked, and what went wrong."""
    from agent.cli.human import table, utc

    rows = []
    for (domain, method), proof in sorted(book.proofs.items()):
        claiming = [fp for fp, contact in (claims or {}).items()
                    if contact.claims_domain == domain and contact.proof == method]
        verified = sum(1 for fp in claiming if book.verdict(fp, claims[fp]).verified_domain) if claims else None
        rows.append({"domain": domain, "method": method, "listed": len(proof.listed), "claiming": len(claiming)
                     if claims is not None else None, "verified": verified, "checked_at": utc(proof.checked_at),
                     "dnssec": proof.dnssec, "error": proof.error, "refused": proof.refused})
    if as_json:
        print(json.dumps({"proofs": rows}, indent=2))
        return EXIT_OK
    if not rows:
        print("no proofs checked yet (no relay makes a complete CIISS claim, or `aroi verify` has not run)")
        return EXIT_OK
    header = ["domain", "proof", "listed", *(["claiming", "verified"] if claims is not None else []), "checked",
              "problem"]
    print("\n".join(table([[row["domain"], row["method"], row["listed"],
                            *([row["claiming"], row["verified"]] if claims is not None else []), row["checked_at"],
                            (("refused: " if row["refused"] else "") + row["error"]) if row["error"] else
                            "read; lists none of the relays claiming it" if not row["listed"] else
                            (f"DNSSEC {row['dnssec']}" if row["dnssec"] else "")]
                           for row in rows], header, right={2, 3, 4} if claims is not None else {2})))
    return EXIT_OK
