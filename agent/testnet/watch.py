"""What the private network's authorities serve: status lines and readiness."""

from __future__ import annotations

import time
from dataclasses import dataclass

from agent.fetch.http import Deadline, download, new_session
from agent.model.authorities import Authority
from agent.model.errors import DocumentError, TestnetError
from agent.model.snapshot import DocKind
from agent.parse.documents import parse_document
from agent.testnet.network import Network, exit_status, has_exited, is_running
from agent.testnet.torrc import LOOPBACK, Node


@dataclass(frozen=True)
class Served:
    """The consensus one authority serves right now, or why it serves none."""

    node: str
    valid_after: object | None = None
    signatures: int = 0
    running_relays: frozenset[str] = frozenset()
    error: str | None = None


def as_authority(node: Node) -> Authority:
    return Authority(node.name, node.v3ident, LOOPBACK, node.dir_port, node.or_port, node.fingerprint)


def served_consensus(node: Node, timeout: float = 5.0) -> Served:
    """Fetches and parses the ns consensus ``node`` serves (no signature check)."""
    with new_session() as session:
        fetched = download(session, as_authority(node), DocKind.CONSENSUS, Deadline(timeout), timeout)
    if fetched.body is None:
        return Served(node.name, error=fetched.record.error)
    try:
        consensus = parse_document(DocKind.CONSENSUS, fetched.body, node.name)
    except DocumentError as error:
        return Served(node.name, error=str(error))
    running = frozenset(router.nickname for router in consensus.routers.values() if "Running" in router.flags)
    return Served(node.name, consensus.valid_after, len(consensus.signatures), running)


def wait_until_ready(network: Network, timeout: float = 120.0) -> list[Served]:
    """Waits until every authority serves a consensus signed by all authorities
    that lists every node as Running; raises TestnetError with the last state."""
    everyone = {node.name for node in network.nodes}
    end = time.monotonic() + timeout
    while True:
        served = [served_consensus(node) for node in network.authorities]
        if all(item.error is None and item.signatures == len(network.authorities)
               and everyone <= item.running_relays for item in served):
            return served
        if time.monotonic() > end:
            raise TestnetError(f"the network in {network.directory} was not ready within {timeout:.0f} s: "
                               + "; ".join(describe(item) for item in served))
        dead = [node for node in network.nodes if has_exited(network, node.name)]
        if dead:
            raise TestnetError("; ".join(f"tor {node.name} exited ({exit_status(network, node.name)}), "
                                         f"last log line: {_last_line(node.data_dir / 'notice.log')}"
                                         for node in dead))
        time.sleep(1.0)


def _last_line(path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return lines[-1] if lines else "(empty log)"


def describe(served: Served) -> str:
    if served.error:
        return f"{served.node}: no consensus ({served.error})"
    return (f"{served.node}: consensus {served.valid_after:%Y-%m-%d %H:%M:%S}, "
            f"{served.signatures} signatures, {len(served.running_relays)} running")


def status_lines(network: Network) -> list[str]:
    """One line per node: name, role, pid, state, ports, and what each authority serves."""
    lines = [f"network {network.directory}: {len(network.authorities)} authorities, "
             f"{len(network.relays)} relays, voting every {network.interval_seconds} s, tor {network.tor_version}",
             f"{'NODE':<8} {'ROLE':<9} {'PID':>7} {'STATE':<8} {'ORPORT':>6} {'DIRPORT':>7}  SERVES"]
    for node in network.nodes:
        running = is_running(network, node.name)
        serves = ""
        if node.role == "authority" and running:
            serves = describe(served_consensus(node)).split(": ", 1)[1]
        pid = network.pids.get(node.name) if running else None
        lines.append(f"{node.name:<8} {node.role:<9} {pid or '-':>7} {'running' if running else 'stopped':<8} "
                     f"{node.or_port:>6} {node.dir_port or '-':>7}  {serves}")
    return lines
