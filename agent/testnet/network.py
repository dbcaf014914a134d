"""Builds, starts, inspects and stops a private Tor network on 127.0.0.1.

Keys come from Debian's ``tor-gencert`` (authority keys) and ``tor
--list-fingerprint`` (relay identities); every node is a ``tor`` process we
start ourselves and stop by PID, escalating to SIGKILL because an authority
occasionally ignores SIGTERM. ``network.json`` in the network's directory
describes it (nodes, ports, fingerprints, v3idents, PIDs) and
``allium-agent.yaml`` beside it points the agent at its authorities.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import yaml

from agent.model.errors import TestnetError
from agent.testnet.torrc import LOOPBACK, Node, dir_authority_line, render_bandwidth_file, render_torrc

log = logging.getLogger(__name__)

DESCRIPTION = "network.json"
AGENT_CONFIG = "allium-agent.yaml"
STOP_GRACE_SECONDS = 5.0
SHARED_RANDOM_RUNS = 2


@dataclass
class Network:
    """The on-disk description of one private network."""

    directory: Path
    interval_seconds: int
    tor_version: str
    nodes: list[Node]
    pids: dict[str, int] = field(default_factory=dict)
    exit_codes: dict[str, int] = field(default_factory=dict)  # wait statuses of nodes reaped here

    @property
    def authorities(self) -> list[Node]:
        return [node for node in self.nodes if node.role == "authority"]

    @property
    def relays(self) -> list[Node]:
        return [node for node in self.nodes if node.role == "relay"]

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise TestnetError(f"no node named {name!r} in {self.directory}; nodes: "
                           + ", ".join(n.name for n in self.nodes))

    def save(self) -> None:
        data = {
            "directory": str(self.directory),
            "interval_seconds": self.interval_seconds,
            "tor_version": self.tor_version,
            "nodes": [{**asdict(node), "data_dir": str(node.data_dir), "pid": self.pids.get(node.name)}
                      for node in self.nodes],
        }
        (self.directory / DESCRIPTION).write_text(json.dumps(data, indent=2) + "\n")

    @classmethod
    def load(cls, directory: Path) -> Network:
        path = Path(directory) / DESCRIPTION
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise TestnetError(f"no private network in {directory} ({DESCRIPTION} missing)") from None
        except json.JSONDecodeError as error:
            raise TestnetError(f"{path} is not valid JSON: {error}") from None
        nodes, pids = [], {}
        for item in data["nodes"]:
            pid = item.pop("pid", None)
            if pid:
                pids[item["name"]] = pid
            nodes.append(Node(**{**item, "data_dir": Path(item["data_dir"])}))
        return cls(Path(data["directory"]), data["interval_seconds"], data["tor_version"], nodes, pids)


def tor_version() -> str:
    """The installed tor's version, e.g. '0.4.9.11'."""
    output = _run(["tor", "--version"]).stdout
    match = re.search(r"Tor version (\d+\.\d+\.\d+\.\d+)", output)
    if not match:
        raise TestnetError(f"cannot read the tor version from {output[:100]!r}")
    return match.group(1)


def create(directory: Path, authorities: int = 3, relays: int = 3, interval_seconds: int = 10,
           bandwidth_authorities: int = 1) -> Network:
    """Generates keys, torrcs, a bandwidth file and the agent config; starts nothing."""
    if authorities < 3:
        raise TestnetError("a private network needs at least 3 authorities to reach a consensus reliably")
    if interval_seconds < 10:
        raise TestnetError("the voting interval must be at least 10 seconds")
    directory = Path(directory).resolve()
    if (directory / DESCRIPTION).exists():
        raise TestnetError(f"{directory} already holds a network; run `testnet down --dir {directory}` first")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "resolv.conf").write_text(f"nameserver {LOOPBACK}\n")
    (directory / "empty-torrc").write_text("")
    version = tor_version()
    ports = iter(_free_ports(2 * (authorities + relays)))
    nodes = []
    for index in range(authorities):
        node = Node(f"auth{index + 1}", "authority", next(ports), next(ports), directory / f"auth{index + 1}",
                    bandwidth_authority=index < bandwidth_authorities)
        nodes.append(_with_authority_keys(node))
    for index in range(relays):
        node = Node(f"relay{index + 1}", "relay", next(ports), None, directory / f"relay{index + 1}")
        nodes.append(_with_fingerprint(node, directory))
    network = Network(directory, interval_seconds, version, nodes)
    _write_files(network)
    network.save()
    return network


def _with_authority_keys(node: Node) -> Node:
    keys = node.data_dir / "keys"
    keys.mkdir(parents=True, exist_ok=True)
    _run(["tor-gencert", "--create-identity-key", "-m", "12", "-a", f"{LOOPBACK}:{node.dir_port}",
          "-i", str(keys / "authority_identity_key"), "-s", str(keys / "authority_signing_key"),
          "-c", str(keys / "authority_certificate"), "--passphrase-fd", "0"], stdin="\n")
    certificate = (keys / "authority_certificate").read_text()
    v3ident = re.search(r"^fingerprint ([0-9A-F]{40})$", certificate, re.M).group(1)
    return _with_fingerprint(Node(**{**asdict(node), "v3ident": v3ident}), node.data_dir.parent)


def _with_fingerprint(node: Node, directory: Path) -> Node:
    """Creates the node's relay identity key and reads its fingerprint."""
    node.data_dir.mkdir(parents=True, exist_ok=True)
    output = _run(["tor", "--list-fingerprint", "-f", str(directory / "empty-torrc"),
                   "--defaults-torrc", str(directory / "empty-torrc"),
                   "--DataDirectory", str(node.data_dir), "--ORPort", f"{LOOPBACK}:{node.or_port}",
                   "--Nickname", node.name, "--Address", LOOPBACK, "--UseDefaultFallbackDirs", "0",
                   "--DirAuthority", f"placeholder {LOOPBACK}:1 {'F' * 40}"]).stdout
    match = re.search(rf"^{node.name} ((?:[0-9A-F]{{4}} ?){{10}})$", output, re.M)
    if not match:
        raise TestnetError(f"tor --list-fingerprint gave no fingerprint for {node.name}: {output[-300:]!r}")
    return Node(**{**asdict(node), "fingerprint": match.group(1).replace(" ", "")})


def _write_files(network: Network) -> None:
    bandwidth_file = network.directory / "bandwidth.v3bw"
    bandwidth_file.write_text(render_bandwidth_file(int(time.time()), network.nodes))
    for node in network.nodes:
        node.torrc_path.write_text(render_torrc(
            node, network.authorities, interval_seconds=network.interval_seconds,
            resolv_conf=network.directory / "resolv.conf", tor_version=network.tor_version,
            bandwidth_file=bandwidth_file if node.bandwidth_authority else None))
    config = {
        "vantage": "testnet",
        "authorities": {"bootstrap": [dir_authority_line(node).removeprefix("DirAuthority ")
                                      .replace(" no-v2", "") for node in network.authorities]},
        # A 10 s period leaves little room: answer well inside one period.
        "fetch": {"deadline_seconds": min(20, network.interval_seconds),
                  "timeout_seconds": min(10, network.interval_seconds / 2)},
        "schedule": {"poll_delay_seconds": 1, "retry_seconds": 2, "grace_seconds": 10},
        # Shared randomness needs one full protocol run (24 periods) for a current
        # value and two for a previous one: a new network is muted until then.
        "checks": {"silences": [{
            "check": "TorSharedRandomMissing",
            "until": datetime.fromtimestamp(time.time() + SHARED_RANDOM_RUNS * 24 * network.interval_seconds + 60,
                                            timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "reason": "a new private network has no shared random value before two protocol runs"}]},
    }
    header = "# Written by `allium-agent testnet up`: the agent watching the private network.\n"
    (network.directory / AGENT_CONFIG).write_text(header + yaml.safe_dump(config, sort_keys=False))


def start(network: Network, names: list[str] | None = None) -> None:
    """Starts the named nodes (default: all that are not running)."""
    environment = {**os.environ, "MALLOC_ARENA_MAX": "1"}
    for node in network.nodes:
        if names is not None and node.name not in names:
            continue
        if is_running(network, node.name):
            continue
        with open(node.data_dir / "stdout.log", "ab") as output:
            process = subprocess.Popen(
                ["tor", "-f", str(node.torrc_path), "--defaults-torrc", str(network.directory / "empty-torrc")],
                stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                start_new_session=True, env=environment)
        network.pids[node.name] = process.pid
        log.info("started %s (pid %d)", node.name, process.pid)
    network.save()


def is_running(network: Network, name: str) -> bool:
    """True if the PID we recorded for ``name`` is alive and still runs its torrc."""
    pid = network.pids.get(name)
    if not pid:
        return False
    torrc = str(network.node(name).torrc_path).encode()
    for _attempt in range(3):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return False
        if state == "Z":
            return False
        if torrc in command:
            return True
        # Seen once under load: a live node's cmdline read back without its
        # arguments for a moment. Look again before calling the PID someone else's.
        time.sleep(0.05)
    return False


def has_exited(network: Network, name: str) -> bool:
    """True if the node's process is gone (reaped here, a zombie, or no such PID)."""
    pid = network.pids.get(name)
    if not pid:
        return True
    try:
        reaped, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:  # not our child: ask /proc
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        return state == "Z"
    if reaped:
        network.exit_codes[name] = status
    return bool(reaped)


def exit_status(network: Network, name: str) -> str:
    """How a node ended, as far as we can tell: its wait status if we reaped it."""
    if not network.pids.get(name):
        return "never started"
    if not has_exited(network, name):
        return "still running"
    status = network.exit_codes.get(name)
    if status is None:
        return "exited; status unknown (not our child)"
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exit code {os.WEXITSTATUS(status)}"


def stop(network: Network, names: list[str] | None = None) -> list[str]:
    """Stops the named nodes (default: all) by PID: SIGTERM, then SIGKILL after a grace time."""
    targets = [node.name for node in network.nodes if names is None or node.name in names]
    running = [name for name in targets if is_running(network, name)]
    for name in running:
        _signal(network.pids[name], signal.SIGTERM)
    end = time.monotonic() + STOP_GRACE_SECONDS
    while time.monotonic() < end and any(is_running(network, name) for name in running):
        _reap(network, running)
        time.sleep(0.1)
    for name in running:
        if is_running(network, name):
            log.warning("%s (pid %d) ignored SIGTERM; sending SIGKILL", name, network.pids[name])
            _signal(network.pids[name], signal.SIGKILL)
    _reap(network, running)
    for name in targets:
        network.pids.pop(name, None)
    network.save()
    return running


def reject_relays(network: Network, names: list[str]) -> None:
    """Makes every running authority reject the named relays (empty list: reject none again).

    Writes tor's ``approved-routers`` file (``!reject FINGERPRINT``) and sends
    SIGHUP; the relays leave the next consensus. This is how the tests make
    a relay drop out quickly: our authorities assume every relay reachable,
    and tor would keep a silent relay Running for up to 45 minutes anyway.
    """
    lines = [f"!reject {network.node(name).fingerprint}\n" for name in names]
    for authority in network.authorities:
        (authority.data_dir / "approved-routers").write_text("".join(lines))
        if is_running(network, authority.name):
            _signal(network.pids[authority.name], signal.SIGHUP)


def republish(network: Network, names: list[str]) -> None:
    """Makes the named running relays publish a new descriptor now (after a rejection is lifted).

    Authorities forget a rejected relay's descriptor; a relay uploads again
    only when its descriptor changes. Changing ContactInfo and reloading
    changes it without a restart, so no new reachability self-test is
    needed (a restarted relay in a three-relay network can wait minutes for
    a usable self-test circuit).
    """
    for name in names:
        node = network.node(name)
        lines = node.torrc_path.read_text().splitlines(keepends=True)
        stamp = int(time.time())
        node.torrc_path.write_text("".join(
            f"ContactInfo allium-agent testnet operator <{name}@example.invalid> republished {stamp}\n"
            if line.startswith("ContactInfo ") else line for line in lines))
        if is_running(network, name):
            _signal(network.pids[name], signal.SIGHUP)


def _reap(network: Network, names: list[str]) -> None:
    """Collects exit statuses of our own children so they do not linger as zombies."""
    for name in names:
        try:
            os.waitpid(network.pids[name], os.WNOHANG)
        except (ChildProcessError, KeyError):
            pass


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _free_ports(count: int) -> list[int]:
    """Ports on 127.0.0.1 that are free right now (held open together so they differ)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind((LOOPBACK, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _run(command: list[str], stdin: str | None = None) -> subprocess.CompletedProcess:
    try:
        result = subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise TestnetError(f"{command[0]} is not installed (Debian package: tor)") from None
    except subprocess.TimeoutExpired:
        raise TestnetError(f"{command[0]} did not finish within 60 s") from None
    if result.returncode != 0:
        raise TestnetError(f"{' '.join(command[:2])} failed: {(result.stderr or result.stdout)[-300:]}")
    return result
