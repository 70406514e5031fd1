"""``sdi serve exchange`` end to end, with real clients: simplefix framing FIX 4.4
over TCP, the websockets client for market data, a restart that replays the
journal, and a clean stop on SIGINT."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import simplefix
from websockets.asyncio.client import connect

SDI = [sys.executable, "-m", "sdi.cli"]
PATTERN = re.compile(r"sdi exchange (.+?) listening on (\S+)")


def _start(data_dir: Path) -> tuple[subprocess.Popen[str], dict[str, str]]:
    process = subprocess.Popen(
        [*SDI, "serve", "exchange", "--port", "0", "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    endpoints: dict[str, str] = {}
    lines = []
    deadline = time.monotonic() + 60
    while len(endpoints) < 3 and time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if match := PATTERN.search(line):
            endpoints[match.group(1)] = match.group(2)
    if len(endpoints) < 3:
        process.kill()
        raise AssertionError(f"the exchange did not start; it printed: {''.join(lines)}")
    return process, endpoints


def _stop(process: subprocess.Popen[str]) -> str:
    process.send_signal(signal.SIGINT)
    out, _ = process.communicate(timeout=60)
    assert process.returncode == 0, out
    return out


class FixClient:
    """A FIX initiator built from simplefix's message builder and parser."""

    def __init__(self, firm: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.firm = firm
        self.reader, self.writer = reader, writer
        self.parser = simplefix.FixParser()
        self.seq = 1

    def send(self, msg_type: str, fields: list[tuple[int, str]]) -> None:
        message = simplefix.FixMessage()
        message.append_pair(8, "FIX.4.4", header=True)
        message.append_pair(35, msg_type, header=True)
        message.append_pair(49, self.firm, header=True)
        message.append_pair(56, "SDIX", header=True)
        message.append_pair(34, str(self.seq), header=True)
        message.append_utc_timestamp(52, datetime.now(UTC), precision=3, header=True)
        for tag, value in fields:
            message.append_pair(tag, value)
        self.seq += 1
        self.writer.write(message.encode())

    async def receive(self, msg_type: bytes, timeout: float = 10.0) -> simplefix.FixMessage:
        deadline = time.monotonic() + timeout
        while True:
            message = self.parser.get_message()
            if message is not None:
                if message.get(35) == msg_type:
                    return message
                continue
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"{self.firm} got no 35={msg_type!r}"
            data = await asyncio.wait_for(self.reader.read(65536), remaining)
            assert data, f"{self.firm}: the exchange closed the connection"
            self.parser.append_buffer(data)


async def _fix(endpoint: str, firm: str, password: str = "sdi") -> FixClient:
    host, port = endpoint.removeprefix("tcp://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    client = FixClient(firm, reader, writer)
    client.send("A", [(98, "0"), (108, "30"), (554, password)])
    return client


def _order(cl_ord_id: str, side: str, qty: int, price: str) -> list[tuple[int, str]]:
    now = datetime.now(UTC).strftime("%Y%m%d-%H:%M:%S.%f")[:-3]
    return [(11, cl_ord_id), (55, "ACME"), (54, side), (38, str(qty)), (40, "2"),
            (44, price), (59, "1"), (60, now)]  # fmt: skip


async def _trade_through_the_exchange(endpoints: dict[str, str]) -> None:
    async with connect(endpoints["market data (WebSocket)"]) as market_data:
        await market_data.send(json.dumps({"op": "subscribe", "symbols": [0]}))
        snapshot = json.loads(await market_data.recv())
        assert snapshot["type"] == "snapshot"
        assert snapshot["asks"] == []

        alpha = await _fix(endpoints["FIX 4.4"], "ALPHA")
        bravo = await _fix(endpoints["FIX 4.4"], "BRAVO")
        assert (await alpha.receive(b"A")).get(49) == b"SDIX"
        await bravo.receive(b"A")

        alpha.send("D", _order("A1", "2", 10, "100.00"))
        new = await alpha.receive(b"8")
        assert (new.get(150), new.get(39), new.get(11)) == (b"0", b"0", b"A1")

        bravo.send("D", _order("B1", "1", 4, "100.00"))
        fill = await bravo.receive(b"8")
        while fill.get(150) == b"0":
            fill = await bravo.receive(b"8")
        assert (fill.get(150), fill.get(39), fill.get(32), fill.get(31)) == (
            b"F", b"2", b"4", b"100"
        )  # fmt: skip
        partial = await alpha.receive(b"8")
        assert (partial.get(150), partial.get(39), partial.get(151)) == (b"F", b"1", b"6")

        # The market data feed saw the trade and the book left behind.
        seen_trade = False
        deadline = time.monotonic() + 10
        while not seen_trade and time.monotonic() < deadline:
            update = json.loads(await asyncio.wait_for(market_data.recv(), 10))
            for message in update.get("messages", []):
                if message["type"] == "trade":
                    assert (message["price"], message["qty"]) == (10_000, 4)
                    seen_trade = True
        assert seen_trade

        # An off-grid price is refused by the gateway with an ExecutionReport.
        alpha.send("D", _order("A2", "2", 1, "100.001"))
        rejected = await alpha.receive(b"8")
        assert rejected.get(39) == b"8"

        intruder = await _fix(endpoints["FIX 4.4"], "ALPHA", password="wrong")
        logout = await intruder.receive(b"5")
        assert b"password" in (logout.get(58) or b"").lower()
        for client in (alpha, bravo, intruder):
            client.writer.close()


async def _book_after_restart(endpoints: dict[str, str]) -> dict[str, object]:
    async with connect(endpoints["market data (WebSocket)"]) as market_data:
        await market_data.send(json.dumps({"op": "subscribe", "symbols": [0]}))
        snapshot: dict[str, object] = json.loads(await market_data.recv())
        return snapshot


@pytest.mark.slow
def test_exchange_service_end_to_end(tmp_path: Path) -> None:
    process, endpoints = _start(tmp_path)
    try:
        asyncio.run(_trade_through_the_exchange(endpoints))
    finally:
        out = _stop(process) if process.poll() is None else ""
    assert "stopped cleanly" in out

    # The journal survives the restart: ALPHA's rest of 6 lots at 100.00 is still there.
    process, endpoints = _start(tmp_path)
    try:
        snapshot = asyncio.run(_book_after_restart(endpoints))
    finally:
        _stop(process)
    assert snapshot["asks"] == [[10_000, 6]]


def _free_port(kind: int) -> int:
    import socket

    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _place(
    endpoint: str, firm: str, order: list[tuple[int, str]], exec_type: bytes
) -> simplefix.FixMessage:
    """Logs on, sends one order, returns its first ExecutionReport of ``exec_type``."""
    client = await _fix(endpoint, firm)
    await client.receive(b"A")
    client.send("D", order)
    report = await client.receive(b"8")
    while report.get(150) != exec_type:
        report = await client.receive(b"8")
    client.writer.close()
    return report


@pytest.mark.slow
def test_standby_service_takes_over_a_killed_primary(tmp_path: Path) -> None:
    import socket

    ports = [
        "--port", str(_free_port(socket.SOCK_STREAM)),
        "--fix-port", str(_free_port(socket.SOCK_STREAM)),
        "--md-port", str(_free_port(socket.SOCK_DGRAM)),
    ]  # fmt: skip
    primary = subprocess.Popen(
        [*SDI, "serve", "exchange", *ports, "--data-dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    standby = None
    try:
        assert primary.stdout is not None
        endpoints: dict[str, str] = {}
        while len(endpoints) < 3:
            line = primary.stdout.readline()
            assert line, "the primary did not start"
            if match := PATTERN.search(line):
                endpoints[match.group(1)] = match.group(2)
        new = asyncio.run(
            _place(endpoints["FIX 4.4"], "ALPHA", _order("A1", "2", 10, "100.00"), b"0")
        )
        assert new.get(39) == b"0"

        standby = subprocess.Popen(
            [*SDI, "serve", "exchange", *ports, "--data-dir", str(tmp_path), "--standby"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert standby.stdout is not None
        assert "exchange standby listening on" in standby.stdout.readline()
        primary.send_signal(signal.SIGKILL)
        primary.wait(timeout=30)

        lines = []
        while not any("took over" in line for line in lines):
            line = standby.stdout.readline()
            assert line, f"the standby stopped: {''.join(lines)}"
            lines.append(line)
        fix = next(PATTERN.search(line) for line in lines if "FIX 4.4" in line)
        assert fix is not None
        assert fix.group(2) == endpoints["FIX 4.4"], "the standby serves the primary's port"

        # ALPHA's order rested on the primary; BRAVO trades with it on the standby.
        fill = asyncio.run(_place(fix.group(2), "BRAVO", _order("B1", "1", 4, "100.00"), b"F"))
        assert (fill.get(39), fill.get(32), fill.get(31)) == (b"2", b"4", b"100")
        out = _stop(standby)
        standby = None
        assert "stopped cleanly" in out
    finally:
        for process in (primary, standby):
            if process is None:
                continue
            if process.poll() is None:
                process.kill()
            process.communicate(timeout=30)  # reads what is left and closes the pipe


async def _reconnect_flood_and_stop(
    endpoints: dict[str, str], process: subprocess.Popen[str], orders: int
) -> int:
    """ALPHA drops its connection without a Logout and logs on again; then it
    sends ``orders`` orders, the exchange is told to stop at once, and this
    returns how many orders were acknowledged before the connection closed."""
    first = await _fix(endpoints["FIX 4.4"], "ALPHA")
    await first.receive(b"A")
    first.writer.close()
    await first.writer.wait_closed()
    await asyncio.sleep(0.2)
    again = await _fix(endpoints["FIX 4.4"], "ALPHA")
    logon = await again.receive(b"A")
    assert logon.get(35) == b"A", "the firm must be able to log on again"
    for index in range(orders):
        again.send("D", _order(f"F{index}", "2", 1, "101.00"))
    await again.writer.drain()
    process.send_signal(signal.SIGINT)
    acknowledged = 0
    while data := await asyncio.wait_for(again.reader.read(65536), 30):
        again.parser.append_buffer(data)
        while (message := again.parser.get_message()) is not None:
            if message.get(35) == b"8" and message.get(150) == b"0":
                acknowledged += 1
    again.writer.close()
    await again.writer.wait_closed()
    return acknowledged


@pytest.mark.slow
def test_a_dropped_connection_frees_the_firm_and_a_stop_reports_every_order(
    tmp_path: Path,
) -> None:
    process, endpoints = _start(tmp_path)
    try:
        acknowledged = asyncio.run(_reconnect_flood_and_stop(endpoints, process, 40))
    finally:
        # The flood already sent SIGINT: wait for the exit it asked for.
        out = process.communicate(timeout=60)[0]
    assert process.returncode == 0, out
    assert "stopped cleanly" in out
    # Every order the exchange took is resting after a restart, and every one
    # of them was acknowledged to the firm before the exchange stopped.
    process, endpoints = _start(tmp_path)
    try:
        snapshot = asyncio.run(_book_after_restart(endpoints))
    finally:
        _stop(process)
    asks = snapshot["asks"]
    resting = asks[0][1] if asks else 0  # type: ignore[index]
    assert resting > 0
    assert acknowledged == resting


def test_a_bad_cpu_fails_at_start_with_the_reason(tmp_path: Path) -> None:
    result = subprocess.run(
        [*SDI, "serve", "exchange", "--port", "0", "--cpu", "999", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "CPU 999" in result.stdout + result.stderr


def test_a_standby_needs_a_primary_first(tmp_path: Path) -> None:
    shm = Path("/dev/shm")
    before = set(shm.glob("sdi-exchange-*")) if shm.is_dir() else set()
    result = subprocess.run(
        [*SDI, "serve", "exchange", "--port", "0", "--standby", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "start the primary first" in result.stdout + result.stderr
    after = set(shm.glob("sdi-exchange-*")) if shm.is_dir() else set()
    assert after <= before, "a failed start left its ring folder behind"
