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
from agent.aroi.settings import AroiConfig
from agent.checks.settings import ChecksConfig
from agent.config import values as convert
from agent.config.values import InvalidValue, Route  # noqa: F401 (Route: re-exported)
from agent.detect.engine import detector_settings
from agent.detect.settings import DetectSettings, from_values
from agent.fetch.settings import AuthoritiesConfig, FetchConfig
from agent.loop.settings import ScheduleConfig
from agent.metrics.settings import MetricsConfig
from agent.model.errors import ConfigError
from agent.reports.settings import ReportsConfig
from agent.store.settings import QueryConfig, StoreConfig
from agent.subscriptions.settings import SubscriptionsConfig
from agent.web.settings import ApiConfig

#: Environment variable naming the config file when ``--config`` is not given.
CONFIG_ENV = "ALLIUM_AGENT_CONFIG"
#: Bounds on a config file (the example is 15 kB, 4 levels deep, and its values hold about 2,000 nodes and
#: characters): its size, its nesting, and what YAML anchors and aliases may expand to (see README Configuration).
MAX_FILE_BYTES = 1 << 20
MAX_DEPTH = 50
MAX_EXPANDED = 100_000
#: Directories state_dir must not be (the agent writes its files straight into it); /proc, /sys and /dev not
#: even below.
SYSTEM_DIRECTORIES = frozenset({
    "/", "/bin", "/boot", "/etc", "/home", "/lib", "/lib32", "/lib64", "/libx32", "/media", "/mnt", "/opt",
    "/root", "/run", "/sbin", "/srv", "/tmp", "/usr", "/var", "/usr/bin", "/usr/lib", "/usr/lib64", "/usr/libexec",
    "/usr/local", "/usr/local/bin", "/usr/local/lib", "/usr/local/sbin", "/usr/sbin", "/usr/share", "/usr/src",
    "/var/backups", "/var/cache", "/var/lib", "/var/local", "/var/log", "/var/mail", "/var/opt", "/var/spool",
    "/var/tmp", "/run/user", "/etc/systemd",
})

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
    "aroi": AroiConfig,
    "reports": ReportsConfig,
    "api": ApiConfig,
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
    aroi: AroiConfig
    reports: ReportsConfig
    api: ApiConfig
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
        Setting("state_dir", "state", convert.path),
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
    state_dir = _relative_to(path, values["state_dir"])
    problems = _state_dir_problems(state_dir) + _cross_checks(parts) + _route_targets(parts, notifiers)
    for section, part in (parts | notifiers).items():
        if hasattr(part, "problems"):
            problems.extend(part.problems(section))
    if problems:
        raise ConfigError(source, problems)
    return Config(
        source=source,
        vantage=values["vantage"],
        log_level=values["logging.level"],
        state_dir=state_dir,
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


def _route_targets(parts: dict, notifiers: dict) -> list[str]:
    """Routes naming a webhook endpoint that ``webhook.endpoints`` does not define (it would never be sent)."""
    endpoints = getattr(notifiers.get("webhook"), "endpoints", None)
    if endpoints is None:  # a webhook notifier whose targets are not named endpoints
        return []
    return [f"alerts.routes: ({route.name}) names webhook endpoint {name}, which webhook.endpoints does not define"
            for route in parts["alerts"].routes for name in route.targets.get("webhook", ()) if name not in endpoints]


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


def _state_dir_problems(directory: Path) -> list[str]:
    """state_dir must be a directory of the agent's own: not /, a system directory or a pseudo file system, not a
    file (agent.sqlite, outbox/ and quarantine/ are written straight into it)."""
    resolved = Path(os.path.realpath(directory))
    if str(resolved) in SYSTEM_DIRECTORIES or resolved.parts[1:2] in (("proc",), ("sys",), ("dev",)):
        shown = f"{directory} (that is {resolved})" if resolved != directory else str(directory)
        return [f"state_dir: must be a directory of the agent's own, not / or a system directory, got {shown}"]
    existing = next(parent for parent in (resolved, *resolved.parents) if parent.exists())
    if not existing.is_dir():
        kind = "is a file, not a directory" if existing == resolved else f"cannot be created: {existing} is a file"
        return [f"state_dir: {directory} {kind}"]
    return []


def _read_yaml(path: Path) -> dict:
    """The file's top-level mapping; ConfigError naming the file for anything that is not a sane config."""
    data = _parse_yaml(_read_text(path), str(path))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(str(path), [f"the top level must be a mapping of settings, got {type(data).__name__}"])
    return data


def _read_text(path: Path) -> str:
    """The file as text, read no further than MAX_FILE_BYTES (so /dev/zero is refused, not read forever)."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as error:
        raise ConfigError(str(path), [f"cannot read the file: {error.strerror or error}"]) from None
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(str(path), [f"larger than {MAX_FILE_BYTES // 1024} KiB: not a configuration file"])
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(str(path), [f"not UTF-8 text (byte {error.start})"]) from None


def _parse_yaml(text: str, source: str) -> Any:
    """YAML with bounded work: nesting, and what anchors and aliases expand to, are checked before building."""
    loader = _BoundedLoader(text)
    try:
        node = loader.get_single_node()
        if node is not None:
            _check_expansion(node, source)
        return None if node is None else loader.construct_document(node)
    except (yaml.YAMLError, ValueError, OverflowError) as error:  # ValueError: e.g. a date 2024-13-45
        raise ConfigError(source, [f"not valid YAML: {error}"]) from None
    finally:
        loader.dispose()


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader refusing nesting deeper than MAX_DEPTH (the composer recurses; a config is 4 levels deep)."""

    depth = 0

    def compose_node(self, parent, index):
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels",
                                                  self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _check_expansion(root: yaml.Node, source: str) -> None:
    """Refuses a document whose aliases expand past MAX_EXPANDED (nodes plus scalar characters), or refer to
    a node that contains them ("billion laughs", recursive aliases). Shared nodes are sized once: linear work."""
    sizes: dict[int, int] = {}
    ancestors: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        children = [child for item in node.value for child in (item if isinstance(item, tuple) else (item,))] \
            if isinstance(node.value, list) else []
        if finished:
            ancestors.discard(id(node))
            sizes[id(node)] = 1 + (len(node.value) if isinstance(node.value, str) else 0) \
                + sum(sizes[id(child)] for child in children)
            if sizes[id(node)] > MAX_EXPANDED:
                raise ConfigError(source, [f"anchors and aliases expand to more than {MAX_EXPANDED} values and "
                                           f"characters (line {node.start_mark.line + 1}); write the values out"])
        elif id(node) in ancestors:
            raise ConfigError(source, [f"an alias at line {node.start_mark.line + 1} refers to a node that "
                                       "contains it"])
        elif id(node) not in sizes:
            ancestors.add(id(node))
            stack.append((node, True))
            stack.extend((child, False) for child in children)


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
