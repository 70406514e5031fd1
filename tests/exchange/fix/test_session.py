"""The sans-IO session: logon, timers, sequence numbers, rejects, rate limit, translation."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from _fix_setup import SECOND_NS, T0, make_gateway

from sdi.errors import Closed
from sdi.exchange import Kind, OrderType, Side, TimeInForce, fix

Pair = tuple[fix.Session, fix.Client]


def replies(client: fix.Client, step: fix.Step) -> list[fix.Message]:
    return client.read(step.send)


def order(client: fix.Client, cl_ord_id: str = "o-1", /, **fields: str | int | None) -> bytes:
    values: dict[int, str | int | None] = {11: cl_ord_id, 55: "ACME", 54: 1, 38: 10}
    values.update({40: 2, 44: "1.05"})
    values.update({int(tag.lstrip("t")): value for tag, value in fields.items()})
    return client.message(
        b"D", [(tag, value) for tag, value in values.items() if value is not None]
    )


@pytest.mark.parametrize("password", ["wrong", None])
def test_logon_with_a_bad_password_is_logged_out(
    gateway: fix.Gateway, password: str | None
) -> None:
    session = gateway.connect()
    client = fix.Client("ALPHA", "SDIX")
    step = session.receive(client.logon(password), T0)
    [logout] = replies(client, step)
    assert logout.msg_type == b"5"
    assert b"Password" in logout[58]
    assert step.close
    assert session.state is fix.SessionState.CLOSED
    with pytest.raises(Closed):
        session.receive(b"", T0)


def test_logon_from_an_unknown_firm_is_logged_out(gateway: fix.Gateway) -> None:
    client = fix.Client("GAMMA", "SDIX")
    step = gateway.connect().receive(client.logon("x"), T0)
    assert [m.msg_type for m in replies(client, step)] == [b"5"]
    assert step.close


def test_first_message_must_be_logon(gateway: fix.Gateway) -> None:
    client = fix.Client("ALPHA", "SDIX")
    step = gateway.connect().receive(client.message(b"0", []), T0)
    assert [m.msg_type for m in replies(client, step)] == [b"5"]
    assert step.close


def test_good_logon_replies_logon_with_the_heartbeat_interval(gateway: fix.Gateway) -> None:
    session = gateway.connect()
    client = fix.Client("ALPHA", "SDIX")
    step = session.receive(client.logon("alpha-pw", heartbeat_seconds=10), T0)
    [logon] = replies(client, step)
    assert logon.msg_type == b"A"
    assert logon[108] == b"10"
    assert (logon[49], logon[56], logon[34]) == (b"SDIX", b"ALPHA", b"1")
    assert step.notes == [fix.Note(fix.NoteKind.LOGGED_ON, "ALPHA")]
    assert session.next_inbound_seq == 2
    # A second connection for the same firm is refused while the first is up.
    second = gateway.connect().receive(fix.Client("ALPHA", "SDIX").logon("alpha-pw"), T0)
    assert second.close


def test_heartbeat_after_our_silence_and_test_request_after_theirs(
    gateway: fix.Gateway, login: Callable[..., Pair]
) -> None:
    session, client = login(gateway, heartbeat_seconds=10)
    assert session.deadline_ns() == T0 + 10 * SECOND_NS
    assert session.tick(T0 + 9 * SECOND_NS).send == b""
    step = session.tick(T0 + 10 * SECOND_NS)
    assert [m.msg_type for m in replies(client, step)] == [b"0"]
    # The peer has been silent for HeartBtInt plus 20%: a TestRequest.
    step = session.tick(T0 + 12 * SECOND_NS)
    [test_request] = replies(client, step)
    assert test_request.msg_type == b"1"
    test_req_id = test_request[112]
    # Still silent for another interval: logged out and closed.
    assert not session.tick(T0 + 23 * SECOND_NS).close
    step = session.tick(T0 + 24 * SECOND_NS)
    assert [m.msg_type for m in replies(client, step)] == [b"5"]
    assert step.close
    assert test_req_id == b"T1"


def test_an_answered_test_request_keeps_the_session(
    gateway: fix.Gateway, login: Callable[..., Pair]
) -> None:
    session, client = login(gateway, heartbeat_seconds=10)
    [test_request] = replies(client, session.tick(T0 + 12 * SECOND_NS))
    answer = client.message(b"0", [(112, test_request[112])])
    assert session.receive(answer, T0 + 13 * SECOND_NS).send == b""
    step = session.tick(T0 + 24 * SECOND_NS)
    assert not step.close
    assert [m.msg_type for m in replies(client, step)] == [b"0"]


def test_test_request_gets_a_heartbeat_with_its_id(alpha: Pair) -> None:
    session, client = alpha
    step = session.receive(client.message(b"1", [(112, "ping-7")]), T0)
    [heartbeat] = replies(client, step)
    assert (heartbeat.msg_type, heartbeat[112]) == (b"0", b"ping-7")


def test_a_sequence_gap_gets_a_resend_request_and_a_gap_fill_moves_on(alpha: Pair) -> None:
    session, client = alpha
    client.next_seq = 5  # 2, 3 and 4 were lost
    step = session.receive(order(client), T0)
    [resend] = replies(client, step)
    assert (resend.msg_type, resend[7], resend[16]) == (b"2", b"2", b"0")
    assert len(step.commands) == 0
    # Only one ResendRequest for the same gap.
    assert session.receive(client.message(b"0", []), T0).send == b""
    gap_fill = client.message(b"4", [(123, "Y"), (36, 7)], seq=2, header=[(43, "Y")])
    assert session.receive(gap_fill, T0).send == b""
    assert session.next_inbound_seq == 7
    client.next_seq = 7
    assert len(session.receive(order(client), T0).commands) == 1


def test_a_sequence_reset_cannot_go_backwards(alpha: Pair) -> None:
    session, client = alpha
    [reject] = replies(client, session.receive(client.message(b"4", [(36, 1)]), T0))
    assert (reject.msg_type, reject[371], reject[373]) == (b"3", b"36", b"5")


def test_too_low_a_sequence_number_is_logged_out(alpha: Pair) -> None:
    session, client = alpha
    session.receive(client.message(b"0", []), T0)
    step = session.receive(client.message(b"0", [], seq=2), T0)
    [logout] = replies(client, step)
    assert logout.msg_type == b"5"
    assert logout[58] == b"MsgSeqNum too low, expecting 3 but received 2"
    assert step.close


def test_too_low_with_poss_dup_is_ignored(alpha: Pair) -> None:
    session, client = alpha
    session.receive(client.message(b"0", []), T0)
    step = session.receive(client.message(b"0", [], seq=2, header=[(43, "Y")]), T0)
    assert step.send == b""
    assert not step.close


def test_garbled_messages_are_ignored_and_not_counted(alpha: Pair) -> None:
    session, client = alpha
    good = client.message(b"1", [(112, "a")])
    bad = good[:-4] + b"000\x01" if good[-4:-1] != b"000" else good[:-4] + b"001\x01"
    client.next_seq -= 1
    step = session.receive(bad + client.message(b"1", [(112, "b")]), T0)
    [heartbeat] = replies(client, step)
    assert heartbeat[112] == b"b"
    assert [note.kind for note in step.notes] == [fix.NoteKind.GARBLED]


def test_a_protocol_error_logs_out(alpha: Pair) -> None:
    session, client = alpha
    step = session.receive(b"8=FIX.4.2\x019=5\x01", T0)
    [logout] = replies(client, step)
    assert logout.msg_type == b"5"
    assert b"protocol error" in logout[58]
    assert step.close


@pytest.mark.parametrize("missing", [11, 55, 54, 38, 40, 44])
def test_a_missing_required_tag_gets_a_reject_naming_it(alpha: Pair, missing: int) -> None:
    session, client = alpha
    data = order(client, **{f"t{missing}": None})
    step = session.receive(data, T0)
    [reject] = replies(client, step)
    assert reject.msg_type == b"3"
    assert reject[45] == b"2"
    assert reject[371] == str(missing).encode()
    assert reject[372] == b"D"
    assert reject[373] == b"1"
    assert reject[58]
    assert len(step.commands) == 0
    # A rejected message still counts: the next one is in sequence.
    assert len(session.receive(order(client, "o-2"), T0).commands) == 1


@pytest.mark.parametrize(
    ("tag", "value", "reason"),
    [(54, "7", b"5"), (40, "3", b"5"), (59, "6", b"5"), (38, "ten", b"6"), (44, "1,05", b"6")],
)
def test_a_bad_value_gets_a_reject(alpha: Pair, tag: int, value: str, reason: bytes) -> None:
    session, client = alpha
    [reject] = replies(client, session.receive(order(client, **{f"t{tag}": value}), T0))
    assert (reject.msg_type, reject[371], reject[373]) == (b"3", str(tag).encode(), reason)


def test_unknown_msg_type_and_duplicate_tags_are_rejected(alpha: Pair) -> None:
    session, client = alpha
    [reject] = replies(client, session.receive(client.message(b"V", [(262, "x")]), T0))
    assert (reject[372], reject[373]) == (b"V", b"11")
    data = client.message(b"1", [(112, "a"), (112, "b")])
    [reject] = replies(client, session.receive(data, T0))
    assert (reject[371], reject[373]) == (b"112", b"13")


def test_rate_limit_rejects_past_the_bucket_and_refills(
    login: Callable[..., Pair],
) -> None:
    gateway = make_gateway(rate=3)
    session, client = login(gateway)
    step = session.receive(b"".join(order(client, f"o-{i}") for i in range(5)), T0)
    assert len(step.commands) == 3
    rejects = replies(client, step)
    assert [m.msg_type for m in rejects] == [b"j", b"j"]
    assert [m[379] for m in rejects] == [b"o-3", b"o-4"]
    assert rejects[0][380] == b"0"
    assert b"rate limit" in rejects[0][58]
    # A third of a second later one token is back, and only one.
    later = T0 + SECOND_NS // 3 + 1
    step = session.receive(order(client, "o-5") + order(client, "o-6"), later)
    assert len(step.commands) == 1
    assert [m.msg_type for m in replies(client, step)] == [b"j"]


def test_new_order_single_becomes_one_place_command(alpha: Pair) -> None:
    session, client = alpha
    step = session.receive(order(client, "a", t54=2, t38="25", t44="1.10", t59="3"), T0)
    [row] = step.commands
    assert int(row["kind"]) == Kind.PLACE
    assert int(row["side"]) == Side.SELL
    assert int(row["order_type"]) == OrderType.LIMIT
    assert int(row["time_in_force"]) == TimeInForce.IOC
    assert (int(row["symbol"]), int(row["account"])) == (0, 0)
    assert (int(row["order_id"]), int(row["price"]), int(row["qty"])) == (100, 110, 25)
    step = session.receive(order(client, "b", t40=1, t44=None, t1="ALPHA-2", t59="4"), T0)
    [row] = step.commands
    assert int(row["order_type"]) == OrderType.MARKET
    assert int(row["time_in_force"]) == TimeInForce.FOK
    assert (int(row["order_id"]), int(row["account"]), int(row["price"])) == (101, 2, 0)
    step = session.receive(order(client, "c", t40=1, t44=None), T0)
    assert int(step.commands[0]["time_in_force"]) == TimeInForce.IOC
    step = session.receive(order(client, "d", t59="0"), T0)
    assert int(step.commands[0]["time_in_force"]) == TimeInForce.GTC


@pytest.mark.parametrize(
    ("fields", "reason", "text"),
    [
        ({"t55": "NOPE"}, b"1", b"unknown symbol"),
        ({"t1": "BETA"}, b"15", b"account"),
        ({"t38": "10.5"}, b"13", b"whole number"),
        ({"t38": "0"}, b"13", b"whole number"),
        ({"t44": "1.07"}, b"99", b"tick"),
        ({"t44": "1.051"}, b"99", b"tick"),
    ],
)
def test_gateway_checks_reject_with_an_execution_report(
    alpha: Pair, fields: dict[str, str], reason: bytes, text: bytes
) -> None:
    session, client = alpha
    step = session.receive(order(client, **fields), T0)
    assert len(step.commands) == 0
    [report] = replies(client, step)
    assert (report.msg_type, report[150], report[39], report[103]) == (b"8", b"8", b"8", reason)
    assert text in report[58]


def test_duplicate_cl_ord_id_is_rejected(alpha: Pair) -> None:
    session, client = alpha
    assert len(session.receive(order(client, "same"), T0).commands) == 1
    step = session.receive(order(client, "same"), T0)
    assert len(step.commands) == 0
    [report] = replies(client, step)
    assert (report[39], report[103], report[11]) == (b"8", b"6", b"same")


def test_cancel_and_replace_become_commands_on_the_same_order(alpha: Pair) -> None:
    session, client = alpha
    session.receive(order(client, "o-1"), T0)
    cancel = client.message(b"F", [(41, "o-1"), (11, "c-1"), (55, "ACME"), (54, 1)])
    [row] = session.receive(cancel, T0).commands
    assert (int(row["kind"]), int(row["order_id"]), int(row["account"])) == (Kind.CANCEL, 100, 0)
    replace = client.message(
        b"G", [(41, "o-1"), (11, "r-1"), (55, "ACME"), (54, 1), (38, 40), (40, 2), (44, "1.20")]
    )
    [row] = session.receive(replace, T0).commands
    assert int(row["kind"]) == Kind.AMEND
    assert (int(row["order_id"]), int(row["price"]), int(row["qty"])) == (100, 120, 40)


def test_cancel_of_an_unknown_order_gets_a_cancel_reject(alpha: Pair) -> None:
    session, client = alpha
    cancel = client.message(b"F", [(41, "nope"), (11, "c-1"), (55, "ACME"), (54, 1)])
    step = session.receive(cancel, T0)
    assert len(step.commands) == 0
    [reject] = replies(client, step)
    assert (reject.msg_type, reject[434], reject[102], reject[41]) == (b"9", b"1", b"1", b"nope")


def test_peer_logout_is_answered_and_closes(alpha: Pair) -> None:
    session, client = alpha
    step = session.receive(client.message(b"5", []), T0)
    assert [m.msg_type for m in replies(client, step)] == [b"5"]
    assert step.close
    assert session.state is fix.SessionState.CLOSED


def test_resend_request_from_the_peer_gets_a_gap_fill(alpha: Pair) -> None:
    session, client = alpha
    step = session.receive(client.message(b"2", [(7, 1), (16, 0)]), T0)
    [gap_fill] = replies(client, step)
    assert gap_fill.msg_type == b"4"
    assert (gap_fill[34], gap_fill[43], gap_fill[123], gap_fill[36]) == (b"1", b"Y", b"Y", b"2")
