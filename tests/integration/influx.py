"""A real InfluxDB 1.x (Debian's influxdb package) on 127.0.0.1, for the InfluxQL dashboard targets."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import requests

from agent.testnet.network import _free_ports


class InfluxDB:
    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.http_port, self.rpc_port = _free_ports(2)
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> InfluxDB:
        self.directory.mkdir(parents=True, exist_ok=True)
        config = self.directory / "influxdb.conf"
        config.write_text(f"""reporting-disabled = true
bind-address = "127.0.0.1:{self.rpc_port}"
[meta]
  dir = "{self.directory}/meta"
[data]
  dir = "{self.directory}/data"
  wal-dir = "{self.directory}/wal"
  query-log-enabled = false
[http]
  bind-address = "127.0.0.1:{self.http_port}"
  log-enabled = false
[monitor]
  store-enabled = false
""")
        self.process = subprocess.Popen(["influxd", "-config", str(config)], stdout=open(self.directory / "log", "ab"),
                                        stderr=subprocess.STDOUT)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                if requests.get(f"{self.url}/ping", timeout=1).status_code == 204:
                    self.query("CREATE DATABASE tor", method="post")
                    return self
            except requests.RequestException:
                pass
            if self.process.poll() is not None:
                raise RuntimeError(f"influxd exited: see {self.directory}/log")
            time.sleep(0.3)
        raise RuntimeError("influxd did not answer")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)

    def write(self, lines: list[str]) -> None:
        """The agent's own line protocol through the v1 /write endpoint (seconds precision)."""
        answer = requests.post(f"{self.url}/write", params={"db": "tor", "precision": "s"},
                               data="\n".join(lines).encode(), timeout=30)
        assert answer.status_code == 204, answer.text

    def query(self, influxql: str, method: str = "get") -> dict:
        started = time.monotonic()
        answer = requests.request(method, f"{self.url}/query", params={"db": "tor", "q": influxql, "epoch": "s"},
                                  timeout=300)
        if time.monotonic() - started > 5:
            print(f"slow InfluxQL ({time.monotonic() - started:.0f} s): {influxql}")
        return answer.json()
