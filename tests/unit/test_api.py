"""The REST API through Flask's test client over a real state: keys, access, limits, CORS, errors, the spec,
the reference page, /healthz and /metrics. The store routes with a real store are
tests/integration/test_api_server.py's; here no store is configured, which they must say (503)."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
from contextlib import redirect_stdout
from dataclasses import replace

import pytest

from agent.alerts.engine import AlertBook, SuppressionPolicy
from agent.config.loader import PARTS, load_config
from agent.model.alerts import Alert
from agent.pipeline.state import State
from agent.web.api import create_api_app
from agent.web.api_schema import routes
from agent.web.apikeys import KeyStore, digest
from agent.web.settings import ApiConfig

NOW = 1_700_000_000


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "agent.yaml"
    path.write_text(f"state_dir: {tmp_path / 'state'}\nstore: {{embedded: false}}\n"
                    "subscriptions:\n  trusted_proxies: [10.0.0.1]\n")
    return load_config(path, environ={})


def make(config, clock=lambda: NOW, **settings):
    app = create_api_app(config, replace(ApiConfig.defaults(), **settings), clock=clock)
    return app, app.test_client(), app.extensions["allium_api"]


def new_key(sources, scope="read") -> str:
    with sources.lock:
        return KeyStore(sources.state.db).create("test", (scope,), NOW)[1]


@pytest.fixture(scope="module")
def relays(hour10):
    return {fingerprint: frozenset(entry.flags) for fingerprint, entry in hour10.routers.items()}


def test_keys_are_kept_as_hashes_shown_once_and_revocable(config):
    _, client, sources = make(config)
    key = new_key(sources)
    assert key.startswith("aa_") and len(key) > 40
    stored = sources.state.db.execute("SELECT prefix, hash FROM api_keys").fetchall()
    assert stored == [(key[3:11], digest(key))] and key not in repr(stored)
    assert client.get("/api/v1/findings").status_code == 401
    assert client.get("/api/v1/findings", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    assert client.get("/api/v1/findings", headers={"X-API-Key": key}).status_code == 200
    assert client.get("/api/v1/findings", headers={"X-API-Key": key[:-1] + "x"}).status_code == 401
    with sources.lock:
        KeyStore(sources.state.db).revoke(key[3:11], NOW)
    revoked = client.get("/api/v1/findings", headers={"X-API-Key": key})
    assert revoked.status_code == 401 and revoked.headers["WWW-Authenticate"].startswith("Bearer")


def test_the_cli_creates_lists_without_the_key_and_revokes(config, tmp_path):
    import argparse

    from agent.cli.apikeys import add_commands
    from agent.cli.main import _with_config

    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command", required=True), _with_config)
    path = tmp_path / "agent.yaml"

    def run(*words):
        out = io.StringIO()
        arguments = parser.parse_args(["api-keys", *words, "--config", str(path)])
        with redirect_stdout(out):
            code = arguments.handler(arguments)
        return code, out.getvalue()

    code, printed = run("create", "grafana", "--scope", "subscriptions-admin")
    key = printed.strip()
    assert code == 0 and re.fullmatch(r"aa_[a-z0-9]{8}[A-Za-z0-9_-]{43}", key)
    code, listing = run("list")
    assert code == 0 and key[3:11] in listing and key not in listing and "subscriptions-admin" in listing
    assert listing.splitlines()[0].split()[:3] == ["id", "prefix", "name"]
    code, revoked = run("revoke", "1")
    assert code == 0 and key[3:11] in revoked
    assert run("revoke", "nosuchkey")[0] == 1
    state = State(tmp_path / "state")
    assert KeyStore(state.db).verify(key, NOW) is None  # revoked
    state.close()


def test_costly_routes_need_a_key_unless_configured_and_cheap_ones_do_not(config):
    _, client, _ = make(config)
    assert client.get("/api/v1/network").status_code == 503  # anonymous; no store configured
    for path in ("/api/v1/relays", "/api/v1/operators", "/api/v1/authorities", "/api/v1/findings",
                 "/api/v1/anomalies", "/api/v1/relays/" + "A" * 40):
        assert client.get(path).status_code == 401, path
    for path in ("/api/v1/openapi.json", "/api/v1/docs", "/metrics"):
        assert client.get(path).status_code == 200, path
    _, client, _ = make(config, anonymous=("findings",))
    assert client.get("/api/v1/findings").status_code == 200
    assert client.get("/api/v1/relays").status_code == 401
    _, client, _ = make(config, anonymous=("*",))
    assert client.get("/api/v1/relays").status_code == 200


def test_bad_parameters_are_named_with_400(config):
    _, client, _ = make(config, anonymous=("*",))
    for query, name in (("limit=0", "limit"), ("limit=abc", "limit"), ("limit=100000", "limit"),
                        ("flag=Fastest", "flag"), ("cursor=notacursor", "cursor"), ("fingerprint=xyz", "fingerprint"),
                        ("nickname=moria_1", "nickname"), ("nickname=%25", "nickname"), ("country=deu", "country"),
                        ("version=0.4.%25", "version"), ("contact=x", "contact"), ("contact=" + "x" * 101, "contact")):
        answer = client.get(f"/api/v1/relays?{query}")
        assert answer.status_code == 400, query
        assert set(answer.json) == {"error", "detail"} and answer.json["detail"].startswith(f"{name}:")
    assert client.get("/api/v1/relays/ABC").json["detail"].startswith("fingerprint:")
    assert client.get("/api/v1/findings?severity=dire").status_code == 400
    assert client.get("/api/v1/nothing").status_code == 404 and "error" in client.get("/api/v1/nothing").json
    assert client.post("/api/v1/relays").status_code == 405


def test_relays_page_through_the_newest_period_of_the_state(config, relays):
    _, client, sources = make(config, anonymous=("*",))
    sources.state.save_relays(NOW - 7200, {"A" * 40: frozenset({"Running"})})
    sources.state.save_relays(NOW - 3600, relays)
    seen, cursor = [], None
    while True:
        page = client.get("/api/v1/relays", query_string={"limit": 500, **({"cursor": cursor} if cursor else {})}).json
        assert page["period"] == NOW - 3600 and page["total"] == len(relays)
        seen += page["relays"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [item["fingerprint"] for item in seen] == sorted(relays)
    assert all(item["weight"] is None for item in seen)  # no store: flags still, weights unknown
    guards = client.get("/api/v1/relays", query_string={"flag": "Guard", "limit": 500}).json
    assert guards["total"] == sum("Guard" in flags for flags in relays.values())
    some = sorted(relays)[10]
    by_prefix = client.get("/api/v1/relays", query_string={"fingerprint": "$" + some[:6].lower()}).json
    assert some in {item["fingerprint"] for item in by_prefix["relays"]}
    assert all(item["fingerprint"].startswith(some[:6]) for item in by_prefix["relays"])


def test_relays_are_searched_by_the_directory_of_the_newest_live_period(config, relays):
    from agent.pipeline.state import DirectoryEntry

    _, client, sources = make(config, anonymous=("*",))
    sources.state.save_relays(NOW, relays)
    some = sorted(relays)[:4]
    sources.state.replace_relay_directory(NOW, [
        DirectoryEntry(some[0], "moria1", "US", "0.4.2.6", "Roger arma@mit.edu", None),
        DirectoryEntry(some[1], "Moria2", "DE", "0.4.2.6-dev", "50%_ops", "example.org"),
        DirectoryEntry(some[2], "other", "DE", "0.4.20.1", "50 percent", None)])

    def fingerprints(**query):
        answer = client.get("/api/v1/relays", query_string=query)
        assert answer.status_code == 200, answer.json
        return [item["fingerprint"] for item in answer.json["relays"]]

    assert fingerprints(nickname="MORIA") == some[:2] and fingerprints(country="de") == some[1:3]
    assert fingerprints(version="0.4.2") == some[:2] and fingerprints(contact="50%_") == [some[1]]
    assert fingerprints(operator="EXAMPLE.org") == [some[1]] and fingerprints(operator="example.net") == []
    assert fingerprints(country="DE", nickname="oth", fingerprint=some[2][:4]) == [some[2]]
    page = client.get("/api/v1/relays", query_string={"nickname": "moria", "limit": 1}).json
    assert page["total"] == 2 and page["directory_period"] == NOW
    assert page["relays"][0]["contact"] == "Roger arma@mit.edu"
    second = client.get("/api/v1/relays", query_string={"nickname": "moria", "cursor": page["next_cursor"]}).json
    assert [item["nickname"] for item in second["relays"]] == ["Moria2"] and second["next_cursor"] is None
    unknown = client.get("/api/v1/relays", query_string={"fingerprint": some[3]}).json["relays"][0]
    assert unknown["nickname"] is None and unknown["operator"] is None  # not in the directory: null, still listed


def alert(relay=None, recipient=None, severity="warning") -> Alert:
    subjects = {"relay": relay} if relay else {"authority": "moria1"}
    return Alert("TorTest", severity, subjects, "summary", "description", recipient=recipient,
                 unsubscribe_token="secret-token" if recipient else None)


def test_findings_show_public_alerts_only(config):
    _, client, sources = make(config, anonymous=("*",))
    book = AlertBook(sources.state.db)
    book.advance([alert(), alert("B" * 40, "op@example.org"), alert(severity="critical", relay="C" * 40)], NOW,
                 SuppressionPolicy({}, {}))
    body = client.get("/api/v1/findings").json
    assert [item["severity"] for item in body["findings"]] == ["critical", "warning"]
    assert body["subscription_alerts"] == 1
    text = client.get("/api/v1/findings").get_data(as_text=True)
    assert "op@example.org" not in text and "secret-token" not in text
    assert [f["severity"] for f in client.get("/api/v1/findings?severity=critical").json["findings"]] == ["critical"]


def test_rate_limits_per_client_and_per_key_answer_429_with_retry_after(config):
    _, client, sources = make(config, rate_limit="2 per minute", key_rate_limit="3 per minute")
    behind_proxy = {"REMOTE_ADDR": "10.0.0.1"}
    for _ in range(2):
        assert client.get("/healthz", environ_base={**behind_proxy}, headers={"X-Forwarded-For": "192.0.2.1"}
                          ).status_code in (200, 503)
    refused = client.get("/healthz", environ_base=behind_proxy, headers={"X-Forwarded-For": "192.0.2.1"})
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
    assert set(refused.json) == {"error", "detail"}
    # another client behind the trusted proxy has its own budget; an untrusted peer's header is not believed
    assert client.get("/healthz", environ_base=behind_proxy, headers={"X-Forwarded-For": "192.0.2.2"}
                      ).status_code != 429
    for _ in range(2):
        client.get("/healthz", environ_base={"REMOTE_ADDR": "198.51.100.7"}, headers={"X-Forwarded-For": "192.0.2.9"})
    assert client.get("/healthz", environ_base={"REMOTE_ADDR": "198.51.100.7"},
                      headers={"X-Forwarded-For": "192.0.2.10"}).status_code == 429
    key = new_key(sources)
    codes = [client.get("/api/v1/findings", environ_base={"REMOTE_ADDR": f"203.0.113.{n}"},
                        headers={"X-API-Key": key}).status_code for n in range(4)]
    assert codes == [200, 200, 200, 429]  # per key, whatever address it comes from


def test_cors_headers_only_for_configured_origins(config):
    _, client, _ = make(config)
    assert "Access-Control-Allow-Origin" not in client.get("/api/v1/openapi.json",
                                                           headers={"Origin": "https://a.example"}).headers
    _, client, _ = make(config, cors_origins=("https://a.example",))
    allowed = client.get("/api/v1/openapi.json", headers={"Origin": "https://a.example"})
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://a.example" and "Origin" in allowed.headers["Vary"]
    assert "Access-Control-Allow-Origin" not in client.get("/api/v1/openapi.json",
                                                           headers={"Origin": "https://b.example"}).headers
    preflight = client.options("/api/v1/relays", headers={"Origin": "https://a.example",
                                                          "Access-Control-Request-Method": "GET"})
    assert preflight.status_code == 200 and "X-API-Key" in preflight.headers["Access-Control-Allow-Headers"]


def test_healthz_is_stale_after_two_periods(config):
    now = [NOW]
    _, client, sources = make(config, clock=lambda: now[0])
    assert client.get("/healthz").status_code == 503  # nothing recorded yet
    sources.state.record_processed(NOW - 3600, 3600, NOW - 100)
    fresh = client.get("/healthz")
    assert fresh.status_code == 200 and fresh.json["age_seconds"] == 100 and fresh.json["healthy"] is True
    now[0] = NOW - 100 + 2 * 3600 + 1
    stale = client.get("/healthz")
    assert stale.status_code == 503 and "more than 2 periods" in stale.json["reason"]
    assert "agent.sqlite" not in stale.get_data(as_text=True)


def test_metrics_are_valid_prometheus_text_with_the_states_counters(config):
    if shutil.which("promtool") is None:
        pytest.fail("promtool (Debian's prometheus) is needed to check the metrics format")
    _, client, sources = make(config)
    sources.state.count("cycle_errors", 3)
    sources.state.record_processed(NOW - 60, 3600, NOW - 30)
    sources.state.set_last_cycle({"status": "processed", "duration_seconds": 12.5, "points": 7000})
    answer = client.get("/metrics")
    assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    lines = answer.get_data(as_text=True).splitlines()
    for expected in ("allium_agent_cycle_errors_total 3", "allium_agent_periods_processed_total 1",
                     "allium_agent_last_cycle_duration_seconds 12.5", "allium_agent_last_cycle_points 7000",
                     "allium_agent_deliveries_waiting 0", "allium_agent_up 1"):
        assert expected in lines
    checked = subprocess.run(["promtool", "check", "metrics"], input=answer.get_data(), capture_output=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_spec_lists_every_route_the_app_serves_and_the_page_needs_nothing_else(config):
    app, client, _ = make(config)
    spec = client.get("/api/v1/openapi.json").json
    assert spec["openapi"] == "3.1.0"
    declared = {route.path for route in routes(ApiConfig.defaults())}
    assert set(spec["paths"]) == declared
    served = {re.sub(r"<(\w+)>", r"{\1}", rule.rule) for rule in app.url_map.iter_rules() if rule.endpoint != "static"}
    assert served == declared
    security = {path: {} in item["get"]["security"] for path, item in spec["paths"].items()}
    assert security["/api/v1/network"] and not security["/api/v1/relays"]
    from jsonschema import Draft202012Validator

    for item in spec["paths"].values():
        for response in item["get"]["responses"].values():
            for media in response["content"].values():
                Draft202012Validator.check_schema(media["schema"])
    page = client.get("/api/v1/docs")
    text = page.get_data(as_text=True)
    assert all(f"GET {path}" in text for path in declared)
    assert "<script" not in text and not re.search(r"(src|href)=['\"]?(https?:)?//", text)
    assert "style-src 'sha256-" in page.headers["Content-Security-Policy"]


def test_settings_are_checked():
    assert ApiConfig.defaults().problems("api") == []
    problems = replace(ApiConfig.defaults(), anonymous=("relays", "everything"), cors_origins=("a.example",),
                       page_limit=900).problems("api")
    assert len(problems) == 3 and all(problem.startswith("api.") for problem in problems)


@pytest.mark.skipif("api" not in PARTS, reason="the api section is mounted in agent/config/loader.py PARTS")
def test_the_api_section_loads_from_the_config_file(tmp_path):
    path = tmp_path / "agent.yaml"
    path.write_text("state_dir: state\napi:\n  anonymous: [network, findings]\n  rate_limit: 5 per second\n")
    loaded = load_config(path, environ={})
    assert loaded.api.anonymous == ("network", "findings") and loaded.api.rate_limit == "5 per second"
