"""Runs the real allium-agent command line in a child process, for integration tests."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]


def agent(*arguments, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent", *map(str, arguments)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)
