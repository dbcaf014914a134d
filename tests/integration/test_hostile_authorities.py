"""One cycle against authorities that refuse, hang, trickle, 503 or serve garbage.

Each misbehaving DirPort costs only its own fetch records: the cycle ends
within its deadline and the healthy authority's documents are all intact.
Authorities that trickle forever (and ORPorts that never answer a connect)
keep neither ``once`` from exiting nor ``run`` from stopping within its
grace time: those run the real command line in a child process.
"""

import json
import re
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import jsonschema
import pytest
import yaml

import agent.loop.collect as collect_module
from agent.cli import main as cli
from agent.cli.report import build_report
from agent.config.loader import load_config
from agent.loop.collect import collect
from agent.model.snapshot import DocKind, Outcome
from tests.integration.commands import ROOT
from tests.integration.commands import agent as run_agent
from tests.integration.hostile_dirport import HostileDirPort, UnansweredPort, refused_port

SCHEMA = json.loads((Path(__file__).parents[2] / "docs" / "once.schema.json").read_text())
DEADLINE, TIMEOUT = 5.0, 2.0

# v3idents of the 2022 authorities, so the healthy server's real consensus
# carries valid signatures from "our" authorities.
IDENTS = ["14C131DFC5C6F93646BE72FA1401C02A8DF2E8B4", "23D15D965BC35114467363C165C4F724B64B4F66",
          "27102BC123E7AF1D4741AE047E160C91ADC76B21", "0232AF901C31A04EE9848595AF9BB7620D4C5B2E",
          "49015F787433103580E3B66A1707A00E60F2D15B", "E8A9C45EDE6D711294FADF8E7951F4DE6CA56B58",
          "ED03BB616EB2F60BEC80151114BB25CEF515B226", "D586D18309DED4CD6D57C18FDB97EFA96D330566",
          "EFCBE720AB3A82B99F9E953CD5BF50F7EEFC7B97"]
BEHAVIOURS = ["healthy", "busy", "hang", "trickle", "garbage", "truncated", "wrongtype", "short"]


@pytest.fixture(scope="module")
def hostile_config(tmp_path_factory):
    servers = [HostileDirPort(b.replace("wrongtype", "wrong-type")) for b in BEHAVIOURS]
    for server in servers:
        server.__enter__()
    bootstrap = [{"nickname": name, "v3ident": ident, "address": "127.0.0.1", "dir_port": server.port}
                 for name, ident, server in zip(BEHAVIOURS, IDENTS, servers)]
    bootstrap.append({"nickname": "refused", "v3ident": IDENTS[8], "address": "127.0.0.1",
                      "dir_port": refused_port()})
    path = tmp_path_factory.mktemp("hostile") / "agent.yaml"
    # discover off: the real consensus lists the real authorities' addresses,
    # and tests never send traffic off this machine.
    path.write_text(yaml.safe_dump({
        "vantage": "test",
        "authorities": {"bootstrap": bootstrap, "discover": False},
        "fetch": {"deadline_seconds": DEADLINE, "timeout_seconds": TIMEOUT},
    }))
    yield path
    for server in servers:
        server.__exit__()


@pytest.fixture(scope="module")
def snapshot(hostile_config):
    return collect(load_config(hostile_config, environ={}))


def record(snapshot, authority, kind):
    return next(r for r in snapshot.records if r.authority == authority and r.kind is kind)


def test_cycle_finishes_within_its_deadline(snapshot):
    assert (snapshot.finished_at - snapshot.started_at).total_seconds() < DEADLINE + 1.5
    assert len(snapshot.records) >= 9 * 5


def test_healthy_authority_is_intact(snapshot):
    view = snapshot.views["healthy"]
    assert len(view.consensus.routers) == 6088
    assert snapshot.accepted(view.consensus_signatures)
    assert len(view.microdesc_signatures.valid_identities) == 8
    assert len(view.key_certificates) == 9
    assert record(snapshot, "healthy", DocKind.BANDWIDTH_FILE).outcome is Outcome.ABSENT
    assert snapshot.valid_after.isoformat() == "2022-11-19T10:00:00"
    assert [d.nickname for d in snapshot.server_descriptors] == ["anonion", "Unnamed"]
    ok = record(snapshot, "healthy", DocKind.CONSENSUS)
    assert ok.status == 200 and ok.bytes > 2_000_000 and ok.digest and ok.clock_skew_seconds is not None


def test_busy_authority(snapshot):
    busy = record(snapshot, "busy", DocKind.CONSENSUS)
    assert (busy.outcome, busy.status, busy.error) == (Outcome.FAILED, 503, "HTTP 503 Directory busy, try again later")
    assert snapshot.views["busy"].consensus is None


def test_hanging_authority_times_out_and_the_rest_is_skipped(snapshot):
    hung = record(snapshot, "hang", DocKind.KEY_CERTIFICATES)  # the first request
    assert hung.outcome is Outcome.FAILED and hung.status is None
    assert hung.error.startswith("timed out after 2.")
    consensus = record(snapshot, "hang", DocKind.CONSENSUS)
    assert consensus.outcome is Outcome.SKIPPED and "did not answer the key-certificates request" in consensus.error


def test_trickling_authority_is_cut_off(snapshot):
    # 100 bytes every 0.2 s: the 20 kB of certificates take 40 s, so the
    # per-download budget (2 s) cuts them off, and the deadline the rest.
    trickle = record(snapshot, "trickle", DocKind.KEY_CERTIFICATES)
    assert trickle.outcome is Outcome.FAILED and trickle.status == 200 and "timed out" in trickle.error
    later = [r for r in snapshot.records_of("trickle") if r.kind is not DocKind.KEY_CERTIFICATES]
    assert any(r.outcome is Outcome.SKIPPED and "deadline" in r.error for r in later)


def test_garbage_truncated_and_wrong_type_are_named(snapshot):
    # Random bytes: refused at their first NUL (tor reads documents as C strings), or as no network status at all.
    garbage = record(snapshot, "garbage", DocKind.CONSENSUS).error
    assert "a NUL byte" in garbage or "not a v3 network status document" in garbage
    assert record(snapshot, "garbage", DocKind.KEY_CERTIFICATES).outcome is Outcome.FAILED
    truncated = record(snapshot, "truncated", DocKind.CONSENSUS)
    assert truncated.outcome is Outcome.FAILED and truncated.error.startswith("consensus from truncated")
    assert snapshot.views["truncated"].microdesc_consensus is not None  # only the consensus was cut
    wrong = record(snapshot, "wrongtype", DocKind.CONSENSUS)
    assert "expected ns consensus, got microdesc consensus" in wrong.error
    assert "expected vote, got ns consensus" in record(snapshot, "wrongtype", DocKind.VOTE).error


def test_refused_connection(snapshot):
    refused = record(snapshot, "refused", DocKind.KEY_CERTIFICATES)
    assert (refused.outcome, refused.status, refused.error) == (Outcome.FAILED, None, "connection refused")
    assert all(r.outcome is Outcome.SKIPPED for r in snapshot.records_of("refused")
               if r.kind is not DocKind.KEY_CERTIFICATES)


def test_report_follows_the_documented_schema(snapshot):
    report = build_report(snapshot)
    jsonschema.validate(report, SCHEMA)
    by_name = {item["nickname"]: item for item in report["authorities"]}
    assert by_name["busy"]["reachable"] is True and by_name["refused"]["reachable"] is False
    assert by_name["healthy"]["consensus"]["accepted"] is True
    assert report["failures"] >= 7


class _During2022Period(datetime):
    """The clock inside the served consensus's period (2022-11-19 10:00-11:00 UTC), as a live fetch would see it."""

    @classmethod
    def now(cls, tz=None):
        moment = datetime(2022, 11, 19, 10, 30, tzinfo=timezone.utc)
        return moment.astimezone(tz) if tz else moment.replace(tzinfo=None)


def test_once_cli_prints_the_table_and_json(hostile_config, capsys, monkeypatch):
    # The healthy authority serves a real 2022 consensus; today's clock would (rightly) refuse it as expired.
    monkeypatch.setattr(collect_module, "datetime", _During2022Period)
    assert cli.main(["once", "--config", str(hostile_config)]) == 0
    table = capsys.readouterr().out
    assert "latest consensus 2022-11-19T10:00:00Z" in table
    assert re.search(r"^  refused: connection refused \(127\.0\.0\.1:\d+\) \[key-certificates\]$", table,
                     re.MULTILINE), table
    assert re.search(r"^took \d.* in all, from the command's start \(fetching ", table, re.MULTILINE)
    assert cli.main(["once", "--config", str(hostile_config), "--json"]) == 0
    jsonschema.validate(json.loads(capsys.readouterr().out), SCHEMA)


def test_a_reply_shorter_than_promised_is_a_clear_failure(snapshot):
    short = record(snapshot, "short", DocKind.KEY_CERTIFICATES)
    assert short.outcome is Outcome.FAILED and short.status == 200
    assert short.error in ("the connection broke mid-document", "closed the connection mid-document (truncated)")
    assert snapshot.views["short"].key_certificates == []


TRICKLING = ("trickle-headers", "trickle-body", "trickle-deflate")
#: The margin of the hang guards below: the command line's start-up, and judging and recording the healthy
#: authority's consensus after the fetches, on a busy machine. Before the fix both commands hung for good.
MARGIN = 30.0


@pytest.fixture
def trickling_config(tmp_path):
    """A config watching one healthy authority and three that trickle forever, whose ORPorts never answer.

    Returns a function taking the fetch and schedule sections, and the servers (for their request logs).
    """
    servers = [HostileDirPort(behaviour) for behaviour in ("healthy", *TRICKLING)]
    with UnansweredPort() as orport:
        for server in servers:
            server.__enter__()

        def write(fetch: dict, schedule: dict | None = None) -> Path:
            bootstrap = [{"nickname": server.behaviour.replace("-", ""), "v3ident": ident, "address": "127.0.0.1",
                          "dir_port": server.port, "or_port": orport.port} for server, ident in zip(servers, IDENTS)]
            path = tmp_path / "agent.yaml"
            path.write_text(yaml.safe_dump({
                "vantage": "test", "state_dir": str(tmp_path / "state"),
                "authorities": {"bootstrap": bootstrap, "discover": False},
                "fetch": fetch, "schedule": schedule or {},
            }))
            return path

        write.servers = servers
        yield write
        for server in servers:
            server.__exit__()


def test_once_exits_within_its_deadline_while_authorities_trickle(trickling_config):
    deadline = 6.0
    config = trickling_config({"deadline_seconds": deadline, "timeout_seconds": 2})
    started = time.monotonic()
    try:
        done = run_agent("once", "--config", config, "--json", timeout=deadline + MARGIN)  # the hang guard
    except subprocess.TimeoutExpired:
        pytest.fail(f"once still running {deadline + MARGIN:.0f} s after it started (deadline {deadline:.0f} s)")
    print(f"once with three authorities trickling forever: exit {done.returncode} after "
          f"{time.monotonic() - started:.1f} s (deadline {deadline:.0f} s)")
    assert done.returncode in (cli.EXIT_OK, cli.EXIT_PROBLEM), done.stderr[-2000:]  # it reports, then exits
    report = json.loads(done.stdout)
    by_name = {item["nickname"]: item for item in report["authorities"]}
    for name in ("trickleheaders", "tricklebody", "trickledeflate"):
        assert by_name[name]["failures"][0].startswith("key-certificates: timed out after 2."), by_name[name]


def test_run_stops_within_its_grace_time_while_authorities_trickle(trickling_config, tmp_path):
    # Long enough for the interrupted cycle to record what it has (so the process exits cleanly, not by
    # abandoning the cycle at the end of the grace time); deadline and timeout far beyond the hang guard, so
    # that only the SIGTERM can end the trickling fetches in time.
    grace = 8.0
    config = trickling_config({"deadline_seconds": 300, "timeout_seconds": 300}, {"grace_seconds": grace})
    log = tmp_path / "agent.log"
    with open(log, "ab") as output:
        daemon = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config", str(config)], cwd=ROOT,
                                  stdout=output, stderr=subprocess.STDOUT)
    try:
        _wait_for_requests(trickling_config.servers, daemon)
        time.sleep(1.5)  # a few bytes into each trickle
        started = time.monotonic()
        daemon.send_signal(signal.SIGTERM)
        try:
            code = daemon.wait(grace + MARGIN)  # the hang guard
        except subprocess.TimeoutExpired:
            pytest.fail(f"run still running {grace + MARGIN:.0f} s after SIGTERM (grace {grace:.0f} s):\n"
                        + log.read_text()[-2000:])
        took = time.monotonic() - started
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
    print(f"run with three authorities trickling forever: exit {code} {took:.1f} s after SIGTERM (grace {grace:.0f} s)")
    assert code == 0, log.read_text()[-2000:]
    assert "received SIGTERM" in log.read_text()


def _wait_for_requests(servers, daemon: subprocess.Popen, guard: float = 60.0) -> None:
    """Waits until every trickling server is answering a request of the daemon's first cycle."""
    end = time.monotonic() + guard
    while not all(server.requests for server in servers if server.behaviour in TRICKLING):
        assert daemon.poll() is None, "the daemon exited before its first cycle"
        assert time.monotonic() < end, f"no request reached every trickling server within {guard:.0f} s"
        time.sleep(0.2)
