"""docker-compose.yml: valid Compose in each profile, and in each profile the agent, Grafana's default
datasource, the dashboards and the alert rules all use one store.

No Docker engine and no Grafana server run here. The file is interpolated as Compose does it (the whole
file, every profile's services, before profiles apply: so `${VAR:?}` is required by every profile), then
checked against the Compose Specification's JSON schema and against the agent config, the Grafana
provisioning and the dashboards each profile mounts.

tests/data/compose-spec.json is the Compose Specification's schema (compose-spec/compose-spec,
schema/compose-spec.json; Apache-2.0, tests/data/compose-spec.LICENSE) exactly as check-jsonschema 0.39.0
(PyPI, October 2026) vendors it in check_jsonschema/builtin_schemas/vendor/compose-spec.json; its sha256 is
SCHEMA_SHA256, the one that package records in vendor/sha256/compose-spec.sha256. To update: `pip download
--no-deps check-jsonschema==VERSION`, copy that file and licenses/LICENSE.compose-spec, and set SCHEMA_SHA256.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).parents[2]
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
SCHEMA = ROOT / "tests" / "data" / "compose-spec.json"
SCHEMA_SHA256 = "d549057ebc2925f39f62799eab0db7b9e2c18b35b6c00595199116da3ed10e64"
PROFILES = ("victoriametrics", "influxdb")
#: The store image of each profile and the Grafana datasource type that reads it.
STORE_IMAGE = {"victoriametrics": "victoriametrics/victoria-metrics:", "influxdb": "influxdb:"}
DATASOURCE_TYPE = {"victoriametrics": "prometheus", "influxdb": "influxdb"}
GRAFANA_PROVISIONING = "/etc/grafana/provisioning/"
AGENT_CONFIG = "/etc/allium-agent/config.yaml"
BUILTIN_DATASOURCES = {"-- Grafana --", "-- Mixed --", "-- Dashboard --", "__expr__", "grafana"}


# --- Compose's interpolation --------------------------------------------------------------------------------

NAME = re.compile(r"[_a-zA-Z][_a-zA-Z0-9]*")
BRACED = re.compile(r"([_a-zA-Z][_a-zA-Z0-9]*)(?:(:?[-?+])(.*))?", re.S)


class Refused(Exception):
    """Compose would refuse the file: a `${VAR:?}` or `${VAR?}` without its value."""


class Unset(Exception):
    """A bare `$VAR` or `${VAR}` without a value: Compose warns and puts an empty string; we allow none."""


def interpolate(text: str, env: dict[str, str], used: set[str]) -> str:
    """`text` with Compose's substitutions: $$, $VAR, ${VAR}, ${VAR:-x}, ${VAR-x}, ${VAR:?x}, ${VAR?x},
    ${VAR:+x}, ${VAR+x}, nested operands. Names looked at go into `used`."""
    out, i = [], 0
    while i < len(text):
        if text[i] != "$":
            out.append(text[i])
            i += 1
        elif text.startswith("$$", i):
            out.append("$")
            i += 2
        elif text.startswith("${", i):
            end, depth = i + 2, 1
            while depth:
                if end >= len(text):
                    raise ValueError(f"unclosed ${{ in {text!r}")
                if text.startswith("${", end):
                    depth, end = depth + 1, end + 2
                    continue
                depth -= text[end] == "}"
                end += 1
            out.append(_braced(text[i + 2:end - 1], env, used))
            i = end
        elif match := NAME.match(text, i + 1):
            used.add(match.group())
            if match.group() not in env:
                raise Unset(match.group())
            out.append(env[match.group()])
            i = match.end()
        else:
            out.append("$")
            i += 1
    return "".join(out)


def _braced(body: str, env: dict[str, str], used: set[str]) -> str:
    match = BRACED.fullmatch(body)
    if match is None:
        raise ValueError(f"not a Compose substitution: ${{{body}}}")
    name, operator, operand = match.groups()
    used.add(name)
    value = env.get(name)
    if operator is None:
        if value is None:
            raise Unset(name)
        return value
    present = value is not None and (value != "" or not operator.startswith(":"))
    if operator[-1] == "-":
        return value if present else interpolate(operand, env, used)
    if operator[-1] == "?":
        if not present:
            raise Refused(f"{name}: {operand}")
        return value
    return interpolate(operand, env, used) if present else ""


def interpolate_tree(node, env: dict[str, str], used: set[str]):
    """Compose interpolates values, never keys."""
    if isinstance(node, str):
        return interpolate(node, env, used)
    if isinstance(node, dict):
        return {key: interpolate_tree(value, env, used) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate_tree(value, env, used) for value in node]
    return node


def load(env: dict[str, str], used: set[str] | None = None) -> dict:
    return interpolate_tree(yaml.safe_load(COMPOSE.read_text()), env, set() if used is None else used)


def profile_view(model: dict, profile: str) -> dict:
    """What `docker compose --profile PROFILE config` keeps: the services enabled in that profile."""
    services = {name: service for name, service in model["services"].items()
                if not service.get("profiles") or profile in service["profiles"]}
    return {**model, "services": services}


def test_the_interpolation_is_composes():
    """The cases of the Compose Specification's interpolation chapter, on which everything below rests."""
    env = {"SET": "v", "EMPTY": ""}
    cases = {"${SET}": "v", "$SET/x": "v/x", "${EMPTY:-d}": "d", "${EMPTY-d}": "", "${UNSET-d}": "d",
             "${SET:?e}": "v", "${EMPTY?e}": "", "${SET:+r}": "r", "${EMPTY:+r}": "", "${EMPTY+r}": "r",
             "${UNSET+r}": "", "${UNSET:-${SET}}": "v", "${UNSET:-${UNSET2:-d}}": "d", "$$SET": "$SET", "a$": "a$"}
    for text, expected in cases.items():
        assert interpolate(text, env, set()) == expected, text
    for text, error in (("${EMPTY:?e}", Refused), ("${UNSET?e}", Refused), ("${UNSET}", Unset), ("$UNSET", Unset)):
        with pytest.raises(error):
            interpolate(text, env, set())


# --- the environments a user can have -------------------------------------------------------------------------

def read_env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def string_values(node) -> list[str]:
    if isinstance(node, str):
        return [node]
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else []
    return [text for child in children for text in string_values(child)]


#: Every value Compose interpolates (no comments, no keys), one a line.
COMPOSE_VALUES = "\n".join(string_values(yaml.safe_load(COMPOSE.read_text())))
EXAMPLE = read_env_file(ENV_EXAMPLE)
#: What Compose refuses to start without (in every profile).
REQUIRED = set(re.findall(r"\$\{(\w+):?\?", COMPOSE_VALUES))
#: What a profile needs besides: the influxdb service refuses to initialise without these
#: (test_influxdb_refuses_to_initialise_without_its_secrets).
PROFILE_REQUIRED = {"victoriametrics": set(), "influxdb": {"INFLUXDB_ADMIN_PASSWORD", "ALLIUM_INFLUX_TOKEN"}}


def sample(name: str) -> str:
    return "test-" + name.lower().replace("_", "-")


#: Only the required values set; everything else unset.
MINIMAL_ENV = {name: sample(name) for name in REQUIRED}
#: .env.example copied and its required values filled in: the optional ones are set but empty.
EXAMPLE_ENV = {name: value or (sample(name) if name in REQUIRED else "") for name, value in EXAMPLE.items()}
#: Every value in .env.example set (the webhook too, the influxdb profile's secrets too).
FULL_ENV = {name: value or sample(name) for name, value in EXAMPLE.items()}
ENVS = {"minimal": MINIMAL_ENV, "example": EXAMPLE_ENV, "full": FULL_ENV}


def profile_env(profile: str, env_name: str) -> dict[str, str]:
    """ENVS[env_name] with what the profile itself requires filled in."""
    return {**ENVS[env_name], **{name: sample(name) for name in PROFILE_REQUIRED[profile]}}


# --- reading a profile's stack ------------------------------------------------------------------------------

def mounts(service: dict) -> list[tuple[str, str]]:
    """(source, target) of each volume in short syntax."""
    return [tuple(volume.split(":")[:2]) for volume in service.get("volumes", [])]


def binds(service: dict) -> dict[str, Path]:
    """target -> host path of each bind mount."""
    return {target: ROOT / source for source, target in mounts(service) if source.startswith(".")}


class Stack:
    """One profile's services, interpolated with `env`."""

    def __init__(self, profile: str, env: dict[str, str]):
        self.profile, self.env = profile, env
        self.model = profile_view(load(env), profile)
        services = self.model["services"]
        [self.agent_name] = [name for name, service in services.items() if "build" in service]
        [self.grafana_name] = [name for name, service in services.items()
                               if service.get("image", "").startswith("grafana/")]
        [self.store_name] = set(services) - {self.agent_name, self.grafana_name}
        self.agent, self.grafana = services[self.agent_name], services[self.grafana_name]
        self.store = services[self.store_name]

    def agent_config(self):
        from agent.config.loader import load_config

        return load_config(binds(self.agent)[AGENT_CONFIG], environ=self.agent.get("environment", {}))

    def provisioning(self, kind: str) -> list[tuple[Path, dict]]:
        """(host path, parsed) of each file Grafana reads from provisioning/<kind>/."""
        prefix = f"{GRAFANA_PROVISIONING}{kind}/"
        return [(path, yaml.safe_load(path.read_text())) for target, path in binds(self.grafana).items()
                if target.startswith(prefix)]

    def datasources(self) -> list[dict]:
        return [source for _, content in self.provisioning("datasources") for source in content["datasources"]]

    def default_datasource(self) -> dict:
        [default] = [source for source in self.datasources() if source.get("isDefault")]
        return default

    def dashboards(self) -> list[tuple[Path, dict]]:
        """Every dashboard a provider of this Grafana loads."""
        found = []
        for _, content in self.provisioning("dashboards"):
            for provider in content["providers"]:
                path = Path(provider["options"]["path"])
                [directory] = [host / path.relative_to(target) for target, host in binds(self.grafana).items()
                               if path.is_relative_to(target)]
                found += [(file, json.loads(file.read_text())) for file in sorted(directory.rglob("*.json"))]
        return found

    def rules(self) -> list[dict]:
        return [rule for _, content in self.provisioning("alerting") for group in content.get("groups", [])
                for rule in group["rules"]]

    def store_port(self) -> int:
        if self.profile == "victoriametrics":
            [listen] = [flag for flag in self.store["command"] if flag.startswith("-httpListenAddr=")]
            return int(listen.rsplit(":", 1)[1])
        return 8086  # influxd's http-bind-address default; the image documents no other


def address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "", parts.port or {"http": 80, "https": 443}[parts.scheme]


# --- 1. the Compose Specification ---------------------------------------------------------------------------

def schema_validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA.read_text())
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    return validator_class(schema)


def test_the_vendored_schema_is_the_one_check_jsonschema_ships():
    assert hashlib.sha256(SCHEMA.read_bytes()).hexdigest() == SCHEMA_SHA256
    assert json.loads(SCHEMA.read_text())["$schema"] == "https://json-schema.org/draft/2020-12/schema"


@pytest.mark.parametrize("env_name", ENVS)
@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_is_valid_compose(profile, env_name):
    validator = schema_validator()
    model = load(profile_env(profile, env_name))
    errors = [f"{'.'.join(map(str, error.absolute_path))}: {error.message}"
              for view in (model, profile_view(model, profile)) for error in validator.iter_errors(view)]
    assert errors == []


def test_the_schema_refuses_what_compose_refuses():
    """The checks above can fail: a misspelt service key, a profile given as a string, a bad port."""
    validator = schema_validator()
    model = load(FULL_ENV)
    assert list(validator.iter_errors(model)) == []
    for service_name, key, value in (("agent-victoriametrics", "hostnme", "x"),
                                     ("victoriametrics", "profiles", "victoriametrics"),
                                     ("grafana-influxdb", "depends_on", "influxdb"),
                                     ("influxdb", "restart", ["always"])):
        broken = json.loads(json.dumps(model))
        broken["services"][service_name][key] = value
        assert list(validator.iter_errors(broken)), (service_name, key)


def test_each_service_is_in_one_profile_and_each_profile_is_a_whole_stack():
    assert EXAMPLE["COMPOSE_PROFILES"] in PROFILES  # `docker compose up` after `cp .env.example .env` picks one
    model = load(FULL_ENV)
    for name, service in model["services"].items():
        assert len(service.get("profiles", [])) == 1 and service["profiles"][0] in PROFILES, name
    for profile in PROFILES:
        stack = Stack(profile, FULL_ENV)
        assert stack.store["image"].startswith(STORE_IMAGE[profile])
        services = stack.model["services"]
        for name, service in services.items():
            assert set(service.get("depends_on", [])) <= set(services), name  # no dependency on another profile
            for source, _ in mounts(service):
                assert source.startswith(".") or source in model["volumes"], (name, source)
            assert all(port.startswith("127.0.0.1:") for port in service.get("ports", [])), name
        assert set(stack.agent["depends_on"]) == set(stack.grafana["depends_on"]) == {stack.store_name}
    # Different Grafana databases: neither keeps the other's datasource or rules after a switch.
    grafana_volumes = [[source for source, target in mounts(Stack(profile, FULL_ENV).grafana)
                        if target == "/var/lib/grafana"] for profile in PROFILES]
    assert len({volume for volumes in grafana_volumes for volume in volumes}) == len(PROFILES)


@pytest.mark.parametrize("env_name", ENVS)
@pytest.mark.parametrize("profile", PROFILES)
def test_every_bind_mount_exists(profile, env_name):
    stack = Stack(profile, profile_env(profile, env_name))
    for service in stack.model["services"].values():
        for target, path in binds(service).items():
            if Path(target).suffix in (".yml", ".yaml"):
                assert path.is_file(), path  # else Docker creates a directory in its place
            else:
                assert path.is_dir() and any(path.iterdir()), path


# --- 2. one store per profile -------------------------------------------------------------------------------

@pytest.mark.parametrize("profile", PROFILES)
def test_the_agent_writes_to_and_queries_the_store_grafana_reads(profile):
    stack = Stack(profile, FULL_ENV)
    config = stack.agent_config()
    default = stack.default_datasource()
    store = (stack.store_name, stack.store_port())
    assert config.store.url and address(config.store.url) == store
    assert address(default["url"]) == store
    assert default["type"] == DATASOURCE_TYPE[profile]
    assert [source["uid"] for source in stack.datasources()] == [default["uid"]]  # no datasource of another store
    if profile == "victoriametrics":
        assert config.query.url and address(config.query.url) == store  # `allium-agent query` in the container
        return
    assert config.query.url is None  # InfluxDB 2 answers no PromQL
    init = stack.store["environment"]
    assert default["jsonData"]["dbName"] == config.store.bucket == init["DOCKER_INFLUXDB_INIT_BUCKET"]
    assert config.store.org == init["DOCKER_INFLUXDB_INIT_ORG"]
    # One token: the one InfluxDB is set up with, the agent writes with and Grafana reads with.
    [grafana_variable] = re.findall(r"\$__env\{(\w+)\}", default["secureJsonData"]["httpHeaderValue1"])
    token = init["DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"]
    assert token and stack.agent["environment"][config.store.token_env] == token
    assert stack.grafana["environment"][grafana_variable] == token


def test_victoriametrics_runs_with_the_flags_the_agent_needs():
    from agent.store.victoria_flags import victoria_flags

    command = Stack("victoriametrics", FULL_ENV).store["command"]
    # Re-sent periods (same timestamps) count once; the flags the agent's own VictoriaMetrics runs with.
    needed = {"-dedup.minScrapeInterval=1s", *victoria_flags(3600)}
    assert needed <= set(command), needed - set(command)
    assert any(flag.startswith("-retentionPeriod=") for flag in command)


def datasource_refs(node, path=""):
    """(json path, datasource) of every `datasource` in a dashboard: {"type", "uid"} or a bare uid/name."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource" and value is not None:
                yield path, value
            elif key != "templating":
                yield from datasource_refs(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from datasource_refs(value, f"{path}[{index}]")


@pytest.mark.parametrize("profile", PROFILES)
def test_every_datasource_grafana_uses_is_provisioned_and_is_the_agents_store(profile):
    stack = Stack(profile, FULL_ENV)
    default = stack.default_datasource()
    uids = {source["uid"] for source in stack.datasources()}
    dashboards = stack.dashboards()
    assert len(dashboards) >= 5
    for path, dashboard in dashboards:
        variables = {variable["name"]: variable for variable in dashboard.get("templating", {}).get("list", [])}
        refs = list(datasource_refs(dashboard))
        assert refs, path
        for where, ref in refs:
            uid = ref.get("uid") if isinstance(ref, dict) else ref
            if uid in BUILTIN_DATASOURCES:
                continue
            if variable := re.fullmatch(r"\$\{?(\w+)\}?", uid or ""):
                # A datasource variable without a saved value starts on the default datasource if that has
                # the variable's type: it must, so the dashboard opens on the agent's store.
                chosen = variables[variable.group(1)]
                assert chosen["type"] == "datasource" and chosen["query"] == default["type"], (path, where)
                assert "current" not in chosen or chosen["current"].get("value") in (None, "", "default"), path
                assert not isinstance(ref, dict) or ref.get("type") in (None, default["type"]), (path, where)
            else:
                assert uid in uids, (path, where, uid)
    for rule in stack.rules():
        queried = {query["datasourceUid"] for query in rule["data"]} - {"__expr__"}
        assert queried == {default["uid"]}, rule["title"]


def test_the_victoriametrics_grafana_provisions_every_rule():
    from agent.dashboards.alerting import RULES

    assert sorted(rule["title"] for rule in Stack("victoriametrics", FULL_ENV).rules()) == sorted(
        rule.name for rule in RULES)


def test_the_influxdb_grafana_provisions_every_rule():
    from agent.dashboards.alerting import RULES

    assert sorted(rule["title"] for rule in Stack("influxdb", FULL_ENV).rules()) == sorted(
        rule.name for rule in RULES)


# --- 3. variables: documented, required only where needed ---------------------------------------------------

def test_every_variable_is_documented_and_only_the_required_ones_are_required():
    used: set[str] = set()
    load(FULL_ENV, used)
    assert used == set(re.findall(r"\$\{(\w+)", COMPOSE_VALUES))  # the scanner saw every reference
    assert used <= set(EXAMPLE), used - set(EXAMPLE)
    assert {"ALLIUM_VANTAGE", "GRAFANA_ADMIN_PASSWORD", "ALLIUM_ALERT_EMAIL", "GF_SMTP_HOST"} <= REQUIRED
    for name in REQUIRED:
        assert EXAMPLE[name] == "", name  # to be filled in: no default credentials, no made-up addresses
        with pytest.raises(Refused):
            load({key: value for key, value in MINIMAL_ENV.items() if key != name})
    load(MINIMAL_ENV)  # every other variable has a default: no Unset
    for profile, names in PROFILE_REQUIRED.items():
        assert all(EXAMPLE[name] == "" for name in names) and not names & REQUIRED, profile
    # Secrets have no default but the empty string.
    for secret in ("GRAFANA_ADMIN_PASSWORD", "INFLUXDB_ADMIN_PASSWORD", "ALLIUM_INFLUX_TOKEN", "GF_SMTP_PASSWORD",
                   "ALLIUM_MATRIX_TOKEN"):
        assert EXAMPLE[secret] == "", secret
        assert set(re.findall(rf"\$\{{{secret}:?-([^}}]*)\}}", COMPOSE_VALUES)) <= {""}, secret


def grafana_variables(path: Path, content: dict) -> set[str]:
    """The environment variables Grafana substitutes in a provisioning file ($__env{X}, ${X}, $X; not $$X).
    Alert rule annotations are not substituted (they hold {{ $labels.x }} templates)."""
    if "groups" in content:
        content = {**content, "groups": [{**group, "rules": [{k: v for k, v in rule.items() if k != "annotations"}
                                                             for rule in group["rules"]]}
                                         for group in content["groups"]]}
    text = yaml.safe_dump(content).replace("$$", "")
    return {name for match in re.findall(r"\$(?:__env\{(\w+)\}|\{(\w+)\}|([A-Za-z_]\w*))", text)
            for name in match if name}


@pytest.mark.parametrize("env_name", ENVS)
@pytest.mark.parametrize("profile", PROFILES)
def test_grafana_reads_only_variables_its_container_has(profile, env_name):
    """An optional value left out must take out what needs it: a webhook contact point without its URL would
    stop Grafana at start."""
    stack = Stack(profile, profile_env(profile, env_name))
    environment = stack.grafana["environment"]
    seen = set()
    for kind in ("datasources", "dashboards", "alerting"):
        for path, content in stack.provisioning(kind):
            for name in grafana_variables(path, content):
                seen.add(name)
                assert environment.get(name), (path, name)
    assert "ALLIUM_ALERT_EMAIL" in seen and ("ALLIUM_INFLUX_TOKEN" in seen) == (profile == "influxdb")


@pytest.mark.parametrize("profile", PROFILES)
def test_the_webhook_contact_point_is_there_only_when_configured(profile):
    def contact_points(env):
        [(path, content)] = [(path, content) for path, content in Stack(profile, env).provisioning("alerting")
                             if "contactPoints" in content]
        kinds = {receiver["type"]: receiver for point in content["contactPoints"] for receiver in point["receivers"]}
        policy = content["policies"][0]
        receivers = {policy["receiver"], *(route["receiver"] for route in policy["routes"])}
        assert receivers <= {point["name"] for point in content["contactPoints"]}, path
        return kinds

    for env in (MINIMAL_ENV, EXAMPLE_ENV):  # unset, or set but empty
        assert set(contact_points(env)) == {"email"}
    with_webhook = contact_points(FULL_ENV)
    assert set(with_webhook) == {"email", "webhook"}
    assert with_webhook["webhook"]["settings"]["url"] == "$__env{ALLIUM_ALERT_WEBHOOK_URL}"
    assert contact_points(MINIMAL_ENV)["email"] == with_webhook["email"]


@pytest.mark.parametrize("profile", PROFILES)
def test_the_vantage_comes_from_env_and_survives_recreation(profile, monkeypatch):
    """The agent's default vantage is its host name, which Docker makes up anew for each container."""
    stack = Stack(profile, FULL_ENV)
    raw = yaml.safe_load(binds(stack.agent)[AGENT_CONFIG].read_text())
    assert raw.get("vantage") is None
    hostname = yaml.safe_load(COMPOSE.read_text())["services"][stack.agent_name]["hostname"]
    with pytest.raises(Refused):  # required for this very service
        interpolate(hostname, {}, set())
    assert stack.agent["hostname"] == FULL_ENV["ALLIUM_VANTAGE"]
    import agent.config.values

    monkeypatch.setattr(agent.config.values.socket, "gethostname", lambda: stack.agent["hostname"])
    assert stack.agent_config().vantage == FULL_ENV["ALLIUM_VANTAGE"]


def test_influxdb_refuses_to_initialise_without_its_secrets(tmp_path):
    """Compose cannot require them (it interpolates the victoriametrics profile too), and InfluxDB would set
    itself up with a random token nobody knows. The gate runs here with a stand-in for the image's script."""
    stand_in = tmp_path / "entrypoint.sh"
    stand_in.write_text('#!/bin/sh\necho "started $*"\n')
    stand_in.chmod(0o755)

    def start(env):
        service = Stack("influxdb", env).store
        entrypoint = [part.replace("/entrypoint.sh", str(stand_in)) for part in service["entrypoint"]]
        return subprocess.run(entrypoint + service["command"], capture_output=True, text=True,
                              env={"PATH": "/usr/bin:/bin", **service["environment"]})

    started = start(FULL_ENV)
    assert started.returncode == 0 and started.stdout == "started influxd\n", started.stderr
    for missing in ("ALLIUM_INFLUX_TOKEN", "INFLUXDB_ADMIN_PASSWORD"):
        refused = start({**FULL_ENV, missing: ""})
        assert refused.returncode == 1 and refused.stdout == "" and missing in refused.stderr, missing
