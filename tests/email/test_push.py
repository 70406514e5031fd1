"""WebSocket push: every session of a user gets the new-mail events, nobody else does."""

from __future__ import annotations

import asyncio
import json
import smtplib

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from sdi.testing.email import ANN, BOB, Mail


def test_two_sessions_of_one_user_both_get_new_mail(mail_on_each_loop: Mail) -> None:
    mail = mail_on_each_loop
    url = f"ws://127.0.0.1:{mail.ws}"

    async def scenario() -> None:
        header = {"Authorization": f"Bearer {mail.tokens[ANN]}"}
        async with (
            connect(url, additional_headers=header) as first,
            connect(url) as second,
            connect(url) as bobs,
        ):
            await second.send(json.dumps({"token": mail.tokens[ANN]}))
            await bobs.send(json.dumps({"token": mail.tokens[BOB]}))
            for session, user in [(first, ANN), (second, ANN), (bobs, BOB)]:
                ready = json.loads(await asyncio.wait_for(session.recv(), 10))
                assert ready == {"type": "ready", "user": user}

            def send() -> None:
                with smtplib.SMTP("127.0.0.1", mail.smtp) as client:
                    client.sendmail("x@far.example", [ANN], b"Subject: ping\r\n\r\nhello\r\n")

            await asyncio.to_thread(send)
            events = [json.loads(await asyncio.wait_for(s.recv(), 10)) for s in (first, second)]
            assert events[0] == events[1]
            assert events[0]["type"] == "new_mail"
            assert events[0]["subject"] == "ping"
            assert events[0]["folder"] == "inbox"
            status, message = await asyncio.to_thread(
                mail.api, "GET", f"/v1/messages/{events[0]['id']}"
            )
            assert (status, message["subject"]) == (200, "ping")
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(bobs.recv(), 0.5)

    asyncio.run(scenario())


def test_bad_token_is_closed_with_4401(mail: Mail) -> None:
    async def scenario() -> None:
        async with connect(f"ws://127.0.0.1:{mail.ws}") as session:
            await session.send(json.dumps({"token": "sdi_forged"}))
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(session.recv(), 10)
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 4401

    asyncio.run(scenario())
