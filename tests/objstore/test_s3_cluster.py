"""The S3 service over six data node processes: node loss, repair, and per-bucket durability."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

boto3 = pytest.importorskip("boto3")
from botocore.exceptions import ClientError  # noqa: E402

from sdi.objstore.blobs import ClusterBlobs  # noqa: E402
from sdi.testing.broker import ServiceProcess  # noqa: E402
from sdi.testing.s3 import S3Server, error_code, s3_client  # noqa: E402

MiB = 1 << 20


def _with_durability(client: Any, durability: str) -> Any:
    """A client whose CreateBucket asks for ``durability`` (sdi's x-sdi-durability header)."""

    def add_header(request: Any, **_: Any) -> None:
        request.headers["x-sdi-durability"] = durability

    client.meta.events.register("before-sign.s3.CreateBucket", add_header)
    return client


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[S3Server]:
    with S3Server(tmp_path, nodes=6, supervise=False, maintenance_interval_s=3600) as server:
        yield server


def _blobs(server: S3Server) -> ClusterBlobs:
    assert server.service is not None
    assert server.service.api is not None
    blobs = server.service.api.blobs
    assert isinstance(blobs, ClusterBlobs)
    return blobs


def _fill(client: Any, bucket: str) -> dict[str, bytes]:
    objects = {
        "empty": b"",
        "one": b"x",
        "odd": os.urandom(1001),
        "mib": os.urandom(MiB + 3),
    }
    for key, body in objects.items():
        client.put_object(Bucket=bucket, Key=key, Body=body)
    parts = [os.urandom(5 * MiB), os.urandom(777)]
    upload_id = client.create_multipart_upload(Bucket=bucket, Key="multi")["UploadId"]
    etags = [
        {"PartNumber": n, "ETag": client.upload_part(
            Bucket=bucket, Key="multi", UploadId=upload_id, PartNumber=n, Body=body)["ETag"]}
        for n, body in enumerate(parts, 1)
    ]  # fmt: skip
    client.complete_multipart_upload(
        Bucket=bucket, Key="multi", UploadId=upload_id, MultipartUpload={"Parts": etags}
    )
    objects["multi"] = b"".join(parts)
    return objects


def _check(client: Any, bucket: str, objects: dict[str, bytes]) -> None:
    for key, body in objects.items():
        assert client.get_object(Bucket=bucket, Key=key)["Body"].read() == body, key
        if len(body) > 10:
            ranged = client.get_object(Bucket=bucket, Key=key, Range="bytes=3-9")["Body"].read()
            assert ranged == body[3:10], key


def test_buckets_choose_their_durability(cluster: S3Server) -> None:
    plain = s3_client(cluster.url)
    plain.create_bucket(Bucket="coded")
    _with_durability(s3_client(cluster.url), "replicas-3").create_bucket(Bucket="copied")
    heads = {
        name: plain.head_bucket(Bucket=name)["ResponseMetadata"]["HTTPHeaders"]["x-sdi-durability"]
        for name in ("coded", "copied")
    }
    assert heads == {"coded": "ec-4+2", "copied": "replicas-3"}
    plain.put_object(Bucket="coded", Key="k", Body=b"a" * 4000)
    plain.put_object(Bucket="copied", Key="k", Body=b"a" * 4000)
    store = _blobs(cluster).store
    schemes = sorted(str(store.stat(data_id).scheme) for data_id in store.data_ids())
    assert schemes == ["ec-4+2", "replicas-3"]
    for bad in ("raid5", "ec-6+2", "replicas-7"):
        with pytest.raises(ClientError) as error:
            _with_durability(s3_client(cluster.url), bad).create_bucket(Bucket="never")
        assert error_code(error.value) == ("InvalidArgument", 400)
    assert [b["Name"] for b in plain.list_buckets()["Buckets"]] == ["coded", "copied"]


def test_reads_survive_two_lost_nodes_and_repair_restores_redundancy(
    cluster: S3Server, tmp_path: Path
) -> None:
    client = s3_client(cluster.url)
    client.create_bucket(Bucket="coded")
    _with_durability(s3_client(cluster.url), "replicas-3").create_bucket(Bucket="copied")
    coded = _fill(client, "coded")
    copied = _fill(client, "copied")
    assert cluster.service is not None
    processes = cluster.service.processes
    assert len(processes) == 6
    # Two nodes die (kill -9); one of them comes back with an empty disk.
    processes[1].kill()
    processes[4].kill()
    _check(client, "coded", coded)
    _check(client, "copied", copied)
    # Writes: replicas-3 needs 2 of 3 and goes on; ec-4+2 needs 5 of 6 up and says to retry.
    client.put_object(Bucket="copied", Key="written-degraded", Body=b"still here")
    copied["written-degraded"] = b"still here"
    with pytest.raises(ClientError) as error:
        client.put_object(Bucket="coded", Key="refused", Body=b"no quorum")
    assert error_code(error.value) == ("ServiceUnavailable", 503)
    with pytest.raises(ClientError):
        client.head_object(Bucket="coded", Key="refused")
    shutil.rmtree(tmp_path / "node-4")
    processes[1].restart()
    processes[4].restart()
    blobs = _blobs(cluster)
    report = blobs.store.repair()
    assert report.lost == []
    assert report.shards_rebuilt > 0
    # Redundancy is whole again: any other two nodes may go now.
    processes[0].kill()
    processes[5].kill()
    _check(client, "coded", coded)
    _check(client, "copied", copied)


def test_a_rotten_shard_is_served_around_and_rebuilt(cluster: S3Server, tmp_path: Path) -> None:
    client = s3_client(cluster.url)
    client.create_bucket(Bucket="coded")
    body = os.urandom(256 * 1024)
    client.put_object(Bucket="coded", Key="victim", Body=body)
    # Flip bytes in the middle of every data file of one node holding a shard.
    store = _blobs(cluster).store
    (data_id,) = list(store.data_ids())
    node = store.stat(data_id).shards[0].node_id
    assert node is not None
    for path in (tmp_path / node / "data").glob("*.dat"):
        raw = bytearray(path.read_bytes())
        middle = len(raw) // 2
        raw[middle : middle + 64] = bytes(64)
        path.write_bytes(bytes(raw))
    assert client.get_object(Bucket="coded", Key="victim")["Body"].read() == body
    report = store.repair()
    assert report.shards_rebuilt >= 1
    assert cluster.service is not None
    for process in cluster.service.processes:
        with process.client() as node:
            assert node.scrub() == []
    assert client.get_object(Bucket="coded", Key="victim")["Body"].read() == body


def _node_pids(data_dir: Path) -> list[int]:
    found = subprocess.run(
        ["pgrep", "-f", f"sdi.objstore.nodeserver.*{data_dir}"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return sorted(int(pid) for pid in found.stdout.split())


def test_sdi_serve_s3_with_node_processes(tmp_path: Path) -> None:
    """``sdi serve s3 --nodes 3``: replicas-3 by default; a dead node is restarted; clean stop."""
    service = ServiceProcess("s3", tmp_path, args=["--nodes", "3"]).start()
    try:
        client = s3_client(f"http://127.0.0.1:{service.port}")
        client.create_bucket(Bucket="three")
        headers = client.head_bucket(Bucket="three")["ResponseMetadata"]["HTTPHeaders"]
        assert headers["x-sdi-durability"] == "replicas-3"
        client.put_object(Bucket="three", Key="k", Body=b"value")
        pids = _node_pids(tmp_path)
        assert len(pids) == 3
        os.kill(pids[0], signal.SIGKILL)
        assert client.get_object(Bucket="three", Key="k")["Body"].read() == b"value"
        deadline = time.monotonic() + 30
        while len(_node_pids(tmp_path)) < 3 and time.monotonic() < deadline:
            time.sleep(0.2)  # the service restarts the node it lost
        assert len(_node_pids(tmp_path)) == 3
        assert pids[0] not in _node_pids(tmp_path)
        assert client.get_object(Bucket="three", Key="k")["Body"].read() == b"value"
    finally:
        assert service.stop() == 0
    assert "restarting it" in "".join(service.output)
    assert _node_pids(tmp_path) == []


def test_metadata_in_postgresql(tmp_path: Path) -> None:
    """``--metadata-url``: the S3 API with its metadata in a real PostgreSQL server."""
    from sdi.testing.servers import PostgresServer, require_postgres

    pytest.importorskip("psycopg")
    with PostgresServer(require_postgres()).start() as postgres:
        url = postgres.create_database()
        for run in range(2):  # the second run finds what the first stored
            with S3Server(tmp_path, metadata_url=url) as server:
                client = s3_client(server.url)
                if run == 0:
                    client.create_bucket(Bucket="pg-bucket")
                    client.put_bucket_versioning(
                        Bucket="pg-bucket", VersioningConfiguration={"Status": "Enabled"}
                    )
                    first = client.put_object(Bucket="pg-bucket", Key="a/1", Body=b"one")
                    client.put_object(Bucket="pg-bucket", Key="a/1", Body=b"two")
                    client.put_object(Bucket="pg-bucket", Key="b", Body=b"bee")
                    with pytest.raises(ClientError) as error:
                        client.put_object(Bucket="pg-bucket", Key="nul\x00key", Body=b"x")
                    assert error_code(error.value) == ("InvalidArgument", 400)
                    continue
                listed = client.list_objects_v2(Bucket="pg-bucket", Delimiter="/")
                assert [o["Key"] for o in listed["Contents"]] == ["b"]
                assert [p["Prefix"] for p in listed["CommonPrefixes"]] == ["a/"]
                assert client.get_object(Bucket="pg-bucket", Key="a/1")["Body"].read() == b"two"
                old = client.get_object(Bucket="pg-bucket", Key="a/1", VersionId=first["VersionId"])
                assert old["Body"].read() == b"one"
                versions = client.list_object_versions(Bucket="pg-bucket")["Versions"]
                assert len(versions) == 3
        assert not (tmp_path / "metadata.sqlite").exists()


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--durability", "raid5"], "unknown durability scheme 'raid5'"),
        (["--nodes", "3", "--durability", "ec-4+2"], "needs 6 data nodes and there are 3"),
        (["--nodes", "0"], "--nodes must be 1 to 64"),
        (["--upload-expiry-days", "-1"], "number of days >= 0"),
    ],
)
def test_sdi_serve_s3_refuses_bad_options(tmp_path: Path, args: list[str], said: str) -> None:
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "sdi.cli", "serve", "s3", "--port", "0", "--data-dir",
         str(tmp_path), *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert said in done.stderr
