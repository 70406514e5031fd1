"""An ``sdi serve <system>`` service (a broker, say) in a child process, for tests and benchmarks.

>>> import tempfile
>>> with tempfile.TemporaryDirectory() as path, BrokerProcess(path) as broker:
...     broker.bootstrap.startswith("127.0.0.1:")
True
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Sequence
from os import PathLike
from pathlib import Path

from sdi.runtime.child import ChildProcess

__all__ = ["BrokerProcess", "ServiceProcess", "read_partitions"]


class ServiceProcess(ChildProcess):
    """``sdi serve <system>`` on ``port`` (0 picks a free one) over ``data_dir``.

    :meth:`start` returns once the service listens (its first endpoint's port
    is then :attr:`port`); :meth:`kill` is ``kill -9``; :meth:`stop` is
    SIGINT, a clean stop; :meth:`restart` starts it again on the same port
    and directory. What it prints is kept in :attr:`output`.
    """

    stop_signal = signal.SIGINT

    def __init__(
        self,
        system: str,
        data_dir: str | PathLike[str],
        *,
        port: int = 0,
        args: Sequence[str] = (),
        host: str = "127.0.0.1",
    ) -> None:
        super().__init__(f"sdi serve {system}", port=port, host=host)
        self.system = system
        self.data_dir = Path(data_dir)
        self.args = list(args)

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "sdi.cli", "serve", self.system,
            "--host", self.host, "--port", str(self.port), "--data-dir", str(self.data_dir),
            *self.args,
        ]  # fmt: skip


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
