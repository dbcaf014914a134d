"""The CIISS contact-line parser on every real contact line we hold, and on a hand-written case for each rule.

Real lines: every ``contact`` line of the documents in ../shared/tordata (server descriptors, partial
documents, a tor data directory, and the 2023 consensus whose dizum authority writes a CIISS line) and in
tests/data. Hand-written lines cover what the real ones do not: the spellings of ``@``, url forms, other
ciissversions, unknown proofs, repeated keys, bytes that are not UTF-8, huge lines and control characters.
"""

from __future__ import annotations

import os
import re
from functools import cache

import pytest

from agent.model.ciiss import (
    COMPLETE,
    MAX_CONTACT_CHARACTERS,
    NO_CONTACT,
    NO_DOMAIN,
    NO_PROOF,
    NO_VERSION,
    NOT_CIISS,
    PROOF_TYPES,
    ContactFields,
    ContactSummary,
    bounded_tag,
    parse_contact,
    summary,
)
from tests.conftest import DATA, SHARED_TORDATA, read_data

STATUSES = {NO_CONTACT, NOT_CIISS, NO_VERSION, NO_DOMAIN, NO_PROOF, COMPLETE}
SHARED_DIRECTORIES = ("server-descriptors", "partial", "tor-datadir")
AUTHORITY_CONSENSUS = SHARED_TORDATA / "consensus" / "2023-06-01-10-00-00-consensus.kumavis-tor-ts"
DIZUM = ("email:usura[]sabotage.org url:https://386bsd.net proof:uri-rsa abuse:abuse[]sabotage.net "
         "twitter:adejoode ciissversion:2")
CLAIM = "url:https://example.org proof:uri-rsa ciissversion:2"


def contact_values(data: bytes) -> list[bytes]:
    """The value of every ``contact`` line of a document (server descriptor, or a vote's or consensus's
    dir-source), as the bytes it holds."""
    return [line[len(b"contact "):] for line in data.split(b"\n") if line.startswith(b"contact ")]


@cache
def shared_contacts() -> tuple[bytes, ...]:
    paths = [path for directory in SHARED_DIRECTORIES for path in sorted((SHARED_TORDATA / directory).rglob("*"))]
    paths.append(AUTHORITY_CONSENSUS)
    return tuple(value for path in paths if path.is_file() for value in contact_values(path.read_bytes()))


@cache
def data_contacts() -> tuple[bytes, ...]:
    names = [path.relative_to(DATA).as_posix() for path in sorted(DATA.rglob("*")) if path.is_file()]
    return tuple(value for name in names for value in contact_values(read_data(name)))


@pytest.fixture(scope="module")
def real_contacts() -> tuple[bytes, ...]:
    if not AUTHORITY_CONSENSUS.is_file():
        if os.environ.get("CI"):
            raise RuntimeError(f"{SHARED_TORDATA} is missing; CI must have shared/ beside the repo")
        pytest.skip("needs ../shared/tordata")
    return shared_contacts() + data_contacts()


def has_token(line: str, key: str) -> bool:
    """Whether ``key:`` starts a whitespace-separated token of ``line`` (any case): a reading independent of
    the parser's, to count what the summary must count."""
    return re.search(rf"(?:^|\s){key}:", line, re.IGNORECASE) is not None


# -- real contact lines ---------------------------------------------------------------------------------------------


def test_every_real_contact_line_parses(real_contacts):
    assert len(shared_contacts()) > 100 and len(data_contacts()) > 100  # the documents hold contact lines
    for value in real_contacts:
        for contact in (value, value.decode("utf-8", "replace")):
            parsed = parse_contact(contact)
            assert parsed.status in STATUSES
            assert parsed.raw == value.decode("utf-8", "replace")  # real lines hold no control characters
            assert all(address.count("@") == 1 for address in parsed.emails)
            assert all(problem.split(":", 1)[0] in {"contact", "email", "url", "proof", "ciissversion"}
                       for problem in parsed.problems)
            assert (parsed.domain is None) or "url" in parsed.fields
            assert (parsed.status == COMPLETE) == (parsed.claims_domain is not None)


def test_the_authority_line_is_a_complete_claim(real_contacts):
    lines = {value for value in contact_values(AUTHORITY_CONSENSUS.read_bytes()) if b"ciissversion" in value}
    assert lines == {DIZUM.encode()}
    parsed = parse_contact(DIZUM.encode())
    assert parsed == ContactFields(
        raw=DIZUM,
        fields={"email": "usura[]sabotage.org", "url": "https://386bsd.net", "proof": "uri-rsa",
                "abuse": "abuse[]sabotage.net", "twitter": "adejoode", "ciissversion": "2"},
        version=2, domain="386bsd.net", proof="uri-rsa", emails=("usura@sabotage.org",), problems=())
    assert (parsed.status, parsed.claims_domain, parsed.is_ciiss) == (COMPLETE, "386bsd.net", True)


def test_the_only_real_ciiss_lines_are_the_authoritys(real_contacts):
    ciiss = {value for value in real_contacts if parse_contact(value).is_ciiss}
    assert ciiss == {DIZUM.encode()}
    assert sum(value == DIZUM.encode() for value in real_contacts) >= 3  # 2022 and 2023 consensuses, microdesc


def test_real_email_fields_are_read_without_a_claim(real_contacts):
    # Pre-v2 lines (email: and operatorurl: but no url, proof or ciissversion): addresses, but no claim.
    with_email = [value.decode() for value in real_contacts if re.search(rb"(?:^| )email:\S*\[\]", value)]
    assert len(with_email) >= 2
    for line in with_email:
        parsed = parse_contact(line)
        written = re.search(r"(?:^| )email:(\S+)", line).group(1)
        assert parsed.emails == (written.replace("[]", "@").lower(),)
        assert parsed.status == (COMPLETE if line == DIZUM else NOT_CIISS)


def test_a_real_email_key_with_a_space_gives_no_address(real_contacts):
    # "email: someone@example" has an empty email value: CIISS values follow the colon without a space.
    lines = [value.decode() for value in real_contacts if value.startswith(b"email: ")]
    assert lines
    for line in lines:
        parsed = parse_contact(line)
        assert parsed.fields["email"] == "" and parsed.emails == ()
        assert [problem.split(":")[0] for problem in parsed.problems] == ["email"]


def test_summary_of_the_real_lines(real_contacts):
    texts = [value.decode("utf-8", "replace") for value in real_contacts]
    distinct = {text for text in texts if text.strip()}
    result = summary(real_contacts)
    assert result.lines == len(distinct)
    assert result.empty == sum(1 for text in texts if not text.strip())
    assert sum(result.by_status.values()) == result.lines and NO_CONTACT not in result.by_status
    assert result.ciiss == sum(has_token(text, "ciissversion") for text in distinct)
    assert sum(result.by_proof.values()) == result.ciiss
    assert result.by_status[NOT_CIISS] == sum(not any(has_token(text, key) for key in ("url", "proof", "ciissversion"))
                                              for text in distinct)
    assert 1 <= result.by_status[COMPLETE] <= result.ciiss and result.by_proof["uri-rsa"] >= 1
    assert set(result.problems) <= {"contact", "email", "url", "proof", "ciissversion"}
    assert result.problems["email"] == sum(any(problem.startswith("email:") for problem in parse_contact(text).problems)
                                           for text in distinct)
    # Order and repetition do not matter: each distinct line counts once.
    again = summary(list(reversed(real_contacts)) + list(real_contacts))
    assert (again.lines, again.ciiss, again.by_status, again.by_proof, again.problems) == \
        (result.lines, result.ciiss, result.by_status, result.by_proof, result.problems)


# -- hand-written lines: each rule --------------------------------------------------------------------------------


@pytest.mark.parametrize("contact", [None, "", "   ", b"", b" \t "])
def test_no_contact(contact):
    parsed = parse_contact(contact)
    assert (parsed.status, parsed.fields, parsed.problems, parsed.claims_domain) == (NO_CONTACT, {}, (), None)


@pytest.mark.parametrize(("line", "status"), [
    ("Jo <jo@example.org>", NOT_CIISS),
    ("email:ops[]example.org hoster:example.net", NOT_CIISS),  # fields, but none of a claim
    ("url:https://example.org proof:uri-rsa", NO_VERSION),
    ("ciissversion:2 proof:uri-rsa", NO_DOMAIN),  # CIISS: a proof without a url is ignored
    ("ciissversion:2 url:https://example.org", NO_PROOF),
    (CLAIM, COMPLETE),
    ("ciissversion:2 url:example.org proof:dns-rsa", COMPLETE),
])
def test_status(line, status):
    parsed = parse_contact(line)
    assert parsed.status == status
    assert parsed.claims_domain == ("example.org" if status == COMPLETE else None)


@pytest.mark.parametrize("line", [
    f"Jo Operator <jo@example.org> {CLAIM}",
    f"Jo Operator <jo@example.org> email:ops[]example.org {CLAIM} 0x1234ABCD please donate",
    f"{CLAIM.replace(' ', ' free text ')}",
    f"hoster:example.net\t{CLAIM.replace(' ', chr(9))}",
    f"{CLAIM} \r",  # a CRLF document's line
    CLAIM.upper().replace("HTTPS://EXAMPLE.ORG", "https://example.org"),  # keys in any case
])
def test_text_around_and_between_fields(line):
    parsed = parse_contact(line)
    assert (parsed.status, parsed.domain, parsed.proof, parsed.version) == (COMPLETE, "example.org", "uri-rsa", 2)


@pytest.mark.parametrize("line", [
    "<url:https://example.org> proof:uri-rsa ciissversion:2",  # a key must start a token
    "myurl:https://example.org proof:uri-rsa ciissversion:2",
    "url: https://example.org proof:uri-rsa ciissversion:2",  # a value follows its colon
])
def test_a_key_inside_a_token_or_a_spaced_value_is_not_read(line):
    assert parse_contact(line).status in {NO_DOMAIN, NOT_CIISS}


def test_first_of_a_repeated_key_wins():
    parsed = parse_contact("URL:https://first.example.org url:https://second.example.org proof:dns-rsa "
                           "Proof:uri-rsa ciissversion:2 twitter:a twitter:b")
    assert (parsed.domain, parsed.proof, parsed.fields["twitter"]) == ("first.example.org", "dns-rsa", "a")
    assert sorted(problem.split(":")[0] for problem in parsed.problems) == ["proof", "url"]  # claim fields only
    assert parse_contact.__doc__ is not None and "first value" in parse_contact.__doc__


@pytest.mark.parametrize(("url", "domain"), [
    ("https://example.org", "example.org"),
    ("example.org", "example.org"),
    ("http://example.org/", "example.org"),
    ("HTTPS://WWW.Example.ORG/", "www.example.org"),
    ("https://example.org:443", "example.org"),
    ("example.org:8080/tor/relays.html?x=1#top", "example.org"),
    ("https://example.org./", "example.org"),
    ("//example.org", "example.org"),
    ("https://admin@example.org/", "example.org"),
    ("https://bücher.example/", "xn--bcher-kva.example"),
    ("https://xn--bcher-kva.example", "xn--bcher-kva.example"),
    ("https://BÜCHER.example", "xn--bcher-kva.example"),
    ("https://a-b.c0.example.org", "a-b.c0.example.org"),
])
def test_url_forms(url, domain):
    parsed = parse_contact(f"url:{url} proof:uri-rsa ciissversion:2")
    assert (parsed.domain, parsed.problems, parsed.status) == (domain, (), COMPLETE)


@pytest.mark.parametrize("url", [
    "", "https://", "https:///path", "localhost", "https://192.0.2.1", "https://[2001:db8::1]/", "exa_mple.org",
    "-bad.example.org", "bad-.example.org", "a..example.org", "ops@example.org", "https://example.org%2f",
    "https://example.org:notaport", f"https://{'a' * 64}.org", f"https://{'a.' * 130}org", "https://example.123",
    "https://example.org,", "https://abcdefghijklmnop.onion", "https://\u2603\u2603.example\u0000",
])
def test_urls_without_a_domain(url):
    parsed = parse_contact(f"url:{url} proof:uri-rsa ciissversion:2")
    assert (parsed.domain, parsed.status, parsed.claims_domain) == (None, NO_DOMAIN, None)
    assert [problem.split(":")[0] for problem in parsed.problems] == ["url"]


@pytest.mark.parametrize(("value", "address"), [
    ("ops[]example.org", "ops@example.org"),  # CIISS
    ("ops@example.org", "ops@example.org"),
    ("Ops[AT]Example.ORG", "ops@example.org"),
    ("ops(at)example(dot)org", "ops@example.org"),
    ("ops{at}example{dot}org", "ops@example.org"),
    ("ops<at>example<dot>org", "ops@example.org"),
    ("ops[@]example[.]org", "ops@example.org"),
    ("ops(@)example(.)org", "ops@example.org"),
    ("ops [at] example [dot] org", "ops@example.org"),
    ("ops (at) example.org", "ops@example.org"),
    ("mailto:ops[]example.org", "ops@example.org"),
    ("<ops[]example.org>", "ops@example.org"),
    ("tor+relay.1[]bücher.example", "tor+relay.1@xn--bcher-kva.example"),
])
def test_email_spellings(value, address):
    parsed = parse_contact(f"Jo email:{value} {CLAIM}")
    assert (parsed.emails, parsed.problems) == ((address,), ())


def test_several_addresses_in_one_field():
    parsed = parse_contact("email:a[]example.org,b[]example.net,A[]EXAMPLE.ORG")
    assert parsed.emails == ("a@example.org", "b@example.net")


@pytest.mark.parametrize("value", [
    "ops",  # no domain
    "ops[]localhost",  # no dot: not a domain of the Internet
    "a[]b[]example.org",  # two at signs
    "[]example.org",  # no local part
    "o\"ps[]example.org",
    "ops..x[]example.org",
    f"{'o' * 65}[]example.org",
    "ops[]example.org\u0000",
])
def test_not_addresses(value):
    parsed = parse_contact(f"email:{value} {CLAIM}")
    assert parsed.emails == ()
    assert [problem.split(":")[0] for problem in parsed.problems] == ["email"]
    assert parsed.status == COMPLETE  # a bad address does not spoil the claim


@pytest.mark.parametrize("line", [
    "email:ops at example dot org",  # bare words: not read as marks
    "email:ops AT example.org",
    "Jo <ops@example.org> <ops[]example.org>",  # no email field: free text is not read
    "ops [at] example [dot] org",
    "email: ops@example.org",  # an empty value
    "email:ops [at] url:https://example.org",  # a mark before a field does not join it
])
def test_addresses_are_not_invented(line):
    assert parse_contact(line).emails == ()


def test_a_mark_before_a_field_leaves_the_field_alone():
    parsed = parse_contact(f"email:ops [at] {CLAIM}")
    assert (parsed.fields["email"], parsed.status) == ("ops", COMPLETE)


@pytest.mark.parametrize(("value", "version"), [("2", 2), ("02", 2), ("1", 1), ("3", 3), ("999", 999)])
def test_ciissversion_numbers(value, version):
    parsed = parse_contact(f"url:example.org proof:uri-rsa ciissversion:{value}")
    assert parsed.version == version and parsed.is_ciiss
    assert parsed.status == (COMPLETE if version == 2 else NO_VERSION)
    assert [problem.split(":")[0] for problem in parsed.problems] == ([] if version == 2 else ["ciissversion"])
    assert version == 2 or str(version) in parsed.problems[0]


@pytest.mark.parametrize("value", ["", "two", "2.0", "v2", "1000", "\u00b2", "\u0662", "2,"])
def test_ciissversion_not_a_number(value):
    parsed = parse_contact(f"url:example.org proof:uri-rsa ciissversion:{value}")
    assert (parsed.version, parsed.status, parsed.is_ciiss) == (None, NO_VERSION, True)
    assert [problem.split(":")[0] for problem in parsed.problems] == ["ciissversion"]


@pytest.mark.parametrize(("value", "proof"), [("uri-rsa", "uri-rsa"), ("DNS-RSA", "dns-rsa"), ("Uri-Rsa", "uri-rsa")])
def test_known_proofs_in_any_case(value, proof):
    parsed = parse_contact(f"url:example.org proof:{value} ciissversion:2")
    assert (parsed.proof, parsed.status, parsed.problems) == (proof, COMPLETE, ())


@pytest.mark.parametrize("value", ["uri-familyid-ed25519", "rsa", "", "uri-rsa,dns-rsa", "https://example.org"])
def test_unknown_proofs(value):
    parsed = parse_contact(f"url:example.org proof:{value} ciissversion:2")
    assert (parsed.proof, parsed.status) == (value.lower(), NO_PROOF)
    assert [problem.split(":")[0] for problem in parsed.problems] == ["proof"]
    assert parsed.proof not in PROOF_TYPES


def test_bytes_are_read_as_utf8():
    line = f"Jörg email:jörg[]example.org {CLAIM}"
    assert parse_contact(line.encode()) == parse_contact(line)


def test_bytes_that_are_not_utf8():
    parsed = parse_contact(b"J\xf6rg \xff\xfe " + CLAIM.encode() + b" hoster:ex\xe9mple.net")
    assert parsed.raw.startswith("J\ufffdrg \ufffd\ufffd ") and parsed.status == COMPLETE
    assert parsed.fields["hoster"] == "ex\ufffdmple.net"
    assert [problem.split(":")[0] for problem in parsed.problems] == ["contact"]


def test_control_characters():
    parsed = parse_contact(f"Jo\x00\x1b[31m\x7f {CLAIM}\x0bhoster:example.net\u202e\x85os:debian\u2028x")
    assert not re.search("[\x00-\x1f\x7f-\x9f\u2028\u202e]", parsed.raw)
    assert parsed.raw.startswith("Jo\ufffd\ufffd[31m\ufffd ")
    assert (parsed.status, parsed.fields["hoster"], parsed.fields["os"]) == (COMPLETE, "example.net\ufffd", "debian")
    broken = parse_contact("url:example.org\x00 proof:uri-rsa ciissversion:2")  # a NUL is no separator
    assert broken.status == NO_DOMAIN
    assert parse_contact("ciissversion:2 proof:uri-rsa url:exam\ud800ple.org").status == NO_DOMAIN


def test_a_huge_line_is_cut():
    filler = "x" * 10 * MAX_CONTACT_CHARACTERS
    parsed = parse_contact(f"{CLAIM} {filler} hoster:example.net")
    assert len(parsed.raw) == MAX_CONTACT_CHARACTERS and parsed.status == COMPLETE
    assert "hoster" not in parsed.fields
    assert [problem.split(":")[0] for problem in parsed.problems] == ["contact"]
    assert parse_contact((CLAIM + " " + filler).encode()).raw == parsed.raw  # bytes: the same cut
    assert parse_contact(filler).status == NOT_CIISS  # a line, though it holds no field


def test_a_field_the_cut_goes_through_is_not_read():
    padding = "p" * (MAX_CONTACT_CHARACTERS - len("proof:uri-rsa ciissversion:2 url:https://example.org") - 2)
    line = f"{padding} proof:uri-rsa ciissversion:2 url:https://example.org.uk/"
    parsed = parse_contact(line)
    assert "url" not in parsed.fields and parsed.status == NO_DOMAIN
    ends_at_the_cut = parse_contact(f"{padding}x proof:uri-rsa ciissversion:2 url:https://example.org more")
    assert ends_at_the_cut.domain == "example.org"  # the cut fell on the space after the value: it is whole


def test_a_cut_through_a_utf8_character_is_no_decoding_error():
    # Bytes are cut before decoding, at 4 bytes a character: here through a 4-byte character.
    for ascii_bytes in range(4):
        parsed = parse_contact(CLAIM.encode() + b" " + b"a" * ascii_bytes + "😀".encode() * MAX_CONTACT_CHARACTERS)
        assert [problem.split(":")[0] for problem in parsed.problems] == ["contact"] and parsed.status == COMPLETE
    assert [problem.split(":")[0] for problem in parse_contact(b"x\xf0\x9f\x98 " + CLAIM.encode()).problems] == \
        ["contact"]  # a character cut short inside a line is not UTF-8


@pytest.mark.parametrize(("value", "tag"), [
    ("Hetzner.com", "hetzner.com"), ("debian/12", "debian_12"), ("  Ubuntu 22.04 LTS ", "ubuntu_22.04_lts"),
    (None, "none"), ("", "none"), ("///", "none"), ("Ünïcode", "n_code"), ("x" * 50, "x" * 32),
])
def test_bounded_tag(value, tag):
    assert bounded_tag(value) == tag


def test_bounded_tag_limits():
    assert bounded_tag("example.org", limit=4) == "exam"
    with pytest.raises(ValueError, match="limit 3"):
        bounded_tag("example.org", limit=3)


def test_summary_counts_lines_once():
    result = summary([CLAIM, CLAIM, CLAIM.encode(), None, "", "  ", "Jo <jo@example.org>",
                      "url:example.org proof:rsa ciissversion:2", "ciissversion:3 url:https://example.org",
                      "email:ops url:example.org proof:uri-rsa ciissversion:2 url:x.org"])
    assert (result.lines, result.ciiss, result.empty) == (5, 4, 3)
    assert result.by_status == {COMPLETE: 2, NOT_CIISS: 1, NO_PROOF: 1, NO_VERSION: 1}
    assert result.by_proof == {"uri-rsa": 2, "rsa": 1, "none": 1}
    assert result.problems == {"proof": 1, "ciissversion": 1, "email": 1, "url": 1}
    assert summary([]) == ContactSummary() and summary([None, " "]) == ContactSummary(empty=2)
