"""The systemd unit (verified by systemd itself) and the Dockerfile (structure only: no Docker engine here)."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
UNIT = ROOT / "deploy" / "allium-agent.service"


def test_systemd_unit_verifies_and_is_hardened(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze is missing (Debian package systemd)")
    text = UNIT.read_text()
    # verify insists the ExecStart binary exists; everything else is checked as written.
    copy = tmp_path / "allium-agent.service"
    copy.write_text(text.replace("/opt/allium-agent/.venv/bin/allium-agent", "/bin/true"))
    result = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True)
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr
    options = dict(re.findall(r"^(\w+)=(.*)$", text, re.M))
    for key, value in {"User": "allium-agent", "NoNewPrivileges": "yes", "ProtectSystem": "strict",
                       "ProtectHome": "yes", "PrivateTmp": "yes", "KillSignal": "SIGTERM",
                       "StateDirectory": "allium-agent", "CapabilityBoundingSet": ""}.items():
        assert options.get(key) == value, key
    assert "allium-agent run --config" in options["ExecStart"]


def test_systemd_unit_bounds_memory_with_room_over_the_measured_peak():
    """Before: no MemoryMax. The benchmarks' peak RSS is ~220 MB a cycle, ~265 MB a backfill run."""
    options = dict(re.findall(r"^(\w+)=(.*)$", UNIT.read_text(), re.M))
    units = {"K": 2**10, "M": 2**20, "G": 2**30}
    number, unit = re.fullmatch(r"(\d+)([KMG])", options["MemoryMax"]).groups()
    limit = int(number) * units[unit]
    assert 3 * 265 * 2**20 <= limit <= 4 * 2**30


def test_dockerfile_copies_what_exists_and_runs_the_daemon():
    text = (ROOT / "Dockerfile").read_text()
    for source in re.findall(r"^COPY (.+) \S+$", text, re.M):
        for name in source.split():
            assert (ROOT / name).exists(), name
    assert re.search(r"^USER allium-agent$", text, re.M)
    assert 'ENTRYPOINT ["/opt/allium-agent/.venv/bin/allium-agent"]' in text
    assert 'CMD ["run", "--config", "/etc/allium-agent/config.yaml"]' in text
    assert "STOPSIGNAL SIGTERM" in text and "HEALTHCHECK" in text


