"""sdi.objstore.ec and sdi._rust.ec: any m shards lost or rotten -> the exact
data back; parity byte for byte ISA-L's; bad input -> sdi.errors, not crashes."""

from __future__ import annotations

import ctypes
import glob
import importlib.util
import os
import threading
from pathlib import Path

import numpy
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sdi import errors
from sdi._rust import ec as native
from sdi.objstore import ec
from sdi.objstore.ec import Codec
from sdi.testing import servers

KERNELS = ec.kernels()


@st.composite
def coded(draw: st.DrawFn) -> tuple[Codec, bytes, list[int]]:
    """A codec, an object, and a set of at most m shard indices."""
    k = draw(st.integers(1, 8))
    m = draw(st.integers(0, 4))
    kernel = draw(st.sampled_from(KERNELS))
    data = draw(st.binary(max_size=3000))
    lost = draw(st.lists(st.integers(0, k + m - 1), max_size=m, unique=True))
    return Codec(k, m, kernel=kernel), data, lost


@settings(max_examples=300, deadline=None)
@given(coded())
def test_any_m_lost_shards_give_the_data_back(case: tuple[Codec, bytes, list[int]]) -> None:
    codec, data, lost = case
    shards = codec.encode(data)
    assert len(shards) == codec.n
    assert {len(shard) for shard in shards} == {codec.shard_size(len(data))}
    assert codec.verify(shards)
    damaged: list[bytes | None] = list(shards)
    for index in lost:
        damaged[index] = None
    assert codec.decode(damaged, len(data)) == data
    assert codec.reconstruct(damaged) == shards


@settings(max_examples=300, deadline=None)
@given(coded(), st.data())
def test_any_m_rotten_shards_are_caught_and_rebuilt(
    case: tuple[Codec, bytes, list[int]], draw: st.DataObject
) -> None:
    codec, data, rotten = case
    shards = codec.encode(data)
    sums = codec.checksums(shards)
    stored: list[bytes] = list(shards)
    for index in rotten:
        shard = bytearray(stored[index])
        if shard:
            at = draw.draw(st.integers(0, len(shard) - 1))
            shard[at] ^= draw.draw(st.integers(1, 255))
        else:
            shard = bytearray(b"?")  # an empty shard can only rot by growing
        stored[index] = bytes(shard)
    checked = codec.check(stored, sums)
    assert [shard is None for shard in checked] == [i in rotten for i in range(codec.n)]
    assert codec.decode(stored, len(data), checksums=sums) == data
    assert codec.reconstruct(stored, checksums=sums) == shards


@pytest.mark.parametrize("kernel", KERNELS)
def test_every_kernel_computes_the_same_parity(kernel: str) -> None:
    rng = numpy.random.default_rng(5)
    for shard_len in [0, 1, 63, 64, 65, 127, 128, 129, 1000, 65_537]:
        data = rng.integers(0, 256, (10, shard_len), dtype=numpy.uint8)
        want = native.Codec(10, 4, "scalar").encode(data)
        codec = native.Codec(10, 4, kernel)
        assert codec.kernel == kernel
        assert numpy.array_equal(codec.encode(data), want), shard_len


def test_the_best_kernel_is_used_by_default() -> None:
    assert ec.kernel() == KERNELS[0]
    assert Codec().kernel == ec.kernel()
    assert KERNELS[-1] == "scalar"


def _isal() -> ctypes.CDLL | None:
    spec = importlib.util.find_spec("pyeclib")
    if spec is None or spec.origin is None:
        return None
    libs = Path(spec.origin).parent.parent / "pyeclib.libs"
    found = sorted(glob.glob(str(libs / "libisal*.so*")))
    return ctypes.CDLL(found[0]) if found else None


@pytest.mark.parametrize(("k", "m"), [(4, 2), (10, 4), (3, 1), (6, 3)])
def test_parity_is_isa_ls_byte_for_byte(k: int, m: int) -> None:
    """The same parity as ISA-L's ec_encode_data with gf_gen_cauchy1_matrix
    (the ISA-L build bundled in pyeclib's wheel)."""
    isal = _isal()
    if isal is None:
        servers.missing(
            "pyeclib's wheel (with ISA-L) is not installed; `make setup` installs it", "library"
        )
    n = k + m
    matrix = (ctypes.c_ubyte * (n * k))()
    isal.gf_gen_cauchy1_matrix(matrix, n, k)
    assert numpy.array_equal(
        numpy.frombuffer(bytes(matrix), dtype=numpy.uint8).reshape(n, k),
        native.Codec(k, m).generator(),
    )
    tables = (ctypes.c_ubyte * (k * m * 32))()
    isal.ec_init_tables(k, m, ctypes.byref(matrix, k * k), tables)
    rng = numpy.random.default_rng(k * 100 + m)
    for shard_len in [1, 31, 64, 4096, 100_003]:
        data = rng.integers(0, 256, (k, shard_len), dtype=numpy.uint8)
        parity = numpy.zeros((m, shard_len), dtype=numpy.uint8)
        pointer = ctypes.POINTER(ctypes.c_ubyte)
        sources = (pointer * k)(*[data[i].ctypes.data_as(pointer) for i in range(k)])
        outputs = (pointer * m)(*[parity[i].ctypes.data_as(pointer) for i in range(m)])
        isal.ec_encode_data(shard_len, k, m, tables, sources, outputs)
        for kernel in KERNELS:
            assert numpy.array_equal(native.Codec(k, m, kernel).encode(data), parity), (
                kernel,
                shard_len,
            )


def test_empty_and_tiny_objects() -> None:
    codec = Codec()
    assert codec.encode(b"") == [b""] * 6
    assert codec.decode([None, b"", b"", b"", b"", None], 0) == b""
    shards = codec.encode(b"x")
    assert [len(shard) for shard in shards] == [1] * 6
    assert codec.decode([None, None, *shards[2:]], 1) == b"x"


def test_buffers_of_every_kind() -> None:
    codec = Codec(4, 2)
    payload = os.urandom(4 * 1000)
    want = codec.encode(payload)
    for data in [
        payload,
        bytearray(payload),
        memoryview(payload),
        numpy.frombuffer(payload, dtype=numpy.uint8).reshape(4, 1000),
    ]:
        assert codec.encode(data) == want
        parity = bytearray(2000)
        assert codec.encode_into(data, parity) == 1000
        assert bytes(parity) == want[4] + want[5]
        assert codec.encode_stripe(data).tobytes() == want[4] + want[5]
    # Shards may be any bytes-like object too.
    views: list[ec.Buffer | None] = [memoryview(shard) for shard in want]
    views[2] = None
    assert codec.decode(views, len(payload)) == payload
    assert codec.reconstruct(views) == want


def test_repair_returns_present_bytes_as_they_are() -> None:
    codec = Codec(4, 2)
    shards: list[bytes | None] = list(codec.encode(os.urandom(10_000)))
    kept = list(shards)
    shards[1] = shards[5] = None
    repaired = codec.reconstruct(shards)
    for index in [0, 2, 3, 4]:
        assert repaired[index] is kept[index]
    assert repaired == kept


@pytest.mark.parametrize("size", [0, 1, 5, 4095, 4096, 4097, 100_003])
def test_every_lost_pair_at_odd_sizes(size: int) -> None:
    codec = Codec(4, 2)
    data = os.urandom(size)
    shards = codec.encode(data)
    for first in range(6):
        for second in range(first, 6):
            damaged: list[bytes | None] = list(shards)
            damaged[first] = damaged[second] = None
            assert codec.decode(damaged, size) == data
            assert codec.reconstruct(damaged) == shards


def test_in_place_stripes() -> None:
    codec = Codec(4, 2)
    rng = numpy.random.default_rng(1)
    stripe = numpy.zeros((6, 5000), dtype=numpy.uint8)
    stripe[:4] = rng.integers(0, 256, (4, 5000), dtype=numpy.uint8)
    assert codec.encode_into(stripe[:4], stripe[4:]) == 5000
    assert native.Codec(4, 2).verify(stripe)
    for lost in [(0, 1), (2, 5), (4, 5), (3,), ()]:
        damaged = stripe.copy()
        present = [i not in lost for i in range(6)]
        damaged[list(lost)] = 0xEE
        assert codec.reconstruct_stripe(damaged, present) == 5000
        assert numpy.array_equal(damaged, stripe), lost
        data_only = stripe.copy()
        data_only[list(lost)] = 0xEE
        codec.reconstruct_stripe(data_only, numpy.array(present), data_only=True)
        assert numpy.array_equal(data_only[:4], stripe[:4])
        for index in lost:
            if index >= 4:
                assert (data_only[index] == 0xEE).all(), "parity left alone"
    sums = native.checksums(stripe, 6)
    assert sums.dtype == numpy.uint32
    assert list(sums) == [ec.checksum(row) for row in stripe]


def test_a_large_stripe_round_trips() -> None:
    codec = Codec(4, 2)
    data = os.urandom(48 << 20)
    shards: list[bytes | None] = list(codec.encode(data))
    assert len(shards[0] or b"") == 12 << 20
    shards[0] = shards[3] = None
    assert codec.decode(shards, len(data)) == data


def test_threads_share_a_codec() -> None:
    codec = Codec(4, 2)
    payloads = [os.urandom(1 << 20) for _ in range(4)]
    results: dict[int, bool] = {}

    def work(index: int) -> None:
        ok = True
        for _ in range(5):
            shards: list[bytes | None] = list(codec.encode(payloads[index]))
            shards[index % 6] = shards[(index + 1) % 6] = None
            ok &= codec.decode(shards, 1 << 20) == payloads[index]
        results[index] = ok

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == dict.fromkeys(range(4), True)


# --- bad input ------------------------------------------------------------------------


@pytest.mark.parametrize(("k", "m"), [(0, 2), (200, 56), (255, 1), (-1, 2)])
def test_bad_parameters(k: int, m: int) -> None:
    with pytest.raises(errors.InvalidArgument, match="k >= 1"):
        Codec(k, m)
    if k >= 0:
        with pytest.raises(errors.InvalidArgument, match="k >= 1"):
            native.Codec(k, m)


def test_bad_kernels() -> None:
    with pytest.raises(errors.InvalidArgument, match="unknown kernel"):
        Codec(kernel="sse9")
    for name in ["avx512-gfni", "avx512", "avx2-gfni", "avx2"]:
        if name not in KERNELS:
            with pytest.raises(errors.InvalidArgument, match="CPU features"):
                Codec(kernel=name)


def test_bad_buffers() -> None:
    codec = Codec(4, 2)
    with pytest.raises(errors.InvalidArgument, match="bytes-like"):
        codec.encode("text")  # type: ignore[arg-type]
    with pytest.raises(errors.InvalidArgument, match="bytes-like"):
        codec.encode_stripe("text")  # type: ignore[arg-type]
    with pytest.raises(errors.InvalidArgument, match="multiple of 4"):
        codec.encode_stripe(b"abcde")
    with pytest.raises(errors.InvalidArgument, match="parity buffer"):
        codec.encode_into(b"abcdefgh", bytearray(3))
    with pytest.raises(errors.InvalidArgument, match="writable"):
        codec.encode_into(b"abcdefgh", b"xxxx")
    shared = bytearray(12)
    with pytest.raises(errors.InvalidArgument, match="overlap"):
        codec.encode_into(memoryview(shared)[:8], memoryview(shared)[4:])
    strided = numpy.zeros((6, 16), dtype=numpy.uint8)[:, ::2]
    with pytest.raises(errors.InvalidArgument, match="C-contiguous"):
        codec.reconstruct_stripe(strided, [True] * 6)
    with pytest.raises(errors.InvalidArgument, match="writable"):
        codec.reconstruct_stripe(bytes(12), [True] * 6)
    with pytest.raises(errors.InvalidArgument, match="6 shards of equal length"):
        codec.reconstruct_stripe(bytearray(13), [True] * 6)
    with pytest.raises(errors.InvalidArgument, match="present flags"):
        codec.reconstruct_stripe(bytearray(12), [True] * 5)
    with pytest.raises(errors.Corrupt, match="only 3 of the 6"):
        codec.reconstruct_stripe(bytearray(12), [True, True, True, False, False, False])
    with pytest.raises(errors.InvalidArgument, match="6 shards"):
        native.Codec(4, 2).verify(bytes(13))
    with pytest.raises(errors.InvalidArgument, match="split into 0 shards"):
        native.checksums(bytes(12), 0)


def test_bad_shard_lists() -> None:
    codec = Codec(4, 2)
    shards: list[bytes | None] = list(codec.encode(b"0123456789abcdef"))
    with pytest.raises(errors.InvalidArgument, match="k \\+ m = 6 shards"):
        codec.decode(shards[:5], 16)
    with pytest.raises(errors.InvalidArgument, match="shard 5 is 1 bytes"):
        codec.decode([*shards[:5], b"x"], 16)
    with pytest.raises(errors.InvalidArgument, match="does not fit"):
        codec.decode(shards, 17)
    with pytest.raises(errors.InvalidArgument, match="size must be >= 0"):
        codec.decode(shards, -1)
    with pytest.raises(errors.InvalidArgument, match="shard 2 must be a bytes-like"):
        codec.decode([*shards[:2], 42, *shards[3:]], 16)  # type: ignore[list-item]
    with pytest.raises(errors.Corrupt, match="only 3 of the 6 shards are present"):
        codec.decode([shards[0], None, None, None, shards[4], shards[5]], 16)
    sums = codec.checksums([shard or b"" for shard in shards])
    rotten = [b"XXXX", b"XXXX", b"XXXX", *shards[3:]]
    with pytest.raises(errors.Corrupt, match="only 3 of the 6"):
        codec.decode(rotten, 16, checksums=sums)
    with pytest.raises(errors.InvalidArgument, match="checksums"):
        codec.check(shards, sums[:5])
    with pytest.raises(errors.InvalidArgument, match="every shard"):
        codec.verify([None, *shards[1:]])  # type: ignore[list-item]
    with pytest.raises(errors.InvalidArgument, match="size must be >= 0"):
        codec.shard_size(-1)
