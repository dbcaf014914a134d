"""Replays of voting periods built from real relays, with incidents injected, for evaluating the detectors.

No offline archive holds hundreds of consecutive hours of full documents, so
a replay starts from a real consensus (its relays, flags, weights, addresses,
versions, platforms and contacts from the real server descriptors) and
evolves it period by period the way the live network moves: relays leave
and join at a daily-varying rate (joiners are real relays from the other
real consensuses, or earlier leavers returning), weights drift, a few flags
change, nine authorities vote with small disagreements and six of them
measure bandwidth. Incidents are then injected at a chosen period.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from agent.detect.facts import FLAG_BITS, PeriodFacts, RelayFacts, relay_facts
from agent.model.entries import entries_of

AUTHORITIES = ("moria1", "tor26", "dizum", "gabelmoo", "dannenberg", "maatuska", "longclaw", "bastet", "faravahar")
BANDWIDTH_AUTHORITIES = ("moria1", "gabelmoo", "maatuska", "longclaw", "bastet", "faravahar")
HOURLY_CHURN = 0.004  # relays leaving (and joining) per hour, as a share of the network (Tor Metrics, 2020)
INCIDENTS = ("flood", "vanish", "bwauth_half", "version_wave")


@dataclass(frozen=True)
class Incident:
    kind: str
    period: int  # index of the period it happens in


def population(consensuses: list, descriptors: list, geoip) -> tuple[RelayFacts, RelayFacts]:
    """The first consensus's relays, and the relays only the other consensuses have (future joiners).

    Takes parsed stem documents: real consensuses and server descriptors.
    """
    from agent.metrics.relays import build_table

    tables, seen = [], set()
    for consensus in consensuses:
        table = build_table(consensus, descriptors, geoip)
        tables.append(relay_facts(table, entries_of(consensus),
                                  np.full(len(table), len(AUTHORITIES), np.int16)))
    base, reserve = tables[0], []
    seen.update(base.fingerprint)
    for other in tables[1:]:
        fresh = np.array([fp not in seen for fp in other.fingerprint])
        seen.update(other.fingerprint)
        reserve.append(other.take(fresh))
    return base, concat(reserve) if reserve else base.take(np.zeros(len(base), bool))


def read_documents(consensus_paths: list, descriptor_paths: list) -> tuple[list, list]:
    """Parses real consensus and server-descriptor files for ``population`` (no validation: speed)."""
    from stem.descriptor import parse_file

    consensuses = [next(parse_file(str(path), document_handler="DOCUMENT", validate=False))
                   for path in consensus_paths]
    descriptors = [d for path in descriptor_paths for d in parse_file(str(path), validate=False)]
    return consensuses, descriptors


def concat(parts: list[RelayFacts]) -> RelayFacts:
    """The relays of all parts, in order."""

    def join(name):
        values = [getattr(part, name) for part in parts]
        return np.concatenate(values) if isinstance(values[0], np.ndarray) else sum(values, [])

    return RelayFacts(*(join(name) for name in RelayFacts.__dataclass_fields__))


class Replay:
    """Yields PeriodFacts, hour after hour (``period_seconds``), from ``start``."""

    def __init__(self, base: RelayFacts, reserve: RelayFacts, seed: int, start: int = 1582970400,
                 period_seconds: int = 3600):
        self.rng = np.random.default_rng(seed)
        self.start, self.period = start, period_seconds
        self.pool = concat([base, reserve])
        self.alive = np.concatenate([np.ones(len(base), bool), np.zeros(len(reserve), bool)])
        self.next_reserve = len(base)
        self.weight_factor = np.ones(len(self.pool))
        self.offsets = {name: int(self.rng.integers(50, 400)) for name in AUTHORITIES}  # relays only it knows
        self.measure_share = {name: float(self.rng.uniform(0.90, 0.97)) for name in BANDWIDTH_AUTHORITIES}
        self.pool_flags = self.pool.flags.copy()
        self.pool_versions = list(self.pool.version)

    def periods(self, count: int, incident: Incident | None = None):
        for index in range(count):
            yield self.period_facts(index, incident if incident is not None and incident.period == index else None)

    def period_facts(self, index: int, incident: Incident | None) -> PeriodFacts:
        time = self.start + index * self.period
        self._natural_churn(time)
        self._drift()
        if incident is not None and incident.kind in ("flood", "vanish", "version_wave"):
            getattr(self, f"_{incident.kind}")()
        relays = self.pool.take(np.flatnonzero(self.alive))
        relays.flags = self.pool_flags[self.alive]
        relays.weight = self.pool.weight[self.alive] * self.weight_factor[self.alive]
        relays.version = [self.pool_versions[i] for i in np.flatnonzero(self.alive)]
        relays.listed_by = (len(AUTHORITIES) - (self.rng.random(len(relays)) < 0.01)).astype(np.int16)
        authorities = self._votes(relays, incident)
        return PeriodFacts(time, self.period, relays, authorities)

    def _natural_churn(self, time: int) -> None:
        hour = (time // 3600) % 24
        rate = HOURLY_CHURN * (1 + 0.3 * math.sin(2 * math.pi * hour / 24))
        alive = np.flatnonzero(self.alive)
        leaving = self.rng.choice(alive, size=self.rng.poisson(rate * len(alive)), replace=False)
        self.alive[leaving] = False
        joining = self.rng.poisson(rate * len(alive))
        returning_pool = np.flatnonzero(~self.alive[:self.next_reserve])
        # About six relays never seen before per hour (sybilhunter's median); the rest come back.
        returning = self.rng.choice(returning_pool, size=min(max(joining - self.rng.poisson(6), 0),
                                                             len(returning_pool)), replace=False)
        self.alive[returning] = True
        fresh = min(joining - len(returning), len(self.pool) - self.next_reserve)
        self.alive[self.next_reserve:self.next_reserve + fresh] = True
        self.next_reserve += fresh

    def _drift(self) -> None:
        # Weights wander (bandwidth scanners re-measure) and revert towards the relay's real weight.
        noise = self.rng.normal(0, 0.03, len(self.pool))
        self.weight_factor = np.exp(0.9 * np.log(self.weight_factor) + noise)
        flips = self.rng.random(len(self.pool)) < 0.0005
        self.pool_flags[flips] ^= FLAG_BITS["Stable"]

    def _flood(self, size: int = 120) -> None:
        """``size`` relays of one operator who hides: one /24, numbered nicknames, same version and ports."""
        template = self.pool.take(np.arange(size) % len(self.pool))
        flood = replace(template,
                        fingerprint=[f"{0xF00D0000 + i:08X}" + "5" * 32 for i in range(size)],
                        nickname=[f"fastrelay{i:03d}" for i in range(size)],
                        address=[f"203.0.113.{i % 250 + 1}" for i in range(size)],
                        or_port=np.full(size, 9001, np.int32), dir_port=np.zeros(size, np.int32),
                        flags=np.full(size, FLAG_BITS["Running"] | FLAG_BITS["Valid"] | FLAG_BITS["Fast"], np.uint32),
                        weight=np.full(size, 500.0), country=["??"] * size, operator=[None] * size,
                        version=["0.4.2.6"] * size, platform=["Linux"] * size)
        self.pool = concat([self.pool, flood])
        self.alive = np.concatenate([self.alive, np.ones(size, bool)])
        self.weight_factor = np.concatenate([self.weight_factor, np.ones(size)])
        self.pool_flags = np.concatenate([self.pool_flags, flood.flags])
        self.pool_versions += flood.version

    def _vanish(self, share: float = 0.10) -> None:
        alive = np.flatnonzero(self.alive)
        self.alive[self.rng.choice(alive, size=int(share * len(alive)), replace=False)] = False

    def _version_wave(self, share: float = 0.30) -> None:
        """A third of the relays switch to one new version in one period (a coordinated restart)."""
        alive = np.flatnonzero(self.alive)
        for index in self.rng.choice(alive, size=int(share * len(alive)), replace=False):
            self.pool_versions[index] = "0.4.9.99"

    def _votes(self, relays: RelayFacts, incident: Incident | None) -> dict[str, dict[str, float]]:
        votes = {}
        total = float(relays.weight.sum())
        for name in AUTHORITIES:
            values = {"vote_relays": float(len(relays) + self.offsets[name] + self.rng.integers(-3, 4)),
                      "consensus_latency_seconds": float(self.rng.gamma(4, 0.08))}
            if name in self.measure_share:
                share = self.measure_share[name] * (1 + self.rng.normal(0, 0.002))
                if incident is not None and incident.kind == "bwauth_half" and name == "maatuska":
                    share /= 2
                values["measured_relays"] = float(round(share * len(relays)))
                values["total_measured_weight"] = share * total * (1 + self.rng.normal(0, 0.003))
            votes[name] = values
        return votes
