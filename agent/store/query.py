"""Ad hoc PromQL against the configured Prometheus-compatible endpoint (VictoriaMetrics, Prometheus).

``allium-agent query`` sends an instant query (``/api/v1/query``, at now or
``--at``) or a range query (``/api/v1/query_range`` over ``--range`` with
``--step``); ``render`` gives the answer as CSV or the API's JSON, and
``columns`` the rows the command line's table shows.

The endpoint's error text may quote the request, and the URL may carry a
user and password: both are redacted (``agent.model.redact``) before they
become an error message. An answer of the wrong shape is a QueryError too.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone

import requests

from agent.model.errors import QueryError
from agent.model.redact import redact, register_url

_DURATION = re.compile(r"^(\d+)([smhdw])$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


@dataclass(frozen=True)
class QueryResult:
    kind: str  # vector | matrix | scalar | string
    series: list[tuple[dict, list[tuple[float, str]]]]  # (labels, [(unix time, value)])
    raw: dict


def duration_seconds(text: str) -> int:
    """``90s``, ``15m``, ``1h``, ``7d``, ``2w`` in seconds; ValueError naming the text otherwise."""
    match = _DURATION.match(text.strip())
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"not a duration like 15m, 1h or 7d: {text!r}")
    return int(match.group(1)) * _SECONDS[match.group(2)]


def run_query(url: str, promql: str, at: datetime | None = None, range_seconds: int | None = None,
              step_seconds: int | None = None, timeout: float = 30) -> QueryResult:
    """Runs one query; raises QueryError with the endpoint's own message on a bad query.

    A bare selector (``tor_network_relays``) looks back one live voting period
    plus ten minutes for each series' newest sample, not the engines' default
    5 minutes, so that it answers all through the hour on hourly data:
    ``max_lookback`` is VictoriaMetrics' per-query lookback, ``lookback_delta``
    Prometheus's (2.43 and later; older ones ignore it, as each engine ignores
    the other's). The README's queries do not need them (docs/queries.md).
    """
    from agent.store.victoria_flags import lookback_seconds

    end = (at or datetime.now(timezone.utc)).timestamp()
    lookback = f"{lookback_seconds(3600)}s"
    if range_seconds:
        step = step_seconds or max(1, range_seconds // 250)
        path, params = "/api/v1/query_range", {"query": promql, "start": end - range_seconds, "end": end, "step": step}
    else:
        path, params = "/api/v1/query", {"query": promql, "time": end}
    params.update(max_lookback=lookback, lookback_delta=lookback)
    register_url(url)
    where = redact(url)
    session = requests.Session()
    session.trust_env = False
    try:
        response = session.post(url.rstrip("/") + path, data=params, timeout=timeout)
    except requests.RequestException as error:
        raise QueryError(f"cannot reach {where}: {type(error).__name__}") from None
    try:
        body = response.json()
    except ValueError:
        raise QueryError(f"{where} answered HTTP {response.status_code} without JSON: "
                         f"{redact(response.text, 200)}") from None
    if not isinstance(body, dict):
        raise QueryError(f"{where} answered HTTP {response.status_code} with JSON that is not an object")
    if response.status_code != 200 or body.get("status") != "success":
        raise QueryError(redact(f"{body.get('errorType', 'error')}: {body.get('error', response.text)}", 300))
    try:
        return _result(body["data"])
    except (KeyError, IndexError, TypeError, ValueError):
        raise QueryError(f"{where} answered with data of an unexpected shape") from None


def _result(data: dict) -> QueryResult:
    """The API's data object as a QueryResult; KeyError, TypeError... for a shape it does not have."""
    kind, result = data["resultType"], data["result"]
    if kind == "vector":
        series = [(item["metric"], [(float(item["value"][0]), item["value"][1])]) for item in result]
    elif kind == "matrix":
        series = [(item["metric"], [(float(t), v) for t, v in item["values"]]) for item in result]
    else:  # scalar or string: [time, value]
        series = [({}, [(float(result[0]), str(result[1]))])]
    return QueryResult(kind, series, data)


def columns(result: QueryResult) -> tuple[list[str], list[list[str]]]:
    """The result as a header (the label names, ``time``, ``value``) and rows with the endpoint's raw values,
    times as ``YYYY-MM-DDTHH:MM:SSZ``: what CSV writes, and what the command line's table shows for people."""
    label_names = sorted({name for labels, _ in result.series for name in labels})
    rows = [[labels.get(name, "") for name in label_names]
            + [datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), value]
            for labels, samples in result.series for t, value in samples]
    return label_names + ["time", "value"], rows


def render(result: QueryResult, output: str) -> str:
    """The result as ``csv`` (raw values) or ``json`` (the API's data object), for programs.

    The table for people is the command line's (``agent.cli.main``): it
    formats the values by magnitude, which these two must not.
    """
    if output == "json":
        return json.dumps(result.raw, indent=2, sort_keys=True) + "\n"
    header, rows = columns(result)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()
