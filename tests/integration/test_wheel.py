"""The installed wheel, not the source tree: built, installed into a fresh venv, and run from elsewhere.

Before: the wheel lacked agent/metrics/catalogue.csv (``catalogue()`` raised
FileNotFoundError once installed) and the build warned that the package
``agent.data`` was absent from the packages configuration.
"""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).parents[2]
#: What installing and building may take (pip resolves the pinned dependencies from the local pip config).
HANG_GUARD_SECONDS = 900

READ_EVERY_DATA_FILE = """
import sys
from pathlib import Path
import agent
from agent.checks.settings import known_parameters
from agent.metrics.catalogue import catalogue
from agent.model.authorities import default_authorities
assert Path(agent.__file__).parent.parent == Path(sys.argv[1]), agent.__file__
print(len(catalogue()), len(default_authorities()), len(known_parameters()))
"""


def run(command, cwd, **kwargs):
    """Runs a command outside the source tree, with no PYTHONPATH leading back into it."""
    environment = {key: value for key, value in os.environ.items()
                   if key not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    result = subprocess.run([str(part) for part in command], cwd=cwd, capture_output=True, text=True,
                            timeout=HANG_GUARD_SECONDS, env=environment | {"PYTHONNOUSERSITE": "1"}, **kwargs)
    assert result.returncode == 0, f"{command}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def data_files() -> set[str]:
    """Every file of the package that is not Python: what the agent reads at run time."""
    return {str(path.relative_to(ROOT)) for path in (ROOT / "agent").rglob("*")
            if path.is_file() and path.suffix not in (".py", ".pyc") and "__pycache__" not in path.parts}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(wheel, build output) from a copy of the working tree (building in the tree would write build/ there)."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    shutil.copytree(ROOT / "agent", source / "agent", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("setup.cfg", "pyproject.toml", "README.md", "MANIFEST.in"):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, source / name)
    result = run([sys.executable, "-m", "pip", "wheel", "--no-deps", ".", "-w", work / "dist"], cwd=source)
    [wheel] = (work / "dist").glob("allium_agent-*.whl")
    return wheel, result.stdout + result.stderr


def test_the_wheel_builds_without_warnings_and_holds_every_data_file(built):
    wheel, output = built
    assert "absent from the `packages` configuration" not in output
    assert data_files() >= {"agent/metrics/catalogue.csv", "agent/data/authorities.txt"}
    assert data_files() <= set(zipfile.ZipFile(wheel).namelist())


def test_the_installed_wheel_reads_its_data_and_runs(built, tmp_path):
    wheel, _ = built
    venv = tmp_path / "venv"
    run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", venv], cwd=tmp_path)
    run([venv / "bin" / "python", "-m", "pip", "install", "--quiet", wheel], cwd=tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    site = run([venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
               cwd=elsewhere).stdout.strip()
    metrics, authorities, parameters = map(int, run(
        [venv / "bin" / "python", "-c", READ_EVERY_DATA_FILE, site], cwd=elsewhere).stdout.split())
    assert metrics > 100 and authorities == 9 and parameters > 50
    checked = run([venv / "bin" / "allium-agent", "config", "check"], cwd=elsewhere)
    assert "<defaults>: OK (9 bootstrap authorities" in checked.stdout
    config = elsewhere / "agent.yaml"
    config.write_text(f"state_dir: {elsewhere / 'state'}\n")
    status = subprocess.run([venv / "bin" / "allium-agent", "status", "--config", config], cwd=elsewhere,
                            capture_output=True, text=True, timeout=HANG_GUARD_SECONDS)
    assert status.returncode == 1 and "NO: no period recorded yet" in status.stdout, status.stderr
