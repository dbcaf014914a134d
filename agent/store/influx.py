"""Synchronous line-protocol writes to an InfluxDB v2 write API (the only influxdb_client user).

The same requests work against InfluxDB 2.x and VictoriaMetrics' ``/api/v2/write``.
We use the SYNCHRONOUS write API: the default batching API writes from a
background thread and only logs failures, which would lose data silently.
influxdb-client's own retries are off; ``RetryPolicy`` is the one policy.

What the server answers may quote the request (``Authorization: Token ...``):
a failed write becomes an exception carrying only the status and the
redacted body (``agent.model.redact``) before anything logs or stores it.
"""

from __future__ import annotations

import logging

import requests
import urllib3
from influxdb_client import InfluxDBClient, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.rest import ApiException

from agent.model.errors import StoreError
from agent.model.redact import install_log_filter, redact, register, register_url
from agent.model.retry import RetryPolicy

log = logging.getLogger(__name__)


class InfluxWriter:
    """Writes lines to one bucket, in batches, retrying what can succeed later."""

    def __init__(self, url: str, org: str, bucket: str, token: str, timeout_seconds: float,
                 batch_lines: int, retry: RetryPolicy):
        self.url, self.org, self.bucket = url, org, bucket
        self.timeout_seconds, self.batch_lines = timeout_seconds, batch_lines
        self.retry = retry
        register(token)
        register_url(url)
        install_log_filter(handlers=False)  # influxdb-client logs error bodies on the root logger itself
        self.where = redact(url)  # the URL as it may be shown
        self._client = InfluxDBClient(url=url, token=token or "unset", org=org,
                                      timeout=int(timeout_seconds * 1000), retries=False)
        self._api = self._client.write_api(write_options=SYNCHRONOUS)

    def close(self) -> None:
        self._client.close()

    def ping(self) -> bool:
        """True if the server answers /ping (influxdb-client's health() fails on VictoriaMetrics)."""
        try:
            return requests.get(f"{self.url.rstrip('/')}/ping", timeout=5).status_code in (200, 204)
        except requests.RequestException:
            return False

    def write(self, lines: list[str]) -> None:
        """Writes every line or raises StoreError (``permanent`` if retrying cannot help)."""
        for start in range(0, len(lines), self.batch_lines):
            batch = lines[start:start + self.batch_lines]
            try:
                # retry.call runs the action at once, within this iteration; the default binds this batch anyway.
                self.retry.call(lambda batch=batch: self._write_batch(batch), _retryable, f"write to {self.where}")
            except _Refused as error:
                permanent = error.status in DATA_REJECTED
                hint = " (is the token set?)" if error.status in (401, 403) else ""
                raise StoreError(f"{self.where} refused the write: HTTP {error.status} {error.text}{hint}",
                                 permanent=permanent) from None
            except _Unreachable as error:
                raise StoreError(f"{self.where} unreachable: {error}") from None

    def _write_batch(self, batch: list[str]) -> None:
        """One write; its failure as an exception whose text is already redacted (retry.call logs it)."""
        try:
            self._api.write(bucket=self.bucket, org=self.org, record=batch, write_precision=WritePrecision.S)
        except ApiException as error:
            raise _Refused(error.status, redact(error.body or error.reason or "", 200)) from None
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise _Unreachable(redact(error, 300)) from None


class _Refused(Exception):
    """The server answered with an error status (text redacted)."""

    def __init__(self, status: int | None, text: str):
        self.status, self.text = status, text
        super().__init__(f"HTTP {status} {text}")


class _Unreachable(Exception):
    """No answer: connection refused, reset, timed out (text redacted)."""


#: Statuses that say the data itself is unacceptable; retrying cannot help, so
#: the period is set aside. Anything else (401/403 token, 404 bucket, 5xx)
#: may be fixed by a person or by time, so the period stays in the outbox.
DATA_REJECTED = {400, 413, 422}


def _retryable(error: Exception) -> bool:
    if isinstance(error, _Refused):
        return error.status is None or error.status == 429 or error.status >= 500
    return isinstance(error, _Unreachable)
