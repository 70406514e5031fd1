"""Market data that reaches everyone at once (book chapter 13).

A :class:`Publisher` turns the engine's event batches into packets: L2 book
deltas, trades, top of book and 1 s / 1 min candles, each packet at most one
UDP datagram and numbered without gaps. A :class:`Subscriber` rebuilds the
books from packets, notices a lost packet by the gap in the numbers, and
heals from a snapshot plus the deltas after it. :class:`UdpFeed` and
:class:`UdpReceiver` carry packets over UDP multicast on loopback (or
unicast when multicast cannot be set up); :class:`WebSocketFanout` serves
them as JSON to WebSocket clients. The wire format is in
``docs/internals/marketdata.md``.

>>> from sdi import exchange as ex
>>> from sdi.exchange import marketdata as md
>>> market = ex.Exchange([ex.Symbol(price_levels=1000)], accounts=2, funds=False, book_deltas=True)
>>> publisher, subscriber = md.Publisher(symbols=1), md.Subscriber(symbols=1)
>>> orders = ex.commands(
...     kind=ex.Kind.PLACE, account=[0, 1, 1], order_id=[1, 2, 3],
...     side=[ex.Side.SELL, ex.Side.SELL, ex.Side.BUY], price=[101, 102, 101], qty=[5, 7, 2],
... )
>>> packets = publisher.publish(market.submit(orders, now_ns=1_000), now_ns=1_000)
>>> [subscriber.apply(packet) for packet in packets]
['applied']
>>> subscriber.depth(0, ex.Side.SELL)
[(101, 3), (102, 7)]
>>> subscriber.trades(0)[0].price, subscriber.trades(0)[0].aggressor.name
(101, 'BUY')
>>> subscriber.top_of_book(0) == market.top_of_book(0)
True
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, cast

import numpy as np
import numpy.typing as npt
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from sdi._rust import marketdata as _native
from sdi.errors import Corrupt, InvalidArgument
from sdi.exchange import EVENT_DTYPE, Side

__all__ = [
    "CANDLE_INTERVALS_NS",
    "MULTICAST_GROUP",
    "PACKET_BYTES_DEFAULT",
    "PACKET_BYTES_MAX",
    "PACKET_BYTES_MIN",
    "Candle",
    "Outcome",
    "Publisher",
    "Subscriber",
    "Trade",
    "UdpFeed",
    "UdpReceiver",
    "WebSocketFanout",
    "decode",
]

# Limits, with their units last.
#: The packet size a publisher uses unless told otherwise (fits a 1500-byte MTU).
PACKET_BYTES_DEFAULT: int = _native.PACKET_BYTES_DEFAULT
#: The smallest and largest packet sizes a publisher accepts.
PACKET_BYTES_MIN: int = _native.PACKET_BYTES_MIN
PACKET_BYTES_MAX: int = _native.PACKET_BYTES_MAX
#: Candle intervals: 1 second and 1 minute.
CANDLE_INTERVALS_NS: tuple[int, int] = _native.CANDLE_INTERVALS_NS
#: The administratively scoped multicast group the feed uses by default.
MULTICAST_GROUP = "239.255.0.1"
#: How long the start-up multicast probe waits for its own datagram.
MULTICAST_PROBE_TIMEOUT_S = 0.5
#: Packets a receiver holds for a reader before it drops new ones.
RECEIVER_QUEUE_PACKETS_MAX = 65_536
#: Messages queued for one WebSocket client before it is disconnected as too slow.
CLIENT_QUEUE_MESSAGES_MAX = 4096
#: Levels per side a WebSocket snapshot carries at most.
SNAPSHOT_LEVELS_MAX = 1 << 22

#: What applying a packet did.
Outcome = Literal["applied", "gap", "duplicate", "snapshot", "heartbeat"]
#: A message decoded to JSON-ready values.
JsonMessage = dict[str, Any]

_Packet = bytes | bytearray | memoryview


@dataclass(frozen=True)
class Trade:
    """One trade: the engine's event sequence number is its id."""

    trade_id: int
    price: int
    qty: int
    aggressor: Side


@dataclass(frozen=True)
class Candle:
    """One closed candlestick of ``interval_ns``, starting at ``bucket_start_ns``."""

    interval_ns: int
    bucket_start_ns: int
    open: int
    high: int
    low: int
    close: int
    volume: int
    trades: int


def _now(now_ns: int | None) -> int:
    return time.time_ns() if now_ns is None else now_ns


def _event_bytes(events: npt.NDArray[np.void] | _Packet) -> npt.NDArray[np.uint8]:
    if isinstance(events, np.ndarray):
        if events.dtype != EVENT_DTYPE or events.ndim != 1:
            raise InvalidArgument(
                "events must be a 1-D numpy array of sdi.exchange.EVENT_DTYPE "
                "(what Exchange.submit returns), or its bytes"
            )
        return np.ascontiguousarray(events).view(np.uint8)
    return np.frombuffer(bytes(events), dtype=np.uint8)


class Publisher:
    """Turns engine event batches into market data packets.

    Keeps each symbol's L2 book (from the ``BOOK_DELTA`` events of an
    ``Exchange(book_deltas=True)``), its top of book and open candles. Every
    batch's packets are closed when the batch ends; packets are numbered from
    1 without gaps. ``snapshot`` gives any symbol's whole book, valid at the
    last packet sent.

    >>> from sdi.exchange import marketdata as md
    >>> publisher = md.Publisher(symbols=2, channel=9, packet_bytes_max=512)
    >>> publisher.next_seq, publisher.channel, publisher.packet_bytes_max
    (1, 9, 512)
    >>> len(publisher.snapshot())  # two empty books share one packet
    1
    """

    def __init__(
        self, *, symbols: int, channel: int = 1, packet_bytes_max: int = PACKET_BYTES_DEFAULT
    ) -> None:
        self._native = _native.Publisher(channel, symbols, packet_bytes_max)

    def publish(
        self, events: npt.NDArray[np.void] | _Packet, now_ns: int | None = None
    ) -> list[bytes]:
        """Publishes a batch of events (``EVENT_DTYPE`` or its bytes); returns its packets.

        ``now_ns`` (default: the clock) buckets the batch's trades into candles
        and closes the candles of earlier buckets.
        """
        return self._native.publish(_event_bytes(events), _now(now_ns))

    def publish_buffer(
        self, events: npt.NDArray[np.void] | _Packet, now_ns: int | None = None
    ) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint64]]:
        """Like ``publish`` but returns one buffer and the offsets where packets end."""
        return self._native.publish_buffer(_event_bytes(events), _now(now_ns))

    def publish_timed(
        self, events: npt.NDArray[np.void] | _Packet, now_ns: int | None = None
    ) -> tuple[int, int, int]:
        """Publishes and discards: ``(packets, bytes, nanoseconds in the core)``."""
        return self._native.publish_timed(_event_bytes(events), _now(now_ns))

    def snapshot(self, symbol: int | None = None, now_ns: int | None = None) -> list[bytes]:
        """Snapshot packets of one symbol's L2 book, or of every symbol's."""
        return self._native.snapshot(symbol, _now(now_ns))

    def flush(self, now_ns: int | None = None) -> list[bytes]:
        """Closes every open candle; returns the packets that carry them."""
        return self._native.flush(_now(now_ns))

    def heartbeat(self, now_ns: int | None = None) -> bytes:
        """A packet with no messages that tells subscribers the last sequence number sent."""
        return self._native.heartbeat(_now(now_ns))

    @property
    def next_seq(self) -> int:
        return self._native.next_seq

    @property
    def channel(self) -> int:
        return self._native.channel

    @property
    def symbols(self) -> int:
        return self._native.symbols

    @property
    def packet_bytes_max(self) -> int:
        return self._native.packet_bytes_max

    def depth(self, symbol: int, side: Side, levels: int = 10) -> list[tuple[int, int]]:
        """The publisher's own L2 book: up to ``levels`` levels, best first."""
        return self._native.depth(symbol, int(side), levels)


class Subscriber:
    """Rebuilds the feed's books from packets; detects gaps; heals from snapshots.

    A subscriber starts in sync with empty books, right for a feed's packet 1.
    One that joins late or loses a packet sees a gap: the symbols it can no
    longer trust are stale (``needs_snapshot``) until a snapshot arrives;
    meanwhile it buffers their deltas, and replays those after the snapshot.

    >>> from sdi.exchange import marketdata as md
    >>> publisher, late = md.Publisher(symbols=1), md.Subscriber(symbols=1)
    >>> late.needs_snapshot, late.gap_detected
    (False, False)
    >>> late.apply(publisher.heartbeat(now_ns=0))
    'heartbeat'
    >>> [late.apply(packet) for packet in publisher.snapshot(now_ns=0)]
    ['snapshot']
    """

    def __init__(
        self, *, symbols: int, channel: int = 1, trades_kept: int = 64, candles_kept: int = 64
    ) -> None:
        self._native = _native.Subscriber(channel, symbols, trades_kept, candles_kept)

    def apply(self, packet: _Packet) -> Outcome:
        """Validates a packet whole, then applies it.

        Raises ``sdi.errors.Corrupt`` for a packet that is not well formed (or
        of another channel); it changes nothing.
        """
        outcome = self._native.apply(packet if isinstance(packet, bytes) else bytes(packet))
        return cast(Outcome, outcome)

    @property
    def needs_snapshot(self) -> bool:
        """True while some symbol is stale, waiting for a snapshot."""
        return self._native.needs_snapshot

    @property
    def gap_detected(self) -> bool:
        """True once a gap has been seen (``stats()["gaps"]`` counts them)."""
        return self.stats()["gaps"] > 0

    @property
    def next_seq(self) -> int:
        """The incremental packet expected next."""
        return self._native.next_seq

    def stale_symbols(self) -> list[int]:
        return self._native.stale_symbols()

    def stats(self) -> dict[str, int]:
        """Counters: packets, gaps, packets_lost, duplicates, snapshots, mismatches."""
        return dict(self._native.stats())

    def depth(self, symbol: int, side: Side, levels: int = 10) -> list[tuple[int, int]]:
        """Up to ``levels`` ``(price, total quantity)`` levels of one side, best first."""
        return self._native.depth(symbol, int(side), levels)

    def top_of_book(self, symbol: int) -> tuple[tuple[int, int] | None, tuple[int, int] | None]:
        """``(bid, ask)``, each ``(price, total quantity)`` or None."""
        return self._native.top_of_book(symbol)

    def trades(self, symbol: int) -> list[Trade]:
        """The recent trades of ``symbol``, oldest first."""
        return [
            Trade(trade_id, price, qty, Side(side))
            for trade_id, price, qty, side in self._native.trades(symbol)
        ]

    def candles(self, symbol: int, interval_ns: int = CANDLE_INTERVALS_NS[0]) -> list[Candle]:
        """The closed candles of ``symbol`` for ``interval_ns``, oldest first."""
        return [Candle(*values) for values in self._native.candles(symbol, interval_ns)]


@dataclass(frozen=True)
class PacketHeader:
    flags: int
    channel: int
    seq: int
    send_time_ns: int

    @property
    def is_snapshot(self) -> bool:
        return bool(self.flags & 1)

    @property
    def is_heartbeat(self) -> bool:
        return bool(self.flags & 2)


def _side_name(side: int) -> str:
    return "buy" if side == Side.BUY else "sell"


def _level(level: tuple[int, int] | None) -> list[int] | None:
    return None if level is None else [level[0], level[1]]


def decode(packet: _Packet, symbols: int) -> tuple[PacketHeader, list[JsonMessage]]:
    """A packet's header and its messages as JSON-ready dicts.

    >>> from sdi.exchange import marketdata as md
    >>> header, messages = md.decode(md.Publisher(symbols=1).snapshot(0, now_ns=5)[0], symbols=1)
    >>> header.is_snapshot, header.send_time_ns, messages[0]["type"], messages[0]["last"]
    (True, 5, 'snapshot', True)
    """
    raw = packet if isinstance(packet, bytes) else bytes(packet)
    (flags, channel, seq, send_time_ns), items = _native.decode(raw, symbols)
    messages: list[JsonMessage] = []
    for item in items:
        values: Any = item  # A tuple whose shape depends on its kind, the first field.
        kind, symbol = values[0], values[1]
        if kind == "delta":
            _, _, side, price, qty = values
            messages.append(
                {
                    "type": kind,
                    "symbol": symbol,
                    "side": _side_name(side),
                    "price": price,
                    "qty": qty,
                }
            )
        elif kind == "trade":
            _, _, side, price, qty, trade_id = values
            messages.append(
                {
                    "type": kind,
                    "symbol": symbol,
                    "aggressor": _side_name(side),
                    "price": price,
                    "qty": qty,
                    "trade_id": trade_id,
                }
            )
        elif kind == "top":
            _, _, bid, ask = values
            messages.append(
                {"type": kind, "symbol": symbol, "bid": _level(bid), "ask": _level(ask)}
            )
        elif kind == "candle":
            _, _, values = values
            candle = Candle(*values)
            messages.append({"type": kind, "symbol": symbol, **asdict(candle)})
        else:
            _, _, valid_at, part, last, bids, asks = values
            messages.append(
                {
                    "type": kind,
                    "symbol": symbol,
                    "valid_at": valid_at,
                    "part": part,
                    "last": last,
                    "bids": [list(level) for level in bids],
                    "asks": [list(level) for level in asks],
                }
            )
    return PacketHeader(flags, channel, seq, send_time_ns), messages


# ---------------------------------------------------------------------------
# UDP transport
# ---------------------------------------------------------------------------

_LOOPBACK = "127.0.0.1"


def _membership(group: str) -> bytes:
    return socket.inet_aton(group) + socket.inet_aton(_LOOPBACK)


def _multicast_receiver_socket(group: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        # Bound to the group's address, the socket sees only this group's datagrams.
        sock.bind((group, port))
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, _membership(group))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def _multicast_sender_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    try:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(_LOOPBACK))
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
        # TTL 0: the datagrams never leave this host.
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 0)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


async def multicast_works(group: str = MULTICAST_GROUP) -> bool:
    """True if a datagram sent to ``group`` on loopback comes back to a member.

    Joins the group on an ephemeral port, sends one probe and waits at most
    ``MULTICAST_PROBE_TIMEOUT_S``. Containers and some kernels have no
    multicast route on loopback; then the feed falls back to unicast.
    """
    loop = asyncio.get_running_loop()
    try:
        receiver = _multicast_receiver_socket(group, 0)
    except OSError:
        return False
    try:
        sender = _multicast_sender_socket()
    except OSError:
        receiver.close()
        return False
    with receiver, sender:
        probe = b"sdi-multicast-probe"
        try:
            sender.sendto(probe, (group, receiver.getsockname()[1]))
            while True:
                data = await asyncio.wait_for(
                    loop.sock_recv(receiver, 64), MULTICAST_PROBE_TIMEOUT_S
                )
                if data == probe:
                    return True
        except (OSError, TimeoutError):
            return False


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, receiver: UdpReceiver) -> None:
        self._receiver = receiver

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self._receiver._received(data)

    def error_received(self, exc: Exception) -> None:
        self._receiver.errors += 1


class UdpFeed:
    """Sends packets by UDP multicast on loopback, or by unicast to each subscriber.

    ``mode="auto"`` probes multicast at start (``multicast_works``) and falls
    back to unicast to ``fallback`` addresses (``127.0.0.1`` ports) when it
    fails; ``mode`` then says which it is. Use :meth:`open`.
    """

    def __init__(
        self,
        transport: asyncio.DatagramTransport,
        mode: Literal["multicast", "unicast"],
        group: str,
        port: int,
        fallback: Sequence[tuple[str, int]],
    ) -> None:
        self._transport = transport
        self.mode: Literal["multicast", "unicast"] = mode
        self.group = group
        self.port = port
        self._unicast: list[tuple[str, int]] = list(fallback)
        self.packets_sent = 0

    @classmethod
    async def open(
        cls,
        *,
        port: int,
        group: str = MULTICAST_GROUP,
        fallback: Sequence[tuple[str, int]] = (),
        mode: Literal["auto", "multicast", "unicast"] = "auto",
    ) -> UdpFeed:
        """A feed sending to ``group:port``, or to ``fallback`` addresses by unicast."""
        for host, _ in fallback:
            if host != _LOOPBACK:
                raise InvalidArgument(f"fallback addresses must be on {_LOOPBACK}, not {host!r}")
        chosen: Literal["multicast", "unicast"]
        if mode == "auto":
            chosen = "multicast" if await multicast_works(group) else "unicast"
        else:
            chosen = mode
        loop = asyncio.get_running_loop()
        if chosen == "multicast":
            sock = _multicast_sender_socket()
        else:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
            sock.setblocking(False)
        transport, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, sock=sock)
        return cls(transport, chosen, group, port, fallback)

    def add_subscriber(self, address: tuple[str, int]) -> None:
        """Adds a unicast destination (used in unicast mode)."""
        if address[0] != _LOOPBACK:
            raise InvalidArgument(f"subscriber addresses must be on {_LOOPBACK}")
        self._unicast.append(address)

    def send(self, packets: Iterable[_Packet]) -> None:
        """Sends each packet once to the group, or once to every unicast subscriber."""
        targets = [(self.group, self.port)] if self.mode == "multicast" else self._unicast
        for packet in packets:
            for target in targets:
                self._transport.sendto(packet, target)
            self.packets_sent += 1

    def close(self) -> None:
        self._transport.close()


class UdpReceiver:
    """Receives a feed's packets into a queue, and applies them to a subscriber if given.

    Bad packets are counted (``corrupt``), never raised: a datagram from a
    stranger must not stop the feed. Use :meth:`open`.
    """

    def __init__(self, subscriber: Subscriber | None) -> None:
        self.subscriber = subscriber
        self.packets: asyncio.Queue[bytes] = asyncio.Queue(RECEIVER_QUEUE_PACKETS_MAX)
        self.received = 0
        self.dropped = 0
        self.corrupt = 0
        self.errors = 0
        self._transport: asyncio.DatagramTransport | None = None
        self.address: tuple[str, int] = ("", 0)

    @classmethod
    async def open(
        cls,
        *,
        mode: Literal["multicast", "unicast"],
        port: int = 0,
        group: str = MULTICAST_GROUP,
        subscriber: Subscriber | None = None,
    ) -> UdpReceiver:
        """Joins ``group:port`` (multicast) or binds ``127.0.0.1:port`` (unicast; 0 picks one)."""
        receiver = cls(subscriber)
        if mode == "multicast":
            sock = _multicast_receiver_socket(group, port)
        else:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
            sock.bind((_LOOPBACK, port))
            sock.setblocking(False)
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: _Datagrams(receiver), sock=sock)
        receiver._transport = transport
        host, bound_port = sock.getsockname()[:2]
        receiver.address = (host if mode == "multicast" else _LOOPBACK, bound_port)
        return receiver

    def _received(self, data: bytes) -> None:
        self.received += 1
        if self.subscriber is not None:
            try:
                self.subscriber.apply(data)
            except Corrupt:
                self.corrupt += 1
        try:
            self.packets.put_nowait(data)
        except asyncio.QueueFull:
            self.dropped += 1

    async def recv(self, timeout_s: float = 1.0) -> bytes:
        """The next packet; raises ``TimeoutError`` after ``timeout_s``."""
        return await asyncio.wait_for(self.packets.get(), timeout_s)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


# ---------------------------------------------------------------------------
# WebSocket fan-out
# ---------------------------------------------------------------------------


class _Client:
    def __init__(self, connection: ServerConnection, symbols: frozenset[int]) -> None:
        self.connection = connection
        self.symbols = symbols
        # None tells the writer to stop: the client left or fell too far behind.
        self.queue: asyncio.Queue[str | None] = asyncio.Queue(CLIENT_QUEUE_MESSAGES_MAX)
        self.needs_snapshot = False
        self.overflowed = False


class WebSocketFanout:
    """Serves the feed to WebSocket clients as JSON.

    The fan-out keeps a :class:`Subscriber` of its own, fed with every packet
    through :meth:`feed`. A client connects and sends
    ``{"op": "subscribe", "symbols": [0, 1]}`` (no ``symbols``: all). It gets
    one ``{"type": "snapshot", "symbol", "seq", "bids", "asks"}`` per symbol,
    then ``{"type": "update", "seq", "messages": [...]}`` for every packet
    that touches its symbols; ``seq`` is the packet's sequence number, so an
    update applies on top of a snapshot whose ``seq`` is lower. A snapshot and
    the registration of its client happen in one step of the event loop, so
    no update falls between them. A client whose queue fills is disconnected
    (close code 1008) rather than slowing everyone down. After a gap the
    fan-out's own book waits for a snapshot packet; then every client gets
    fresh snapshots.
    """

    def __init__(self, *, symbols: int, channel: int = 1) -> None:
        self.symbols = symbols
        self._mirror = Subscriber(symbols=symbols, channel=channel, trades_kept=0, candles_kept=0)
        self._clients: set[_Client] = set()
        self.updates_sent = 0

    @property
    def clients(self) -> int:
        return len(self._clients)

    @property
    def needs_snapshot(self) -> bool:
        """True while the fan-out's own book waits for a snapshot (feed it one)."""
        return self._mirror.needs_snapshot

    def feed(self, packets: Iterable[_Packet]) -> None:
        """Applies packets to the fan-out's book and queues updates for the clients."""
        for packet in packets:
            outcome = self._mirror.apply(packet)
            if outcome == "gap":
                for client in self._clients:
                    client.needs_snapshot = True
            if outcome not in ("applied", "gap"):
                continue
            header, messages = decode(packet, self.symbols)
            for client in list(self._clients):
                if client.needs_snapshot:
                    continue
                chosen = [m for m in messages if m["symbol"] in client.symbols]
                if chosen:
                    update = {"type": "update", "seq": header.seq, "messages": chosen}
                    self._queue(client, json.dumps(update))
        if not self._mirror.needs_snapshot:
            for client in list(self._clients):
                if client.needs_snapshot:
                    client.needs_snapshot = False
                    self._queue_snapshots(client)

    def _queue(self, client: _Client, text: str) -> None:
        try:
            client.queue.put_nowait(text)
            self.updates_sent += 1
        except asyncio.QueueFull:
            self._clients.discard(client)
            client.overflowed = True
            client.queue = asyncio.Queue(1)
            client.queue.put_nowait(None)

    def _queue_snapshots(self, client: _Client) -> None:
        seq = self._mirror.next_seq - 1
        for symbol in sorted(client.symbols):
            snapshot = {
                "type": "snapshot",
                "symbol": symbol,
                "seq": seq,
                "bids": [
                    list(level)
                    for level in self._mirror.depth(symbol, Side.BUY, SNAPSHOT_LEVELS_MAX)
                ],
                "asks": [
                    list(level)
                    for level in self._mirror.depth(symbol, Side.SELL, SNAPSHOT_LEVELS_MAX)
                ],
            }
            self._queue(client, json.dumps(snapshot))

    def _parse_subscribe(self, text: str | bytes) -> frozenset[int] | str:
        try:
            request = json.loads(text)
        except ValueError:
            return 'the first message must be JSON: {"op": "subscribe", "symbols": [...]}'
        if not isinstance(request, dict) or request.get("op") != "subscribe":
            return 'the first message must be {"op": "subscribe", "symbols": [...]}'
        symbols = request.get("symbols", list(range(self.symbols)))
        if not isinstance(symbols, list) or not all(
            isinstance(s, int) and 0 <= s < self.symbols for s in symbols
        ):
            return f"symbols must be a list of ids in 0..{self.symbols - 1}"
        return frozenset(symbols)

    async def handler(self, connection: ServerConnection) -> None:
        """The per-connection handler to give ``websockets.asyncio.server.serve``."""
        try:
            request = await connection.recv()
        except ConnectionClosed:
            return
        symbols = self._parse_subscribe(request)
        if isinstance(symbols, str):
            await connection.send(json.dumps({"type": "error", "message": symbols}))
            await connection.close(1008, "bad subscribe request")
            return
        client = _Client(connection, symbols)
        if self._mirror.needs_snapshot:
            client.needs_snapshot = True
        else:
            self._queue_snapshots(client)
        self._clients.add(client)
        reader = asyncio.create_task(self._read_until_closed(client))
        try:
            while (text := await client.queue.get()) is not None:
                await connection.send(text)
            if client.overflowed:
                await connection.close(1008, "too slow: the update queue overflowed")
        except ConnectionClosed:
            pass
        finally:
            self._clients.discard(client)
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    async def _read_until_closed(self, client: _Client) -> None:
        """Ignores what the client sends after subscribing; wakes the writer when it leaves."""
        with contextlib.suppress(ConnectionClosed):
            async for _ in client.connection:
                pass
        self._clients.discard(client)
        with contextlib.suppress(asyncio.QueueFull):
            client.queue.put_nowait(None)

    async def serve(self, host: str = _LOOPBACK, port: int = 0) -> Server:
        """Starts a WebSocket server; ``port=0`` picks a free port (see ``server.sockets``)."""
        return await serve(self.handler, host, port, compression=None)

    async def aclose(self) -> None:
        """Disconnects every client."""
        for client in list(self._clients):
            with contextlib.suppress(ConnectionClosed):
                await client.connection.close()
        self._clients.clear()
