"""The HTTP API: folders, paging, read/unread, move, delete, send, search, tokens."""

from __future__ import annotations

import smtplib
import urllib.parse

from sdi.testing.email import ANN, BOB, Mail, wait_for
from sdi.testing.running import request


def _deliver(mail: Mail, count: int, to: str = ANN, word: str = "note") -> list[int]:
    with smtplib.SMTP("127.0.0.1", mail.smtp) as client:
        for i in range(count):
            data = (
                f"From: Carol <carol@far.example>\r\nTo: {to}\r\nSubject: {word} {i}\r\n"
                f"Message-ID: <{word}-{i}@far.example>\r\n\r\nbody number {i}\r\n"
            )
            assert client.sendmail("carol@far.example", [to], data.encode()) == {}
    messages = mail.wait_messages(count, user=to)
    return sorted(m["id"] for m in messages)


def _folder(mail: Mail, folder: str, user: str = ANN) -> dict[str, int]:
    status, body = mail.api("GET", "/v1/folders", user=user)
    assert status == 200
    return next(f for f in body["folders"] if f["id"] == folder)


def test_every_route_needs_a_valid_token(mail: Mail) -> None:
    for method, path in [
        ("GET", "/v1/folders"),
        ("GET", "/v1/folders/inbox/messages"),
        ("GET", "/v1/messages/1"),
        ("GET", "/v1/messages/1/raw"),
        ("PUT", "/v1/messages/1"),
        ("DELETE", "/v1/messages/1"),
        ("POST", "/v1/messages"),
        ("GET", "/v1/search?q=x"),
    ]:
        status, body = request(mail.http, method, path, {}, token=None)
        assert status == 401, (method, path)
        assert "token" in body["error"]
        status, _ = request(mail.http, method, path, {}, token="sdi_forged-token")
        assert status == 401


def test_folders_and_paging(mail: Mail) -> None:
    ids = _deliver(mail, 7)
    status, body = mail.api("GET", "/v1/folders")
    assert status == 200
    assert [f["id"] for f in body["folders"]] == ["inbox", "sent", "drafts", "spam", "trash"]
    assert _folder(mail, "inbox") == {"id": "inbox", "name": "Inbox", "total": 7, "unread": 7}
    seen: list[int] = []
    before = None
    while True:
        query = "?limit=3" + (f"&before={before}" if before else "")
        status, page = mail.api("GET", f"/v1/folders/inbox/messages{query}")
        assert status == 200
        seen += [m["id"] for m in page["messages"]]
        before = page["next_before"]
        if before is None:
            break
    assert seen == sorted(ids, reverse=True)
    assert mail.api("GET", "/v1/folders/nope/messages")[0] == 404
    assert mail.api("GET", "/v1/folders/inbox/messages?limit=0")[0] == 400
    assert mail.api("GET", "/v1/folders/inbox/messages?before=x")[0] == 400


def test_read_unread_move_delete(mail: Mail) -> None:
    first, second = _deliver(mail, 2)
    status, message = mail.api("PUT", f"/v1/messages/{first}", {"read": True})
    assert (status, message["read"]) == (200, True)
    assert _folder(mail, "inbox")["unread"] == 1
    status, message = mail.api("PUT", f"/v1/messages/{first}", {"read": False})
    assert message["read"] is False
    assert _folder(mail, "inbox")["unread"] == 2
    status, body = mail.api("POST", "/v1/folders", {"name": "Receipts"})
    assert (status, body["id"]) == (201, "receipts")
    status, message = mail.api("PUT", f"/v1/messages/{first}", {"folder": "receipts"})
    assert (status, message["folder"]) == (200, "receipts")
    assert _folder(mail, "inbox")["total"] == 1
    assert _folder(mail, "receipts") == {
        "id": "receipts", "name": "Receipts", "total": 1, "unread": 1,
    }  # fmt: skip
    assert [m["id"] for m in mail.folder("receipts")] == [first]
    assert mail.api("PUT", f"/v1/messages/{first}", {"folder": "nowhere"})[0] == 400
    assert mail.api("PUT", f"/v1/messages/{first}", {"colour": "red"})[0] == 400
    assert mail.api("PUT", f"/v1/messages/{first}", {"read": "maybe"})[0] == 400
    # search sees the move and the read flag
    status, found = mail.api("GET", "/v1/search?q=note&folder=receipts")
    assert [m["id"] for m in found["messages"]] == [first]
    status, found = mail.api("GET", "/v1/search?q=note&read=false&folder=inbox")
    assert [m["id"] for m in found["messages"]] == [second]
    assert mail.api("DELETE", f"/v1/messages/{second}")[0] == 204
    assert mail.api("GET", f"/v1/messages/{second}")[0] == 404
    assert mail.api("DELETE", f"/v1/messages/{second}")[0] == 404
    assert _folder(mail, "inbox") == {"id": "inbox", "name": "Inbox", "total": 0, "unread": 0}
    assert mail.api("GET", "/v1/search?q=note")[1]["messages"][0]["id"] == first
    assert len(mail.api("GET", "/v1/search?q=note")[1]["messages"]) == 1


def test_other_users_mail_is_invisible(mail: Mail) -> None:
    [bobs] = _deliver(mail, 1, to=BOB, word="secret")
    assert mail.api("GET", f"/v1/messages/{bobs}", user=ANN)[0] == 404
    assert mail.api("GET", f"/v1/messages/{bobs}/raw", user=ANN)[0] == 404
    assert mail.api("PUT", f"/v1/messages/{bobs}", {"read": True}, user=ANN)[0] == 404
    assert mail.api("DELETE", f"/v1/messages/{bobs}", user=ANN)[0] == 404
    assert mail.api("GET", "/v1/search?q=secret", user=ANN)[1]["messages"] == []
    assert mail.folder(user=ANN) == []
    status, message = mail.api("GET", f"/v1/messages/{bobs}", user=BOB)
    assert (status, message["subject"]) == (200, "secret 0")
    assert mail.api("GET", "/v1/search?q=secret", user=BOB)[1]["messages"][0]["id"] == bobs


def test_send_locally_reply_threads_and_search(mail: Mail) -> None:
    status, sent = mail.api(
        "POST", "/v1/messages", {"to": [BOB], "subject": "Lunch plans", "body": "Pizza at noon?"}
    )
    assert status == 202
    [received] = mail.wait_messages(1, user=BOB)
    assert received["subject"] == "Lunch plans"
    assert "Ann" in received["sender"]
    assert [m["id"] for m in mail.folder("sent")] == [sent["id"]]
    status, _ = mail.api(
        "POST",
        "/v1/messages",
        {"to": [ANN], "subject": "Re: Lunch plans", "body": "Yes!", "in_reply_to": received["id"]},
        user=BOB,
    )
    assert status == 202
    [answer] = mail.wait_messages(1, user=ANN)
    status, detail = mail.api("GET", f"/v1/messages/{answer['id']}")
    assert detail["body"].strip() == "Yes!"
    # ann's sent copy and the answer are one thread
    assert detail["thread"] == [sent["id"], answer["id"]]
    raw = mail.raw(answer["id"])
    assert f"In-Reply-To: {sent['message_id']}".encode() in raw
    for query, expected in [
        ("pizza", [sent["id"]]),
        ("lunch", [answer["id"], sent["id"]]),
        ("subject:re lunch", [answer["id"]]),
        ('"plans pizza"', []),
        ("lunch -yes", [sent["id"]]),
        ("from:bob@sdi.local", [answer["id"]]),
        ("piz* OR yes", [answer["id"], sent["id"]]),
    ]:
        status, found = mail.api("GET", "/v1/search?q=" + urllib.parse.quote(query))
        assert status == 200
        assert [m["id"] for m in found["messages"]] == expected, query
    assert mail.api("GET", "/v1/search?q=")[0] == 400
    assert mail.api("GET", "/v1/search?q=%28unclosed")[0] == 400


def test_send_refuses_header_injection_and_bad_input(mail: Mail) -> None:
    for body in [
        {"to": [BOB], "subject": "hi\r\nBcc: victim@far.example", "body": "x"},
        {"to": ["bob@sdi.local\r\nBcc: victim@far.example"], "subject": "hi"},
        {"to": ["not an address"], "subject": "hi"},
        {"to": [], "subject": "nobody"},
        {"to": ["ghost@sdi.local"], "subject": "no such user"},
        {"to": [BOB], "subject": 5},
        {"to": [BOB], "unknown": True},
    ]:
        status, answer = mail.api("POST", "/v1/messages", body)
        assert status == 400, body
        assert answer["error"]
    assert mail.api("POST", "/v1/messages", raw=b"{not json")[0] == 400
    assert mail.folder(user=BOB) == []
    assert mail.folder("sent") == []


def test_send_to_a_remote_domain_without_route_bounces(mail: Mail) -> None:
    status, sent = mail.api(
        "POST", "/v1/messages", {"to": ["x@nowhere.example"], "subject": "lost", "body": "b"}
    )
    assert status == 202
    assert len(sent["outgoing"]) == 1
    bounce = wait_for(mail.folder, what="the bounce")[0]
    assert bounce["subject"] == "Undelivered Mail Returned to Sender"
    assert b"no route" in mail.raw(bounce["id"])
