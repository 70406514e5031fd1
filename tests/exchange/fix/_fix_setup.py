"""Shared pieces of the FIX gateway tests: a gateway with two firms, and logging on."""

from __future__ import annotations

from decimal import Decimal

from sdi.exchange import fix

SECOND_NS = 1_000_000_000
# 2024-01-02 09:30:00 UTC: a plausible trading morning for the clock.
T0 = 1_704_187_800 * SECOND_NS


def make_gateway(rate: int = 1000) -> fix.Gateway:
    return fix.Gateway(
        "SDIX",
        instruments={
            "ACME": fix.Instrument(symbol_id=0, tick_size=5, price_unit=Decimal("0.01")),
        },
        peers={
            "ALPHA": fix.Peer(
                password="alpha-pw",
                account=0,
                accounts={"ALPHA-2": 2},
                messages_per_second_max=rate,
            ),
            "BETA": fix.Peer(password="beta-pw", account=1, messages_per_second_max=rate),
        },
        first_order_id=100,
    )


def log_on(
    gateway: fix.Gateway, name: str = "ALPHA", heartbeat_seconds: int = 30, now_ns: int = T0
) -> tuple[fix.Session, fix.Client]:
    session = gateway.connect()
    client = fix.Client(name, "SDIX")
    step = session.receive(
        client.logon(f"{name.lower()}-pw", heartbeat_seconds=heartbeat_seconds), now_ns
    )
    assert [m.msg_type for m in client.read(step.send)] == [b"A"]
    assert session.state is fix.SessionState.ACTIVE
    return session, client
