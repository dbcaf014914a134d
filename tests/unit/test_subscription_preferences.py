"""Per-subscription preferences: validation, storage, the alert engine honouring them, and the pages' endpoints."""

import re
from datetime import datetime, timezone

import pytest

from agent.alerts.dispatch import Alerting
from agent.config.loader import load_config
from agent.model.errors import SubscriptionError
from agent.pipeline.state import State
from agent.subscriptions.store import (
    ALERT_KINDS,
    DEFAULTS,
    FLAG_CHOICES,
    Preferences,
    SubscriptionStore,
    parse_preferences,
)
from agent.subscriptions.watch import RelayWatch
from agent.web.pages import STYLE_HASH
from tests.unit.test_subscriptions import NOW, SETTINGS, A, consensus_of, descriptor, entry, snapshot_of
from tests.unit.test_web_hardening import PUBLIC, client_at, make_app, queued, statements_of

PERIOD = int(NOW.replace(tzinfo=timezone.utc).timestamp())  # the test consensus' valid-after
CONFIGURED_FLAGS = [flag for flag in SETTINGS.flags if flag in FLAG_CHOICES]  # Running is TorRelayDown's
HTML = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}


# --- validation -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fields, problem", [
    ({"kinds": ["TorRelayDown", "Everything"]}, "kinds: unknown 'Everything'"),
    ({"kinds": []}, "kinds: choose at least one"),
    ({"kinds": 5}, "kinds: a list of names"),
    ({"flags": ["Running"]}, "flags: unknown 'Running'"),
    ({"down_hours": "169"}, "down_hours: hours a relay must be down .* from 0 to 168, got '169'"),
    ({"down_hours": "-1"}, "down_hours:"),
    ({"down_hours": "nan"}, "down_hours:"),
    ({"down_hours": True}, "down_hours:"),
    ({"low_bandwidth_kbytes": "fast"}, "low_bandwidth_kbytes:"),
    ({"weight_drop_percent": 0}, "weight_drop_percent:"),
    ({"weight_drop_hours": [1]}, "weight_drop_hours:"),
])
def test_bad_preferences_are_refused_naming_the_field(fields, problem):
    with pytest.raises(SubscriptionError, match=problem):
        parse_preferences(fields)


def test_empty_fields_mean_the_defaults_and_every_kind_means_all_of_them():
    assert parse_preferences({}) == DEFAULTS and DEFAULTS.as_json() is None
    assert parse_preferences({"down_hours": " ", "kinds": list(ALERT_KINDS)}) == DEFAULTS
    chosen = parse_preferences({"kinds": ["TorRelayFlagLost", "TorRelayDown", "TorRelayDown"], "down_hours": "2.5",
                                "flags": "Guard", "low_bandwidth_kbytes": 0})
    assert chosen == Preferences(kinds=("TorRelayDown", "TorRelayFlagLost"), flags=("Guard",), down_hours=2.5,
                                 low_bandwidth_kbytes=0.0)
    assert Preferences.from_json(chosen.as_json()) == chosen
    assert Preferences.from_json("not json") == DEFAULTS and Preferences.from_json("[1]") == DEFAULTS
    # one value that no longer validates (bounds changed, hand-edited row) falls back alone, never fatally
    assert Preferences.from_json('{"down_hours": 9999, "flags": ["Exit"]}') == Preferences(flags=("Exit",))
    assert chosen.applied(SETTINGS).down_hours == 2.5 and chosen.applied(SETTINGS).weight_drop_hours == 24
    assert DEFAULTS.applied(SETTINGS) is SETTINGS


# --- storage ---------------------------------------------------------------------------------------------

def test_preferences_are_set_while_pending_and_then_only_with_the_token(tmp_path):
    store = SubscriptionStore(State(tmp_path).db)
    first, _ = store.request("op@example.org", "relay", A, 0, 3600, Preferences(down_hours=3))
    assert first.preferences.down_hours == 3
    _, token = store.request("op@example.org", "relay", A, 10, 3600, Preferences(down_hours=6))
    assert store.confirm(token, 20).preferences == Preferences(down_hours=6)  # the last request's choices
    again, none = store.request("op@example.org", "relay", A, 30, 3600, Preferences(kinds=("TorRelayAtRisk",)))
    assert none is None and again.preferences == Preferences(down_hours=6)  # a stranger cannot change them
    assert store.set_preferences("wrong", Preferences(down_hours=1)) is None
    changed = store.set_preferences(first.unsubscribe_token, Preferences(kinds=("TorRelayDown",)))
    assert changed.preferences == Preferences(kinds=("TorRelayDown",)) and store.active() == [changed]
    assert store.set_preferences(first.unsubscribe_token, DEFAULTS).preferences == DEFAULTS
    assert State(tmp_path).db.execute("SELECT preferences FROM subscriptions").fetchone() == (None,)


# --- the alert engine honours them -------------------------------------------------------------------------

def subscribe(state, email, preferences=DEFAULTS, kind="relay", target=A):
    store = SubscriptionStore(state.db)
    active = store.add_active(email, kind, target, 0)
    return store.set_preferences(active.unsubscribe_token, preferences)


def heard(alerts):
    return sorted((a.recipient, a.id, a.subjects.get("flag"), a.wait_seconds) for a in alerts)


def test_a_subscription_hears_only_the_kinds_it_chose(tmp_path):
    state = State(tmp_path)
    subscribe(state, "all@example.org")
    subscribe(state, "version@example.org", Preferences(kinds=("TorRelayVersionObsolete",)))
    subscribe(state, "down@example.org", Preferences(kinds=("TorRelayDown",)))
    old_and_slow = snapshot_of(consensus_of(entry(A, version="0.4.7.1")),
                               [descriptor(A, uptime=3 * 86400, observed=8_000)])
    assert heard(RelayWatch(state.db, SETTINGS).alerts(old_and_slow, PERIOD)) == [
        ("all@example.org", "TorRelayLowBandwidth", None, 0), ("all@example.org", "TorRelayVersionObsolete", None, 0),
        ("version@example.org", "TorRelayVersionObsolete", None, 0)]


def test_each_subscription_waits_its_own_time_before_being_told_a_relay_is_down(tmp_path):
    state = State(tmp_path)
    config = load_config(None, environ={})
    subscribe(state, "default@example.org")
    subscribe(state, "patient@example.org", Preferences(down_hours=3))
    subscribe(state, "eager@example.org", Preferences(down_hours=0.5))
    watch, alerting = RelayWatch(state.db, SETTINGS), Alerting(config, state.db, environ={})
    down = snapshot_of(consensus_of(entry("B" * 40)), [descriptor(A)])
    waits = {a.recipient: a.wait_seconds for a in watch.alerts(down, PERIOD)}
    assert waits == {"default@example.org": 3600, "patient@example.org": 3 * 3600, "eager@example.org": 1800}
    told = {}
    for minutes in (0, 30, 60, 120, 180):
        at = PERIOD + minutes * 60
        for notice in alerting.on_period([], watch.alerts(down, at), at):
            told[notice.alert.recipient] = minutes
    assert told == {"eager@example.org": 30, "default@example.org": 60, "patient@example.org": 180}


def test_own_thresholds_replace_the_configured_ones(tmp_path):
    state = State(tmp_path)
    subscribe(state, "default@example.org")
    subscribe(state, "low@example.org", Preferences(low_bandwidth_kbytes=5, flags=("Guard",), weight_drop_percent=25))
    subscribe(state, "high@example.org", Preferences(low_bandwidth_kbytes=100, flags=()))
    day_ago = PERIOD - 24 * 3600
    state.db.execute("INSERT INTO relay_history VALUES (?, ?, 1000, 'Fast Guard Running Stable Valid', 'relayA')",
                     (A, day_ago))
    state.db.commit()
    # 30 % less weight, Guard and Stable gone, 50 kB/s observed
    now = snapshot_of(consensus_of(entry(A, flags="Fast Running Valid", weight=700)),
                      [descriptor(A, uptime=5 * 86400, observed=50_000)])
    assert heard(RelayWatch(state.db, SETTINGS).alerts(now, PERIOD)) == [
        ("default@example.org", "TorRelayFlagLost", "Guard", 0),
        ("default@example.org", "TorRelayFlagLost", "Stable", 0),
        ("high@example.org", "TorRelayLowBandwidth", None, 0),
        ("low@example.org", "TorRelayFlagLost", "Guard", 0), ("low@example.org", "TorRelayWeightDropped", None, 0)]


def test_one_address_with_two_subscriptions_is_told_after_the_shorter_wait(tmp_path):
    state = State(tmp_path)
    subscribe(state, "op@example.org", Preferences(down_hours=6))
    subscribe(state, "op@example.org", Preferences(down_hours=2), kind="family")
    down = snapshot_of(consensus_of(entry("B" * 40)), [descriptor(A)])
    assert {a.wait_seconds for a in RelayWatch(state.db, SETTINGS).alerts(down, PERIOD)} == {2 * 3600}


def test_choosing_not_to_hear_a_kind_ends_its_alert_without_a_resolved_mail(tmp_path):
    state = State(tmp_path)
    mine = subscribe(state, "op@example.org")
    watch, alerting = RelayWatch(state.db, SETTINGS), Alerting(load_config(None, environ={}), state.db, environ={})
    old_and_slow = snapshot_of(consensus_of(entry(A, version="0.4.7.1")),
                               [descriptor(A, uptime=3 * 86400, observed=8_000)])
    fired = alerting.on_period([], watch.alerts(old_and_slow, PERIOD), PERIOD)
    assert sorted(n.alert.id for n in fired) == ["TorRelayLowBandwidth", "TorRelayVersionObsolete"]
    SubscriptionStore(state.db).set_preferences(mine.unsubscribe_token, Preferences(kinds=("TorRelayVersionObsolete",)))
    assert alerting.on_period([], watch.alerts(old_and_slow, PERIOD + 3600), PERIOD + 3600) == []


# --- the endpoints -----------------------------------------------------------------------------------------

def test_the_page_is_a_plain_form_with_a_label_for_every_control(tmp_path):
    app, config = make_app(tmp_path)
    page = app.test_client().get("/", headers=HTML)
    text = page.get_data(as_text=True)
    assert page.status_code == 200 and page.content_type.startswith("text/html")
    assert "<form method=post action=/subscribe>" in text and "<script" not in text and "src=" not in text
    controls = re.findall(r"<input (?!type=hidden)[^>]*>|<select", text)
    assert len(controls) == 3 + len(ALERT_KINDS) + 7 + 4 + 1  # email, kind, target; kinds; flags; numbers; list
    assert text.count("<label>") == len(controls)  # each control inside its label
    assert f"style-src '{STYLE_HASH}'" in page.headers["Content-Security-Policy"]
    assert "script-src" not in page.headers["Content-Security-Policy"]  # default-src 'none' covers it
    assert 'value="contact"' not in text and "value=contact" not in text  # administrators only here
    assert queued(config) == [] and app.test_client().get("/subscribe").data == page.data


def test_subscribing_from_the_form_keeps_the_choices_and_a_bad_one_is_named(tmp_path):
    app, config = make_app(tmp_path)
    client = app.test_client()
    form = {"preferences_form": "1", "email": "op@example.org", "kind": "relay", "target": A,
            "kinds": ["TorRelayDown", "TorRelayFlagLost"], "flags": ["Guard", "Exit"], "down_hours": "4",
            "low_bandwidth_kbytes": ""}
    bad = client.post("/subscribe", data={**form, "down_hours": "1000"}, headers=HTML)
    text = bad.get_data(as_text=True)
    assert bad.status_code == 400 and "role=alert" in text and "down_hours: hours a relay must be down" in text
    assert 'name=down_hours' in text and 'value="1000" aria-invalid=true' in text  # shown again, marked
    assert 'value="op@example.org"' in text and queued(config) == []
    assert client.post("/subscribe", data={**form, "kinds": []}).json == {
        "error": "kinds: choose at least one alert kind (or unsubscribe)"}
    assert client.post("/subscribe", data=form, headers=HTML).status_code == 202
    [pending] = SubscriptionStore(State(config.state_dir).db).everything()
    assert pending.preferences == Preferences(kinds=("TorRelayDown", "TorRelayFlagLost"), flags=("Exit", "Guard"),
                                              down_hours=4)
    [(_, _, text)] = queued(config)
    assert "Chosen: alert kinds: TorRelayDown, TorRelayFlagLost; flags: Exit, Guard; down_hours: 4" in text
    configured = {**form, "flags": CONFIGURED_FLAGS, "email": "other@example.org"}  # the configured flags
    client.post("/subscribe", data=configured)
    assert SubscriptionStore(State(config.state_dir).db).of("other@example.org")[0].preferences.flags is None
    assert client.post("/subscribe", json={"email": "j@example.org", "kind": "relay", "target": A,
                                           "preferences": {"down_hours": 12}}).status_code == 202
    assert SubscriptionStore(State(config.state_dir).db).of("j@example.org")[0].preferences.down_hours == 12


def test_confirm_manage_change_and_stop_from_a_browser(tmp_path):
    app, config = make_app(tmp_path)
    client = app.test_client()
    same_origin = {**HTML, "Origin": PUBLIC, "Sec-Fetch-Site": "same-origin"}
    client.post("/subscribe", data={"email": "op@example.org", "kind": "relay", "target": A})
    token = re.search(r"confirm\?token=([\w-]+)", queued(config)[0][2]).group(1)
    active = client.post("/confirm", data={"token": token}, headers=same_origin)
    [subscription] = SubscriptionStore(State(config.state_dir).db).active()
    manage = f"/manage?token={subscription.unsubscribe_token}"
    assert active.status_code == 200 and "Subscription active" in active.get_data(as_text=True)
    assert f'href="{manage}"' in active.get_data(as_text=True)
    page = client.get(manage).get_data(as_text=True)
    assert client.get(f"/unsubscribe?token={subscription.unsubscribe_token}").get_data(as_text=True) == page
    assert "op@example.org" in page and page.count(" checked") == len(ALERT_KINDS) + len(CONFIGURED_FLAGS)
    assert client.get("/manage?token=nope").status_code == 404
    hostile = client.post("/preferences", data={"token": subscription.unsubscribe_token, "down_hours": "0"},
                          headers={"Origin": "https://evil.example"})
    assert hostile.status_code == 403
    saved = client.post("/preferences", headers=same_origin, data={
        "preferences_form": "1", "token": subscription.unsubscribe_token, "kinds": ["TorRelayDown"],
        "flags": CONFIGURED_FLAGS, "down_hours": "8"})
    assert saved.status_code == 200 and "Saved" in saved.get_data(as_text=True)
    assert SubscriptionStore(State(config.state_dir).db).active()[0].preferences == Preferences(
        kinds=("TorRelayDown",), down_hours=8)
    assert client.post("/preferences", json={"token": subscription.unsubscribe_token, "weight_drop_hours": 0}
                       ).json["error"].startswith("weight_drop_hours:")
    assert client.post("/preferences", json={"token": "nope", "down_hours": 1}).status_code == 404
    assert client.post("/preferences", json={"token": subscription.unsubscribe_token, "down_hours": 2}).json == {
        "status": "saved", "preferences": {"down_hours": 2.0}}
    gone = client.post("/unsubscribe", data={"token": subscription.unsubscribe_token}, headers=same_origin)
    assert gone.status_code == 200 and "Subscription stopped" in gone.get_data(as_text=True)
    assert SubscriptionStore(State(config.state_dir).db).everything() == []


def test_preferences_change_neither_the_answer_nor_the_work_for_a_subscribed_address(tmp_path, monkeypatch):
    seen = statements_of(monkeypatch)
    app, config = make_app(tmp_path)
    SubscriptionStore(State(config.state_dir).db).add_active("subscribed@example.org", "relay", A, 0)
    runs = {}
    for email in ("subscribed@example.org", "stranger@example.org"):
        seen.clear()
        answer = client_at(app, f"192.0.2.{len(runs)}").post("/subscribe", headers=HTML, data={
            "email": email, "kind": "relay", "target": A, "preferences_form": "1", "kinds": ["TorRelayDown"],
            "down_hours": "5"})
        runs[email] = (answer.status_code, answer.data, list(seen))
    assert runs["subscribed@example.org"] == runs["stranger@example.org"]
    [active] = [s for s in SubscriptionStore(State(config.state_dir).db).everything() if s.status == "active"]
    assert active.preferences == DEFAULTS  # not changed by whoever asked


def test_timestamps_in_this_module_are_the_test_consensus():
    assert datetime.fromtimestamp(PERIOD, timezone.utc).replace(tzinfo=None) == NOW
