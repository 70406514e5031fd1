"""kill -9 during a delivery storm: every message that got 250 is there, searchable, once."""

from __future__ import annotations

import collections
import os
import re
import signal
import smtplib
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from sdi.email.service import create_token, create_user
from sdi.testing.email import ANN, wait_for
from sdi.testing.running import request

pytestmark = pytest.mark.slow


class Child:
    """``python -m sdi.email`` in a child process; its HTTP and SMTP ports."""

    def __init__(self, data_dir: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sdi.email", "--port", "0", "--data-dir", str(data_dir),
             "--options", '{"workers": 2}'],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        assert self.process.stdout is not None
        ports: dict[str, int] = {}
        while len(ports) < 2:
            line = self.process.stdout.readline()
            assert line, "the service exited before listening"
            found = re.search(r"listening on (http|smtp)://127\.0\.0\.1:(\d+)", line)
            if found and found.group(1) not in ports and "submission" not in line:
                ports[found.group(1)] = int(found.group(2))
        self.http, self.smtp = ports["http"], ports["smtp"]

    def kill(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        self._close()

    def _close(self) -> None:
        if self.process.stdout is not None:
            self.process.stdout.close()

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(30)
        finally:
            self._close()


def _storm(
    port: int, worker: int, acked: list[str], attempted: list[str], stop: threading.Event
) -> None:
    i = 0
    while not stop.is_set():
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
                while not stop.is_set():
                    tag = f"storm{worker}x{i}"
                    i += 1
                    attempted.append(tag)
                    data = f"From: s@far.example\r\nSubject: {tag}\r\n\r\nbody {tag}\r\n".encode()
                    client.sendmail("s@far.example", [ANN], data)
                    acked.append(tag)
        except (OSError, smtplib.SMTPException):
            return  # the server died under us


def test_kill_9_during_a_delivery_storm(tmp_path: Path) -> None:
    create_user(tmp_path, ANN, "Ann")
    token = create_token(tmp_path, ANN)
    child = Child(tmp_path)
    acked: list[str] = []
    attempted: list[str] = []
    stop = threading.Event()
    threads = [
        threading.Thread(target=_storm, args=(child.smtp, w, acked, attempted, stop))
        for w in range(4)
    ]
    try:
        for thread in threads:
            thread.start()
        wait_for(lambda: len(acked) >= 150, 30, "150 acknowledged messages")
        child.kill()
    finally:
        stop.set()
        for thread in threads:
            thread.join(15)
        if child.process.poll() is None:
            child.kill()
    assert len(acked) >= 150
    queued = sqlite3.connect(tmp_path / "mail.sqlite")
    try:
        backlog = queued.execute("SELECT count(*) FROM incoming").fetchone()[0]
    finally:
        queued.close()
    print(f"killed with {len(acked)} acknowledged, {backlog} still queued")
    restarted = Child(tmp_path)
    try:

        def inbox() -> list[str]:
            subjects: list[str] = []
            before = ""
            while True:
                status, page = request(
                    restarted.http,
                    "GET",
                    f"/v1/folders/inbox/messages?limit=200{before}",
                    token=token,
                )
                assert status == 200
                subjects += [m["subject"] for m in page["messages"]]
                if page["next_before"] is None:
                    return subjects
                before = f"&before={page['next_before']}"

        def settled() -> list[str] | None:
            subjects = inbox()
            return subjects if set(acked) <= set(subjects) else None

        subjects = wait_for(settled, 60, "every acknowledged message after the restart")
        time.sleep(0.5)  # anything still queued is processed by now; nothing may be doubled
        subjects = inbox()
        counts = collections.Counter(subjects)
        assert [s for s, n in counts.items() if n > 1] == []
        assert set(acked) <= set(subjects) <= set(attempted)
        for tag in acked[:: max(1, len(acked) // 20)]:
            status, found = request(restarted.http, "GET", f"/v1/search?q={tag}", token=token)
            assert status == 200
            assert [m["subject"] for m in found["messages"]] == [tag]
    finally:
        assert restarted.stop() == 0
