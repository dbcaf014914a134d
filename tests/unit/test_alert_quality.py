"""Alert quality as data: alarms per 1,000 periods, mean time to resolve and flaps, from the alert history."""

import json

import pytest

from agent.alerts import quality as quality_module
from agent.alerts.dispatch import Alerting
from agent.alerts.quality import (
    FINDINGS,
    SUBSCRIPTIONS,
    CheckQuality,
    Episode,
    quality,
    quality_points,
    summarise,
)
from agent.cli.main import main
from agent.config.loader import load_config
from agent.metrics.catalogue import problems
from agent.model.alerts import Alert
from agent.model.errors import ConfigError
from agent.model.findings import Finding
from agent.pipeline.alert_ids import alert_ids
from agent.pipeline.state import State

HOUR = 3600
START = 1_700_000_400 - 1_700_000_400 % HOUR


def skew(authority="moria1"):
    return Finding("TorAuthorityClockSkew", "warning", {"authority": authority}, "skew", "skewed", {})


def stale():
    return Finding("TorConsensusStale", "critical", {}, "stale", "the consensus is stale", {})


def feed(alerting: Alerting, periods: list[list[Finding]], start: int = START, step: int = HOUR) -> None:
    """One list of findings per period, alerted on as the daemon does (its valid-after as the period)."""
    for index, findings in enumerate(periods):
        alerting.on_period(findings, None, period=start + index * step)


@pytest.fixture
def state(tmp_path):
    opened = State(tmp_path / "state")
    yield opened
    opened.close()


@pytest.fixture
def alerting(state):
    return Alerting(load_config(None, environ={}), state.db, environ={})


def test_a_check_firing_every_other_period_flaps_every_time(state, alerting):
    feed(alerting, [[skew()] if index % 2 == 0 else [] for index in range(10)])
    [clock_skew] = quality(state.db, flap_periods=3)
    assert (clock_skew.check, clock_skew.scope) == ("TorAuthorityClockSkew", FINDINGS)
    assert clock_skew.periods_observed == 10
    assert (clock_skew.alarms, clock_skew.resolved, clock_skew.flaps, clock_skew.active) == (5, 5, 5, 0)
    assert clock_skew.alarms_per_1000_periods == 500.0
    assert clock_skew.mean_seconds_to_resolve == HOUR


def test_a_long_alarm_is_no_flap_unless_the_window_says_so(state, alerting):
    # Four periods firing, then gone; another alarm still active at the end; a quiet check alongside.
    feed(alerting, [[skew()]] * 4 + [[]] * 4 + [[skew(), stale()]])
    [clock_skew, consensus_stale] = sorted(quality(state.db, flap_periods=3), key=lambda q: q.check)
    assert (clock_skew.alarms, clock_skew.resolved, clock_skew.flaps, clock_skew.active) == (2, 1, 0, 1)
    assert clock_skew.mean_seconds_to_resolve == 4 * HOUR
    assert [q.flaps for q in quality(state.db, flap_periods=4) if q.check == "TorAuthorityClockSkew"] == [1]
    assert (consensus_stale.alarms, consensus_stale.mean_seconds_to_resolve) == (1, None)
    assert clock_skew.periods_observed == consensus_stale.periods_observed == 9


def test_each_subject_is_its_own_alarm_and_the_check_adds_them_up(state, alerting):
    feed(alerting, [[skew("moria1"), skew("tor26")], [skew("tor26")], []])
    [clock_skew] = quality(state.db, flap_periods=1)
    assert (clock_skew.alarms, clock_skew.flaps) == (2, 1)  # moria1 went after 1 period, tor26 after 2
    assert clock_skew.mean_seconds_to_resolve == 1.5 * HOUR


def test_periods_observed_are_the_periods_the_engine_evaluated_not_wall_time(state, alerting):
    """Three periods a week apart are three periods; a rerun of a period is not a fourth."""
    feed(alerting, [[skew()], [], [skew()]], step=7 * 24 * HOUR)
    alerting.on_period([], None, period=START + 14 * 24 * HOUR)  # the last period again, after a crash
    [clock_skew] = quality(state.db, flap_periods=3)
    assert clock_skew.periods_observed == 3 and clock_skew.alarms == 2 and clock_skew.active == 1
    assert clock_skew.alarms_per_1000_periods == pytest.approx(2000 / 3)
    assert clock_skew.mean_seconds_to_resolve == 7 * 24 * HOUR  # a week: from its period to the one it was gone in


def test_subscription_alerts_count_only_the_periods_their_scope_was_evaluated(state, alerting):
    down = Alert("TorRelayDown", "warning", {"relay": "A" * 40}, "down", "d", recipient="op@example.org")
    alerting.on_period([], None, period=START)  # subscriptions not evaluated: not a period of theirs
    alerting.on_period([], [down], period=START + HOUR)
    alerting.on_period([], [], period=START + 2 * HOUR)
    [relay_down] = quality(state.db, flap_periods=3)
    assert (relay_down.check, relay_down.scope, relay_down.periods_observed) == ("TorRelayDown", SUBSCRIPTIONS, 2)
    assert (relay_down.alarms, relay_down.flaps, relay_down.alarms_per_1000_periods) == (1, 1, 500.0)


def test_mean_time_to_resolve_from_known_times_and_the_flap_boundary():
    episodes = [
        Episode("TorX", FINDINGS, onset=0, resolved=7200, periods=2),
        Episode("TorX", FINDINGS, onset=10_000, resolved=22_000, periods=3),  # exactly N periods: a flap
        Episode("TorX", FINDINGS, onset=30_000, resolved=44_400, periods=4),  # one more: not a flap
        Episode("TorX", FINDINGS, onset=50_000, resolved=None, periods=9),  # active: no time to resolve yet
        Episode("TorY", FINDINGS, onset=3_600, resolved=0, periods=1),  # clock time then valid-after: 0, not < 0
    ]
    by_check = {q.check: q for q in summarise(episodes, {FINDINGS: 400}, flap_periods=3)}
    assert by_check["TorX"] == CheckQuality("TorX", FINDINGS, 400, alarms=4, resolved=3, flaps=2, active=1,
                                            mean_seconds_to_resolve=(7200 + 12_000 + 14_400) / 3)
    assert by_check["TorX"].alarms_per_1000_periods == 10.0
    assert by_check["TorY"].mean_seconds_to_resolve == 0
    assert [q.check for q in summarise(episodes, {FINDINGS: 400}, 3)] == ["TorX", "TorY"]  # most alarms first
    assert summarise(episodes, {}, 3)[0].alarms_per_1000_periods == 0.0  # no period: no rate, no division by 0


def test_history_keeps_the_newest_periods_only(state, alerting, monkeypatch):
    monkeypatch.setattr(quality_module, "HISTORY_PERIODS", 4)
    feed(alerting, [[skew()], [], [skew()], [skew()], [], [], [skew()]])
    [clock_skew] = quality(state.db, flap_periods=3)
    assert clock_skew.periods_observed == 4  # periods 3..6
    assert clock_skew.alarms == 1 and clock_skew.active == 1  # period 2's alarm began before them: not counted
    # Periods 0's and 2's alarms, resolved and begun before the kept periods, are pruned.
    assert state.db.execute("SELECT onset FROM alert_history").fetchall() == [(START + 6 * HOUR,)]


def test_an_alert_already_active_when_history_began_is_no_alarm_of_it(state, alerting):
    """Alerts tracked before the upgrade: their onset was not observed, so they count from their resolution on."""
    alerting.book.advance([Alert("TorX", "warning", {}, "s", "d")], START - HOUR, alerting.policy)  # no history
    feed(alerting, [[Finding("TorX", "warning", {}, "s", "d", {})], [skew()]])
    assert [(q.check, q.alarms) for q in quality(state.db, 3)] == [("TorAuthorityClockSkew", 1)]


def test_an_alert_the_book_lost_and_found_again_is_a_new_alarm(state, alerting):
    """A row set aside as unreadable: the book starts the alert afresh, so its history does too."""
    feed(alerting, [[skew()], [skew()]])
    state.db.execute("DELETE FROM alerts")
    feed(alerting, [[skew()]], start=START + 2 * HOUR)
    [clock_skew] = quality(state.db, 3)
    assert (clock_skew.alarms, clock_skew.resolved, clock_skew.active) == (2, 1, 1)
    assert clock_skew.mean_seconds_to_resolve == 2 * HOUR


def test_a_damaged_history_row_is_left_out_of_the_figures(state, alerting):
    feed(alerting, [[skew()], []])
    state.db.execute("INSERT INTO alert_history VALUES ('k', 'TorX', 'findings', ?, 'soon', 1)", (START,))
    assert [(q.check, q.alarms) for q in quality(state.db, 3)] == [("TorAuthorityClockSkew", 1)]


def test_self_metrics_fit_the_catalogue(state, alerting):
    feed(alerting, [[skew(), stale()], [stale()]])
    points = quality_points(quality(state.db, 3), "vantage-1", START + HOUR)
    assert problems(points) == []
    fields = {p.tags["check"]: p.fields for p in points}
    assert {p.measurement for p in points} == {"allium_agent_alert_quality"}
    assert fields["TorAuthorityClockSkew"] == {"alarms_per_1000_periods": 500.0, "alarms": 1.0, "flaps": 1.0,
                                               "mean_time_to_resolve_seconds": 3600.0, "periods_observed": 2.0}
    assert "mean_time_to_resolve_seconds" not in fields["TorConsensusStale"]  # none resolved yet


def test_the_daemon_writes_them_with_its_self_metrics(tmp_path):
    from agent.loop.runner import PeriodRunner
    from agent.model.time import utc_now
    from agent.pipeline.judge import PeriodResult
    from agent.store.store import Store

    path = tmp_path / "agent.yaml"
    path.write_text(f"state_dir: {tmp_path / 'state'}\nvantage: v\nalerts:\n  flap_periods: 1\n")
    config = load_config(path, environ={})
    state = State(config.state_dir)
    runner = PeriodRunner(config, state, Store.from_config(config), None)  # type: ignore[arg-type]
    feed(runner.alerting, [[skew()], [skew()], []])
    summary = {"started_at": utc_now().isoformat(), "fetch_failures": 0, "documents_rejected": 0}
    points = runner._self_metrics(summary, PeriodResult(START + 2 * HOUR, [], [], None, {}), 3)
    assert problems(points) == []
    agent, *quality = points
    known = alert_ids()
    assert agent.fields["points"] == 1 + len(quality) == 1 + sum(len(ids) for ids in known.values())
    by_check = {point.tags["check"]: point for point in quality}
    clock_skew = by_check["TorAuthorityClockSkew"]
    assert (clock_skew.measurement, clock_skew.tags) == ("allium_agent_alert_quality",
                                                         {"vantage": "v", "check": "TorAuthorityClockSkew"})
    assert clock_skew.fields["flaps"] == 0 and clock_skew.fields["periods_observed"] == 3  # 2 periods > 1
    # a check that never fired is there with no alarm, so a dashboard shows it quiet rather than missing
    quiet = by_check["TorConsensusStale"]
    assert quiet.fields["alarms"] == 0 and quiet.fields["periods_observed"] == 3
    assert by_check["TorRelayDown"].fields["alarms"] == 0 and by_check["TorAnomalyIncident"].fields["alarms"] == 0
    state.close()


def test_flap_periods_is_a_setting_with_a_default(tmp_path):
    assert load_config(None, environ={}).alerts.flap_periods == 3
    path = tmp_path / "agent.yaml"
    path.write_text("alerts:\n  flap_periods: 0\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert caught.value.problems == ["alerts.flap_periods: must be a positive whole number, got 0"]


def test_alerts_status_shows_the_table_and_the_json(tmp_path, capsys):
    path = tmp_path / "agent.yaml"
    path.write_text(f"state_dir: {tmp_path / 'state'}\n")
    state = State(tmp_path / "state")
    alerting = Alerting(load_config(path, environ={}), state.db, environ={})
    feed(alerting, [[skew()] if index % 2 == 0 else [] for index in range(10)]
         + [[stale()]] * 4 + [[skew(), stale()]] + [[]] * 5)
    state.close()

    assert main(["alerts", "status", "--config", str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["quality"]["flap_periods"] == 3 and report["quality"]["periods_observed"] == {FINDINGS: 20}
    checks = report["quality"]["checks"]
    known = alert_ids()
    assert sorted(q["check"] for q in checks) == sorted(known[FINDINGS] + known[SUBSCRIPTIONS])
    assert all(q["alarms"] == 0 and q["flaps"] == 0 for q in checks[2:])  # the quiet ones come last
    assert checks[:2] == [
        {"check": "TorAuthorityClockSkew", "scope": FINDINGS, "periods_observed": 20, "alarms": 6,
         "alarms_per_1000_periods": 300.0, "mean_time_to_resolve_seconds": 3600.0, "resolved": 6, "flaps": 6,
         "active": 0},
        {"check": "TorConsensusStale", "scope": FINDINGS, "periods_observed": 20, "alarms": 1,
         "alarms_per_1000_periods": 50.0, "mean_time_to_resolve_seconds": 18_000.0, "resolved": 1, "flaps": 0,
         "active": 0}]
    assert report["active"] == [] and report["deliveries"] == {"waiting": 0, "delivered": 0, "given_up": 0}

    assert main(["alerts", "status", "--config", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    start = lines.index("alert quality (a flap: an alarm gone within 3 periods):")
    assert lines[start + 1:] == [
        "check                  alarms/1000 periods  mean time to resolve  flaps  periods observed",
        "TorAuthorityClockSkew                300.0  1 h                       6                20",
        "TorConsensusStale                     50.0  5 h                       0                20",
        f"no alarm from the {len(checks) - 2} other checks and alert kinds (--json lists them)"]


def test_alerts_status_without_history_says_so(tmp_path, capsys):
    path = tmp_path / "agent.yaml"
    path.write_text(f"state_dir: {tmp_path / 'state'}\n")
    assert main(["alerts", "status", "--config", str(path)]) == 0
    assert "alert quality: no alarm in the 0 periods observed from any of the" in capsys.readouterr().out


def test_the_dashboard_panel_shows_alarms_and_flaps_per_check():
    from agent.dashboards import queries
    from agent.dashboards.spec import ALERTS

    [panel] = [panel for panel in ALERTS.panels if panel.title == "Alert quality"]
    assert [queries.promql(series) for series in panel.series] == [
        "last_over_time(allium_agent_alert_quality_alarms_per_1000_periods[70m])",
        "last_over_time(allium_agent_alert_quality_flaps[70m])"]
    assert [queries.influxql(series) for series in panel.series] == [
        'SELECT last("alarms_per_1000_periods") FROM "allium_agent_alert_quality" WHERE $timeFilter GROUP BY "check"',
        'SELECT last("flaps") FROM "allium_agent_alert_quality" WHERE $timeFilter GROUP BY "check"']
    assert [queries.influx_legend(series) for series in panel.series] == [
        "$tag_check alarms per 1,000 periods", "$tag_check flaps"]
