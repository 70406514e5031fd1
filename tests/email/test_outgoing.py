"""Outgoing delivery to other domains' servers: retries with back-off, bounces (DSN)."""

from __future__ import annotations

import email
from collections.abc import Callable
from pathlib import Path

from sdi.email.outgoing import RetryPolicy
from sdi.testing.email import ANN, Sink, start_mail, wait_for


def test_retry_after_4xx_then_delivered_and_5xx_bounces(
    tmp_path: Path, make_sink: Callable[..., Sink]
) -> None:
    flaky = make_sink(fail_first=2)
    refusing = make_sink(always_fail=True)
    mail = start_mail(
        tmp_path,
        routes={
            "flaky.example": f"127.0.0.1:{flaky.port}",
            "refusing.example": f"127.0.0.1:{refusing.port}",
        },
        retry=RetryPolicy(base_s=0.2, cap_s=1.0, max_attempts=5),
    )
    try:
        status, sent = mail.api(
            "POST",
            "/v1/messages",
            {"to": ["pat@flaky.example"], "subject": "eventually", "body": "b"},
        )
        assert status == 202
        status, _ = mail.api(
            "POST",
            "/v1/messages",
            {"to": ["sam@refusing.example"], "subject": "never", "body": "b"},
        )
        assert status == 202
        wait_for(lambda: flaky.received, 15, "delivery after the 4xx answers")
        [(mail_from, rcpts, data)] = flaky.received
        assert (mail_from, rcpts) == (ANN, ["pat@flaky.example"])
        assert data == mail.raw(sent["id"])  # the sent copy is what went out
        # Two 451s, then 250: three attempts, spaced by the growing back-off (0.2 s, 0.4 s).
        assert len(flaky.attempts) == 3
        gaps = [b - a for a, b in zip(flaky.attempts, flaky.attempts[1:], strict=False)]
        assert gaps[0] >= 0.15
        assert gaps[1] >= 0.3
        # The 5xx is final at once: a DSN in the sender's inbox, one attempt only.
        bounce = mail.wait_messages(1)[0]
        assert bounce["subject"] == "Undelivered Mail Returned to Sender"
        assert len(refusing.attempts) == 1
        report = email.message_from_bytes(mail.raw(bounce["id"]))
        assert report.get_content_type() == "multipart/report"
        assert report.get_param("report-type") == "delivery-status"
        _text, status_part, headers = report.get_payload()
        assert status_part.get_content_type() == "message/delivery-status"
        fields = status_part.as_string()
        assert "Final-Recipient: rfc822; sam@refusing.example" in fields
        assert "Action: failed" in fields
        assert "Status: 5.0.0" in fields
        assert "550" in fields
        assert "Subject: never" in headers.as_string()
        assert mail.folder() == [bounce]  # no bounce for the flaky one
    finally:
        mail.running.stop()


def test_4xx_until_max_attempts_bounces(tmp_path: Path, make_sink: Callable[..., Sink]) -> None:
    busy = make_sink(fail_first=100)
    mail = start_mail(
        tmp_path,
        routes={"busy.example": f"127.0.0.1:{busy.port}"},
        retry=RetryPolicy(base_s=0.05, cap_s=0.1, max_attempts=3),
    )
    try:
        mail.api("POST", "/v1/messages", {"to": ["x@busy.example"], "subject": "s", "body": "b"})
        bounce = mail.wait_messages(1)[0]
        assert len(busy.attempts) == 3
        assert b"Status: 4.4.7" in mail.raw(bounce["id"])
        assert busy.received == []
    finally:
        mail.running.stop()
