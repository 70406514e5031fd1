"""The exceptions sdi raises.

Every failure that crosses from a compiled core or a service into Python is
one of these classes. Business outcomes (a rejected order, an insufficient
balance) are values in results, never exceptions; these are for calls that
could not be carried out.

>>> from sdi import errors
>>> issubclass(errors.LimitExceeded, errors.SdiError)
True
>>> issubclass(errors.InvalidArgument, ValueError)
True
"""

from __future__ import annotations

__all__ = [
    "Closed",
    "Corrupt",
    "InternalError",
    "InvalidArgument",
    "LimitExceeded",
    "PeerGone",
    "ProtocolError",
    "SdiError",
    "StorageError",
    "Timeout",
]


class SdiError(Exception):
    """The base of every exception sdi raises on purpose."""


class InvalidArgument(SdiError, ValueError):
    """An argument is malformed or out of range; fix the call."""


class LimitExceeded(SdiError, ValueError):
    """A size or count is past a documented limit; send less or raise the limit."""


class Corrupt(SdiError):
    """Stored or shared data failed a check (magic, version, checksum); it was not used."""


class Closed(SdiError):
    """The object was closed; open a new one."""


class Timeout(SdiError, TimeoutError):
    """A blocking call waited its whole timeout; retry or wait longer."""


class PeerGone(SdiError):
    """The process at the other end (a ring's producer, a client) has died."""


class StorageError(SdiError, OSError):
    """The operating system refused a file or memory-map operation."""


class ProtocolError(SdiError):
    """Bytes from the network broke the protocol's rules."""


class InternalError(SdiError):
    """A bug in sdi (for example a Rust panic); please report it with the call that caused it."""
