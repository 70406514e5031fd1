"""Reed-Solomon 4+2 on 1 MiB stripes, beside ISA-L (through pyeclib and
directly) and zfec.

Every library is driven through its Python API, in this process, on the same
random 1 MiB stripe (four 256 KiB data shards); the figures are data bytes
per second (the stripe's 1 MiB, not the 1.5 MiB written), medians of repeats
that take turns between the libraries, so a noisy spell hits them all.

* **encode**: the two parity shards of the stripe.
  sdi: ``sdi._rust.ec.Codec.encode_into`` from a ``(4, L)`` array into a
  preallocated ``(2, L)`` array (the batch API, no copies);
  ``isa-l``: ISA-L's own ``ec_encode_data`` called through ctypes on the same
  arrays (the library bundled in pyeclib's wheel: the kernel with no Python
  wrapper around it); ``pyeclib``: ``ECDriver(ec_type="isa_l_rs_vand").encode``
  (copies the object into fragments with headers, then ISA-L);
  ``zfec``: ``Encoder(4, 6).encode`` of the four shards, asking for the two
  secondary blocks only.
* **decode, 2 data shards lost**: the object back from shards 2, 3, 4, 5.
  sdi: ``Codec.reconstruct(stripe, present, data_only=True)`` in place;
  ``isa-l``: invert the 4x4 matrix of the surviving rows
  (``gf_invert_matrix``) and ``ec_encode_data`` with it, as ISA-L's own
  tests decode; ``pyeclib``: ``decode`` of fragments 2..5; ``zfec``:
  ``Decoder(4, 6).decode`` of blocks 2..5 (a fresh list per call: it
  reorders its argument).
* **objects (bytes in, shards out, and back)**: the whole-object APIs,
  copies included: ``sdi.objstore.ec.Codec.encode(bytes) -> list[bytes]`` and
  ``decode(shards, size) -> bytes``, beside ``pyeclib`` ``encode``/``decode``
  and ``zfec.easyfec``.

Every baseline gets its best setting: for the whole process glibc's mmap
threshold is raised to 16 MiB and its trim threshold to 256 MiB
(``mallopt``, what ``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_``
do). Without that, every fragment buffer of pyeclib (and every shard
``bytes`` of the object rows) is fresh memory from the kernel, and page
faults, slow on this VM, cap both at about 0.6 GB/s.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import importlib.util
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy

from harness import Progress, Result, Scale

K, M = 4, 2
N = K + M
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

SIZES = {
    # scale: (stripe bytes, rounds, calls per timing)
    "tiny": (64 << 10, 3, 2),
    "quick": (1 << 20, 15, 20),
    "full": (1 << 20, 41, 50),
}


def _raise_mmap_threshold() -> bool:
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return False
    try:
        libc = ctypes.CDLL(libc_name)
        return bool(libc.mallopt(M_MMAP_THRESHOLD, 16 << 20)) and bool(
            libc.mallopt(M_TRIM_THRESHOLD, 256 << 20)
        )
    except (OSError, AttributeError):
        return False


def _measure(
    candidates: dict[str, Callable[[], object]], rounds: int, calls: int
) -> dict[str, float]:
    """Median seconds per call of each candidate, the candidates taking turns."""
    for work in candidates.values():
        work()
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, work in candidates.items():
            start = time.perf_counter()
            for _ in range(calls):
                work()
            samples[name].append((time.perf_counter() - start) / calls)
    return {name: statistics.median(values) for name, values in samples.items()}


class _IsaL:
    """ISA-L's erasure-code API through ctypes (the build inside pyeclib's wheel)."""

    def __init__(self, library: ctypes.CDLL, shard_len: int) -> None:
        self.lib = library
        self.len = shard_len
        self.matrix = (ctypes.c_ubyte * (N * K))()
        library.gf_gen_cauchy1_matrix(self.matrix, N, K)
        self.encode_tables = (ctypes.c_ubyte * (K * M * 32))()
        library.ec_init_tables(K, M, ctypes.byref(self.matrix, K * K), self.encode_tables)
        self.pointer = ctypes.POINTER(ctypes.c_ubyte)

    def pointers(self, rows: Any) -> Any:
        return (self.pointer * len(rows))(*[row.ctypes.data_as(self.pointer) for row in rows])

    def encode(self, sources: Any, outputs: Any) -> None:
        self.lib.ec_encode_data(self.len, K, M, self.encode_tables, sources, outputs)

    def decode(self, survivors: list[int], sources: Any, outputs: Any, lost: int) -> None:
        """Rebuilds the ``lost`` data shards (0..lost) from the rows ``survivors``."""
        sub = (ctypes.c_ubyte * (K * K))()
        for row, index in enumerate(survivors):
            for col in range(K):
                sub[row * K + col] = self.matrix[index * K + col]
        inverse = (ctypes.c_ubyte * (K * K))()
        if self.lib.gf_invert_matrix(sub, inverse, K) != 0:
            raise RuntimeError("singular decode matrix")
        tables = (ctypes.c_ubyte * (K * lost * 32))()
        self.lib.ec_init_tables(K, lost, inverse, tables)
        self.lib.ec_encode_data(self.len, K, lost, tables, sources, outputs)


def _isal_library() -> ctypes.CDLL | None:
    spec = importlib.util.find_spec("pyeclib")
    if spec is None or spec.origin is None:
        return None
    found = sorted(glob.glob(str(Path(spec.origin).parent.parent / "pyeclib.libs" / "libisal*")))
    if not found:
        return None
    try:
        return ctypes.CDLL(found[0])
    except OSError:
        return None


def _pyeclib_driver() -> tuple[Any, str] | None:
    try:
        from pyeclib.ec_iface import ECDriver
    except ImportError:
        return None
    for ec_type in ["isa_l_rs_vand", "liberasurecode_rs_vand"]:
        try:
            return ECDriver(k=K, m=M, ec_type=ec_type), ec_type
        except Exception:
            continue
    return None


def run(scale: Scale, progress: Progress) -> list[Result]:
    from sdi._rust import ec as native
    from sdi.objstore import ec

    stripe_bytes, rounds, calls = SIZES[scale]
    shard_len = stripe_bytes // K
    gigabytes = stripe_bytes / 1e9
    threshold_raised = _raise_mmap_threshold()

    rng = numpy.random.default_rng(9)
    data = rng.integers(0, 256, (K, shard_len), dtype=numpy.uint8)
    payload = data.tobytes()
    codec = native.Codec(K, M)
    kernel = codec.kernel
    stripe = numpy.zeros((N, shard_len), dtype=numpy.uint8)
    stripe[:K] = data
    codec.encode_into(stripe[:K], stripe[K:])
    parity = numpy.zeros((M, shard_len), dtype=numpy.uint8)
    shard_bytes = [row.tobytes() for row in stripe]
    present = [False, False, True, True, True, True]
    damaged = stripe.copy()

    isal_lib = _isal_library()
    isal = _IsaL(isal_lib, shard_len) if isal_lib is not None else None
    driver = _pyeclib_driver()
    try:
        import zfec
        import zfec.easyfec
    except ImportError:
        zfec = None

    progress(
        f"{K}+{M}, {stripe_bytes >> 10} KiB stripes, kernel {kernel}; "
        f"isa-l: {'yes' if isal else 'no'}; pyeclib: {driver[1] if driver else 'no'}; "
        f"zfec: {'yes' if zfec else 'no'}"
    )

    # --- encode ----------------------------------------------------------------------
    encoders: dict[str, Callable[[], object]] = {
        "sdi": lambda: codec.encode_into(data, parity),
    }
    other_kernels = {name: native.Codec(K, M, name) for name in native.kernels() if name != kernel}
    for name, other in other_kernels.items():
        encoders[f"sdi {name}"] = lambda other=other: other.encode_into(data, parity)
    if isal is not None:
        isal_parity = numpy.zeros((M, shard_len), dtype=numpy.uint8)
        sources, outputs = isal.pointers(data), isal.pointers(isal_parity)
        isal.encode(sources, outputs)
        assert numpy.array_equal(isal_parity, stripe[K:]), "ISA-L's parity differs from sdi's"
        encoders["isa-l"] = lambda: isal.encode(sources, outputs)
    if driver is not None:
        encoders["pyeclib"] = lambda: driver[0].encode(payload)
    if zfec is not None:
        zfec_encoder = zfec.Encoder(K, N)
        zfec_blocks = tuple(shard_bytes[:K])
        encoders["zfec"] = lambda: zfec_encoder.encode(zfec_blocks, (4, 5))
    progress("encode")
    encode_seconds = _measure(encoders, rounds, calls)

    # --- decode, two data shards lost ------------------------------------------------
    def sdi_decode() -> None:
        codec.reconstruct(damaged, present, True)

    decoders: dict[str, Callable[[], object]] = {"sdi": sdi_decode}
    for name, other in other_kernels.items():
        decoders[f"sdi {name}"] = lambda other=other: other.reconstruct(damaged, present, True)
    if isal is not None:
        survivors = [2, 3, 4, 5]
        isal_out = numpy.zeros((2, shard_len), dtype=numpy.uint8)
        isal_sources = isal.pointers([stripe[i] for i in survivors])
        isal_outputs = isal.pointers(isal_out)
        isal.decode(survivors, isal_sources, isal_outputs, 2)
        assert numpy.array_equal(isal_out, stripe[:2]), "ISA-L decoded something else"
        decoders["isa-l"] = lambda: isal.decode(survivors, isal_sources, isal_outputs, 2)
    if driver is not None:
        fragments = driver[0].encode(payload)
        assert driver[0].decode(fragments[2:]) == payload
        decoders["pyeclib"] = lambda: driver[0].decode(fragments[2:])
    if zfec is not None:
        zfec_decoder = zfec.Decoder(K, N)
        zfec_parity = zfec_encoder.encode(zfec_blocks, (4, 5))
        survivors_zfec = (shard_bytes[2], shard_bytes[3], *zfec_parity)
        assert b"".join(zfec_decoder.decode(list(survivors_zfec), [2, 3, 4, 5])) == payload
        decoders["zfec"] = lambda: zfec_decoder.decode(list(survivors_zfec), [2, 3, 4, 5])
    progress("decode, 2 data shards lost")
    damaged[:2] = 0
    decode_seconds = _measure(decoders, rounds, calls)
    assert numpy.array_equal(damaged, stripe), "sdi rebuilt something else"

    # --- whole objects: bytes in, shards out, and back -------------------------------
    objects = ec.Codec(K, M)
    object_shards: list[ec.Buffer | None] = list(objects.encode(payload))
    object_shards[0] = object_shards[1] = None
    assert objects.decode(object_shards, len(payload)) == payload
    object_encoders: dict[str, Callable[[], object]] = {"sdi": lambda: objects.encode(payload)}
    object_decoders: dict[str, Callable[[], object]] = {
        "sdi": lambda: objects.decode(object_shards, len(payload))
    }
    if driver is not None:
        object_encoders["pyeclib"] = encoders["pyeclib"]
        object_decoders["pyeclib"] = decoders["pyeclib"]
    if zfec is not None:
        easy_encoder = zfec.easyfec.Encoder(K, N)
        easy_decoder = zfec.easyfec.Decoder(K, N)
        easy_blocks = easy_encoder.encode(payload)
        assert easy_decoder.decode(easy_blocks[2:], [2, 3, 4, 5], 0) == payload
        object_encoders["zfec"] = lambda: easy_encoder.encode(payload)
        object_decoders["zfec"] = lambda: easy_decoder.decode(easy_blocks[2:], [2, 3, 4, 5], 0)
    progress("whole objects")
    object_encode_seconds = _measure(object_encoders, rounds, max(1, calls // 2))
    object_decode_seconds = _measure(object_decoders, rounds, max(1, calls // 2))

    def rates(seconds: dict[str, float]) -> tuple[float, dict[str, float]]:
        baselines = {name: gigabytes / value for name, value in seconds.items() if name != "sdi"}
        return gigabytes / seconds["sdi"], baselines

    def kernel_note(seconds: dict[str, float]) -> str:
        others = ", ".join(
            f"{name[4:]} {gigabytes / value:.2f}"
            for name, value in seconds.items()
            if name.startswith("sdi ")
        )
        return f"sdi kernel {kernel} (other kernels here, GB/s: {others})"

    def without_kernels(baselines: dict[str, float]) -> dict[str, float]:
        return {name: value for name, value in baselines.items() if not name.startswith("sdi ")}

    size = f"{stripe_bytes >> 10} KiB stripes" if stripe_bytes < 1 << 20 else "1 MiB stripes"
    malloc = "malloc mmap/trim thresholds 16/256 MiB" if threshold_raised else "default malloc"
    encode_sdi, encode_baselines = rates(encode_seconds)
    decode_sdi, decode_baselines = rates(decode_seconds)
    object_encode_sdi, object_encode_baselines = rates(object_encode_seconds)
    object_decode_sdi, object_decode_baselines = rates(object_decode_seconds)
    pyeclib_name = f"pyeclib backend {driver[1]}" if driver else "no pyeclib"
    return [
        Result(
            f"{K}+{M} encode, {size}",
            "GB/s",
            True,
            encode_sdi,
            without_kernels(encode_baselines),
            note=f"{kernel_note(encode_seconds)}; {pyeclib_name}; {malloc}",
        ),
        Result(
            f"{K}+{M} decode, 2 data shards lost, {size}",
            "GB/s",
            True,
            decode_sdi,
            without_kernels(decode_baselines),
            note=kernel_note(decode_seconds),
        ),
        Result(
            f"{K}+{M} encode an object to shard bytes, {size}",
            "GB/s",
            True,
            object_encode_sdi,
            object_encode_baselines,
            note="sdi.objstore.ec.Codec.encode vs pyeclib encode vs zfec.easyfec",
        ),
        Result(
            f"{K}+{M} decode an object, 2 data shards lost, {size}",
            "GB/s",
            True,
            object_decode_sdi,
            object_decode_baselines,
            note="sdi.objstore.ec.Codec.decode vs pyeclib decode vs zfec.easyfec",
        ),
    ]


if __name__ == "__main__":  # pragma: no cover
    for result in run("quick", Progress("ec")):
        print(result)
    os._exit(0)
