"""Real S3 clients, unchanged, against ``sdi serve s3``: the AWS CLI, s3cmd and rclone.

Each client is the Debian package's binary (``make system-deps`` installs them), configured
only through files under a temporary directory, its arguments and its environment: the
caller's ``AWS_*``/``RCLONE_*`` variables are dropped and ``HOME`` is a temporary directory,
so ``~/.aws``, ``~/.s3cfg`` and ``~/.config/rclone`` are never read or written. Each test
class runs its own ``sdi serve s3`` (``ServiceProcess``, on a port the OS picks) and
its tests use distinct buckets.

Bytes are compared exactly and listings with what was uploaded. A client that exits
non-zero raises :class:`ClientFailed` carrying its stderr and the server's output;
:class:`NotImplementedByServer` when the stderr shows sdi's ``501 NotImplemented``.
"""

from __future__ import annotations

import base64
import calendar
import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sdi.objstore.service import DEV_ACCESS_KEY, DEV_SECRET_KEY
from sdi.testing import servers
from sdi.testing.broker import ServiceProcess

#: The key pair ``sdi serve s3`` starts with (it reads the same variables).
ACCESS_KEY = os.environ.get("SDI_S3_ACCESS_KEY") or DEV_ACCESS_KEY
SECRET_KEY = os.environ.get("SDI_S3_SECRET_KEY") or DEV_SECRET_KEY

#: A small directory tree: text, an empty file, binary bytes, a key with spaces and
#: characters SigV4 clients escape differently.
TREE: dict[str, bytes] = {
    "a.txt": b"hello, sdi\n",
    "empty": b"",
    "sub/b.txt": b"b" * 100,
    "sub/deeper/c.bin": random.Random(5).randbytes(200_000),
    "dir with space/ünï cödé+plus&amp=eq.txt": "unicode ✓\n".encode(),
}
BIG_BYTES = 12 << 20  # past a 5 MiB multipart threshold: three 5 MiB (or less) parts


class ClientFailed(Exception):  # noqa: N818 (named for what happened, as pytest shows it)
    """A client exited non-zero; the message has its command line, stderr and stdout."""


class NotImplementedByServer(ClientFailed):
    """A client failed because sdi answered ``501 NotImplemented``."""


@dataclass
class Run:
    """What one client invocation returned."""

    argv: list[str]
    returncode: int
    stdout: bytes
    stderr: str

    @property
    def out(self) -> str:
        return self.stdout.decode("utf-8", errors="replace")


class Client:
    """One S3 client binary with fixed leading arguments and its own environment."""

    def __init__(
        self, name: str, argv: list[str], env: Mapping[str, str], service: ServiceProcess
    ) -> None:
        self.name = name
        self.argv = argv
        self.env = dict(env)
        self.service = service

    def __call__(
        self, *args: str | os.PathLike[str], stdin: bytes | None = None, check: bool = True
    ) -> Run:
        """Runs the client; with ``check``, raises :class:`ClientFailed` unless it exits 0."""
        argv = [*self.argv, *(os.fspath(arg) for arg in args)]
        process = subprocess.run(
            argv,
            input=stdin if stdin is not None else b"",
            capture_output=True,
            env=self.env,
            timeout=120,
            check=False,
        )
        run = Run(argv, process.returncode, process.stdout, process.stderr.decode(errors="replace"))
        if check:
            self.check(run)
        return run

    def many(self, *commands: Sequence[str | os.PathLike[str]], check: bool = True) -> list[Run]:
        """Independent invocations side by side (the AWS CLI takes a second of CPU to start)."""
        with ThreadPoolExecutor(max_workers=min(len(commands), 4)) as pool:
            runs = list(pool.map(lambda command: self(*command, check=False), commands))
        if check:
            for run in runs:
                self.check(run)
        return runs

    def check(self, run: Run) -> None:
        """Raises :class:`ClientFailed` unless ``run`` exited 0."""
        if run.returncode != 0:
            raise self.failure(run)

    def failure(self, run: Run) -> ClientFailed:
        """The exception for a failed ``run``, with the client's stderr and the server's output."""
        kind = NotImplementedByServer if "NotImplemented" in run.stderr else ClientFailed
        printed = "".join(self.service.output[-10:])
        return kind(
            f"{self.name} exited {run.returncode}: {' '.join(run.argv)}\n"
            f"--- {self.name} stderr ---\n{run.stderr.strip()}\n"
            f"--- {self.name} stdout ---\n{run.out[-3000:].strip()}\n"
            f"--- sdi serve s3 printed ---\n{printed.strip()}"
        )


def _client_env(home: Path) -> dict[str, str]:
    """The caller's environment without AWS_*/RCLONE_*/S3CMD* and with HOME at ``home``."""
    drop = ("AWS_", "RCLONE_", "S3CMD", "XDG_", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(drop)}
    home.mkdir(parents=True, exist_ok=True)
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_CACHE_HOME=str(home / ".cache"),
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
        LC_ALL="C.UTF-8",
        LANG="C.UTF-8",
    )
    return env


def _binary(name: str, package: str) -> str:
    """The Debian package's ``name`` (in /usr/bin, ahead of a pip copy earlier on PATH)."""
    path = shutil.which(name, path="/usr/bin") or shutil.which(name)
    if path is None:
        if name == package:
            return servers.require_binary(name)
        servers.missing(
            f"{name} is not installed (Debian package {package}; `make system-deps` installs it)",
            what="client",
        )
    return path


def write_tree(root: Path, files: Mapping[str, bytes]) -> Path:
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def read_tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def prefixed(prefix: str, files: Mapping[str, bytes]) -> dict[str, bytes]:
    return {prefix + name: data for name, data in files.items()}


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def fetch(url: str) -> tuple[int, bytes]:
    """GETs ``url`` (no proxy): the status and the body, also for an error status."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read()


@pytest.fixture(scope="class")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """A fresh ``sdi serve s3`` for one test class."""
    with ServiceProcess("s3", tmp_path_factory.mktemp("objects")) as running:
        yield running


@pytest.fixture(scope="session")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 MiB of random bytes: larger than a 5 MiB multipart threshold."""
    path = tmp_path_factory.mktemp("big") / "big.bin"
    path.write_bytes(random.Random(12).randbytes(BIG_BYTES))
    return path


# -- the AWS CLI ------------------------------------------------------------------------------


@pytest.fixture(scope="class")
def aws(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Client:
    """``aws --endpoint-url ...`` with a config and credentials file of its own."""
    binary = _binary("aws", "awscli")
    running: ServiceProcess = request.getfixturevalue("service")
    home = tmp_path_factory.mktemp("aws-home")
    config = home / "aws-config"
    config.write_text(
        "[default]\nregion = us-east-1\noutput = json\n"
        "s3 =\n    addressing_style = path\n"
        "    multipart_threshold = 5MB\n    multipart_chunksize = 5MB\n"
    )
    credentials = home / "aws-credentials"
    credentials.write_text(
        f"[default]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n"
    )
    env = _client_env(home) | {
        "AWS_CONFIG_FILE": str(config),
        "AWS_SHARED_CREDENTIALS_FILE": str(credentials),
        "AWS_PAGER": "",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    endpoint = f"http://{running.host}:{running.port}"
    return Client("aws", [binary, "--endpoint-url", endpoint], env, running)


def aws_ls(output: str) -> tuple[set[str], dict[str, int]]:
    """``aws s3 ls`` output as (common prefixes, {key: size})."""
    prefixes: set[str] = set()
    objects: dict[str, int] = {}
    for line in output.splitlines():
        if not line.strip():
            continue
        if line.lstrip().startswith("PRE "):
            prefixes.add(line.strip()[len("PRE ") :])
        else:
            _date, _time, size, key = line.split(maxsplit=3)
            objects[key] = int(size)
    return prefixes, objects


def aws_buckets(output: str) -> set[str]:
    """``aws s3 ls`` (no bucket) output as bucket names."""
    return {line.split(maxsplit=2)[2] for line in output.splitlines() if line.strip()}


@pytest.fixture(scope="class")
def boto(request: pytest.FixtureRequest) -> Any:
    """A boto3 client of the class's service, for set-up and for checks beside the CLI's.

    An ``aws`` process costs about a second of CPU, a boto3 call in this process a few
    milliseconds: tests of one AWS CLI operation create their buckets and objects with it.
    """
    boto3 = pytest.importorskip("boto3")
    from botocore.client import Config

    running: ServiceProcess = request.getfixturevalue("service")
    return boto3.client(
        "s3",
        endpoint_url=f"http://{running.host}:{running.port}",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )


def seed(boto: Any, bucket: str, objects: Mapping[str, bytes] | None = None) -> None:
    """Creates ``bucket`` holding ``objects`` (key -> bytes) with boto3."""
    boto.create_bucket(Bucket=bucket)
    for key, data in (objects or {}).items():
        boto.put_object(Bucket=bucket, Key=key, Body=data)


class TestAwsCli:
    def test_mb_cp_ls_sync_rm_rb(self, aws: Client, boto: Any, tmp_path: Path) -> None:
        local = write_tree(tmp_path / "up", TREE)
        data = TREE["sub/deeper/c.bin"]
        aws("s3", "mb", "s3://aws-cli")
        aws.many(
            (
                "s3", "cp", "--no-progress", local / "sub/deeper/c.bin", "s3://aws-cli/top.bin",
                "--metadata", "colour=blue,owner=sdi", "--content-type", "application/x-sdi",
            ),
            ("s3", "sync", "--no-progress", local, "s3://aws-cli/t/"),
        )  # fmt: skip
        head = boto.head_object(Bucket="aws-cli", Key="top.bin")
        assert head["Metadata"] == {"colour": "blue", "owner": "sdi"}
        assert head["ContentType"] == "application/x-sdi"
        assert head["ETag"] == f'"{md5(data)}"'

        runs = aws.many(
            ("s3", "ls"),
            ("s3", "ls", "s3://aws-cli"),
            ("s3", "ls", "s3://aws-cli/t/"),
            ("s3", "ls", "--recursive", "s3://aws-cli"),
            ("s3", "cp", "--no-progress", "s3://aws-cli/top.bin", tmp_path / "top.bin"),
            ("s3", "sync", "--no-progress", "s3://aws-cli/t", tmp_path / "down"),
            ("s3", "sync", "--no-progress", local, "s3://aws-cli/t/"),
            ("s3", "rb", "s3://aws-cli"),
            check=False,
        )
        buckets, root, t_dir, recursive, _cp, _sync, again, refused = runs
        for run in runs[:-1]:
            aws.check(run)
        assert "aws-cli" in aws_buckets(buckets.out)
        assert aws_ls(root.out) == ({"t/"}, {"top.bin": len(data)})
        prefixes, objects = aws_ls(t_dir.out)
        assert prefixes == {"dir with space/", "sub/"}
        assert objects == {"a.txt": len(TREE["a.txt"]), "empty": 0}
        expected = {k: len(v) for k, v in prefixed("t/", TREE).items()} | {"top.bin": len(data)}
        assert aws_ls(recursive.out)[1] == expected
        assert (tmp_path / "top.bin").read_bytes() == data
        assert read_tree(tmp_path / "down") == TREE
        assert again.out.strip() == "", f"a second sync must upload nothing:\n{again.out}"
        assert refused.returncode != 0
        assert "BucketNotEmpty" in refused.stderr, refused.stderr

        removed = aws("s3", "rm", "--recursive", "s3://aws-cli").out
        assert sorted(re.findall(r"^delete: s3://aws-cli/(.*)$", removed, re.M)) == sorted(expected)
        aws("s3", "rb", "s3://aws-cli")
        assert "aws-cli" not in {b["Name"] for b in boto.list_buckets()["Buckets"]}

    def test_s3api_put_get_head_list_range(self, aws: Client, boto: Any, tmp_path: Path) -> None:
        seed(boto, "aws-api", dict.fromkeys(("d/e/1", "d/e/2", "d/f", "g"), b""))
        data = TREE["sub/deeper/c.bin"]
        (tmp_path / "c.bin").write_bytes(data)
        put = aws(
            "s3api", "put-object", "--bucket", "aws-api", "--key", "d/c.bin",
            "--body", tmp_path / "c.bin", "--metadata", "k=v", "--content-type", "image/x-sdi",
        )  # fmt: skip
        assert json.loads(put.out)["ETag"] == f'"{md5(data)}"'
        got, head, listed = aws.many(
            (
                "s3api", "get-object", "--bucket", "aws-api", "--key", "d/c.bin",
                "--range", "bytes=1000-1999", tmp_path / "part",
            ),
            ("s3api", "head-object", "--bucket", "aws-api", "--key", "d/c.bin"),
            # One key or common prefix a page: the CLI follows the continuation tokens.
            (
                "s3api", "list-objects-v2", "--bucket", "aws-api", "--prefix", "d/",
                "--delimiter", "/", "--page-size", "1",
            ),
        )  # fmt: skip
        answer = json.loads(got.out)
        assert (tmp_path / "part").read_bytes() == data[1000:2000]
        assert answer["ContentRange"] == f"bytes 1000-1999/{len(data)}"
        assert answer["ContentLength"] == 1000
        assert answer["Metadata"] == {"k": "v"}
        assert answer["ContentType"] == "image/x-sdi"
        head_answer = json.loads(head.out)
        assert head_answer["ContentLength"] == len(data)
        assert head_answer["ETag"] == f'"{md5(data)}"'
        listing = json.loads(listed.out)
        assert [item["Key"] for item in listing["Contents"]] == ["d/c.bin", "d/f"]
        assert [item["Size"] for item in listing["Contents"]] == [len(data), 0]
        assert [item["Prefix"] for item in listing["CommonPrefixes"]] == ["d/e/"]

    def test_presign(self, aws: Client, boto: Any) -> None:
        seed(boto, "aws-presign", {"p.txt": b"presigned\n"})
        expired, url = (
            run.out.strip()
            for run in aws.many(
                ("s3", "presign", "s3://aws-presign/p.txt", "--expires-in", "1"),
                ("s3", "presign", "s3://aws-presign/p.txt", "--expires-in", "300"),
            )
        )
        assert fetch(url) == (200, b"presigned\n")
        match = re.search(r"X-Amz-Date=(\d{8}T\d{6}Z)", expired)
        assert match is not None, expired
        signed = calendar.timegm(time.strptime(match.group(1), "%Y%m%dT%H%M%SZ"))
        time.sleep(max(0.0, signed + 2.1 - time.time()))
        status, body = fetch(expired)
        assert status == 403, body
        assert b"<Code>AccessDenied</Code>" in body, body

    def test_cp_standard_headers(self, aws: Client, boto: Any) -> None:
        seed(boto, "aws-headers")
        aws(
            "s3", "cp", "-", "s3://aws-headers/h.txt", "--cache-control", "max-age=60",
            "--content-disposition", 'attachment; filename="h.txt"',
            "--content-encoding", "identity", "--content-language", "en",
            stdin=b"headers\n",
        )  # fmt: skip
        head = boto.head_object(Bucket="aws-headers", Key="h.txt")
        assert {k: head.get(k) for k in ("CacheControl", "ContentDisposition")} == {
            "CacheControl": "max-age=60",
            "ContentDisposition": 'attachment; filename="h.txt"',
        }
        assert (head.get("ContentEncoding"), head.get("ContentLanguage")) == ("identity", "en")

    def test_get_object_range_past_the_end(self, aws: Client, boto: Any, tmp_path: Path) -> None:
        seed(boto, "aws-range", {"six": b"hello\n"})
        got = aws(
            "s3api", "get-object", "--bucket", "aws-range", "--key", "six",
            "--range", "bytes=100-", tmp_path / "out", check=False,
        )  # fmt: skip
        assert got.returncode != 0, f"answered {got.out}"
        assert "InvalidRange" in got.stderr, got.stderr

    def test_put_object_checks_sha256(self, aws: Client, boto: Any, tmp_path: Path) -> None:
        seed(boto, "aws-checksum")
        (tmp_path / "body").write_bytes(b"checked\n")
        wrong = base64.b64encode(hashlib.sha256(b"something else").digest()).decode()
        put = aws(
            "s3api", "put-object", "--bucket", "aws-checksum", "--key", "k",
            "--body", tmp_path / "body", "--checksum-sha256", wrong, check=False,
        )  # fmt: skip
        assert put.returncode != 0, f"answered {put.out}"
        assert "BadDigest" in put.stderr, put.stderr

    def test_cp_multipart(self, aws: Client, boto: Any, big_file: Path, tmp_path: Path) -> None:
        seed(boto, "aws-multipart")
        aws("s3", "cp", "--no-progress", big_file, "s3://aws-multipart/big.bin")
        head = boto.head_object(Bucket="aws-multipart", Key="big.bin")
        assert head["ContentLength"] == BIG_BYTES
        assert head["ETag"].endswith('-3"'), head["ETag"]  # three parts
        aws("s3", "cp", "--no-progress", "s3://aws-multipart/big.bin", tmp_path / "big.bin")
        assert (tmp_path / "big.bin").read_bytes() == big_file.read_bytes()

    def test_cp_server_side(self, aws: Client, boto: Any) -> None:
        seed(boto, "aws-copy", {"x": b"copy me\n"})
        aws("s3", "cp", "--no-progress", "s3://aws-copy/x", "s3://aws-copy/y")
        assert boto.get_object(Bucket="aws-copy", Key="y")["Body"].read() == b"copy me\n"

    def test_mv(self, aws: Client, boto: Any) -> None:
        seed(boto, "aws-mv", {"x": b"move me\n"})
        aws("s3", "mv", "--no-progress", "s3://aws-mv/x", "s3://aws-mv/y")
        listed = boto.list_objects_v2(Bucket="aws-mv")["Contents"]
        assert [(item["Key"], item["Size"]) for item in listed] == [("y", 8)]
        assert boto.get_object(Bucket="aws-mv", Key="y")["Body"].read() == b"move me\n"


# -- s3cmd ------------------------------------------------------------------------------------


@pytest.fixture(scope="class")
def s3cmd(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Client:
    """``s3cmd -c FILE`` with path-style addressing, SigV4 and plain HTTP."""
    binary = _binary("s3cmd", "s3cmd")
    running: ServiceProcess = request.getfixturevalue("service")
    home = tmp_path_factory.mktemp("s3cmd-home")
    config = home / "s3cfg"
    address = f"{running.host}:{running.port}"
    config.write_text(
        "[default]\n"
        f"access_key = {ACCESS_KEY}\nsecret_key = {SECRET_KEY}\n"
        f"host_base = {address}\nhost_bucket = {address}\n"
        "use_https = False\nbucket_location = us-east-1\nsignature_v2 = False\n"
        "progress_meter = False\n"
    )
    return Client("s3cmd", [binary, "-c", str(config)], _client_env(home), running)


def s3cmd_ls(output: str) -> tuple[set[str], dict[str, int]]:
    """``s3cmd ls``/``la`` output as (DIR prefixes, {s3://bucket/key: size})."""
    prefixes: set[str] = set()
    objects: dict[str, int] = {}
    for line in output.splitlines():
        before, found, uri = line.partition("s3://")
        if not found:
            continue
        fields = before.split()
        if fields[-1] == "DIR":
            prefixes.add(found + uri)
        else:
            objects[found + uri] = int(fields[-1])
    return prefixes, objects


class TestS3cmd:
    def test_mb_put_ls_la_get_info_del_rb(self, s3cmd: Client, tmp_path: Path) -> None:
        local = write_tree(tmp_path / "up", TREE)
        s3cmd("mb", "s3://s3cmd-basic")
        listed = s3cmd("ls").out
        assert re.search(r"^\S+ \S+\s+s3://s3cmd-basic$", listed, re.MULTILINE), listed
        name = "dir with space/ünï cödé+plus&amp=eq.txt"
        s3cmd("put", local / name, f"s3://s3cmd-basic/{name}")
        s3cmd("put", local / "sub/deeper/c.bin", "s3://s3cmd-basic/sub/c.bin")
        s3cmd(
            "put", "--mime-type=text/x-sdi", "--add-header=x-amz-meta-colour:blue",
            local / "a.txt", "s3://s3cmd-basic/a.txt",
        )  # fmt: skip
        s3cmd("put", local / "empty", "s3://s3cmd-basic/empty")

        prefixes, objects = s3cmd_ls(s3cmd("ls", "s3://s3cmd-basic").out)
        assert prefixes == {"s3://s3cmd-basic/dir with space/", "s3://s3cmd-basic/sub/"}
        assert objects == {"s3://s3cmd-basic/a.txt": 11, "s3://s3cmd-basic/empty": 0}
        _, recursive = s3cmd_ls(s3cmd("ls", "--recursive", "s3://s3cmd-basic").out)
        expected = {
            f"s3://s3cmd-basic/{name}": len(TREE[name]),
            "s3://s3cmd-basic/sub/c.bin": len(TREE["sub/deeper/c.bin"]),
            "s3://s3cmd-basic/a.txt": 11,
            "s3://s3cmd-basic/empty": 0,
        }
        assert recursive == expected
        _, everything = s3cmd_ls(s3cmd("la", "--recursive").out)
        assert everything.items() >= expected.items()

        s3cmd("get", f"s3://s3cmd-basic/{name}", tmp_path / "u.txt")
        assert (tmp_path / "u.txt").read_bytes() == TREE[name]
        s3cmd("get", "s3://s3cmd-basic/sub/c.bin", tmp_path / "c.bin")
        assert (tmp_path / "c.bin").read_bytes() == TREE["sub/deeper/c.bin"]
        assert s3cmd("get", "s3://s3cmd-basic/a.txt", "-").stdout == TREE["a.txt"]

        info = s3cmd("info", "s3://s3cmd-basic/a.txt").out
        assert re.search(r"File size:\s+11$", info, re.MULTILINE), info
        assert re.search(r"MIME type:\s+text/x-sdi$", info, re.MULTILINE), info
        assert re.search(rf"MD5 sum:\s+{md5(TREE['a.txt'])}$", info, re.MULTILINE), info
        assert re.search(r"x-amz-meta-colour:\s+blue$", info, re.MULTILINE), info
        assert "x-amz-meta-s3cmd-attrs:" in info  # s3cmd's --preserve metadata
        bucket_info = s3cmd("info", "s3://s3cmd-basic").out
        assert re.search(r"Location:\s+us-east-1$", bucket_info, re.MULTILINE), bucket_info

        refused = s3cmd("rb", "s3://s3cmd-basic", check=False)
        assert refused.returncode != 0
        assert "BucketNotEmpty" in refused.stderr, refused.stderr
        s3cmd("del", "s3://s3cmd-basic/a.txt")
        s3cmd("del", "--recursive", "--force", "s3://s3cmd-basic/sub/")
        _, objects = s3cmd_ls(s3cmd("ls", "--recursive", "s3://s3cmd-basic").out)
        assert set(objects) == {f"s3://s3cmd-basic/{name}", "s3://s3cmd-basic/empty"}
        s3cmd("del", "--recursive", "--force", "s3://s3cmd-basic")
        s3cmd("rb", "s3://s3cmd-basic")
        assert "s3://s3cmd-basic" not in s3cmd("ls").out

    def test_sync(self, s3cmd: Client, tmp_path: Path) -> None:
        local = write_tree(tmp_path / "up", TREE)
        s3cmd("mb", "s3://s3cmd-sync")
        s3cmd("sync", f"{local}/", "s3://s3cmd-sync/t/")
        _, objects = s3cmd_ls(s3cmd("ls", "--recursive", "s3://s3cmd-sync").out)
        assert objects == {f"s3://s3cmd-sync/t/{k}": len(v) for k, v in TREE.items()}
        again = s3cmd("sync", f"{local}/", "s3://s3cmd-sync/t/")
        assert "upload:" not in again.out, f"a second sync must upload nothing:\n{again.out}"

        s3cmd("sync", "s3://s3cmd-sync/t/", f"{tmp_path / 'down'}/")
        assert read_tree(tmp_path / "down") == TREE

        (local / "a.txt").unlink()
        (local / "sub/b.txt").write_bytes(b"changed")
        s3cmd("sync", "--delete-removed", f"{local}/", "s3://s3cmd-sync/t/")
        _, objects = s3cmd_ls(s3cmd("ls", "--recursive", "s3://s3cmd-sync").out)
        now = read_tree(local)
        assert objects == {f"s3://s3cmd-sync/t/{k}": len(v) for k, v in now.items()}
        assert s3cmd("get", "s3://s3cmd-sync/t/sub/b.txt", "-").stdout == b"changed"

    def test_signurl(self, s3cmd: Client, tmp_path: Path) -> None:
        (tmp_path / "s.txt").write_bytes(b"signed\n")
        s3cmd("mb", "s3://s3cmd-signurl")
        s3cmd("put", tmp_path / "s.txt", "s3://s3cmd-signurl/s.txt")
        url = s3cmd("signurl", "s3://s3cmd-signurl/s.txt", "+300").out.strip()
        assert fetch(url) == (200, b"signed\n")

    def test_put_multipart(self, s3cmd: Client, big_file: Path, tmp_path: Path) -> None:
        s3cmd("mb", "s3://s3cmd-multipart")
        s3cmd("put", "--multipart-chunk-size-mb=5", big_file, "s3://s3cmd-multipart/big.bin")
        _, objects = s3cmd_ls(s3cmd("ls", "s3://s3cmd-multipart").out)
        assert objects == {"s3://s3cmd-multipart/big.bin": BIG_BYTES}
        s3cmd("get", "s3://s3cmd-multipart/big.bin", tmp_path / "big.bin")
        assert (tmp_path / "big.bin").read_bytes() == big_file.read_bytes()

    def test_cp_and_mv(self, s3cmd: Client, tmp_path: Path) -> None:
        s3cmd("mb", "s3://s3cmd-copy")
        (tmp_path / "x").write_bytes(b"copy me\n")
        s3cmd("put", tmp_path / "x", "s3://s3cmd-copy/x")
        s3cmd("cp", "s3://s3cmd-copy/x", "s3://s3cmd-copy/y")
        s3cmd("mv", "s3://s3cmd-copy/x", "s3://s3cmd-copy/z")
        _, objects = s3cmd_ls(s3cmd("ls", "s3://s3cmd-copy").out)
        assert objects == {"s3://s3cmd-copy/y": 8, "s3://s3cmd-copy/z": 8}
        assert s3cmd("get", "s3://s3cmd-copy/z", "-").stdout == b"copy me\n"


# -- rclone -----------------------------------------------------------------------------------


@pytest.fixture(scope="class")
def rclone(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Client:
    """``rclone --config FILE`` with a remote ``sdi:`` (provider Other, path-style)."""
    binary = _binary("rclone", "rclone")
    running: ServiceProcess = request.getfixturevalue("service")
    home = tmp_path_factory.mktemp("rclone-home")
    config = home / "rclone.conf"
    config.write_text(
        "[sdi]\ntype = s3\nprovider = Other\n"
        f"access_key_id = {ACCESS_KEY}\nsecret_access_key = {SECRET_KEY}\n"
        f"region = us-east-1\nendpoint = http://{running.host}:{running.port}\n"
        "force_path_style = true\n"
    )
    # One attempt: a failure shows at once (low-level retries still cover the network).
    argv = [binary, "--config", str(config), "--retries", "1"]
    return Client("rclone", argv, _client_env(home), running)


class TestRclone:
    def test_mkdir_copy_ls_check_delete_purge(self, rclone: Client, tmp_path: Path) -> None:
        local = write_tree(tmp_path / "up", TREE)
        rclone("mkdir", "sdi:rclone-basic")
        assert "rclone-basic/" in rclone("lsf", "sdi:").out.split()
        rclone("copy", local, "sdi:rclone-basic/t")

        files = rclone("lsf", "-R", "--files-only", "sdi:rclone-basic").out.splitlines()
        assert sorted(files) == sorted(prefixed("t/", TREE))
        for version in ("1", "2"):  # both listing APIs, two keys a page
            paged = rclone(
                "lsf", "-R", "--files-only", "--s3-list-version", version, "--s3-list-chunk", "2",
                "sdi:rclone-basic",
            )  # fmt: skip
            assert sorted(paged.out.splitlines()) == sorted(files)
        top = rclone("lsf", "sdi:rclone-basic/t").out.splitlines()
        assert sorted(top) == ["a.txt", "dir with space/", "empty", "sub/"]
        sizes = {}
        for line in rclone("lsl", "sdi:rclone-basic/t").out.splitlines():
            size, _date, _time, name = line.split(maxsplit=3)
            sizes[name] = int(size)
        assert sizes == {k: len(v) for k, v in TREE.items()}

        # check compares the MD5 of each local file with the object's ETag.
        checked = rclone("check", local, "sdi:rclone-basic/t")
        assert f"{len(TREE)} matching files" in checked.stderr, checked.stderr
        sums = {}
        for line in rclone("md5sum", "sdi:rclone-basic/t").out.splitlines():
            digest, name = line.split("  ", 1)
            sums[name] = digest
        assert sums == {k: md5(v) for k, v in TREE.items()}

        data = TREE["sub/deeper/c.bin"]
        part = rclone("cat", "--offset", "1000", "--count", "500", "sdi:rclone-basic/t/sub/deeper")
        assert part.stdout == data[1000:1500]
        assert rclone("cat", "--tail", "7", "sdi:rclone-basic/t/sub/deeper").stdout == data[-7:]
        rclone("rcat", "sdi:rclone-basic/streamed.txt", stdin=b"from stdin\n")
        assert rclone("cat", "sdi:rclone-basic/streamed.txt").stdout == b"from stdin\n"
        link = rclone("link", "--expire", "5m", "sdi:rclone-basic/streamed.txt").out.strip()
        assert fetch(link) == (200, b"from stdin\n")  # a SigV4 presigned URL

        rclone("copy", "sdi:rclone-basic/t", tmp_path / "down")
        assert read_tree(tmp_path / "down") == TREE

        rclone("delete", "sdi:rclone-basic/t", "--include", "*.txt")
        remaining = rclone("lsf", "-R", "--files-only", "sdi:rclone-basic").out.splitlines()
        expected = {f"t/{k}" for k in TREE if not k.endswith(".txt")}
        assert set(remaining) == expected | {"streamed.txt"}
        rclone("purge", "sdi:rclone-basic")
        assert "rclone-basic/" not in rclone("lsf", "sdi:").out.split()

    def test_copy_multipart(self, rclone: Client, big_file: Path, tmp_path: Path) -> None:
        rclone("mkdir", "sdi:rclone-multipart")
        rclone(
            "copyto", "--s3-upload-cutoff", "5M", "--s3-chunk-size", "5M",
            big_file, "sdi:rclone-multipart/big.bin",
        )  # fmt: skip
        rclone("check", big_file.parent, "sdi:rclone-multipart")
        rclone("copyto", "sdi:rclone-multipart/big.bin", tmp_path / "big.bin")
        assert (tmp_path / "big.bin").read_bytes() == big_file.read_bytes()

    def test_cleanup(self, rclone: Client) -> None:
        # Lists the bucket's unfinished multipart uploads and aborts the old ones.
        rclone("mkdir", "sdi:rclone-cleanup")
        rclone("cleanup", "sdi:rclone-cleanup")
        listed = json.loads(rclone("backend", "list-multipart-uploads", "sdi:rclone-cleanup").out)
        assert listed == {"rclone-cleanup": []}

    def test_server_side_copy_and_move(self, rclone: Client) -> None:
        rclone("mkdir", "sdi:rclone-copy")
        rclone("rcat", "sdi:rclone-copy/x", stdin=b"copy me\n")
        rclone("copyto", "sdi:rclone-copy/x", "sdi:rclone-copy/y")
        rclone("moveto", "sdi:rclone-copy/x", "sdi:rclone-copy/z")
        assert rclone("lsf", "sdi:rclone-copy").out.split() == ["y", "z"]
        assert rclone("cat", "sdi:rclone-copy/z").stdout == b"copy me\n"

    def test_copy_updates_a_changed_mtime(self, rclone: Client, tmp_path: Path) -> None:
        # Same size and MD5, newer mtime: rclone rewrites the object's metadata in place
        # with a CopyObject onto itself (x-amz-metadata-directive: REPLACE).
        local = write_tree(tmp_path / "up", {"m.txt": b"same bytes\n"})
        rclone("mkdir", "sdi:rclone-mtime")
        rclone("copy", local, "sdi:rclone-mtime")
        later = time.time() + 3600
        os.utime(local / "m.txt", (later, later))
        rclone("copy", local, "sdi:rclone-mtime")
        _size, date, clock, _name = rclone("lsl", "sdi:rclone-mtime").out.split()
        assert f"{date} {clock[:8]}" == time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(later))
