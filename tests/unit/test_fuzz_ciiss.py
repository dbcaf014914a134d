"""Properties of the CIISS contact-line parser, on generated lines.

Any text or bytes parses without raising; a complete claim always names a domain made of DNS labels, a known
proof and version 2; an address always has one ``@``; a series tag is always short and plain; and a line
written from valid fields, in any order, case, spelling of ``@`` and url form, among free text, reads back as
those fields. CI runs a bounded, reproducible slice; ``ALLIUM_FUZZ_EXAMPLES=5000`` runs a long one.
"""

from __future__ import annotations

import os
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.model.ciiss import (
    COMPLETE,
    MAX_CONTACT_CHARACTERS,
    NO_CONTACT,
    PROOF_TYPES,
    SUPPORTED_VERSIONS,
    bounded_tag,
    parse_contact,
    summary,
)

EXAMPLES = int(os.environ.get("ALLIUM_FUZZ_EXAMPLES", "100"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize="ALLIUM_FUZZ_EXAMPLES" not in os.environ,
                database=None, suppress_health_check=[HealthCheck.too_slow])
DNS_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
ATEXT = r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+"
ADDRESS = re.compile(rf"{ATEXT}(\.{ATEXT})*@[a-z0-9.-]{{3,253}}")  # RFC 5322's dot-atom, lower case
TAG = re.compile(r"[a-z0-9._-]{1,32}")

# -- strategies -------------------------------------------------------------------------------------------------

labels = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,14}[a-z0-9])?", fullmatch=True)
domains = st.builds(lambda names, top: ".".join([*names, top]), st.lists(labels, min_size=1, max_size=3),
                    st.from_regex(r"[a-z]{2,6}", fullmatch=True))
# Host names with a defect now and then: an underscore, an edge hyphen, an empty or long label, digits, Unicode.
defects = st.sampled_from(["a_b", "_", "-a", "a-", "", "a" * 64, "123", "a b", "a/b", "é", "\u00df", "\ufffd", "A"])
hostish = st.lists(st.one_of(labels, defects, st.text(max_size=3)), min_size=1, max_size=4).map(".".join)
local_parts = st.from_regex(r"[a-z0-9_+-]{1,12}(\.[a-z0-9_+-]{1,12}){0,2}", fullmatch=True)
at_marks = st.sampled_from(["[]", "@", "[at]", "(at)", "{at}", "<at>", "[@]", "(@)", "[AT]", " [at] ", " (at) "])
dot_marks = st.sampled_from([".", "[dot]", "(dot)", "{dot}", "<dot>", "[.]", "(.)", " [dot] "])
# Free text as contact lines have it: words without a colon, names, <addresses>, fingerprints.
words = st.one_of(st.from_regex(r"[A-Za-z0-9@.#!-]{1,12}", fullmatch=True), st.just("<jo@example.net>"),
                  st.just("0x1234ABCD"), st.just("BTC"), st.just("-"))
separators = st.sampled_from([" ", "  ", "\t", " \t "])
other_pieces = st.one_of(
    st.sampled_from(["ciissversion:3", "ciissversion:", "ciissversion:\u00b2", "proof:", "proof:uri-ed25519",
                     "url:", "url:https://", "email:", "hoster:", "os:", "[at]", " (dot) ", "\x00", "\u202e"]),
    st.builds("url:{}".format, st.text(max_size=30)),
    st.builds("url:{}".format, st.text(alphabet=st.characters(codec="utf-8"), max_size=20)),
    st.builds("email:{}{}{}".format, st.text(max_size=10), at_marks, st.one_of(domains, st.text(max_size=15))),
    words,
    st.text(max_size=20),
)
urls = st.one_of(st.builds("url:https://{}/".format, domains), st.builds("URL:{}".format, domains),
                 st.builds("url:http://{}:8443/x".format, domains),
                 st.builds("url:{}{}".format, domains, st.text(max_size=6)), st.builds("url:{}".format, st.text()),
                 st.builds("url:https://{}".format, st.from_regex(r"[a-z0-9_.-]{1,24}", fullmatch=True)))


@st.composite
def near_claims(draw):
    """A claim (version, proof, url), each part dropped one time in ten, among other pieces, in any order."""
    parts = [draw(st.sampled_from(["ciissversion:2", "CIISSVERSION:02"])),
             draw(st.sampled_from(["proof:uri-rsa", "Proof:DNS-RSA"])), draw(urls)]
    parts = [part for part in parts if draw(st.integers(0, 9))] + draw(st.lists(other_pieces, max_size=4))
    return "".join(part + draw(separators) for part in draw(st.permutations(parts)))


def joined(parts: list[str], gaps: list[str]) -> str:
    return "".join(part + gap for part, gap in zip(parts, gaps))


lines = st.one_of(near_claims(), st.builds(joined, st.lists(other_pieces, max_size=8),
                                           st.lists(separators, min_size=8, max_size=8)))


# -- properties -------------------------------------------------------------------------------------------------


@FUZZ
@given(st.one_of(st.none(), st.text(), st.binary(), lines, st.builds(str.encode, lines),
                 st.builds(lambda line, times: line * times, lines, st.integers(1, 3000))))  # long lines
def test_never_raises(contact):
    parsed = parse_contact(contact)
    assert isinstance(parsed.status, str) and len(parsed.raw) <= MAX_CONTACT_CHARACTERS
    assert (parsed.status == NO_CONTACT) == (not parsed.raw.strip())
    assert all(problem.split(":", 1)[0] in parsed.fields or problem.startswith("contact:")
               for problem in parsed.problems)


@FUZZ
@given(st.one_of(near_claims(), st.text(), st.builds("ciissversion:2 proof:dns-rsa url:{}".format, hostish)))
def test_a_complete_claim_is_verifiable(line):
    parsed = parse_contact(line)
    if parsed.status == COMPLETE:
        assert parsed.version in SUPPORTED_VERSIONS and parsed.version == 2
        assert parsed.proof in PROOF_TYPES
        assert parsed.domain is not None and parsed.domain.isascii() and len(parsed.domain) <= 253
        names = parsed.domain.split(".")
        assert len(names) >= 2 and all(DNS_LABEL.fullmatch(name) for name in names) and not names[-1].isdigit()
        assert parsed.claims_domain == parsed.domain
    else:
        assert parsed.claims_domain is None


@FUZZ
@given(st.one_of(lines, st.builds("email:{}".format, st.text()),
                 st.builds("email:{}{}{}".format, st.text(max_size=12), at_marks, domains),
                 st.builds("email:{}{}{}".format, local_parts, at_marks, st.text(max_size=20))))
def test_every_address_has_one_at_sign(line):
    for address in parse_contact(line).emails:
        assert address.count("@") == 1 and ADDRESS.fullmatch(address) and len(address.split("@")[0]) <= 64
        assert all(DNS_LABEL.fullmatch(name) for name in address.split("@")[1].split("."))


@FUZZ
@given(st.one_of(st.none(), st.text(), st.builds("{}.{}".format, domains, st.text(max_size=40))))
def test_bounded_tag_is_short_and_plain(value):
    assert TAG.fullmatch(bounded_tag(value))


@st.composite
def claims(draw):
    """A contact line written from valid fields (and the fields): any order, key case, ``@`` spelling, url
    form; free text around."""
    domain, local, mail_domain = draw(domains), draw(local_parts), draw(domains)
    proof, hoster, system = draw(st.sampled_from(PROOF_TYPES)), draw(domains), draw(st.sampled_from(
        ["debian/12", "ubuntu/22.04", "freebsd", "OpenBSD/7.4"]))
    at, dot = draw(at_marks), draw(dot_marks)
    url = draw(st.sampled_from(["{}", "https://{}", "http://{}/", "https://{}:443", "{}/tor/", "https://{}."]))
    url = url.format(domain.upper() if draw(st.booleans()) else domain)
    fields = [f"email:{local}{at}{mail_domain.replace('.', dot)}", f"url:{url}", f"proof:{proof}",
              "ciissversion:2", f"hoster:{hoster}", f"os:{system}"]
    fields = [field.replace(field.split(":")[0], field.split(":")[0].upper(), 1) if draw(st.booleans()) else field
              for field in draw(st.permutations(fields))]
    text = draw(st.lists(words, max_size=4))
    parts = draw(st.permutations([*fields, *text]))
    line = "".join(part + draw(separators) for part in parts)
    return line, {"domain": domain, "email": f"{local}@{mail_domain}", "proof": proof, "hoster": hoster,
                  "os": system}


@FUZZ
@given(claims())
def test_a_line_of_valid_fields_reads_back(claim):
    line, expected = claim
    parsed = parse_contact(line)
    assert (parsed.status, parsed.domain, parsed.proof, parsed.version) == (COMPLETE, expected["domain"],
                                                                           expected["proof"], 2)
    assert parsed.emails == (expected["email"],)
    assert (parsed.fields["hoster"], parsed.fields["os"]) == (expected["hoster"], expected["os"])
    assert parsed.problems == ()
    assert parse_contact(line.encode()) == parsed


@FUZZ
@given(st.lists(st.one_of(st.none(), lines, st.builds(str.encode, lines)), max_size=8))
def test_summary_adds_up(contacts):
    result = summary(contacts)
    assert sum(result.by_status.values()) == result.lines <= len(contacts) - result.empty
    assert sum(result.by_proof.values()) == result.ciiss <= result.lines
    assert all(count <= result.lines for count in result.problems.values())
    assert summary(list(reversed(contacts)) + contacts).by_status == result.by_status
