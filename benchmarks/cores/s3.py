"""The S3 API: ``sdi serve s3`` through boto3, beside a plain file on the same disk.

The server runs as its own process (``sdi serve s3``, SigV4 with the dev
key pair, path-style addressing), pinned to CPU 0; the client runs here, on
CPU 1 (when there are two). Everything lives in one temporary directory, so
the server's data and the baseline files share a disk. The service stores
as it does by default: six in-process data nodes, new buckets erasure-coded
4+2 (each object becomes six pieces on six nodes, each piece synced).

* **PUT 64 MiB objects**: boto3 ``put_object`` of the same random bytes,
  one object a call, a fresh key each, timed from the call to its return
  (the service has checked SigV4's SHA-256 and the MD5, stored the six
  pieces with ``fdatasync`` on their nodes, and committed the placement row
  and the metadata, before it answers). Baseline: ``os.write`` of the
  same bytes to a new file in the same directory, then ``os.fsync``.
  Interleaved repeat by repeat, so a noisy spell hits both.
* **GET 64 MiB objects**: boto3 ``get_object`` and ``Body.read()`` of each
  object just written, beside ``os.read`` of each file just written (both
  from the page cache, most likely). The first GET must return exactly the
  bytes PUT, or the run fails.
* **small-object PUTs**: 4 KiB objects, sequential, one client, a fresh key
  each: boto3 ``put_object``, beside ``open``/``write``/``fsync``/``close``
  of a new 4 KiB file each, and beside one data node's storage
  (``sdi.objstore.datanode.DataNode.put``, fsync on) called in this process:
  what HTTP, SigV4, six pieces and the metadata store add on top of storage.
"""

from __future__ import annotations

import collections
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from harness import Progress, Result, Scale, pin_process, pinned, two_cpus  # noqa: E402
from sdi.objstore.datanode import DataNode  # noqa: E402
from sdi.testing.broker import ServiceProcess  # noqa: E402

SERVER_CPU = 0
CLIENT_CPU = 1
ACCESS_KEY = "sdi"
SECRET_KEY = "sdi-secret-key"
BUCKET = "sdi-bench"
SMALL_BYTES = 4096
MB = 1e6

SIZES = {
    # scale: (large object bytes, large repeats, small objects per run, small repeats)
    "tiny": (1 << 20, 2, 50, 1),
    "quick": (64 << 20, 3, 300, 3),
    "full": (64 << 20, 7, 1000, 5),
}


def _client(url: str) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        config=Config(s3={"addressing_style": "path"}, signature_version="s3v4"),
    )


# --- the plain-file baselines ----------------------------------------------------------


def _file_write(path: Path, data: bytes) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(descriptor, view) :]
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _file_read(path: Path) -> bytes:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(descriptor).st_size
        buffer = bytearray(size)
        view = memoryview(buffer)
        done = 0
        while done < size:
            count = os.readv(descriptor, [view[done:]])
            if count == 0:
                break
            done += count
        return bytes(buffer) if done == size else bytes(buffer[:done])
    finally:
        os.close(descriptor)


def _timed(work: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    answer = work()
    return time.perf_counter() - started, answer


# --- the run ---------------------------------------------------------------------------


def _large(
    client: Any, directory: Path, size: int, repeats: int, progress: Progress
) -> dict[str, float]:
    """Median MB/s of PUT and GET through boto3 and of the plain-file write and read."""
    data = os.urandom(size)
    files = directory / "files"
    files.mkdir()
    runs: dict[str, list[float]] = collections.defaultdict(list)
    progress(f"PUT {size / 2**20:g} MiB objects x {repeats}, beside write + fsync of a file")
    for repeat in range(repeats):
        seconds, _ = _timed(
            lambda r=repeat: client.put_object(Bucket=BUCKET, Key=f"large-{r}", Body=data)
        )
        runs["put"].append(size / seconds / MB)
        seconds, _ = _timed(lambda r=repeat: _file_write(files / f"large-{r}", data))
        runs["file write"].append(size / seconds / MB)
    progress(f"GET {size / 2**20:g} MiB objects x {repeats}, beside reading the files back")
    for repeat in range(repeats):
        seconds, got = _timed(
            lambda r=repeat: client.get_object(Bucket=BUCKET, Key=f"large-{r}")["Body"].read()
        )
        if repeat == 0 and got != data:
            raise RuntimeError(
                f"GET large-0 returned {len(got):,} bytes that differ from the {size:,} PUT"
            )
        if len(got) != size:
            raise RuntimeError(f"GET large-{repeat} returned {len(got):,} bytes, not {size:,}")
        runs["get"].append(size / seconds / MB)
        seconds, read = _timed(lambda r=repeat: _file_read(files / f"large-{r}"))
        if len(read) != size:
            raise RuntimeError(f"the file large-{repeat} read back {len(read):,} bytes")
        runs["file read"].append(size / seconds / MB)
    shutil.rmtree(files)
    return {name: statistics.median(values) for name, values in runs.items()}


def _small(
    client: Any, directory: Path, count: int, repeats: int, progress: Progress
) -> dict[str, float]:
    """Median 4 KiB PUTs/s: boto3, a new file with fsync each, DataNode.put in-process."""
    data = os.urandom(SMALL_BYTES)
    runs: dict[str, list[float]] = collections.defaultdict(list)
    progress(f"small PUTs: {count:,} x {SMALL_BYTES:,} B x {repeats}, beside files and DataNode")
    node = DataNode(directory / "node")
    try:
        for repeat in range(repeats):
            started = time.perf_counter()
            for index in range(count):
                client.put_object(Bucket=BUCKET, Key=f"small-{repeat}-{index}", Body=data)
            runs["put"].append(count / (time.perf_counter() - started))

            files = directory / f"small-{repeat}"
            files.mkdir()
            started = time.perf_counter()
            for index in range(count):
                with open(files / f"small-{index}", "wb") as file:
                    file.write(data)
                    file.flush()
                    os.fsync(file.fileno())
            runs["files"].append(count / (time.perf_counter() - started))
            shutil.rmtree(files)

            started = time.perf_counter()
            for index in range(count):
                node.put(f"small-{repeat}-{index}", data)
            runs["datanode"].append(count / (time.perf_counter() - started))
    finally:
        node.close()
    got = client.get_object(Bucket=BUCKET, Key="small-0-0")["Body"].read()
    if got != data:
        raise RuntimeError(f"GET small-0-0 returned {len(got):,} bytes that differ from those PUT")
    return {name: statistics.median(values) for name, values in runs.items()}


def run(scale: Scale, progress: Progress) -> list[Result]:
    """Measure the S3 service and its baselines; see the module docstring."""
    large_bytes, large_repeats, small_count, small_repeats = SIZES[scale]
    directory = Path(tempfile.mkdtemp(prefix="sdi-s3-bench-"))
    try:
        with pinned(CLIENT_CPU):
            progress("starting sdi serve s3")
            server = ServiceProcess("s3", directory / "server").start()
            assert server.process is not None
            pin_process(server.process.pid, SERVER_CPU)
            try:
                client = _client(f"http://{server.host}:{server.port}")
                client.create_bucket(Bucket=BUCKET)
                # Warm-up: the connection, SigV4 key derivation, the server's worker threads.
                client.put_object(Bucket=BUCKET, Key="warm-up", Body=os.urandom(1 << 20))
                client.get_object(Bucket=BUCKET, Key="warm-up")["Body"].read()
                large = _large(client, directory, large_bytes, large_repeats, progress)
                small = _small(client, directory, small_count, small_repeats, progress)
                client.close()
            except BaseException:
                server.kill()
                progress(server.failure("failed a measurement"))
                raise
            if server.stop() != 0:
                raise RuntimeError(server.failure("stopped with a non-zero exit code"))
    finally:
        shutil.rmtree(directory, ignore_errors=True)

    mib = f"{large_bytes / 2**20:g} MiB"
    pinning = (
        f"server pinned to CPU {SERVER_CPU}, boto3 client to CPU {CLIENT_CPU}"
        if two_cpus()
        else "one CPU: server and client share it"
    )
    return [
        Result(
            metric=f"PUT {mib} objects, boto3",
            unit="MB/s",
            higher_is_better=True,
            sdi=large["put"],
            baselines={"file: os.write + fsync": large["file write"]},
            note=f"median of {large_repeats} objects of {mib}, a fresh key each; sdi serve "
            f"s3 (SigV4, path-style, ec-4+2 over six in-process nodes, fdatasync per piece) "
            f"over loopback HTTP, {pinning}; "
            f"the baseline writes the same bytes to a new file in the same directory; "
            f"sdi at {large['put'] / large['file write']:.0%} of the file. Goal (issue 5): "
            "report these side by side; the issue sets no number for S3",
        ),
        Result(
            metric=f"GET {mib} objects, boto3",
            unit="MB/s",
            higher_is_better=True,
            sdi=large["get"],
            baselines={"file: os.read": large["file read"]},
            note="the objects and files just written, so both read from the page cache; "
            "get_object + Body.read(), the first checked byte for byte against what was PUT; "
            f"sdi at {large['get'] / large['file read']:.0%} of the file",
        ),
        Result(
            metric=f"small PUTs {SMALL_BYTES // 1024} KiB, sequential",
            unit="objects/s",
            higher_is_better=True,
            sdi=small["put"],
            baselines={
                "file: open/write/fsync/close": small["files"],
                "DataNode.put in-process": small["datanode"],
            },
            note=f"median of {small_repeats} runs of {small_count:,} put_object calls, one "
            "client, one connection; files: a new file each with fsync; DataNode.put: one "
            "data node's storage (fdatasync + SQLite commit; the service writes six pieces), "
            "no HTTP, SigV4 or metadata store",
        ),
    ]
