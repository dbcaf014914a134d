"""``allium-agent demo``: the whole agent on a private Tor network in one command, torn down by PID afterwards.

It brings up the private network (``agent.testnet``), writes an agent config
for it whose store is the embedded VictoriaMetrics and whose alerts go to a
local Maildir (no SMTP server needed), starts the daemon with the
subscription endpoints, prints what to try, and reports each alert mail as
it arrives. Ctrl-C, SIGTERM or ``--duration`` stop the daemon (which stops
its store) and every tor node. Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from email import message_from_bytes, policy
from pathlib import Path

import yaml

EXIT_OK, EXIT_PROBLEM = 0, 1
MAIL_TO = "you@localhost"
#: How long the daemon may take to record its first period: the network's first consensus, then one cycle.
FIRST_PERIOD_TIMEOUT_SECONDS = 120


def add_commands(commands, with_config) -> None:
    demo = commands.add_parser(
        "demo", help="run the agent on a private Tor network with its own store and a local mail folder")
    demo.set_defaults(handler=run_demo)
    demo.add_argument("--dir", type=Path, default=Path("demo"),
                      help="where the network, the agent's state and the mail go (default: ./demo)")
    demo.add_argument("--duration", type=float, metavar="SECONDS",
                      help="stop after this many seconds (default: run until Ctrl-C)")
    demo.add_argument("--relays", type=int, default=3, help="relays in the private network (default 3)")
    demo.add_argument("--interval", type=int, default=10,
                      help="voting interval of the private network in seconds (default 10)")


def run_demo(arguments) -> int:
    from agent.testnet import network as testnet
    from agent.testnet.network import _free_ports
    from agent.testnet.watch import wait_until_ready

    directory: Path = arguments.dir.resolve()
    stop = _stop_on_signals()
    network_dir = directory / "testnet"
    if (network_dir / testnet.DESCRIPTION).exists():
        network = testnet.Network.load(network_dir)
    else:
        network = testnet.create(network_dir, 3, arguments.relays, arguments.interval)
    print(f"starting a private Tor network in {network_dir} (3 authorities, {len(network.relays)} relays, "
          f"a consensus every {network.interval_seconds} s) ...", flush=True)
    daemon: subprocess.Popen | None = None
    try:
        testnet.start(network)
        wait_until_ready(network)
        [web_port] = _free_ports(1)
        config_path = _write_config(directory, network, web_port)
        print(f"network ready; starting the agent (config {config_path}) ...", flush=True)
        daemon = _start_daemon(config_path, directory / "agent.log")
        store_url = _wait_for_first_period(config_path, daemon, stop)
        if store_url is None:
            return EXIT_PROBLEM
        print(_next_steps(directory, config_path, network_dir, store_url, web_port), flush=True)
        _watch_mail(directory / "mail", stop, arguments.duration, daemon)
        return EXIT_OK
    finally:
        _tear_down(daemon, network, directory)


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    return stop


def _write_config(directory: Path, network, web_port: int) -> Path:
    """The private network's agent config, plus the embedded store, a Maildir route and the subscription endpoints."""
    from agent.testnet import network as testnet

    config = yaml.safe_load((network.directory / testnet.AGENT_CONFIG).read_text())
    public_url = f"http://127.0.0.1:{web_port}"
    config.update({
        "vantage": "demo",
        "state_dir": str(directory / "state"),
        "maildir": {"directory": str(directory / "mail")},
        "alerts": {"public_url": public_url,
                   "routes": [{"name": "everything", "maildir": [MAIL_TO]}],
                   "retry": {"initial_delay_seconds": 1, "max_delay_seconds": 5}},
        "subscriptions": {"listen": f"127.0.0.1:{web_port}"},
    })
    path = directory / "allium-agent.yaml"
    path.write_text("# Written by `allium-agent demo`.\n" + yaml.safe_dump(config, sort_keys=False))
    return path


def _start_daemon(config_path: Path, log_path: Path) -> subprocess.Popen:
    with open(log_path, "ab") as log:
        # A session of its own: Ctrl-C reaches the demo, which then stops the daemon in order.
        return subprocess.Popen([sys.executable, "-m", "agent", "run", "--config", str(config_path)],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)


def _wait_for_first_period(config_path: Path, daemon: subprocess.Popen, stop: threading.Event) -> str | None:
    """The embedded store's URL once it answers with the network's relay count; None if the daemon died."""
    from agent.config.loader import load_config
    from agent.model.errors import QueryError
    from agent.store.embedded import describe
    from agent.store.query import run_query

    state_dir = load_config(config_path).state_dir
    deadline = time.monotonic() + FIRST_PERIOD_TIMEOUT_SECONDS
    while time.monotonic() < deadline and not stop.is_set():
        if daemon.poll() is not None:
            print(f"the agent exited with status {daemon.returncode}; its log: {state_dir.parent / 'agent.log'}",
                  file=sys.stderr)
            return None
        running = describe(state_dir)
        if running is not None:
            try:
                if run_query(running["url"], "tor_network_relays").series:
                    return running["url"]
            except QueryError:
                pass
        stop.wait(1)
    if not stop.is_set():
        print(f"no period recorded within {FIRST_PERIOD_TIMEOUT_SECONDS} s; see {state_dir.parent / 'agent.log'}",
              file=sys.stderr)
    return None


def _next_steps(directory: Path, config: Path, network_dir: Path, store_url: str, web_port: int) -> str:
    agent = _how_invoked()
    return f"""
The agent is watching the private network. Try, in another terminal:

  {agent} status --config {config}
  {agent} query 'tor_network_relays' --config {config}
  {agent} query 'sort_desc(tor_network_flag_relays)' --config {config}
  {agent} query 'tor_authority_fetch_latency_seconds{{document="consensus"}}' --config {config}
  {agent} check --config {config}
  {agent} testnet stop auth3 --dir {network_dir}    # then watch the alert arrive here
  {agent} testnet start auth3 --dir {network_dir}   # ... and its resolved notice

  store (PromQL, VictoriaMetrics UI at /vmui): {store_url}
  subscription endpoints: http://127.0.0.1:{web_port}/subscribe
  mail folder (Maildir; e.g. mutt -f {directory / 'mail'}): {directory / 'mail'}
  agent log: {directory / 'agent.log'}

Ctrl-C stops everything.
"""


def _how_invoked() -> str:
    """How the user ran us (``.venv/bin/allium-agent``, ``allium-agent``), to print commands they can paste."""
    import shutil

    invoked = Path(sys.argv[0])
    if invoked.name == "allium-agent":
        on_path = shutil.which("allium-agent")
        return "allium-agent" if on_path and Path(on_path).resolve() == invoked.resolve() else str(invoked)
    return f"{sys.executable} -m agent"


def _watch_mail(maildir: Path, stop: threading.Event, duration: float | None, daemon: subprocess.Popen) -> None:
    """Prints each new mail's subject as it lands, until a signal, the duration or the daemon's end."""
    seen: set[str] = set()
    deadline = None if duration is None else time.monotonic() + duration
    while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
        if daemon.poll() is not None:
            print(f"the agent exited with status {daemon.returncode}", file=sys.stderr)
            return
        for path in sorted((maildir / "new").glob("*"), key=lambda item: item.stat().st_mtime) \
                if (maildir / "new").is_dir() else []:
            if path.name not in seen:
                seen.add(path.name)
                mail = message_from_bytes(path.read_bytes(), policy=policy.default)
                print(f"{time.strftime('%H:%M:%SZ', time.gmtime())} mail: {mail['Subject']}", flush=True)
        stop.wait(1)


def _tear_down(daemon: subprocess.Popen | None, network, directory: Path) -> None:
    """Stops the daemon (it stops its store), anything it left, and every tor node, by PID."""
    from agent.store.embedded import stop_child, stop_left_running
    from agent.testnet import network as testnet

    print("stopping ...", flush=True)
    if daemon is not None:
        stop_child(daemon, 60)  # the daemon stops its store
    stop_left_running(directory / "state")
    stopped = testnet.stop(network)
    print(f"stopped: the agent, its store and {', '.join(stopped) if stopped else 'no tor node'}")
