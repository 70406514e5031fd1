"""``sdi serve exchange``: the stock exchange as a running service.

    FIX 4.4 clients --TCP--> gateway (asyncio) --command ring--> matcher stage (Rust thread)
                                     ^                                   |
                                     +-- ExecutionReports <--event ring--+--> market data
                                                                              UDP multicast
                                                                              WebSocket (JSON)

The gateway parses FIX (``sdi.exchange.fix``) and pushes 48-byte commands into
an SPSC ring; the matcher stage (sequencer, journal, order manager, matcher)
runs on its own thread with no Python on it; an asyncio task pops the events,
sends each session its ExecutionReports and publishes market data by UDP
(multicast on loopback, unicast fallback) and over WebSocket.

The service starts with two demo instruments, ``ACME`` and ``GLOBX`` (prices
in cents, tick 0.01, band 10% around 100.00), and two demo firms, ``ALPHA``
and ``BRAVO``, funded on first start. The FIX password is ``--fix-secret``.

With ``--standby`` (and the primary's ``--data-dir`` and ports) the service
follows the primary's journal, keeping its engine and market data books
current, and takes over the moment the primary is gone: it binds the ports
and goes on from the next sequence number.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np

from sdi import ring
from sdi.errors import Closed, InvalidArgument
from sdi.exchange import (
    CASH,
    COMMAND_DTYPE,
    EVENT_DTYPE,
    EventKind,
    Exchange,
    Kind,
    MatcherStage,
    Side,
    Standby,
    Symbol,
    commands,
)
from sdi.exchange.fix import Gateway, Instrument, Peer, Session
from sdi.exchange.marketdata import Publisher, UdpFeed, WebSocketFanout
from sdi.runtime.service import Endpoint, Service, ServiceConfig

__all__ = ["ExchangeService", "service"]

INSTRUMENTS = {"ACME": 0, "GLOBX": 1}
SYMBOL = Symbol(
    tick_size=1, min_price=1, price_levels=1_000_000, reference_price=10_000, band_bps=1_000
)
FIRMS = {"ALPHA": 0, "BRAVO": 1}
ACCOUNTS = 16
DEMO_CASH = 10**12
DEMO_SHARES = 10**7
COMMAND_RING_BYTES = 1 << 20
EVENT_RING_BYTES = 1 << 22
EVENT_BATCH_RECORDS = 4096
IDLE_POLL_SECONDS = 0.0005
FOLLOW_POLL_SECONDS = 0.01
READ_BYTES = 65536
# A standby taking over may find the ports still held for a moment by a
# primary that is closing; it retries for this long.
BIND_RETRY_SECONDS = 10.0
DRAIN_SECONDS = 5.0
RING_DIR_PREFIX = "sdi-exchange-"


@dataclass(eq=False)
class _Connection:
    session: Session
    writer: asyncio.StreamWriter
    reader_task: asyncio.Task[None] | None = None
    ticker: asyncio.Task[None] | None = None


def _ring_parent() -> Path | None:
    return Path("/dev/shm") if Path("/dev/shm").is_dir() else None


def _remove_stale_ring_dirs() -> None:
    """Ring folders of exchange processes that died without cleaning up."""
    parent = _ring_parent() or Path(tempfile.gettempdir())
    for folder in parent.glob(f"{RING_DIR_PREFIX}*-*"):
        try:
            pid = int(folder.name.removeprefix(RING_DIR_PREFIX).split("-", 1)[0])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except (ValueError, PermissionError):
            continue


class ExchangeService(Service):
    """The exchange: FIX gateway, matcher stage, market data (UDP and WebSocket)."""

    key = "exchange"

    def __init__(
        self,
        *,
        fix_port: int | None = None,
        md_port: int | None = None,
        fix_secret: str = "sdi",
        wait: str = "sleep",
        cpu: int | None = None,
        standby: bool = False,
    ) -> None:
        self._standby = standby
        self._fix_port_wanted = fix_port
        self._md_port_wanted = md_port
        self._fix_secret = fix_secret
        self._wait = wait
        self._cpu = cpu
        self._connections: set[_Connection] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self._ring_dir: Path | None = None
        self._stage: MatcherStage | None = None
        self._follower: Standby | None = None
        self._commands_out: ring.Producer | None = None
        self._events_in: ring.Consumer | None = None
        self._fix_server: asyncio.Server | None = None
        self._ws_server: Any = None
        self._udp: UdpFeed | None = None
        self._pump: asyncio.Task[None] | None = None
        self._next_order_id = 1
        self.report: Any = None
        self.fix_port = 0
        self.md_port = 0
        self.ws_port = 0

    # -- start --------------------------------------------------------------

    async def start(self, config: ServiceConfig) -> list[Endpoint]:
        try:
            return await self._start(config)
        except BaseException:
            await self._close()
            raise

    async def _start(self, config: ServiceConfig) -> list[Endpoint]:
        config.data_dir.mkdir(parents=True, exist_ok=True)
        journal = config.data_dir / "journal"
        symbols = [SYMBOL] * len(INSTRUMENTS)
        self._publisher = Publisher(symbols=len(INSTRUMENTS))
        self._fanout = WebSocketFanout(symbols=len(INSTRUMENTS))
        _remove_stale_ring_dirs()
        if self._standby:
            if not journal.exists():
                raise InvalidArgument(
                    f"no journal at {journal}: start the primary first "
                    "(the same command without --standby, with this --data-dir)"
                )
            self._follower = Standby(journal, symbols, accounts=ACCOUNTS, book_deltas=True)
            self._make_rings()
            self._spawn(self._follow(config))
            return [
                Endpoint(
                    "exchange standby",
                    f"file://{journal}",
                    "stop the primary (Ctrl-C, or kill it): this one takes over",
                )
            ]
        self._open_journal(journal, symbols)
        command_ring, event_ring = self._make_rings()
        self._stage = MatcherStage(
            symbols,
            accounts=ACCOUNTS,
            book_deltas=True,
            journal=journal,
            command_ring=command_ring,
            event_ring=event_ring,
            wait=self._wait,  # type: ignore[arg-type]
            cpu=self._cpu,
        )
        return await self._serve(config, retry_seconds=0.0)

    def _make_rings(self) -> tuple[Path, Path]:
        self._ring_dir = Path(
            tempfile.mkdtemp(prefix=f"{RING_DIR_PREFIX}{os.getpid()}-", dir=_ring_parent())
        )
        command_ring, event_ring = self._ring_dir / "commands", self._ring_dir / "events"
        ring.create(command_ring, COMMAND_RING_BYTES)
        ring.create(event_ring, EVENT_RING_BYTES)
        return command_ring, event_ring

    def _open_journal(self, journal: Path, symbols: list[Symbol]) -> None:
        """Replays the journal once to fund the demo firms on first start, to
        learn the largest order id used, and to give market data the books as
        they stand; the matcher stage then owns the journal."""
        market = Exchange(symbols, accounts=ACCOUNTS, book_deltas=True, journal=journal)
        if market.next_input_seq == 1:
            accounts, assets, amounts = [], [], []
            for account in FIRMS.values():
                accounts.append(account)
                assets.append(CASH)
                amounts.append(DEMO_CASH)
                for symbol_id in INSTRUMENTS.values():
                    accounts.append(account)
                    assets.append(symbol_id)
                    amounts.append(DEMO_SHARES)
            market.submit(commands(kind=Kind.DEPOSIT, account=accounts, symbol=assets, qty=amounts))
        self._next_order_id = market.max_order_id + 1
        levels = []
        for symbol_id in INSTRUMENTS.values():
            for side in (Side.BUY, Side.SELL):
                for price, qty in market.depth(symbol_id, side, SYMBOL.price_levels):
                    levels.append((symbol_id, side, price, qty))
        # Dropping the last reference closes the journal and releases its lock.
        del market
        # The books as book deltas, so the publisher and the fan-out start from
        # them. The publisher wants increasing event numbers; the engine's next
        # events are numbered after every replayed one, and there are at least
        # as many of those as there are levels, so 1..n stays below them.
        seed = np.zeros(len(levels), dtype=EVENT_DTYPE)
        seed["seq"] = np.arange(1, len(levels) + 1)
        for row, (symbol_id, side, price, qty) in zip(seed, levels, strict=True):
            row["kind"], row["symbol"], row["side"] = EventKind.BOOK_DELTA, symbol_id, side
            row["price"], row["qty"] = price, qty
        self._fanout.feed(self._publisher.publish(seed))

    async def _follow(self, config: ServiceConfig) -> None:
        """Standby: keeps the engine and the market data books current from the
        primary's journal, and takes over the moment the primary is gone."""
        assert self._follower is not None
        assert self._ring_dir is not None
        while not self._stopping.is_set():
            now = time.time_ns()
            self._fanout.feed(self._publisher.publish(self._follower.poll(), now))
            max_order_id = self._follower.max_order_id
            taken = self._follower.try_take_over_as_stage(
                command_ring=self._ring_dir / "commands",
                event_ring=self._ring_dir / "events",
                wait=self._wait,  # type: ignore[arg-type]
                cpu=self._cpu,
            )
            if taken is None:
                await asyncio.sleep(FOLLOW_POLL_SECONDS)
                continue
            self._stage, replayed = taken
            self._fanout.feed(self._publisher.publish(replayed, now))
            replayed_ids = int(replayed["order_id"].max()) if len(replayed) else 0
            self._next_order_id = max(max_order_id, replayed_ids) + 1
            for endpoint in await self._serve(config, retry_seconds=BIND_RETRY_SECONDS):
                print(f"sdi {endpoint.name} listening on {endpoint.url}", flush=True)
                print(f"    try: {endpoint.try_it}", flush=True)
            print("sdi exchange standby took over from the primary", flush=True)
            return

    async def _serve(self, config: ServiceConfig, retry_seconds: float) -> list[Endpoint]:
        """Attaches to the rings, opens the FIX, UDP and WebSocket sides; returns them."""
        assert self._ring_dir is not None
        self._commands_out = ring.Producer(self._ring_dir / "commands")
        self._events_in = ring.Consumer(self._ring_dir / "events")
        self._gateway = Gateway(
            "SDIX",
            instruments={
                name: Instrument(symbol_id, tick_size=1, price_unit=Decimal("0.01"))
                for name, symbol_id in INSTRUMENTS.items()
            },
            peers={
                firm: Peer(password=self._fix_secret, account=account)
                for firm, account in FIRMS.items()
            },
            # Past every order id in the journal, so that none is handed out twice.
            first_order_id=self._next_order_id,
        )
        from websockets.asyncio.server import serve

        fix_port = self._port(config, self._fix_port_wanted, 1)
        md_port = self._port(config, self._md_port_wanted, 2) or self._free_udp_port()
        deadline = time.monotonic() + retry_seconds
        while True:
            try:
                if self._fix_server is None:
                    self._fix_server = await asyncio.start_server(
                        self._serve_fix, config.host, fix_port
                    )
                if self._ws_server is None:
                    self._ws_server = await serve(self._fanout.handler, config.host, config.port)
                break
            except OSError:
                if time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(0.1)
        self.fix_port = int(self._fix_server.sockets[0].getsockname()[1])
        self.ws_port = int(next(iter(self._ws_server.sockets)).getsockname()[1])
        self._udp = await UdpFeed.open(port=md_port, fallback=[("127.0.0.1", md_port)])
        self.md_port = md_port
        self._pump = self._spawn(self._pump_events())
        host = config.host
        udp_host = self._udp.group if self._udp.mode == "multicast" else host
        return [
            Endpoint(
                "exchange FIX 4.4",
                f"tcp://{host}:{self.fix_port}",
                "any FIX 4.4 client (simplefix, quickfix): SenderCompID ALPHA or BRAVO, "
                f"TargetCompID SDIX, Password (554) {self._fix_secret!r}; symbols ACME, GLOBX",
            ),
            Endpoint(
                "exchange market data (WebSocket)",
                f"ws://{host}:{self.ws_port}",
                f'python -m websockets ws://{host}:{self.ws_port}  then send {{"op": "subscribe"}}',
            ),
            Endpoint(
                f"exchange market data (UDP {self._udp.mode})",
                f"udp://{udp_host}:{self.md_port}",
                "sdi.exchange.marketdata.UdpReceiver",
            ),
        ]

    @staticmethod
    def _port(config: ServiceConfig, wanted: int | None, offset: int) -> int:
        if wanted is not None:
            return wanted
        return 0 if config.port == 0 else config.port + offset

    @staticmethod
    def _free_udp_port() -> int:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", 0))
            return int(probe.getsockname()[1])

    # -- running ------------------------------------------------------------

    def _spawn(self, coroutine: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            self._fail(f"{type(error).__name__}: {error}")

    def _fail(self, reason: str) -> None:
        """Something the service cannot go on without broke: say so and stop."""
        if self.failure is None and not self._stopping.is_set():
            self.failure = reason
            print(f"sdi exchange failed: {reason}; stopping", file=sys.stderr, flush=True)
            signal.raise_signal(signal.SIGTERM)

    async def _submit(self, batch: np.ndarray) -> None:
        """Pushes commands into the command ring, waiting (without blocking the loop) if full."""
        if len(batch) == 0 or self._commands_out is None:
            return
        rows = batch.view(np.uint8).reshape(len(batch), COMMAND_DTYPE.itemsize)
        pushed = 0
        while pushed < len(rows):
            pushed += self._commands_out.push_many(rows[pushed:])
            if pushed < len(rows):
                await asyncio.sleep(IDLE_POLL_SECONDS)

    async def _serve_fix(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = _Connection(self._gateway.connect(), writer, asyncio.current_task())
        self._connections.add(connection)
        connection.ticker = asyncio.create_task(self._tick(connection))
        try:
            while not self._stopping.is_set():
                data = await reader.read(READ_BYTES)
                if not data:
                    break
                step = connection.session.receive(data, time.time_ns())
                if step.send:
                    writer.write(step.send)
                await self._submit(step.commands)
                if step.close:
                    break
                await writer.drain()
        except (ConnectionError, Closed, asyncio.CancelledError):
            pass
        finally:
            if connection.ticker is not None:
                connection.ticker.cancel()
            # While stopping, the connection stays open until its last reports
            # are out; `stop` closes it.
            if not self._stopping.is_set():
                self._disconnect(connection)

    def _disconnect(self, connection: _Connection) -> None:
        connection.session.disconnected()
        self._connections.discard(connection)
        connection.writer.close()

    async def _tick(self, connection: _Connection) -> None:
        """Heartbeats and test requests: calls ``tick`` when the session's deadline passes."""
        session = connection.session
        while True:
            deadline = session.deadline_ns()
            delay = 1.0 if deadline is None else max(0.0, (deadline - time.time_ns()) / 1e9)
            await asyncio.sleep(min(delay, 1.0))
            with contextlib.suppress(Closed):
                step = session.tick(time.time_ns())
                if step.send:
                    connection.writer.write(step.send)
                if step.close:
                    connection.writer.close()
                    return

    async def _pump_events(self) -> None:
        """Events from the stage: ExecutionReports to sessions, market data out."""
        assert self._events_in is not None
        assert self._udp is not None
        rows = np.zeros((EVENT_BATCH_RECORDS, EVENT_DTYPE.itemsize), dtype=np.uint8)
        while True:
            count = self._events_in.pop_rows_into(rows)
            if count == 0:
                if self._events_in.is_finished():
                    if not self._stopping.is_set():
                        self._fail("the matcher stage stopped: " + self._stage_error())
                    return
                await asyncio.sleep(IDLE_POLL_SECONDS)
                continue
            events = rows[:count].reshape(-1).view(EVENT_DTYPE).copy()
            now = time.time_ns()
            writers = {id(c.session): c.writer for c in self._connections}
            for session, data in self._gateway.execution_reports(events, now).items():
                writer = writers.get(id(session))
                if writer is not None and not writer.is_closing():
                    writer.write(data)
            packets = self._publisher.publish(events, now)
            if packets:
                self._udp.send(packets)
                self._fanout.feed(packets)
                if self._fanout.needs_snapshot:
                    snapshot = self._publisher.snapshot(now_ns=now)
                    self._fanout.feed(snapshot)

    def _stage_error(self) -> str:
        """Why the stage's thread ended, as far as its report says."""
        stage, self._stage = self._stage, None
        if stage is None:
            return "no stage"
        try:
            self.report = stage.stop()
        except Exception as error:
            return f"{type(error).__name__}: {error}"
        return "its input was closed"

    # -- stop ---------------------------------------------------------------

    async def stop(self) -> None:
        """Stops taking orders, lets every order already taken be processed and
        reported, then closes everything."""
        self._stopping.set()
        if self._fix_server is not None:
            self._fix_server.close()
            for connection in list(self._connections):
                if connection.reader_task is not None:
                    connection.reader_task.cancel()
        if self._commands_out is not None:
            # No more commands: the stage processes what the ring holds, then ends.
            self._commands_out.close()
            if self._stage is not None:
                deadline = time.monotonic() + DRAIN_SECONDS
                while not self._stage.is_finished() and time.monotonic() < deadline:
                    await asyncio.sleep(0.005)
        if self._stage is not None:
            stage, self._stage = self._stage, None
            self.report = await asyncio.to_thread(stage.stop)
        if self._pump is not None:
            # The stage closed its event ring: the pump sends the last reports and ends.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._pump), timeout=DRAIN_SECONDS)
        for connection in list(self._connections):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.writer.drain(), timeout=DRAIN_SECONDS)
            self._disconnect(connection)
        await self._close()

    async def _close(self) -> None:
        """Closes whatever is open; safe at any point of a start or a stop."""
        self._stopping.set()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._stage is not None:
            stage, self._stage = self._stage, None
            with contextlib.suppress(Exception):
                self.report = await asyncio.to_thread(stage.stop)
        for connection in list(self._connections):
            self._disconnect(connection)
        if self._fix_server is not None:
            self._fix_server.close()
            await self._fix_server.wait_closed()
            self._fix_server = None
        if self._ws_server is not None:
            self._ws_server.close()
            await self._ws_server.wait_closed()
            self._ws_server = None
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        for end in (self._commands_out, self._events_in):
            if end is not None:
                with contextlib.suppress(Exception):
                    end.close()
        self._commands_out = self._events_in = None
        if self._ring_dir is not None:
            shutil.rmtree(self._ring_dir, ignore_errors=True)
            self._ring_dir = None


def service(options: dict[str, Any]) -> Service:
    """The exchange service from ``sdi serve exchange`` options."""
    return ExchangeService(
        fix_port=options.get("fix_port"),
        md_port=options.get("md_port"),
        fix_secret=options.get("fix_secret") or "sdi",
        standby=bool(options.get("standby")),
        cpu=options.get("cpu"),
        wait=options.get("wait") or "sleep",
    )
