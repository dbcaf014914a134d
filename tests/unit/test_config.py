"""The config loader: defaults, the documented example, and collect-all validation."""

import ast
import dataclasses
from pathlib import Path

import pytest
import yaml

from agent.checks.settings import CheckThresholds
from agent.cli import main as cli
from agent.config.loader import PARTS, SETTINGS, load_config
from agent.model.errors import ConfigError
from agent.model.snapshot import DOCUMENT_KINDS

EXAMPLE = Path(__file__).parents[2] / "config" / "allium-agent.example.yaml"


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "agent.yaml"
    path.write_text(text)
    return path


def test_defaults_watch_the_nine_live_voting_authorities():
    config = load_config(None, environ={})
    assert config.source == "<defaults>"
    assert [a.nickname for a in config.authorities.bootstrap] == [
        "moria1", "tor26", "dizum", "gabelmoo", "dannenberg", "maatuska", "longclaw", "bastet", "faravahar"]
    assert config.fetch.deadline_seconds == 60.0
    assert config.fetch.documents == DOCUMENT_KINDS
    assert config.fetch.extra_info is True
    assert config.vantage  # the host name


def test_example_file_documents_every_setting_with_its_default():
    example = load_config(EXAMPLE, environ={})
    defaults = load_config(None, environ={})
    assert example.fetch == defaults.fetch
    assert example.authorities == defaults.authorities
    assert example.log_level == defaults.log_level
    assert example.store == defaults.store
    assert example.metrics == defaults.metrics
    assert (example.alerts, example.notifiers) == (defaults.alerts, defaults.notifiers)
    assert example.subscriptions == defaults.subscriptions
    assert example.aroi == defaults.aroi
    assert example.state_dir == EXAMPLE.parent / "state"  # relative to the file
    raw = yaml.safe_load(EXAMPLE.read_text())
    for setting in SETTINGS:
        node = raw
        for part in setting.path.split("."):
            assert part in node, f"{setting.path} is not in the example config"
            node = node[part]


def test_every_mistake_is_reported_with_its_key_path(tmp_path):
    path = write(tmp_path, """
vantage: ""
logging: {level: LOUD}
fetch:
  timeout_seconds: ten
  deadline_seconds: -5
  max_workers: 2.5
  documents: [consensus, votes]
  retries: 3
authorities:
  discover: "yes"
  bootstrap:
    - "moria1 orport=9201 v3ident=XYZ 128.31.0.39:9231"
    - {nickname: a1, v3ident: F533C81CEF0BC0267857C99B2F471ADF249FA232, address: 127.0.0.1, dir_port: 99999}
colour: blue
""")
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    problems = caught.value.problems
    assert 'fetch.timeout_seconds: must be a positive number, got "ten"' in problems
    assert "fetch.deadline_seconds: must be a positive number, got -5" in problems
    assert "fetch.max_workers: must be a positive whole number, got 2.5" in problems
    assert any(p.startswith('fetch.documents: unknown document kind "votes"') for p in problems)
    assert "fetch.retries: unknown setting" in problems
    assert "colour: unknown setting" in problems
    assert 'authorities.discover: must be true or false, got "yes"' in problems
    assert 'logging.level: must be one of DEBUG, INFO, WARNING, ERROR, got "LOUD"' in problems
    assert any(p.startswith('vantage: must be a non-empty name') for p in problems)
    bootstrap = next(p for p in problems if p.startswith("authorities.bootstrap:"))
    assert "[0] v3ident of moria1 must be 40 hex digits" in bootstrap
    assert "[1] dir_port of a1 must be a port number, got 99999" in bootstrap
    assert len(problems) == 10


def test_cross_checks_run_once_values_are_valid(tmp_path):
    path = write(tmp_path, "fetch: {timeout_seconds: 90, deadline_seconds: 60}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert caught.value.problems == ["fetch.timeout_seconds: must not exceed fetch.deadline_seconds (90 > 60)"]


def test_unreadable_and_malformed_files_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the file"):
        load_config(tmp_path / "missing.yaml", environ={})
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "fetch: [unclosed\n"), environ={})
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(write(tmp_path, "- a\n- b\n"), environ={})


def test_environment_names_the_file(tmp_path):
    path = write(tmp_path, "vantage: lab\n")
    assert load_config(None, environ={"ALLIUM_AGENT_CONFIG": str(path)}).vantage == "lab"


def test_bootstrap_accepts_lines_and_mappings(tmp_path):
    path = write(tmp_path, """
authorities:
  bootstrap:
    - "auth1 orport=5000 v3ident=DA509FEC938DFEF32CB1C5F7321B48EE2A20BFD2 127.0.0.1:5001 \
F4DA 2FD9 6F43 E0FA 3CCE 206F 0096 4EA9 E3C9 7B36"
    - {nickname: auth2, v3ident: e784e6affebea7b2c91ddcbb3784e5fe354a9796, address: 127.0.0.1, dir_port: 5003}
""")
    first, second = load_config(path, environ={}).authorities.bootstrap
    assert (first.nickname, first.dir_port, first.or_port) == ("auth1", 5001, 5000)
    assert first.fingerprint == "F4DA2FD96F43E0FA3CCE206F00964EA9E3C97B36"
    assert second.v3ident == "E784E6AFFEBEA7B2C91DDCBB3784E5FE354A9796"
    assert second.base_url == "http://127.0.0.1:5003"


def test_config_check_exits_2_and_lists_every_problem(tmp_path, capsys):
    path = write(tmp_path, "fetch: {timeout_seconds: ten, max_workers: 0}\n")
    assert cli.main(["config", "check", str(path)]) == 2
    err = capsys.readouterr().err
    assert 'fetch.timeout_seconds: must be a positive number, got "ten"' in err
    assert "fetch.max_workers: must be a positive whole number, got 0" in err


def test_config_check_accepts_the_example(capsys):
    assert cli.main(["config", "check", str(EXAMPLE)]) == 0
    assert "OK (9 bootstrap authorities" in capsys.readouterr().out


def test_once_with_a_bad_config_starts_nothing(tmp_path, capsys, monkeypatch):
    import agent.loop.once

    def must_not_run(*args, **kwargs):
        raise AssertionError("a cycle ran despite a bad config")

    # cli looks run_cycle up in agent.loop.once when `once` runs.
    monkeypatch.setattr(agent.loop.once, "run_cycle", must_not_run)
    path = write(tmp_path, "fetch: {deadline_seconds: soon}\n")
    assert cli.main(["once", "--config", str(path)]) == 2
    assert "fetch.deadline_seconds" in capsys.readouterr().err


def test_alert_settings_that_would_leak_are_refused(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("subscriptions:\n  listen: 0.0.0.0:8080\nemail:\n  host: mail.example.org\n  security: none\n")
    with pytest.raises(ConfigError) as error:
        load_config(path, environ={})
    assert [p.split(":")[0] for p in error.value.problems] == ["alerts.public_url", "email.security"]


def test_check_thresholds_are_typed_one_field_a_key(tmp_path):
    raw = yaml.safe_load(EXAMPLE.read_text())
    keys = {field.name for field in dataclasses.fields(CheckThresholds)} - {"known_parameters"}
    assert keys == set(raw["checks"]["thresholds"])
    thresholds = load_config(write(tmp_path, "checks: {thresholds: {clock_skew_seconds: 3}, "
                                             "extra_known_parameters: [NewParam]}\n"), environ={}).checks.thresholds
    assert isinstance(thresholds, CheckThresholds)
    assert (thresholds.clock_skew_seconds, thresholds.latency_factor) == (3.0, 5.0)
    assert {"NewParam", "CircuitPriorityHalflifeMsec"} <= thresholds.known_parameters
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, "checks: {thresholds: {clock_skew: 3, latency_factor: fast}}\n"), environ={})
    assert caught.value.problems == ["checks.thresholds.clock_skew: unknown setting",
                                     'checks.thresholds.latency_factor: must be a positive number, got "fast"']


def test_parts_declare_their_settings_without_importing_the_config_package():
    for path in sorted((Path(__file__).parents[2] / "agent").glob("*/settings.py")):
        tree = ast.parse(path.read_text())
        imported = [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
        imported += [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
        assert not any(name.startswith("agent.config") for name in imported), path
    declared = [setting.path for setting in SETTINGS]
    assert len(declared) == len(set(declared)) and set(PARTS) <= {path.split(".")[0] for path in declared}


# --- hostile files: bounded work, a clear error naming the file ------------------------------------------------

LAUGHS = "".join(f"{name}: &{name} [{', '.join([f'*{previous}'] * 9)}]\n"
                 for previous, name in zip("abcdefgh", "bcdefghi"))
BILLION_LAUGHS = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + LAUGHS + "checks: {disabled: *i}\n"


def test_billion_laughs_is_refused_before_anything_is_expanded(tmp_path, capsys):
    """Before: 10^8 "lol"s under checks.disabled took 17 s and 937 MB (10^9: the issue's 61 s, 5.5 GB); now a
    ConfigError, having allocated under 2 MB (tracemalloc's count)."""
    import tracemalloc

    path = write(tmp_path, BILLION_LAUGHS)
    assert len(BILLION_LAUGHS) < 600
    tracemalloc.start()
    try:
        with pytest.raises(ConfigError) as caught:
            load_config(path, environ={})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert caught.value.source == str(path)
    assert caught.value.problems[0].startswith("anchors and aliases expand to more than 100000 values")
    assert peak < 2 * 2**20, peak
    assert cli.main(["config", "check", str(path)]) == 2
    assert "anchors and aliases expand" in capsys.readouterr().err


def test_anchors_and_aliases_within_the_bound_still_work(tmp_path):
    path = write(tmp_path, "store: {token_env: &token AGENT_SECRET}\nemail: {password_env: *token}\n"
                           "checks: {disabled: &off [TorConsensusStale]}\nx: *off\n")
    with pytest.raises(ConfigError) as caught:  # the alias resolves; the unknown key is the only problem
        load_config(path, environ={})
    assert caught.value.problems == ["x: unknown setting"]
    path = write(tmp_path, "store: {token_env: &token AGENT_SECRET}\nemail: {password_env: *token}\n")
    config = load_config(path, environ={})
    assert config.store.token_env == config.notifiers["email"].password_env == "AGENT_SECRET"


@pytest.mark.parametrize("text, problem", [
    ("vantage: &a [*a]\n", "an alias at line 1 refers to a node that contains it"),
    ("checks: {disabled: " + "[" * 5000 + "]" * 5000 + "}\n", "nested deeper than 50 levels"),
    ("checks:\n  silences:\n    - {check: X, until: 2024-13-45, reason: r}\n", "month must be in 1..12"),
    ("fetch: {max_workers: " + "9" * 5000 + "}\n", "not valid YAML: Exceeds the limit"),
    ("vantage: !!python/object:os.system x\n", "not valid YAML"),
], ids=["recursive alias", "deep nesting", "impossible date", "5000-digit number", "python tag"])
def test_hostile_yaml_is_a_config_error_naming_the_file(tmp_path, text, problem):
    """Before: the first three and the number raised RecursionError or ValueError tracebacks."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert caught.value.source == str(path) and problem in caught.value.problems[0]


def test_files_that_are_not_config_files_are_refused_by_name(tmp_path):
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"vantage: \xff\xfe\n")
    with pytest.raises(ConfigError, match=r"binary.yaml: not UTF-8 text \(byte 9\)"):
        load_config(binary, environ={})
    with pytest.raises(ConfigError, match="larger than 1024 KiB"):  # read no further than 1 MiB, not forever
        load_config("/dev/zero", environ={})
    with pytest.raises(ConfigError, match="cannot read the file: Is a directory"):
        load_config(tmp_path, environ={})


# --- state_dir: a directory of the agent's own ------------------------------------------------------------------

@pytest.mark.parametrize("state_dir", ["/", "/etc", "/var/lib", "/tmp", "/proc/self", "/dev/shm/allium", "//usr/"])
def test_a_state_dir_that_is_root_or_a_system_directory_is_refused(tmp_path, state_dir, capsys):
    """Before: `state_dir: /` passed `config check`, and the agent then wrote /agent.sqlite."""
    path = write(tmp_path, f"state_dir: {state_dir}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert caught.value.problems[0].startswith("state_dir: must be a directory of the agent's own, not / or a "
                                               "system directory, got ")
    assert cli.main(["config", "check", str(path)]) == 2


def test_a_state_dir_reached_through_a_symlink_or_dots_is_judged_where_it_leads(tmp_path):
    (tmp_path / "link").symlink_to("/")
    for state_dir in (tmp_path / "link", "/var/lib/../../"):
        with pytest.raises(ConfigError, match="not / or a system directory"):
            load_config(write(tmp_path, f"state_dir: {state_dir}\n"), environ={})


def test_a_state_dir_that_is_a_file_or_below_one_is_refused(tmp_path):
    (tmp_path / "plain").write_text("not a directory")
    with pytest.raises(ConfigError, match=r"state_dir: .*plain is a file, not a directory"):
        load_config(write(tmp_path, f"state_dir: {tmp_path / 'plain'}\n"), environ={})
    with pytest.raises(ConfigError, match=r"state_dir: .*plain/state cannot be created: .*plain is a file"):
        load_config(write(tmp_path, f"state_dir: {tmp_path / 'plain' / 'state'}\n"), environ={})
    with pytest.raises(ConfigError, match="state_dir: must not contain a NUL character"):
        load_config(write(tmp_path, 'state_dir: "state\\0x"\n'), environ={})
    assert load_config(write(tmp_path, "state_dir: /var/lib/allium-agent\n"), environ={}).state_dir == \
        Path("/var/lib/allium-agent")


def test_the_aroi_resolver_must_be_an_address(tmp_path):
    path = tmp_path / "agent.yaml"
    path.write_text("aroi:\n  resolver: dns.example.org:53\n")
    with pytest.raises(ConfigError, match=r"aroi.resolver: must be an IP address and port"):
        load_config(path, environ={})
    path.write_text("aroi:\n  resolver: '[::1]:5353'\n")
    assert load_config(path, environ={}).aroi.resolver == ("::1", 5353)
