"""What people read: the shared formatting helpers (agent/cli/human.py) and each command's human output.

Issue 22 part 5: aligned tables, counts in the right number, sizes and
durations in human units, every time in UTC with ``Z``, no Python dict or
list printed; ``outbox status`` reads beside a running daemon and changes
nothing; every command-line argument explains itself.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import time
from pathlib import Path

from agent.cli import main as cli
from agent.cli.human import duration, joined, number, plural, printable, size, table, utc
from agent.cli.report import cause, command_seconds, failure_lines, render_table
from agent.pipeline.state import State
from agent.store.outbox import Outbox, inspect

#: A time with an offset or none where one with Z belongs: "2026-12-06T11:00:00+00:00", "2026-12-06 11:00".
ZONELESS = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d(:\d\d)?(?!:?\d*Z)")


def config_file(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "agent.yaml"
    path.write_text(f"state_dir: {tmp_path / 'state'}\nstore:\n  embedded: false\n{extra}")
    return path


def assert_for_people(text: str) -> None:
    """No Python notation and no time without its Z."""
    assert "{" not in text and "}" not in text and "['" not in text, text
    assert not ZONELESS.search(text), ZONELESS.search(text)


# --- the helpers -----------------------------------------------------------------------------------------------

def test_plural_and_joined():
    assert [plural(n, "period") for n in (0, 1, 2, 1234)] == ["0 periods", "1 period", "2 periods", "1,234 periods"]
    assert plural(1, "delivery", "deliveries") == "1 delivery" and plural(3, "delivery", "deliveries") == \
        "3 deliveries"
    assert [joined(parts) for parts in ([], ["a"], ["a", "b"], ["a", "b", "c"])] == ["", "a", "a and b", "a, b and c"]


def test_sizes_in_binary_units():
    assert [size(b) for b in (None, 0, 512, 1023, 1024, 1536, 235_920, 1 << 30, 3 << 40)] == [
        "-", "0 B", "512 B", "1023 B", "1.0 KiB", "1.5 KiB", "230.4 KiB", "1.0 GiB", "3.0 TiB"]


def test_durations_lose_precision_as_they_grow():
    assert [duration(s) for s in (None, 0, 0.0004, 0.185, 8.23, 42.4, 59.4, 60, 90, 2700, 3600, 12_000, 86_340,
                                  86_400, 187_200, -0.4)] == [
        "-", "0 s", "0.4 ms", "185 ms", "8.2 s", "42 s", "59 s", "1 min", "1 min 30 s", "45 min", "1 h",
        "3 h 20 min", "23 h 59 min", "1 d", "2 d 4 h", "-400 ms"]


def test_numbers_by_magnitude():
    assert [number(v) for v in (0.00418232400034, "0.00418232400034", 3.14159, 123.456, 999.96, 1234.5678, 6,
                                6.0, "6", 1_234_567, 1.5e-7, 2.5e15, -0.5, -12_345.6, 0, 0.1 + 0.2)] == [
        "0.004182", "0.004182", "3.142", "123.5", "1,000", "1,235", "6", "6", "6", "1,234,567", "1.5e-07",
        "2.5e+15", "-0.5", "-12,346", "0", "0.3"]
    assert [number(v) for v in ("NaN", "+Inf", "-Inf", "not a number", None)] == [
        "NaN", "+Inf", "-Inf", "not a number", "None"]


def test_every_time_in_utc_with_z():
    from datetime import datetime, timedelta, timezone

    assert utc(0) == "1970-01-01T00:00:00Z" and utc(None) == "-"
    assert utc(datetime(2026, 1, 1, 10)) == "2026-01-01T10:00:00Z"  # naive: UTC, as stem's
    assert utc(datetime(2026, 1, 1, 11, tzinfo=timezone(timedelta(hours=1)))) == "2026-01-01T10:00:00Z"
    assert utc("2026-01-01T10:00:00+00:00") == utc("2026-01-01T10:00:00Z") == "2026-01-01T10:00:00Z"
    assert utc("not a time") == "not a time"


def test_tables_align_and_escape():
    lines = table([("a", 1, "x"), ("bbbb", 22, "")], ("name", "n", "what"), right={1})
    assert lines == ["name   n  what", "a      1  x", "bbbb  22"]
    assert table([("label", "value"), ("longer label", "v")]) == ["label         value", "longer label  v"]
    assert table([]) == [] and printable("a\x1b[31mb\n") == "a\\x1b[31mb\\n"


# --- every argument explains itself ---------------------------------------------------------------------------

def arguments_without_help(parser: argparse.ArgumentParser, path: str = "allium-agent") -> list[str]:
    missing = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                if not helps.get(name):
                    missing.append(f"{path} {name}")
                missing += arguments_without_help(sub, f"{path} {name}")
        elif not action.help or action.help == argparse.SUPPRESS:
            missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")
    return missing


def test_every_command_argument_and_option_has_help():
    assert arguments_without_help(cli._parser()) == []


def test_json_options_say_so_in_the_help():
    parser = cli._parser()
    for command in (["status"], ["outbox", "status"], ["alerts", "status"], ["subscriptions", "list"], ["once"]):
        sub = parser
        for name in command:
            sub = next(a for a in sub._actions if isinstance(a, argparse._SubParsersAction)).choices[name]
        [option] = [a for a in sub._actions if "--json" in a.option_strings]
        assert "JSON" in option.help, command


# --- status ---------------------------------------------------------------------------------------------------

def test_status_is_an_aligned_report_without_python_notation(tmp_path, capsys):
    config = config_file(tmp_path)
    state = State(tmp_path / "state")
    now = int(time.time())
    state.record_processed(now - 1200, 3600, at=now - 1100)
    state.count("periods_processed", 5)
    state.count("cycles_without_consensus")
    state.set_last_cycle({"started_at": "2026-12-06T11:00:05+00:00", "fetch_failures": 2, "documents_rejected": 1,
                          "rejected": ["auth2 vote: a NUL byte on line 1"], "valid_after": "2026-12-06T11:00:00+00:00",
                          "period_seconds": 3600, "points": 6448, "storage": "kept in the outbox",
                          "periods_waiting": 1, "status": "processed", "duration_seconds": 8.213,
                          "next_run": "2026-12-06T12:00:10+00:00", "something_new": {"a": 1}})
    state.close()
    assert cli.main(["status", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert_for_people(out)
    lines = out.splitlines()
    assert lines[0] == "healthy           yes: last success 18 min ago"
    assert "counters          6 periods processed, 1 cycle without an accepted consensus" in lines
    assert "last cycle        processed in 8.2 s, started 2026-12-06T11:00:05Z" in lines
    assert "  consensus       2026-12-06T11:00:00Z, periods of 1 h" in lines
    assert "  points          6,448: kept in the outbox" in lines and "  outbox          1 period waits" in lines
    assert "  rejected        1 document" in lines and "                  auth2 vote: a NUL byte on line 1" in lines
    assert "  something new   a 1" in lines and lines[-1] == "  next run        2026-12-06T12:00:10Z"
    assert cli.main(["status", "--config", str(config), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["counters"] == {"periods_processed": 6, "cycles_without_consensus": 1}  # JSON keeps the raw


def test_status_before_any_period(tmp_path, capsys):
    assert cli.main(["status", "--config", str(config_file(tmp_path))]) == 1
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "healthy        NO: no period recorded yet" and "last cycle     none recorded" in out
    assert_for_people(out)


# --- outbox status --------------------------------------------------------------------------------------------

def files_of(directory: Path) -> dict[str, tuple[str, int]]:
    return {path.name: (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
            for path in sorted(directory.iterdir())}


def test_outbox_status_reads_beside_the_process_holding_it_and_changes_nothing(tmp_path, capsys):
    config = config_file(tmp_path)
    outbox = Outbox(tmp_path / "state" / "outbox", 1 << 30)  # held, as by a running daemon
    try:
        for hour in (1_800_000_000, 1_800_003_600, 1_800_007_200):
            outbox.append([f"tor_network relays=1i {hour}000000000"] * 200, hour)
        before = files_of(outbox.directory)
        assert cli.main(["outbox", "status", "--config", str(config)]) == 0
        out = capsys.readouterr().out
        assert cli.main(["outbox", "status", "--config", str(config), "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert files_of(outbox.directory) == before
    finally:
        outbox.close()
    assert_for_people(out)
    lines = out.splitlines()
    assert lines[1] == "waiting  3 periods, 2027-01-15T08:00:00Z to 2027-01-15T10:00:00Z"
    assert re.fullmatch(r"size     \d+ B of 1\.0 GiB \(0\.0 % full\)", lines[2]), lines[2]
    assert report == {"directory": str(tmp_path / "state" / "outbox"), "periods_waiting": 3,
                      "pending_bytes": report["pending_bytes"], "max_bytes": 1 << 30,
                      "first_period": "2027-01-15T08:00:00Z", "last_period": "2027-01-15T10:00:00Z",
                      "damaged_stretches": 0, "damaged_bytes": 0}
    assert report["pending_bytes"] > 0


def test_inspect_reports_damage_without_moving_it_and_a_missing_outbox_as_empty(tmp_path):
    assert inspect(tmp_path / "none", 100).periods == 0 and not (tmp_path / "none").exists()
    outbox = Outbox(tmp_path / "outbox", 1 << 20)
    outbox.append(["a 1i 1"], 3600)
    outbox.append(["b 1i 1"], 7200)
    outbox.close()
    data = tmp_path / "outbox" / "outbox.data"
    with open(data, "ab") as tail:
        tail.write(b"ALB3 half a record")
    before = files_of(tmp_path / "outbox")
    view = inspect(tmp_path / "outbox", 1 << 20)
    assert (view.periods, view.first, view.last, view.damaged, view.damaged_bytes) == (2, 3600, 7200, 1, 18)
    assert files_of(tmp_path / "outbox") == before


def test_outbox_status_lines_name_damage(tmp_path):
    from agent.cli.health import outbox_lines
    from agent.store.outbox import OutboxView

    lines = outbox_lines(OutboxView(tmp_path, 1, 3 << 20, 1 << 30, 3600, 3600, 2, 4096))
    assert lines[1:] == ["waiting  1 period, 1970-01-01T01:00:00Z", "size     3.0 MiB of 1.0 GiB (0.3 % full)",
                         "damaged  2 stretches, 4.0 KiB (set aside when the agent next opens the outbox; the newest "
                         "may be a period being written)"]


# --- alerts status and subscriptions list ---------------------------------------------------------------------

def test_alerts_status_tables(tmp_path, capsys):
    from agent.alerts.dispatch import Alerting
    from agent.config.loader import load_config
    from agent.model.findings import Finding
    from agent.pipeline.alert_ids import alert_ids

    path = config_file(tmp_path, "alerts:\n  routes:\n    - name: all\n      email: [list@example.org]\n")
    state = State(tmp_path / "state")
    alerting = Alerting(load_config(path, environ={}), state.db, environ={}, clock=lambda: 1_800_000_000)
    alerting.on_period([Finding("TorAuthorityClockSkew", "warning", {"authority": "moria1"}, "skew", "skewed", {})],
                       period=1_800_000_000)
    state.close()
    assert cli.main(["alerts", "status", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert_for_people(out)
    lines = out.splitlines()
    assert lines[:3] == ["active alerts: 1", "  severity  alert                           since                 told",
                         "  warning   TorAuthorityClockSkew (moria1)  2027-01-15T08:00:00Z  yes"]
    assert lines[3] == "messages: 1 waiting, 0 delivered, 0 given up"
    assert lines[4].split() == ["channel", "to", "subject", "tries", "last", "error"]
    assert lines[5].split()[:2] == ["email", "list@example.org"] and lines[5].endswith("0  not tried yet")
    quiet = sum(len(ids) for ids in alert_ids().values()) - 1
    assert lines[6:] == ["alert quality (a flap: an alarm gone within 3 periods):",
                         "check                  alarms/1000 periods  mean time to resolve  flaps  periods observed",
                         "TorAuthorityClockSkew               1000.0  -                         0                 1",
                         f"no alarm from the {quiet} other checks and alert kinds (--json lists them)"]


def test_subscriptions_list_is_a_table_and_json(tmp_path, capsys):
    path = config_file(tmp_path)
    fingerprint = "A" * 40
    assert cli.main(["subscriptions", "add", "op@example.org", "--relay", fingerprint, "--config", str(path)]) == 0
    assert cli.main(["subscriptions", "add", "other@example.org", "--contact", "Tor <x>", "--config", str(path)]) == 0
    capsys.readouterr()
    assert cli.main(["subscriptions", "list", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert_for_people(out)
    lines = out.splitlines()
    assert lines[0].split() == ["id", "status", "email", "kind", "target", "created"]
    assert lines[1].split()[:5] == ["1", "active", "op@example.org", "relay", fingerprint]
    assert lines[1].index("op@") == lines[2].index("other@") and lines[-1] == "2 subscriptions"
    assert cli.main(["subscriptions", "list", "--email", "op@example.org", "--config", str(path)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "1 subscription"
    assert cli.main(["subscriptions", "list", "--config", str(path), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(s["id"], s["kind"], s["target"], s["expires"]) for s in listed] == [
        (1, "relay", fingerprint, None), (2, "contact", "Tor <x>", None)]
    assert all(isinstance(s["created"], int) and "token" not in json.dumps(s) for s in listed)


# --- query ----------------------------------------------------------------------------------------------------

def test_query_table_shows_numbers_by_magnitude_and_csv_json_keep_them_raw(tmp_path, capsys, monkeypatch):
    import agent.store.query as query
    from agent.store.query import _result

    answer = _result({"resultType": "vector", "result": [
        {"metric": {"__name__": "ratio", "authority": "moria1"}, "value": [1_800_000_000, "0.00418232400034"]},
        {"metric": {"__name__": "relays", "authority": "tor26"}, "value": [1_800_000_000, "7123"]},
        {"metric": {"__name__": "bytes", "authority": "dizum"}, "value": [1_800_000_000, "123456789.25"]}]})
    monkeypatch.setattr(query, "run_query", lambda *a, **k: answer)
    path = config_file(tmp_path, "query:\n  url: http://127.0.0.1:9\n")
    assert cli.main(["query", "x", "--config", str(path)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "__name__  authority  time                        value",
        "ratio     moria1     2027-01-15T08:00:00Z     0.004182",
        "relays    tor26      2027-01-15T08:00:00Z        7,123",
        "bytes     dizum      2027-01-15T08:00:00Z  123,456,789"]
    assert cli.main(["query", "x", "--config", str(path), "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == ["ratio,moria1,2027-01-15T08:00:00Z,0.00418232400034",
                                                        "relays,tor26,2027-01-15T08:00:00Z,7123",
                                                        "bytes,dizum,2027-01-15T08:00:00Z,123456789.25"]
    assert cli.main(["query", "x", "--config", str(path), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["result"][0]["value"][1] == "0.00418232400034"
    monkeypatch.setattr(query, "run_query", lambda *a, **k: _result({"resultType": "vector", "result": []}))
    assert cli.main(["query", "x", "--config", str(path)]) == 0
    assert capsys.readouterr().out == "(no data)\n"


# --- once -----------------------------------------------------------------------------------------------------

def authority(name: str, port: int, failures: list[str], reachable: bool = False) -> dict:
    return {"nickname": name, "address": "127.0.0.1", "dir_port": port, "reachable": reachable,
            "latency_seconds": 0.0123 if reachable else None, "clock_skew_seconds": -0.4 if reachable else None,
            "consensus": None, "vote": {"relays": 1234} if reachable else None, "failures": failures}


#: requests' message for a refused connect to a long descriptor URL, and what agent.fetch.http keeps of it.
FULL = ("download failed: ConnectionError: HTTPConnectionPool(host='127.0.0.1', port=9232): Max retries exceeded "
        "with url: /tor/server/d/" + "+".join(["A" * 40] * 3) + " (Caused by NewConnectionError('<agent.fetch.http."
        "_BoundedConnection object at 0x7f3a2c>: Failed to establish a new connection: [Errno 113] No route to "
        "host'))")
CUT = FULL[:217]


def once_report() -> dict:
    not_attempted = "not attempted: auth1 did not answer the key-certificates request"
    return {
        "vantage": "test", "started_at": "2026-12-06T11:18:22Z", "duration_seconds": 0.185, "valid_after": None,
        "quorum": 2, "authority_changes": {"added": [], "missing": ["auth3"], "moved": []},
        "authorities": [
            authority("auth1", 9231, ["key-certificates: connection refused"]
                      + [f"{kind}: {not_attempted}" for kind in ("consensus", "vote", "consensus-microdesc")]),
            authority("auth2", 9232, ["consensus: consensus from auth2 (http://127.0.0.1:9232/tor/status-vote/"
                                      "current/consensus): line 1: a NUL byte"], reachable=True)],
        "server_descriptors": {"count": 0, "from": None, "fetches": [
            {"kind": "server-descriptors", "url": f"http://127.0.0.1:9232/tor/server/d/{'C' * 40}+{index}",
             "error": "download failed: ConnectionError: ...: Failed to establish a new connection: [Errno 113] "
                      "No route to host"} for index in range(6)]},
        "failures": 11,
        "storage": {"points": 6448, "stored": True, "destination": None, "periods_written": 0, "lines_written": 0,
                    "periods_waiting": 1, "error": None},
    }


def test_once_failures_name_the_cause_first_and_summarise_repeats():
    assert failure_lines(once_report()) == [
        "auth1: connection refused (127.0.0.1:9231) [key-certificates]",
        "auth1: not attempted: auth1 did not answer the key-certificates request "
        "[consensus, vote, consensus-microdesc]",
        "auth2: line 1: a NUL byte (127.0.0.1:9232) [consensus]",
        "auth2: no route to host [server-descriptors: same failure ×6]"]


def test_causes_come_out_of_the_http_librarys_wrapping():
    assert cause("connection refused") == "connection refused" and cause(None) == "unknown"
    assert cause("download failed: ConnectionError: HTTPConnectionPool(host='h', port=1): Max retries exceeded with "
                 "url: /x (Caused by NewConnectionError('<urllib3.connection.HTTPConnection object at 0x7f12>: "
                 "Failed to establish a new connection: [Errno 111] Connection refused'))") == "connection refused"
    assert cause(FULL) == "no route to host"
    assert cause(CUT) == "download failed: ConnectionError (the reason was cut short)"
    assert cause("download failed: ConnectionError: HTTPConnectionPool(host='h', port=1): Max retries exceeded "
                 "with url: /x (Caused by NewConnectionError('<a.B object at 0x7f>: Failed to") == \
        "cannot connect (the reason was cut short)"


def test_once_table_is_aligned_with_human_units_and_the_whole_commands_time():
    text = render_table(once_report(), wall_seconds=8.04)
    assert_for_people(text)
    lines = text.splitlines()
    assert lines[0] == "vantage test at 2026-12-06T11:18:22Z: latest consensus none accepted (quorum 2 signatures)"
    assert lines[1:4] == ["authority  reachable  latency     skew  serves valid-after   vote  signatures",
                          "auth1      NO               -        -  -                       -  -",
                          "auth2      yes          12 ms  -400 ms  -                   1,234  -"]
    assert "authorities missing (vs. the consensus): auth3" in lines and "failures: 11" in lines
    assert "points: 6,448; no store: kept in the outbox; 1 period waiting in the outbox" in lines
    assert lines[-1] == "took 8.0 s in all, from the command's start (fetching 185 ms)"
    assert render_table(once_report()).splitlines()[-1] == "took: fetching 185 ms"


def test_the_commands_time_counts_from_the_process_start():
    from agent.cli import report

    elapsed = command_seconds()
    assert 0 <= elapsed < 3600
    assert elapsed >= time.monotonic() - report._IMPORTED - 0.05  # the process began before the module loaded


# --- evaluate and backfill ------------------------------------------------------------------------------------

def test_evaluate_names_incidents_as_the_readme_does():
    from agent.evaluation.evaluate import INCIDENT_NAMES, Evaluation
    from agent.evaluation.replay import INCIDENTS

    assert set(INCIDENT_NAMES) == set(INCIDENTS)
    header = Evaluation().table().splitlines()[0]
    assert "mass departure: detected" in header and "measurement collapse: detected" in header
    assert "vanish" not in header and "bwauth_half" not in header
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    assert all(name in readme for name in INCIDENT_NAMES.values())


def test_evaluate_shows_backfills_progress_bar_not_lines():
    import inspect as inspection

    from agent.evaluation import evaluate
    from agent.loop import backfill

    for module in (evaluate, backfill):
        assert "tqdm(total=" in inspection.getsource(module) and 'unit="period"' in inspection.getsource(module)
    assert "print(" not in inspection.getsource(evaluate)
