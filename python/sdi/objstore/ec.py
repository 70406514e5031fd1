"""Reed-Solomon erasure coding: any ``k`` of ``k + m`` shards give the data back.

An object is cut into ``k`` data shards of equal length (the last one padded
with zeros) and ``m`` parity shards are computed from them; any ``m`` shards
can then be lost (a dead node, a rotten disk) and the object still reads back
byte for byte. 4+2 stores 1.5x the data and survives two losses, where three
copies store 3x (the trade-off of chapter 9).

>>> codec = Codec(k=4, m=2)
>>> shards = codec.encode(b"hello, erasure coding!")
>>> len(shards), codec.shard_size(22), [len(shard) for shard in shards]
(6, 6, [6, 6, 6, 6, 6, 6])
>>> shards[1] = shards[4] = None          # two shards lost
>>> codec.decode(shards, size=22)
b'hello, erasure coding!'

Checksums find rotten shards; :meth:`Codec.check` turns them into missing
ones, which decoding then rebuilds:

>>> shards = codec.encode(b"hello, erasure coding!")
>>> sums = codec.checksums(shards)
>>> shards[0] = b"HELLO," + shards[0][6:]  # bit rot in shard 0
>>> codec.check(shards, sums)[0] is None
True
>>> codec.decode(shards, size=22, checksums=sums)
b'hello, erasure coding!'
>>> codec.reconstruct(shards, checksums=sums) == codec.encode(b"hello, erasure coding!")
True

The batch form works on numpy stripes in place, without copies: the data
shards back to back in, the parity out; rebuilding overwrites the shards
marked missing.

>>> import numpy
>>> stripe = numpy.zeros((6, 4096), dtype=numpy.uint8)
>>> stripe[:4] = numpy.arange(4 * 4096, dtype=numpy.uint32).reshape(4, 4096) % 251
>>> codec.encode_into(stripe[:4], stripe[4:])
4096
>>> damaged = stripe.copy()
>>> damaged[0] = damaged[5] = 0
>>> codec.reconstruct_stripe(damaged, [False, True, True, True, True, False])
4096
>>> bool((damaged == stripe).all())
True

The field is GF(2^8) with polynomial 0x11D and the matrix is ISA-L's Cauchy
matrix, so parity matches ISA-L's ``ec_encode_data`` byte for byte. The work
is done in Rust (``rust/sdi-ec``) by the fastest kernel the CPU has
(:func:`kernel`): GFNI + AVX-512, AVX-512 or AVX2 nibble tables, or scalar.

Errors: malformed arguments (wrong shard count, unequal shard lengths, a
size the shards cannot hold) raise :class:`~sdi.errors.InvalidArgument`;
fewer than ``k`` present (or intact) shards raise :class:`~sdi.errors.Corrupt`,
since the data is then lost.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeAlias

import numpy
import numpy.typing as npt

from sdi import errors
from sdi._rust import ec as _native

__all__ = ["SHARDS_MAX", "Buffer", "Codec", "Stripe", "checksum", "kernel", "kernels"]

#: The most shards a code can have (``k + m``).
SHARDS_MAX: int = _native.SHARDS_MAX

#: What the calls take as bytes: anything C-contiguous with the buffer protocol.
Buffer: TypeAlias = bytes | bytearray | memoryview | npt.NDArray[numpy.uint8]
#: A stripe or part of one: a uint8 array, one shard per row.
Stripe: TypeAlias = npt.NDArray[numpy.uint8]


def checksum(data: Buffer) -> int:
    """CRC-32C (Castagnoli) of ``data``, hardware-accelerated.

    >>> hex(checksum(b"123456789"))
    '0xe3069283'
    """
    return _native.checksum(data)


def kernel() -> str:
    """The kernel codecs use on this CPU: ``avx512-gfni``, ``avx512``,
    ``avx2-gfni``, ``avx2`` or ``scalar``.

    >>> kernel() in kernels()
    True
    """
    return _native.kernel()


def kernels() -> list[str]:
    """Every kernel this CPU supports, fastest first (``scalar`` always).

    >>> kernels()[-1]
    'scalar'
    """
    return _native.kernels()


def _as_bytes(value: object, what: str) -> npt.NDArray[numpy.uint8]:
    """A flat uint8 view of a bytes-like ``value`` (no copy)."""
    try:
        return numpy.frombuffer(value, dtype=numpy.uint8)  # type: ignore[call-overload,no-any-return]
    except (TypeError, ValueError) as error:
        raise errors.InvalidArgument(
            f"{what} must be bytes-like (bytes, bytearray, memoryview, numpy uint8), "
            f"not {type(value).__name__}"
        ) from error


class Codec:
    """A Reed-Solomon code with ``k`` data and ``m`` parity shards.

    ``kernel`` picks a kernel by name (see :func:`kernels`) for testing and
    benchmarks; by default the fastest one is used. A codec holds no state
    between calls and may be shared by threads; large stripes are coded with
    the GIL released.

    >>> Codec(k=10, m=4)
    Codec(k=10, m=4)
    >>> Codec(k=0, m=2)
    Traceback (most recent call last):
    ...
    sdi.errors.InvalidArgument: a code needs k >= 1 data shards, m >= 0 parity shards and ...
    """

    __slots__ = ("_native",)

    def __init__(self, k: int = 4, m: int = 2, *, kernel: str | None = None) -> None:
        if k < 1 or m < 0 or k + m > SHARDS_MAX:
            raise errors.InvalidArgument(
                f"a code needs k >= 1 data shards, m >= 0 parity shards and "
                f"k + m <= {SHARDS_MAX} shards in all; got k={k}, m={m}"
            )
        self._native = _native.Codec(k, m, kernel)

    def __repr__(self) -> str:
        return f"Codec(k={self.k}, m={self.m})"

    @property
    def k(self) -> int:
        """The number of data shards."""
        return self._native.k

    @property
    def m(self) -> int:
        """The number of parity shards: how many shards can be lost."""
        return self._native.m

    @property
    def n(self) -> int:
        """``k + m``, the shards of a stripe."""
        return self._native.k + self._native.m

    @property
    def kernel(self) -> str:
        """The kernel this codec runs."""
        return self._native.kernel

    def shard_size(self, size: int) -> int:
        """The length of each shard for an object of ``size`` bytes.

        >>> Codec(4, 2).shard_size(1 << 20), Codec(4, 2).shard_size(5)
        (262144, 2)
        """
        if size < 0:
            raise errors.InvalidArgument(f"size must be >= 0, not {size}")
        return -(-size // self.k)

    # --- objects as lists of shards --------------------------------------------------

    def encode(self, data: Buffer) -> list[bytes]:
        """Splits ``data`` into ``k`` data shards (zero-padded to equal length)
        and computes ``m`` parity shards; returns the ``k + m`` shards, data
        first. Keep ``len(data)`` to decode.
        """
        return self._native.encode_object(data)

    def decode(
        self,
        shards: Sequence[Buffer | None],
        size: int,
        checksums: Sequence[int] | None = None,
    ) -> bytes:
        """The ``size`` bytes of the object whose ``k + m`` shards (data first)
        are ``shards``, ``None`` where one is missing. With ``checksums``
        (from :meth:`checksums` at write time), shards that no longer match
        are treated as missing. Needs any ``k`` good shards; when every data
        shard is there it only copies.
        """
        if size < 0:
            raise errors.InvalidArgument(f"size must be >= 0, not {size}")
        if checksums is not None:
            shards = self.check(shards, checksums)
        return self._native.decode_object(shards, size)

    def reconstruct(
        self, shards: Sequence[Buffer | None], checksums: Sequence[int] | None = None
    ) -> list[bytes]:
        """All ``k + m`` shards, the missing (``None``) and, with
        ``checksums``, the rotten ones rebuilt: what a repair job writes back.
        """
        if checksums is not None:
            shards = self.check(shards, checksums)
        return self._native.reconstruct_shards(shards)

    def verify(self, shards: Sequence[Buffer]) -> bool:
        """Whether the ``m`` parity shards match the ``k`` data shards.

        >>> codec = Codec(4, 2)
        >>> shards = codec.encode(b"abcdefgh")
        >>> codec.verify(shards), codec.verify([*shards[:5], b"??"])
        (True, False)
        """
        if len(shards) != self.n:
            raise errors.InvalidArgument(
                f"expected a list of k + m = {self.n} shards, got {len(shards)}"
            )
        if any(shard is None for shard in shards):
            raise errors.InvalidArgument("verify needs every shard; got None for some")
        rows = [_as_bytes(shard, f"shard {i}") for i, shard in enumerate(shards)]
        if len({row.size for row in rows}) > 1:
            raise errors.InvalidArgument("shards differ in length; a stripe's shards are equal")
        return self._native.verify(numpy.concatenate(rows))

    def checksums(self, shards: Sequence[Buffer]) -> list[int]:
        """CRC-32C of each shard, to store beside it."""
        return [_native.checksum(shard) for shard in shards]

    def check(
        self, shards: Sequence[Buffer | None], checksums: Sequence[int]
    ) -> list[Buffer | None]:
        """``shards`` with every shard that does not match its checksum
        replaced by ``None``."""
        if len(checksums) != len(shards):
            raise errors.InvalidArgument(
                f"{len(checksums)} checksums for {len(shards)} shards; give one per shard"
            )
        return [
            None if shard is None or _native.checksum(shard) != int(expected) else shard
            for shard, expected in zip(shards, checksums, strict=True)
        ]

    # --- stripes as numpy arrays, in place -------------------------------------------

    def encode_stripe(self, data: Buffer) -> Stripe:
        """The parity of ``data`` (the ``k`` data shards back to back, e.g. a
        ``(k, shard_len)`` array) as a new ``(m, shard_len)`` uint8 array."""
        return self._native.encode(data)

    def encode_into(self, data: Buffer, parity: Buffer) -> int:
        """Writes the parity of ``data`` (the ``k`` data shards back to back)
        into ``parity`` (writable, ``m * shard_len`` bytes, e.g. an
        ``(m, shard_len)`` array); returns ``shard_len``. No copies."""
        return self._native.encode_into(data, parity)

    def reconstruct_stripe(
        self, stripe: Buffer, present: Sequence[bool], data_only: bool = False
    ) -> int:
        """Rebuilds in place the shards of ``stripe`` (writable, the ``k + m``
        shards back to back, e.g. a ``(k + m, shard_len)`` array) whose
        ``present`` flag is false; with ``data_only``, only the data shards.
        Returns ``shard_len``.
        """
        return self._native.reconstruct(stripe, [bool(flag) for flag in present], data_only)
