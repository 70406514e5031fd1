"""redis-py's own sorted-set tests, from its source distribution, against the leaderboard server.

The sdist of the installed redis-py (``redis==<version>``) holds its test
suite; this module runs the suite's sorted-set tests (``test_z*`` of
``tests/test_commands.py``, and of ``tests/test_asyncio/test_commands.py``
when ``pytest-asyncio`` can be had) with redis-py's own ``conftest.py``, in a
subprocess pointed at an in-memory :class:`LeaderboardServer` by
``--redis-url``, once in RESP3 (redis-py's default) and once in RESP2.

The suite decides what to run from ``INFO``: a test for a newer server than
the ``redis_version`` sdi reports (7.0.15) is skipped by redis-py itself, and
only such skips are accepted. The blocking pops (``test_bzpopmin``,
``test_bzpopmax``, ``test_bzmpop``) run too.

Where the sdist comes from: the path in ``SDI_REDIS_PY_SDIST`` (the
``.tar.gz`` or a directory it was extracted to), else
``build/redis-py-sdist/redis-<version>.tar.gz``, which ``pip download``
fetches from PyPI when it is not there (``pytest-asyncio`` likewise goes to
``build/redis-py-sdist/plugins``). Without network the test is skipped, and
under ``CI=true`` it fails (:func:`sdi.testing.servers.missing`).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from sdi.leaderboard import LeaderboardServer
from sdi.testing import servers

from .conftest import running

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / "build" / "redis-py-sdist"
VERSION = redis.__version__
#: The pytest-asyncio the asynchronous tests run with when the venv has none
#: (redis-py's dev requirements ask for >= 0.24).
PYTEST_ASYNCIO = "pytest-asyncio==1.5.0"

#: redis-py's sorted-set tests: its ``test_z*`` functions (ZADD ... ZSCAN, ZMPOP,
#: ZRANGESTORE, ZUNION/ZINTER/ZDIFF/ZINTERCARD and the *STORE forms) and ``test_bz*``.
SELECT = "(test_z or test_bz)"
#: The only skips accepted: redis-py's own gate for a newer server than sdi claims.
VERSION_SKIP = re.compile(r"Redis version required >= (\d+)\.(\d+)")
PIP_TIMEOUT = 180


@dataclass
class Outcome:
    """One run of redis-py's pytest, from its JUnit XML report."""

    exit_code: int
    output: str
    passed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


def _pip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            *(sys.executable, "-m", "pip", *args),
            *("--disable-pip-version-check", "--no-input", "--retries", "2", "--timeout", "30"),
        ],
        capture_output=True,
        text=True,
        timeout=PIP_TIMEOUT,
        check=False,
    )


def _fetched_sdist() -> Path:
    """The cached sdist of the installed redis-py; downloaded with pip if it is missing."""
    wanted = CACHE / f"redis-{VERSION}.tar.gz"
    if wanted.exists():
        return wanted
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as scratch:
        try:
            result = _pip(
                "download", "--no-deps", "--no-binary", ":all:", f"redis=={VERSION}", "-d", scratch
            )
        except subprocess.TimeoutExpired:
            servers.missing(f"pip download redis=={VERSION} took over {PIP_TIMEOUT} s", "sdist")
        found = list(Path(scratch).glob("redis-*.tar.gz"))
        if result.returncode != 0 or not found:
            tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
            servers.missing(
                f"cannot download the redis=={VERSION} sdist from PyPI: {' | '.join(tail)}",
                "sdist",
            )
        found[0].replace(wanted)
    return wanted


def _source_tree(tmp: Path) -> Path:
    """redis-py's source tree with its tests (``SDI_REDIS_PY_SDIST``, else the cached sdist)."""
    given = os.environ.get("SDI_REDIS_PY_SDIST")
    sdist = Path(given) if given else _fetched_sdist()
    if sdist.is_dir():
        tree = sdist
    elif sdist.is_file():
        with tarfile.open(sdist) as archive:
            archive.extractall(tmp, filter="data")
        tops = [path for path in tmp.iterdir() if path.is_dir()]
        if len(tops) != 1:
            pytest.fail(f"{sdist} is not an sdist (top-level directories: {tops})")
        tree = tops[0]
    else:
        pytest.fail(f"SDI_REDIS_PY_SDIST={given}: no such file or directory")
    if not (tree / "tests" / "conftest.py").exists():
        servers.missing(f"{sdist} holds no tests/conftest.py: this sdist ships no tests", "sdist")
    return tree


def _asyncio_plugin() -> list[str] | None:
    """PYTHONPATH entries giving pytest-asyncio ([] if the venv has it); None: not to be had."""
    if importlib.util.find_spec("pytest_asyncio") is not None:
        return []
    target = CACHE / "plugins"
    if not (target / "pytest_asyncio").is_dir():
        try:
            result = _pip(
                "install", "--no-deps", "--quiet", "--target", str(target), PYTEST_ASYNCIO
            )
        except subprocess.TimeoutExpired:
            return None
        if result.returncode != 0:
            shutil.rmtree(target, ignore_errors=True)
            return None
    return [str(target)]


def _run_suite(
    tree: Path, port: int, files: list[str], protocol: int, paths: list[str], report: Path
) -> Outcome:
    url = f"redis://127.0.0.1:{port}/0"
    env = {k: v for k, v in os.environ.items() if k not in ("RE_CLUSTER", "PYTEST_ADDOPTS")}
    if paths:
        env["PYTHONPATH"] = os.pathsep.join([*paths, *filter(None, [env.get("PYTHONPATH")])])
    command = [
        sys.executable,
        "-m",
        "pytest",
        *files,
        "-k",
        SELECT,
        f"--redis-url={url}",
        f"--redis-mod-url={url}",  # no probing of localhost:6479 for modules
        f"--protocol={protocol}",
        f"--junitxml={report}",
        "-o",
        "addopts=",
        "-o",
        "timeout=60",
        "-p",
        "no:cacheprovider",
        "-W",
        "ignore",
        "-q",
        "-rfEs",
        "--tb=short",
    ]
    result = subprocess.run(
        command, cwd=tree, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    output = result.stdout + result.stderr
    if not report.exists():
        pytest.fail(f"redis-py's pytest wrote no report (exit {result.returncode}):\n{output}")
    outcome = Outcome(result.returncode, output)
    for case in ET.parse(report).getroot().iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        skipped = case.find("skipped")
        if case.find("failure") is not None or case.find("error") is not None:
            outcome.failed.append(name)
        elif skipped is not None:
            outcome.skipped[name] = skipped.get("message", "")
        else:
            outcome.passed.append(name)
    return outcome


def _claimed_version(port: int) -> tuple[int, int]:
    """The ``redis_version`` the server reports (redis-py's suite gates tests on it)."""
    client = redis.Redis(port=port)
    try:
        version = str(client.info("server")["redis_version"])
    finally:
        client.close()
    major, minor = version.split(".")[:2]
    return int(major), int(minor)


@pytest.fixture(scope="module")
def redis_py_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _source_tree(tmp_path_factory.mktemp("redis-py"))


@pytest.fixture(scope="module")
def sdi_port() -> Iterator[int]:
    with running(LeaderboardServer(None)) as port:
        yield port


@pytest.mark.parametrize("protocol", [3, 2], ids=["resp3", "resp2"])
def test_redis_py_sorted_set_suite_passes(
    redis_py_tree: Path,
    sdi_port: int,
    protocol: int,
    tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    files = ["tests/test_commands.py"]
    paths = _asyncio_plugin()
    if paths is not None:
        files.append("tests/test_asyncio/test_commands.py")
    outcome = _run_suite(redis_py_tree, sdi_port, files, protocol, paths or [], tmp_path / "r.xml")
    print(
        f"redis-py {VERSION} sorted-set tests, RESP{protocol}, {' + '.join(files)}:"
        f" {len(outcome.passed)} passed, {len(outcome.skipped)} skipped,"
        f" {len(outcome.failed)} failed"
        + ("" if paths is not None else "; left out: the asyncio tests (no pytest-asyncio)")
    )
    for reason, count in sorted(Counter(outcome.skipped.values()).items()):
        print(f"  skipped {count}: {reason}")
    record_property("redis_py_passed", len(outcome.passed))
    record_property("redis_py_skipped", len(outcome.skipped))
    assert not outcome.failed, f"failed: {outcome.failed}\n{outcome.output[-8000:]}"
    assert outcome.passed, f"no test ran:\n{outcome.output[-4000:]}"
    assert outcome.exit_code == 0, outcome.output[-4000:]
    # redis-py skips only what needs a newer server than the version sdi reports.
    claimed = _claimed_version(sdi_port)
    for name, reason in outcome.skipped.items():
        gate = VERSION_SKIP.search(reason)
        assert gate is not None, f"{name} skipped for another reason than the version: {reason}"
        assert (int(gate[1]), int(gate[2])) > claimed, (name, reason)
