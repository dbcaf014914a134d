"""The detectors' settings: the ``detect`` config section, and how each detector declares and reads its own.

In a module of its own so the config loader need not import River (nor any
detector). The loader fills ``DetectSettings``; each detector declares a
small dataclass of ``setting(key, default, converter)`` fields in its own
module and reads it from here with ``bind``, so a detector owns its
settings' names, defaults and validation (a converter of
agent.config.values, by name, as the other parts' ``SETTINGS`` list them),
and a key the loader does not declare keeps the detector's default.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

RULES_PREFIX = "detect.rules."
SECTION_PREFIX = "detect."


@dataclass(frozen=True)
class DetectSettings:
    """The ``detect`` config section (defaults and documentation: agent/config/loader.py, the example YAML)."""

    thresholds: dict  # detect.rules.*
    warmup_periods: int = 48
    window_periods: int = 672
    tail_multiple: float = 1.5
    warning_ratio: float = 2.5
    adapt_after: int = 3
    group_min_relays: int = 10
    group_warning_relays: int = 50
    other: Mapping[str, Any] = field(default_factory=dict)  # config key -> value: keys no field above names

    def value(self, key: str, default=MISSING):
        """The value of a config key (``detect.rules.churn_fraction``, ``detect.warmup_periods``), else ``default``."""
        if key in self.other:
            found = self.other[key]
        elif key.startswith(RULES_PREFIX):
            found = self.thresholds.get(key[len(RULES_PREFIX):], default)
        else:
            name = key[len(SECTION_PREFIX):] if key.startswith(SECTION_PREFIX) else None
            found = getattr(self, name) if name and name != "thresholds" and name in _FIELDS else default
        if found is MISSING:
            raise KeyError(key)
        return found


_FIELDS = frozenset(spec.name for spec in fields(DetectSettings)) - {"other"}


def from_values(values: Mapping[str, Any]) -> DetectSettings:
    """DetectSettings from converted config values keyed by path (``detect.tail_multiple``: 1.5, ...)."""
    own = {key: value for key, value in values.items() if key.startswith(SECTION_PREFIX)}
    rules = {key[len(RULES_PREFIX):]: value for key, value in own.items() if key.startswith(RULES_PREFIX)}
    named = {key[len(SECTION_PREFIX):]: value for key, value in own.items()
             if not key.startswith(RULES_PREFIX) and key[len(SECTION_PREFIX):] in _FIELDS}
    other = {key: value for key, value in own.items()
             if not key.startswith(RULES_PREFIX) and key[len(SECTION_PREFIX):] not in _FIELDS}
    return DetectSettings(thresholds=rules, **named, other=other)


def setting(key: str, default, converter: str):
    """A field of a detector's settings dataclass: the config key it is read from, the detector's default, and
    the name of the agent.config.values function that validates it (``positive_int``, ``ratio``, ...)."""
    return field(default=default, metadata={"key": key, "converter": converter})


def bind(settings_class: type, settings: DetectSettings):
    """The detector's settings dataclass, each field read from ``settings`` by its key (else its default)."""
    return settings_class(**{spec.name: settings.value(spec.metadata["key"], spec.default)
                             for spec in fields(settings_class)})


def declared(settings_class: type) -> dict[str, tuple[object, str]]:
    """Config key -> (default, converter name), as a detector's settings dataclass declares them."""
    return {spec.metadata["key"]: (spec.default, spec.metadata["converter"]) for spec in fields(settings_class)}
