"""The exception tree, and the mapping of Rust panics into it."""

from __future__ import annotations

import pytest

import sdi
from sdi import _rust, errors


def test_every_exception_derives_from_sdi_error() -> None:
    for name in errors.__all__:
        assert issubclass(getattr(errors, name), errors.SdiError), name


def test_argument_errors_are_value_errors() -> None:
    assert issubclass(errors.InvalidArgument, ValueError)
    assert issubclass(errors.LimitExceeded, ValueError)
    assert issubclass(errors.Timeout, TimeoutError)
    assert issubclass(errors.StorageError, OSError)


def test_rust_panic_becomes_internal_error() -> None:
    with pytest.raises(errors.InternalError, match="Rust panic: on purpose"):
        _rust._panic_for_test("on purpose")
    # The interpreter and the module are still usable after a caught panic.
    with pytest.raises(errors.InternalError):
        _rust._panic_for_test("again")


def test_version_matches_distribution_metadata() -> None:
    from importlib.metadata import version

    assert sdi.__version__ == version("sdi")
