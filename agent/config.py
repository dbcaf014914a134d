"""The one configuration loader: YAML file + environment, validated all at once.

Every setting is declared once in ``SETTINGS`` with its default and converter;
``config/allium-agent.example.yaml`` documents each of them and a test keeps the
two in step. Validation collects every problem, each prefixed with its key path
(``fetch.timeout_seconds: must be a positive number, got "ten"``), so an
operator fixes a file in one pass instead of one error per restart.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import yaml

from agent.authorities import Authority
from agent import config_values as convert
from agent.config_values import InvalidValue, Route
from agent.detect.settings import DetectSettings
from agent.errors import ConfigError
from agent.retry import RetryPolicy
from agent.snapshot import DocKind

#: Environment variable naming the config file when ``--config`` is not given.
CONFIG_ENV = "ALLIUM_AGENT_CONFIG"


@dataclass(frozen=True)
class FetchConfig:
    deadline_seconds: float
    timeout_seconds: float
    max_workers: int
    documents: tuple[DocKind, ...]
    probe_orports: bool = True
    probe_vote_propagation: bool = True


@dataclass(frozen=True)
class AuthoritiesConfig:
    bootstrap: tuple[Authority, ...]
    discover: bool


@dataclass(frozen=True)
class StoreConfig:
    url: str | None
    org: str
    bucket: str
    token_env: str
    timeout_seconds: float
    batch_lines: int
    outbox_max_bytes: int
    retry: RetryPolicy


@dataclass(frozen=True)
class ScheduleConfig:
    poll_delay_seconds: float
    retry_seconds: float
    grace_seconds: float


@dataclass(frozen=True)
class ChecksConfig:
    thresholds: dict
    disabled: frozenset[str]
    silences: tuple  # of agent.checks.Silence


@dataclass(frozen=True)
class MetricsConfig:
    geoip_file: str | None
    operators_top_n: int


@dataclass(frozen=True)
class AlertsConfig:
    routes: tuple[Route, ...]
    suppression_hours: dict[str, float]
    per_alert_hours: dict[str, float]
    retry: RetryPolicy
    public_url: str | None


@dataclass(frozen=True)
class EmailConfig:
    host: str | None
    port: int
    security: str
    sender: str
    username_env: str | None
    password_env: str | None
    timeout_seconds: float
    ca_file: str | None = None


@dataclass(frozen=True)
class MatrixConfig:
    homeserver: str | None
    token_env: str
    timeout_seconds: float


@dataclass(frozen=True)
class SubscriptionsConfig:
    listen: tuple[str, int] | None
    confirm_hours: float
    rate_limit: str
    trusted_proxies: int
    down_hours: float
    weight_drop_percent: float
    weight_drop_hours: float
    min_authorities: int | None
    min_bandwidth_authorities: int
    low_bandwidth_kbytes: float
    flags: tuple[str, ...]


@dataclass(frozen=True)
class QueryConfig:
    url: str | None
    timeout_seconds: float


@dataclass(frozen=True)
class DetectConfig:
    enabled: bool
    settings: DetectSettings


@dataclass(frozen=True)
class Config:
    source: str
    vantage: str
    log_level: str
    state_dir: Path
    authorities: AuthoritiesConfig
    fetch: FetchConfig
    store: StoreConfig
    metrics: MetricsConfig
    schedule: ScheduleConfig
    checks: ChecksConfig
    alerts: AlertsConfig
    email: EmailConfig
    matrix: MatrixConfig
    subscriptions: SubscriptionsConfig
    query: QueryConfig
    detect: DetectConfig


@dataclass(frozen=True)
class Setting:
    path: str
    default: Any
    convert: Callable[[Any], Any]


SETTINGS: tuple[Setting, ...] = (
    Setting("vantage", None, convert.vantage),
    Setting("logging.level", "INFO", convert.log_level),
    Setting("authorities.bootstrap", "default", convert.bootstrap),
    Setting("authorities.discover", True, convert.boolean),
    Setting("fetch.deadline_seconds", 60, convert.positive_number),
    Setting("fetch.timeout_seconds", 30, convert.positive_number),
    Setting("fetch.max_workers", 10, convert.positive_int),
    Setting("fetch.documents", [kind.value for kind in DocKind], convert.document_kinds),
    Setting("fetch.probe_orports", True, convert.boolean),
    Setting("fetch.probe_vote_propagation", True, convert.boolean),
    Setting("state_dir", "state", convert.name),
    Setting("store.url", None, convert.url),
    Setting("store.org", "tor", convert.name),
    Setting("store.bucket", "tor", convert.name),
    Setting("store.token_env", "ALLIUM_INFLUX_TOKEN", convert.env_name),
    Setting("store.timeout_seconds", 10, convert.positive_number),
    Setting("store.batch_lines", 5000, convert.positive_int),
    Setting("store.outbox_max_bytes", 1073741824, convert.positive_int),
    Setting("store.retry.attempts", 3, convert.positive_int),
    Setting("store.retry.initial_delay_seconds", 1, convert.non_negative_number),
    Setting("store.retry.max_delay_seconds", 30, convert.non_negative_number),
    Setting("metrics.geoip_file", "/usr/share/tor/geoip", convert.optional_path),
    Setting("metrics.operators_top_n", 200, convert.positive_int),
    Setting("schedule.poll_delay_seconds", 10, convert.non_negative_number),
    Setting("schedule.retry_seconds", 30, convert.positive_number),
    Setting("schedule.grace_seconds", 30, convert.non_negative_number),
    Setting("checks.disabled", [], convert.names),
    Setting("checks.silences", [], convert.silences),
    Setting("checks.extra_known_parameters", [], convert.names),
    # DocTor's thresholds are the defaults.
    Setting("checks.thresholds.latency_factor", 5, convert.positive_number),
    Setting("checks.thresholds.clock_skew_seconds", 10, convert.positive_number),
    Setting("checks.thresholds.stale_authorities_critical", 3, convert.positive_int),
    Setting("checks.thresholds.certificate_warning_days", 14, convert.positive_int),
    Setting("checks.thresholds.certificate_info_days", 21, convert.positive_int),
    Setting("checks.thresholds.flag_count_high", 1.5, convert.positive_number),
    Setting("checks.thresholds.flag_count_low", 0.5, convert.ratio),
    Setting("checks.thresholds.flag_count_skip", ["Running", "HSDir", "StaleDesc", "BadExit", "MiddleOnly"], convert.names),
    Setting("checks.thresholds.unmeasured_ratio", 0.05, convert.ratio),
    Setting("checks.thresholds.bwauth_sync_ratio", 0.2, convert.ratio),
    Setting("checks.thresholds.bandwidth_file_max_age_hours", 48, convert.positive_number),
    Setting("checks.thresholds.bandwidth_file_min_coverage", 0.6, convert.ratio),
    Setting("alerts.routes", [], convert.routes),
    # DocTor's suppression: info repeated after 24 h, warnings after 4 h, critical every period.
    Setting("alerts.suppression_hours.info", 24, convert.non_negative_number),
    Setting("alerts.suppression_hours.warning", 4, convert.non_negative_number),
    Setting("alerts.suppression_hours.critical", 0, convert.non_negative_number),
    Setting("alerts.per_alert_hours", {}, convert.hours_by_alert),
    Setting("alerts.retry.initial_delay_seconds", 30, convert.positive_number),
    Setting("alerts.retry.max_delay_seconds", 1800, convert.positive_number),
    Setting("alerts.public_url", None, convert.url),
    Setting("email.host", None, convert.optional_name),
    Setting("email.port", 587, convert.positive_int),
    Setting("email.security", "starttls", convert.security),
    Setting("email.sender", "allium-agent@localhost", convert.name),
    Setting("email.username_env", None, convert.optional_env_name),
    Setting("email.password_env", None, convert.optional_env_name),
    Setting("email.timeout_seconds", 20, convert.positive_number),
    Setting("email.ca_file", None, convert.optional_path),
    Setting("matrix.homeserver", None, convert.url),
    Setting("matrix.token_env", "ALLIUM_MATRIX_TOKEN", convert.env_name),
    Setting("matrix.timeout_seconds", 20, convert.positive_number),
    Setting("query.url", None, convert.url),
    Setting("query.timeout_seconds", 30, convert.positive_number),
    Setting("subscriptions.listen", None, convert.listen),
    Setting("subscriptions.confirm_hours", 48, convert.positive_number),
    Setting("subscriptions.rate_limit", "20 per hour", convert.rate),
    Setting("subscriptions.trusted_proxies", 0, convert.non_negative_int),
    # Tor Weather's default: a relay down for 1 h.
    Setting("subscriptions.down_hours", 1, convert.non_negative_number),
    Setting("subscriptions.weight_drop_percent", 50, convert.positive_number),
    Setting("subscriptions.weight_drop_hours", 24, convert.positive_number),
    Setting("subscriptions.min_authorities", None, convert.optional_positive_int),
    # tor uses measured bandwidth only with at least 3 bandwidth authorities' measurements.
    Setting("subscriptions.min_bandwidth_authorities", 3, convert.positive_int),
    # Tor Weather's default: observed bandwidth under 20 kB/s is low (0: never reported).
    Setting("subscriptions.low_bandwidth_kbytes", 20, convert.non_negative_number),
    Setting("subscriptions.flags", ["Guard", "Exit", "Stable", "Fast", "HSDir", "Valid", "Running"], convert.flags),
    Setting("detect.enabled", True, convert.boolean),
    Setting("detect.warmup_periods", 48, convert.positive_int),
    Setting("detect.window_periods", 168, convert.positive_int),
    Setting("detect.z_threshold", 6.0, convert.positive_number),
    Setting("detect.adapt_after", 3, convert.positive_int),
    Setting("detect.group_min_relays", 10, convert.positive_int),
    Setting("detect.group_warning_relays", 50, convert.positive_int),
    # The Tor Project's rules (DocTor, network-health, sybilhunter); see docs/anomalies.md.
    Setting("detect.rules.new_relays_per_hour", 50, convert.positive_int),
    Setting("detect.rules.new_relays_per_group", 50, convert.positive_int),
    Setting("detect.rules.flag_gained_per_2h", 50, convert.positive_int),
    Setting("detect.rules.churn_fraction", 0.012, convert.ratio),
    Setting("detect.rules.relay_min_periods", 6, convert.positive_int),
    Setting("detect.rules.relay_min_weight_fraction", 0.0005, convert.ratio),
    Setting("detect.rules.relay_weight_jump_log2", 2.0, convert.positive_number),
    Setting("detect.rules.relay_flap_changes", 8, convert.positive_int),
    Setting("detect.rules.relay_listing_drop", 2, convert.positive_int),
)


def load_config(path: str | os.PathLike | None = None, environ=os.environ) -> Config:
    """Loads and validates the configuration; raises ConfigError listing every problem.

    With no path, ``$ALLIUM_AGENT_CONFIG`` is used if set, else the defaults.
    """
    path = path or environ.get(CONFIG_ENV)
    source = str(path) if path else "<defaults>"
    raw = _read_yaml(Path(path)) if path else {}
    problems = [f"{key}: unknown setting" for key in _unknown_keys(raw)]
    values = {}
    for setting in SETTINGS:
        supplied = _lookup(raw, setting.path, setting.default)
        try:
            values[setting.path] = setting.convert(supplied)
        except InvalidValue as error:
            problems.append(f"{setting.path}: {error}")
    if not problems:
        problems.extend(_cross_checks(values))
    if problems:
        raise ConfigError(source, problems)
    return Config(
        source=source,
        vantage=values["vantage"],
        log_level=values["logging.level"],
        state_dir=_relative_to(path, values["state_dir"]),
        authorities=AuthoritiesConfig(values["authorities.bootstrap"], values["authorities.discover"]),
        fetch=FetchConfig(
            deadline_seconds=values["fetch.deadline_seconds"],
            timeout_seconds=values["fetch.timeout_seconds"],
            max_workers=values["fetch.max_workers"],
            documents=values["fetch.documents"],
            probe_orports=values["fetch.probe_orports"],
            probe_vote_propagation=values["fetch.probe_vote_propagation"],
        ),
        store=StoreConfig(
            url=values["store.url"],
            org=values["store.org"],
            bucket=values["store.bucket"],
            token_env=values["store.token_env"],
            timeout_seconds=values["store.timeout_seconds"],
            batch_lines=values["store.batch_lines"],
            outbox_max_bytes=values["store.outbox_max_bytes"],
            retry=RetryPolicy(attempts=values["store.retry.attempts"],
                              initial_delay_seconds=values["store.retry.initial_delay_seconds"],
                              max_delay_seconds=values["store.retry.max_delay_seconds"]),
        ),
        metrics=MetricsConfig(values["metrics.geoip_file"], values["metrics.operators_top_n"]),
        schedule=ScheduleConfig(values["schedule.poll_delay_seconds"], values["schedule.retry_seconds"],
                                values["schedule.grace_seconds"]),
        checks=ChecksConfig(
            thresholds={**{path.rsplit(".", 1)[1]: value for path, value in values.items()
                           if path.startswith("checks.thresholds.")},
                        "known_parameters": _known_parameters() | set(values["checks.extra_known_parameters"])},
            disabled=frozenset(values["checks.disabled"]),
            silences=values["checks.silences"],
        ),
        alerts=AlertsConfig(
            routes=values["alerts.routes"],
            suppression_hours={severity: values[f"alerts.suppression_hours.{severity}"]
                               for severity in ("critical", "warning", "info")},
            per_alert_hours=values["alerts.per_alert_hours"],
            retry=RetryPolicy(initial_delay_seconds=values["alerts.retry.initial_delay_seconds"],
                              max_delay_seconds=values["alerts.retry.max_delay_seconds"]),
            public_url=values["alerts.public_url"],
        ),
        email=EmailConfig(*(values[f"email.{name}"] for name in (
            "host", "port", "security", "sender", "username_env", "password_env", "timeout_seconds", "ca_file"))),
        matrix=MatrixConfig(values["matrix.homeserver"], values["matrix.token_env"], values["matrix.timeout_seconds"]),
        subscriptions=SubscriptionsConfig(*(values[f"subscriptions.{name}"] for name in (
            "listen", "confirm_hours", "rate_limit", "trusted_proxies", "down_hours", "weight_drop_percent", "weight_drop_hours",
            "min_authorities", "min_bandwidth_authorities", "low_bandwidth_kbytes", "flags"))),
        detect=_detect_config(values),
        query=QueryConfig(values["query.url"], values["query.timeout_seconds"]),
    )


def _detect_config(values: dict) -> DetectConfig:
    rules = {path.rsplit(".", 1)[1]: value for path, value in values.items() if path.startswith("detect.rules.")}
    return DetectConfig(values["detect.enabled"], DetectSettings(
        warmup_periods=values["detect.warmup_periods"], window_periods=values["detect.window_periods"],
        z_threshold=values["detect.z_threshold"], adapt_after=values["detect.adapt_after"],
        group_min_relays=values["detect.group_min_relays"],
        group_warning_relays=values["detect.group_warning_relays"], thresholds=rules))


def _known_parameters() -> frozenset[str]:
    text = resources.files("agent").joinpath("data/known-parameters.txt").read_text()
    return frozenset(word for line in text.splitlines() if not line.startswith("#") for word in line.split())


def _relative_to(config_path, directory: str) -> Path:
    """A relative state_dir is taken relative to the config file's directory (or the cwd without one)."""
    candidate = Path(directory).expanduser()
    if candidate.is_absolute() or not config_path:
        return candidate
    return Path(config_path).resolve().parent / candidate


def _read_yaml(path: Path) -> dict:
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(str(path), [f"cannot read the file: {error.strerror}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(str(path), [f"not valid YAML: {error}"]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(str(path), [f"the top level must be a mapping of settings, got {type(data).__name__}"])
    return data


def _unknown_keys(raw: dict, prefix: str = "") -> list[str]:
    known_paths = {setting.path for setting in SETTINGS}
    sections = {path.rsplit(".", 1)[0] for path in known_paths if "." in path}
    unknown = []
    for key, value in raw.items():
        path = f"{prefix}{key}"
        if path in known_paths:
            continue
        if path in sections and isinstance(value, dict):
            unknown.extend(_unknown_keys(value, prefix=f"{path}."))
        elif path in sections:
            unknown.append(f"{path} (must be a mapping)")
        else:
            unknown.append(path)
    return unknown


def _lookup(raw: dict, path: str, default: Any) -> Any:
    node: Any = raw
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def _cross_checks(values: dict) -> list[str]:
    problems = []
    if values["store.retry.initial_delay_seconds"] > values["store.retry.max_delay_seconds"]:
        problems.append("store.retry.initial_delay_seconds: must not exceed store.retry.max_delay_seconds")
    if values["alerts.retry.initial_delay_seconds"] > values["alerts.retry.max_delay_seconds"]:
        problems.append("alerts.retry.initial_delay_seconds: must not exceed alerts.retry.max_delay_seconds")
    if values["subscriptions.listen"] and not values["alerts.public_url"]:
        problems.append("alerts.public_url: must be set when subscriptions.listen is (links in mails must not "
                        "be built from the Host header a client sends)")
    if values["email.security"] == "none" and values["email.host"] not in (None, "127.0.0.1", "::1", "localhost"):
        problems.append(f"email.security: none sends the login and alerts in clear text; only allowed for a "
                        f"server on loopback, not {values['email.host']}")
    if values["fetch.timeout_seconds"] > values["fetch.deadline_seconds"]:
        problems.append(
            "fetch.timeout_seconds: must not exceed fetch.deadline_seconds "
            f"({values['fetch.timeout_seconds']:g} > {values['fetch.deadline_seconds']:g})"
        )
    nicknames = [authority.nickname for authority in values["authorities.bootstrap"]]
    duplicates = sorted({name for name in nicknames if nicknames.count(name) > 1})
    if duplicates:
        problems.append(f"authorities.bootstrap: nickname listed twice: {', '.join(duplicates)}")
    return problems

