"""A parsed network status document (ns consensus, microdesc consensus or vote), as our own small type.

Parsing (``agent.parse.documents``) splits a network status document: stem
parses and validates its header and footer, ``agent.parse.fastparse`` reads
its router status entries into columns (``agent.model.entries.RouterEntries``).
``NetworkStatus`` holds the two, and the document's bytes where they are kept,
without writing anything onto the stem object. It is plain data: it parses
nothing and imports neither stem nor the parsers.
"""

from __future__ import annotations

import base64
import hashlib
from typing import TYPE_CHECKING, Any, Literal, overload

from agent.model.entries import RouterEntries

if TYPE_CHECKING:
    from stem.descriptor.networkstatus import NetworkStatusDocumentV3

#: Where a network status document's signed portion ends (dir-spec 1.3), included in it.
SIGNED_PORTION_END = b"\ndirectory-signature "
#: stem's methods that would read the header and footer as the whole document, and what to use instead.
_NOT_DELEGATED = {
    "validate_signatures": "stem's would check the header and footer only; agent.parse.signatures checks each "
                           "signature against the bytes (check_signatures)",
}


class _FromHeader:
    """A field read from the stem header and footer document; set on a ``NetworkStatus``, the value set is read
    instead (a non-data descriptor: the instance's own attribute comes first)."""

    def __set_name__(self, owner: type[object], name: str) -> None:
        self.name = name

    @overload
    def __get__(self, document: None, owner: type[object] | None = None) -> _FromHeader: ...
    @overload
    def __get__(self, document: NetworkStatus, owner: type[object] | None = None) -> Any: ...

    def __get__(self, document: NetworkStatus | None, owner: type[object] | None = None) -> Any:
        if document is None:
            return self
        return getattr(document.header, self.name)


class NetworkStatus:
    """A network status document: stem's header and footer, our entry columns, and the bytes where kept.

    ``header`` is stem's ``NetworkStatusDocumentV3`` of the header and footer
    only (its own ``routers`` is empty); ``entries`` the router status entries
    as columns, also given as ``routers``, the fingerprint -> entry mapping
    stem's documents have; ``raw`` the whole document's bytes (without
    CollecTor's ``@type`` line) for the consensus flavours, whose signatures
    are checked against them, and None for votes (nine votes' bytes are
    ~30 MB and nothing reads them after parsing).

    Consumers read it as they read a stem document. The fields most of the
    agent reads are named below (read from ``header``); any other public attribute or method
    (``flag_thresholds``, ``shared_randomness_current_value``,
    ``meets_consensus_method()``, ...: stem has some fifty, each with its own
    defaults and lazy parsing) is looked up on ``header`` by ``__getattr__``
    rather than copied here, so the agent reads exactly what stem parsed and
    a field stem adds needs no change here. Only attributes that depend on
    the entries or on the whole bytes are answered here (``routers``,
    ``get_bytes()``, ``digest()``, ``str()``) or refused
    (``validate_signatures``: ``agent.parse.signatures`` checks signatures):
    the stem object has neither, and delegating them would answer silently
    wrong. Private names (``_...``) are not delegated.

    An attribute set on a ``NetworkStatus`` (tests edit a parsed copy:
    ``document.shared_randomness_current_value = None``) is read instead of
    stem's, and stays off the stem object. Identity is the object's
    (``snapshot.signatures_of`` looks a consensus up with ``is``); ``copy``,
    ``deepcopy`` and pickling copy the fields and any attribute set.
    """

    _FIELDS = ("header", "entries", "raw")

    def __init__(self, header: NetworkStatusDocumentV3, entries: RouterEntries, raw: bytes | None = None):
        self.header, self.entries, self.raw = header, entries, raw

    # -- what the header and footer give, read everywhere ------------------------------------------------------

    @property
    def routers(self) -> RouterEntries:
        """Fingerprint -> router status entry (the columns, ``entries``)."""
        return self.entries

    is_vote = _FromHeader()
    is_consensus = _FromHeader()
    is_microdescriptor = _FromHeader()
    valid_after = _FromHeader()
    fresh_until = _FromHeader()
    valid_until = _FromHeader()
    directory_authorities = _FromHeader()
    signatures = _FromHeader()
    known_flags = _FromHeader()
    flag_thresholds = _FromHeader()
    params = _FromHeader()
    consensus_method = _FromHeader()
    consensus_methods = _FromHeader()
    bandwidth_weights = _FromHeader()
    client_versions = _FromHeader()
    server_versions = _FromHeader()

    # -- what needs the whole document ---------------------------------------------------------------------------

    def get_bytes(self) -> bytes:
        """The document's bytes: the whole of a consensus; of a vote, its header and footer only (as stem's
        ``get_bytes()`` of the parsed part: the entries' bytes are not kept)."""
        return self.raw if self.raw is not None else self.header.get_bytes()

    @overload
    def digest(self, hash_type: str = ..., encoding: Literal["HEX", "BASE64"] = ...) -> str: ...
    @overload
    def digest(self, hash_type: str, encoding: Literal["RAW"]) -> hashlib._Hash: ...
    @overload
    def digest(self, hash_type: str = ..., *, encoding: Literal["RAW"]) -> hashlib._Hash: ...

    def digest(self, hash_type: str = "SHA1", encoding: str = "HEX") -> hashlib._Hash | str:
        """Digest of the signed portion of ``get_bytes()``, as stem's ``NetworkStatusDocument.digest``.

        ``hash_type`` and ``encoding`` take stem's ``DigestHash`` and
        ``DigestEncoding`` values (which are these strings).
        """
        content = self.get_bytes()
        end = content.find(SIGNED_PORTION_END)
        if end < 0:
            raise ValueError(f"{SIGNED_PORTION_END.decode().strip()!r} is not present within our descriptor content")
        content = content[:end + len(SIGNED_PORTION_END)]
        if hash_type == "SHA1":
            hashed = hashlib.sha1(content)
        elif hash_type == "SHA256":
            hashed = hashlib.sha256(content)
        else:
            raise NotImplementedError(f"network status document digests are sha1 or sha256, not {hash_type}")
        if encoding == "RAW":
            return hashed
        if encoding == "HEX":
            return hashed.hexdigest().upper()
        if encoding == "BASE64":
            return base64.b64encode(hashed.digest()).rstrip(b"=").decode()
        raise ValueError(f"digest encodings are RAW, HEX or BASE64, not {encoding}")

    def __str__(self) -> str:
        return self.get_bytes().decode("utf-8", "replace")

    def __repr__(self) -> str:
        kind = "vote" if self.is_vote else "microdesc consensus" if self.is_microdescriptor else "ns consensus"
        return f"<NetworkStatus {kind} valid-after {self.valid_after} with {len(self.entries)} entries>"

    # -- the rest of stem's document ----------------------------------------------------------------------------

    def __getattr__(self, name: str) -> Any:
        # Only called for names found neither on the instance nor above. Private and special names are not
        # delegated: pickle and copy look some up on an instance whose fields are not set yet, and stem's
        # internals would see the header and footer as the whole document.
        if name in _NOT_DELEGATED:
            raise AttributeError(f"NetworkStatus has no {name}: {_NOT_DELEGATED[name]}")
        if name.startswith("_") or name in NetworkStatus._FIELDS:  # not set yet (unpickling): no recursion
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return getattr(self.header, name)

    def __dir__(self) -> list[str]:
        delegated = {name for name in dir(self.header) if not name.startswith("_") and name not in _NOT_DELEGATED}
        return sorted(set(super().__dir__()) | delegated)
