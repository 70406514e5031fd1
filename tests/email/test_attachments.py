"""Attachments over HTTP: listed in the message, downloaded decoded with their filename."""

from __future__ import annotations

import base64
import email.message
import email.policy
import http.client
import smtplib

from sdi.email.api import content_disposition
from sdi.email.mime import attachment
from sdi.testing.email import ANN, BOB, Mail

PDF = bytes(range(256)) * 40  # binary: sent base64
NOTES = "Line one = café\r\nline two, a long one " + "x" * 90 + "\r\n"


def _download(mail: Mail, path: str, user: str | None = ANN) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", mail.http, timeout=30)
    try:
        headers = {} if user is None else {"authorization": f"Bearer {mail.tokens[user]}"}
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        body = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body
    finally:
        connection.close()


def _message_with_attachments() -> bytes:
    message = email.message.EmailMessage(policy=email.policy.SMTP)
    message["From"] = "Carol <carol@far.example>"
    message["To"] = ANN
    message["Subject"] = "the files"
    message["Message-ID"] = "<files@far.example>"
    message.set_content("See the attached files.\n")
    message.add_attachment(PDF, maintype="application", subtype="pdf", filename="report.pdf")
    message.add_attachment(
        NOTES.encode("latin-1"), maintype="text", subtype="plain", filename="notes.txt",
        cte="quoted-printable", params={"charset": "iso-8859-1"},
    )  # fmt: skip
    message.add_attachment(
        b"\x89PNG fake image", maintype="image", subtype="png", filename="Grüße 日本.png"
    )
    return message.as_bytes()


def _legacy_message() -> bytes:
    """An attachment named with an RFC 2047 encoded word (what older clients send)."""
    body = base64.b64encode(b"%PDF-1.4 tiny").decode()
    return (
        "From: dave@far.example\r\nTo: ann@sdi.local\r\nSubject: old client\r\n"
        "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=XX\r\n\r\n"
        "--XX\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
        "--XX\r\nContent-Type: application/octet-stream;\r\n"
        ' name="=?UTF-8?B?w6l0w6kucGRm?="\r\n'
        'Content-Disposition: attachment; filename="=?UTF-8?B?w6l0w6kucGRm?="\r\n'
        f"Content-Transfer-Encoding: base64\r\n\r\n{body}\r\n--XX--\r\n"
    ).encode()


def _deliver(mail: Mail, raw: bytes, count: int) -> dict[str, object]:
    with smtplib.SMTP("127.0.0.1", mail.smtp) as client:
        assert client.sendmail("carol@far.example", [ANN], raw) == {}
    messages = mail.wait_messages(count)
    newest = max(m["id"] for m in messages)
    status, message = mail.api("GET", f"/v1/messages/{newest}")
    assert status == 200
    return dict(message)


def test_attachments_are_listed_and_downloaded_decoded(mail: Mail) -> None:
    raw = _message_with_attachments()
    message = _deliver(mail, raw, 1)
    assert message["attachments"] == [
        {"index": 0, "filename": "report.pdf", "content_type": "application/pdf",
         "size": len(PDF)},
        {"index": 1, "filename": "notes.txt", "content_type": "text/plain",
         "size": len(NOTES.encode("latin-1"))},
        {"index": 2, "filename": "Grüße 日本.png", "content_type": "image/png", "size": 15},
    ]  # fmt: skip
    assert b"Content-Transfer-Encoding: base64" in raw
    assert b"Content-Transfer-Encoding: quoted-printable" in raw
    base = f"/v1/messages/{message['id']}/attachments"

    status, headers, body = _download(mail, f"{base}/0")
    assert (status, body) == (200, PDF)
    assert headers["content-type"] == "application/pdf"
    assert headers["content-disposition"] == 'attachment; filename="report.pdf"'
    assert headers["x-content-type-options"] == "nosniff"

    status, headers, body = _download(mail, f"{base}/1")
    assert (status, body) == (200, NOTES.encode("latin-1"))  # quoted-printable decoded
    assert headers["content-type"] == "text/plain; charset=iso-8859-1"
    assert headers["content-disposition"] == 'attachment; filename="notes.txt"'

    status, headers, body = _download(mail, f"{base}/2")
    assert (status, body) == (200, b"\x89PNG fake image")
    assert headers["content-disposition"] == (
        'attachment; filename="Gr_e _.png"; '
        "filename*=UTF-8''Gr%C3%BC%C3%9Fe%20%E6%97%A5%E6%9C%AC.png"
    )
    # the stored message is still byte for byte what arrived
    assert mail.raw(int(str(message["id"]))) == raw


def test_an_encoded_word_filename(mail: Mail) -> None:
    message = _deliver(mail, _legacy_message(), 1)
    assert [a["filename"] for a in message["attachments"]] == ["été.pdf"]  # type: ignore[attr-defined]
    status, headers, body = _download(mail, f"/v1/messages/{message['id']}/attachments/0")
    assert (status, body) == (200, b"%PDF-1.4 tiny")
    assert headers["content-type"] == "application/octet-stream"
    assert headers["content-disposition"].endswith("filename*=UTF-8''%C3%A9t%C3%A9.pdf")


def test_missing_message_or_attachment_is_404_and_a_token_is_needed(mail: Mail) -> None:
    message = _deliver(mail, _message_with_attachments(), 1)
    base = f"/v1/messages/{message['id']}/attachments"
    assert _download(mail, f"{base}/3")[0] == 404
    assert _download(mail, f"{base}/-1")[0] == 404
    assert _download(mail, f"{base}/x")[0] == 404
    assert _download(mail, "/v1/messages/999999/attachments/0")[0] == 404
    assert _download(mail, f"{base}/0", user=BOB)[0] == 404  # another user's message
    assert _download(mail, f"{base}/0", user=None)[0] == 401
    assert _download(mail, f"/v1/messages/{message['id']}/attachment/0")[0] == 404
    status, _ = mail.api("DELETE", f"{base}/0")
    assert status == 405
    plain = _deliver(
        mail, b"From: e@far.example\r\nTo: ann@sdi.local\r\nSubject: no files\r\n\r\nhi\r\n", 2
    )
    assert plain["attachments"] == []
    assert _download(mail, f"/v1/messages/{plain['id']}/attachments/0")[0] == 404


def test_content_disposition_is_safe_for_any_name() -> None:
    assert content_disposition('a"b\\c.txt') == 'attachment; filename="a\\"b_c.txt"'
    assert content_disposition("../../etc/passwd") == 'attachment; filename=".._.._etc_passwd"'
    assert content_disposition("evil\r\nSet-Cookie: x") == (
        'attachment; filename="evil__Set-Cookie: x"'
    )
    assert content_disposition("") == 'attachment; filename="attachment"'


def test_a_malformed_content_type_is_served_as_octet_stream() -> None:
    raw = (
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
        b"Content-Type: application/\r\n evil\r\n"
        b"Content-Disposition: attachment; filename=x.bin\r\n\r\ndata\r\n--b--\r\n"
    )
    found = attachment(raw, 0)
    assert found is not None
    assert found[1:] == ("application/octet-stream", b"data")
