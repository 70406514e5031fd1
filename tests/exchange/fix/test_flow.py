"""Two firms trade through the gateway and a real exchange; the ExecutionReports are checked."""

from __future__ import annotations

import numpy as np
from _fix_setup import T0, log_on, make_gateway

from sdi import exchange as ex
from sdi.exchange import fix


class Market:
    """The gateway, two logged-on sessions and the engine, wired the way a server would."""

    def __init__(self) -> None:
        self.gateway = make_gateway()
        self.engine = ex.Exchange(
            [ex.Symbol(tick_size=5, min_price=5, price_levels=1000)], accounts=3
        )
        self.engine.submit(
            ex.commands(
                kind=ex.Kind.DEPOSIT,
                account=[0, 1, 1],
                symbol=[ex.CASH, ex.CASH, 0],
                qty=[10_000, 10_000, 100],
            ),
            T0,
        )
        self.alpha, self.alpha_client = log_on(self.gateway, "ALPHA")
        self.beta, self.beta_client = log_on(self.gateway, "BETA")
        self.now = T0

    def send(self, session: fix.Session, data: bytes) -> dict[str, list[fix.Message]]:
        """Deliver ``data`` to ``session``, run its commands, return what each firm received."""
        self.now += 1_000_000
        step = session.receive(data, self.now)
        received: dict[str, list[fix.Message]] = {"ALPHA": [], "BETA": []}
        own = self.alpha_client if session is self.alpha else self.beta_client
        received["ALPHA" if session is self.alpha else "BETA"] += own.read(step.send)
        if len(step.commands):
            events = self.engine.submit(step.commands, self.now)
            for target, data_out in self.gateway.execution_reports(events, self.now).items():
                client = self.alpha_client if target is self.alpha else self.beta_client
                received[target.peer_comp_id] += client.read(data_out)
        return received


def order(
    client: fix.Client, cl_ord_id: str, side: int, qty: int, price: str, tif: str = "1"
) -> bytes:
    return client.message(
        b"D",
        [(11, cl_ord_id), (55, "ACME"), (54, side), (38, qty), (40, 2), (44, price), (59, tif)],
    )


def fields(message: fix.Message, *tags: int) -> tuple[bytes | None, ...]:
    """The values of ``tags``; 35 is the MsgType, which the parser keeps apart from the fields."""
    return tuple(message.msg_type if tag == 35 else message.get(tag) for tag in tags)


def test_fills_partial_fills_replace_cancel_reject_and_expiry() -> None:
    market = Market()
    alpha, beta = market.alpha_client, market.beta_client

    got = market.send(market.beta, order(beta, "s-1", 2, 30, "1.00"))
    [new] = got["BETA"]
    assert fields(new, 35, 150, 39, 11, 37, 151, 14) == (
        b"8",
        b"0",
        b"0",
        b"s-1",
        b"100",
        b"30",
        b"0",
    )
    assert got["ALPHA"] == []

    # ALPHA crosses: it trades at the maker's price, 1.00, not its own limit.
    got = market.send(market.alpha, order(alpha, "b-1", 1, 10, "1.05"))
    [accepted, fill] = got["ALPHA"]
    assert fields(accepted, 150, 39) == (b"0", b"0")
    assert fields(fill, 150, 39, 11, 32, 31, 151, 14, 6) == (
        b"F",
        b"2",
        b"b-1",
        b"10",
        b"1",
        b"0",
        b"10",
        b"1",
    )
    [partial] = got["BETA"]
    assert fields(partial, 150, 39, 11, 37, 32, 31, 151, 14, 6, 54) == (
        b"F",
        b"1",
        b"s-1",
        b"100",
        b"10",
        b"1",
        b"20",
        b"10",
        b"1",
        b"2",
    )
    assert fill[17] != partial[17]

    # BETA replaces: OrderQty 50 in total, of which 10 are filled, at 1.10.
    replace = beta.message(
        b"G", [(41, "s-1"), (11, "s-2"), (55, "ACME"), (54, 2), (38, 50), (40, 2), (44, "1.10")]
    )
    [replaced] = market.send(market.beta, replace)["BETA"]
    assert fields(replaced, 150, 39, 11, 41, 38, 44, 151, 14) == (
        b"5",
        b"1",
        b"s-2",
        b"s-1",
        b"50",
        b"1.1",
        b"40",
        b"10",
    )
    assert market.engine.order(100) == (1, 0, 1, 110, 40)

    # ALPHA buys 15 of it at 1.10, then another 5 at an average of 1.10.
    got = market.send(market.alpha, order(alpha, "b-2", 1, 15, "1.10"))
    assert [m[150] for m in got["ALPHA"]] == [b"0", b"F"]
    [beta_fill] = got["BETA"]
    assert fields(beta_fill, 11, 151, 14, 6) == (b"s-2", b"25", b"25", b"1.06")

    # BETA cancels what is left, naming the order by its latest ClOrdID.
    cancel = beta.message(b"F", [(41, "s-2"), (11, "s-3"), (55, "ACME"), (54, 2)])
    [cancelled] = market.send(market.beta, cancel)["BETA"]
    assert fields(cancelled, 150, 39, 11, 41, 151, 14) == (b"4", b"4", b"s-3", b"s-2", b"0", b"25")
    assert market.engine.order(100) is None

    # Cancelling it again: the gateway no longer knows the order.
    again = beta.message(b"F", [(41, "s-2"), (11, "s-4"), (55, "ACME"), (54, 2)])
    [cancel_reject] = market.send(market.beta, again)["BETA"]
    assert fields(cancel_reject, 35, 434, 102) == (b"9", b"1", b"1")

    # More than ALPHA's cash: the engine rejects, and says why.
    got = market.send(market.alpha, order(alpha, "b-3", 1, 100_000, "1.00"))
    [rejected] = got["ALPHA"]
    assert fields(rejected, 150, 39, 11, 103) == (b"8", b"8", b"b-3", b"99")
    assert rejected[58] == b"insufficient funds"

    # An IOC buy with nothing to meet it expires.
    got = market.send(market.alpha, order(alpha, "b-4", 1, 5, "0.50", tif="3"))
    assert [(m[150], m[39]) for m in got["ALPHA"]][-1] == (b"C", b"C")
    assert market.gateway.open_orders == 0


def test_a_cancel_that_loses_the_race_gets_too_late() -> None:
    market = Market()
    alpha, beta = market.alpha_client, market.beta_client
    market.send(market.beta, order(beta, "s-1", 2, 10, "1.00"))
    # ALPHA's buy and BETA's cancel reach the engine in one batch, buy first.
    buy = market.alpha.receive(order(alpha, "b-1", 1, 10, "1.00"), T0 + 10)
    cancel = market.beta.receive(
        beta.message(b"F", [(41, "s-1"), (11, "s-2"), (55, "ACME"), (54, 2)]), T0 + 10
    )
    events = market.engine.submit(np.concatenate([buy.commands, cancel.commands]), T0 + 10)
    out = market.gateway.execution_reports(events, T0 + 10)
    beta_reports = beta.read(out[market.beta])
    assert [(m.msg_type, m.get(39)) for m in beta_reports] == [(b"8", b"2"), (b"9", b"2")]
    assert fields(beta_reports[1], 11, 41, 434, 102) == (b"s-2", b"s-1", b"1", b"0")
    assert market.gateway.open_orders == 0


def test_execution_reports_are_numbered_in_the_session_sequence() -> None:
    market = Market()
    beta = market.beta_client
    got = market.send(market.beta, order(beta, "s-1", 2, 10, "1.00"))
    got_more = market.send(market.beta, order(beta, "s-2", 2, 10, "1.00"))
    seqs = [int(m[34]) for m in got["BETA"] + got_more["BETA"]]
    assert seqs == [2, 3]
