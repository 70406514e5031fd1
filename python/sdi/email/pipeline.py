"""The incoming pipeline: queue entry -> MIME parsing -> spam score -> attachment check -> storage.

:meth:`Pipeline.process` takes one entry of the durable incoming queue,
stores the raw message in the blob store, parses it
(:func:`sdi.email.mime.parse_message`), scores it with the spam rules (a
score at or over ``spam_threshold`` files it in ``spam``), checks the
attachment sizes, then stores one message per recipient and deletes the
entry in one transaction (:meth:`sdi.email.store.MailStore.deliver`):
running it again for the same entry stores nothing more, which is what
makes a crash at any point harmless. A message with an attachment over
``attachment_bytes_max`` is not delivered; its sender gets a delivery
status notification (:func:`sdi.email.outgoing.build_dsn`) when the sender
is local.

Spam rules are plain callables ``(parsed, raw) -> score``; pass your own list.

>>> from sdi.email.mime import parse_message
>>> parsed = parse_message(b"Subject: YOU ARE A WINNER!!!\\r\\n\\r\\nclaim your lottery prize")
>>> [rule(parsed, b"") for rule in DEFAULT_RULES]
[1.0, 2.0, 6.0, 0.0]
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict

from sdi.email.blobs import Blobs
from sdi.email.mime import Parsed, parse_message
from sdi.email.search import SearchIndex
from sdi.email.store import IncomingEntry, MailStore, NewMessage, StoredMessage

__all__ = [
    "DEFAULT_RULES",
    "Pipeline",
    "SpamRule",
    "missing_headers",
    "shouting_subject",
    "spam_flag",
    "spam_words",
]

logger = logging.getLogger(__name__)

SpamRule = Callable[[Parsed, bytes], float]
SPAM_THRESHOLD = 5.0
ATTACHMENT_BYTES_MAX = 25 * 1024 * 1024
_SPAM_WORDS = re.compile(
    r"\b(lottery|winner|viagra|casino|crypto giveaway|wire transfer|prize|free money)\b", re.I
)


def missing_headers(parsed: Parsed, raw: bytes) -> float:
    """Half a point each for no Message-ID and no From."""
    return float(not parsed.message_id) * 0.5 + float(not parsed.sender) * 0.5


def shouting_subject(parsed: Parsed, raw: bytes) -> float:
    """2 points for an all-capitals subject of some length."""
    letters = [c for c in parsed.subject if c.isalpha()]
    return 2.0 if len(letters) >= 8 and all(c.isupper() for c in letters) else 0.0


def spam_words(parsed: Parsed, raw: bytes) -> float:
    """2 points per distinct spam phrase in the subject or body."""
    found = {m.group(0).lower() for m in _SPAM_WORDS.finditer(parsed.subject + " " + parsed.body)}
    return 2.0 * len(found)


def spam_flag(parsed: Parsed, raw: bytes) -> float:
    """10 points when an upstream filter set ``X-Spam-Flag: YES``."""
    head = raw.split(b"\r\n\r\n", 1)[0].lower()
    return 10.0 if b"\nx-spam-flag: yes" in head else 0.0


DEFAULT_RULES: tuple[SpamRule, ...] = (missing_headers, shouting_subject, spam_words, spam_flag)


class Pipeline:
    """Turns incoming-queue entries into stored, indexed messages (blocking; run on a thread)."""

    def __init__(
        self,
        store: MailStore,
        blobs: Blobs,
        index: SearchIndex,
        *,
        rules: Sequence[SpamRule] = DEFAULT_RULES,
        spam_threshold: float = SPAM_THRESHOLD,
        attachment_bytes_max: int = ATTACHMENT_BYTES_MAX,
        on_stored: Callable[[list[StoredMessage]], None] | None = None,
        bounce_from: str = "mailer-daemon@sdi.local",
    ) -> None:
        self.store = store
        self.blobs = blobs
        self.index = index
        self.rules = list(rules)
        self.spam_threshold = spam_threshold
        self.attachment_bytes_max = attachment_bytes_max
        self.on_stored = on_stored
        self.bounce_from = bounce_from

    def score(self, parsed: Parsed, raw: bytes) -> float:
        total = 0.0
        for rule in self.rules:
            try:
                total += float(rule(parsed, raw))
            except Exception:  # a broken rule must not stop the mail
                logger.exception("email: spam rule %r failed", rule)
        return total

    def process(self, entry: IncomingEntry) -> list[StoredMessage]:
        """Stores the entry's message for each recipient that is a user; the stored messages."""
        from sdi.email.outgoing import build_dsn

        parsed = parse_message(entry.data)
        too_big = [a for a in parsed.attachments if a.size > self.attachment_bytes_max]
        if too_big:
            logger.info("email: entry %d refused: attachment over the limit", entry.id)
            sender = entry.mail_from.lower()
            if sender and self.store.user(sender) is not None:
                dsn = build_dsn(
                    self.bounce_from,
                    sender,
                    entry.data,
                    [
                        (rcpt, "5.3.4", f"attachment over {self.attachment_bytes_max} bytes")
                        for rcpt in entry.rcpts
                    ],
                )
                self.store.submit(None, ("", [sender], dsn), [])
            self.store.drop_incoming(entry.id)
            return []
        key = self.blobs.put(entry.data)
        score = self.score(parsed, entry.data)
        folder = "spam" if score >= self.spam_threshold else "inbox"
        attachments = [asdict(a) for a in parsed.attachments]
        messages: list[NewMessage] = []
        for rcpt in dict.fromkeys(r.lower() for r in entry.rcpts):
            if self.store.user(rcpt) is None:
                logger.info("email: entry %d: no user %s any more", entry.id, rcpt)
                continue
            messages.append(
                NewMessage(
                    rcpt, folder, parsed.date, parsed.message_id, parsed.references,
                    parsed.sender, parsed.recipients, parsed.subject, parsed.snippet,
                    len(entry.data), key, score, attachments, parsed.search_fields(),
                )
            )  # fmt: skip
        stored = self.store.deliver(entry.id, messages)
        self.add_to_index(stored)
        return stored

    def add_to_index(self, stored: list[StoredMessage]) -> None:
        add_many = getattr(self.index, "add_many", None)
        if add_many is not None:  # one write (and one sync) for all the recipients' copies
            add_many([(m.user, m.id, m.search, m.date, m.folder, m.read) for m in stored])
        else:
            for message in stored:
                self.index.add(
                    message.user, message.id, message.search, message.date, message.folder,
                    message.read,
                )  # fmt: skip
        if stored and self.on_stored is not None:
            self.on_stored(stored)
