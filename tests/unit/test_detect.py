"""Anomaly detection on replays built from the real 2020-02-29 consensuses: each detector fires on its
incident in the incident's own period and stays quiet on the unperturbed replay; state survives pickling."""

import copy
import pickle
from dataclasses import dataclass, replace

import numpy as np
import pytest

from agent.config.loader import load_config
from agent.detect.engine import DETECTORS, Detector, DetectorFile
from agent.detect.facts import FLAG_BITS, RelayFacts, facts_of
from agent.detect.groups import find_clusters, nickname_pattern
from agent.detect.protocol import Scores
from agent.detect.settings import bind, declared, setting
from agent.evaluation.evaluate import detector_of, firing
from agent.evaluation.replay import Incident, Replay, population
from agent.metrics.catalogue import catalogue
from agent.metrics.geoip import GeoIP
from agent.metrics.relays import build_table
from agent.model.findings import Finding, Severity
from tests.conftest import DATA, parse_data
from tests.unit.test_metrics import snapshot_of

WARMUP = 30
WARMED = 80  # periods before the incidents: past the warm-up and the 72 h a memory needs before "never seen"


@pytest.fixture(scope="module")
def relays():
    consensuses = [parse_data("consensus", f"2020-02-29-{hour}-00-00-consensus.xz") for hour in (10, 11)]
    descriptors = parse_data("server-descriptors", "2020-02-29-10-05-00-server-descriptors.xz")
    return population(consensuses, descriptors, GeoIP.load(DATA / "geoip-excerpt"))


@pytest.fixture(scope="module")
def settings():
    return replace(load_config(None, environ={}).detect.settings, warmup_periods=WARMUP)


@pytest.fixture(scope="module")
def warmed(relays, settings):
    """A detector and replay after WARMED unperturbed periods, and every finding fired after the warm-up."""
    replay, detector = Replay(*relays, seed=7), Detector(settings)
    fired = []
    for index in range(WARMED):
        result = detector.update(replay.period_facts(index, None))
        if index >= WARMUP:
            fired += [f for f in result.findings if f.silenced_by is None]
    return replay, detector, fired


def run_incident(warmed, kind):
    replay, detector, _ = warmed
    replay, detector = copy.deepcopy(replay), copy.deepcopy(detector)
    return detector.update(replay.period_facts(WARMED, Incident(kind, WARMED)))


def test_quiet_on_the_unperturbed_replay(warmed):
    _, _, fired = warmed
    assert fired == [], [f.description for f in fired]


@pytest.mark.parametrize("kind, expected", [
    ("flood", {"groups (Sybil)", "rule new_relays", "rule new_relays_block_1h", "baseline joined"}),
    ("vanish", {"baseline left", "baseline flag_left"}),
    ("bwauth_half", {"baseline authority_measured_relays", "baseline authority_total_measured_weight"}),
    ("version_wave", {"baseline relays_version"}),
])
def test_each_incident_caught_in_its_own_period(warmed, kind, expected):
    result = run_incident(warmed, kind)
    assert expected <= firing(result), firing(result)


def test_a_flood_is_reported_as_one_group_with_its_shared_traits(warmed):
    result = run_incident(warmed, "flood")
    [group] = [f for f in result.findings if f.check == "TorRelayGroupArrived"]
    assert group.severity == "warning" and group.values["relays"] == 120
    assert "/24 203.0.113.0/24" in group.description and "nickname pattern fastrelay#" in group.description
    assert "operator" not in group.description  # no shared contact: an undeclared group
    series = next(f for f in result.findings if f.subjects.get("series") == "joined")
    assert "expected" in series.description and "fastrelay" in series.description  # the relays involved


def test_measurement_collapse_names_the_authority_and_the_expected_range(warmed):
    result = run_incident(warmed, "bwauth_half")
    series = 'authority_measured_relays{authority="maatuska"}'
    [finding] = [f for f in result.findings if f.subjects.get("series") == series]
    assert finding.severity == "warning"
    assert finding.values["observed"] < finding.values["low"] < finding.values["expected"] < finding.values["high"]


def test_per_relay_detectors(warmed):
    """One relay's weight jump or missing votes is in the details, not a network alarm; ten relays starting
    to flap their flags together are one."""
    replay, detector, _ = warmed
    replay, detector = copy.deepcopy(replay), copy.deepcopy(detector)
    facts = replay.period_facts(WARMED, None)
    heavy = int(np.argmax(facts.relays.weight))
    facts.relays.weight[heavy] *= 10
    facts.relays.listed_by[heavy + 1] -= 4
    result = detector.update(facts)
    kinds = {a.kind: a for a in result.relay_anomalies}
    assert kinds["weight_jump"].fingerprint == facts.relays.fingerprint[heavy]
    assert kinds["fewer_authorities"].fingerprint == facts.relays.fingerprint[heavy + 1]
    assert not {"relay weight_jump", "relay fewer_authorities"} & firing(result)
    ahead = copy.deepcopy(replay)
    staying = set(facts.relays.fingerprint)
    for index in range(WARMED + 1, WARMED + 10):
        staying &= set(ahead.period_facts(index, None).relays.fingerprint)
    flappers = [fp for fp in facts.relays.fingerprint if fp in staying][:12]
    fired = set()
    for index in range(WARMED + 1, WARMED + 10):
        facts = replay.period_facts(index, None)
        for flapper in flappers:
            if index % 2:
                facts.relays.flags[facts.relays.fingerprint.index(flapper)] ^= FLAG_BITS["Guard"]
        result = detector.update(facts)
        fired |= {a.fingerprint for a in result.relay_anomalies if a.kind == "flag_flapping"}
        if "relay flag_flapping" in firing(result):
            break
    assert set(flappers) <= fired
    assert "relay flag_flapping" in firing(result)
    assert not any(a.kind == "flag_flapping" for a in detector.update(replay.period_facts(WARMED + 10, None))
                   .relay_anomalies if a.fingerprint in flappers)  # reported once, when it starts


def test_cold_start_says_warming_up_instead_of_alerting(relays, settings):
    replay, detector = Replay(*relays, seed=3), Detector(settings)
    for index in range(3):
        result = detector.update(replay.period_facts(index, Incident("vanish", 2) if index == 2 else None))
    assert result.warming
    [warming] = [f for f in result.findings if f.check == "TorAnomalyDetectionWarmingUp"]
    assert warming.silenced_by and "of 30 periods learned" in warming.description
    assert not any(f.check == "TorAnomalySeries" for f in result.findings)  # 10 % gone, but no baseline yet


def test_state_survives_a_pickle_round_trip(warmed):
    replay, detector, _ = warmed
    straight, restored = copy.deepcopy(detector), pickle.loads(pickle.dumps(detector))
    for index in (WARMED, WARMED + 1):
        facts = copy.deepcopy(replay).period_facts(index, Incident("vanish", WARMED))
        a, b = straight.update(facts), restored.update(copy.deepcopy(facts))
        assert [f.as_dict() for f in a.findings] == [f.as_dict() for f in b.findings]
        assert [(p.tags, p.fields) for p in a.points] == [(p.tags, p.fields) for p in b.points]
        assert not a.warming


def test_a_period_is_learned_once(warmed):
    replay, detector, _ = warmed
    detector = copy.deepcopy(detector)
    facts = copy.deepcopy(replay).period_facts(WARMED, None)
    assert not detector.update(facts).skipped
    assert detector.update(facts).skipped


def test_detector_file_saves_loads_and_sets_a_damaged_file_aside(tmp_path, warmed, settings):
    _, detector, _ = warmed
    store = DetectorFile(tmp_path, settings)
    assert store.load().periods == 0
    store.save(detector)
    assert store.load().periods == detector.periods
    (tmp_path / "detectors.pickle").write_bytes(b"not a pickle")
    assert store.load().periods == 0
    assert len(list(tmp_path.glob("detectors.unreadable-*"))) == 1


def test_points_are_catalogued(warmed):
    result = run_incident(warmed, "flood")
    known = {key for key in catalogue() if key[0] == "tor_anomaly"}
    assert {(p.measurement, name) for p in result.points for name in p.fields} == known
    assert any(p.tags["detector"] == "baseline" and p.fields["anomalous"] for p in result.points)


def test_facts_from_a_real_consensus():
    consensus = parse_data("consensus", "2020-02-29-10-00-00-consensus.xz")
    descriptors = parse_data("server-descriptors", "2020-02-29-10-05-00-server-descriptors.xz")
    table = build_table(consensus, descriptors, GeoIP.load(DATA / "geoip-excerpt"))
    facts = facts_of(snapshot_of(consensus, descriptors=descriptors), consensus, table)
    assert len(facts.relays) == len(consensus.routers) and facts.period_seconds == 3600
    guards = sum(1 for router in consensus.routers.values() if "Guard" in router.flags)
    assert int(facts.relays.has("Guard").sum()) == guards
    router = next(iter(consensus.routers.values()))
    assert (facts.relays.nickname[0], facts.relays.or_port[0]) == (router.nickname, router.or_port)
    with_contact = {d.fingerprint for d in descriptors if d.contact and d.fingerprint in consensus.routers}
    keyed = {fp for fp, op in zip(facts.relays.fingerprint, facts.relays.operator) if op}
    assert with_contact <= keyed and len(with_contact) > 200  # contacts from the descriptors (then families)


def test_nickname_patterns_and_weak_groups():
    assert nickname_pattern("relay0423") == nickname_pattern("Relay17") == "relay#"
    assert nickname_pattern("a1") == ""
    rule = type("F", (), {"check": "TorAnomalyRule", "subjects": {"rule": "new_relays"}})
    assert detector_of(rule) == "rule new_relays"


def test_arrivals_sharing_only_default_ports_are_no_group(relays):
    """40 never-seen relays on ORPort 9001, otherwise unrelated: a port much of the network has is no
    evidence (issue 21: the group's traits together must be rare in the network)."""
    base, _ = relays
    network = base.take(np.arange(len(base)))
    network.or_port[:40], network.dir_port[:40] = 9001, 0
    clusters = find_clusters(network, np.arange(40), min_size=10)
    assert clusters and not any(cluster.strong for cluster in clusters)


def test_a_series_that_stops_moving_keeps_its_floor():
    """A flow that moved, then stays at zero for longer than its window: its tail is then zero, the absolute
    floor still stands (nothing alarms), and a real burst is anomalous."""
    import random

    from agent.detect.baseline import FLOW, SeriesModel, SeriesSpec

    rng = random.Random(2)
    model = SeriesModel(SeriesSpec(FLOW, floor_absolute=10), window=168, warmup=3)
    for step in range(600):
        value = rng.choice([0.0, 1.0, 2.0, 7.0]) if step < 300 else 0.0
        verdict = model.judge("joined", value, 2.0)
        model.learn(value, verdict, step * 3600, 3600)
        assert not verdict.anomalous
    assert model.tail.get() == 0.0  # the case this test is about really happened
    assert not model.judge("joined", 9.0, 2.0).anomalous and model.judge("joined", 40.0, 2.0).anomalous


def test_after_a_gap_the_next_period_is_compared_with_the_last_one_seen(warmed):
    """The agent was down 24 periods: the period after is compared with the last one recorded, its limits
    scaled by the periods between, so a day's ordinary churn raises nothing and the next period is judged
    as usual (it used to be a blind spot: no churn was judged after a gap of more than three periods)."""
    replay, detector, _ = warmed
    replay, detector = copy.deepcopy(replay), copy.deepcopy(detector)
    for index in range(WARMED, WARMED + 24):
        replay.period_facts(index, None)  # the network moves on while the agent is down
    result = detector.update(replay.period_facts(WARMED + 24, None))
    assert [f.description for f in result.findings if f.silenced_by is None] == []
    joined = next(v for v in result.verdicts if v.series == "joined")
    assert joined.observed > 0 and not joined.warming  # judged, not skipped
    assert firing(detector.update(replay.period_facts(WARMED + 25, None))) == set()


def test_a_departure_across_a_gap_is_still_caught(warmed):
    """Five periods missed, then 10 % of the relays gone: caught in the first period seen again."""
    replay, detector, _ = warmed
    replay, detector = copy.deepcopy(replay), copy.deepcopy(detector)
    for index in range(WARMED, WARMED + 5):
        replay.period_facts(index, None)
    result = detector.update(replay.period_facts(WARMED + 5, Incident("vanish", WARMED + 5)))
    assert "baseline left" in firing(result)


def test_a_one_period_dip_alerts_once_and_a_lasting_shift_once():
    """A level's dip alerts when it happens, not again when it recovers; a lasting step alerts once and is
    then the new level."""
    from agent.detect.baseline import LEVEL, SeriesModel, SeriesSpec

    model = SeriesModel(SeriesSpec(LEVEL, floor_absolute=5, floor_relative=0.003), window=168, warmup=10)
    values = [6400.0] * 30 + [5760.0] + [6400.0] * 5 + [5760.0] * 8
    anomalous = []
    for step, value in enumerate(values):
        model.resume(step * 3600, 3600)
        verdict = model.judge("authority_vote_relays", value, 2.0)
        model.learn(value, verdict, step * 3600, 3600)
        anomalous.append(verdict.anomalous)
    assert anomalous[30] and not any(anomalous[31:36])  # the dip, and no second alert on recovery
    assert anomalous[36] and not any(anomalous[37:])  # the step, once


def test_warm_up_longer_than_the_window_ends():
    from agent.detect.baseline import FLOW, SeriesModel, SeriesSpec

    model = SeriesModel(SeriesSpec(FLOW, floor_absolute=1), window=10, warmup=20)
    for step in range(25):
        model.learn(3.0, model.judge("joined", 3.0, 2.0), step * 3600, 3600)
    verdict = model.judge("joined", 500.0, 2.0)
    assert not verdict.warming and verdict.anomalous


def test_groups_are_named_by_the_trait_that_gathered_them(relays):
    base, _ = relays
    arrivals = base.take(np.arange(24))
    arrivals.address = [f"10.1.{i // 12}.{i}" for i in range(24)]
    arrivals.operator = ["opA"] * 12 + ["opB"] * 12
    arrivals.nickname = [f"n{i}x{'abc'[i % 3]}y" for i in range(24)]
    network = RelayFacts(**{name: (np.concatenate([getattr(base, name)[24:], getattr(arrivals, name)])
                                   if isinstance(getattr(base, name), np.ndarray)
                                   else getattr(base, name)[24:] + getattr(arrivals, name))
                            for name in RelayFacts.__dataclass_fields__})
    # the arrivals compared with the rest of the network (issue 21: the network's share of a value weighs it)
    clusters = find_clusters(network, np.arange(len(network) - 24, len(network)), min_size=10)
    # relays declaring an operator are gathered by it first (issue 21), not as one /16 of two operators
    assert sorted(c.found_by for c in clusters) == [("operator", "opA"), ("operator", "opB")]
    assert sorted(c.shared["/24"] for c in clusters) == ["/24 10.1.0.0/24", "/24 10.1.1.0/24"]


def test_relays_without_a_country_are_not_a_country_flood(relays, settings):
    from agent.detect.relays import RelayChanges
    from agent.detect.rules import RuleWindows

    base, _ = relays
    arrivals = base.take(np.arange(60))
    arrivals.country = ["??"] * 60
    changes = RelayChanges(joined=np.arange(60), new=np.arange(60), previous_known=True, previous_size=6000)
    hits = RuleWindows().evaluate(arrivals, changes, 3600, settings.thresholds)
    assert {hit.rule for hit in hits} == {"new_relays"}  # DocTor's rule, not a per-country one


def test_the_live_path_logs_the_warm_up_and_keeps_its_state(tmp_path, caplog):
    """judge and record, as once and run use them: detection on a real consensus, state saved in the state
    directory, warm-up in the log."""
    import logging
    from dataclasses import replace as with_values
    from datetime import timedelta, timezone

    from agent.pipeline.judge import judge
    from agent.pipeline.record import Detectors, memory_of, record
    from agent.pipeline.state import State
    from agent.store.store import Store

    consensus = parse_data("consensus", "2020-02-29-10-00-00-consensus.xz")
    config = load_config(None, environ={})
    config = with_values(config, state_dir=tmp_path)
    # Fetched during the consensus's own period, as a live cycle is (a 2020 consensus fetched today is refused).
    fetched = consensus.valid_after.replace(tzinfo=timezone.utc) + timedelta(minutes=5)
    snapshot = with_values(snapshot_of(consensus), started_at=fetched, finished_at=fetched)
    state, detectors = State(tmp_path), Detectors(config)
    with caplog.at_level(logging.INFO, logger="agent.pipeline"):
        memory = memory_of(snapshot, state, detectors)
        result = judge(snapshot, memory, config, GeoIP.load(DATA / "geoip-excerpt"))
        record(result, Store.from_config(config), state, memory, detectors=detectors)
    assert any(f.check == "TorAnomalyDetectionWarmingUp" for f in result.findings)
    assert any(p.measurement == "tor_anomaly" for p in result.points)
    assert "anomaly detection is warming up: 0 of 48 periods learned" in caplog.text
    assert DetectorFile(tmp_path, config.detect.settings).load().periods == 1


def test_a_version_1_state_is_upgraded_keeping_what_it_learned(warmed):
    """Before the detectors were separate objects the engine held the baselines and rule windows itself."""
    replay, detector, _ = warmed
    old = Detector.__new__(Detector)
    old.__dict__.update(version=1, settings=detector.settings, relays=detector.relays,
                        series=detector.detectors["baseline"].series, rules=detector.detectors["rules"].windows,
                        last_time=detector.last_time, periods=detector.periods)
    upgraded, straight = pickle.loads(pickle.dumps(old)), copy.deepcopy(detector)
    assert upgraded.version == straight.version and list(upgraded.detectors) == list(straight.detectors)
    facts = copy.deepcopy(replay).period_facts(WARMED, Incident("vanish", WARMED))
    a, b = straight.update(facts), upgraded.update(copy.deepcopy(facts))
    assert [f.as_dict() for f in a.findings] == [f.as_dict() for f in b.findings] and firing(a)


class NewRelays:
    """A detector as a new module would add one: its settings, its state (a per-relay column), its finding."""

    name = "toy"
    checks = {"TorToyAnomaly": "More relays were seen for the first time than the toy allows"}
    STATE_VERSION = 1

    @dataclass(frozen=True)
    class Settings:
        most: int = setting("detect.rules.toy_most_new", 50, "positive_int")

    def __init__(self, settings):
        self.version, self.periods = self.STATE_VERSION, 0
        self.configure(settings)

    def configure(self, settings):
        self.settings = bind(self.Settings, settings)

    def score_one(self, period):
        first = int(np.count_nonzero(period.memory.column("toy_periods", np.int32)[period.rows] == 0))
        findings = [Finding("TorToyAnomaly", Severity.INFO, {}, self.checks["TorToyAnomaly"], f"{first} relays",
                            {"relays": first})] if first > self.settings.most and self.periods else []
        return Scores(findings, details=[first])

    def learn_one(self, period):
        period.memory.column("toy_periods", np.int32)[period.rows] += 1
        self.periods += 1

    @classmethod
    def label(cls, finding):
        return cls.name

    @classmethod
    def labels(cls):
        return [cls.name]


def test_a_detector_is_one_class_and_one_entry(relays, settings):
    replay, detector = Replay(*relays, seed=5), Detector(settings, DETECTORS + (NewRelays,))
    detector.relays.horizon = 3 * 3600  # relays gone for three periods are forgotten: the column shrinks too
    seen = set()
    for index in range(8):
        facts = replay.period_facts(index, None)
        seen.update(facts.relays.fingerprint)
        result = detector.update(facts)
        memory = detector.relays
        assert np.array_equal(memory.column("toy_periods", np.int32), memory.seen)
        assert not result.scores["toy"].findings
    assert len(detector.relays) < len(seen)  # relays were forgotten
    flood = detector.update(replay.period_facts(8, Incident("flood", 8)))
    [toy] = [f for f in flood.findings if f.check == "TorToyAnomaly"]
    assert toy.values["relays"] >= 120 and flood.scores["toy"].details == [toy.values["relays"]]
    restored = pickle.loads(pickle.dumps(detector))
    restored.configure(settings)  # as DetectorFile.load: DETECTORS is what runs
    assert list(restored.detectors) == [kind.name for kind in DETECTORS]
    restored.configure(settings, DETECTORS + (NewRelays,))  # added to DETECTORS: it starts learning
    assert restored.detectors["toy"].periods == 0 and restored.detectors["baseline"].series


def test_each_detector_declares_its_settings_as_the_loader_does():
    """Until the loader reads the detectors' declarations, both name each key: default and validation agree."""
    from agent.config.loader import SETTINGS

    loader = {each.path: each for each in SETTINGS}
    defaults = load_config(None, environ={}).detect.settings
    for kind in DETECTORS:
        for key, (default, converter) in declared(kind.Settings).items():
            assert (loader[key].default, loader[key].convert.__name__) == (default, converter), key
            assert defaults.value(key) == default, key
        assert bind(kind.Settings, defaults) == kind.Settings()
    assert bind(NewRelays.Settings, defaults).most == 50  # a key the loader does not know: the default
    assert detector_of(type("F", (), {"check": "TorToyAnomaly", "subjects": {}})) == ""


def test_flag_bits_cover_the_metrics_flags():
    from agent.metrics.relays import KNOWN_FLAGS

    assert set(KNOWN_FLAGS) <= set(FLAG_BITS)
    assert [FLAG_BITS[flag] for flag in ("Authority", "Valid")] == [1, 1 << 13]  # saved in the state: never moved


def test_the_detectors_load_without_river_or_the_metrics():
    import subprocess
    import sys

    code = ("import sys, agent.detect.engine, agent.detect.settings; "
            "print(sorted({'river', 'scipy', 'agent.metrics', 'agent.config'} & set(sys.modules)))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"


def test_rules_judge_a_period_without_learning_it(relays, settings):
    from agent.detect.relays import RelayChanges
    from agent.detect.rules import RuleWindows, churn_of, period_counts

    base, _ = relays
    arrivals = base.take(np.arange(30))
    changes = RelayChanges(joined=np.arange(30), new=np.arange(30), previous_known=True, previous_size=6000)
    windows, counts, churn = RuleWindows(), period_counts(arrivals, changes), churn_of(arrivals, changes)
    assert windows.judge(counts, churn, 3600, settings.thresholds) == []
    windows.learn(counts, churn, 3600)
    before = pickle.dumps(windows)
    hits = windows.judge(counts, churn, 1800, settings.thresholds)  # the hour now spans this period and the last
    assert [hit.rule for hit in hits] == ["new_relays"] and pickle.dumps(windows) == before
    assert windows.evaluate(arrivals, changes, 1800, settings.thresholds) == hits  # judge, then learn
    assert pickle.dumps(windows) != before


def test_a_period_longer_than_a_rules_window_scales_its_limit(relays, settings):
    """Eight-hourly snapshots (or the first period after a gap) hold eight hours of arrivals: 300 never-seen
    relays in 8 h is 37 an hour, under DocTor's 50; 500 in one 8-hour period is over it. Before, every such
    period broke the hourly limit (21 warnings per 1,000 periods on the 8-hourly Onionoo mirror)."""
    from agent.detect.relays import RelayChanges
    from agent.detect.rules import RuleWindows, churn_of, period_counts

    base, _ = relays

    def hits(count, period_seconds, elapsed=1.0):
        arrivals = base.take(np.arange(count))
        arrivals.country = ["??"] * count
        arrivals.address = [f"10.{i % 200}.{i // 200}.1" for i in range(count)]
        changes = RelayChanges(joined=np.arange(count), new=np.arange(count), previous_known=True,
                               previous_size=8000, elapsed_periods=elapsed)
        return [hit.rule for hit in RuleWindows().judge(
            period_counts(arrivals, changes), churn_of(arrivals, changes, period_seconds), period_seconds,
            settings.thresholds, elapsed)]

    assert hits(300, 8 * 3600) == [] and hits(300, 3600, elapsed=8) == []
    assert "new_relays" in hits(500, 8 * 3600) and hits(300, 3600) == ["new_relays"]


def test_per_relay_detectors_keep_quiet_during_the_warm_up(relays, settings):
    """On a new network every relay's weight moves in its first periods: no TorAnomalyRelays until warmed up."""
    replay, detector = Replay(*relays, seed=5), Detector(settings)
    first = copy.deepcopy(replay).period_facts(0, None).relays
    heaviest = [first.fingerprint[row] for row in np.argsort(-first.weight)[:60]]
    during, after = heaviest[:30], heaviest[30:]  # thirty relays' weights jump together in each phase
    for index in range(WARMUP + 3):
        facts = replay.period_facts(index, None)
        jumping = during if index == WARMUP - 5 else after if index == WARMUP + 2 else []
        rows = [row for row, fingerprint in enumerate(facts.relays.fingerprint) if fingerprint in jumping]
        facts.relays.weight[rows] *= 16
        result = detector.update(facts)
        jumps = [a for a in result.relay_anomalies if a.kind == "weight_jump"]
        if index == WARMUP - 5:
            assert len(jumps) >= 10 and "relay weight_jump" not in firing(result)  # seen, held back
        elif index == WARMUP + 2:
            assert len(jumps) >= 10 and "relay weight_jump" in firing(result)  # the same shape, warmed up
        else:
            assert "relay weight_jump" not in firing(result)
