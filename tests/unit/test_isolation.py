"""Whatever one authority serves can cost only that authority's records; a consensus's times must be possible.

Judging: a document that breaks metrics or a check is found, rejected by
name with the reason, and the period is judged without it (a real vote that
breaks metrics, and stand-ins for the class: a metric or check made to fail
on one authority's document). Time: a live consensus dated far ahead of the
clock (or long expired) is refused with a critical finding, never becomes
the state's last period, and the next run is scheduled within a retry.
"""

import copy
import dataclasses
import logging
from datetime import datetime, timedelta, timezone

import pytest

import agent.loop.runner as runner_module
import agent.metrics.authority as authority_metrics
import agent.metrics.period as period_metrics
import agent.pipeline.judge as judge_module
from agent.checks.catalog import CHECKS
from agent.config.loader import load_config
from agent.loop.once import once_from
from agent.loop.runner import FAILED, NOT_YET, PROCESSED, PeriodRunner
from agent.metrics.geoip import GeoIP
from agent.model.authorities import from_consensus
from agent.model.snapshot import AuthorityView, DocKind, FetchRecord, Outcome, SignatureCheck, SignatureReport, Snapshot
from agent.model.time import unix
from agent.pipeline.judge import Memory, judge
from agent.pipeline.state import State
from agent.store.store import Store
from tests.conftest import DATA, parse_data, read_data

GEOIP = GeoIP.load(DATA / "geoip-excerpt")
CONFIG = load_config(None, environ={})
NOW_2016 = datetime(2016, 9, 20, 13, 20)
HOUR = timedelta(hours=1)


@pytest.fixture(scope="module")
def consensus():
    return parse_data("consensus", "2016-09-20-13-00-00-consensus.xz")


@pytest.fixture(scope="module")
def vote():
    return parse_data("vote", "2016-09-20-13-00-00-vote-maatuska.xz")


def signed(authorities) -> SignatureReport:
    """A report as if every watched authority signed validly (the edited documents' real signatures fail)."""
    return SignatureReport(tuple(SignatureCheck(a.v3ident, "sha1", True) for a in authorities))


def live_snapshot(consensus_of, votes=None, started_at=NOW_2016, descriptors=()) -> Snapshot:
    """Every authority listed in the consensus serves ``consensus_of[nickname]`` (default: the first given)."""
    default = next(iter(consensus_of.values()))
    authorities = from_consensus(default)
    views, records = {}, []
    for authority in authorities:
        served = consensus_of.get(authority.nickname, default)
        view = AuthorityView(authority, consensus=served, consensus_signatures=signed(authorities))
        view.vote = (votes or {}).get(authority.nickname)
        views[authority.nickname] = view
        for kind in (DocKind.CONSENSUS, DocKind.VOTE):
            records.append(FetchRecord(authority.nickname, kind, f"http://{authority.nickname}/{kind.value}",
                                       started_at, Outcome.OK, 200, 0.1))
    if descriptors:
        records.append(FetchRecord(authorities[0].nickname, DocKind.SERVER_DESCRIPTORS, "http://d", started_at,
                                   Outcome.OK, 200, 0.1))
    return Snapshot("test", started_at, started_at, authorities, views, records, server_descriptors=list(descriptors))


def with_too_many_flags(vote):
    """maatuska's real vote, edited to know 70 flags: parsers accept it; flag agreement's 64-bit masks overflow."""
    hostile = copy.copy(vote)
    hostile.known_flags = sorted(set(vote.known_flags) | {f"Flag{i}" for i in range(70)})
    return hostile


def measurements(points, measurement):
    return {tuple(sorted(p.tags.items())): p.fields for p in points if p.measurement == measurement}


def rejected_names(result):
    return sorted((record.authority, record.kind.value) for record in result.rejected)


# --- a document that breaks judging costs only its authority's records --------------------------------------

def test_a_real_vote_that_breaks_metrics_is_rejected_and_the_healthy_votes_are_judged(consensus, vote, tmp_path):
    # Before: judge raised OverflowError and the whole period (6,000+ relays, every authority) was lost.
    votes = {"maatuska": vote, "moria1": with_too_many_flags(vote)}
    snapshot = live_snapshot({"x": consensus}, votes)
    records_before = [dataclasses.replace(record) for record in snapshot.records]

    result = judge(snapshot, Memory(), CONFIG, GEOIP)

    assert result.has_consensus and result.time == unix(consensus.valid_after)
    assert rejected_names(result) == [("moria1", "vote")]
    reason = result.rejected[0].error
    assert "OverflowError" in reason and "_flag_agreement" in reason and result.rejected[0].rejected
    authorities = measurements(result.points, "tor_authority")
    assert authorities[(("authority", "maatuska"),)]["vote_relays"] == len(vote.routers)  # the healthy vote counts
    assert "vote_relays" not in authorities[(("authority", "moria1"),)]
    assert sum(1 for p in result.points if p.measurement == "tor_relay") == len(consensus.routers)
    assert any(f.check == "TorAuthorityUnreachable" and f.subjects == {"authority": "moria1", "document": "vote"}
               and "OverflowError" in f.description for f in result.findings)
    assert snapshot.records == records_before and snapshot.views["moria1"].vote is votes["moria1"]  # pure

    # once: the period is recorded (before: nothing was)
    config = _config(tmp_path)
    state, store = State(config.state_dir), Store.from_config(config)
    cycle = once_from(snapshot, config, state, store, GEOIP)
    lines = [line for record in store.outbox.pending() for line in record.lines]
    assert sum(1 for line in lines if line.startswith("tor_relay,")) == len(consensus.routers)
    assert any(r.rejected and r.authority == "moria1" for r in cycle.snapshot.records)


def _config(tmp_path):
    path = tmp_path / "agent.yaml"
    path.write_text(f"state_dir: {tmp_path / 'state'}\nvantage: test\ndetect: {{enabled: false}}\n")
    return load_config(path, environ={})


def _raising_for(culprit, real):
    def stand_in(document, *args, **kwargs):
        if document is culprit:
            raise ValueError(f"stand-in failure on {id(culprit)}")
        return real(document, *args, **kwargs)
    return stand_in


def test_a_metric_failing_on_one_vote_costs_only_that_vote(consensus, vote, monkeypatch, caplog):
    votes = {name: copy.copy(vote) for name in ("maatuska", "moria1", "tor26", "longclaw")}
    monkeypatch.setattr(authority_metrics, "_vote_fields", _raising_for(votes["tor26"], authority_metrics._vote_fields))
    with caplog.at_level(logging.WARNING, logger="agent.pipeline.judge"):
        result = judge(live_snapshot({"x": consensus}, votes), Memory(), CONFIG, GEOIP)
    assert rejected_names(result) == [("tor26", "vote")]
    assert "ValueError: stand-in failure" in result.rejected[0].error
    voted = {tags[0][1] for tags, fields in measurements(result.points, "tor_authority").items()
             if "vote_relays" in fields}
    assert voted == {"maatuska", "moria1", "longclaw"}
    assert len([r for r in caplog.records if "rejected" in r.getMessage()]) == 1  # logged once, with the reason
    assert "tor26's vote" in caplog.text and "stand-in failure" in caplog.text


def test_a_check_failing_on_one_vote_rejects_it_and_keeps_the_checks_findings(consensus, vote, monkeypatch):
    votes = {name: copy.copy(vote) for name in ("maatuska", "moria1", "tor26")}
    culprit = votes["moria1"]
    flag_counts = next(c for c in CHECKS if c.id == "TorAuthorityFlagCountDiffers")

    def run(context):
        if any(view.vote is culprit for view in context.snapshot.views.values()):
            raise KeyError("stand-in")
        return flag_counts.run(context)

    monkeypatch.setattr(judge_module, "CHECKS", tuple(dataclasses.replace(c, run=run) if c is flag_counts else c
                                                      for c in CHECKS))
    result = judge(live_snapshot({"x": consensus}, votes), Memory(), CONFIG, GEOIP)
    assert rejected_names(result) == [("moria1", "vote")]
    assert "check TorAuthorityFlagCountDiffers failed: KeyError" in result.rejected[0].error
    assert not any("itself failed" in f.description for f in result.findings)


def test_a_check_failing_on_every_vote_is_the_checks_fault_and_rejects_nothing(consensus, vote, monkeypatch,
                                                                                caplog):
    votes = {name: copy.copy(vote) for name in ("maatuska", "moria1", "tor26")}
    flag_counts = next(c for c in CHECKS if c.id == "TorAuthorityFlagCountDiffers")

    def run(context):
        if context.snapshot.votes():
            raise KeyError("a bug in the check")
        return []

    monkeypatch.setattr(judge_module, "CHECKS", tuple(dataclasses.replace(c, run=run) if c is flag_counts else c
                                                      for c in CHECKS))
    with caplog.at_level(logging.WARNING, logger="agent.pipeline.judge"):
        result = judge(live_snapshot({"x": consensus}, votes), Memory(), CONFIG, GEOIP)
    assert result.rejected == []
    assert len(measurements(result.points, "tor_authority_flag")) > 0  # every vote still judged
    assert [f.description for f in result.findings if f.check == "TorAuthorityFlagCountDiffers"] == \
        ["the check itself failed: see the agent log"]
    assert len(caplog.records) == 1 and "a bug in the check" in caplog.text


def test_several_culprits_of_several_kinds_are_each_rejected(consensus, vote, monkeypatch):
    descriptors = list(parse_data("server-descriptors", "server-descriptors-2"))
    votes = {name: copy.copy(vote) for name in ("maatuska", "moria1", "tor26", "longclaw")}
    monkeypatch.setattr(authority_metrics, "_vote_fields", _raising_for(votes["tor26"], authority_metrics._vote_fields))
    monkeypatch.setattr(judge_module, "table_of", _broken_by_descriptors(judge_module.table_of))
    snapshot = live_snapshot({"x": consensus}, votes, descriptors=descriptors)
    snapshot.views["longclaw"].vote = with_too_many_flags(vote)
    result = judge(snapshot, Memory(), CONFIG, GEOIP)
    assert rejected_names(result) == [("dannenberg", "server-descriptors"), ("longclaw", "vote"), ("tor26", "vote")]
    assert result.has_consensus and result.snapshot.server_descriptors == []


def _broken_by_descriptors(real):
    def table_of(snapshot, consensus, geoip):
        if snapshot.server_descriptors:
            raise IndexError("stand-in: a descriptor breaks the relay table")
        return real(snapshot, consensus, geoip)
    return table_of


def test_a_consensus_that_breaks_judging_leaves_the_others(monkeypatch):
    ten = parse_data("consensus", "2020-02-29-10-00-00-consensus.xz")
    eleven = parse_data("consensus", "2020-02-29-11-00-00-consensus.xz")
    real = period_metrics.network_points

    def network_points(consensus, *args, **kwargs):
        if consensus is eleven:
            raise ZeroDivisionError("stand-in")
        return real(consensus, *args, **kwargs)

    monkeypatch.setattr(period_metrics, "network_points", network_points)
    snapshot = live_snapshot({"x": ten, "moria1": eleven}, started_at=datetime(2020, 2, 29, 11, 20))
    result = judge(snapshot, Memory(), CONFIG, GEOIP)
    assert rejected_names(result) == [("moria1", "consensus")]
    assert result.time == unix(ten.valid_after) and result.has_consensus


def test_when_nothing_helps_only_the_fetch_records_are_kept(consensus, monkeypatch):
    def health_points(*args, **kwargs):
        raise RuntimeError("stand-in: always")

    monkeypatch.setattr(judge_module, "health_points", health_points)
    snapshot = live_snapshot({"x": consensus})
    result = judge(snapshot, Memory(), CONFIG, GEOIP)
    assert not result.has_consensus and result.findings == [] and result.time == unix(snapshot.started_at)
    assert {p.measurement for p in result.points} == {"tor_authority_fetch"}
    assert len(result.points) == len(snapshot.records)


def test_detection_learns_once_from_the_period_as_judged(consensus, vote, monkeypatch):
    class Counting:
        calls = 0

        def update(self, facts):
            Counting.calls += 1
            raise RuntimeError("no detector here")

    votes = {"maatuska": vote, "moria1": with_too_many_flags(vote)}
    monkeypatch.setattr("agent.detect.facts.facts_of", lambda *args: None)
    judge(live_snapshot({"x": consensus}, votes), Memory(detector=Counting()), CONFIG, GEOIP)
    assert Counting.calls == 1


def test_an_archived_period_names_the_rejected_vote_without_inventing_a_fetch(consensus, vote):
    snapshot = live_snapshot({"x": consensus}, {"maatuska": with_too_many_flags(vote)})
    archived = dataclasses.replace(snapshot, records=[], archived_consensus=consensus,
                                   archived_signatures=signed(snapshot.authorities))
    result = judge(archived, Memory(), CONFIG, GEOIP)
    assert rejected_names(result) == [("maatuska", "vote")] and result.snapshot.records == []
    assert result.time == unix(consensus.valid_after) and result.has_consensus


# --- a consensus dated impossibly far from now is refused ------------------------------------------------------

ELEVEN = "2020-02-29 11:00:00", "2020-02-29 12:00:00", "2020-02-29 14:00:00"


@pytest.fixture(scope="module")
def eleven_text():
    return read_data("2020-02-29-11-00-00-consensus.xz").decode()


def dated(text, valid_after, period=HOUR):
    """The 2020-02-29 11:00 consensus with its header's times moved (its entries' dates stay)."""
    for keyword, old, new in zip(("valid-after", "fresh-until", "valid-until"), ELEVEN,
                                 (valid_after, valid_after + period, valid_after + 3 * period)):
        text = text.replace(f"\n{keyword} {old}\n", f"\n{keyword} {new:%Y-%m-%d %H:%M:%S}\n")
    document = parse_data_text(text)
    assert document.valid_after == valid_after
    return document


def parse_data_text(text):
    from agent.parse.documents import parse_document

    return parse_document(DocKind.CONSENSUS, text.encode(), "tests/data (dates edited)")


def this_hour() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None, minute=0, second=0, microsecond=0)


class Daemon:
    """A PeriodRunner whose collect returns the given snapshots, its alerts captured."""

    def __init__(self, tmp_path, monkeypatch):
        self.config = _config(tmp_path)
        self.state = State(self.config.state_dir)
        self.runner = PeriodRunner(self.config, self.state, Store.from_config(self.config), GEOIP)
        self.snapshots, self.alerted = [], []
        monkeypatch.setattr(runner_module, "collect", lambda *args, **kwargs: self.snapshots.pop(0))
        monkeypatch.setattr(self.runner.alerting, "on_period",
                            lambda findings, *rest: self.alerted.append(findings) or [])
        monkeypatch.setattr(self.state, "last_alerted", lambda: 0)  # each failed cycle alerts (not once an hour)

    def cycle(self, *consensuses):
        self.snapshots.append(live_snapshot(dict(zip(("x", "moria1"), consensuses)),
                                            started_at=datetime.now(timezone.utc)))
        return self.runner.cycle()


def impossible(findings):
    return [f for f in findings if f.check == "TorConsensusTimeImpossible"]


@pytest.mark.parametrize("when", [timedelta(days=365), timedelta(days=-3)], ids=["a-year-ahead", "expired-days-ago"])
def test_a_consensus_dated_impossibly_is_refused_and_never_moves_the_state(tmp_path, monkeypatch, eleven_text,
                                                                            when):
    # Before: a year ahead was processed, last_processed moved a year ahead and the next run was a year away.
    daemon = Daemon(tmp_path, monkeypatch)
    current = dated(eleven_text, this_hour())
    assert daemon.cycle(current).status == PROCESSED
    last = daemon.state.last_processed()
    assert last == unix(current.valid_after)

    before = datetime.now(timezone.utc)
    outcome = daemon.cycle(dated(eleven_text, this_hour() + when))
    assert outcome.status == FAILED and daemon.state.last_processed() == last
    assert outcome.next_run <= before + timedelta(seconds=CONFIG.schedule.retry_seconds + 60)
    hits = impossible(daemon.alerted[-1])
    assert len(hits) == len(from_consensus(current)) and {f.severity for f in hits} == {"critical"}
    assert all(f.subjects["document"] == "consensus" for f in hits)
    assert outcome.summary["documents_rejected"] == len(hits)
    assert all("refused for impossible times" in line for line in outcome.summary["rejected"])


def test_one_authority_serving_a_future_consensus_does_not_stop_the_current_period(tmp_path, monkeypatch,
                                                                                  eleven_text):
    daemon = Daemon(tmp_path, monkeypatch)
    current = dated(eleven_text, this_hour())
    outcome = daemon.cycle(current, dated(eleven_text, this_hour() + timedelta(days=30)))
    assert outcome.status == PROCESSED and daemon.state.last_processed() == unix(current.valid_after)
    assert [f.subjects["authority"] for f in impossible(daemon.alerted[-1])] == ["moria1"]
    assert outcome.next_run <= datetime.now(timezone.utc) + HOUR + timedelta(minutes=1)


def test_a_period_longer_than_a_day_is_refused(tmp_path, monkeypatch, eleven_text):
    daemon = Daemon(tmp_path, monkeypatch)
    outcome = daemon.cycle(dated(eleven_text, this_hour(), period=timedelta(days=365)))
    assert outcome.status == FAILED and daemon.state.last_processed() is None
    assert outcome.next_run <= datetime.now(timezone.utc) + timedelta(seconds=CONFIG.schedule.retry_seconds + 60)
    assert "longer than a day" in impossible(daemon.alerted[-1])[0].description


def test_a_state_left_in_the_future_is_replaced_by_the_current_period(tmp_path, monkeypatch, eleven_text):
    # Before: every current period was "not yet" (older than the state's last one), for a year.
    daemon = Daemon(tmp_path, monkeypatch)
    daemon.state.record_processed(unix(this_hour() + timedelta(days=365)), 3600, 0)
    current = dated(eleven_text, this_hour())
    assert daemon.cycle(current).status == PROCESSED
    assert daemon.state.last_processed() == unix(current.valid_after)


def test_a_stale_consensus_already_recorded_is_polled_at_the_retry_interval(tmp_path, monkeypatch, eleven_text):
    # Before: its next period being overdue, the runner asked again every second (for up to a day).
    daemon = Daemon(tmp_path, monkeypatch)
    stale = dated(eleven_text, this_hour() - timedelta(hours=20))
    assert daemon.cycle(stale).status == PROCESSED
    before = datetime.now(timezone.utc)
    outcome = daemon.cycle(stale)
    assert outcome.status == NOT_YET
    assert outcome.next_run >= before + timedelta(seconds=CONFIG.schedule.retry_seconds - 1)


def test_a_newest_consensus_that_breaks_judging_is_passed_over_by_the_daemon(tmp_path, monkeypatch, eleven_text):
    daemon = Daemon(tmp_path, monkeypatch)
    previous, newest = dated(eleven_text, this_hour() - HOUR), dated(eleven_text, this_hour())
    real = period_metrics.network_points
    monkeypatch.setattr(period_metrics, "network_points", lambda consensus, *args: real(consensus, *args)
                        if consensus is not newest else 1 / 0)
    retry = timedelta(seconds=CONFIG.schedule.retry_seconds + 60)
    first = daemon.cycle(previous, newest)  # moria1's newest breaks metrics; the others' previous is recorded
    assert first.status == PROCESSED and daemon.state.last_processed() == unix(previous.valid_after)
    assert first.next_run <= datetime.now(timezone.utc) + retry and first.summary["documents_rejected"] == 1
    again = daemon.cycle(previous, newest)  # nothing new to record: retried, the state stays
    assert again.status == FAILED and daemon.state.last_processed() == unix(previous.valid_after)
    assert again.next_run <= datetime.now(timezone.utc) + retry
    assert any(f.check == "TorAuthorityUnreachable" and "ZeroDivisionError" in f.description
               for f in daemon.alerted[-1])


# --- classes of failure the judge fuzzer (tests/unit/test_fuzz_judge.py) found -----------------------------------

def test_a_vote_listing_no_consensus_methods_is_reported_not_a_failed_check(consensus, vote):
    # Before: min() of an empty sequence, so TorConsensusMethodUnsupported failed for every authority.
    silent = copy.copy(vote)
    silent.consensus_methods = []
    result = judge(live_snapshot({"x": consensus}, {"maatuska": silent, "moria1": vote}), Memory(), CONFIG, GEOIP)
    hits = [f for f in result.findings if f.check == "TorConsensusMethodUnsupported"]
    assert [(f.subjects, f.description.endswith("(it supports none)")) for f in hits] == \
        [({"authority": "maatuska"}, True)]
    assert result.rejected == []
