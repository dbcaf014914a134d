"""The memory benchmark: RSS over consecutive cycles of changing real documents, as a daemon sees them.

Each cycle is ``benchmarks/run.py``'s ``cycle()`` (the agent's own parse,
signatures, metrics, checks, detection and line protocol) with one detector
kept across cycles, as ``allium-agent run`` keeps it. The documents rotate
so that every cycle differs from the one before, as real periods do: the
seven real full consensuses in order of their valid-after, each with one of
the two real votes (14 combinations; the vote parsed as nine authorities'
votes, as in the cycle benchmark) and the real server descriptors nearest
it in time. Each document is read from disk in its cycle and restamped to
the cycle's hour (valid-after, fresh-until, valid-until), so the detector
takes every cycle as the next period and sees relays come and go between
networks of different years. Re-parsing identical documents, as this
benchmark once did, hid what grows with changing data.

``run.py --child memory N [census|alloc]``: RSS after each cycle; every 25
cycles from the 25th on, with ``census`` also the Python objects by type
and the allocation sites that grew (gc and tracemalloc: several times
slower), with ``alloc`` what the allocators hold (pymalloc's arenas and
blocks, glibc's heap and mappings: cheap). For investigating.
"""

from __future__ import annotations

import gc
import re
import resource
import statistics
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

TORDATA = Path(__file__).resolve().parents[2] / "shared" / "tordata"
START = datetime(2024, 1, 1)
CENSUS_EVERY = 25
_STAMPED = re.compile(rb"^(valid-after|fresh-until|valid-until) [0-9-]+ [0-9:]+$", re.M)
_OFFSETS = {b"valid-after": timedelta(0), b"fresh-until": timedelta(hours=1), b"valid-until": timedelta(hours=3)}


def documents() -> dict[str, list]:
    """The real consensuses in time order, each with the real server descriptors nearest it in time; the votes."""
    consensuses = sorted((path for path in (TORDATA / "consensus").iterdir() if path.is_file()), key=_first_time)
    descriptors = [TORDATA / "server-descriptors" / name
                   for name in ("zoossh-testdata-server-descriptors", "2020-02-29-10-05-00-server-descriptors")]
    return {"consensus": [(path, _nearest(descriptors, _first_time(path))) for path in consensuses],
            "vote": sorted((TORDATA / "votes").iterdir(), key=_first_time)}


def inputs_of(cycle: int, files: dict[str, list], fixed: dict) -> dict:
    """The documents of one cycle: a consensus/vote combination, restamped to the cycle's hour.

    ``fixed``: the microdesc consensus and key certificates (its signatures
    are verified against those, so both stay as they are).
    """
    consensus, descriptors = files["consensus"][cycle % len(files["consensus"])]
    vote = files["vote"][cycle // len(files["consensus"]) % len(files["vote"])]
    moment = START + timedelta(hours=cycle)
    return {**fixed, "consensus": restamp(consensus.read_bytes(), moment), "vote": restamp(vote.read_bytes(), moment),
            "descriptors": descriptors.read_bytes()}


def restamp(raw: bytes, moment: datetime) -> bytes:
    """A network status document with its valid-after at ``moment`` (fresh an hour, valid three)."""
    def stamp(match: re.Match) -> bytes:
        return match[1] + b" " + (moment + _OFFSETS[match[1]]).strftime("%Y-%m-%d %H:%M:%S").encode()
    return _STAMPED.sub(stamp, raw, count=3)


def child_memory(cycles: int, cycle, setup, fixed: dict, census: str = "") -> dict:
    """``cycles`` consecutive cycles in one process with one detector: RSS after each, the peak, and
    (``census``: ``census`` or ``alloc``) what grew. ``cycle`` and ``setup`` are run.py's; ``fixed``: see
    ``inputs_of``."""
    from agent.detect.engine import Detector

    config, geoip = setup()
    files = documents()
    detector = Detector(config.detect.settings)
    rss, growth, looks, watcher = [], [], {"census": _Census, "alloc": _Allocators}.get(census), None
    for number in range(cycles):
        cycle(inputs_of(number, files, fixed), "ours", config, geoip, detector)
        gc.collect()
        rss.append(current_rss_mb())
        if looks and (number + 1) % CENSUS_EVERY == 0:
            watcher = watcher or looks()  # after a warm-up: what the first cycles fill is no creep
            growth.append({"cycle": number + 1, "rss": rss[-1], **watcher.take()})
    return {"rss": rss, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "census": growth, "relays_remembered": len(detector.relays)}


def rows(memory: dict) -> list[str]:
    """The table rows of a memory run: means per hundred cycles, trend over the second half, peak."""
    rss = memory["rss"]
    half, hundreds = len(rss) // 2, [statistics.mean(rss[i:i + 100]) for i in range(0, len(rss), 100)]
    return [f"| memory | RSS over {len(rss)} consecutive cycles of changing real documents (7 consensuses x 2 votes "
            f"rotating), mean of each hundred cycles | {', '.join(f'{mean:.0f}' for mean in hundreds)} MB | | |",
            f"| memory | trend over the second half (cycles {half + 1}-{len(rss)}, least squares); peak RSS | "
            f"{100 * slope(rss[half:]):+.2f} MB per 100 cycles; peak {memory['peak_rss_mb']:.0f} MB over all "
            f"{len(rss)} cycles | | |"]


def slope(values: list[float]) -> float:
    """Least-squares slope of ``values`` against their index (RSS samples sit on allocator steps, so two single
    samples say little)."""
    mean_x, mean_y = (len(values) - 1) / 2, statistics.mean(values)
    return (sum((x - mean_x) * (y - mean_y) for x, y in enumerate(values))
            / (sum((x - mean_x) ** 2 for x in range(len(values))) or 1))


def current_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class _Census:
    """Objects by type (gc) and allocations by line (tracemalloc): what grew since the last look."""

    def __init__(self):
        import tracemalloc

        tracemalloc.start(1)
        self.tracemalloc, self.types, self.snapshot = tracemalloc, self._types(), tracemalloc.take_snapshot()

    @staticmethod
    def _types() -> Counter:
        return Counter(type(each).__name__ for each in gc.get_objects())

    def take(self) -> dict:
        types, snapshot = self._types(), self.tracemalloc.take_snapshot()
        grown = (types - self.types).most_common(8)
        sites = [(str(stat.traceback[0]), stat.size_diff // 1024, stat.count_diff)
                 for stat in snapshot.compare_to(self.snapshot, "lineno")[:8]]
        self.types, self.snapshot = types, snapshot
        return {"traced_mb": self.tracemalloc.get_traced_memory()[0] / 2**20, "objects_grown": grown,
                "sites_kb": sites}


def _first_time(path: Path) -> str:
    """A document's first valid-after or published time (``YYYY-MM-DD HH:MM:SS``)."""
    with path.open("rb") as handle:
        for line in handle:
            if line.startswith((b"valid-after ", b"published ")):
                return line.split(b" ", 1)[1].strip().decode()
    return ""


def _nearest(paths: list[Path], moment: str) -> Path:
    """The file whose first time stamp is nearest ``moment`` (both ``YYYY-MM-DD HH:MM:SS``)."""
    def distance(path: Path) -> float:
        return abs((datetime.fromisoformat(_first_time(path)) - datetime.fromisoformat(moment)).total_seconds())
    return min(paths, key=distance)


class _Allocators:
    """What the allocators hold, in MB: pymalloc's arenas (1 MiB each) and the blocks in use in them; glibc's
    heap, its mappings and what of them is in use (``mallinfo2``)."""

    FIELDS = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
              "keepcost")

    def __init__(self):
        import ctypes

        class MallInfo2(ctypes.Structure):
            _fields_ = [(name, ctypes.c_size_t) for name in self.FIELDS]

        self.libc = ctypes.CDLL("libc.so.6")
        self.libc.mallinfo2.restype = MallInfo2

    def take(self) -> dict:
        info = self.libc.mallinfo2()
        stats = _pymalloc_stats()
        return {"pymalloc_arenas": stats.get("# arenas allocated current", 0),
                "pymalloc_used": stats.get("# bytes in allocated blocks", 0) / 2**20,
                "glibc_heap": info.arena / 2**20, "glibc_mapped": info.hblkhd / 2**20,
                "glibc_used": info.uordblks / 2**20, "glibc_free": info.fordblks / 2**20}


def _pymalloc_stats() -> dict[str, int]:
    """``sys._debugmallocstats()``'s summary lines (it writes to the C stderr, so that is caught in a file)."""
    import os
    import sys
    import tempfile

    with tempfile.TemporaryFile() as caught:
        saved = os.dup(2)
        os.dup2(caught.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        caught.seek(0)
        lines = caught.read().decode(errors="replace").splitlines()
    return {key.strip(): int(value.replace(",", "")) for key, _, value in (line.partition("=") for line in lines)
            if key.startswith("#") and value.strip().replace(",", "").isdigit()}

