"""Fuzzing every parser with hostile mutations of real documents: each parses sanely or is refused by name.

Hypothesis mutates real documents from tests/data (line deletions,
duplications and swaps, byte flips, numbers replaced by huge, negative or
Unicode-digit values, dates by impossible ones, nicknames by NUL or
non-UTF-8 bytes, keyword swaps, truncation) and feeds each to
``agent.parse.documents.parse_document``. Every outcome must be one of:

- a DocumentError whose message starts with the kind and the source, or
- a parsed document in which every number, name and date is one tor's
  grammar allows (``_check_sane``), so nothing downstream sees an absurd one;

never another exception, a hang (an alarm is the guard) or a memory blow-up
(tracemalloc's peak is bounded). A consensus is also parsed with an
``EntryMemory`` primed with the original, which must answer exactly as
parsing it whole.

CI runs a bounded, reproducible slice (derandomized, ``EXAMPLES`` per
parser, a few seconds in all); ``ALLIUM_FUZZ_EXAMPLES=5000`` runs a long one.
"""

from __future__ import annotations

import os
import re
import signal
import tracemalloc
from contextlib import contextmanager
from datetime import datetime
from functools import cache

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.model.entries import ABSENT, read_vote_stats
from agent.model.errors import DocumentError
from agent.model.snapshot import DocKind
from agent.parse import fastparse
from agent.parse.documents import _strip_annotations, parse_document
from agent.parse.entrymemory import EntryMemory
from tests.conftest import SHARED_TORDATA, read_data

#: CI's slice: this many examples per parser, the same ones every run. A long run (ALLIUM_FUZZ_EXAMPLES=5000) draws
#: new ones each time; Hypothesis prints any failing example whole, so it can be made a test of its own.
EXAMPLES = int(os.environ.get("ALLIUM_FUZZ_EXAMPLES", "100"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize="ALLIUM_FUZZ_EXAMPLES" not in os.environ,
                database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
HANG_GUARD_SECONDS = 60  # a parse of these small documents takes milliseconds; only a hang reaches this
PEAK_BYTES = 16 << 20  # one parse of a seed (at most ~60 kB) peaks at 0.3 MB: 50 times that is a blow-up
SOURCE = "fuzz-source"

UINT32_MAX, INT32_MIN, INT32_MAX, INT_MAX = 2 ** 32 - 1, -2 ** 31, 2 ** 31 - 1, 2 ** 31 - 1
LONG_MAX = 2 ** 63 - 1
NICKNAME = re.compile(r"[A-Za-z0-9]{1,19}")
FINGERPRINT = re.compile(r"[0-9A-F]{40}")


# -- seeds: real documents, cropped so that a parse takes milliseconds ----------------------------------------------


def _cropped(name: str, entries: int) -> bytes:
    """A network status document with its first ``entries`` router entries (header and footer whole)."""
    raw = _strip_annotations(read_data(name))
    header, body, footer = fastparse.split_network_status(raw)
    kept = body.split(b"\nr ")[:entries]
    return header + b"\nr ".join(kept) + (b"\n" if not kept[-1].endswith(b"\n") else b"") + footer


def _first_descriptors(name: str, count: int) -> bytes:
    raw = read_data(name)
    starts = [match.start() for match in re.finditer(rb"(?m)^router ", raw)]
    return raw[:starts[count]] if len(starts) > count else raw


@cache
def seeds(kind: DocKind) -> tuple[bytes, ...]:
    """The real documents mutated for ``kind``."""
    return {
        DocKind.CONSENSUS: lambda: (_cropped("2022-11-19-10-00-00-consensus.xz", 30),
                                    _cropped("2016-09-20-13-00-00-consensus.xz", 30)),
        DocKind.MICRODESC_CONSENSUS: lambda: (_cropped("2022-11-19-10-00-00-consensus-microdesc.xz", 30),),
        DocKind.VOTE: lambda: (read_data("2017-07-17-17-00-00-vote-cropped"),
                               _cropped("2016-09-20-13-00-00-vote-maatuska.xz", 30),
                               read_data("testnet-shared-random/074550-auth1.vote")),
        DocKind.SERVER_DESCRIPTORS: lambda: (read_data("server-descriptors-2"),
                                             _first_descriptors("2020-02-29-10-05-00-server-descriptors.xz", 12)),
        DocKind.KEY_CERTIFICATES: lambda: (read_data("2022-11-certs"),),
        DocKind.BANDWIDTH_FILE: lambda: (read_data("bandwidth-file-v1.4"),),
        DocKind.EXTRA_INFOS: lambda: ((SHARED_TORDATA / "extra-infos" / "2016-10-02-08-05-00-extra-infos")
                                      .read_bytes(),),
    }[kind]()


# -- mutations ------------------------------------------------------------------------------------------------------

HOSTILE_NUMBERS = [b"9" * 400, b"-1", b"-" + b"9" * 30, "\u0665\u0660\u0660\u0660".encode(), "\uff15".encode(),
                   "\u00b2".encode(), "\U0001d7d3".encode(), b"+5", b"1_000", b"0", b"00", b"4294967295",
                   b"4294967296", b"2147483647", b"2147483648", b"-2147483649", b"65535", b"65536",
                   b"9223372036854775807", b"9223372036854775808", b"18446744073709551616", b"", b" ", b"0x10",
                   b"1e9", b"1.5", b"nan", b"inf", b"\x00", b"\xff"]
HOSTILE_DATES = [b"9999-12-31 23:59:59", b"0001-01-01 00:00:00", b"1969-12-31 23:59:59", b"2020-13-01 00:00:00",
                 b"2020-02-30 00:00:00", b"2020-01-01 24:00:00", b"2020-01-01 00:00:60", b"2262-04-12 00:00:00",
                 "\uff12\uff10\uff12\uff10-01-01 00:00:00".encode(), b"2020-01-01 00:00:00x", b"2020-1-1 0:0:0",
                 b"+020-01-01 00:00:00", b" 2020-01-01 00:00:00", b"2020-01-01  00:00:00"]
HOSTILE_NAMES = [b"a\x00b", b"\xff\xfe", "n\u00efck".encode(), b"x" * 20, b"", b"a-b", "\uff21\uff22".encode(),
                 b"a b", b"\x00", "\u0665".encode()]
#: Whole lines a hostile source might send, inserted anywhere (the fuzzer also makes its own).
HOSTILE_LINES = [b"known-flags " + b" ".join(b"F%02d" % index for index in range(65)),
                 b"known-flags Running Fast", b"params b=1 a=2", b"params a=1 a=2", b"params a=2147483648",
                 b"bandwidth-weights Wbd=-2147483649", b"consensus-method 0", b"voting-delay 300 \xd9\xa5",
                 b"w Bandwidth=4294967296", b"w Bandwidth=1 Measured=99999999999", b"s Fast Fast", b"s Fast  Exit",
                 b"m !!!", b"bandwidth 1 1 " + b"9" * 400, b"bandwidth 0 0 0", b"uptime " + b"9" * 30,
                 b"family $" + b"A" * 39, b"ipv6-policy accept \xd9\xa8\xd9\xa0", b"fingerprint 0x" + b"A" * 38,
                 b"bw=1 bw=2 node_id=$" + b"A" * 40, b"bw=" + b"9" * 20 + b" node_id=$" + b"A" * 40,
                 b"flag-thresholds fast-speed=\xd9\xa5", b"dir-source x " + b"A" * 40 + b" h 1.2.3.4 99999 1",
                 b"recommended-relay-protocols Link=1-64", b"shared-rand-current-value -1 AAAA",
                 b"stats wfu=1.5 tk=-1 mtbf=nan", b"stats wfu=1.000000 tk=" + b"9" * 21 + b" mtbf=54",
                 b"stats wfu=0.500000 tk=7 mtbf=7"]
NUMBER = re.compile(rb"\d+")
DATE = re.compile(rb"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")
NAMED_LINE = re.compile(rb"(?m)^(?:r|router|dir-source|extra-info) (\S*)")

_index = st.integers(0, 2 ** 20)
MUTATION = st.one_of(
    st.tuples(st.just("delete"), _index),
    st.tuples(st.just("duplicate"), _index),
    st.tuples(st.just("swap"), _index, _index),
    st.tuples(st.just("keyword"), _index, _index),
    st.tuples(st.just("flip"), _index, st.integers(0, 255)),
    st.tuples(st.just("truncate"), _index),
    st.tuples(st.just("insert"), _index, st.one_of(st.binary(max_size=40), st.sampled_from(HOSTILE_LINES))),
    st.tuples(st.just("token"), _index, _index, st.sampled_from(HOSTILE_NUMBERS + HOSTILE_NAMES)),
    st.tuples(st.just("number"), _index, st.one_of(st.sampled_from(HOSTILE_NUMBERS),
                                                   st.integers(-2 ** 80, 2 ** 80).map(lambda n: str(n).encode()))),
    st.tuples(st.just("date"), _index, st.sampled_from(HOSTILE_DATES)),
    st.tuples(st.just("date-from"), _index, _index),
    st.tuples(st.just("name"), _index, st.sampled_from(HOSTILE_NAMES)),
)


def _replace_match(raw: bytes, pattern: re.Pattern, index: int, new: bytes, group: int = 0) -> bytes:
    matches = list(pattern.finditer(raw))
    if not matches:
        return raw
    match = matches[index % len(matches)]
    return raw[:match.start(group)] + new + raw[match.end(group):]


def mutate(raw: bytes, mutation: tuple) -> bytes:
    """``raw`` with one mutation applied (indices are taken modulo what there is)."""
    operation, *arguments = mutation
    lines = raw.split(b"\n")
    at = arguments[0] % len(lines)
    if operation == "delete":
        return b"\n".join(lines[:at] + lines[at + 1:])
    if operation == "duplicate":
        return b"\n".join(lines[:at + 1] + lines[at:])
    if operation == "swap":
        other = arguments[1] % len(lines)
        lines[at], lines[other] = lines[other], lines[at]
        return b"\n".join(lines)
    if operation == "keyword":
        keyword = lines[arguments[1] % len(lines)].split(b" ", 1)[0]
        lines[at] = b" ".join([keyword] + lines[at].split(b" ", 1)[1:])
        return b"\n".join(lines)
    if operation == "token":  # a word of a line (not its keyword) replaced
        words = lines[at].split(b" ")
        if len(words) > 1:
            words[1 + arguments[1] % (len(words) - 1)] = arguments[2]
            lines[at] = b" ".join(words)
        return b"\n".join(lines)
    if operation == "insert":
        return b"\n".join(lines[:at] + [arguments[1]] + lines[at:])
    if operation == "flip":
        position = arguments[0] % max(len(raw), 1)
        return raw[:position] + bytes([arguments[1]]) + raw[position + 1:]
    if operation == "truncate":
        return raw[:arguments[0] % max(len(raw), 1)]
    if operation == "number":
        return _replace_match(raw, NUMBER, arguments[0], arguments[1])
    if operation == "date":
        return _replace_match(raw, DATE, arguments[0], arguments[1])
    if operation == "date-from":
        dates = DATE.findall(raw)
        return _replace_match(raw, DATE, arguments[0], dates[arguments[1] % len(dates)]) if dates else raw
    return _replace_match(raw, NAMED_LINE, arguments[0], arguments[1], group=1)  # name


# -- guards ---------------------------------------------------------------------------------------------------------


@contextmanager
def hang_guard(seconds: int):
    """Raises TimeoutError if the block runs longer than ``seconds`` (a hang, not a slow parse)."""
    def hung(signum, frame):
        raise TimeoutError(f"parsing took more than {seconds} s: a hang")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def parse_guarded(kind: DocKind, raw: bytes, memory: EntryMemory | None = None):
    """(parsed document or None, DocumentError or None), within the hang guard and the memory bound."""
    tracing = tracemalloc.is_tracing()  # already (python -X tracemalloc): measured from here, left running
    if tracing:
        tracemalloc.reset_peak()
    else:
        tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    try:
        with hang_guard(HANG_GUARD_SECONDS):
            try:
                return parse_document(kind, raw, SOURCE, memory=memory), None
            except DocumentError as error:
                return None, error
    finally:
        peak = tracemalloc.get_traced_memory()[1] - before
        if not tracing:
            tracemalloc.stop()
        assert peak < PEAK_BYTES, f"parsing {len(raw)} bytes allocated {peak / 1e6:.0f} MB at its peak"


# -- what a parsed document must hold -----------------------------------------------------------------------------


def _check_time(name: str, value) -> None:
    assert isinstance(value, datetime) and 1970 <= value.year < 2200, (name, value)


def _check_int(name: str, value, low: int, high: int) -> None:
    assert isinstance(value, int) and low <= value <= high, (name, value)


def _check_network_status(document) -> None:
    _check_time("valid-after", document.valid_after)
    assert document.valid_after < document.fresh_until < document.valid_until
    _check_time("valid-until", document.valid_until)
    flags = list(document.known_flags)
    assert len(flags) <= 64 and flags == sorted(set(flags)), flags
    for name, value in list((document.params or {}).items()) + list((document.bandwidth_weights or {}).items()):
        _check_int(name, value, INT32_MIN, INT32_MAX)
    if document.consensus_method is not None:
        _check_int("consensus-method", document.consensus_method, 1, INT_MAX)
    for method in document.consensus_methods or ():
        _check_int("consensus-methods", method, 1, INT_MAX)
    for authority in document.directory_authorities:
        _check_int("dir-source ORPort", authority.or_port, 0, 65535)
        _check_int("dir-source DirPort", authority.dir_port or 0, 0, 65535)
    entries = document.entries
    for column in (entries.bandwidth, entries.measured):
        assert column.dtype == np.int64 and ((column == ABSENT) | ((column >= 0) & (column <= UINT32_MAX))).all()
    assert ((entries.or_ports >= 1) & (entries.or_ports <= 65535)).all()
    assert ((entries.dir_ports >= 0) & (entries.dir_ports <= 65535)).all()
    assert all(NICKNAME.fullmatch(nickname) for nickname in entries.nicknames), entries.nicknames
    assert all(FINGERPRINT.fullmatch(fingerprint) for fingerprint in entries.fingerprints)
    for published in set(entries.published):
        _check_time("published", published)
    if entries.stats is not None:  # a vote's stats lines: a WFU of 0-1, plain numbers; NaN where not read
        figures = entries.stats[~np.isnan(entries.stats)]
        assert entries.stats.shape == (len(entries), 3) and np.isfinite(figures).all() and (figures >= 0).all()
        assert (np.isnan(entries.stats[:, 0]) | (entries.stats[:, 0] <= 1)).all()
    if document.is_vote:
        assert set().union(*map(set, entries.flag_lines)) <= set(flags)
        bits = {flag: 1 << index for index, flag in enumerate(flags)}
        masks = entries.flag_masks(bits)  # what the authority metrics do with a vote's flags
        assert all(int(mask) < 2 ** len(flags) for mask in masks.tolist())


def _check_descriptor(descriptor) -> None:
    assert NICKNAME.fullmatch(descriptor.nickname), descriptor.nickname
    assert FINGERPRINT.fullmatch(descriptor.fingerprint.upper()), descriptor.fingerprint
    _check_int("ORPort", descriptor.or_port, 1, 65535)
    _check_int("bandwidth rate", descriptor.average_bandwidth, 1, INT_MAX)
    _check_int("bandwidth burst", descriptor.burst_bandwidth, 0, INT_MAX)
    _check_int("bandwidth observed", descriptor.observed_bandwidth, 0, INT_MAX)
    if descriptor.uptime is not None:
        _check_int("uptime", descriptor.uptime, -LONG_MAX - 1, LONG_MAX)
    _check_time("published", descriptor.published)


def _check_sane(kind: DocKind, parsed) -> None:
    """Every number, name and date of a parsed document is one tor's grammar allows."""
    if kind in (DocKind.CONSENSUS, DocKind.MICRODESC_CONSENSUS, DocKind.VOTE):
        _check_network_status(parsed)
    elif kind is DocKind.SERVER_DESCRIPTORS:
        for descriptor in parsed:
            _check_descriptor(descriptor)
    elif kind is DocKind.EXTRA_INFOS:
        for extra in parsed:
            assert re.fullmatch(r"[0-9A-F]{40}", extra.fingerprint) and re.fullmatch(r"[0-9A-F]{40}", extra.digest)
            _check_time("published", extra.published)
            if extra.ratelimits is not None:
                _check_time("overload-ratelimits", extra.ratelimits.at)
            if extra.fd_exhausted is not None:
                _check_time("overload-fd-exhausted", extra.fd_exhausted)
    elif kind is DocKind.KEY_CERTIFICATES:
        for certificate in parsed:
            _check_time("dir-key-published", certificate.published)
            _check_time("dir-key-expires", certificate.expires)
            _check_int("dir-address port", certificate.dir_port or 0, 0, 65535)
    else:
        _check_time("timestamp", parsed.timestamp)
        for measurement in parsed.measurements.values():
            if "bw" in measurement:
                assert re.fullmatch(r"[0-9]{1,19}", measurement["bw"]), measurement["bw"]
                _check_int("bw", int(measurement["bw"]), 0, LONG_MAX)


def _same_outcome(whole, remembered) -> bool:
    """Parsing with an EntryMemory answered as parsing whole: the same refusal, or the same entries."""
    (document, error), (again, again_error) = whole, remembered
    if error is not None or again_error is not None:
        return str(error) == str(again_error)
    ours, theirs = document.entries, again.entries
    return (ours.fingerprints == theirs.fingerprints and ours.published == theirs.published
            and ours.flag_sets() == theirs.flag_sets() and (ours.bandwidth == theirs.bandwidth).all()
            and ours.nicknames == theirs.nicknames and ours.or_addresses == theirs.or_addresses)


# -- the fuzzing ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(DocKind), ids=[kind.value for kind in DocKind])
@FUZZ
@given(data=st.data())
def test_a_mutated_real_document_parses_sanely_or_is_refused_by_name(kind, data):
    seed = seeds(kind)[data.draw(st.integers(0, len(seeds(kind)) - 1), label="seed")]
    mutations = data.draw(st.lists(MUTATION, min_size=1, max_size=4), label="mutations")
    raw = seed
    for mutation in mutations:
        raw = mutate(raw, mutation)
    parsed, error = parse_guarded(kind, raw)
    if error is not None:
        assert str(error).startswith(f"{kind.value} from {SOURCE}: "), str(error)
    else:
        _check_sane(kind, parsed)
    if kind is DocKind.VOTE and error is None:  # the reading of a vote's bytes gives what the parser kept
        entries = parsed.entries
        assert read_vote_stats(raw) == {entries.fingerprints[row]: figures for row in range(len(entries))
                                        if (figures := entries.stats_of(row)) is not None}
    if kind in (DocKind.CONSENSUS, DocKind.MICRODESC_CONSENSUS):
        memory = EntryMemory()
        parse_document(kind, seed, SOURCE, memory=memory)
        assert _same_outcome((parsed, error), parse_guarded(kind, raw, memory))


@pytest.mark.parametrize("kind", list(DocKind), ids=[kind.value for kind in DocKind])
def test_every_seed_parses_and_is_sane(kind):
    for seed in seeds(kind):
        parsed, error = parse_guarded(kind, seed)
        assert error is None, error
        _check_sane(kind, parsed)
