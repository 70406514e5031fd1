"""Fixtures of the S3 tests: one in-process S3 service per test module, and a bucket per test."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest

from sdi.testing.s3 import S3Server, s3_client

_buckets = itertools.count()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with S3Server(tmp_path_factory.mktemp("s3")) as running:
        yield running


@pytest.fixture(scope="module")
def s3(server: S3Server) -> Any:
    """A boto3 client of the module's service."""
    return s3_client(server.url)


@pytest.fixture
def bucket(s3: Any) -> str:
    """A fresh bucket of the module's service."""
    name = f"bucket-{next(_buckets)}"
    s3.create_bucket(Bucket=name)
    return name
