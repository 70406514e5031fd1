"""CPython's own MIME test corpus goes in over SMTP and comes back byte for byte."""

from __future__ import annotations

import os
import re
import smtplib
from pathlib import Path

from sdi.testing.email import ANN, Mail
from sdi.testing.servers import missing


def _corpus() -> list[Path]:
    try:
        import test
    except ImportError:
        return []
    data = Path(os.path.dirname(test.__file__)) / "test_email" / "data"
    return sorted(data.glob("msg_*.txt"))


def _on_the_wire(data: bytes) -> bytes:
    """What SMTP carries: every line ending CRLF, a final CRLF (smtplib converts only str)."""
    data = re.sub(rb"\r\n|\n|\r(?!\n)", b"\r\n", data)
    return data if data.endswith(b"\r\n") else data + b"\r\n"


def test_cpython_mime_corpus_round_trip(mail: Mail) -> None:
    corpus = _corpus()
    if not corpus:
        missing("CPython's test.test_email data (msg_*.txt)", "test data")
    assert len(corpus) >= 40
    sent: dict[str, bytes] = {}
    with smtplib.SMTP("127.0.0.1", mail.smtp) as client:
        for path in corpus:
            data = _on_the_wire(path.read_bytes())
            refused = client.sendmail("corpus@far.example", [ANN], data)
            assert refused == {}, path.name
            sent[path.name] = data
    messages = mail.wait_messages(len(corpus), timeout=30)
    assert len(messages) == len(corpus)
    received = sorted(mail.raw(message["id"]) for message in messages)
    assert received == sorted(sent.values())
    for message in messages:
        status, detail = mail.api("GET", f"/v1/messages/{message['id']}")
        assert status == 200
        assert isinstance(detail["body"], str)
