"""``allium-agent demo`` as a newcomer runs it: data that answers queries, an alert mail after an authority stops.

The demo brings up its own private Tor network, the embedded store and the
daemon; the test drives it as a user would from another terminal, then
stops it with Ctrl-C (SIGINT) and checks by PID that nothing is left.
"""

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from email import message_from_bytes, policy

import pytest

from agent.testnet.network import DESCRIPTION
from tests.integration.commands import ROOT, agent

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return open(f"/proc/{pid}/stat").read().split()[2] != "Z"


def subjects(maildir) -> list[str]:
    folder = maildir / "new"
    return [message_from_bytes(path.read_bytes(), policy=policy.default)["Subject"]
            for path in sorted(folder.glob("*"))] if folder.is_dir() else []


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}")


def test_demo_shows_data_and_mails_an_alert_when_an_authority_stops(tmp_path):
    directory = tmp_path / "demo"
    demo = subprocess.Popen([sys.executable, "-m", "agent", "demo", "--dir", str(directory), "--duration", "300"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in demo.stdout], daemon=True).start()
    output: list[str] = []

    def printed(text):
        while not lines.empty():
            output.append(lines.get())
        return any(text in line for line in output)

    try:
        wait_for(lambda: printed("Ctrl-C stops everything"), 240, "the demo to be ready")
        config = directory / "allium-agent.yaml"
        assert any("query 'tor_network_relays'" in line for line in output)
        relays = agent("query", "tor_network_relays", "--config", config, "--format", "json", timeout=60)
        assert relays.returncode == 0, relays.stderr
        [series] = json.loads(relays.stdout)["result"]
        assert float(series["value"][1]) == 6  # 3 authorities and 3 relays, all in the consensus
        time.sleep(15)  # a few more periods on the healthy network
        assert subjects(directory / "mail") == []  # no alert on a healthy new network
        stopped = agent("testnet", "stop", "auth3", "--dir", directory / "testnet", timeout=60)
        assert stopped.returncode == 0, stopped.stderr
        mail = wait_for(lambda: [s for s in subjects(directory / "mail") if "auth3" in s], 90, "a mail about auth3")
        assert "TorAuthorityUnreachable" in mail[0]
        wait_for(lambda: printed("mail: ") and printed("auth3"), 10, "the demo to show the mail")
    finally:
        network = json.loads((directory / "testnet" / DESCRIPTION).read_text())
        demo.send_signal(signal.SIGINT)
        assert demo.wait(120) == 0
    printed("")
    assert any("stopped: the agent, its store and" in line for line in output), output[-5:]
    pids = [node["pid"] for node in network["nodes"] if node.get("pid")]
    assert len(pids) >= 5 and not any(alive(pid) for pid in pids)
    assert not (directory / "state" / "victoria-metrics.json").exists()
    assert not [line for line in output if "Traceback" in line]
