"""overload-general: the parser on real descriptors and hostile lines, the metrics, and the subscription alert.

No real server descriptor we have carries the line: those in tests/data and
../shared/tordata were published 2012-2020, and tor writes ``overload-general``
since 0.4.6 (2021). So the lines are put into real 2020 descriptors (our
parser does not check signatures; stem parses them with ``validate=False``),
and the subscription tests make descriptors with stem's
``RelayDescriptor.create()`` carrying the line, read through our parser.
"""

from __future__ import annotations

import io
import os
import re
from datetime import datetime, timedelta
from functools import cache

import numpy as np
import pytest
import stem.descriptor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stem.descriptor.networkstatus import NetworkStatusDocumentV3
from stem.descriptor.server_descriptor import RelayDescriptor

from agent.alerts.engine import AlertBook, SuppressionPolicy
from agent.metrics.geoip import GeoIP
from agent.metrics.overload import OVERLOAD_KEPT_SECONDS, overload_fields, overload_network_points, overload_of
from agent.metrics.relays import build_table
from agent.model.authorities import Authority
from agent.model.snapshot import DocKind, Snapshot
from agent.model.time import unix
from agent.parse import fastdesc
from agent.parse.documents import parse_document
from agent.pipeline.state import State
from agent.subscriptions.events import conditions, relay_status
from agent.subscriptions.store import SubscriptionStore
from agent.subscriptions.watch import RelayWatch
from tests.conftest import DATA, SHARED_TORDATA, read_data
from tests.unit.test_fastparse import DESCRIPTOR_FIELDS
from tests.unit.test_subscriptions import SETTINGS, entry

DESCRIPTORS = "2020-02-29-10-05-00-server-descriptors.xz"  # 587 real descriptors, published 08:38-14:33
HOUR10 = datetime(2020, 2, 29, 10)  # the valid-after of the real consensus they go with
TIME = unix(HOUR10)
HOUR = 3600
INT_MAX = 2 ** 31 - 1
GEOIP = GeoIP.load(DATA / "geoip-excerpt")
EXAMPLES = int(os.environ.get("ALLIUM_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize="ALLIUM_FUZZ_EXAMPLES" not in os.environ,
                database=None, suppress_health_check=[HealthCheck.too_slow])


@cache
def real_parts() -> tuple[bytes, tuple[bytes, ...]]:
    """The real descriptor file as (the @type annotation, each descriptor's text)."""
    raw = read_data(DESCRIPTORS)
    head, *parts = re.split(rb"(?m)^(?=router )", raw)
    return head, tuple(parts)


def with_lines(lines: dict[int, bytes]) -> bytes:
    """The real file with ``lines`` (descriptor index -> line(s)) put before each one's router-signature."""
    head, parts = real_parts()
    changed = [part.replace(b"\nrouter-signature\n", b"\n" + lines[index] + b"\nrouter-signature\n", 1)
               if index in lines else part for index, part in enumerate(parts)]
    return head + b"".join(changed)


@cache
def plain() -> list:
    return fastdesc.parse_server_descriptors(read_data(DESCRIPTORS))


# --- the parser, on real descriptors ---------------------------------------------------------------------------


def test_no_real_descriptor_we_have_reports_overload():
    """The real-data figure: 0 relays report overload-general in any descriptor set here (all predate tor 0.4.6)."""
    figures = {}
    files = [DATA / DESCRIPTORS, DATA / "server-descriptors-2"] + sorted((SHARED_TORDATA / "server-descriptors")
                                                                         .glob("*"))
    for path in files:
        raw = read_data(path.name) if path.parent == DATA else path.read_bytes()
        parsed = parse_document(DocKind.SERVER_DESCRIPTORS, raw, path.name)
        assert b"overload-general" not in raw
        assert all(d.overload_general is None and d.overload_general_ignored is None for d in parsed)
        figures[path.name] = (sum(d.overload_general is not None for d in parsed), len(parsed))
    print(f"\noverload-general in real descriptor sets (reporting, descriptors): {figures}")
    assert figures[DESCRIPTORS] == (0, 587)


def test_a_line_in_a_real_descriptor_is_read_and_stem_leaves_it_unrecognised():
    raw = with_lines({0: b"overload-general 1 2020-02-29 07:00:00", 5: b"opt overload-general 1 2020-02-28 23:00:00",
                      9: b"overload-general 2 2020-02-29 08:00:00 a later version's extra arguments"})
    ours = parse_document(DocKind.SERVER_DESCRIPTORS, raw, "test")
    assert [(d.overload_general, d.overload_general_ignored) for d in (ours[0], ours[5], ours[9])] == [
        (datetime(2020, 2, 29, 7), None), (datetime(2020, 2, 28, 23), None), (datetime(2020, 2, 29, 8), None)]
    assert sum(d.overload_general is not None for d in ours) == 3
    # Every other field as without the line, and as stem reads them; stem 1.8.2 does not know the line.
    stems = list(stem.descriptor.parse_file(io.BytesIO(raw), "server-descriptor 1.0", validate=False))
    for mine, before, theirs in zip(ours, plain(), stems):
        for name in DESCRIPTOR_FIELDS:
            assert getattr(mine, name) == getattr(before, name) == getattr(theirs, name), name
    assert not hasattr(stems[0], "overload_general")
    assert stems[0].get_unrecognized_lines() == ["overload-general 1 2020-02-29 07:00:00"]


def test_a_descriptor_made_by_stem_create_is_read():
    made = RelayDescriptor.create({"fingerprint": " ".join([A[:4]] * 10), "published": "2021-03-05 10:00:00",
                                   "overload-general": "1 2021-03-04 05:00:00"}, validate=False)
    [ours] = fastdesc.parse_server_descriptors(made.get_bytes())
    assert (ours.overload_general, ours.overload_general_ignored) == (datetime(2021, 3, 4, 5), None)
    assert made.get_unrecognized_lines() == ["overload-general 1 2021-03-04 05:00:00"]


@pytest.mark.parametrize("lines, reason", [
    (b"overload-general 0 2020-02-29 07:00:00", "version 0 is not from 1 to 2147483647"),
    (b"overload-general 2147483648 2020-02-29 07:00:00", "version 2147483648 is not from 1"),
    (b"overload-general 99999999999999999999 2020-02-29 07:00:00", "is not a version and a time"),
    (b"overload-general -1 2020-02-29 07:00:00", "is not a version and a time"),
    (b"overload-general one 2020-02-29 07:00:00", "is not a version and a time"),
    (b"overload-general 1", "is not a version and a time"),
    (b"overload-general", "is not a version and a time"),
    (b"overload-general 1 2020-02-30 07:00:00", "'2020-02-30 07:00:00' is not a time"),
    (b"overload-general 1 2020-02-29 24:00:00", "is not a time"),
    (b"overload-general 1 1969-12-31 23:00:00", "is not a time from 1970 to 2199"),
    (b"overload-general 1 9999-12-31 23:00:00", "is not a time from 1970 to 2199"),
    (b"overload-general 1 2020-02-29 09:00:00", "is after the descriptor's published 2020-02-29 08:38:25"),
    (b"overload-general 1 2020-02-29 07:00:00\noverload-general 1 2020-02-29 07:00:00", "a second overload-general"),
    (b"overload-general 1 2020-02-29 07:00:00\noverload-general x", "a second overload-general"),
    (b"overload-general 1\t2020-02-29 07:00:00", "is not a version and a time"),
])
def test_a_hostile_line_is_ignored_with_its_reason_and_the_descriptor_kept(lines, reason):
    ours = parse_document(DocKind.SERVER_DESCRIPTORS, with_lines({0: lines}), "test")
    assert len(ours) == 587 and ours[0].published == datetime(2020, 2, 29, 8, 38, 25)
    assert ours[0].overload_general is None and reason in ours[0].overload_general_ignored
    assert all(d.overload_general is None and d.overload_general_ignored is None for d in ours[1:])


# --- fuzzing: any one-line value, never a crash; read exactly when the spec allows it -----------------------------

_DIGITS = st.text("0123456789", min_size=1, max_size=25)
_VERSIONS = st.one_of(_DIGITS, st.integers(-10 ** 30, 10 ** 30).map(str), st.sampled_from(
    ["1", "01", "0000000001", "2147483647", "2147483648", "0", "-1", "+1", "1.0", "١", "", " 1"]))
_TIMES = st.one_of(
    st.datetimes(datetime(1900, 1, 1), datetime(2300, 1, 1)).map(lambda when: f"{when:%Y-%m-%d %H:%M:%S}"
                                                                  if when.year >= 1000 else f"{when}"),
    st.builds("{}-{}-{} {}:{}:{}".format, *[_DIGITS] * 6),  # impossible dates and times, huge numbers
    st.sampled_from(["2020-02-29 08:38:25", "2020-02-29 08:38:26", "2020-02-29T07:00:00", "2020-02-29 07:00",
                     "2019-02-29 07:00:00", "2020-02-29 07:00:60", "0000-00-00 00:00:00"]))
#: One line's worth of anything but a newline (a new line is another line) and NUL (refused for the whole document,
#: as tor reads documents as C strings: not this line's business).
_TEXT = st.text(st.characters(blacklist_characters="\n\x00", blacklist_categories=("Cs",)), max_size=40)
_EXTRA = st.one_of(st.just(""), _TEXT.map(" ".__add__))
_VALUES = st.one_of(
    st.builds(lambda v, t, extra: f"{v} {t}{extra}", _VERSIONS, _TIMES, _EXTRA),
    st.builds(lambda when, extra: f"1 {when:%Y-%m-%d %H:%M:%S}{extra}",  # tor's own lines, to the second
              st.datetimes(datetime(1970, 1, 1), datetime(2020, 2, 29, 9)), _EXTRA),
    _TEXT)


def _expected(value: str, published: datetime) -> datetime | None:
    """What the spec lets a reader take from the line: an oracle written apart from the parser."""
    version, _, rest = value.partition(" ")
    if not (version.isascii() and version.isdigit() and len(version) <= 10 and 1 <= int(version) <= INT_MAX):
        return None
    stamp = rest[:19]
    if len(rest) > 19 and rest[19] != " " or not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}",
                                                              stamp):
        return None
    try:
        when = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S")
    except ValueError:
        return None
    return when if 1970 <= when.year < 2200 and when <= published else None


@FUZZ
@given(value=_VALUES, where=st.sampled_from(["before-signature", "after-router"]), twice=st.booleans())
def test_fuzzed_lines_never_crash_and_are_read_exactly_when_valid(value, where, twice):
    head, parts = real_parts()
    line = f"overload-general {value}".encode("utf-8", "surrogatepass")
    lines = line + (b"\n" + line if twice else b"")
    first = parts[0]
    if where == "before-signature":
        changed = first.replace(b"\nrouter-signature\n", b"\n" + lines + b"\nrouter-signature\n", 1)
    else:
        end = first.index(b"\n")
        changed = first[:end + 1] + lines + first[end:]
    [ours, *rest] = fastdesc.parse_server_descriptors(head + changed + parts[1])
    for name in DESCRIPTOR_FIELDS:
        assert getattr(ours, name) == getattr(plain()[0], name), name
    assert rest[0].overload_general is None and rest[0].overload_general_ignored is None
    expected = None if twice else _expected(value, ours.published)
    assert ours.overload_general == expected
    assert (ours.overload_general_ignored is None) == (expected is not None)  # read, or ignored with a reason
    if ours.overload_general_ignored is not None:
        assert isinstance(ours.overload_general_ignored, str) and "overload-general" in ours.overload_general_ignored


# --- metrics ---------------------------------------------------------------------------------------------------


def _stamp(when: datetime) -> bytes:
    return f"overload-general 1 {when:%Y-%m-%d %H:%M:%S}".encode()


def test_metrics_count_relays_within_72_hours_of_the_period(hour10):
    in_consensus = [index for index, d in enumerate(plain())
                    if d.fingerprint in hour10.routers and sum(o.fingerprint == d.fingerprint for o in plain()) == 1]
    late = next(index for index in in_consensus if plain()[index].published >= datetime(2020, 2, 29, 11))
    fresh, boundary, stale, broken = [index for index in in_consensus  # published after the fresh line's 09:00
                                      if datetime(2020, 2, 29, 9) <= plain()[index].published < HOUR10][:4]
    lines = {fresh: _stamp(HOUR10 - timedelta(hours=1)),
             boundary: _stamp(HOUR10 - timedelta(seconds=OVERLOAD_KEPT_SECONDS - 1)),  # tor's last second
             stale: _stamp(HOUR10 - timedelta(seconds=OVERLOAD_KEPT_SECONDS)),  # outlived in a descriptor not yet new
             broken: b"overload-general 1 2020-02-29",
             late: _stamp(datetime(2020, 2, 29, 11))}  # after the period: not reported yet at 10:00
    descriptors = parse_document(DocKind.SERVER_DESCRIPTORS, with_lines(lines), "test")
    table = build_table(hour10, descriptors, GEOIP)
    overload = overload_of(table, descriptors, TIME)
    fields = overload_fields(overload)
    row = {index: table.fingerprints.index(plain()[index].fingerprint) for index in lines}
    assert [fields["overloaded"][row[i]] for i in (fresh, boundary, stale, broken, late)] == [1, 1, 0, 0, 0]
    age = fields["overload_age_seconds"]
    assert [age[row[i]] for i in (fresh, boundary, stale)] == [HOUR, OVERLOAD_KEPT_SECONDS - 1, OVERLOAD_KEPT_SECONDS]
    assert np.isnan(age[row[broken]]) and np.isnan(age[row[late]])
    with_descriptor = ~np.isnan(table.advertised_bytes)  # what build_table matched
    assert np.array_equal(~np.isnan(fields["overloaded"]), with_descriptor)  # absent without a descriptor
    assert np.nansum(fields["overloaded"]) == 2 and np.count_nonzero(~np.isnan(age)) == 3

    [network] = overload_network_points(table, overload, TIME)
    weight = table.weight[row[fresh]] + table.weight[row[boundary]]
    assert (network.measurement, network.tags, network.time) == ("tor_network", {}, TIME)
    assert network.fields == {"overloaded_relays": 2.0, "overloaded_weight_fraction": pytest.approx(
        weight / table.weight.sum()), "overload_lines_ignored": 1.0}
    assert all(isinstance(value, float) and np.isfinite(value) for value in network.fields.values())
    from agent.metrics.catalogue import problems
    from agent.model.points import PointColumns

    relay_points = PointColumns("tor_relay", "fingerprint", table.fingerprints, fields, TIME).points()
    assert problems([network, *relay_points]) == []  # every field is catalogued


def test_without_descriptors_nothing_is_claimed(hour10):
    table = build_table(hour10, [], GEOIP)
    overload = overload_of(table, [], TIME)
    assert overload_network_points(table, overload, TIME) == []  # not "0 relays overloaded"
    assert all(np.isnan(column).all() for column in overload_fields(overload).values())


def test_stems_descriptors_count_as_without_the_line(hour10):
    """Tests hand stem's descriptors to the metrics; they have no overload_general: no line, not a crash."""
    table = build_table(hour10, [], GEOIP)
    spaced = " ".join(table.fingerprints[0][i:i + 4] for i in range(0, 40, 4))
    made = RelayDescriptor.create({"fingerprint": spaced, "overload-general": "1 2020-02-29 09:00:00"}, validate=False)
    overload = overload_of(table, [made], TIME)
    assert overload.known[0] and not overload.overloaded.any() and overload.ignored == 0


# --- the subscription alert ------------------------------------------------------------------------------------

A = "A" * 40
POLICY = SuppressionPolicy({"info": 24, "warning": 4, "critical": 0}, {})
START = datetime(2026, 11, 24, 12)


def descriptor(overload: str | None, published: datetime):
    """A fastdesc descriptor of relay A, made by stem's RelayDescriptor.create() with the line when given."""
    fields = {"router": "relayA 10.0.0.1 9001 0 0", "fingerprint": " ".join(A[i:i + 4] for i in range(0, 40, 4)),
              "published": f"{published:%Y-%m-%d %H:%M:%S}", "contact": "op@example.org"}
    if overload is not None:
        fields["overload-general"] = overload
    [parsed] = fastdesc.parse_server_descriptors(RelayDescriptor.create(fields, validate=False).get_bytes())
    return parsed


def period(valid_after: datetime, descriptors=()) -> Snapshot:
    times = {name: f"{valid_after + timedelta(hours=hours):%Y-%m-%d %H:%M:%S}"
             for name, hours in (("valid-after", 0), ("fresh-until", 1), ("valid-until", 3))}
    consensus = NetworkStatusDocumentV3.create({**times, "server-versions": "0.4.8.12,0.4.9.3-alpha"},
                                               routers=[entry(A)])
    return Snapshot("test", valid_after, valid_after, [Authority("auth0", "0" * 40, "127.0.0.1", 1)], {}, [],
                    server_descriptors=list(descriptors), archived_consensus=consensus)


def test_the_condition_holds_for_72_hours_after_the_reported_hour():
    at = START - timedelta(hours=2)
    consensus = period(START).latest_consensus()

    def found(now: datetime, line: str | None = f"1 {at:%Y-%m-%d %H:%M:%S}"):
        status = relay_status(A, consensus, {A: descriptor(line, START - timedelta(minutes=30))}, [], [])
        return [c for c in conditions(status, [], consensus, SETTINGS, unix(now)) if c.id == "TorRelayOverloaded"]

    [condition] = found(START)
    assert (condition.severity, condition.wait_seconds, condition.overload_since) == ("info", 0, unix(at))
    assert condition.description.startswith(f"relayA ({A}) reported overload at 2026-11-24 10:00 UTC")
    assert "ends by 2026-11-27 10:00 UTC" in condition.description
    assert found(at + timedelta(hours=72, seconds=-1)) and not found(at + timedelta(hours=72))  # rephist.c
    assert not found(at - timedelta(seconds=1))  # a time after the period's valid-after: not reported yet
    assert not found(START, None) and not found(START, "1 2026-11-24 13:00:00")  # none; after published: ignored


def test_a_subscriber_is_told_when_the_relay_reports_overload_and_when_it_clears(tmp_path):
    state = State(tmp_path)
    subscription = SubscriptionStore(state.db).add_active("op@example.org", "relay", A, 0)
    watch, book = RelayWatch(state.db, SETTINGS), AlertBook(state.db)

    def advance(snapshot: Snapshot):
        now = unix(snapshot.latest_consensus().valid_after)
        alerts = watch.alerts(snapshot, now)
        with state.db:
            notices = book.advance(alerts, now, POLICY, scope=lambda alert: alert.recipient is not None)
        return alerts, [(n.alert.id, n.status) for n in notices]

    overloaded = descriptor(f"1 {START - timedelta(hours=1):%Y-%m-%d %H:%M:%S}", START - timedelta(minutes=10))
    alerts, notices = advance(period(START, [overloaded]))
    assert notices == [("TorRelayOverloaded", "firing")]
    assert (alerts[0].subjects, alerts[0].recipient, alerts[0].unsubscribe_token) == (
        {"relay": A}, "op@example.org", subscription.unsubscribe_token)
    assert alerts[0].extra["overload_since"] == unix(START - timedelta(hours=1))

    # The descriptors' fetch failed: judged as last known (the time kept with the alert), so no false "resolved".
    with state.db:  # and an unreadable alert row (the engine sets it aside) does not stop the period
        state.db.execute("INSERT INTO alerts VALUES ('TorRelayOverloaded|relay=X|y', 'not json', 0, 0, NULL)")
    for hours in (1, 2):
        alerts, notices = advance(period(START + timedelta(hours=hours)))
        assert [a.id for a in alerts] == ["TorRelayOverloaded"] and notices == []

    # A new descriptor without the line: resolved.
    alerts, notices = advance(period(START + timedelta(hours=3), [descriptor(None, START + timedelta(hours=2))]))
    assert alerts == [] and notices == [("TorRelayOverloaded", "resolved")]


@pytest.mark.parametrize("fetched", [True, False], ids=["line-still-there", "no-descriptors"])
def test_the_alert_clears_when_72_hours_pass_even_if_the_line_stays(tmp_path, fetched):
    state = State(tmp_path)
    SubscriptionStore(state.db).add_active("op@example.org", "relay", A, 0)
    watch, book = RelayWatch(state.db, SETTINGS), AlertBook(state.db)
    line = f"1 {START:%Y-%m-%d %H:%M:%S}"
    kept = descriptor(line, START + timedelta(minutes=5))  # its next descriptor is 18 h away: it keeps the line

    def told(valid_after: datetime, descriptors=(kept,)):
        now = unix(valid_after)
        with state.db:
            notices = book.advance(watch.alerts(period(valid_after, descriptors), now), now, POLICY,
                                   scope=lambda alert: alert.recipient is not None)
        return [n.status for n in notices]

    assert told(START) == ["firing"]
    assert told(START + timedelta(hours=24)) == ["reminder"]  # info: once a day
    assert told(START + timedelta(hours=48)) == ["reminder"]
    assert told(START + timedelta(hours=71)) == []
    # The line is still in the descriptor (or the period has none, and the time kept with the alert is read).
    assert told(START + timedelta(hours=72), (kept,) if fetched else ()) == ["resolved"]
