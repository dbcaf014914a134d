"""The ``fetch`` and ``authorities`` config sections: what is downloaded from which authorities, and how fast.

Each class lists its settings as ``(key, default, converter name in agent.config.values)``;
the config loader mounts them under the section of the same name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from agent.model.authorities import Authority
from agent.model.snapshot import DOCUMENT_KINDS, DocKind


@dataclass(frozen=True)
class FetchConfig:
    deadline_seconds: float
    timeout_seconds: float
    max_workers: int
    documents: tuple[DocKind, ...]
    probe_orports: bool = True
    probe_vote_propagation: bool = True
    extra_info: bool = True

    SETTINGS: ClassVar[tuple[tuple[str, Any, str], ...]] = (
        ("deadline_seconds", 60, "positive_number"),
        ("timeout_seconds", 30, "positive_number"),
        ("max_workers", 10, "positive_int"),
        ("documents", [kind.value for kind in DOCUMENT_KINDS], "document_kinds"),
        ("probe_orports", True, "boolean"),
        ("probe_vote_propagation", True, "boolean"),
        # Extra-info descriptors (overload-ratelimits, overload-fd-exhausted), fetched by digest after the server
        # descriptors, only those not read before (agent.loop.extrainfo).
        ("extra_info", True, "boolean"),
    )

    def problems(self, section: str) -> list[str]:
        if self.timeout_seconds > self.deadline_seconds:
            return [f"{section}.timeout_seconds: must not exceed {section}.deadline_seconds "
                    f"({self.timeout_seconds:g} > {self.deadline_seconds:g})"]
        return []


@dataclass(frozen=True)
class AuthoritiesConfig:
    bootstrap: tuple[Authority, ...]
    discover: bool

    SETTINGS: ClassVar[tuple[tuple[str, Any, str], ...]] = (
        ("bootstrap", "default", "bootstrap"),
        ("discover", True, "boolean"),
    )

    def problems(self, section: str) -> list[str]:
        nicknames = [authority.nickname for authority in self.bootstrap]
        duplicates = sorted({name for name in nicknames if nicknames.count(name) > 1})
        return [f"{section}.bootstrap: nickname listed twice: {', '.join(duplicates)}"] if duplicates else []
