"""The one configuration loader: assembles ``Config`` from the parts' settings (``agent/<part>/settings.py``).

Every problem is reported at once, each prefixed with its key path (``fetch.timeout_seconds: must be a
positive number, got "ten"``), so an operator fixes a file in one pass.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from agent.alerts.notifiers import NOTIFIERS
from agent.alerts.settings import AlertsConfig
from agent.checks.settings import ChecksConfig
from agent.config import values as convert
from agent.config.values import InvalidValue, Route  # noqa: F401 (Route: re-exported)
from agent.detect.engine import detector_settings
from agent.detect.settings import DetectSettings, from_values
from agent.fetch.settings import AuthoritiesConfig, FetchConfig
from agent.loop.settings import ScheduleConfig
from agent.metrics.settings import MetricsConfig
from agent.model.errors import ConfigError
from agent.store.settings import QueryConfig, StoreConfig
from agent.subscriptions.settings import SubscriptionsConfig

#: Environment variable naming the config file when ``--config`` is not given.
CONFIG_ENV = "ALLIUM_AGENT_CONFIG"

#: Each part's settings class under its section (also Config's attribute). A class lists
#: ``SETTINGS`` as (key, default, converter name); it is built by ``from_settings(values)``
#: if it has one, else from keys that are its fields; ``problems(section)``, if it has
#: one, checks its settings against each other.
PARTS: dict[str, type] = {
    "authorities": AuthoritiesConfig,
    "fetch": FetchConfig,
    "store": StoreConfig,
    "metrics": MetricsConfig,
    "schedule": ScheduleConfig,
    "checks": ChecksConfig,
    "alerts": AlertsConfig,
    "query": QueryConfig,
    "subscriptions": SubscriptionsConfig,
}


def notifier_parts() -> dict[str, type]:
    """Each notifier's section, at its channel's name (``email``, ``matrix``): ``Config.notifiers[channel]``."""
    return {channel: factory.Settings for channel, factory in NOTIFIERS.items()}


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
    notifiers: Mapping[str, Any]  # channel -> that notifier's settings
    subscriptions: SubscriptionsConfig
    query: QueryConfig
    detect: DetectConfig


@dataclass(frozen=True)
class Setting:
    path: str
    default: Any
    convert: Callable[[Any], Any]


def _converter(path: str, name: str) -> Callable[[Any], Any]:
    try:
        return getattr(convert, name)
    except AttributeError:
        raise LookupError(f"{path}: agent.config.values has no converter {name}") from None


def settings() -> tuple[Setting, ...]:
    """Every setting there is: the agent's own, each part's, each notifier's and each detector's."""
    return (
        Setting("vantage", None, convert.vantage),
        Setting("logging.level", "INFO", convert.log_level),
        Setting("state_dir", "state", convert.name),
        *(Setting(f"{section}.{key}", default, _converter(f"{section}.{key}", name))
          for section, part in (PARTS | notifier_parts()).items() for key, default, name in part.SETTINGS),
        Setting("detect.enabled", True, convert.boolean),
        # Each detector declares its own (agent/detect/<detector>.py); see docs/anomalies.md.
        *(Setting(key, default, _converter(key, name)) for key, (default, name) in detector_settings().items()),
    )


#: The settings as the agent ships (``settings()`` is read again at each load, so a notifier added meanwhile counts).
SETTINGS = settings()


def load_config(path: str | os.PathLike | None = None, environ=os.environ) -> Config:
    """Loads and validates the configuration; raises ConfigError listing every problem.

    With no path, ``$ALLIUM_AGENT_CONFIG`` is used if set, else the defaults.
    """
    path = path or environ.get(CONFIG_ENV)
    source = str(path) if path else "<defaults>"
    raw = _read_yaml(Path(path)) if path else {}
    known = settings()
    problems = [f"{key}: unknown setting" for key in _unknown_keys(raw, {setting.path for setting in known})]
    values = {}
    for setting in known:
        supplied = _lookup(raw, setting.path, setting.default)
        try:
            values[setting.path] = setting.convert(supplied)
        except InvalidValue as error:
            problems.append(f"{setting.path}: {error}")
    if problems:
        raise ConfigError(source, problems)
    parts = {section: _build(part, section, values) for section, part in PARTS.items()}
    notifiers = {channel: _build(part, channel, values) for channel, part in notifier_parts().items()}
    problems = _cross_checks(parts)
    for section, part in (parts | notifiers).items():
        if hasattr(part, "problems"):
            problems.extend(part.problems(section))
    if problems:
        raise ConfigError(source, problems)
    return Config(
        source=source,
        vantage=values["vantage"],
        log_level=values["logging.level"],
        state_dir=_relative_to(path, values["state_dir"]),
        detect=_detect_config(values),
        notifiers=notifiers,
        **parts,
    )


def _build(part: type, section: str, values: dict) -> Any:
    """The part's settings object from the converted values under ``section``."""
    prefix = f"{section}."
    own = {path.removeprefix(prefix): value for path, value in values.items() if path.startswith(prefix)}
    build = getattr(part, "from_settings", None)
    return build(own) if build else part(**own)


def _cross_checks(parts: dict) -> list[str]:
    """Problems between the settings of different parts (each part checks its own)."""
    problems = []
    if parts["subscriptions"].listen and not parts["alerts"].public_url:
        problems.append("alerts.public_url: must be set when subscriptions.listen is (links in mails must not "
                        "be built from the Host header a client sends)")
    return problems


def _detect_config(values: dict) -> DetectConfig:
    detectors = {path: value for path, value in values.items()
                 if path.startswith("detect.") and path != "detect.enabled"}
    return DetectConfig(values["detect.enabled"], from_values(detectors))


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


def _unknown_keys(raw: dict, known_paths: set[str], prefix: str = "") -> list[str]:
    sections = {path.rsplit(".", 1)[0] for path in known_paths if "." in path}
    unknown = []
    for key, value in raw.items():
        path = f"{prefix}{key}"
        if path in known_paths:
            continue
        if path in sections and isinstance(value, dict):
            unknown.extend(_unknown_keys(value, known_paths, prefix=f"{path}."))
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
