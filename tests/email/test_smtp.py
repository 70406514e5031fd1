"""SMTP in and submission: smtplib, aiosmtplib and swaks against the service."""

from __future__ import annotations

import asyncio
import smtplib
import ssl
import subprocess
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import pytest

from sdi.testing import servers
from sdi.testing.email import ANN, BOB, Mail, start_mail, wait_for


def _message(subject: str, to: str = ANN, body: str = "hello") -> bytes:
    return f"From: x@far.example\r\nTo: {to}\r\nSubject: {subject}\r\n\r\n{body}\r\n".encode()


def test_single_message_is_stored_and_readable(mail_on_each_loop: Mail) -> None:
    mail = mail_on_each_loop
    with smtplib.SMTP("127.0.0.1", mail.smtp) as client:
        refused = client.sendmail("x@far.example", [ANN], _message("single one"))
    assert refused == {}
    [message] = mail.wait_messages(1)
    assert message["subject"] == "single one"
    assert message["read"] is False
    status, raw = mail.api("GET", f"/v1/messages/{message['id']}")
    assert status == 200
    assert raw["body"].strip() == "hello"
    assert mail.folder(user=BOB) == []


def test_many_recipients_each_get_a_copy(mail: Mail) -> None:
    with smtplib.SMTP("127.0.0.1", mail.smtp) as client:
        assert client.sendmail("x@far.example", [ANN, BOB], _message("to both")) == {}
    assert mail.wait_messages(1, user=ANN)[0]["subject"] == "to both"
    assert mail.wait_messages(1, user=BOB)[0]["subject"] == "to both"


def test_unknown_user_and_foreign_domain_get_550(mail: Mail) -> None:
    with smtplib.SMTP("127.0.0.1", mail.smtp) as client:
        client.ehlo()
        client.mail("x@far.example")
        code, text = client.rcpt("nobody@sdi.local")
        assert (code, text[:5]) == (550, b"5.1.1")
        code, text = client.rcpt("someone@elsewhere.example")
        assert (code, text[:5]) == (550, b"5.7.1")
        assert client.rcpt(ANN)[0] == 250
        # Some refused, some accepted: the message goes to the accepted one.
        code, _ = client.data(_message("partly"))
        assert code == 250
    assert [m["subject"] for m in mail.wait_messages(1)] == ["partly"]


def test_every_recipient_refused_raises(mail: Mail) -> None:
    with (
        smtplib.SMTP("127.0.0.1", mail.smtp) as client,
        pytest.raises(smtplib.SMTPRecipientsRefused),
    ):
        client.sendmail("x@far.example", ["ghost@sdi.local"], _message("nobody"))


def test_size_limit_552(tmp_path: Path) -> None:
    mail = start_mail(tmp_path, message_bytes_max=10_000)
    try:
        with smtplib.SMTP("127.0.0.1", mail.smtp) as client:
            client.ehlo()
            assert client.has_extn("size")
            assert int(client.esmtp_features["size"]) == 10_000
            # Announced size over the limit: refused at MAIL FROM.
            code, _ = client.mail("x@far.example", ["SIZE=20000"])
            assert code == 552
            client.rset()
            # Not announced: refused after DATA, and the session goes on.
            client.mail("x@far.example")
            client.rcpt(ANN)
            code, _ = client.data(_message("big", body=("x" * 70 + "\r\n") * 300))
            assert code == 552
            assert client.sendmail("x@far.example", [ANN], _message("small")) == {}
        assert [m["subject"] for m in mail.wait_messages(1)] == ["small"]
    finally:
        mail.running.stop()


def test_smtputf8_and_8bitmime(mail: Mail) -> None:
    async def send() -> None:
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=mail.smtp) as client:
            assert client.supports_extension("smtputf8")
            assert client.supports_extension("8bitmime")
            message = EmailMessage()
            message["From"] = "jürgen@münchen.example"
            message["To"] = ANN
            message["Subject"] = "Grüße aus München ✓"
            message.set_content("Größe: 8bit body ünïcödé\n", cte="8bit")
            errors, _ = await client.send_message(message)
            assert errors == {}

    asyncio.run(send())
    [message] = mail.wait_messages(1)
    assert message["subject"] == "Grüße aus München ✓"
    assert "jürgen@münchen.example" in message["sender"]
    status, found = mail.api("GET", "/v1/search?q=gr%C3%BC%C3%9Fe")
    assert status == 200
    assert [m["id"] for m in found["messages"]] == [message["id"]]
    status, raw = mail.api("GET", f"/v1/messages/{message['id']}")
    assert "ünïcödé" in raw["body"]


def test_submission_needs_auth_and_relays(mail: Mail) -> None:
    with smtplib.SMTP("127.0.0.1", mail.submission) as client:
        client.ehlo()
        code, _ = client.mail(ANN)
        assert code == 530
        with pytest.raises(smtplib.SMTPAuthenticationError):
            client.login(ANN, "sdi_not-a-token")
        with pytest.raises(smtplib.SMTPAuthenticationError):
            client.login(ANN, mail.tokens[BOB])  # bob's token is not ann's password
    with smtplib.SMTP("127.0.0.1", mail.submission) as client:
        client.login(ANN, mail.tokens[ANN])
        with pytest.raises(smtplib.SMTPSenderRefused):
            client.sendmail(BOB, [BOB], _message("spoofed", to=BOB))
    with smtplib.SMTP("127.0.0.1", mail.submission) as client:
        client.login(ANN, mail.tokens[ANN])
        assert client.sendmail(ANN, [BOB], _message("via submission", to=BOB)) == {}
    assert mail.wait_messages(1, user=BOB)[0]["subject"] == "via submission"
    assert mail.wait_messages(1, "sent", user=ANN)[0]["subject"] == "via submission"


def _self_signed(directory: Path) -> tuple[str, str]:
    openssl = servers.require_binary("openssl")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return str(cert), str(key)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_starttls_with_a_certificate(tmp_path: Path, loop: str) -> None:
    cert, key = _self_signed(tmp_path)
    mail = start_mail(tmp_path / "mail", loop=loop, tls_cert=cert, tls_key=key)
    try:
        context = ssl.create_default_context(cafile=cert)
        context.check_hostname = False
        with smtplib.SMTP("127.0.0.1", mail.submission) as client:
            client.ehlo()
            assert client.has_extn("starttls")
            assert not client.has_extn("auth")  # no AUTH in the clear when TLS is there
            client.starttls(context=context)
            client.ehlo()
            assert client.has_extn("auth")
            client.login(ANN, mail.tokens[ANN])
            assert client.sendmail(ANN, [BOB], _message("over tls", to=BOB)) == {}
        with smtplib.SMTP("127.0.0.1", mail.smtp) as client:
            client.starttls(context=context)
            assert client.sendmail("x@far.example", [BOB], _message("inbound tls", to=BOB)) == {}
        subjects = {m["subject"] for m in mail.wait_messages(2, user=BOB)}
        assert subjects == {"over tls", "inbound tls"}
    finally:
        mail.running.stop()


def test_huge_header_section_refused(mail: Mail) -> None:
    header = "".join(f"X-Filler-{i}: {'v' * 900}\r\n" for i in range(100))  # ~90 KB of headers
    with smtplib.SMTP("127.0.0.1", mail.smtp) as client:
        client.ehlo()
        client.mail("x@far.example")
        client.rcpt(ANN)
        code, text = client.data(header.encode() + _message("huge"))
        assert (code, text[:5]) == (552, b"5.3.4")
        # A header line over SMTP's 1000-octet limit is refused too.
        client.mail("x@far.example")
        client.rcpt(ANN)
        code, _ = client.data(b"X-Long: " + b"v" * 5000 + b"\r\n" + _message("long line"))
        assert code == 500
        assert client.sendmail("x@far.example", [ANN], _message("after")) == {}
    assert [m["subject"] for m in mail.wait_messages(1)] == ["after"]


def test_smtp_smuggling_bare_lf_dot_does_not_end_data(mail: Mail) -> None:
    """``\\n.\\n`` inside DATA must not end the message (SMTP smuggling)."""
    with smtplib.SMTP("127.0.0.1", mail.smtp) as client:
        client.ehlo()
        client.mail("x@far.example")
        client.rcpt(ANN)
        client.putcmd("DATA")
        assert client.getreply()[0] == 354
        smuggled = (
            _message("outer")
            + b"\n.\nMAIL FROM:<evil@far.example>\r\nRCPT TO:<bob@sdi.local>\r\nDATA\r\n"
            + _message("smuggled", to=BOB)
            + b"\r\n.\r\n"
        )
        client.send(smuggled)
        assert client.getreply()[0] == 250
    assert [m["subject"] for m in mail.wait_messages(1)] == ["outer"]
    assert mail.folder(user=BOB) == []


def test_malformed_mime_is_stored_and_server_keeps_serving(mail: Mail) -> None:
    broken = [
        b"Subject: =?utf-8?q?broken=ZZ?=\r\nContent-Type: multipart/mixed\r\n\r\nno boundary\r\n",
        b"Subject: bad charset\r\nContent-Type: text/plain; charset=nonexistent-42\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n!!!not base64!!!\r\n",
        b"\xff\xfe: weird header\r\nSubject: \xc3\x28 invalid utf8\r\n\r\nbody \xff\r\n",
        b"no headers at all, just text\r\n",
        b'Content-Type: multipart/mixed; boundary="b"\r\nSubject: nested\r\n\r\n--b\r\n'
        b"Content-Type: message/rfc822\r\n\r\n--b--\r\n",
    ]
    with smtplib.SMTP("127.0.0.1", mail.smtp) as client:
        for raw in broken:
            assert client.sendmail("x@far.example", [ANN], raw) == {}
    messages = mail.wait_messages(len(broken))
    for message in messages:
        status, _ = mail.api("GET", f"/v1/messages/{message['id']}")
        assert status == 200
        assert mail.raw(message["id"]) in broken


def test_spam_rules_file_into_spam(mail: Mail) -> None:
    spam = b"From: a@b.example\r\nSubject: YOU ARE A WINNER\r\nX-Spam-Flag: YES\r\n\r\nlottery\r\n"
    with smtplib.SMTP("127.0.0.1", mail.smtp) as client:
        client.sendmail("a@b.example", [ANN], spam)
        client.sendmail("a@b.example", [ANN], _message("ham"))
    assert [m["subject"] for m in mail.wait_messages(1, "spam")] == ["YOU ARE A WINNER"]
    assert [m["subject"] for m in mail.wait_messages(1)] == ["ham"]


def test_swaks(mail: Mail) -> None:
    swaks = servers.require_binary("swaks")
    result = subprocess.run(
        [swaks, "--server", f"127.0.0.1:{mail.smtp}", "--to", BOB, "--from", "x@far.example",
         "--header", "Subject: from swaks", "--body", "swaks body"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert wait_for(lambda: mail.folder(user=BOB))[0]["subject"] == "from swaks"
