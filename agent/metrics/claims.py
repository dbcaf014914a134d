"""What CIISS contact lines say about a relay next to what the network sees: claimed OS against the platform
line, and the hosters operators name.

Both are claims (anyone can write any ``os:`` or ``hoster:``), so they are
counted, not trusted: a claimed OS that disagrees with the descriptor's
platform line is the interesting figure. Tags stay bounded: OS values are
mapped to a handful of families, and only the ``top_n`` hosters by weight
get a series of their own.
"""

from __future__ import annotations

from collections import defaultdict

from agent.metrics.relays import NO_DESCRIPTOR, OS_NAMES, OTHER, RelayTable
from agent.model.ciiss import ContactFields, bounded_tag
from agent.model.points import Point, point

#: CIISS os: values, mapped to the platform families the relay table names (Linux distributions are Linux).
OS_FAMILIES = (
    ("linux", ("linux", "debian", "ubuntu", "centos", "fedora", "rhel", "redhat", "alma", "rocky", "arch",
               "gentoo", "alpine", "suse", "void", "nixos", "slackware", "devuan", "mint", "raspbian", "armbian")),
    ("freebsd", ("freebsd", "hardenedbsd", "ghostbsd")),
    ("openbsd", ("openbsd",)),
    ("netbsd", ("netbsd",)),
    ("dragonfly", ("dragonfly",)),
    ("windows", ("windows", "win32", "win64")),
    ("darwin", ("darwin", "macos", "osx")),
    ("sunos", ("sunos", "solaris", "illumos", "omnios", "openindiana")),
)
_SEEN = {name.lower(): name.lower() for name in OS_NAMES}


def claimed_os(value: str | None) -> str | None:
    """The OS family a CIISS ``os:`` value names (``other`` for one it does not), or None without one."""
    if not value:
        return None
    text = value.lower()
    return next((family for family, words in OS_FAMILIES if any(word in text for word in words)), OTHER)


def seen_os(platform: str) -> str:
    """The relay table's platform as a tag: an OS family, ``other``, or ``unknown`` without a descriptor."""
    return _SEEN.get(platform.lower(), NO_DESCRIPTOR if platform == NO_DESCRIPTOR else OTHER)


def claim_points(table: RelayTable, contacts: list[ContactFields], top_n: int, time: int) -> list[Point]:
    """``tor_aroi_os{claimed, seen}`` for relays claiming an OS, and ``tor_aroi_hoster{hoster}`` (top ``top_n``)."""
    total = float(table.weight.sum()) or 1.0
    pairs: dict[tuple[str, str], int] = defaultdict(int)
    hosters: dict[str, list[int]] = defaultdict(list)
    for index, contact in enumerate(contacts):
        claimed = claimed_os(contact.fields.get("os"))
        if claimed is not None:
            pairs[(claimed, seen_os(table.platform[index]))] += 1
        if contact.fields.get("hoster"):
            hosters[bounded_tag(contact.fields["hoster"])].append(index)
    points = [point("tor_aroi_os", {"claimed": claimed, "seen": seen}, {"relays": relays}, time)
              for (claimed, seen), relays in sorted(pairs.items())]
    ranked = sorted(hosters.items(), key=lambda item: (-float(table.weight[item[1]].sum()), item[0]))
    points += [point("tor_aroi_hoster", {"hoster": hoster}, {
        "relays": len(indices), "weight_fraction": float(table.weight[indices].sum()) / total}, time)
        for hoster, indices in ranked[:max(top_n, 0)]]
    return points
