"""Routes: which alerts go to which targets, by channel, and the parsing of ``alerts.routes``.

Kept with the notifiers rather than the config so that a route's channels are
exactly NOTIFIERS' and a new notifier needs no change here; the config loader
re-exports ``Route`` and calls ``parse_routes``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from agent.alerts.notifiers import NOTIFIERS
from agent.model.alerts import Alert
from agent.model.findings import SEVERITIES

_FILTERS = ("severities", "checks", "authorities")


@dataclass(frozen=True)
class Route:
    """Where alerts go: every alert matching all the given filters (an empty filter matches all).

    ``targets`` maps a channel of NOTIFIERS to its targets, e.g.
    ``{"email": ("list@example.org",), "matrix": ("#room:example.org",)}``.
    """

    name: str
    targets: Mapping[str, tuple[str, ...]] = field(default_factory=dict, hash=False)
    severities: frozenset[str] = frozenset()
    checks: frozenset[str] = frozenset()
    authorities: frozenset[str] = frozenset()

    def matches(self, alert: Alert) -> bool:
        return ((not self.severities or alert.severity in self.severities)
                and (not self.checks or alert.id in self.checks)
                and (not self.authorities or alert.subjects.get("authority") in self.authorities))

    def destinations(self) -> list[tuple[str, str]]:
        """(channel, target) pairs, in the order the route lists them."""
        return [(channel, target) for channel, listed in self.targets.items() for target in listed]


class InvalidRoutes(ValueError):
    """What is wrong with ``alerts.routes``, worded to follow "alerts.routes: "."""


def parse_routes(value: object) -> tuple[Route, ...]:
    """The routes of the config's ``alerts.routes`` list; raises InvalidRoutes naming each bad one by index.

    A route's keys are ``name``, one per channel of NOTIFIERS (a list of
    targets) and the filters; it must name at least one target.
    """
    if not isinstance(value, list):
        raise InvalidRoutes(f"must be a list of routes, got {_describe(value)}")
    allowed = {"name", *NOTIFIERS, *_FILTERS}
    routes, problems = [], []
    for index, item in enumerate(value):
        if not isinstance(item, dict) or "name" not in item or set(item) - allowed:
            problems.append(f"[{index}] needs a name and only {', '.join(sorted(allowed - {'name'}))}")
            continue
        lists = {key: item.get(key, []) for key in allowed - {"name"}}
        bad = [key for key, listed in lists.items() if not isinstance(listed, list)
               or not all(isinstance(entry, str) and entry for entry in listed)]
        unknown = set(lists["severities"]) - set(SEVERITIES) if "severities" not in bad else set()
        if bad or unknown:
            problems.append(f"[{index}] ({item['name']}): " + "; ".join(
                [f"{key} must be a list of strings" for key in sorted(bad)]
                + [f"unknown severity {name}" for name in sorted(unknown)]))
            continue
        targets = {channel: tuple(lists[channel]) for channel in NOTIFIERS if lists[channel]}
        if not targets:
            *others, last = [factory.target_noun for factory in NOTIFIERS.values()]
            problems.append(f"[{index}] ({item['name']}): names no {', '.join(others)} or {last}")
            continue
        routes.append(Route(str(item["name"]), targets, *(frozenset(lists[key]) for key in _FILTERS)))
    if problems:
        raise InvalidRoutes("; ".join(problems))
    return tuple(routes)


def _describe(value: object) -> str:
    try:
        return json.dumps(value)
    except TypeError:
        return repr(value)
