"""The message queue: the sdi broker beside Redis Streams, and its log beside the disk.

Every record is a 100-byte value. The servers run as their own processes,
each pinned to CPU 0; the clients run here, on CPU 1 (when there are two).

* Produce throughput: confluent-kafka (librdkafka) against ``sdi serve mq``
  over the real Kafka protocol, ``acks=1``, batched (``linger.ms`` 5,
  ``batch.size`` 1 MB, no idempotence, no compression), every record to
  partition 0 of one topic. A record counts once ``flush()`` has returned:
  produced and acknowledged; the partition's high watermark must have moved
  by exactly the number sent. Baselines: Redis Streams, ``XADD`` of the same
  values to a ``redis-server`` started here, pipelined 1,000 commands a round
  trip: through redis-py (``pipeline(transaction=False)``, hiredis parser),
  and through hiredis alone on a raw socket (``pack_command`` and
  ``hiredis.Reader``, the least a Python client can spend per command).
  ``XLEN`` must equal the number sent. A Python producer is a client limit
  (confluent-kafka's ``produce()`` alone tops out near 600 k calls/s here),
  so the same runs also give records per CPU-second of the server process
  (``/proc/<pid>/stat``): what one server core takes when the client keeps up.
* Produce throughput with C clients, so that the client is not Python:
  ``kcat -P -l`` (librdkafka) reading one record a line from a file written
  beforehand, the same producer settings (``acks=1``, ``linger.ms`` 5,
  ``batch.size`` 1 MB, queue limits 2 M records / 2 GB), against
  ``redis-benchmark -c 1 -P 1000`` sending the same ``XADD`` (one connection,
  1,000 commands a round trip). Both values are the same 100 printable bytes
  (a line cannot hold a newline, an argument cannot hold a NUL). Each run is
  timed from the client's start to its exit, which comes once every record is
  acknowledged: startup and connecting count. The client process inherits
  this thread's CPU 1; its CPU time comes from ``getrusage(RUSAGE_CHILDREN)``,
  the server's from ``/proc/<pid>/stat``. The high watermark must have moved
  by, and ``XLEN`` must equal, the number sent. Without ``kcat`` or
  ``redis-benchmark`` these rows are skipped, with a note saying so; under
  ``CI=true`` a missing client is an error.
* End-to-end latency: a producer sends records carrying their send time at a
  steady rate, one at a time (``linger.ms`` 0); a consumer in a second thread
  receives them (confluent-kafka, assigned to partition 0 from the end,
  ``fetch.wait.max.ms`` 5; Redis: ``XREAD BLOCK`` on a second connection
  after ``XADD`` on the first). Warm-up records go first until the consumer
  sees one; p50 and p99 over the records after that.
* Log append: ``sdi.mq.log.Partition`` with ``fsync="every_batch"``,
  appending batches of 10,000 records (about 1 MiB) with ``append_records``
  and, as the broker does, pre-encoded batches with ``append_payload``;
  beside ``os.write`` of the same number of bytes per call followed by
  ``os.fdatasync``, in the same directory, the same total: the disk's
  sequential write rate, measured in the same run, interleaved repeat by
  repeat. And with ``fsync="never"`` beside ``os.write`` alone, for scale.
"""

from __future__ import annotations

import collections
import contextlib
import os
import resource
import secrets
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from harness import Progress, Result, Scale, percentile, pin_process, pinned  # noqa: E402
from sdi.mq.log import Partition  # noqa: E402
from sdi.testing.broker import BrokerProcess  # noqa: E402
from sdi.testing.servers import RedisServer  # noqa: E402

SERVER_CPU = 0
CLIENT_CPU = 1
RECORD_BYTES = 100
TOPIC = "sdi-bench"
STREAM = "sdi-bench"
PIPELINE = 1000
LOG_BATCH_RECORDS = 10_000
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
LATENCY = struct.Struct("<qq")  # sequence (negative: warm-up), send time in ns
CLIENT_TIMEOUT = 300.0  # seconds for one run of a C client

SIZES = {
    # scale: (kafka records, redis records, latency records, records/s, log batches, repeats)
    "tiny": (20_000, 10_000, 200, 2_000, 8, 1),
    "quick": (1_000_000, 100_000, 4_000, 2_000, 128, 3),
    "full": (5_000_000, 1_000_000, 20_000, 4_000, 512, 5),
}
# Records per run of the C clients (kcat, redis-benchmark), both the same; a multiple of PIPELINE.
C_RECORDS = {"tiny": 20_000, "quick": 1_000_000, "full": 5_000_000}
# The C clients and the Debian package of each.
C_CLIENTS = {"kcat": "kcat", "redis-benchmark": "redis-tools"}
# kcat -X: the same producer settings as the confluent-kafka run.
KCAT_CONFIG = {
    "acks": "1",
    "linger.ms": "5",
    "batch.size": "1000000",
    "queue.buffering.max.messages": "2000000",
    "queue.buffering.max.kbytes": "2000000",
}


def _cpu_seconds(pid: int) -> float:
    """CPU time (user + system, every thread) process ``pid`` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


@dataclass(frozen=True)
class Sample:
    """One produce run: records, wall seconds, the server's CPU seconds meanwhile.

    ``client_cpu``: the CPU seconds of a client subprocess, when there was one.
    """

    records: int
    seconds: float
    server_cpu: float
    client_cpu: float | None = None


@dataclass(frozen=True)
class Produced:
    """Medians over repeats: records/s, records per server CPU-second, CPU shares."""

    rate: float
    per_cpu_second: float
    cpu_share: float
    client_share: float | None = None

    @classmethod
    def of(cls, samples: list[Sample]) -> Produced:
        # The CPU clock ticks in 1/CLOCK_TICKS s: tiny runs may see no tick at all.
        pairs = [(sample, max(sample.server_cpu, 1 / CLOCK_TICKS)) for sample in samples]
        clients = [
            sample.client_cpu / sample.seconds
            for sample in samples
            if sample.client_cpu is not None
        ]
        return cls(
            statistics.median(sample.records / sample.seconds for sample in samples),
            statistics.median(sample.records / used for sample, used in pairs),
            statistics.median(used / sample.seconds for sample, used in pairs),
            statistics.median(clients) if len(clients) == len(samples) else None,
        )


# --- Kafka (confluent-kafka) against the sdi broker ----------------------------------


def _kafka_config(bootstrap: str, **extra: Any) -> dict[str, Any]:
    return {
        "bootstrap.servers": bootstrap,
        "socket.nagle.disable": True,
        "broker.address.family": "v4",
        **extra,
    }


def _create_topic(bootstrap: str) -> None:
    """Creates the topic (CreateTopics), or lets the broker create it on first metadata."""
    from confluent_kafka import KafkaException, Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient(_kafka_config(bootstrap))
    with contextlib.suppress(KafkaException):
        for future in admin.create_topics(
            [NewTopic(TOPIC, num_partitions=1, replication_factor=1)], request_timeout=10
        ).values():
            future.result(timeout=15)
    producer = Producer(_kafka_config(bootstrap))
    deadline = time.monotonic() + 30
    while True:
        metadata = producer.list_topics(TOPIC, timeout=10)
        topic = metadata.topics.get(TOPIC)
        if topic is not None and topic.error is None and 0 in topic.partitions:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"the broker does not show topic {TOPIC!r}: {topic}")
        time.sleep(0.1)
    producer.flush(10)


def _high_watermark(bootstrap: str) -> int:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(_kafka_config(bootstrap, **{"group.id": "sdi-bench-watermarks"}))
    try:
        _, high = consumer.get_watermark_offsets(TopicPartition(TOPIC, 0), timeout=10, cached=False)
        return int(high)
    finally:
        consumer.close()


def _kafka_produce(bootstrap: str, value: bytes, count: int, server: int) -> Sample:
    """From the first produce() to flush() returning, all acknowledged."""
    from confluent_kafka import Producer

    errors: list[str] = []

    def on_delivery(error: Any, _message: Any) -> None:
        if error is not None and len(errors) < 10:
            errors.append(str(error))

    before = _high_watermark(bootstrap)
    producer = Producer(
        _kafka_config(
            bootstrap,
            **{
                "acks": 1,
                "enable.idempotence": False,
                "compression.type": "none",
                "linger.ms": 5,
                "batch.size": 1_000_000,
                "batch.num.messages": 1_000_000,
                "queue.buffering.max.messages": 2_000_000,
                "queue.buffering.max.kbytes": 2_000_000,
                "delivery.report.only.error": True,
                "on_delivery": on_delivery,
            },
        )
    )
    produce, poll = producer.produce, producer.poll
    cpu = _cpu_seconds(server)
    started = time.perf_counter()
    for index in range(count):
        try:
            produce(TOPIC, value, partition=0)
        except BufferError:
            poll(0.001)
            produce(TOPIC, value, partition=0)
        if index & 0x3FFF == 0:
            poll(0)
    left = producer.flush(60)
    sample = Sample(count, time.perf_counter() - started, _cpu_seconds(server) - cpu)
    if left or errors:
        raise RuntimeError(f"{left} records not acknowledged; delivery errors: {errors}")
    stored = _high_watermark(bootstrap) - before
    if stored != count:
        raise RuntimeError(f"sent {count} records but the high watermark moved by {stored}")
    return sample


def _kafka_latencies(bootstrap: str, count: int, rate: int) -> list[float]:
    from confluent_kafka import OFFSET_END, Consumer, Producer, TopicPartition

    consumer = Consumer(
        _kafka_config(
            bootstrap,
            **{
                "group.id": "sdi-bench-latency",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 5,
                "fetch.min.bytes": 1,
                "fetch.error.backoff.ms": 5,
            },
        )
    )
    consumer.assign([TopicPartition(TOPIC, 0, OFFSET_END)])
    producer = Producer(
        _kafka_config(
            bootstrap,
            **{"acks": 1, "enable.idempotence": False, "linger.ms": 0},
        )
    )

    def receive(stop: threading.Event, sink: Callable[[bytes, int], None]) -> None:
        # poll() returns as soon as one record is there; consume(n) would wait for n.
        poll = consumer.poll
        while not stop.is_set():
            message = poll(0.05)
            now = time.perf_counter_ns()
            if message is not None and message.error() is None:
                value = message.value()
                if value is not None:
                    sink(value, now)

    def send(value: bytes) -> None:
        producer.produce(TOPIC, value, partition=0)
        producer.poll(0)

    try:
        return _latencies(send, receive, count, rate)
    finally:
        producer.flush(10)
        consumer.close()


# --- C clients: kcat against the sdi broker, redis-benchmark against Redis -------------


def _c_clients() -> tuple[dict[str, str], str]:
    """The paths of the C clients, or ``{}`` and why their rows are skipped.

    Under ``CI=true`` a missing client raises instead, as a missing server
    fails a test there (``sdi.testing.servers.require_binary``).
    """
    found = {name: shutil.which(name) for name in C_CLIENTS}
    missing = [name for name, path in found.items() if path is None]
    if not missing:
        return {name: path for name, path in found.items() if path is not None}, ""
    reason = "; ".join(
        f"{name} is not installed (Debian package {C_CLIENTS[name]}: "
        f"apt-get install {C_CLIENTS[name]}, or `make system-deps`)"
        for name in missing
    )
    if os.environ.get("CI") == "true":
        raise RuntimeError(f"{reason}; under CI=true a missing benchmark client is an error")
    return {}, reason


def _write_lines(path: Path, value: bytes, count: int) -> None:
    """``count`` lines of ``value``, synced so that no writeback falls into a run."""
    chunk = (value + b"\n") * 10_000
    with path.open("wb") as file:
        for start in range(0, count, 10_000):
            lines = min(10_000, count - start)
            file.write(chunk if lines == 10_000 else (value + b"\n") * lines)
        file.flush()
        os.fsync(file.fileno())


def _run_client(command: list[str], count: int, server: int) -> Sample:
    """Runs ``command`` (it inherits this thread's CPU) to its exit; times it."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = _cpu_seconds(server)
    started = time.perf_counter()
    completed = subprocess.run(
        command,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=CLIENT_TIMEOUT,
        check=False,
    )
    elapsed = time.perf_counter() - started
    server_cpu = _cpu_seconds(server) - cpu
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    client_cpu = after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime
    if completed.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command[:3])} ... exited with {completed.returncode}:\n"
            f"{completed.stdout[-2000:]}{completed.stderr[-2000:]}"
        )
    return Sample(count, elapsed, server_cpu, client_cpu)


def _kcat_produce(kcat: str, bootstrap: str, lines: Path, count: int, server: int) -> Sample:
    """``kcat -P`` of the first ``count`` lines of ``lines``; it exits once all are acknowledged."""
    before = _high_watermark(bootstrap)
    command = [kcat, "-P", "-b", bootstrap, "-t", TOPIC, "-p", "0"]
    for key, setting in KCAT_CONFIG.items():
        command += ["-X", f"{key}={setting}"]
    sample = _run_client([*command, "-c", str(count), "-l", str(lines)], count, server)
    stored = _high_watermark(bootstrap) - before
    if stored != count:
        raise RuntimeError(f"kcat sent {count} records but the high watermark moved by {stored}")
    return sample


def _redis_benchmark_produce(
    binary: str, host: str, port: int, value: str, count: int, server: int
) -> Sample:
    """``redis-benchmark`` of ``count`` XADDs, one connection, PIPELINE a round trip."""
    import redis

    command = [binary, "-h", host, "-p", str(port), "-c", "1", "-n", str(count)]
    command += ["-P", str(PIPELINE), "--csv", "XADD", STREAM, "*", "v", value]
    with redis.Redis(host=host, port=port) as client:
        client.delete(STREAM)
        sample = _run_client(command, count, server)
        stored = client.xlen(STREAM)
        client.delete(STREAM)
    if stored != count:
        raise RuntimeError(f"redis-benchmark sent {count} XADDs but XLEN is {stored}")
    return sample


# --- Redis Streams --------------------------------------------------------------------


def _redis_py_produce(url: str, value: bytes, count: int, server: int) -> Sample:
    import redis

    with redis.Redis.from_url(url) as client:
        client.delete(STREAM)
        fields = {b"v": value}
        cpu = _cpu_seconds(server)
        started = time.perf_counter()
        pipe = client.pipeline(transaction=False)
        for start in range(0, count, PIPELINE):
            for _ in range(min(PIPELINE, count - start)):
                pipe.xadd(STREAM, fields)
            pipe.execute()
        sample = Sample(count, time.perf_counter() - started, _cpu_seconds(server) - cpu)
        stored = client.xlen(STREAM)
        client.delete(STREAM)
    if stored != count:
        raise RuntimeError(f"sent {count} XADDs but XLEN is {stored}")
    return sample


def _hiredis_produce(host: str, port: int, value: bytes, count: int, server: int) -> Sample:
    """XADD pipelined over a raw socket: hiredis packs the commands and parses the replies."""
    import hiredis

    command = hiredis.pack_command((b"XADD", STREAM.encode(), b"*", b"v", value))
    with socket.create_connection((host, port)) as connection:
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        reader = hiredis.Reader()

        def call(*args: bytes) -> Any:
            connection.sendall(hiredis.pack_command(args))
            while (reply := reader.gets()) is False:
                reader.feed(connection.recv(65536))
            return reply

        call(b"DEL", STREAM.encode())
        cpu = _cpu_seconds(server)
        started = time.perf_counter()
        for start in range(0, count, PIPELINE):
            batch = min(PIPELINE, count - start)
            connection.sendall(command * batch)
            replies = 0
            while replies < batch:
                reply = reader.gets()
                if reply is False:
                    reader.feed(connection.recv(65536))
                    continue
                if isinstance(reply, hiredis.ReplyError):
                    raise RuntimeError(f"XADD failed: {reply}")
                replies += 1
        sample = Sample(count, time.perf_counter() - started, _cpu_seconds(server) - cpu)
        stored = call(b"XLEN", STREAM.encode())
        call(b"DEL", STREAM.encode())
    if stored != count:
        raise RuntimeError(f"sent {count} XADDs but XLEN is {stored}")
    return sample


def _redis_latencies(url: str, count: int, rate: int) -> list[float]:
    import redis

    producer = redis.Redis.from_url(url)
    consumer = redis.Redis.from_url(url)
    producer.delete(STREAM)

    def receive(stop: threading.Event, sink: Callable[[bytes, int], None]) -> None:
        last = "$"
        while not stop.is_set():
            reply = consumer.xread({STREAM: last}, count=1000, block=50)
            now = time.perf_counter_ns()
            for _stream, entries in reply:
                for entry_id, fields in entries:
                    sink(fields[b"v"], now)
                    last = entry_id

    def send(value: bytes) -> None:
        producer.xadd(STREAM, {b"v": value})

    try:
        return _latencies(send, receive, count, rate)
    finally:
        producer.delete(STREAM)
        producer.close()
        consumer.close()


# --- latency, either system -------------------------------------------------------------


def _latencies(
    send: Callable[[bytes], None],
    receive: Callable[[threading.Event, Callable[[bytes, int], None]], None],
    count: int,
    rate: int,
) -> list[float]:
    """Sends warm-up records until one arrives, then ``count`` at ``rate``/s; latencies in us."""
    padding = bytes(RECORD_BYTES - LATENCY.size)
    latencies: list[float] = []
    seen = threading.Event()
    done = threading.Event()
    stop = threading.Event()
    failure: list[BaseException] = []

    def sink(value: bytes, now_ns: int) -> None:
        sequence, sent_ns = LATENCY.unpack_from(value)
        if sequence < 0:
            seen.set()
            return
        latencies.append((now_ns - sent_ns) / 1000)
        if len(latencies) >= count:
            done.set()

    def consumer() -> None:
        try:
            receive(stop, sink)
        except BaseException as error:
            failure.append(error)
            done.set()
            seen.set()

    thread = threading.Thread(target=consumer, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not seen.wait(0.01):
            if time.monotonic() > deadline:
                raise RuntimeError("the consumer saw no warm-up record within 30 s")
            send(LATENCY.pack(-1, time.perf_counter_ns()) + padding)
        time.sleep(0.2)  # let the last warm-up records drain
        interval = 1.0 / rate
        started = time.perf_counter()
        for sequence in range(count):
            target = started + sequence * interval
            while (wait := target - time.perf_counter()) > 0:
                time.sleep(wait)
            send(LATENCY.pack(sequence, time.perf_counter_ns()) + padding)
        if not done.wait(30):
            raise RuntimeError(f"the consumer got {len(latencies)} of {count} records in 30 s")
        if failure:
            raise failure[0]
    finally:
        stop.set()
        thread.join(timeout=10)
    return sorted(latencies[:count])


# --- the log and the disk --------------------------------------------------------------


def _log_append(
    directory: Path, values: list[bytes], batches: int, fsync: str, payload: bytes | None
) -> tuple[float, int]:
    """(bytes/s the log grew by, bytes per batch on disk), one fresh partition."""
    path = directory / "partition"
    with Partition(path, fsync=fsync) as log:  # type: ignore[arg-type]
        append_records, append_payload = log.append_records, log.append_payload
        started = time.perf_counter()
        for _ in range(batches):
            if payload is None:
                append_records(None, values, 1_000)
            else:
                append_payload(payload, len(values), 1_000, 1_000)
        elapsed = time.perf_counter() - started
        size = log.size_bytes
    shutil.rmtree(path)
    return size / elapsed, size // batches


def _disk_write(directory: Path, chunk: bytes, batches: int, sync: bool) -> float:
    """Bytes/s of ``os.write`` of ``chunk``, ``batches`` times, each synced if ``sync``."""
    path = directory / "sequential"
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        started = time.perf_counter()
        for _ in range(batches):
            view = memoryview(chunk)
            while view:
                view = view[os.write(descriptor, view) :]
            if sync:
                os.fdatasync(descriptor)
        elapsed = time.perf_counter() - started
    finally:
        os.close(descriptor)
        path.unlink()
    return len(chunk) * batches / elapsed


# --- the run ---------------------------------------------------------------------------


def _produce_runs(measure: Callable[[int], Sample], count: int, repeats: int) -> Produced:
    """One warm-up run of a tenth, then the medians of ``repeats`` runs of ``count`` records."""
    measure(max(1000, count // 10))
    return Produced.of([measure(count) for _ in range(repeats)])


def run(scale: Scale, progress: Progress) -> list[Result]:
    """Measure the broker, its log and their baselines; see the module docstring."""
    kafka_records, redis_records, latency_records, latency_rate, log_batches, repeats = SIZES[scale]
    c_records = C_RECORDS[scale]
    c_clients, c_skipped = _c_clients()
    if c_skipped:
        progress(f"skipping the C-client produce rows: {c_skipped}")
    value = os.urandom(RECORD_BYTES)
    # Printable: a kcat line cannot hold a newline, a redis-benchmark argument no NUL.
    c_value = secrets.token_hex(RECORD_BYTES // 2)
    c_kafka: Produced | None = None
    c_redis: Produced | None = None
    results: list[Result] = []
    directory = Path(tempfile.mkdtemp(prefix="sdi-mq-bench-"))
    try:
        results.extend(_log_results(directory, log_batches, repeats, progress))
        lines = directory / "records.txt"
        if c_clients:
            _write_lines(lines, c_value.encode(), c_records)
        with pinned(CLIENT_CPU):
            progress("starting redis-server")
            with RedisServer() as redis_server:
                assert redis_server.process is not None
                redis_pid = redis_server.process.pid
                pin_process(redis_pid, SERVER_CPU)
                url, host, port = redis_server.url, redis_server.host, redis_server.port
                progress(f"redis-py: pipelined XADD, {redis_records:,} records x {repeats}")
                redis_py = _produce_runs(
                    lambda n: _redis_py_produce(url, value, n, redis_pid), redis_records, repeats
                )
                progress(f"hiredis: pipelined XADD, {redis_records:,} records x {repeats}")
                hiredis_ = _produce_runs(
                    lambda n: _hiredis_produce(host, port, value, n, redis_pid),
                    redis_records,
                    repeats,
                )
                if c_clients:
                    progress(f"redis-benchmark: pipelined XADD, {c_records:,} records x {repeats}")
                    benchmark = c_clients["redis-benchmark"]
                    c_redis = _produce_runs(
                        lambda n: _redis_benchmark_produce(
                            benchmark, host, port, c_value, n, redis_pid
                        ),
                        c_records,
                        repeats,
                    )
                progress(f"redis latency: XADD + XREAD BLOCK, {latency_records:,} records")
                redis_latencies = _redis_latencies(redis_server.url, latency_records, latency_rate)

            progress("starting sdi serve mq")
            broker = BrokerProcess(directory / "broker").start()
            assert broker.process is not None
            pin_process(broker.process.pid, SERVER_CPU)
            try:
                _create_topic(broker.bootstrap)
                progress(f"sdi: confluent-kafka produce, {kafka_records:,} records x {repeats}")
                bootstrap, broker_pid = broker.bootstrap, broker.process.pid
                kafka = _produce_runs(
                    lambda n: _kafka_produce(bootstrap, value, n, broker_pid),
                    kafka_records,
                    repeats,
                )
                if c_clients:
                    progress(f"sdi: kcat produce, {c_records:,} records x {repeats}")
                    kcat = c_clients["kcat"]
                    c_kafka = _produce_runs(
                        lambda n: _kcat_produce(kcat, bootstrap, lines, n, broker_pid),
                        c_records,
                        repeats,
                    )
                progress(f"sdi latency: produce + consume, {latency_records:,} records")
                kafka_latencies = _kafka_latencies(broker.bootstrap, latency_records, latency_rate)
            except BaseException:
                broker.kill()
                progress(broker.failure("failed a measurement"))
                raise
            if broker.stop() != 0:
                raise RuntimeError(broker.failure("stopped with a non-zero exit code"))
    finally:
        shutil.rmtree(directory, ignore_errors=True)

    results.insert(
        0,
        Result(
            metric="produce 100 B records, acks=1, batched",
            unit="records/s",
            higher_is_better=True,
            sdi=kafka.rate,
            baselines={
                "redis streams (redis-py)": redis_py.rate,
                "redis streams (hiredis)": hiredis_.rate,
            },
            note=f"confluent-kafka {kafka_records:,} records, linger.ms 5, batch.size 1 MB, "
            f"broker on its default --fsync interval; XADD pipelined {PIPELINE:,} per round "
            f"trip, {redis_records:,} records, no persistence; servers pinned to CPU "
            f"{SERVER_CPU}, clients to CPU {CLIENT_CPU}; goals: >= 1M records/s, >= 3x redis "
            f"streams. Server CPU busy: sdi {kafka.cpu_share:.0%}, redis-server "
            f"{redis_py.cpu_share:.0%} (redis-py), {hiredis_.cpu_share:.0%} (hiredis): "
            "a server below 100% was waiting on its client"
            + (f". C-client rows skipped: {c_skipped}" if c_skipped else ""),
        ),
    )
    results.insert(
        1,
        Result(
            metric="produce, records per server CPU-second",
            unit="records/cpu-s",
            higher_is_better=True,
            sdi=kafka.per_cpu_second,
            baselines={
                "redis streams (redis-py)": redis_py.per_cpu_second,
                "redis streams (hiredis)": hiredis_.per_cpu_second,
            },
            note="the same runs: records over the CPU time (user + system, all threads) "
            "the server process used meanwhile, from /proc/<pid>/stat; what one server "
            "core would take if the client kept up",
        ),
    )
    latency_at = 2
    if c_kafka is not None and c_redis is not None:
        results[2:2] = _c_results(c_kafka, c_redis, c_records)
        latency_at = 4
    for position, (label, fraction) in enumerate([("p50", 0.5), ("p99", 0.99)], start=latency_at):
        results.insert(
            position,
            Result(
                metric=f"end-to-end latency 100 B, {label}",
                unit="us",
                higher_is_better=False,
                sdi=percentile(kafka_latencies, fraction),
                baselines={"redis streams (XREAD BLOCK)": percentile(redis_latencies, fraction)},
                note=f"{latency_records:,} records at {latency_rate:,}/s, producer to consumer "
                "thread in this process; confluent-kafka linger.ms 0, fetch.wait.max.ms 5"
                if label == "p50"
                else "",
            ),
        )
    return results


def _c_results(kafka: Produced, redis: Produced, count: int) -> list[Result]:
    def busy(produced: Produced) -> str:
        client = "?" if produced.client_share is None else f"{produced.client_share:.0%}"
        return f"server {produced.cpu_share:.0%}, client {client}"

    name = "redis streams (redis-benchmark)"
    return [
        Result(
            metric="produce 100 B records, acks=1, C clients",
            unit="records/s",
            higher_is_better=True,
            sdi=kafka.rate,
            baselines={name: redis.rate},
            note=f"{count:,} records a run, each run timed from the client's start to its exit "
            f"(all acknowledged); kcat -P -l from a file, acks=1, linger.ms 5, batch.size 1 MB; "
            f"redis-benchmark -c 1 -P {PIPELINE:,} XADD; clients on CPU {CLIENT_CPU}, servers on "
            f"CPU {SERVER_CPU}; goals: >= 1M records/s, >= 3x redis streams. CPU busy: "
            f"kcat run {busy(kafka)}; redis-benchmark run {busy(redis)} "
            "(a client near 100% is the limit)",
        ),
        Result(
            metric="produce, C clients, records per server CPU-s",
            unit="records/cpu-s",
            higher_is_better=True,
            sdi=kafka.per_cpu_second,
            baselines={name: redis.per_cpu_second},
            note="the same kcat and redis-benchmark runs: records over the server process's "
            "CPU time meanwhile (/proc/<pid>/stat)",
        ),
    ]


def _log_results(directory: Path, batches: int, repeats: int, progress: Progress) -> list[Result]:
    values = [os.urandom(RECORD_BYTES) for _ in range(LOG_BATCH_RECORDS)]
    payload = b"".join(values)
    log_dir = directory / "log"
    log_dir.mkdir(exist_ok=True)
    total = batches * LOG_BATCH_RECORDS
    progress(f"log append vs the disk: {batches} batches of {LOG_BATCH_RECORDS:,} x {repeats}")
    # One batch first: the bytes one batch takes on disk, which the disk baseline writes.
    _, batch_bytes = _log_append(log_dir, values, 1, "never", None)
    _, payload_batch_bytes = _log_append(log_dir, values, 1, "never", payload)
    chunk = os.urandom(batch_bytes)
    payload_chunk = os.urandom(payload_batch_bytes)
    runs: dict[str, list[float]] = collections.defaultdict(list)
    for _ in range(repeats):
        # Interleaved, so that the machine's slow and fast spells fall on every side.
        runs["records"].append(_log_append(log_dir, values, batches, "every_batch", None)[0])
        runs["disk"].append(_disk_write(log_dir, chunk, batches, sync=True))
        runs["payload"].append(_log_append(log_dir, values, batches, "every_batch", payload)[0])
        runs["disk payload"].append(_disk_write(log_dir, payload_chunk, batches, sync=True))
        runs["records never"].append(_log_append(log_dir, values, batches, "never", None)[0])
        runs["disk never"].append(_disk_write(log_dir, chunk, batches, sync=False))
    rate = {name: statistics.median(values) / 1e6 for name, values in runs.items()}
    size = f"{batches} batches of {LOG_BATCH_RECORDS:,} x {RECORD_BYTES} B records"
    return [
        Result(
            metric="log append_records, fsync every batch",
            unit="MB/s",
            higher_is_better=True,
            sdi=rate["records"],
            baselines={"disk: os.write + fdatasync": rate["disk"]},
            note=f"{size} ({batch_bytes / 2**20:.2f} MiB on disk each), "
            f"{rate['records'] * 1e6 / batch_bytes * LOG_BATCH_RECORDS / 1e6:.2f} M records/s; "
            f"{rate['records'] / rate['disk']:.0%} of the disk's rate (goal >= 80%)",
        ),
        Result(
            metric="log append_payload, fsync every batch",
            unit="MB/s",
            higher_is_better=True,
            sdi=rate["payload"],
            baselines={"disk: os.write + fdatasync": rate["disk payload"]},
            note=f"pre-encoded batches as the broker stores them, {payload_batch_bytes:,} B each; "
            f"{rate['payload'] / rate['disk payload']:.0%} of the disk's rate (goal >= 80%)",
        ),
        Result(
            metric="log append_records, fsync never",
            unit="MB/s",
            higher_is_better=True,
            sdi=rate["records never"],
            baselines={"os.write, no sync": rate["disk never"]},
            note=f"{total:,} records per run, into the page cache",
        ),
    ]
