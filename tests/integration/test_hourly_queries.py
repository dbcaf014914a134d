"""The ready-made queries on HOURLY data: every README query, dashboard panel and alert rule, at any moment of the hour.

On the live network a series has one sample an hour, stamped with the
consensus valid-after, and PromQL engines look back only 5 minutes for an
instant selector: a bare ``tor_network_relays`` answers only from hh:00 to
hh:05, and README query 10 then lists every guard. The private test
network's 10-second periods hide this, so the tests here fill a real
VictoriaMetrics (started without any lookback flag) with hourly periods:

- live network: the two consecutive real consensuses of 2020-02-29 (10:00 and
  11:00) with that hour's server descriptors, backfilled by the agent;
- private network: three periods the agent fetched with ``once`` from the
  private Tor network (authorities, votes, fetches, probes: what a backfill
  has not), restamped an hour apart (2020-03-02 10:00, 11:00, 12:00), as the
  agent stamps each period with its valid-after.

Each expression's reference is its answer just after the newest period was
written: at the period's valid-after, its look-back windows of one period plus
a margin (``LATEST_WINDOW``) narrowed to the engines' default 5 minutes, which
leaves exactly the newest period, as a bare selector at hh:00 does. At hh:11,
hh:30, hh:59 and hh+1:05 (the next period not written yet) every README query,
panel target, annotation and alert-rule expression must give the same series
with the same values. Before the margin (hh:00 to hh:10) a series the newest
period dropped still shows (the price of not going blank before the next
period is written; docs/queries.md).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import yaml

from agent.config.loader import load_config
from agent.dashboards.alerting import RULES
from agent.dashboards.lookback import LATEST_WINDOW
from agent.store.store import Store
from agent.testnet import network as testnet
from tests.integration.commands import agent
from tests.integration.conftest import BACKFILL_TIME, backfill_real_documents
from tests.integration.test_dashboards import MAY_BE_EMPTY, annotations, grafana_substitute, targets
from tests.integration.test_queries import readme_queries
from tests.integration.victoria import VictoriaMetrics

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HOUR = 3600
#: The newest backfilled real period (2020-02-29 11:00 UTC).
LIVE_NEWEST = BACKFILL_TIME - 60
#: Where the private network's periods are restamped to, an hour apart: 2020-03-02 10:00 UTC (two days after the
#: backfill, so no 24-hour window of one data set reaches the other).
PRIVATE_FIRST = 1583143200
PRIVATE_PERIODS = 3
#: Moments after the newest valid-after at which everything must answer as just after the period was written.
MOMENTS = {"hh:11": 11 * 60, "hh:30": 30 * 60, "hh:59": 59 * 60, "hh+1:05 (next period not yet written)": 65 * 60}


@dataclass(frozen=True)
class DataSet:
    name: str
    newest: int  # valid-after of the newest period
    fingerprint: str  # a relay of the newest period, for the relay dashboard


@dataclass
class Hourly:
    url: str
    sets: tuple[DataSet, ...]
    config: Path


def restamped(lines: list[str], delta: int) -> list[str]:
    """Line protocol with every point's time (the last field, unix seconds) moved by ``delta`` seconds."""
    moved = []
    for line in lines:
        if line.strip():
            head, stamp = line.rsplit(" ", 1)
            moved.append(f"{head} {int(stamp) + delta}")
    return moved


@pytest.fixture(scope="module")
def hourly(tor_network, tmp_path_factory):
    """A VictoriaMetrics (no lookback flags) holding both hourly data sets; stopped by PID afterwards."""
    directory = tmp_path_factory.mktemp("hourly")
    config = yaml.safe_load((tor_network.directory / testnet.AGENT_CONFIG).read_text())
    # No store at all (neither a url nor the embedded one): every period waits in the outbox, to be restamped.
    config.update({"state_dir": str(directory / "state"), "store": {"embedded": False}})
    path = directory / "agent.yaml"
    path.write_text(yaml.safe_dump(config))
    for index in range(PRIVATE_PERIODS):
        done = agent("once", "--config", path, timeout=60)
        assert done.returncode == 0, done.stderr
        if index < PRIVATE_PERIODS - 1:
            time.sleep(10)  # the private network votes every 10 s: the next once sees the next period
    backfill_real_documents(path)
    store = Store.from_config(load_config(path, environ={}))
    try:
        records = list(store.outbox.pending())
    finally:
        store.close()
    private = sorted({record.time for record in records if record.time > LIVE_NEWEST + 7 * 86400})
    assert len(private) == PRIVATE_PERIODS, private
    lines = []
    for record in records:
        if record.time in private:
            lines += restamped(record.lines, PRIVATE_FIRST + private.index(record.time) * HOUR - record.time)
        else:
            lines += [line for line in record.lines if line.strip()]
    server = VictoriaMetrics(directory / "vmdata").start()
    try:
        for start in range(0, len(lines), 50_000):
            answer = requests.post(f"{server.url}/write", data="\n".join(lines[start:start + 50_000]).encode(),
                                   timeout=60)
            assert answer.status_code == 204, answer.text
        private_newest = PRIVATE_FIRST + (PRIVATE_PERIODS - 1) * HOUR
        server.settled_export("tor_network_relays", 2 + PRIVATE_PERIODS)
        sets = []
        for name, newest in (("live network", LIVE_NEWEST), ("private network", private_newest)):
            relays = instant(server.url, "tor_relay_weight", newest)
            assert relays, f"{name}: no relay in the newest period"
            sets.append(DataSet(name, newest, dict(next(iter(relays)))["fingerprint"]))
        config.update({"query": {"url": server.url}})
        path.write_text(yaml.safe_dump(config))
        yield Hourly(server.url, tuple(sets), path)
    finally:
        server.stop()


def instant(url: str, expr: str, at: float) -> dict[frozenset, str]:
    """The instant query's answer as {labels: value}, asked with nothing but query and time (no step, no lookback)."""
    answer = requests.post(f"{url}/api/v1/query", data={"query": expr, "time": at}, timeout=60).json()
    assert answer["status"] == "success", f"{expr}: {answer.get('error')}"
    data = answer["data"]
    if data["resultType"] == "scalar":
        return {frozenset(): data["result"][1]}
    return {frozenset(item["metric"].items()): item["value"][1] for item in data["result"]}


def reference_expr(expr: str) -> str:
    """The expression as it answers just after its newest period was written: look-back windows of one period plus
    the margin narrowed to the 5 minutes engines look back by default (at the valid-after: the newest period)."""
    return expr.replace(f"[{LATEST_WINDOW}]", "[5m]")


def mismatches(url: str, expr: str, newest: int, compare_values: bool = True) -> tuple[dict, list[str]]:
    """The reference answer, and every moment of the hour whose answer differs from it (with what differs)."""
    reference = instant(url, reference_expr(expr), newest)
    problems = []
    for moment, offset in MOMENTS.items():
        answer = instant(url, expr, newest + offset)
        if "topk(" in expr and answer != reference and same_top(answer, reference):
            continue
        if set(answer) != set(reference):
            problems.append(f"{moment}: {len(answer)} series, {len(reference)} at hh:00 "
                            f"(only now: {sorted(map(sorted, set(answer) - set(reference)))[:3]}, "
                            f"gone: {sorted(map(sorted, set(reference) - set(answer)))[:3]})")
        elif compare_values and answer != reference:
            changed = [labels for labels in answer if answer[labels] != reference[labels]]
            problems.append(f"{moment}: values changed, e.g. {sorted(changed[0])}: "
                            f"{reference[changed[0]]} -> {answer[changed[0]]}")
    return reference, problems


def same_top(answer: dict, reference: dict) -> bool:
    """A topk answer as good as the reference: the same values, and the same value for every series in both. Among
    series tied at the k-th value, the engine picks any (operators by family and by contact often hold the very same
    relays, and many operators the same number of countries)."""
    return (sorted(map(float, answer.values())) == sorted(map(float, reference.values()))
            and all(answer[labels] == reference[labels] for labels in set(answer) & set(reference)))


def every_expression() -> list[tuple[str, str, bool]]:
    """(what, PromQL, may be empty) for every README query, Prometheus panel target, annotation and alert rule."""
    found = [(f"README: {question}", promql, may_be_empty) for question, promql, may_be_empty in readme_queries()]
    for board, title, target in targets("prometheus"):
        found.append((f"panel {board} / {title}", target["expr"], bool(MAY_BE_EMPTY.search(target["expr"]))))
    for board, annotation in annotations("prometheus"):
        found.append((f"annotation {board} / {annotation['name']}", annotation["target"]["expr"], True))
    for rule in RULES:
        found.append((f"rule {rule.name}", rule.expr, True))  # a rule fires only on a problem
        # What the rule compares with its threshold (the query of the PromQL Grafana rule), which a healthy network
        # has too (the agent's own series: only with `run`).
        found.append((f"rule {rule.name} (what it measures)", rule.measure, "allium_agent_" in rule.measure))
    return found


def test_every_query_panel_and_rule_answers_at_any_moment_of_the_hour(hourly):
    failures, answered, empty = [], 0, []
    for what, expr, may_be_empty in every_expression():
        with_data = False
        for data_set in hourly.sets:
            substituted = grafana_substitute(expr, data_set.fingerprint)
            reference, problems = mismatches(hourly.url, substituted, data_set.newest,
                                             compare_values="time()" not in expr)
            with_data = with_data or bool(reference)
            failures += [f"{what} [{data_set.name}]: {problem}" for problem in problems]
        answered += with_data
        if not with_data:
            empty.append(what)
            if not may_be_empty:
                failures.append(f"{what}: no data even at hh:00: {expr}")
    print(f"\n{len(every_expression())} expressions at {len(MOMENTS)} moments of the hour in {len(hourly.sets)} "
          f"hourly data sets; {answered} with data; empty (allowed): {empty}")
    assert not failures, f"{len(failures)} answers differ from hh:00:\n" + "\n".join(failures)


def test_readme_query_10_lists_the_relays_that_lost_guard_not_every_guard(hourly):
    """At hh:30, "which relays lost the Guard flag today" is what the periods say: guards in some period of the last
    24 hours that are not guards in the newest one; before the fix it listed every guard."""
    [(_, query_10, _)] = [query for query in readme_queries() if "Guard flag" in query[0]]
    data_set = hourly.sets[0]  # the real network: 2,900-odd guards and real churn between the two hours
    at = data_set.newest + 30 * 60
    listed = {dict(labels)["fingerprint"] for labels in instant(hourly.url, query_10, at)}
    exported = [json.loads(line) for line in requests.get(
        f"{hourly.url}/api/v1/export", params={"match[]": "tor_relay_flag_guard", "start": at - 86400, "end": at},
        timeout=60).text.splitlines() if line.strip()]
    guards, lost = set(), set()
    for series in exported:
        samples = dict(zip((t // 1000 for t in series["timestamps"]), series["values"]))
        fingerprint = series["metric"]["fingerprint"]
        if samples.get(data_set.newest, 0) > 0:
            guards.add(fingerprint)
        elif any(value > 0 for stamp, value in samples.items() if at - 86400 < stamp <= at):
            lost.add(fingerprint)
    cli = agent("query", "--config", hourly.config, "--at", time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)),
                "--format", "json", query_10, timeout=60)
    assert cli.returncode == 0, cli.stderr
    through_cli = {item["metric"]["fingerprint"] for item in json.loads(cli.stdout)["result"]}
    print(f"\nREADME query 10 at hh:30 of {data_set.name}: {len(listed)} relays listed ({len(through_cli)} through "
          f"`allium-agent query --at`); {len(guards)} guards in the newest period; {len(lost)} lost Guard or left")
    assert guards and listed == lost == through_cli


def test_the_timeseries_panels_have_no_gap_within_the_hour(hourly):
    """What Grafana draws for a time series panel (range queries at 5-minute steps from hh:00 to hh+1:05): every
    series of the newest period has a value at every step. (Instant panels, the stat, table, bar and pie ones, are
    asked at one moment: the test above.)"""
    gaps, drawn_panels = [], 0
    for data_set in hourly.sets:
        for board, title, target in targets("prometheus"):
            if target.get("instant"):
                continue
            drawn_panels += 1
            expr = grafana_substitute(target["expr"], data_set.fingerprint)
            reference = instant(hourly.url, reference_expr(expr), data_set.newest)
            answer = requests.post(f"{hourly.url}/api/v1/query_range", timeout=60, data={
                "query": expr, "start": data_set.newest, "end": data_set.newest + 65 * 60, "step": 300}).json()
            assert answer["status"] == "success", answer
            drawn = {frozenset(item["metric"].items()): len(item["values"]) for item in answer["data"]["result"]}
            missing = [labels for labels in reference if drawn.get(labels, 0) < 14]
            if missing:
                gaps.append(f"{board} / {title} [{data_set.name}]: {len(missing)} of {len(reference)} series have "
                            f"gaps, e.g. {sorted(missing[0])}: {drawn.get(missing[0], 0)} of 14 steps")
    assert drawn_panels > 40 and not gaps, "\n".join(gaps)


def test_the_query_command_asks_with_the_live_lookback(hourly):
    """``allium-agent query`` (run_query) answers every README query at hh:30 as the bare HTTP API does."""
    from datetime import datetime, timezone

    from agent.store.query import run_query

    differ = []
    for data_set in hourly.sets:
        at = data_set.newest + 30 * 60
        for question, promql, _ in readme_queries():
            expected = instant(hourly.url, promql, at)
            result = run_query(hourly.url, promql, at=datetime.fromtimestamp(at, timezone.utc))
            got = {frozenset(labels.items()): samples[0][1] for labels, samples in result.series}
            if got != expected:
                differ.append(f"{question} [{data_set.name}]: {len(got)} series, {len(expected)} expected")
    assert not differ, "\n".join(differ)


def test_bare_selectors_answer_with_the_embedded_store_flags(hourly, tmp_path):
    """On a VictoriaMetrics started with ``victoria_flags(3600)`` (the embedded store's flags), a person's own bare
    selector answers all through the hour too (the README's query 10 as it was written before), and the README's
    queries answer as on a VictoriaMetrics without any flag."""
    from agent.store.victoria_flags import victoria_flags

    export = requests.get(f"{hourly.url}/api/v1/export", params={"match[]": '{__name__=~"(tor|allium)_.+"}'},
                          timeout=120).text
    server = VictoriaMetrics(tmp_path / "vmdata", tuple(victoria_flags(3600))).start()
    try:
        assert requests.post(f"{server.url}/api/v1/import", data=export.encode(), timeout=120).status_code == 204
        server.settled_export("tor_network_relays", 2 + PRIVATE_PERIODS)
        readme = {question: promql for question, promql, _ in readme_queries()}
        bare = {  # as a person would write them (query 10 as the README had it), and the README's answer to them
            "tor_network_relays": readme["How many relays are in the consensus?"],
            "topk(10, tor_relay_weight_fraction)": readme["Which are the ten largest relays?"],
            "(max_over_time(tor_relay_flag_guard[24h]) > 0) unless (tor_relay_flag_guard > 0)":
                readme["Which relays lost the Guard flag today?"]}
        for data_set in hourly.sets:
            for offset in MOMENTS.values():
                at = data_set.newest + offset
                for expr, windowed in bare.items():
                    answer = instant(server.url, expr, at)
                    assert close(nameless(answer), nameless(instant(hourly.url, windowed, at))), (expr, offset)
                    assert answer or "unless" in expr, (expr, offset)  # no guard lost on the private network: empty
            at = data_set.newest + 30 * 60
            for question, promql in readme.items():
                assert close(instant(server.url, promql, at), instant(hourly.url, promql, at)), question
    finally:
        server.stop()


def nameless(answer: dict[frozenset, str]) -> dict[frozenset, str]:
    """An answer without metric names (Prometheus drops them in last_over_time and the like; VictoriaMetrics keeps
    them)."""
    return {frozenset((name, value) for name, value in labels if name != "__name__"): v for labels, v in answer.items()}


def close(answer: dict[frozenset, str], expected: dict[frozenset, str]) -> bool:
    """The same series with the same values but for the last digit (VictoriaMetrics' export and import, and its bare
    selector against its last_over_time, may round a stored value differently in the 14th digit)."""
    return set(answer) == set(expected) and all(
        math.isclose(float(answer[labels]), float(expected[labels]), rel_tol=1e-12) for labels in answer)


def openmetrics(export_lines: list[str]) -> str:
    """VictoriaMetrics' export (JSON lines) as OpenMetrics text with timestamps, for ``promtool tsdb
    create-blocks-from openmetrics``: series after series, each one's samples in time order."""
    def quoted(value: str) -> str:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    samples: dict[str, dict[int, float]] = {}
    for line in export_lines:
        series = json.loads(line)
        metric = dict(series["metric"])
        name = metric.pop("__name__")
        labels = ",".join(f'{key}="{quoted(value)}"' for key, value in sorted(metric.items()))
        # One value per timestamp (the export may hold a rewritten period twice until VictoriaMetrics merges it).
        samples.setdefault(f"{name}{{{labels}}}" if labels else name, {}).update(
            zip(series["timestamps"], map(float, series["values"])))
    out = [f"{head} {value!r} {stamp // 1000}" for head, by_time in samples.items()
           for stamp, value in sorted(by_time.items())]
    return "\n".join(out + ["# EOF", ""])


def test_the_same_on_prometheus(hourly, tmp_path):
    """The same data in a real Prometheus (Debian's, its default 5-minute lookback; ranges closed at both ends before
    Prometheus 3): every README query, panel target, annotation and rule answers at every moment of the hour as just
    after the period was written."""
    import shutil
    import subprocess

    from tests.integration.victoria import _free_port

    promtool, prometheus = shutil.which("promtool"), shutil.which("prometheus")
    if promtool is None or prometheus is None:
        pytest.fail("Debian's prometheus package is required (apt-get install prometheus)")
    export = [line for line in requests.get(f"{hourly.url}/api/v1/export", timeout=120,
                                            params={"match[]": '{__name__=~"(tor|allium)_.+"}'}).text.splitlines()
              if line.strip()]
    (tmp_path / "data.om").write_text(openmetrics(export))
    created = subprocess.run([promtool, "tsdb", "create-blocks-from", "openmetrics", str(tmp_path / "data.om"),
                              str(tmp_path / "tsdb")], capture_output=True, text=True, timeout=300)
    assert created.returncode == 0, created.stderr[-2000:]
    (tmp_path / "prometheus.yml").write_text("global: {}\n")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with open(tmp_path / "prometheus.log", "wb") as log:
        process = subprocess.Popen([prometheus, f"--config.file={tmp_path / 'prometheus.yml'}",
                                    f"--storage.tsdb.path={tmp_path / 'tsdb'}", "--storage.tsdb.retention.time=100y",
                                    f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
    try:
        end = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < end and process.poll() is None, (tmp_path / "prometheus.log").read_text()[-2000:]
            time.sleep(0.2)
        version = requests.get(f"{url}/api/v1/status/buildinfo", timeout=10).json()["data"]["version"]
        failures, answered = [], 0
        for what, expr, may_be_empty in every_expression():
            with_data = False
            for data_set in hourly.sets:
                reference, problems = mismatches(url, grafana_substitute(expr, data_set.fingerprint), data_set.newest,
                                                 compare_values="time()" not in expr)
                with_data = with_data or bool(reference)
                failures += [f"{what} [{data_set.name}]: {problem}" for problem in problems]
            answered += with_data
            if not with_data and not may_be_empty:
                failures.append(f"{what}: no data even at hh:00: {expr}")
        print(f"\nPrometheus {version}: {len(every_expression())} expressions at {len(MOMENTS)} moments, "
              f"{answered} with data")
        assert not failures, f"{len(failures)} answers differ from hh:00:\n" + "\n".join(failures)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
