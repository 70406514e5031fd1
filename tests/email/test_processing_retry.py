"""The incoming queue's retries: an entry that fails (a broken pipeline step, the S3 blob
store down) backs off exponentially, capped, and keeps being retried while other entries
are processed; mail accepted while the blob store is down is delivered once it is back."""

from __future__ import annotations

import asyncio
import itertools
import smtplib
import threading
import time
from pathlib import Path
from typing import Any

from sdi.email.store import IncomingEntry, StoredMessage
from sdi.objstore.service import DEV_ACCESS_KEY, DEV_SECRET_KEY, ObjectsService
from sdi.runtime import ServiceConfig
from sdi.testing.email import ANN, Mail, start_mail, wait_for
from sdi.testing.s3 import s3_client


def _send(port: int, subject: str) -> bytes:
    data = (
        f"From: carol@far.example\r\nTo: {ANN}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject.replace(' ', '-')}@far.example>\r\n\r\nHello.\r\n"
    ).encode()
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        assert client.sendmail("carol@far.example", [ANN], data) == {}  # 250: queued
    return data


class Attempts:
    """Wraps the service's pipeline: records each processing attempt (subject, time, ok)
    and fails the entries whose subject is in :attr:`failing`."""

    def __init__(self, mail: Mail) -> None:
        pipeline = mail.service.pipeline
        assert pipeline is not None
        self.process = pipeline.process
        self.lock = threading.Lock()
        self.log: list[tuple[str, float, bool]] = []
        self.failing: set[str] = set()
        pipeline.process = self  # type: ignore[method-assign]

    def __call__(self, entry: IncomingEntry) -> list[StoredMessage]:
        subject = next(
            (
                line[9:]
                for line in entry.data.decode().split("\r\n")
                if line.startswith("Subject: ")
            ),
            "",
        )
        now = time.monotonic()
        try:
            if subject in self.failing:
                raise RuntimeError(f"{subject}: failing on purpose")
            stored = self.process(entry)
        except Exception:
            with self.lock:
                self.log.append((subject, now, False))
            raise
        with self.lock:
            self.log.append((subject, now, True))
        return stored

    def of(self, subject: str) -> list[tuple[float, bool]]:
        with self.lock:
            return [(when, ok) for s, when, ok in self.log if s == subject]


def test_a_failing_entry_backs_off_and_is_retried_while_others_flow(tmp_path: Path) -> None:
    mail = start_mail(tmp_path / "mail", process_retry_base_s=0.05, process_retry_cap_s=0.2)
    try:
        attempts = Attempts(mail)
        attempts.failing.add("poison")
        _send(mail.smtp, "poison")
        wait_for(lambda: len(attempts.of("poison")) >= 2, 10, "the entry to fail twice")
        _send(mail.smtp, "fine")
        [message] = mail.wait_messages(1)  # delivered while the other one keeps failing
        assert message["subject"] == "fine"
        # More failures than the old limit of 5, and it is still being retried.
        wait_for(lambda: len(attempts.of("poison")) >= 8, 10, "eight failures")
        attempts.failing.clear()
        delivered = mail.wait_messages(2)
        assert sorted(m["subject"] for m in delivered) == ["fine", "poison"]
        tries = attempts.of("poison")
        assert [ok for _, ok in tries][-1] is True
        gaps = [b - a for (a, _), (b, _) in itertools.pairwise(tries)]
        # 0.05 s, then doubling, capped at 0.2 s (lower bounds: a busy machine is slower)
        assert gaps[0] >= 0.045
        assert gaps[1] >= 0.09
        assert all(gap >= 0.18 for gap in gaps[2:7])
        assert max(gaps) < 5.0  # capped, not growing without bound
        assert len(attempts.of("fine")) == 1
    finally:
        mail.running.stop()


class RestartableS3:
    """``sdi serve s3``'s service on its own thread, stopped and started again on the
    same port and data (the blob store going away and coming back)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = 0
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        ready = threading.Event()
        failure: list[BaseException] = []

        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            service = ObjectsService()
            try:
                endpoints = await service.start(
                    ServiceConfig("127.0.0.1", self.port, self.data_dir)
                )
                self.port = int(endpoints[0].url.rsplit(":", 1)[1].rstrip("/"))
            except BaseException as error:
                failure.append(error)
                ready.set()
                raise
            ready.set()
            await self._stop.wait()
            await service.stop()

        self._thread = threading.Thread(target=lambda: asyncio.run(main()), daemon=True)
        self._thread.start()
        assert ready.wait(60), "the S3 service did not start"
        assert not failure, failure

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(60)
        self._thread = self._loop = self._stop = None


def test_mail_accepted_while_the_blob_store_is_down_is_delivered_when_it_is_back(
    tmp_path: Path,
) -> None:
    s3 = RestartableS3(tmp_path / "s3")
    s3.start()
    mail: Mail | None = None
    try:
        s3_client(s3.url).create_bucket(Bucket="mail")
        options: dict[str, Any] = {
            "blob_url": f"s3://mail/blobs/?endpoint={s3.url}",
            "blob_access_key": DEV_ACCESS_KEY,
            "blob_secret_key": DEV_SECRET_KEY,
            "process_retry_base_s": 0.05,
            "process_retry_cap_s": 0.3,
        }
        mail = start_mail(tmp_path / "mail", **options)
        attempts = Attempts(mail)
        s3.stop()
        data = _send(mail.smtp, "during the outage")  # accepted into the queue: 250
        wait_for(
            lambda: len(attempts.of("during the outage")) >= 6,
            15,
            "several failed attempts while the blob store is down",
        )
        assert not any(ok for _, ok in attempts.of("during the outage"))
        assert mail.folder() == []
        store = mail.service.store
        assert store is not None
        assert store.incoming_count() == 1  # still queued, not given up
        s3.start()  # the same port and data: the bucket is back
        [message] = mail.wait_messages(1)
        assert message["subject"] == "during the outage"
        assert mail.raw(message["id"]) == data
        assert store.incoming_count() == 0
        objects = s3_client(s3.url).list_objects_v2(Bucket="mail")["Contents"]
        assert [o["Key"] for o in objects] == [f"blobs/{message['blob']}"]
    finally:
        if mail is not None:
            mail.running.stop()
        s3.stop()
