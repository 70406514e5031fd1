"""The stock exchange's FIX 4.4 gateway: codec, sans-IO sessions, and order translation.

Nothing here does I/O. The codec (compiled, ``sdi._fix``) frames bytes into
messages and encodes messages into bytes; a :class:`Session` takes the bytes
one connection received and a clock reading, and returns a :class:`Step`: the
bytes to send back, the exchange commands to submit, and notes on what
happened. :meth:`Gateway.execution_reports` turns engine events back into
ExecutionReports for the sessions that own the orders.
``docs/internals/fix.md`` describes the choices.

The codec, in any split of the stream:

>>> from sdi.exchange import fix
>>> wire = fix.encode(b"0", [(49, "SDIX"), (56, "ALPHA"), (34, 7), (52, "20240102-09:30:00.000")])
>>> wire
b'8=FIX.4.4\\x019=52\\x0135=0\\x0149=SDIX\\x0156=ALPHA\\x0134=7\\x0152=20240102-09:30:00.000\\x0110=094\\x01'
>>> parser = fix.FixParser()
>>> parser.parse(wire[:20]), parser.parse(wire[20:])
([], [Message('0', '49=SDIX|56=ALPHA|34=7|52=20240102-09:30:00.000')])
>>> message = parser.parse(wire)[0]
>>> message.msg_type, message.get(fix.Tag.MSG_SEQ_NUM), message.fields[0]
(b'0', b'7', (49, b'SDIX'))

A corrupted message is dropped and reported, and parsing goes on:

>>> bad = wire.replace(b"10=094", b"10=999")
>>> fix.FixParser().parse(bad + wire)
[Garbled('CheckSum 999 but the bytes sum to 094', offset=0), Message('0', ...)]

A session, logging on and sending an order (``now_ns`` is the caller's clock):

>>> from decimal import Decimal
>>> gateway = fix.Gateway(
...     "SDIX",
...     instruments={"ACME": fix.Instrument(symbol_id=0, price_unit=Decimal("0.01"))},
...     peers={"ALPHA": fix.Peer(password="s3cret", account=1)},
... )
>>> session = gateway.connect()
>>> client = fix.Client("ALPHA", "SDIX")
>>> step = session.receive(client.logon("s3cret", heartbeat_seconds=30), now_ns=0)
>>> [reply.msg_type for reply in client.read(step.send)], session.state.name
([b'A'], 'ACTIVE')
>>> order = client.message(
...     b"D", [(11, "o-1"), (55, "ACME"), (54, 1), (38, 10), (40, 2), (44, "101.25")]
... )
>>> step = session.receive(order, now_ns=1_000)
>>> row = step.commands[0]
>>> int(row["kind"]), int(row["side"]), int(row["price"]), int(row["qty"]), int(row["account"])
(1, 0, 10125, 10, 1)
"""

from __future__ import annotations

import enum
import hmac
import re
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

import numpy as np
import numpy.typing as npt

from sdi._fix import (
    BEGIN_STRING,
    BUFFER_BYTES_MAX,
    FIELDS_MAX,
    MESSAGE_BYTES_MAX,
    TAG_MAX,
    FixParser,
    Garbled,
    Message,
    encode,
    encode_many,
)
from sdi.errors import Closed, InvalidArgument, ProtocolError
from sdi.exchange import (
    COMMAND_DTYPE,
    EventKind,
    Kind,
    OrderType,
    Reason,
    Side,
    TimeInForce,
)

__all__ = [
    "BEGIN_STRING",
    "BUFFER_BYTES_MAX",
    "CL_ORD_IDS_MAX",
    "CL_ORD_ID_BYTES_MAX",
    "FIELDS_MAX",
    "HEARTBEAT_SECONDS_MAX",
    "MESSAGE_BYTES_MAX",
    "TAG_MAX",
    "Client",
    "FixParser",
    "Garbled",
    "Gateway",
    "Instrument",
    "Message",
    "MsgType",
    "Note",
    "NoteKind",
    "Peer",
    "Session",
    "SessionRejectReason",
    "SessionState",
    "Step",
    "Tag",
    "encode",
    "encode_many",
    "format_utc",
]

#: Longest ClOrdID (11) a session accepts, in bytes.
CL_ORD_ID_BYTES_MAX = 64
#: Most ClOrdIDs one session may use (they are remembered to refuse duplicates).
CL_ORD_IDS_MAX = 1 << 20
#: Longest HeartBtInt (108) a peer may ask for, in seconds.
HEARTBEAT_SECONDS_MAX = 3600

_NS_PER_SECOND = 1_000_000_000


class Tag(enum.IntEnum):
    """The FIX 4.4 tags this gateway reads or writes."""

    ACCOUNT = 1
    AVG_PX = 6
    BEGIN_SEQ_NO = 7
    BEGIN_STRING = 8
    BODY_LENGTH = 9
    CHECK_SUM = 10
    CL_ORD_ID = 11
    CUM_QTY = 14
    END_SEQ_NO = 16
    EXEC_ID = 17
    LAST_PX = 31
    LAST_QTY = 32
    MSG_SEQ_NUM = 34
    MSG_TYPE = 35
    NEW_SEQ_NO = 36
    ORDER_ID = 37
    ORDER_QTY = 38
    ORD_STATUS = 39
    ORD_TYPE = 40
    ORIG_CL_ORD_ID = 41
    POSS_DUP_FLAG = 43
    PRICE = 44
    REF_SEQ_NUM = 45
    SENDER_COMP_ID = 49
    SENDING_TIME = 52
    SIDE = 54
    SYMBOL = 55
    TARGET_COMP_ID = 56
    TEXT = 58
    TIME_IN_FORCE = 59
    TRANSACT_TIME = 60
    ENCRYPT_METHOD = 98
    CXL_REJ_REASON = 102
    ORD_REJ_REASON = 103
    HEART_BT_INT = 108
    TEST_REQ_ID = 112
    ORIG_SENDING_TIME = 122
    GAP_FILL_FLAG = 123
    EXEC_TYPE = 150
    LEAVES_QTY = 151
    REF_TAG_ID = 371
    REF_MSG_TYPE = 372
    SESSION_REJECT_REASON = 373
    BUSINESS_REJECT_REF_ID = 379
    BUSINESS_REJECT_REASON = 380
    CXL_REJ_RESPONSE_TO = 434
    PASSWORD = 554


class MsgType(bytes, enum.Enum):
    """The MsgType (35) values this gateway handles; members compare equal to their bytes."""

    HEARTBEAT = b"0"
    TEST_REQUEST = b"1"
    RESEND_REQUEST = b"2"
    REJECT = b"3"
    SEQUENCE_RESET = b"4"
    LOGOUT = b"5"
    EXECUTION_REPORT = b"8"
    ORDER_CANCEL_REJECT = b"9"
    LOGON = b"A"
    NEW_ORDER_SINGLE = b"D"
    ORDER_CANCEL_REQUEST = b"F"
    ORDER_CANCEL_REPLACE_REQUEST = b"G"
    BUSINESS_MESSAGE_REJECT = b"j"


class SessionRejectReason(enum.IntEnum):
    """SessionRejectReason (373) values, as FIX 4.4 numbers them."""

    INVALID_TAG_NUMBER = 0
    REQUIRED_TAG_MISSING = 1
    TAG_NOT_DEFINED_FOR_MESSAGE = 2
    UNDEFINED_TAG = 3
    TAG_WITHOUT_VALUE = 4
    VALUE_OUT_OF_RANGE = 5
    INCORRECT_DATA_FORMAT = 6
    COMP_ID_PROBLEM = 9
    INVALID_MSG_TYPE = 11
    TAG_APPEARS_MORE_THAN_ONCE = 13
    OTHER = 99


class SessionState(enum.Enum):
    AWAITING_LOGON = 1
    ACTIVE = 2
    CLOSED = 3


class NoteKind(enum.Enum):
    """What a :class:`Note` reports."""

    LOGGED_ON = 1
    CLOSED = 2
    GARBLED = 3
    SESSION_REJECT_SENT = 4
    BUSINESS_REJECT_SENT = 5
    RESEND_REQUESTED = 6
    REJECT_RECEIVED = 7


@dataclass(frozen=True)
class Note:
    """Something the operator may want to log: a logon, a close, a dropped message, a reject."""

    kind: NoteKind
    text: str


@dataclass
class Step:
    """What one call on a :class:`Session` produced.

    Write ``send`` to the peer, then submit ``commands`` (``COMMAND_DTYPE``)
    to the exchange; when ``close`` is true, close the connection after
    writing.
    """

    send: bytes
    commands: npt.NDArray[np.void]
    notes: list[Note]
    close: bool


@dataclass(frozen=True)
class Instrument:
    """How a FIX Symbol (55) maps onto the engine.

    ``price_unit`` is the value of one engine price unit as a FIX price
    (``Decimal("0.01")`` for cents); ``tick_size`` is the engine's tick in
    price units. A FIX price must be a whole number of ticks.
    """

    symbol_id: int
    tick_size: int = 1
    price_unit: Decimal = Decimal(1)


@dataclass(frozen=True)
class Peer:
    """One counterparty: its Logon password, its default account, the named accounts it may use.

    Orders without Account (1) trade ``account``; an Account value must be a
    key of ``accounts``. ``messages_per_second_max`` is the token bucket for
    application messages (NewOrderSingle, cancel, replace): that many per
    second, with a burst of the same size.
    """

    password: str
    account: int
    accounts: Mapping[str, int] = field(default_factory=dict)
    messages_per_second_max: int = 100


class _RefuseError(Exception):
    """A well-framed message that breaks a rule: answered with a session Reject (3)."""

    def __init__(self, reason: SessionRejectReason, tag: int | None, text: str) -> None:
        super().__init__(text)
        self.reason = reason
        self.tag = tag
        self.text = text


class _OrdStatus(enum.Enum):
    PENDING_NEW = b"A"
    NEW = b"0"
    PARTIALLY_FILLED = b"1"
    FILLED = b"2"
    CANCELED = b"4"
    REJECTED = b"8"
    EXPIRED = b"C"


_DONE = (_OrdStatus.FILLED, _OrdStatus.CANCELED, _OrdStatus.REJECTED, _OrdStatus.EXPIRED)


@dataclass
class _Request:
    """A cancel or replace waiting for its engine event."""

    kind: Kind
    cl_ord_id: str
    price_units: int = 0


@dataclass
class _Order:
    """What a session knows about one of its orders."""

    order_id: int
    cl_ord_id: str
    cl_ord_ids: list[str]
    symbol: str
    instrument: Instrument
    account: str | None
    side: Side
    order_type: OrderType
    order_qty: int
    price_units: int
    status: _OrdStatus = _OrdStatus.PENDING_NEW
    cum_qty: int = 0
    notional_units: int = 0
    leaves_qty: int = 0
    pending: deque[_Request] = field(default_factory=deque)


_NUMBER = re.compile(rb"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
_POSITIVE_INT = re.compile(rb"[1-9][0-9]{0,17}|0")

# FIX OrdRejReason (103) for each engine reason; 99 (other) for the rest.
_ORD_REJ_REASON = {
    Reason.UNKNOWN_SYMBOL: 1,
    Reason.UNKNOWN_ORDER: 5,
    Reason.DUPLICATE_ORDER_ID: 6,
    Reason.QUANTITY_OVER_LIMIT: 3,
    Reason.DAILY_NOTIONAL_OVER_LIMIT: 3,
    Reason.INVALID_QUANTITY: 13,
    Reason.UNKNOWN_ACCOUNT: 15,
}
_ORD_REJ_OTHER = 99
_ORD_REJ_UNKNOWN_SYMBOL = 1
_ORD_REJ_DUPLICATE = 6
_ORD_REJ_INCORRECT_QUANTITY = 13
_ORD_REJ_UNKNOWN_ACCOUNT = 15
# CxlRejReason (102).
_CXL_REJ_TOO_LATE = 0
_CXL_REJ_UNKNOWN_ORDER = 1
_CXL_REJ_DUPLICATE_CL_ORD_ID = 6
_CXL_REJ_OTHER = 99
# BusinessRejectReason (380): FIX 4.4 defines 0 as "Other"; it has no 99.
_BUSINESS_REJECT_OTHER = 0


def format_utc(now_ns: int) -> str:
    """A UTCTimestamp with milliseconds, as SendingTime (52) and TransactTime (60) carry.

    >>> format_utc(1_704_187_800_123_456_789)
    '20240102-09:30:00.123'
    """
    seconds, rest = divmod(now_ns, _NS_PER_SECOND)
    return time.strftime("%Y%m%d-%H:%M:%S", time.gmtime(seconds)) + f".{rest // 1_000_000:03d}"


def _decimal_text(value: Decimal) -> str:
    """A decimal without exponent or trailing zeros (``Decimal("100.50")`` -> ``"100.5"``)."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


def _reason_text(reason: int) -> str:
    try:
        name = Reason(reason).name
    except ValueError:
        return f"engine reason {reason}"
    return name.lower().replace("_", " ")


class Gateway:
    """The acceptor: symbol and peer tables, the engine order ids, and who owns which order.

    ``first_order_id`` starts the counter the gateway assigns engine order ids
    from (they must not collide with ids other gateways give the same engine).
    """

    def __init__(
        self,
        comp_id: str,
        *,
        instruments: Mapping[str, Instrument],
        peers: Mapping[str, Peer],
        first_order_id: int = 1,
    ) -> None:
        if not comp_id or not comp_id.isascii() or "\x01" in comp_id:
            raise InvalidArgument(f"comp_id must be non-empty ASCII without SOH, got {comp_id!r}")
        for name, peer in peers.items():
            if peer.messages_per_second_max < 1:
                raise InvalidArgument(f"peer {name!r}: messages_per_second_max must be >= 1")
        if first_order_id < 1:
            raise InvalidArgument(f"first_order_id must be >= 1, got {first_order_id}")
        self.comp_id = comp_id
        self.instruments = dict(instruments)
        self.peers = dict(peers)
        self._next_order_id = first_order_id
        self._next_exec_id = 1
        self._owners: dict[int, tuple[Session, _Order]] = {}
        self._active: dict[str, Session] = {}

    def connect(self) -> Session:
        """A session for a new connection; it expects a Logon first."""
        return Session(self)

    @property
    def open_orders(self) -> int:
        """Orders still tracked (live, or waiting for the answer to a cancel or replace)."""
        return len(self._owners)

    def _allocate(self, session: Session, order: _Order) -> None:
        self._owners[order.order_id] = (session, order)

    def _order_id(self) -> int:
        order_id = self._next_order_id
        self._next_order_id += 1
        return order_id

    def _exec_id(self) -> str:
        exec_id = f"G{self._next_exec_id}"
        self._next_exec_id += 1
        return exec_id

    def _forget(self, order: _Order) -> None:
        if order.status in _DONE and not order.pending:
            self._owners.pop(order.order_id, None)

    def execution_reports(self, events: npt.NDArray[np.void], now_ns: int) -> dict[Session, bytes]:
        """ExecutionReports (and cancel rejects) for engine events, per session, ready to send.

        A trade concerns two orders, maybe of two sessions: each owner gets
        its own side. Events for orders no session of this gateway placed
        (deposits, book deltas, other gateways' orders) are skipped.
        """
        out: dict[Session, list[tuple[bytes, list[tuple[int, bytes | str | int]]]]] = {}
        for event in events:
            kind = int(event["kind"])
            sides = [(int(event["order_id"]), False)]
            if kind == EventKind.TRADE:
                sides.append((int(event["maker_order_id"]), True))
            elif kind not in (
                EventKind.ACCEPTED,
                EventKind.REJECTED,
                EventKind.CANCELLED,
                EventKind.EXPIRED,
                EventKind.AMENDED,
            ):
                continue
            for order_id, maker in sides:
                owner = self._owners.get(order_id)
                if owner is None:
                    continue
                session, order = owner
                report = session._render(order, event, maker=maker, now_ns=now_ns)
                self._forget(order)
                if report is not None and session.state is SessionState.ACTIVE:
                    out.setdefault(session, []).append(report)
        return {session: session._encode(reports, now_ns) for session, reports in out.items()}


class Session:
    """One FIX connection, acceptor side, sans-IO: bytes and a clock in, a :class:`Step` out.

    Call :meth:`receive` with what the connection read and :meth:`tick` when
    :meth:`deadline_ns` passes; both return what to send and what to submit.
    """

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway
        self._parser = FixParser()
        self.state = SessionState.AWAITING_LOGON
        self.peer_comp_id = ""
        self._peer: Peer | None = None
        self._next_out = 1
        self._next_in = 1
        self._heartbeat_ns = 0
        self._last_sent_ns = 0
        self._last_received_ns = 0
        self._test_request_sent_ns: int | None = None
        self._test_requests = 0
        self._resend_open = False
        # Token bucket as a theoretical arrival time, scaled by the rate so
        # that the arithmetic stays in integers (one message costs 1e9 units).
        self._bucket_units = 0
        self._orders: dict[str, _Order] = {}
        self._seen_cl_ord_ids: set[str] = set()
        # What the current call produced.
        self._outbox: list[tuple[bytes, list[tuple[int, bytes | str | int]]]] = []
        self._commands: list[tuple[int, ...]] = []
        self._notes: list[Note] = []
        self._close = False

    # -- the sans-IO surface -------------------------------------------------

    @property
    def next_inbound_seq(self) -> int:
        """The MsgSeqNum expected from the peer next."""
        return self._next_in

    @property
    def next_outbound_seq(self) -> int:
        """The MsgSeqNum this side sends next."""
        return self._next_out

    def receive(self, data: bytes, now_ns: int) -> Step:
        """Handle bytes read from the connection (any split) at time ``now_ns``."""
        self._check_open()
        try:
            items = self._parser.parse(data)
        except ProtocolError as error:
            items = []
            self._protocol_error(str(error))
        for item in items:
            if self.state is SessionState.CLOSED:
                break
            if isinstance(item, Garbled):
                # FIX: a garbled message is ignored, and not counted.
                self._notes.append(Note(NoteKind.GARBLED, item.reason))
                continue
            self._last_received_ns = now_ns
            self._test_request_sent_ns = None
            self._handle(item, now_ns)
        if self.state is not SessionState.CLOSED and self._parser.error is not None:
            self._protocol_error(self._parser.error)
        return self._step(now_ns)

    def tick(self, now_ns: int) -> Step:
        """Run the timers: our Heartbeat, a TestRequest to a silent peer, the disconnect."""
        self._check_open()
        if self.state is SessionState.ACTIVE:
            grace = self._heartbeat_ns + self._heartbeat_ns // 5
            if self._test_request_sent_ns is not None:
                if now_ns - self._test_request_sent_ns >= grace:
                    self._logout(
                        f"no answer to TestRequest within {grace / _NS_PER_SECOND:g} seconds"
                    )
            elif now_ns - self._last_received_ns >= grace:
                self._test_requests += 1
                self._queue(MsgType.TEST_REQUEST, [(Tag.TEST_REQ_ID, f"T{self._test_requests}")])
                self._test_request_sent_ns = now_ns
            if (
                not self._close
                and not self._outbox
                and (now_ns - self._last_sent_ns >= self._heartbeat_ns)
            ):
                self._queue(MsgType.HEARTBEAT, [])
        return self._step(now_ns)

    def disconnected(self) -> list[Note]:
        """The connection is gone (EOF, reset, closed by us): end the session so
        that its firm may log on again. Safe to call more than once."""
        if self.state is not SessionState.CLOSED:
            self._closed("the connection was lost without a Logout")
        notes, self._notes = self._notes, []
        return notes

    def deadline_ns(self) -> int | None:
        """When :meth:`tick` next has work to do (None before logon and after close)."""
        if self.state is not SessionState.ACTIVE:
            return None
        grace = self._heartbeat_ns + self._heartbeat_ns // 5
        peer = (
            self._last_received_ns + grace
            if self._test_request_sent_ns is None
            else self._test_request_sent_ns + grace
        )
        return min(self._last_sent_ns + self._heartbeat_ns, peer)

    # -- plumbing ----------------------------------------------------------------

    def _check_open(self) -> None:
        if self.state is SessionState.CLOSED:
            raise Closed("the FIX session is closed; the peer must connect and log on again")

    def _step(self, now_ns: int) -> Step:
        send = self._encode(self._outbox, now_ns) if self._outbox else b""
        commands = np.array(self._commands, dtype=COMMAND_DTYPE)
        step = Step(send=send, commands=commands, notes=self._notes, close=self._close)
        self._outbox = []
        self._commands = []
        self._notes = []
        return step

    def _encode(
        self,
        messages: list[tuple[bytes, list[tuple[int, bytes | str | int]]]],
        now_ns: int,
    ) -> bytes:
        """Add the standard header (49, 56, 34, 52) and encode, in one buffer."""
        sending_time = format_utc(now_ns)
        framed = []
        for msg_type, fields in messages:
            header: list[tuple[int, bytes | str | int]] = [
                (Tag.SENDER_COMP_ID, self._gateway.comp_id),
                (Tag.TARGET_COMP_ID, self.peer_comp_id or "UNKNOWN"),
            ]
            body = fields
            if fields and fields[0][0] == Tag.MSG_SEQ_NUM:
                # A gap fill carries its own MsgSeqNum (and PossDupFlag after it).
                header += [fields[0], (Tag.SENDING_TIME, sending_time)]
                body = fields[1:]
            else:
                header += [(Tag.MSG_SEQ_NUM, self._next_out), (Tag.SENDING_TIME, sending_time)]
                self._next_out += 1
            framed.append((msg_type, header + body))
        self._last_sent_ns = now_ns
        return encode_many(framed)

    def _queue(self, msg_type: bytes, fields: list[tuple[int, bytes | str | int]]) -> None:
        self._outbox.append((msg_type, fields))

    def _logout(self, text: str) -> None:
        """Send Logout with ``text`` and close: the peer broke a session rule."""
        self._queue(MsgType.LOGOUT, [(Tag.TEXT, text[:200])])
        self._closed(text)

    def _closed(self, text: str) -> None:
        self.state = SessionState.CLOSED
        self._close = True
        self._notes.append(Note(NoteKind.CLOSED, text))
        if self._gateway._active.get(self.peer_comp_id) is self:
            del self._gateway._active[self.peer_comp_id]

    def _protocol_error(self, text: str) -> None:
        self._logout(f"protocol error: {text}")

    def _reject(self, message: Message, seq: int, refusal: _RefuseError) -> None:
        fields: list[tuple[int, bytes | str | int]] = [(Tag.REF_SEQ_NUM, seq)]
        if refusal.tag is not None:
            fields.append((Tag.REF_TAG_ID, refusal.tag))
        fields += [
            (Tag.REF_MSG_TYPE, message.msg_type),
            (Tag.SESSION_REJECT_REASON, int(refusal.reason)),
            (Tag.TEXT, refusal.text[:200]),
        ]
        self._queue(MsgType.REJECT, fields)
        self._notes.append(Note(NoteKind.SESSION_REJECT_SENT, refusal.text))

    def _business_reject(self, message: Message, seq: int, text: str) -> None:
        fields: list[tuple[int, bytes | str | int]] = [
            (Tag.REF_SEQ_NUM, seq),
            (Tag.REF_MSG_TYPE, message.msg_type),
        ]
        cl_ord_id = message.get(Tag.CL_ORD_ID)
        if cl_ord_id is not None:
            fields.append((Tag.BUSINESS_REJECT_REF_ID, cl_ord_id))
        fields += [(Tag.BUSINESS_REJECT_REASON, _BUSINESS_REJECT_OTHER), (Tag.TEXT, text)]
        self._queue(MsgType.BUSINESS_MESSAGE_REJECT, fields)
        self._notes.append(Note(NoteKind.BUSINESS_REJECT_SENT, text))

    # -- session level -------------------------------------------------------------

    def _handle(self, message: Message, now_ns: int) -> None:
        if self.state is SessionState.AWAITING_LOGON:
            if message.msg_type != MsgType.LOGON:
                self._logout("the first message must be a Logon (35=A)")
                return
            self._logon(message, now_ns)
            return
        seq = _seq_num(message)
        if seq is None:
            self._logout("MsgSeqNum (34) is missing or not a positive integer")
            return
        if (
            message.get(Tag.SENDER_COMP_ID) != self.peer_comp_id.encode()
            or message.get(Tag.TARGET_COMP_ID) != self._gateway.comp_id.encode()
        ):
            self._reject(
                message,
                seq,
                _RefuseError(SessionRejectReason.COMP_ID_PROBLEM, None, "CompID problem"),
            )
            self._logout("SenderCompID or TargetCompID does not match the session")
            return
        msg_type = message.msg_type
        if msg_type == MsgType.SEQUENCE_RESET:
            self._sequence_reset(message, seq)
            return
        if msg_type == MsgType.LOGOUT:
            self._queue(MsgType.LOGOUT, [])
            self._closed("the peer logged out")
            return
        if seq > self._next_in:
            if not self._resend_open:
                self._queue(
                    MsgType.RESEND_REQUEST, [(Tag.BEGIN_SEQ_NO, self._next_in), (Tag.END_SEQ_NO, 0)]
                )
                self._resend_open = True
                self._notes.append(
                    Note(NoteKind.RESEND_REQUESTED, f"expected {self._next_in}, received {seq}")
                )
            return
        if seq < self._next_in:
            if message.get(Tag.POSS_DUP_FLAG) == b"Y":
                return
            self._logout(f"MsgSeqNum too low, expecting {self._next_in} but received {seq}")
            return
        self._next_in += 1
        self._resend_open = False
        try:
            self._dispatch(message, seq, now_ns)
        except _RefuseError as refusal:
            self._reject(message, seq, refusal)

    def _logon(self, message: Message, now_ns: int) -> None:
        sender = message.get(Tag.SENDER_COMP_ID)
        text = sender.decode("ascii", "replace") if sender else ""
        peer = self._gateway.peers.get(text)
        self.peer_comp_id = text
        if peer is None:
            self.peer_comp_id = ""
            self._logout(f"unknown SenderCompID {text!r}")
            return
        if message.get(Tag.TARGET_COMP_ID) != self._gateway.comp_id.encode():
            self._logout(f"TargetCompID must be {self._gateway.comp_id!r}")
            return
        password = message.get(Tag.PASSWORD)
        if password is None or not hmac.compare_digest(password, peer.password.encode()):
            self._logout("Password (554) is missing or wrong")
            return
        seq = _seq_num(message)
        if seq is None:
            self._logout("MsgSeqNum (34) is missing or not a positive integer")
            return
        if message.get(Tag.ENCRYPT_METHOD) != b"0":
            self._logout("EncryptMethod (98) must be 0 (none)")
            return
        interval = message.get(Tag.HEART_BT_INT, b"")
        if not _POSITIVE_INT.fullmatch(interval) or not 1 <= int(interval) <= HEARTBEAT_SECONDS_MAX:
            self._logout(f"HeartBtInt (108) must be from 1 to {HEARTBEAT_SECONDS_MAX} seconds")
            return
        if text in self._gateway._active:
            self._logout(f"{text!r} is already logged on in another session")
            return
        self._gateway._active[text] = self
        self._peer = peer
        self.state = SessionState.ACTIVE
        self._heartbeat_ns = int(interval) * _NS_PER_SECOND
        self._last_received_ns = now_ns
        self._queue(MsgType.LOGON, [(Tag.ENCRYPT_METHOD, 0), (Tag.HEART_BT_INT, int(interval))])
        self._notes.append(Note(NoteKind.LOGGED_ON, text))
        if seq > self._next_in:
            self._queue(
                MsgType.RESEND_REQUEST, [(Tag.BEGIN_SEQ_NO, self._next_in), (Tag.END_SEQ_NO, 0)]
            )
            self._resend_open = True
            self._notes.append(
                Note(NoteKind.RESEND_REQUESTED, f"expected {self._next_in}, received {seq}")
            )
        else:
            self._next_in = seq + 1

    def _sequence_reset(self, message: Message, seq: int) -> None:
        """SequenceReset: a gap fill (123=Y) obeys MsgSeqNum rules; a reset ignores them."""
        gap_fill = message.get(Tag.GAP_FILL_FLAG) == b"Y"
        if gap_fill and seq < self._next_in:
            if message.get(Tag.POSS_DUP_FLAG) != b"Y":
                self._logout(f"MsgSeqNum too low, expecting {self._next_in} but received {seq}")
            return
        new_seq = message.get(Tag.NEW_SEQ_NO, b"")
        if not _POSITIVE_INT.fullmatch(new_seq) or int(new_seq) < max(self._next_in, 1):
            if gap_fill and seq == self._next_in:
                self._next_in += 1
            self._reject(
                message,
                seq,
                _RefuseError(
                    SessionRejectReason.VALUE_OUT_OF_RANGE,
                    Tag.NEW_SEQ_NO,
                    f"NewSeqNo (36) must be at least {self._next_in}",
                ),
            )
            return
        # A gap fill that arrives ahead of the expected number is taken as it
        # stands: it moves the session on instead of asking again.
        self._next_in = int(new_seq)
        self._resend_open = False

    def _dispatch(self, message: Message, seq: int, now_ns: int) -> None:
        if message.duplicate_tag:
            raise _RefuseError(
                SessionRejectReason.TAG_APPEARS_MORE_THAN_ONCE,
                message.duplicate_tag,
                f"tag {message.duplicate_tag} appears more than once",
            )
        _required(message, Tag.SENDING_TIME)
        msg_type = message.msg_type
        if msg_type == MsgType.HEARTBEAT:
            return
        if msg_type == MsgType.TEST_REQUEST:
            self._queue(MsgType.HEARTBEAT, [(Tag.TEST_REQ_ID, _required(message, Tag.TEST_REQ_ID))])
            return
        if msg_type == MsgType.RESEND_REQUEST:
            begin = _int_field(message, Tag.BEGIN_SEQ_NO)
            _int_field(message, Tag.END_SEQ_NO)
            if begin < self._next_out:
                # Sent messages are not kept: the gap is filled, never replayed
                # (a stale ExecutionReport resent later would mislead more than help).
                self._queue(
                    MsgType.SEQUENCE_RESET,
                    [
                        (Tag.MSG_SEQ_NUM, max(begin, 1)),
                        (Tag.POSS_DUP_FLAG, b"Y"),
                        (Tag.ORIG_SENDING_TIME, format_utc(now_ns)),
                        (Tag.GAP_FILL_FLAG, b"Y"),
                        (Tag.NEW_SEQ_NO, self._next_out),
                    ],
                )
            return
        if msg_type == MsgType.REJECT:
            text = message.get(Tag.TEXT, b"").decode("ascii", "replace")
            self._notes.append(Note(NoteKind.REJECT_RECEIVED, text))
            return
        if msg_type == MsgType.LOGON:
            raise _RefuseError(SessionRejectReason.OTHER, None, "the session is already logged on")
        handler = {
            MsgType.NEW_ORDER_SINGLE.value: self._new_order,
            MsgType.ORDER_CANCEL_REQUEST.value: self._cancel,
            MsgType.ORDER_CANCEL_REPLACE_REQUEST.value: self._replace,
        }.get(msg_type)
        if handler is None:
            raise _RefuseError(
                SessionRejectReason.INVALID_MSG_TYPE,
                Tag.MSG_TYPE,
                f"MsgType {msg_type.decode('ascii', 'replace')!r} is not supported",
            )
        if not self._take_token(now_ns):
            assert self._peer is not None
            self._business_reject(
                message,
                seq,
                f"rate limit: at most {self._peer.messages_per_second_max} orders, cancels "
                "and replaces per second",
            )
            return
        if len(self._seen_cl_ord_ids) >= CL_ORD_IDS_MAX:
            self._business_reject(
                message, seq, f"this session has used CL_ORD_IDS_MAX={CL_ORD_IDS_MAX} ClOrdIDs"
            )
            return
        handler(message, now_ns)

    def _take_token(self, now_ns: int) -> bool:
        assert self._peer is not None
        rate = self._peer.messages_per_second_max
        now_units = now_ns * rate
        arrival = max(self._bucket_units, now_units)
        if arrival + _NS_PER_SECOND - now_units > rate * _NS_PER_SECOND:
            return False
        self._bucket_units = arrival + _NS_PER_SECOND
        return True

    # -- application messages in ------------------------------------------------------

    def _new_order(self, message: Message, now_ns: int) -> None:
        assert self._peer is not None
        cl_ord_id = _cl_ord_id(message, Tag.CL_ORD_ID)
        symbol = _text(message, Tag.SYMBOL)
        side = _side(message)
        quantity = _number(message, Tag.ORDER_QTY)
        order_type = _ord_type(message)
        price = _number(message, Tag.PRICE) if order_type is OrderType.LIMIT else None
        time_in_force = _time_in_force(message, order_type)
        account_name = _optional_text(message, Tag.ACCOUNT)

        def refuse(reason: int, text: str) -> None:
            self._queue(
                MsgType.EXECUTION_REPORT,
                [
                    (Tag.ORDER_ID, "NONE"),
                    (Tag.CL_ORD_ID, cl_ord_id),
                    (Tag.EXEC_ID, self._gateway._exec_id()),
                    (Tag.EXEC_TYPE, b"8"),
                    (Tag.ORD_STATUS, b"8"),
                    (Tag.SYMBOL, symbol),
                    (Tag.SIDE, b"1" if side is Side.BUY else b"2"),
                    (Tag.LEAVES_QTY, 0),
                    (Tag.CUM_QTY, 0),
                    (Tag.AVG_PX, 0),
                    (Tag.ORD_REJ_REASON, reason),
                    (Tag.TEXT, text),
                    (Tag.TRANSACT_TIME, format_utc(now_ns)),
                ],
            )

        if cl_ord_id in self._seen_cl_ord_ids:
            refuse(_ORD_REJ_DUPLICATE, f"duplicate ClOrdID {cl_ord_id!r} in this session")
            return
        self._seen_cl_ord_ids.add(cl_ord_id)
        instrument = self._gateway.instruments.get(symbol)
        if instrument is None:
            refuse(_ORD_REJ_UNKNOWN_SYMBOL, f"unknown symbol {symbol!r}")
            return
        account = self._account(account_name)
        if account is None:
            refuse(_ORD_REJ_UNKNOWN_ACCOUNT, f"account {account_name!r} is not this firm's")
            return
        qty = _lots(quantity)
        if qty is None:
            refuse(_ORD_REJ_INCORRECT_QUANTITY, "OrderQty must be a positive whole number of lots")
            return
        price_units = 0
        if price is not None:
            units = _price_units(price, instrument)
            if units is None:
                refuse(
                    _ORD_REJ_OTHER,
                    f"price {price} is not a positive multiple of the tick "
                    f"{_decimal_text(instrument.price_unit * instrument.tick_size)}",
                )
                return
            price_units = units
        order = _Order(
            order_id=self._gateway._order_id(),
            cl_ord_id=cl_ord_id,
            cl_ord_ids=[cl_ord_id],
            symbol=symbol,
            instrument=instrument,
            account=account_name,
            side=side,
            order_type=order_type,
            order_qty=qty,
            price_units=price_units,
            leaves_qty=qty,
        )
        self._orders[cl_ord_id] = order
        self._gateway._allocate(self, order)
        self._command(Kind.PLACE, order, account, price_units, qty, time_in_force)

    def _account(self, name: str | None) -> int | None:
        assert self._peer is not None
        if name is None:
            return self._peer.account
        return self._peer.accounts.get(name)

    def _command(
        self,
        kind: Kind,
        order: _Order,
        account: int,
        price_units: int,
        qty: int,
        time_in_force: TimeInForce = TimeInForce.GTC,
    ) -> None:
        self._commands.append(
            (
                int(kind),
                int(order.side),
                int(order.order_type),
                int(time_in_force),
                order.instrument.symbol_id,
                account,
                0,
                order.order_id,
                price_units,
                qty,
                0,
            )
        )

    def _cancel_target(
        self, message: Message, response_to: int, now_ns: int
    ) -> tuple[str, _Order] | None:
        """The order a cancel or replace names, or None after sending OrderCancelReject."""
        orig = _cl_ord_id(message, Tag.ORIG_CL_ORD_ID)
        cl_ord_id = _cl_ord_id(message, Tag.CL_ORD_ID)
        symbol = _text(message, Tag.SYMBOL)
        side = _side(message)
        order = self._orders.get(orig)
        problem: tuple[int, str] | None = None
        if cl_ord_id in self._seen_cl_ord_ids:
            problem = (_CXL_REJ_DUPLICATE_CL_ORD_ID, f"duplicate ClOrdID {cl_ord_id!r}")
        elif order is None:
            problem = (_CXL_REJ_UNKNOWN_ORDER, f"no open order with ClOrdID {orig!r}")
        elif order.symbol != symbol or order.side is not side:
            problem = (_CXL_REJ_OTHER, "Symbol or Side does not match the order")
        if problem is None:
            assert order is not None
            self._seen_cl_ord_ids.add(cl_ord_id)
            return cl_ord_id, order
        self._seen_cl_ord_ids.add(cl_ord_id)
        self._cancel_reject(order, cl_ord_id, orig, response_to, problem[0], problem[1], now_ns)
        return None

    def _cancel_reject(
        self,
        order: _Order | None,
        cl_ord_id: str,
        orig: str,
        response_to: int,
        reason: int,
        text: str,
        now_ns: int,
    ) -> None:
        self._queue(
            MsgType.ORDER_CANCEL_REJECT,
            [
                (Tag.ORDER_ID, str(order.order_id) if order is not None else "NONE"),
                (Tag.CL_ORD_ID, cl_ord_id),
                (Tag.ORIG_CL_ORD_ID, orig),
                (Tag.ORD_STATUS, order.status.value if order is not None else b"8"),
                (Tag.TRANSACT_TIME, format_utc(now_ns)),
                (Tag.CXL_REJ_RESPONSE_TO, response_to),
                (Tag.CXL_REJ_REASON, reason),
                (Tag.TEXT, text),
            ],
        )

    def _cancel(self, message: Message, now_ns: int) -> None:
        target = self._cancel_target(message, 1, now_ns)
        if target is None:
            return
        cl_ord_id, order = target
        order.pending.append(_Request(Kind.CANCEL, cl_ord_id))
        self._command(Kind.CANCEL, order, self._account_of(order), 0, 0)

    def _replace(self, message: Message, now_ns: int) -> None:
        quantity = _number(message, Tag.ORDER_QTY)
        order_type = _ord_type(message)
        price = _number(message, Tag.PRICE) if order_type is OrderType.LIMIT else None
        target = self._cancel_target(message, 2, now_ns)
        if target is None:
            return
        cl_ord_id, order = target
        qty = _lots(quantity)
        units = None if price is None else _price_units(price, order.instrument)
        problem = None
        if order_type is not OrderType.LIMIT or order.order_type is not OrderType.LIMIT:
            problem = "only limit orders can be replaced, and only by limit orders"
        elif qty is None or qty <= order.cum_qty:
            problem = f"OrderQty must be whole lots above the filled quantity {order.cum_qty}"
        elif units is None:
            problem = f"price {price} is not a positive multiple of the tick"
        if problem is not None:
            self._cancel_reject(
                order, cl_ord_id, order.cl_ord_id, 2, _CXL_REJ_OTHER, problem, now_ns
            )
            return
        assert qty is not None
        assert units is not None
        order.pending.append(_Request(Kind.AMEND, cl_ord_id, units))
        # The engine takes the new remaining quantity; FIX gives the new total.
        self._command(Kind.AMEND, order, self._account_of(order), units, qty - order.cum_qty)

    def _account_of(self, order: _Order) -> int:
        account = self._account(order.account)
        assert account is not None
        return account

    # -- engine events out ----------------------------------------------------------

    def _render(
        self, order: _Order, event: np.void, *, maker: bool, now_ns: int
    ) -> tuple[bytes, list[tuple[int, bytes | str | int]]] | None:
        """Update ``order`` from one engine event and render this session's report of it."""
        kind = int(event["kind"])
        seq = int(event["seq"])
        if kind == EventKind.TRADE:
            qty = int(event["qty"])
            price = int(event["price"])
            order.cum_qty += qty
            order.notional_units += qty * price
            order.leaves_qty = int(event["maker_leaves" if maker else "leaves"])
            order.status = (
                _OrdStatus.FILLED if order.leaves_qty == 0 else _OrdStatus.PARTIALLY_FILLED
            )
            return self._report(
                order,
                b"F",
                f"{seq}{'M' if maker else 'T'}",
                now_ns,
                last=(qty, price),
            )
        if kind == EventKind.ACCEPTED:
            if order.status is _OrdStatus.PENDING_NEW:
                order.status = _OrdStatus.NEW
            return self._report(order, b"0", str(seq), now_ns)
        if kind == EventKind.EXPIRED:
            order.status = _OrdStatus.EXPIRED
            order.leaves_qty = 0
            return self._report(order, b"C", str(seq), now_ns)
        if kind == EventKind.CANCELLED:
            request = order.pending.popleft() if order.pending else None
            order.status = _OrdStatus.CANCELED
            order.leaves_qty = 0
            self._retire(order)
            if request is None:
                return self._report(order, b"4", str(seq), now_ns)
            return self._report(
                order, b"4", str(seq), now_ns, cl_ord_id=request.cl_ord_id, orig=order.cl_ord_id
            )
        if kind == EventKind.AMENDED:
            request = order.pending.popleft()
            assert request.kind is Kind.AMEND
            orig = order.cl_ord_id
            order.cl_ord_id = request.cl_ord_id
            order.cl_ord_ids.append(request.cl_ord_id)
            self._orders[request.cl_ord_id] = order
            order.price_units = int(event["price"])
            order.leaves_qty = int(event["qty"])
            order.order_qty = order.cum_qty + order.leaves_qty
            return self._report(order, b"5", str(seq), now_ns, orig=orig)
        # REJECTED: of the order itself, or of the oldest cancel or replace on it.
        reason = int(event["reason"])
        text = _reason_text(reason)
        if order.status is _OrdStatus.PENDING_NEW:
            order.status = _OrdStatus.REJECTED
            order.leaves_qty = 0
            self._retire(order)
            return self._report(
                order,
                b"8",
                str(seq),
                now_ns,
                extra=[
                    (Tag.ORD_REJ_REASON, _ORD_REJ_REASON.get(reason, _ORD_REJ_OTHER)),  # type: ignore[call-overload]
                    (Tag.TEXT, text),
                ],
            )
        request = order.pending.popleft()
        gone = order.status in _DONE or reason == Reason.UNKNOWN_ORDER
        return (
            MsgType.ORDER_CANCEL_REJECT,
            [
                (Tag.ORDER_ID, str(order.order_id)),
                (Tag.CL_ORD_ID, request.cl_ord_id),
                (Tag.ORIG_CL_ORD_ID, order.cl_ord_id),
                (Tag.ORD_STATUS, order.status.value),
                (Tag.TRANSACT_TIME, format_utc(now_ns)),
                (Tag.CXL_REJ_RESPONSE_TO, 1 if request.kind is Kind.CANCEL else 2),
                (Tag.CXL_REJ_REASON, _CXL_REJ_TOO_LATE if gone else _CXL_REJ_OTHER),
                (Tag.TEXT, text),
            ],
        )

    def _retire(self, order: _Order) -> None:
        if order.status in _DONE:
            for cl_ord_id in order.cl_ord_ids:
                if self._orders.get(cl_ord_id) is order:
                    del self._orders[cl_ord_id]

    def _report(
        self,
        order: _Order,
        exec_type: bytes,
        exec_id: str,
        now_ns: int,
        *,
        cl_ord_id: str | None = None,
        orig: str | None = None,
        last: tuple[int, int] | None = None,
        extra: Iterable[tuple[int, bytes | str | int]] = (),
    ) -> tuple[bytes, list[tuple[int, bytes | str | int]]]:
        unit = order.instrument.price_unit
        fields: list[tuple[int, bytes | str | int]] = [
            (Tag.ORDER_ID, str(order.order_id)),
            (Tag.CL_ORD_ID, cl_ord_id or order.cl_ord_id),
        ]
        if orig is not None:
            fields.append((Tag.ORIG_CL_ORD_ID, orig))
        fields += [
            (Tag.EXEC_ID, exec_id),
            (Tag.EXEC_TYPE, exec_type),
            (Tag.ORD_STATUS, order.status.value),
        ]
        if order.account is not None:
            fields.append((Tag.ACCOUNT, order.account))
        fields += [
            (Tag.SYMBOL, order.symbol),
            (Tag.SIDE, b"1" if order.side is Side.BUY else b"2"),
            (Tag.ORDER_QTY, order.order_qty),
            (Tag.ORD_TYPE, b"2" if order.order_type is OrderType.LIMIT else b"1"),
        ]
        if order.order_type is OrderType.LIMIT:
            fields.append((Tag.PRICE, _decimal_text(order.price_units * unit)))
        if last is not None:
            fields += [(Tag.LAST_QTY, last[0]), (Tag.LAST_PX, _decimal_text(last[1] * unit))]
        average = (
            Decimal(0)
            if order.cum_qty == 0
            else (Decimal(order.notional_units) * unit / order.cum_qty).quantize(Decimal("1e-8"))
        )
        fields += [
            (Tag.LEAVES_QTY, order.leaves_qty),
            (Tag.CUM_QTY, order.cum_qty),
            (Tag.AVG_PX, _decimal_text(average)),
            (Tag.TRANSACT_TIME, format_utc(now_ns)),
        ]
        fields += extra
        return (MsgType.EXECUTION_REPORT, fields)


# -- field parsing -------------------------------------------------------------------


def _seq_num(message: Message) -> int | None:
    value = message.get(Tag.MSG_SEQ_NUM, b"")
    if not _POSITIVE_INT.fullmatch(value) or value == b"0":
        return None
    return int(value)


def _required(message: Message, tag: int) -> bytes:
    value = message.get(tag)
    if value is None:
        raise _RefuseError(
            SessionRejectReason.REQUIRED_TAG_MISSING, tag, f"required tag {tag} is missing"
        )
    return value


def _text(message: Message, tag: int) -> str:
    value = _required(message, tag)
    if not value.isascii():
        raise _RefuseError(
            SessionRejectReason.INCORRECT_DATA_FORMAT, tag, f"tag {tag} must be ASCII text"
        )
    return value.decode("ascii")


def _optional_text(message: Message, tag: int) -> str | None:
    return _text(message, tag) if tag in message else None


def _cl_ord_id(message: Message, tag: int) -> str:
    value = _text(message, tag)
    if len(value) > CL_ORD_ID_BYTES_MAX:
        raise _RefuseError(
            SessionRejectReason.VALUE_OUT_OF_RANGE,
            tag,
            f"tag {tag} is longer than CL_ORD_ID_BYTES_MAX={CL_ORD_ID_BYTES_MAX} bytes",
        )
    return value


def _int_field(message: Message, tag: int) -> int:
    value = _required(message, tag)
    if not _POSITIVE_INT.fullmatch(value):
        raise _RefuseError(
            SessionRejectReason.INCORRECT_DATA_FORMAT, tag, f"tag {tag} must be an integer"
        )
    return int(value)


def _number(message: Message, tag: int) -> Decimal:
    """A FIX Qty or Price, exactly (a Decimal, never a float)."""
    value = _required(message, tag)
    if len(value) > 40 or not _NUMBER.fullmatch(value):
        raise _RefuseError(
            SessionRejectReason.INCORRECT_DATA_FORMAT, tag, f"tag {tag} must be a decimal number"
        )
    try:
        return Decimal(value.decode("ascii"))
    except InvalidOperation:  # pragma: no cover - the pattern admits only valid numbers
        raise _RefuseError(
            SessionRejectReason.INCORRECT_DATA_FORMAT, tag, f"tag {tag} must be a decimal number"
        ) from None


def _side(message: Message) -> Side:
    value = _required(message, Tag.SIDE)
    if value == b"1":
        return Side.BUY
    if value == b"2":
        return Side.SELL
    raise _RefuseError(
        SessionRejectReason.VALUE_OUT_OF_RANGE, Tag.SIDE, "Side (54) must be 1 (buy) or 2 (sell)"
    )


def _ord_type(message: Message) -> OrderType:
    value = _required(message, Tag.ORD_TYPE)
    if value == b"1":
        return OrderType.MARKET
    if value == b"2":
        return OrderType.LIMIT
    raise _RefuseError(
        SessionRejectReason.VALUE_OUT_OF_RANGE,
        Tag.ORD_TYPE,
        "OrdType (40) must be 1 (market) or 2 (limit)",
    )


def _time_in_force(message: Message, order_type: OrderType) -> TimeInForce:
    value = message.get(Tag.TIME_IN_FORCE, b"0")
    if value == b"4":
        return TimeInForce.FOK
    if value == b"3" or (order_type is OrderType.MARKET and value in (b"0", b"1")):
        # A market order never rests: Day and GTC market orders are IOC.
        return TimeInForce.IOC
    if value in (b"0", b"1"):
        # Day orders are GTC here: the exchange has no end-of-day expiry.
        return TimeInForce.GTC
    raise _RefuseError(
        SessionRejectReason.VALUE_OUT_OF_RANGE,
        Tag.TIME_IN_FORCE,
        "TimeInForce (59) must be 0 (day), 1 (GTC), 3 (IOC) or 4 (FOK)",
    )


def _lots(quantity: Decimal) -> int | None:
    if quantity <= 0 or quantity != quantity.to_integral_value() or quantity >= 2**63:
        return None
    return int(quantity)


def _price_units(price: Decimal, instrument: Instrument) -> int | None:
    """The price in engine price units, or None when it is not a positive whole tick."""
    units = price / instrument.price_unit
    if price <= 0 or units != units.to_integral_value() or units >= 2**62:
        return None
    whole = int(units)
    return whole if whole % instrument.tick_size == 0 else None


class Client:
    """A minimal initiator for tests and examples: numbers, stamps and frames messages.

    It keeps no session state beyond its outbound MsgSeqNum; :meth:`read`
    parses what the acceptor sent.

    >>> client = Client("ALPHA", "SDIX")
    >>> client.read(client.message(b"0", [], now_ns=0))[0].get(Tag.MSG_SEQ_NUM)
    b'1'
    """

    def __init__(self, sender_comp_id: str, target_comp_id: str) -> None:
        self.sender_comp_id = sender_comp_id
        self.target_comp_id = target_comp_id
        self.next_seq = 1
        self._parser = FixParser()

    def message(
        self,
        msg_type: bytes,
        fields: Iterable[tuple[int, bytes | str | int]],
        *,
        now_ns: int = 0,
        seq: int | None = None,
        header: Iterable[tuple[int, bytes | str | int]] = (),
    ) -> bytes:
        """One message with the standard header; ``seq`` overrides the MsgSeqNum."""
        number = self.next_seq if seq is None else seq
        if seq is None:
            self.next_seq += 1
        return encode(
            msg_type,
            [
                (Tag.SENDER_COMP_ID, self.sender_comp_id),
                (Tag.TARGET_COMP_ID, self.target_comp_id),
                (Tag.MSG_SEQ_NUM, number),
                (Tag.SENDING_TIME, format_utc(now_ns)),
                *header,
                *fields,
            ],
        )

    def logon(self, password: str | None, *, heartbeat_seconds: int = 30) -> bytes:
        fields: list[tuple[int, bytes | str | int]] = [
            (Tag.ENCRYPT_METHOD, 0),
            (Tag.HEART_BT_INT, heartbeat_seconds),
        ]
        if password is not None:
            fields.append((Tag.PASSWORD, password))
        return self.message(MsgType.LOGON, fields)

    def read(self, data: bytes) -> list[Message]:
        """The messages in ``data`` (garbled ones are left out)."""
        return [item for item in self._parser.parse(data) if isinstance(item, Message)]
