"""What the pipeline reads from a raw message: headers, text, attachments (never raises).

Parsing uses the standard :mod:`email` package with its ``compat32`` policy,
the most forgiving one: malformed MIME, broken encodings and undecodable
headers give what can be read (``errors="replace"``), never an exception.

>>> raw = (b"From: =?utf-8?q?J=C3=BCrgen?= <j@x.org>\\r\\nTo: a@sdi.local, b@sdi.local\\r\\n"
...        b"Subject: Hi\\r\\nMessage-ID: <1@x>\\r\\nIn-Reply-To: <0@x>\\r\\n\\r\\nBody text\\r\\n")
>>> parsed = parse_message(raw)
>>> parsed.sender, parsed.recipients, parsed.subject, parsed.message_id, parsed.references
('Jürgen <j@x.org>', 'a@sdi.local, b@sdi.local', 'Hi', '<1@x>', ['<0@x>'])
>>> parsed.body.strip(), parsed.search_fields()["from"]
('Body text', 'Jürgen <j@x.org>')
"""

from __future__ import annotations

import email
import email.header
import email.message
import email.policy
import email.utils
import re
import time
from dataclasses import dataclass, field

__all__ = ["Attachment", "Parsed", "attachment", "header_text", "parse_message"]

BODY_CHARS_MAX = 200_000
SNIPPET_CHARS = 160
_MESSAGE_ID = re.compile(r"<[^<>\s]+>")
_TAG = re.compile(r"<[^>]*>")
_CONTENT_TYPE = re.compile(r"[a-z0-9!#$&^_.+-]{1,64}/[a-z0-9!#$&^_.+-]{1,127}")


@dataclass(frozen=True)
class Attachment:
    filename: str
    content_type: str
    size: int


@dataclass
class Parsed:
    """A message as the pipeline and the store see it."""

    sender: str = ""
    recipients: str = ""
    subject: str = ""
    date: int = 0
    message_id: str = ""
    references: list[str] = field(default_factory=list)
    body: str = ""
    attachments: list[Attachment] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    defects: int = 0

    @property
    def snippet(self) -> str:
        return " ".join(self.body.split())[:SNIPPET_CHARS]

    def search_fields(self) -> dict[str, str]:
        """The text the search index gets, by field."""
        return {
            "from": self.sender,
            "to": self.recipients,
            "subject": self.subject,
            "body": self.body,
            "attachment": " ".join(a.filename for a in self.attachments),
        }


def _raw_utf8(text: str) -> str:
    """compat32 keeps a header's non-ASCII bytes as surrogates: read them as UTF-8."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:
        return text


def header_text(value: object) -> str:
    """A header value as text: encoded words decoded, raw UTF-8 read, bad bytes replaced."""
    if value is None:
        return ""
    try:
        if not isinstance(value, email.header.Header):
            text = _raw_utf8(str(value))
            if not text.isascii():  # SMTPUTF8 / RFC 6532 headers: raw UTF-8, no encoded words
                return text
            value = text
        pieces: list[str] = []
        for chunk, charset in email.header.decode_header(value):
            if isinstance(chunk, str):
                pieces.append(chunk)
                continue
            name = charset if charset and charset != "unknown-8bit" else "utf-8"
            try:
                pieces.append(chunk.decode(name, "replace"))
            except LookupError:
                pieces.append(chunk.decode("utf-8", "replace"))
        return _join_words(pieces)
    except Exception:
        return _raw_utf8(str(value)).encode("utf-8", "replace").decode("utf-8", "replace")


def _join_words(pieces: list[str]) -> str:
    """Joins decoded header pieces as ``make_header`` would (encoded words glue together)."""
    out = ""
    for piece in pieces:
        if out and not out[-1].isspace() and not piece[:1].isspace():
            out += " "
        out += piece
    return " ".join(out.split()) if "\n" in out else out


def _part_text(part: email.message.Message) -> str:
    try:
        payload = part.get_payload(decode=True)
    except Exception:
        payload = None
    if not isinstance(payload, bytes):
        raw = part.get_payload()
        return raw if isinstance(raw, str) else ""
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, "replace")
    except LookupError:
        return payload.decode("utf-8", "replace")


def _attachment(part: email.message.Message) -> tuple[Attachment, bytes] | None:
    """The part as an attachment (with its decoded bytes), or None when it is not one:
    a leaf part with a filename or ``Content-Disposition: attachment``."""
    try:
        filename = part.get_filename()
        content_type = part.get_content_type()
    except Exception:
        filename, content_type = None, "application/octet-stream"
    disposition = str(part.get("content-disposition", "")).lower()
    if not filename and not disposition.startswith("attachment"):
        return None
    try:
        data = part.get_payload(decode=True)
    except Exception:
        data = None
    if not isinstance(data, bytes):
        payload = part.get_payload()
        data = payload.encode("utf-8", "surrogateescape") if isinstance(payload, str) else b""
    name = header_text(filename) if filename else ""
    return Attachment(name, content_type, len(data)), data


def attachment(raw: bytes, index: int) -> tuple[Attachment, str, bytes] | None:
    """The ``index``-th attachment of ``raw`` (counted as :func:`parse_message` lists them):
    its description, its Content-Type (with the charset of a text part) and its decoded
    bytes; None when there is no such attachment.

    >>> raw = (b"Content-Type: multipart/mixed; boundary=b\\r\\n\\r\\n--b\\r\\n\\r\\nhi\\r\\n"
    ...        b"--b\\r\\nContent-Type: text/plain; charset=latin-1\\r\\n"
    ...        b"Content-Disposition: attachment; filename=a.txt\\r\\n"
    ...        b"Content-Transfer-Encoding: base64\\r\\n\\r\\naGk=\\r\\n--b--\\r\\n")
    >>> described, content_type, data = attachment(raw, 0)
    >>> described
    Attachment(filename='a.txt', content_type='text/plain', size=2)
    >>> content_type, data
    ('text/plain; charset=latin-1', b'hi')
    >>> attachment(raw, 1) is None
    True
    """
    if index < 0:
        return None
    try:
        message = email.message_from_bytes(raw, policy=email.policy.compat32)
        parts = list(message.walk())
    except Exception:
        return None
    seen = 0
    for part in parts:
        if part.is_multipart():
            continue
        found = _attachment(part)
        if found is None:
            continue
        if seen == index:
            described, data = found
            content_type = described.content_type
            if not _CONTENT_TYPE.fullmatch(content_type):  # e.g. folded oddly: never a header
                content_type = "application/octet-stream"
            charset = part.get_param("charset")
            if (
                content_type.startswith("text/")
                and isinstance(charset, str)
                and re.fullmatch(r"[A-Za-z0-9._:+-]{1,40}", charset)
            ):
                content_type += f"; charset={charset.lower()}"
            return described, content_type, data
        seen += 1
    return None


def parse_message(raw: bytes) -> Parsed:
    """Reads ``raw``'s headers, text body and attachments, however broken it is."""
    parsed = Parsed()
    try:
        message = email.message_from_bytes(raw, policy=email.policy.compat32)
    except Exception:
        parsed.body = raw.decode("utf-8", "replace")[:BODY_CHARS_MAX]
        parsed.defects = 1
        return parsed
    for name in ("from", "to", "cc", "subject", "date", "message-id", "references", "in-reply-to"):
        parsed.headers[name] = header_text(message.get(name))
    parsed.sender = parsed.headers["from"]
    parsed.recipients = ", ".join(t for t in (parsed.headers["to"], parsed.headers["cc"]) if t)
    parsed.subject = parsed.headers["subject"]
    parsed.date = int(time.time())
    if parsed.headers["date"]:
        try:
            when = email.utils.parsedate_to_datetime(parsed.headers["date"])
            parsed.date = int(when.timestamp())
        except (TypeError, ValueError, IndexError, OverflowError):
            pass
    ids = _MESSAGE_ID.findall(parsed.headers["message-id"])
    parsed.message_id = ids[0] if ids else ""
    references = _MESSAGE_ID.findall(parsed.headers["references"])
    references += _MESSAGE_ID.findall(parsed.headers["in-reply-to"])
    parsed.references = list(dict.fromkeys(references))
    texts: list[str] = []
    size = 0
    try:
        parts = list(message.walk())
    except Exception:
        parts = [message]
    for part in parts:
        parsed.defects += len(getattr(part, "defects", []))
        if part.is_multipart():
            continue
        attachment = _attachment(part)
        if attachment is not None:
            parsed.attachments.append(attachment[0])
            continue
        try:
            content_type = part.get_content_type()
        except Exception:
            content_type = "application/octet-stream"
        if content_type.startswith("text/") and size < BODY_CHARS_MAX:
            text = _part_text(part)
            if content_type == "text/html":
                text = _TAG.sub(" ", text)
            texts.append(text)
            size += len(text)
    parsed.body = "\n".join(texts)[:BODY_CHARS_MAX]
    return parsed
