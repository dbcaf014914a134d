"""Images carried inside a message's HTML part (``cid:`` references), through the outbox and into the mail.

A ``Message`` (``agent.alerts.render``) carries its inline images in
``images``; in the outbox they are one more key of its JSON object,
``inline`` (a list of objects: ``cid``, ``subtype``, ``filename``, ``alt``
and the bytes as base64), written only when there are images, so an older
reader ignores it and still sends the text. ``attach`` turns the mail's
HTML part into a ``multipart/related`` holding the HTML and each image, so
the whole mail is::

    multipart/alternative
        text/plain
        multipart/related
            text/html          (<img src="cid:...">)
            image/png          (Content-ID: <...>, inline)

Only image types every mail reader shows (PNG, JPEG, GIF) and at most
``MAX_IMAGE_BYTES`` each are accepted: the bytes come from the agent, but a
damaged outbox row must fail here and not in the SMTP session.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

#: Image subtypes a mail may carry inline.
SUBTYPES = ("png", "jpeg", "gif")
MAX_IMAGE_BYTES = 512 * 1024
_CID = re.compile(r"[A-Za-z0-9._-]{1,64}@[A-Za-z0-9.-]{1,64}")
_FILENAME = re.compile(r"[A-Za-z0-9._-]{1,64}")


@dataclass(frozen=True)
class InlineImage:
    """One image the HTML shows as ``<img src="cid:{cid}" alt="{alt}">``."""

    cid: str  # without the angle brackets, e.g. chart.2024-05.7@allium-agent
    data: bytes
    alt: str
    subtype: str = "png"
    filename: str = "chart.png"

    def __post_init__(self) -> None:
        if not _CID.fullmatch(self.cid):
            raise ValueError(f"an inline image's cid must look like name@domain, not {self.cid[:80]!r}")
        if self.subtype not in SUBTYPES or not _FILENAME.fullmatch(self.filename):
            raise ValueError("an inline image must be png, jpeg or gif with a plain file name")
        if not isinstance(self.data, bytes) or not 0 < len(self.data) <= MAX_IMAGE_BYTES:
            raise ValueError(f"an inline image must hold 1 to {MAX_IMAGE_BYTES:,} bytes")

    def as_dict(self) -> dict:
        return {"cid": self.cid, "subtype": self.subtype, "filename": self.filename, "alt": self.alt,
                "data": base64.b64encode(self.data).decode("ascii")}

    @classmethod
    def from_dict(cls, data: object) -> InlineImage:
        """An image as stored; ValueError saying what is wrong with it."""
        if not isinstance(data, dict) or not all(isinstance(data.get(name), str) for name in
                                                 ("cid", "subtype", "filename", "alt", "data")):
            raise ValueError("an inline image is not an object of cid, subtype, filename, alt and data (text)")
        try:
            raw = base64.b64decode(data["data"], validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("an inline image's data is not base64") from None
        return cls(data["cid"], raw, data["alt"], data["subtype"], data["filename"])


def images_from(stored: object) -> tuple[InlineImage, ...]:
    """A stored message's ``inline`` value as images (none when absent); ValueError if it is damaged."""
    if not stored:
        return ()
    if not isinstance(stored, list):
        raise ValueError("the message's inline images are not a list")
    return tuple(InlineImage.from_dict(item) for item in stored)


def attach(mail, images: tuple[InlineImage, ...]) -> None:
    """Adds ``images`` to the HTML part of ``mail`` (an ``EmailMessage`` from ``agent.alerts.email.compose``)."""
    if not images:
        return
    html_part = mail.get_body(preferencelist=("html",))
    if html_part is None:
        raise ValueError("the mail has no HTML part to carry inline images")
    for image in images:
        html_part.add_related(image.data, maintype="image", subtype=image.subtype, cid=f"<{image.cid}>",
                              filename=image.filename, disposition="inline")
