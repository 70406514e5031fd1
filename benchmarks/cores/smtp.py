"""SMTP intake: messages accepted per second by ``sdi serve email`` beside a bare aiosmtpd.

Both servers run as child processes; ``clients`` aiosmtplib connections in this
process each send their share of ``messages`` mails (about 2 KB, plain text, to
``demo@sdi.local``) over one SMTP session, all at once, and the figure is the
number of 250 replies per second (median of the rounds). A 250 means the message
is durable in both:

* **sdi**: ``sdi serve email`` (uvloop, two pipeline workers): the message is
  committed to the incoming queue (SQLite, ``synchronous=FULL``) before the 250;
  parsing, spam scoring, storage and indexing follow on worker threads.
* **aiosmtpd + fsync**: aiosmtpd's ``Controller`` with a handler that writes each
  message to a file of its own and fsyncs it before answering 250 (what a minimal
  durable MTA does), no parsing and no storage beyond that.

The issue (7) sets no goal; the figure shows what durable intake costs.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from email.message import EmailMessage
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from harness import Progress, Result, Scale  # noqa: E402

SIZES = {  # scale: (messages per round, clients, rounds)
    "tiny": (200, 4, 1),
    "quick": (3_000, 16, 3),
    "full": (20_000, 32, 3),
}
RECIPIENT = "demo@sdi.local"

_BARE_SERVER = textwrap.dedent(
    """
    import os, sys, time
    from aiosmtpd.controller import Controller

    class Durable:
        def __init__(self, directory):
            self.directory = directory
            self.count = 0

        async def handle_DATA(self, server, session, envelope):
            self.count += 1
            path = os.path.join(self.directory, f"{self.count}.eml")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, envelope.original_content or b"")
                os.fsync(fd)
            finally:
                os.close(fd)
            return "250 OK"

    controller = Controller(Durable(sys.argv[1]), hostname="127.0.0.1", port=int(sys.argv[2]))
    controller.start()
    print("listening", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        controller.stop()
    """
)


def _message(n: int) -> bytes:
    message = EmailMessage()
    message["From"] = f"sender{n % 50}@example.org"
    message["To"] = RECIPIENT
    message["Subject"] = f"benchmark message {n}"
    line = "The quick brown fox jumps over the lazy dog near the river bank. "
    message.set_content(line * 30)
    return message.as_bytes()


def _wait_port(port: int, timeout: float = 60.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port}")


async def _send_all(port: int, bodies: list[bytes], clients: int) -> float:
    """Sends every body from ``clients`` sessions; 250 replies per second."""
    import aiosmtplib

    shares = [bodies[i::clients] for i in range(clients)]

    async def session(share: list[bytes]) -> int:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=60)
        await smtp.connect()
        accepted = 0
        for body in share:
            errors, _ = await smtp.sendmail("sender@example.org", [RECIPIENT], body)
            accepted += not errors
        await smtp.quit()
        return accepted

    start = time.perf_counter()
    accepted = sum(await asyncio.gather(*(session(share) for share in shares)))
    elapsed = time.perf_counter() - start
    if accepted != len(bodies):
        raise RuntimeError(f"only {accepted} of {len(bodies)} messages were accepted")
    return accepted / elapsed


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(2)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def run(scale: Scale, progress: Progress) -> list[Result]:
    from sdi.testing.servers import free_port

    messages, clients, rounds = SIZES[scale]
    bodies = [_message(n) for n in range(messages)]
    rates: dict[str, list[float]] = {"sdi": [], "bare": []}
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with tempfile.TemporaryDirectory(prefix="sdi-smtp-bench-") as root:
        http, smtp_port, bare_port = free_port(), free_port(), free_port()
        command = [
            sys.executable, "-m", "sdi.cli", "serve", "email", "--port", str(http),
            "--smtp-port", str(smtp_port), "--submission-port", str(free_port()),
            "--ws-port", str(free_port()), "--data-dir", str(Path(root) / "sdi"),
        ]  # fmt: skip
        sdi = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        (Path(root) / "bare").mkdir()
        bare = subprocess.Popen(
            [sys.executable, "-c", _BARE_SERVER, str(Path(root) / "bare"), str(bare_port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        try:
            _wait_port(smtp_port)
            _wait_port(bare_port)
            for n in range(rounds):
                for name, port in (("sdi", smtp_port), ("bare", bare_port)):
                    progress(f"round {n + 1}/{rounds}: {messages:,} messages to {name}")
                    rates[name].append(asyncio.run(_send_all(port, bodies, clients)))
        finally:
            _stop(sdi)
            _stop(bare)
    return [
        Result(
            "SMTP messages accepted (250), durable",
            "messages/s",
            True,
            statistics.median(rates["sdi"]),
            {"aiosmtpd + fsync per message": statistics.median(rates["bare"])},
            note=f"{clients} aiosmtplib sessions, {messages:,} messages of about 2 KB a round",
        )
    ]
