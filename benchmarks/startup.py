"""Start-up benchmark (issue 22, "fast start"): wall time of short ``allium-agent`` commands, each a fresh process.

    .venv/bin/python benchmarks/run.py --startup [--tree /tmp/before] [--startup-repeat 7]
                                                 [--testnet-config testnet/allium-agent.yaml]

Each command runs as the user runs it (``python -m agent ...``, a new
process), wall clock from start to exit, ``--startup-repeat`` times; the
table gives the median and the best, and the median CPU seconds (user and
system) of the process, which other work on the machine sways less. The commands:

- ``config check``; ``status``; ``query tor_network_relays`` against a real
  VictoriaMetrics on 127.0.0.1 (started here; ``once`` writes to it first);
- ``check --from`` the real consensus of 2020-02-29 11:00 (../shared/tordata);
- ``once`` against the private Tor network on loopback: one brought up here
  with ``allium-agent testnet up`` (3 authorities, 3 relays, stopped again at
  the end), or the running one whose agent config ``--testnet-config`` names.
  Detection is on (the default), so ``once`` loads its state and learns each
  new period; runs within one 10 s period find it learned already.
- ``once``'s first run on an empty cache directory is reported on its own
  (it parses tor's GeoIP file where the code caches it); and the GeoIP
  load alone, in-process, on an empty cache directory and again.

Then, per command, three more runs under ``python -X importtime`` (the
medians): the seconds spent importing (the top-level imports' cumulative
times, which the flag itself inflates a little) and the heavy packages
among them.

``--tree`` (repeatable) runs the same commands from other checkouts of the
agent as well, e.g. a ``git worktree add /tmp/before HEAD`` for a before
and after in one sitting: each tree runs with ``PYTHONPATH=<tree>`` in this
venv, with its own state directory, an empty ``XDG_CACHE_HOME``, and its
bytecode compiled ahead into a ``PYTHONPYCACHEPREFIX`` of its own (as an
installed agent has it; this machine sets PYTHONDONTWRITEBYTECODE, which
otherwise makes every run compile agent/ from source, about 0.15 s). The
runs of the trees are interleaved, so a slower minute of the machine
costs each the same. No test asserts on these numbers.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TORDATA = ROOT.parent / "shared" / "tordata"
CONSENSUS = TORDATA / "consensus" / "2020-02-29-11-00-00-consensus"
GEOIP = Path("/usr/share/tor/geoip")  # tor-geoipdb: the agent's default metrics.geoip_file
IMPORT_RUNS = 3  # runs under -X importtime per command and tree: the medians are reported
#: the packages whose import matters at start-up (River brings SciPy)
HEAVY = ("numpy", "river", "scipy", "influxdb_client", "stem", "requests", "yaml", "zstandard", "apscheduler")


def commands(config: Path) -> list[tuple[str, list[str]]]:
    return [("config check", ["config", "check", str(config)]),
            ("status", ["status", "--config", str(config)]),
            ("query", ["query", "--config", str(config), "tor_network_relays"]),
            ("check --from", ["check", "--config", str(config), "--from", str(CONSENSUS)]),
            ("once", ["once", "--config", str(config)])]


class Tree:
    """One checkout of the agent, run from this venv with its own state, cache and bytecode."""

    def __init__(self, source: Path, work: Path, index: int, testnet_config: str, store_url: str):
        self.source, self.name = source, "this tree" if source == ROOT else str(source)
        self.work = work / f"tree-{index}"
        self.work.mkdir()
        self.config = self.work / "agent.yaml"
        self.config.write_text(f"{testnet_config}\nstate_dir: {self.work / 'state'}\n"
                               f"store: {{url: '{store_url}'}}\nquery: {{url: '{store_url}'}}\n")
        self.environ = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
        self.environ.update(PYTHONPATH=str(source), PYTHONPYCACHEPREFIX=str(self.work / "pycache"),
                            XDG_CACHE_HOME=str(self.work / "cache"))
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(source / "agent")], env=self.environ,
                       check=True, capture_output=True)

    def geoip_seconds(self) -> list[float]:
        """In-process seconds of ``load_or_empty(GEOIP)`` in fresh processes of this tree: an empty cache
        directory, then the same again."""
        code = ("import time\nfrom agent.metrics.geoip import load_or_empty\nstarted = time.perf_counter()\n"
                f"load_or_empty({str(GEOIP)!r})\nprint(time.perf_counter() - started)")
        environ = {**self.environ, "XDG_CACHE_HOME": str(self.work / "geoip-cache")}
        return [float(subprocess.run([sys.executable, "-c", code], env=environ, cwd=self.work, capture_output=True,
                                     text=True, check=True).stdout.split()[-1]) for _ in range(2)]

    def run(self, arguments: list[str], *flags: str) -> tuple[tuple[float, float], subprocess.CompletedProcess]:
        """Runs one command; its (wall, CPU) seconds and what it printed."""
        cpu, started = _children_cpu(), time.perf_counter()
        result = subprocess.run([sys.executable, *flags, "-m", "agent", *arguments], env=self.environ,
                                cwd=self.work, capture_output=True, text=True)
        seconds = time.perf_counter() - started, _children_cpu() - cpu
        if result.returncode > 2 or "Traceback" in result.stderr:
            raise RuntimeError(f"{self.name}: allium-agent {' '.join(arguments)} failed ({result.returncode}):\n"
                               f"{result.stderr[-3000:]}")
        return seconds, result


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def imports(stderr: str) -> tuple[float, dict[str, float]]:
    """From ``-X importtime`` output: seconds of all top-level imports, and of each heavy package.

    A package's seconds are the cumulative times of its outermost imported
    modules (``river.stats`` counts, though ``river`` itself is lazy), so
    they include what it imported of other packages not loaded before.
    """
    lines = [(len(match[2]), match[3], int(match[1]) / 1e6)
             for match in re.finditer(r"^import time:\s+\d+ \|\s+(\d+) \| ( *)(\S+)$", stderr, re.M)]
    total, heavy = 0.0, dict[str, float]()
    outer: list[tuple[int, str]] = []  # the imports enclosing the line at hand: (depth, package)
    for depth, name, seconds in reversed(lines):  # an import is printed after the ones it made
        while outer and outer[-1][0] >= depth:
            outer.pop()
        package = name.partition(".")[0]
        if depth == 0:
            total += seconds
        if package in HEAVY and all(enclosing != package for _, enclosing in outer):
            heavy[package] = heavy.get(package, 0.0) + seconds
        outer.append((depth, package))
    return total, heavy


def testnet_up(work: Path) -> tuple[Path, str]:
    """A private Tor network on loopback (``allium-agent testnet up``); its directory and agent config text."""
    directory = work / "testnet"
    result = subprocess.run([sys.executable, "-m", "agent", "testnet", "up", "--dir", str(directory)],
                            cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        testnet_down(directory)
        raise RuntimeError(f"testnet up failed:\n{result.stderr[-3000:]}")
    return directory, (directory / "allium-agent.yaml").read_text()


def testnet_down(directory: Path) -> None:
    subprocess.run([sys.executable, "-m", "agent", "testnet", "down", "--dir", str(directory)], cwd=ROOT,
                   capture_output=True, text=True)


def measure(trees: list[Path], repeat: int, testnet_config: Path | None = None) -> dict:
    """Every command from every tree, ``repeat`` times interleaved; see the module's docstring."""
    sys.path.insert(0, str(ROOT))
    from tests.integration.victoria import VictoriaMetrics

    work = Path(tempfile.mkdtemp(prefix="bench-startup-"))
    network, victoria, load_before = None, None, os.getloadavg()[0]
    try:
        victoria = VictoriaMetrics(work / "victoria").start()
        if testnet_config is None:
            network, config_text = testnet_up(work)
        else:
            config_text = testnet_config.read_text()
        config_text = "\n".join(line for line in config_text.splitlines() if not line.startswith("state_dir:"))
        checkouts = [Tree(source.resolve(), work, index, config_text, victoria.url)
                     for index, source in enumerate(trees)]
        results: dict = {tree.name: {"runs": {}, "imports": {}} for tree in checkouts}
        for tree in checkouts:  # the first once: an empty cache directory, a fresh state
            seconds, _ = tree.run(commands(tree.config)[-1][1])
            results[tree.name]["first_once"] = seconds
        for _ in range(repeat):
            for index in range(len(commands(checkouts[0].config))):
                for tree in checkouts:
                    name, arguments = commands(tree.config)[index]
                    seconds, _ = tree.run(arguments)
                    results[tree.name]["runs"].setdefault(name, []).append(seconds)
        for tree in checkouts:
            for name, arguments in commands(tree.config):
                profiles = [imports(tree.run(arguments, "-X", "importtime")[1].stderr) for _ in range(IMPORT_RUNS)]
                packages = {package for _, heavy in profiles for package in heavy}
                results[tree.name]["imports"][name] = (
                    statistics.median(total for total, _ in profiles),
                    {package: statistics.median(heavy.get(package, 0.0) for _, heavy in profiles)
                     for package in packages})
            results[tree.name]["geoip"] = tree.geoip_seconds()
        results["_load"] = (load_before, os.getloadavg()[0])
        return results
    finally:
        if network is not None:
            testnet_down(network)
        if victoria is not None:
            victoria.stop()
        shutil.rmtree(work, ignore_errors=True)


def rows(results: dict) -> list[str]:
    """Two tables: wall seconds per command and tree; then what each command imports, per tree."""
    names = [name for name in results if not name.startswith("_")]
    lines = ["| command | " + " | ".join(f"{name}: wall s, median (best); CPU s, median" for name in names) + " |",
             "|---|" + "---|" * len(names)]

    def cell(runs: list[tuple[float, float]]) -> str:
        walls, cpus = [wall for wall, _ in runs], [cpu for _, cpu in runs]
        return f"{statistics.median(walls):.2f} ({min(walls):.2f}); {statistics.median(cpus):.2f}"

    for command in results[names[0]]["runs"]:
        lines.append(f"| `{command}` | " + " | ".join(cell(results[name]["runs"][command]) for name in names) + " |")
    lines.append("| `once`, first run (empty cache directory, fresh state) | "
                 + " | ".join(cell([results[name]["first_once"]]) for name in names) + " |")
    lines.append("| GeoIP alone: `load_or_empty` of tor's file, in-process, empty cache directory / again | "
                 + " | ".join(" / ".join(f"{seconds:.2f}" for seconds in results[name]["geoip"]) for name in names)
                 + " |")
    lines += ["", "| command | " + " | ".join(f"{name}: imports s (-X importtime); heavy packages, cumulative s"
                                             for name in names) + " |", "|---|" + "---|" * len(names)]
    for command in results[names[0]]["imports"]:
        cells = []
        for name in names:
            total, heavy = results[name]["imports"][command]
            packages = ", ".join(f"{package} {seconds:.2f}"
                                 for package, seconds in sorted(heavy.items(), key=lambda item: -item[1]))
            cells.append(f"{total:.2f}; {packages or '-'}")
        lines.append(f"| `{command}` | " + " | ".join(cells) + " |")
    runs = len(results[names[0]]["runs"]["once"])
    lines.append(f"\n{runs} runs of each command per tree, interleaved; wall clock of the whole process; load "
                 f"average {results['_load'][0]:.1f} before, {results['_load'][1]:.1f} after.")
    return lines
