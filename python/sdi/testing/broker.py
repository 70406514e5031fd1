"""An ``sdi serve <system>`` service (a broker, say) in a child process, for tests and benchmarks.

>>> import tempfile
>>> with tempfile.TemporaryDirectory() as path, BrokerProcess(path) as broker:
...     broker.bootstrap.startswith("127.0.0.1:")
True
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from types import TracebackType
from typing import Self

__all__ = ["BrokerProcess", "ServiceProcess", "read_partitions"]

_LISTENING = re.compile(r"listening on \w+://([^:\s/]+):(\d+)")


class ServiceProcess:
    """``sdi serve <system>`` on ``port`` (0 picks a free one) over ``data_dir``.

    :meth:`start` returns once the service listens (its first endpoint's port
    is then :attr:`port`); :meth:`kill` is ``kill -9``; :meth:`restart` starts
    it again on the same port and directory. What it prints is kept in
    :attr:`output`.
    """

    def __init__(
        self,
        system: str,
        data_dir: str | PathLike[str],
        *,
        port: int = 0,
        args: Sequence[str] = (),
        host: str = "127.0.0.1",
    ) -> None:
        self.system = system
        self.data_dir = Path(data_dir)
        self.port = port
        self.host = host
        self.args = list(args)
        self.output: list[str] = []
        self.process: subprocess.Popen[str] | None = None
        self._drain: threading.Thread | None = None
        self._ready = threading.Event()

    def start(self, timeout: float = 60.0) -> Self:
        """Starts the service and returns once it listens."""
        return self.launch().wait_listening(timeout)

    def launch(self) -> Self:
        """Starts the service without waiting (brokers of a cluster start together)."""
        command = [
            sys.executable, "-m", "sdi.cli", "serve", self.system,
            "--host", self.host, "--port", str(self.port), "--data-dir", str(self.data_dir),
            *self.args,
        ]  # fmt: skip
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.process = process
        ready = threading.Event()

        def drain() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                self.output.append(line)
                if not ready.is_set() and (match := _LISTENING.search(line)):
                    self.port = int(match.group(2))
                    ready.set()
            ready.set()

        self._drain = threading.Thread(target=drain, daemon=True)
        self._drain.start()
        self._ready = ready
        return self

    def wait_listening(self, timeout: float = 60.0) -> Self:
        """Waits until the launched service listens; RuntimeError with its output if it does not."""
        process, ready = self.process, self._ready
        assert process is not None
        if not ready.wait(timeout) or process.poll() is not None:
            process.kill()
            process.wait()
            self._release()
            raise RuntimeError(self.failure("did not start"))
        return self

    def failure(self, what: str) -> str:
        """A message saying the service ``what``, with the end of what it printed."""
        return f"sdi serve {self.system} {what}; it printed:\n" + "".join(self.output[-40:])

    def kill(self) -> None:
        """Kills the service with SIGKILL and waits for it to be gone."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._release()

    def _release(self) -> None:
        """Closes the pipe of a process that has exited, once all it printed is read."""
        if self.process is None or self.process.poll() is None:
            return
        if self._drain is not None:
            self._drain.join(10)
            self._drain = None
        if self.process.stdout is not None:
            self.process.stdout.close()

    def stop(self, timeout: float = 60.0) -> int:
        """Stops the service with SIGINT (a clean stop); its exit code."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise RuntimeError(self.failure("did not stop within its timeout")) from None
        self._release()
        return self.process.returncode

    def restart(self, timeout: float = 60.0) -> Self:
        """Starts the service again on the same port and data directory."""
        return self.start(timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.stop() != 0 and exc_type is None:
            raise RuntimeError(self.failure("exited non-zero"))


class BrokerProcess(ServiceProcess):
    """``sdi serve mq``: a :class:`ServiceProcess` that knows its Kafka bootstrap address."""

    def __init__(
        self,
        data_dir: str | PathLike[str],
        *,
        port: int = 0,
        args: Sequence[str] = (),
        host: str = "127.0.0.1",
    ) -> None:
        super().__init__("mq", data_dir, port=port, args=args, host=host)

    @property
    def bootstrap(self) -> str:
        """``host:port``, what Kafka clients call ``bootstrap.servers``."""
        return f"{self.host}:{self.port}"


def read_partitions(
    bootstrap: str, topic: str, partitions: int, timeout: float = 60.0
) -> dict[int, list[tuple[int, bytes]]]:
    """Every record of ``topic`` as (offset, value), per partition, read with confluent-kafka.

    Reads each partition from offset 0 to its end; AssertionError if an end is
    not reached within ``timeout``. (confluent-kafka is a test dependency.)
    """
    import time

    from confluent_kafka import Consumer, KafkaError, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "sdi-read-partitions",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    consumer.assign([TopicPartition(topic, index, 0) for index in range(partitions)])
    stored: dict[int, list[tuple[int, bytes]]] = {index: [] for index in range(partitions)}
    at_end: set[int] = set()
    deadline = time.monotonic() + timeout
    try:
        while len(at_end) < partitions and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            error = message.error()
            index, offset, value = message.partition(), message.offset(), message.value()
            assert index is not None
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    raise AssertionError(f"reading {topic}: {error}")
                at_end.add(index)
                continue
            assert offset is not None
            stored[index].append((offset, value or b""))
    finally:
        consumer.close()
    assert len(at_end) == partitions, f"did not reach the end of every partition of {topic}"
    return stored
