"""A relay's ContactInfo read as the ContactInfo Information Sharing Specification (CIISS) defines it.

CIISS v2 writes ``key:value`` fields separated by whitespace, anywhere in the line and among free text, for
example ``Jo <jo@example.org> email:ops[]example.org url:https://example.org proof:uri-rsa ciissversion:2``.
``url`` names the operator's domain and ``proof`` how control of it is shown (``uri-rsa``: a fingerprint list
on the domain's web server; ``dns-rsa``: a TXT record per relay). Addresses are obfuscated by convention
(``[]`` for ``@``). A contact line that is not CIISS is kept as text, with the reason it is not an
authenticated operator ID (AROI).
"""

from __future__ import annotations

import codecs
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

PROOF_TYPES = ("uri-rsa", "dns-rsa")
SUPPORTED_VERSIONS = (2,)
#: Fields whose values are bounded enough to tag series with (after ``bounded_tag``).
TAG_FIELDS = ("hoster", "os")
#: The fields a claim is made of; only these are reported when given twice (free text yields other "keys").
CLAIM_FIELDS = ("email", "url", "proof", "ciissversion")
MAX_CONTACT_CHARACTERS = 4096  # real lines are under 1,500 characters; the rest of a longer one is not read

#: Why a contact line is not a complete AROI, worst first, as Allium names its categories.
NO_CONTACT = "no_contact"
NOT_CIISS = "no_aroi_info"
NO_VERSION = "no_ciissversion"
NO_DOMAIN = "no_domain"
NO_PROOF = "no_proof"
COMPLETE = "complete"

# A key starts a whitespace-separated token; the value runs to the next whitespace (CIISS: neither has spaces).
_FIELD = re.compile(r"(?<!\S)([A-Za-z][A-Za-z0-9_-]{0,31}):(\S*)")
# C0 and C1 controls, line and paragraph separators, bidirectional overrides, lone surrogates (undecodable
# bytes of a str): none is text a line should show, log or send.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
# Spellings of "@" and "." seen in contact lines; bracketed only: a bare "at" or "dot" could be a word.
_AT = r"\[\]|\[at\]|\(at\)|\{at\}|<at>|\[@\]|\(@\)"
_DOT = r"\[dot\]|\(dot\)|\{dot\}|<dot>|\[\.\]|\(\.\)"
_AT_MARK, _DOT_MARK = re.compile(_AT, re.IGNORECASE), re.compile(_DOT, re.IGNORECASE)
# "ops [at] example.org": a spaced mark joins its neighbours, unless the next token is a field of its own.
# Anchored at the start of a run of spaces: unanchored, a long run is retried from each of its positions
# (quadratic: 50 ms for one 4,096-character line).
_SPACED_MARK = re.compile(rf"(?<!\s)\s++({_AT}|{_DOT})\s++(?![A-Za-z][A-Za-z0-9_-]{{0,31}}:)", re.IGNORECASE)
_LOCAL_PART = re.compile(r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*")  # RFC 5322 dot-atom
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
_SCHEME = re.compile(r"^(?:[a-z][a-z0-9+.-]*:)?//", re.IGNORECASE)


@dataclass(frozen=True)
class ContactFields:
    """One contact line, read: its CIISS fields (if any), the operator's domain and proof type, and problems."""

    raw: str  # the line: at most MAX_CONTACT_CHARACTERS, control characters and bad UTF-8 as U+FFFD, tabs as spaces
    fields: Mapping[str, str] = field(default_factory=dict)  # key (lower case) -> value; never changed
    version: int | None = None  # ciissversion, when it is a number (2, or another version: then a problem)
    domain: str | None = None  # the url field's host: lower case, ASCII (IDNA), no port, path or trailing dot
    proof: str | None = None  # the proof field's value, lower case ("uri-rsa", "dns-rsa" or anything else)
    emails: tuple[str, ...] = ()  # the email field's addresses, de-obfuscated and lower case
    problems: tuple[str, ...] = ()  # what is malformed, each "field: what", the field first

    @property
    def is_ciiss(self) -> bool:
        """True when the line declares itself CIISS (a ``ciissversion`` field, whatever its value)."""
        return "ciissversion" in self.fields

    @property
    def status(self) -> str:
        """``complete`` for a claim that can be verified (version 2, a domain, a known proof type), else why not."""
        if not self.raw.strip():
            return NO_CONTACT
        if not {"ciissversion", "url", "proof"} & self.fields.keys():
            return NOT_CIISS
        if self.version not in SUPPORTED_VERSIONS:
            return NO_VERSION
        if self.domain is None:
            return NO_DOMAIN
        if self.proof not in PROOF_TYPES:
            return NO_PROOF
        return COMPLETE

    @property
    def claims_domain(self) -> str | None:
        """The domain whose proof would verify this relay, for a complete claim; else None."""
        return self.domain if self.status == COMPLETE else None


def parse_contact(contact: str | bytes | None) -> ContactFields:
    """The CIISS reading of a contact line; never raises (a malformed line gets ``problems``).

    Keys are read in any case. A key given twice counts once, with its first value, as CIISS says; for the
    claim fields (``CLAIM_FIELDS``) the repetition is a problem. Text around and between fields is ignored.
    """
    if contact is None:
        return ContactFields("")
    problems: list[str] = []
    if isinstance(contact, bytes | bytearray):
        data = bytes(contact[: 4 * MAX_CONTACT_CHARACTERS + 4])  # enough for the characters read, and one more
        try:  # a cut through a character is not an error: the cut text is cut again below
            text = codecs.getincrementaldecoder("utf-8")().decode(data, final=len(data) == len(contact))
        except UnicodeDecodeError:
            text = data.decode("utf-8", "replace")
            problems.append("contact: not UTF-8; the bytes that are not are shown as U+FFFD")
    else:
        text = str(contact)
    if len(text) > MAX_CONTACT_CHARACTERS:
        problems.append(f"contact: longer than {MAX_CONTACT_CHARACTERS} characters; the rest is not read")
    raw = _CONTROL.sub(lambda match: " " if match.group().isspace() else "\ufffd", text[:MAX_CONTACT_CHARACTERS])
    whole = raw  # what is read: without the token a cut went through (its value is not whole)
    if len(text) > MAX_CONTACT_CHARACTERS and not text[MAX_CONTACT_CHARACTERS].isspace() and not raw[-1].isspace():
        parts = raw.rsplit(None, 1)
        whole = parts[0] if len(parts) == 2 else ""
    fields: dict[str, str] = {}
    seen: Counter[str] = Counter()
    for match in _FIELD.finditer(_SPACED_MARK.sub(r"\1", whole)):
        key = match.group(1).lower()
        seen[key] += 1
        fields.setdefault(key, match.group(2))
    problems += [f"{key}: given {seen[key]} times; the first is read" for key in CLAIM_FIELDS if seen[key] > 1]
    version = _version(fields["ciissversion"], problems) if "ciissversion" in fields else None
    domain = _domain(fields["url"], problems) if "url" in fields else None
    proof = fields["proof"].lower() if "proof" in fields else None
    if proof is not None and proof not in PROOF_TYPES:
        problems.append(f"proof: {proof[:40]!r} is not one of {', '.join(PROOF_TYPES)}")
    emails = _emails(fields["email"], problems) if "email" in fields else ()
    return ContactFields(raw, fields, version, domain, proof, emails, tuple(problems))


def bounded_tag(value: str | None, limit: int = 32) -> str:
    """A field's value fit for a series tag: lower case, letters, digits, ``.-_`` only, 1 to ``limit`` long."""
    if limit < len("none"):
        raise ValueError(f"bounded_tag: limit {limit} is shorter than the tag 'none'")
    text = re.sub(r"[^a-z0-9._-]+", "_", (value or "").lower()).strip("_")
    return text[:limit] or "none"


@dataclass(frozen=True)
class ContactSummary:
    """What a set of contact lines (one per relay, say) holds, each distinct line counted once."""

    lines: int = 0  # distinct non-empty lines
    ciiss: int = 0  # those with a ciissversion field
    by_status: Counter[str] = field(default_factory=Counter)  # ContactFields.status -> lines
    by_proof: Counter[str] = field(default_factory=Counter)  # CIISS lines' proof (bounded_tag), "none" if absent
    problems: Counter[str] = field(default_factory=Counter)  # field -> lines with a problem naming it
    empty: int = 0  # contacts that were None or blank (not lines: not in the counters)


def summary(contacts: Iterable[str | bytes | None]) -> ContactSummary:
    """The counts of ``ContactSummary`` over ``contacts``; a line repeated (by many relays) counts once."""
    seen: set[str] = set()
    by_status: Counter[str] = Counter()
    by_proof: Counter[str] = Counter()
    problems: Counter[str] = Counter()
    ciiss = empty = 0
    for contact in contacts:
        parsed = parse_contact(contact)
        if not parsed.raw.strip():
            empty += 1
            continue
        if parsed.raw in seen:
            continue
        seen.add(parsed.raw)
        by_status[parsed.status] += 1
        problems.update({problem.split(":", 1)[0] for problem in parsed.problems})
        if parsed.is_ciiss:
            ciiss += 1
            by_proof[bounded_tag(parsed.proof)] += 1
    return ContactSummary(len(seen), ciiss, by_status, by_proof, problems, empty)


def _version(text: str, problems: list[str]) -> int | None:
    if re.fullmatch(r"[0-9]{1,3}", text):
        if int(text) not in SUPPORTED_VERSIONS:
            problems.append(f"ciissversion: {text} is not a version this agent reads ({SUPPORTED_VERSIONS[-1]})")
        return int(text)
    problems.append(f"ciissversion: {text[:20]!r} is not a number")
    return None


def _domain(url: str, problems: list[str]) -> str | None:
    """The host of a url field (``https://example.org``, ``Example.org:443/``, ...), or None with a problem."""
    text, had_authority = _SCHEME.subn("", url)
    host = re.split(r"[/?#]", text, maxsplit=1)[0]
    if had_authority:
        host = host.rsplit("@", 1)[-1]  # https://user@host; without "//" an "@" means it is no url at all
    domain = _hostname(re.sub(r":[0-9]{0,5}$", "", host))
    if domain is None:
        problems.append(f"url: {url[:60]!r} has no domain a resolver would accept")
    elif domain.endswith(".onion"):
        problems.append(f"url: {domain[:60]!r} is an onion address, which neither proof can be read from")
        return None
    return domain


def _hostname(host: str) -> str | None:
    """``host`` as a resolver asks for it (lower case, ASCII, no trailing dot) when it is a domain name."""
    host = host.rstrip(".").lower()
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")  # IDNA 2003, as Python has it; CIISS asks for punycode
        except UnicodeError:
            return None
    labels = host.split(".")
    if len(host) > 253 or len(labels) < 2 or labels[-1].isdigit() or not all(map(_LABEL.fullmatch, labels)):
        return None
    return host


def _emails(text: str, problems: list[str]) -> tuple[str, ...]:
    """The addresses of an email field: ``[]`` (CIISS) and the bracketed spellings of ``@`` and ``.``."""
    if not text:
        problems.append("email: no value (CIISS writes email:user[]example.org, without spaces)")
        return ()
    found = []
    for part in text.split(","):
        address = _DOT_MARK.sub(".", _AT_MARK.sub("@", part.strip().removeprefix("mailto:"))).lower()
        local, at, host = address.removeprefix("<").removesuffix(">").partition("@")
        domain = _hostname(host) if at and "@" not in host and len(local) <= 64 else None
        if domain is not None and _LOCAL_PART.fullmatch(local):
            found.append(f"{local}@{domain}")
        elif part.strip():
            problems.append(f"email: {part[:60]!r} is not an address")
    return tuple(dict.fromkeys(found))
