"""The package's import contract: which parts of agent/ may import which.

A small checker over ``ast`` (no import-linter): it reads every agent/**/*.py,
collects its absolute and relative imports, including those inside functions
and under ``if TYPE_CHECKING:`` (a type-only import is still a dependency
between parts), and reports each forbidden one as ``file:line -> module``.
``from agent.pkg import name`` counts as importing ``agent.pkg.name`` when that
is a module, else ``agent.pkg``. Imports made from strings at run time
(``importlib.import_module``) are not seen.

The layers: agent/model is the shared vocabulary and depends on nothing else
of agent/; the stages (parse, fetch, metrics, checks, detect, store, alerts,
subscriptions, aroi) depend on agent/model and on themselves only; pipeline, loop,
cli, config, web, ... put the stages together and are not restricted here.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

STAGES = ("parse", "fetch", "metrics", "checks", "detect", "forecast", "store", "alerts", "subscriptions", "aroi")

#: Exceptions to the stage rule only, as (importing stage, imported module or package),
#: each with a comment saying why, e.g. ("agent.detect", "agent.metrics.relays").
#: The narrower rules below (metrics/checks/detect never import fetch, store, ...;
#: parse never imports fetch) take no exceptions. Keep this list short; an entry
#: that no import needs any more fails test_every_stage_exception_is_needed.
#: Empty now: the two cross-stage imports of the restructure (fetch.collect ->
#: parse, detect.facts -> metrics.relays) went when collect moved to agent/loop
#: and RelayTable to agent/model.
STAGE_EXCEPTIONS: set[tuple[str, str]] = set()

MAX_LINES = 500


@dataclass(frozen=True)
class Import:
    path: str  # relative to the repository, with forward slashes
    line: int
    module: str  # the importing module, e.g. agent.metrics.network
    target: str  # what it imports, e.g. agent.store.influx or numpy


@dataclass(frozen=True)
class Violation:
    path: str
    line: int
    target: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line} -> {self.target}"


def module_name(path: str) -> str:
    parts = path.removesuffix(".py").split("/")
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def imports_of(path: str, source: str, modules: set[str]) -> list[Import]:
    importer = module_name(path)
    package = importer if path.endswith("/__init__.py") else importer.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source, filename=path)):
        if isinstance(node, ast.Import):
            found += [Import(path, node.lineno, importer, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            for alias in node.names:
                submodule = f"{origin}.{alias.name}"
                found.append(Import(path, node.lineno, importer, submodule if submodule in modules else origin))
    return sorted(set(found), key=lambda found_import: (found_import.line, found_import.target))


@dataclass(frozen=True)
class Rule:
    name: str
    description: str
    check: Callable[[dict[str, str], list[Import]], Iterable[Violation]]


def _forbidding(forbidden: Callable[[Import], bool]):
    def check(sources, imports):
        return (Violation(found.path, found.line, found.target) for found in imports if forbidden(found))
    return check


def _model_imports_only_model(found: Import) -> bool:
    return (within(found.module, "agent.model") and within(found.target, "agent")
            and not within(found.target, "agent.model"))


def _stage_of(module: str) -> str | None:
    return next((f"agent.{stage}" for stage in STAGES if within(module, f"agent.{stage}")), None)


def _stage_imports_other_part(found: Import) -> bool:
    stage = _stage_of(found.module)
    if stage is None or not within(found.target, "agent"):
        return False
    if found.target == "agent" or within(found.target, "agent.model") or within(found.target, stage):
        return False
    return not any(stage == importer and within(found.target, allowed) for importer, allowed in STAGE_EXCEPTIONS)


def _never(importers: tuple[str, ...], targets: tuple[str, ...]) -> Callable[[Import], bool]:
    def forbidden(found: Import) -> bool:
        return (any(within(found.module, f"agent.{importer}") for importer in importers)
                and any(within(found.target, f"agent.{target}") for target in targets))
    return forbidden


def _only_in(target: str, allowed: str) -> Callable[[Import], bool]:
    return lambda found: within(found.target, target) and not within(found.module, allowed)


def _matrix_api_outside_matrix_sender(sources, imports):
    for path, source in sources.items():
        if path != "agent/alerts/matrix.py":
            for number, line in enumerate(source.splitlines(), 1):
                if "/_matrix/" in line:
                    yield Violation(path, number, '"/_matrix/" in source')


def _long_modules(sources, imports):
    for path, source in sources.items():
        if (count := len(source.splitlines())) > MAX_LINES:
            yield Violation(path, count, f"{count} lines (at most {MAX_LINES})")


RULES = [
    Rule("model-is-self-contained", "agent/model imports nothing of agent/ but agent.model.*",
         _forbidding(_model_imports_only_model)),
    Rule("stages-import-model-and-themselves",
         f"a stage ({', '.join(STAGES)}) imports of agent/ only agent.model.*, its own package and "
         "`agent` itself (for __version__), apart from STAGE_EXCEPTIONS",
         _forbidding(_stage_imports_other_part)),
    Rule("analysis-not-io", "metrics, checks and detect never import fetch, store, alerts, aroi, pipeline, loop or "
         "cli", _forbidding(_never(("metrics", "checks", "detect"),
                                   ("fetch", "store", "alerts", "aroi", "pipeline", "loop", "cli")))),
    Rule("parse-not-fetch", "parse never imports fetch", _forbidding(_never(("parse",), ("fetch",)))),
    Rule("influxdb-client-in-store", "only agent/store imports influxdb_client",
         _forbidding(_only_in("influxdb_client", "agent.store"))),
    Rule("smtplib-in-email-notifier", "only agent/alerts/email.py imports smtplib",
         _forbidding(_only_in("smtplib", "agent.alerts.email"))),
    Rule("matrix-api-in-matrix-notifier", 'only agent/alerts/matrix.py has the Matrix API path "/_matrix/"',
         _matrix_api_outside_matrix_sender),
    Rule("short-modules", f"no module of agent/ has more than {MAX_LINES} lines", _long_modules),
]


def check(sources: dict[str, str], rule: Rule) -> list[Violation]:
    """The violations of one rule by ``sources``: {path relative to the repository: text}."""
    modules = {module_name(path) for path in sources}
    imports = [found for path, source in sources.items() for found in imports_of(path, source, modules)]
    return sorted(set(rule.check(sources, imports)), key=lambda violation: (violation.path, violation.line,
                                                                             violation.target))


@cache
def agent_sources() -> dict[str, str]:
    return {path.relative_to(ROOT).as_posix(): path.read_text(encoding="utf-8")
            for path in sorted((ROOT / "agent").rglob("*.py"))}


def test_the_checker_reads_the_whole_package():
    sources = agent_sources()
    assert len(sources) > 50 and "agent/model/findings.py" in sources and "agent/__init__.py" in sources


def assert_kept(rule: Rule, sources: dict[str, str]) -> None:
    if violations := check(sources, rule):
        pytest.fail(f"{rule.name}: {rule.description}; {len(violations)} violation(s):\n"
                    + "\n".join(f"  {violation}" for violation in violations), pytrace=False)


@pytest.mark.parametrize("rule", RULES, ids=lambda rule: rule.name)
def test_import_contract(rule):
    assert_kept(rule, agent_sources())


# The checker itself: each rule reports a synthetic breach, so the contract can fail.
_PACKAGE = {
    "agent/__init__.py": "__version__ = '0'\n",
    "agent/model/__init__.py": "",
    "agent/model/points.py": "",
    "agent/store/__init__.py": "",
    "agent/store/influx.py": "import influxdb_client\n",
    "agent/fetch/__init__.py": "",
    "agent/fetch/http.py": "from email.utils import parsedate_to_datetime\n",
    "agent/metrics/__init__.py": "",
    "agent/metrics/relays.py": "",
    "agent/metrics/geoip.py": "",
    "agent/alerts/__init__.py": "",
    "agent/alerts/email.py": "import smtplib\n",
    "agent/alerts/matrix.py": "PATH = '/_matrix/client/v3/rooms'\n",
    "agent/pipeline/__init__.py": "from agent.store import influx\nfrom agent.metrics import relays\n",
}


def _rule(name: str) -> Rule:
    return next(rule for rule in RULES if rule.name == name)


@pytest.mark.parametrize("rule, extra, expected", [
    ("stages-import-model-and-themselves",
     {"agent/metrics/x.py": "import agent.store\nfrom agent import __version__\nfrom agent.model import points\n"
                            "def f():\n    from agent.store import influx\n"},
     ["agent/metrics/x.py:1 -> agent.store", "agent/metrics/x.py:5 -> agent.store.influx"]),
    ("analysis-not-io", {"agent/metrics/x.py": "from ..store import influx\nfrom . import relays\n"},
     ["agent/metrics/x.py:1 -> agent.store.influx"]),
    ("analysis-not-io", {"agent/checks/x.py": "if True:\n    import agent.pipeline\n"},
     ["agent/checks/x.py:2 -> agent.pipeline"]),
    ("parse-not-fetch", {"agent/parse/x.py": "from agent.fetch.http import download\n"},
     ["agent/parse/x.py:1 -> agent.fetch.http"]),
    ("model-is-self-contained", {"agent/model/x.py": "from agent import __version__\nfrom agent.model import points\n"},
     ["agent/model/x.py:1 -> agent"]),
    ("influxdb-client-in-store", {"agent/metrics/x.py": "from influxdb_client.rest import ApiException\n"},
     ["agent/metrics/x.py:1 -> influxdb_client.rest"]),
    ("smtplib-in-email-notifier", {"agent/alerts/dispatch.py": "\nimport smtplib as mail\n"},
     ["agent/alerts/dispatch.py:2 -> smtplib"]),
    ("matrix-api-in-matrix-notifier", {"agent/web/x.py": "URL = 'https://m.example/_matrix/client/v3'\n"},
     ['agent/web/x.py:1 -> "/_matrix/" in source']),
    ("short-modules", {"agent/metrics/x.py": "pass\n" * (MAX_LINES + 1), "agent/metrics/y.py": "pass\n" * MAX_LINES},
     [f"agent/metrics/x.py:{MAX_LINES + 1} -> {MAX_LINES + 1} lines (at most {MAX_LINES})"]),
])
def test_the_checker_reports_a_breach(rule, extra, expected):
    assert check(_PACKAGE, _rule(rule)) == []
    assert [str(violation) for violation in check(_PACKAGE | extra, _rule(rule))] == expected


def test_a_stage_exception_lets_through_that_import_only(monkeypatch):
    monkeypatch.setattr(f"{__name__}.STAGE_EXCEPTIONS", {("agent.detect", "agent.metrics.relays")})
    sources = _PACKAGE | {"agent/detect/x.py": "from agent.metrics import relays\nimport agent.metrics.geoip\n",
                          "agent/checks/x.py": "from agent.metrics import relays\n"}
    assert [str(violation) for violation in check(sources, _rule("stages-import-model-and-themselves"))] == [
        "agent/checks/x.py:1 -> agent.metrics.relays", "agent/detect/x.py:2 -> agent.metrics.geoip"]


def test_every_stage_exception_is_needed():
    modules = {module_name(path) for path in agent_sources()}
    imports = [found for path, source in agent_sources().items() for found in imports_of(path, source, modules)]
    unused = [(stage, allowed) for stage, allowed in sorted(STAGE_EXCEPTIONS)
              if not any(within(found.module, stage) and within(found.target, allowed) for found in imports)]
    assert not unused, f"STAGE_EXCEPTIONS entries no import needs any more, remove them: {unused}"


def test_a_broken_rule_fails_the_contract_test_naming_each_import():
    sources = _PACKAGE | {"agent/metrics/x.py": "import agent.store\n", "agent/detect/y.py": "import agent.loop\n"}
    with pytest.raises(pytest.fail.Exception) as failure:
        assert_kept(_rule("analysis-not-io"), sources)
    assert str(failure.value).splitlines()[:3] == [
        "analysis-not-io: metrics, checks and detect never import fetch, store, alerts, aroi, pipeline, loop or cli; "
        "2 violation(s):",
        "  agent/detect/y.py:1 -> agent.loop",
        "  agent/metrics/x.py:1 -> agent.store"]
