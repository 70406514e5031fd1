"""Search compared with a brute-force scan over the stored messages (hypothesis)."""

from __future__ import annotations

import email
import email.policy
import random
import re
import smtplib
import unicodedata
import urllib.parse
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sdi.email.query import And, Phrase, Term, parse, tokenize
from sdi.email.search import ScanIndex
from sdi.errors import InvalidArgument
from sdi.testing.email import ANN, start_mail

VOCABULARY = ["alpha", "beta", "gamma", "delta", "émile", "straße", "zeta", "x1", "alphabet"]
SENDERS = ["Olga <olga@far.example>", "Piet <piet@near.example>", "Quinn <quinn@far.example>"]
FIELDS = ["subject", "body", "from", "to"]


def fold(text: str) -> str:
    """Case-folded, accents dropped (``émile`` is ``emile``): the test's own normalization."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def _words(text: str) -> list[str]:
    return re.findall(r"[^\W_]+", fold(text))


@dataclass(frozen=True)
class Q:
    """A query tree of the test's own, evaluated independently of sdi.email.query."""

    kind: str  # word, prefix, phrase, and, or, not
    field: str | None = None
    words: tuple[str, ...] = ()
    children: tuple[Q, ...] = ()

    def render(self) -> str:
        scope = f"{self.field}:" if self.field else ""
        if self.kind == "word":
            return scope + self.words[0]
        if self.kind == "prefix":
            return scope + self.words[0] + "*"
        if self.kind == "phrase":
            return scope + '"' + " ".join(self.words) + '"'
        if self.kind == "not":
            return "NOT (" + self.children[0].render() + ")"
        joiner = " OR " if self.kind == "or" else " "
        return "(" + joiner.join(child.render() for child in self.children) + ")"

    def holds(self, fields: dict[str, str]) -> bool:
        names = [self.field] if self.field else list(fields)
        if self.kind == "word":
            return any(fold(self.words[0]) in _words(fields[n]) for n in names)
        if self.kind == "prefix":
            start = fold(self.words[0])
            return any(w.startswith(start) for n in names for w in _words(fields[n]))
        if self.kind == "phrase":
            want = [fold(w) for w in self.words]
            for n in names:
                have = _words(fields[n])
                if any(have[i : i + len(want)] == want for i in range(len(have))):
                    return True
            return False
        if self.kind == "not":
            return not self.children[0].holds(fields)
        if self.kind == "and":
            return all(child.holds(fields) for child in self.children)
        return any(child.holds(fields) for child in self.children)


_field = st.sampled_from([None, None, *FIELDS])
_leaf = st.one_of(
    st.builds(lambda f, w: Q("word", f, (w,)), _field, st.sampled_from(VOCABULARY)),
    st.builds(
        lambda f, w, n: Q("prefix", f, (w[:n],)),
        _field,
        st.sampled_from(VOCABULARY),
        st.integers(1, 4),
    ),
    st.builds(
        lambda f, ws: Q("phrase", f, tuple(ws)),
        _field,
        st.lists(st.sampled_from(VOCABULARY), min_size=2, max_size=2),
    ),
    st.builds(lambda s: Q("word", "from", (s,)), st.sampled_from(["olga", "far", "piet"])),
)
queries = st.recursive(
    _leaf,
    lambda inner: st.one_of(
        st.builds(lambda cs: Q("and", children=tuple(cs)), st.lists(inner, min_size=2, max_size=3)),
        st.builds(lambda cs: Q("or", children=tuple(cs)), st.lists(inner, min_size=2, max_size=3)),
        st.builds(lambda c: Q("not", children=(c,)), inner),
    ),
    max_leaves=6,
)


def _random_mail(rng: random.Random, i: int) -> EmailMessage:
    message = EmailMessage()
    message["From"] = rng.choice(SENDERS)
    message["To"] = ANN
    message["Subject"] = " ".join(rng.choices(VOCABULARY, k=rng.randint(1, 4))) + f" n{i}"
    message["Message-ID"] = f"<m{i}@far.example>"
    message.set_content(" ".join(rng.choices(VOCABULARY, k=rng.randint(0, 12))) + "\n")
    return message


def test_search_matches_a_brute_force_scan_of_the_stored_mail(tmp_path: Path) -> None:
    rng = random.Random(8)
    mail = start_mail(tmp_path)
    try:
        with smtplib.SMTP("127.0.0.1", mail.smtp) as client:
            for i in range(40):
                client.send_message(_random_mail(rng, i), "x@far.example", [ANN])
        stored = mail.wait_messages(40)
        # The brute force: every stored message, fetched raw and parsed here.
        texts: dict[int, dict[str, str]] = {}
        for message in stored:
            parsed = email.message_from_bytes(mail.raw(message["id"]), policy=email.policy.default)
            body = parsed.get_body()
            assert isinstance(parsed, EmailMessage)
            assert body is not None
            texts[message["id"]] = {
                "subject": str(parsed["subject"]),
                "from": str(parsed["from"]),
                "to": str(parsed["to"]),
                "body": body.get_content(),
            }

        @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
        @given(queries)
        def check(query: Q) -> None:
            expected = sorted((i for i, f in texts.items() if query.holds(f)), reverse=True)
            status, found = mail.api(
                "GET", "/v1/search?limit=200&q=" + urllib.parse.quote(query.render())
            )
            assert status == 200, found
            assert [m["id"] for m in found["messages"]] == expected, query.render()

        check()
    finally:
        mail.running.stop()


@settings(max_examples=200, deadline=None)
@given(
    docs=st.lists(
        st.tuples(
            st.lists(st.sampled_from(VOCABULARY), max_size=5),
            st.integers(0, 9),
            st.sampled_from(["inbox", "archive"]),
            st.booleans(),
        ),
        max_size=25,
    ),
    query=queries,
    folder=st.sampled_from([None, "inbox", "archive"]),
    read=st.sampled_from([None, True, False]),
    dates=st.tuples(st.integers(0, 9), st.integers(0, 9)),
    limit=st.integers(1, 30),
    before=st.one_of(st.none(), st.integers(1, 30)),
)
def test_scan_index_filters_and_pages(
    docs: list[tuple[list[str], int, str, bool]],
    query: Q,
    folder: str | None,
    read: bool | None,
    dates: tuple[int, int],
    limit: int,
    before: int | None,
) -> None:
    index = ScanIndex()
    fields: dict[int, dict[str, str]] = {}
    for doc_id, (words, date, doc_folder, doc_read) in enumerate(docs, start=1):
        fields[doc_id] = {
            "subject": " ".join(words), "body": "", "from": SENDERS[doc_id % 3], "to": ANN,
        }  # fmt: skip
        index.add(ANN, doc_id, fields[doc_id], date, doc_folder, doc_read)
        index.add("other@sdi.local", doc_id + 1000, fields[doc_id], date, doc_folder, doc_read)
    low, high = min(dates), max(dates)
    expected = [
        doc_id
        for doc_id in sorted(fields, reverse=True)
        if query.holds(fields[doc_id])
        and (folder is None or docs[doc_id - 1][2] == folder)
        and (read is None or docs[doc_id - 1][3] == read)
        and low <= docs[doc_id - 1][1] <= high
        and (before is None or doc_id < before)
    ][:limit]
    found = index.search(
        ANN, query.render(), folder=folder, read=read, date_from=low, date_to=high,
        limit=limit, before=before,
    )  # fmt: skip
    assert found == expected


def test_tokenizer_and_parser_edges() -> None:
    assert tokenize("Ünïcode—dash/slash_under 3.14 日本語") == [
        "unicode", "dash", "slash", "under", "3", "14", "日本語",
    ]  # fmt: skip
    assert "a.b+c@x-y.example.org" in tokenize("mail <A.B+c@X-Y.example.org>.")
    for bad in ["", "   ", "(", "a)", "NOT", '""', "-", "a OR", "OR a", "a OR OR b"]:
        with pytest.raises(InvalidArgument):
            parse(bad)
    assert parse("a AND b") == parse("a b")
    assert parse("-a") == parse("NOT a")
    assert parse('-"a b"') == parse('NOT "a b"')
    assert parse("-(a OR b)") == parse("NOT (a OR b)")
    assert parse('-subject:"a b"') == parse('NOT subject:"a b"')
    assert parse('subject:"A  b"') == Phrase("subject", ("a", "b"))
    assert parse("to:Ann@SDI.local") == Term("to", "ann@sdi.local")
    assert parse("bob.smith*") == And((Phrase(None, ("bob", "smith")), Term(None, "smith", True)))
    with pytest.raises(InvalidArgument):
        parse("x " * 300)
