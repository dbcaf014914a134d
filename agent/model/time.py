"""Time helpers: every time the agent keeps is UTC; stem hands out naive UTC datetimes."""

from __future__ import annotations

from datetime import datetime, timezone


def unix(moment: datetime) -> int:
    """Unix seconds of a stem datetime (naive UTC) or an aware one."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp())


def utc_now() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(timezone.utc)


def naive_utc_now() -> datetime:
    """The current time as naive UTC, comparable with stem's datetimes."""
    return datetime.now(timezone.utc).replace(tzinfo=None)
