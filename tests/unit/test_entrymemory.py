"""Entries remembered from one consensus to the next (backfill): the same columns as parsing, errors unchanged."""

import pytest

from agent.model.snapshot import DocKind
from agent.parse import entrymemory, fastparse
from agent.parse.documents import _strip_annotations, parse_document
from agent.parse.entrymemory import EntryMemory
from tests.conftest import DATA
from tests.unit.test_fastparse import documents, read


def entries_of_file(name: str) -> bytes:
    return fastparse.split_network_status(_strip_annotations(read(DATA / name)))[1]


def bodies(entries: bytes) -> list[str]:
    """Each entry's text without its leading 'r ' (how the memory keys them), found independently."""
    return ["r " + body for body in ("\n" + entries.decode()).split("\nr ")[1:]]


def rows_of(entries) -> list[tuple]:
    """Every column of every row (flags as their line's text), and the columns' types."""
    flags = [" ".join(line) for line in entries.flag_lines]
    count = len(entries)
    assert entries.flag_lines[0] == [] and len(set(flags)) == len(flags)  # code 0: no flags; each line once
    types = tuple(column.dtype for column in (entries.or_ports, entries.dir_ports, entries.flag_code,
                                              entries.bandwidth, entries.measured, entries.unmeasured))
    return [types] + list(zip(
        entries.fingerprints, entries.nicknames, entries.digests, entries.published, entries.addresses,
        entries.or_ports.tolist(), entries.dir_ports.tolist(), [flags[code] for code in entries.flag_code.tolist()],
        entries.bandwidth.tolist(), entries.measured.tolist(), entries.unmeasured.tolist(), entries.version_lines,
        entries.versions, [entries.or_addresses.get(row) for row in range(count)],
        [entries.unrecognized.get(row) for row in range(count)], entries.microdescriptor_digests or [None] * count))


def remembered(*entry_texts: bytes, microdesc: bool = False):
    memory = EntryMemory()
    return [entrymemory.parse_entries(text, microdesc, consensus=True, memory=memory) for text in entry_texts]


def test_remembered_entries_are_the_parsed_ones_on_every_real_network_status_document():
    """Each real document parsed after the one before (so the consecutive hours share most entries)."""
    compared = entries = 0
    for flavour in (False, True):
        texts = []
        for path in documents("network-status"):
            raw = _strip_annotations(read(path))
            if raw.split(b"\n", 1)[0].endswith(b" microdesc") == flavour:
                texts.append(fastparse.split_network_status(raw)[1])
        for text, ours in zip(texts, remembered(*texts, microdesc=flavour)):
            assert rows_of(ours) == rows_of(fastparse.parse_router_entries(text, flavour))
            compared += 1
            entries += len(ours)
    print(f"\nremembered entries compared with parsed ones: {compared} documents, {entries} entries")
    assert compared >= 20


def test_only_entries_not_in_the_previous_consensus_are_parsed(monkeypatch):
    ten = entries_of_file("2020-02-29-10-00-00-consensus.xz")
    eleven = entries_of_file("2020-02-29-11-00-00-consensus.xz")
    parsed_counts = []
    parse = fastparse.parse_entry_text
    monkeypatch.setattr(fastparse, "parse_entry_text",
                        lambda text, microdesc, *line: parsed_counts.append(text.count("r ", 0, 2) + text.count("\nr "))
                        or parse(text, microdesc, *line))
    first, second, again = remembered(ten, eleven, eleven)
    new_in_eleven = len(set(bodies(eleven)) - set(bodies(ten)))
    assert parsed_counts == [len(first), new_in_eleven, 0]  # the same consensus again: nothing to parse
    assert rows_of(again) == rows_of(second)
    assert 0.15 * len(second) < new_in_eleven < 0.3 * len(second)  # 79 % of 11:00's entries are 10:00's
    assert rows_of(second) == rows_of(fastparse.parse_router_entries(eleven, False))


def test_a_changed_entry_is_read_again_and_only_the_last_consensus_is_kept():
    ten = entries_of_file("2020-02-29-10-00-00-consensus.xz")
    first_w = ten.index(b"\nw Bandwidth=")
    changed = ten[:first_w] + b"\nw Bandwidth=123456789" + ten[ten.index(b"\n", first_w + 1):]
    memory = EntryMemory()
    memory.parse_entries(ten, False)
    ours = memory.parse_entries(changed, False)
    rows, kept = memory._previous[False]
    assert kept is ours is memory.remembered(False) and memory.remembered(True) is None
    assert rows == {body[2:]: row for row, body in enumerate(bodies(changed[:-1]))}
    assert ours.bandwidth[0] == 123456789
    assert rows_of(ours) == rows_of(fastparse.parse_router_entries(changed, False))
    memory.forget()
    assert memory.remembered(False) is None


@pytest.mark.parametrize("change, problem", [
    ((b"\nw Bandwidth=", b"\nw Bandwidth=lots "), "Bandwidth= needs a number"),
    ((b"\ns ", b"\nx "), "no 's' line"),
])
def test_a_malformed_entry_is_refused_naming_the_same_line_as_without_memory(change, problem):
    ten = entries_of_file("2020-02-29-10-00-00-consensus.xz")
    broken = ten[:len(ten) // 2] + ten[len(ten) // 2:].replace(*change, 1)
    with pytest.raises(ValueError, match=problem) as plain:
        fastparse.parse_router_entries(broken, False)
    with pytest.raises(ValueError) as ours:
        remembered(ten, broken)
    assert str(ours.value) == str(plain.value)


def test_a_relay_listed_twice_is_refused_as_without_memory():
    ten = entries_of_file("2020-02-29-10-00-00-consensus.xz")
    first_entry = ten[:ten.index(b"\nr ") + 1]
    doubled = ten + first_entry.replace(b"r ", b"r othername ", 1).replace(b"othername ", b"", 1)
    with pytest.raises(ValueError, match="listed twice") as plain:
        fastparse.parse_router_entries(doubled, False)
    with pytest.raises(ValueError) as ours:
        remembered(ten, doubled)
    assert str(ours.value) == str(plain.value)


@pytest.mark.parametrize("change", [(b"\nr ", b"\nopt r "), (b"\nr ", b"\nr\t")])
def test_an_entry_start_the_split_does_not_see_still_parses_as_without_memory(change):
    ten = entries_of_file("2020-02-29-10-00-00-consensus.xz")
    middle = ten.index(b"\nr ", len(ten) // 2)
    unusual = ten[:middle] + ten[middle:].replace(*change, 1)
    relay_gone = ten[:middle] + ten[ten.index(b"\nr ", middle + 1):]  # the next hour: that relay has left
    plain = fastparse.parse_router_entries(unusual, False)
    assert len(plain) == len(fastparse.parse_router_entries(ten, False))
    _, ours, after = remembered(ten, unusual, relay_gone)
    assert rows_of(ours) == rows_of(plain)
    assert rows_of(after) == rows_of(fastparse.parse_router_entries(relay_gone, False))  # found in review


def test_votes_are_not_remembered_and_nothing_is_without_a_memory(monkeypatch):
    vote = read(DATA / "2016-09-20-13-00-00-vote-maatuska.xz")
    ten = read(DATA / "2020-02-29-10-00-00-consensus.xz")
    memory = EntryMemory()
    parse_document(DocKind.VOTE, vote, "maatuska", memory=memory)
    assert memory._previous == {False: None, True: None}
    consensus = parse_document(DocKind.CONSENSUS, ten, "moria1", memory=memory)
    assert len(memory._previous[False][0]) > 6000 and memory.remembered(False) is consensus.entries
    other = EntryMemory()  # memories are independent of each other
    assert other.remembered(False) is None
    used = []
    monkeypatch.setattr(EntryMemory, "parse_entries", lambda *args, **kwargs: used.append(args))
    without = parse_document(DocKind.CONSENSUS, ten, "moria1")  # the default, as the live path: no memory
    assert used == [] and rows_of(without.entries) == rows_of(consensus.entries)


def test_a_memory_with_parse_document_gives_what_parsing_whole_gives():
    ten, eleven = (read(DATA / f"2020-02-29-{hour}-00-00-consensus.xz") for hour in ("10", "11"))
    memory = EntryMemory()
    parse_document(DocKind.CONSENSUS, ten, "moria1", memory=memory)
    ours = parse_document(DocKind.CONSENSUS, eleven, "moria1", memory=memory)
    plain = parse_document(DocKind.CONSENSUS, eleven, "moria1")
    assert memory.remembered(False) is ours.entries is ours.routers
    assert rows_of(ours.entries) == rows_of(plain.entries) and ours.raw == plain.raw
