"""Outgoing delivery by several processes sharing one database (SQLite, then a real
PostgreSQL): leased claims, exactly one send per row while every process lives, a dead
process's rows sent once their lease runs out, and the 250 recorded before anything else."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from sdi.email.blobs import BlobStore
from sdi.email.outgoing import OutgoingWorkers, RetryPolicy
from sdi.email.store import MailStore
from sdi.testing.servers import free_port

ANN = "ann@sdi.local"


class Recorder:
    """A remote domain's SMTP server: records each message with the EHLO name of the
    sender (which worker sent it) and when; ``data_gate`` / ``quit_gate`` hold the answer
    to DATA / QUIT until they are set."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.lock = threading.Lock()
        self.received: list[tuple[str, str, bytes, float]] = []
        self.data_gate: threading.Event | None = None
        self.data_waiting = threading.Event()
        self.quit_gate: threading.Event | None = None
        self.quit_waiting = threading.Event()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.data_gate is not None:
            self.data_waiting.set()
            gate = self.data_gate
            await asyncio.to_thread(gate.wait, 30)
            return "451 4.3.0 not this time"
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        assert envelope.original_content is not None
        with self.lock:
            self.received.append(
                (str(session.host_name), envelope.rcpt_tos[0], envelope.original_content,
                 time.time())
            )  # fmt: skip
        return "250 OK"

    async def handle_QUIT(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.quit_gate is not None:
            self.quit_waiting.set()
            gate = self.quit_gate
            await asyncio.to_thread(gate.wait, 30)
        return "221 Bye"


@pytest.fixture
def recorder() -> Iterator[Callable[..., tuple[Recorder, int]]]:
    controllers: list[Controller] = []

    def make(**options: float) -> tuple[Recorder, int]:
        handler = Recorder(**options)
        port = free_port()
        controller = Controller(handler, hostname="127.0.0.1", port=port)
        controller.start()
        controllers.append(controller)
        return handler, port

    yield make
    for controller in controllers:
        controller.stop()


def _queue(store: MailStore, blobs: BlobStore, count: int) -> tuple[list[int], dict[str, bytes]]:
    """``count`` outgoing rows, one per remote recipient, each its own message."""
    ids: list[int] = []
    sent: dict[str, bytes] = {}
    for i in range(count):
        rcpt = f"r{i}@far.example"
        data = f"Message-ID: <{i}@sdi.local>\r\nSubject: {i}\r\n\r\nbody {i}\r\n".encode()
        key = blobs.put(data)
        ids += store.submit(None, None, [(ANN, ANN, rcpt, key)])[2]
        sent[rcpt] = data
    return ids, sent


async def _until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(predicate):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def _states(store: MailStore, ids: list[int]) -> list[tuple[str, int]]:
    rows = [store.outgoing(i) for i in ids]
    return [(row.state, row.attempts) if row is not None else ("gone", 0) for row in rows]


def test_two_processes_send_each_row_exactly_once(
    opener: Callable[[], MailStore],
    recorder: Callable[..., tuple[Recorder, int]],
    tmp_path: Path,
) -> None:
    sink, port = recorder(delay_s=0.02)
    setup = opener()
    ids, sent = _queue(setup, BlobStore(tmp_path / "blobs"), 40)
    policy = RetryPolicy(base_s=0.05, cap_s=0.1, lease_s=30.0)

    async def main() -> None:
        workers = [
            OutgoingWorkers(
                opener(),
                BlobStore(tmp_path / "blobs"),
                {"far.example": ("127.0.0.1", port)},
                policy=policy,
                workers=3,
                hostname=name,
            )
            for name in ("one.sdi.local", "two.sdi.local")
        ]
        for worker in workers:
            worker.start()
        try:
            await _until(
                lambda: all(state == "sent" for state, _ in _states(setup, ids)),
                60,
                "every row to be sent",
            )
        finally:
            for worker in workers:
                await worker.stop()

    asyncio.run(main())
    rcpts = [rcpt for _, rcpt, _, _ in sink.received]
    assert sorted(rcpts) == sorted(sent)  # every message, none twice
    assert len(rcpts) == len(set(rcpts))
    for _, rcpt, data, _ in sink.received:
        assert data == sent[rcpt]
    assert _states(setup, ids) == [("sent", 1)] * len(ids)
    by_sender = Counter(name for name, _, _, _ in sink.received)
    assert set(by_sender) == {"one.sdi.local", "two.sdi.local"}, by_sender  # both took part


def test_a_dead_processs_rows_are_sent_when_its_lease_runs_out(
    opener: Callable[[], MailStore],
    recorder: Callable[..., tuple[Recorder, int]],
    tmp_path: Path,
) -> None:
    sink, port = recorder()
    setup = opener()
    ids, sent = _queue(setup, BlobStore(tmp_path / "blobs"), 3)
    lease_s = 3.0
    # A process claims two rows and dies before sending them (its claim stays).
    dead = opener()
    claimed_at = time.time()
    held = [row.id for row in dead.due_outgoing(claimed_at, 2, lease_s=lease_s)]
    assert len(held) == 2
    free = [i for i in ids if i not in held]
    dead.close()

    async def main() -> None:
        worker = OutgoingWorkers(
            opener(), BlobStore(tmp_path / "blobs"), {"far.example": ("127.0.0.1", port)},
            policy=RetryPolicy(base_s=0.05, cap_s=0.1, lease_s=lease_s),
        )  # fmt: skip
        worker.start()
        try:
            await _until(lambda: _states(setup, free) == [("sent", 1)], 30, "the free row")
            assert _states(setup, held) == [("queued", 0)] * 2  # still leased
            await _until(lambda: _states(setup, ids) == [("sent", 1)] * 3, 30, "the leased rows")
        finally:
            await worker.stop()

    asyncio.run(main())
    assert sorted(rcpt for _, rcpt, _, _ in sink.received) == sorted(sent)
    rows = {row.id: row for row in (setup.outgoing(i) for i in ids) if row is not None}
    times = {rcpt: when for _, rcpt, _, when in sink.received}
    for row_id in held:
        assert times[rows[row_id].rcpt] >= claimed_at + lease_s  # not before the lease ended


def test_the_250_is_recorded_before_the_quit_and_a_stop_gives_the_row_back(
    opener: Callable[[], MailStore],
    recorder: Callable[..., tuple[Recorder, int]],
    tmp_path: Path,
) -> None:
    sink, port = recorder()
    store = opener()
    blobs = BlobStore(tmp_path / "blobs")
    [first, second], _ = _queue(store, blobs, 2)
    route = {"far.example": ("127.0.0.1", port)}
    policy = RetryPolicy(base_s=0.05, cap_s=0.1, lease_s=60.0)

    async def main() -> None:
        # The remote server took the message but has not answered QUIT: the row is sent.
        sink.quit_gate = threading.Event()
        worker = OutgoingWorkers(store, blobs, route, policy=policy, workers=1)
        worker.start()
        try:
            await asyncio.to_thread(sink.quit_waiting.wait, 30)
            assert sink.quit_waiting.is_set()
            await _until(lambda: _states(store, [first])[0] == ("sent", 1), 10, "sent")
            # Stopped while waiting for the answer to DATA: the row is due again at once,
            # its attempt not counted.
            sink.data_gate = threading.Event()
            sink.quit_gate.set()
            await _until(sink.data_waiting.is_set, 30, "the second DATA")
            row = await asyncio.to_thread(store.outgoing, second)
            assert row is not None
            assert row.next_attempt > time.time() + 30  # leased while being sent
        finally:
            await worker.stop()
            if sink.data_gate is not None:
                sink.data_gate.set()

    asyncio.run(main())
    row = store.outgoing(second)
    assert row is not None
    assert (row.state, row.attempts) == ("queued", 0)
    assert row.next_attempt <= time.time()
    assert [rcpt for _, rcpt, _, _ in sink.received] == ["r0@far.example"]


def test_retry_policy_is_checked() -> None:
    assert RetryPolicy(lease_s=10).attempt_s == 5
    with pytest.raises(ValueError, match="lease_s"):
        RetryPolicy(lease_s=0)
