//! The x86-64 kernels: AVX-512BW and AVX2, each with GFNI affine
//! multiplication or with nibble tables and `vpshufb`.
//!
//! Each kernel is generic over the number of output rows `R` (1..=6) so
//! that the accumulators are a fixed array the compiler keeps in registers;
//! per 128 bytes of column (64 for AVX2) it reads every source once and
//! updates all `R` accumulators, then stores each row once.

// The row loops index several arrays (accumulators, destinations, tables)
// with one `r`; that reads better than zipped iterators and unrolls the same.
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

use super::{scalar, Tables};

/// Expands to a [`super::KernelFn`] that calls `$kernel::<R>` for the number
/// of rows asked for.
macro_rules! dispatch {
    ($(#[$doc:meta])* $name:ident => $kernel:ident) => {
        $(#[$doc])*
        ///
        /// # Safety
        ///
        /// The contract of [`super::KernelFn`], including CPU support.
        pub(crate) unsafe fn $name(
            tables: &Tables,
            row0: usize,
            srcs: &[*const u8],
            dsts: &[*mut u8],
            start: usize,
            end: usize,
        ) {
            // SAFETY: the caller keeps the KernelFn contract, which is each
            // kernel's contract, and checked the CPU features.
            unsafe {
                match dsts.len() {
                    0 => {}
                    1 => $kernel::<1>(tables, row0, srcs, dsts, start, end),
                    2 => $kernel::<2>(tables, row0, srcs, dsts, start, end),
                    3 => $kernel::<3>(tables, row0, srcs, dsts, start, end),
                    4 => $kernel::<4>(tables, row0, srcs, dsts, start, end),
                    5 => $kernel::<5>(tables, row0, srcs, dsts, start, end),
                    6 => $kernel::<6>(tables, row0, srcs, dsts, start, end),
                    _ => scalar::dot_prod(tables, row0, srcs, dsts, start, end),
                }
            }
        }
    };
}

dispatch!(
    /// AVX-512BW + GFNI.
    avx512_gfni => gfni512
);
dispatch!(
    /// AVX-512BW nibble tables.
    avx512_nibbles => nibbles512
);
dispatch!(
    /// AVX2 + GFNI.
    avx2_gfni => gfni256
);
dispatch!(
    /// AVX2 nibble tables.
    avx2_nibbles => nibbles256
);

/// The mask of the first `n` (<= 64) bytes of a 64-byte vector.
#[inline]
fn byte_mask(n: usize) -> __mmask64 {
    if n >= 64 {
        !0
    } else {
        (1u64 << n) - 1
    }
}

// --- AVX-512 nibble tables -----------------------------------------------------------

/// The low and high nibble tables of coefficient (`row`, `col`), each
/// broadcast to the four 128-bit lanes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
fn tables512(tables: &Tables, row: usize, col: usize) -> (__m512i, __m512i) {
    let table = tables.nibbles(row, col);
    // SAFETY: `table` is 32 readable bytes; unaligned loads of 16 bytes at 0 and 16.
    unsafe {
        (
            _mm512_broadcast_i32x4(_mm_loadu_si128(table.as_ptr().cast())),
            _mm512_broadcast_i32x4(_mm_loadu_si128(table.as_ptr().add(16).cast())),
        )
    }
}

/// `coef * x` for 64 bytes split into nibbles `lo` and `hi`, xor-ed into `acc`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
fn mul_add512(acc: __m512i, tables: (__m512i, __m512i), lo: __m512i, hi: __m512i) -> __m512i {
    // 0x96 is the three-way xor.
    _mm512_ternarylogic_epi64::<0x96>(
        acc,
        _mm512_shuffle_epi8(tables.0, lo),
        _mm512_shuffle_epi8(tables.1, hi),
    )
}

/// # Safety
///
/// The contract of [`super::KernelFn`] with `dsts.len() == R`; AVX-512F and BW.
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn nibbles512<const R: usize>(
    tables: &Tables,
    row0: usize,
    srcs: &[*const u8],
    dsts: &[*mut u8],
    start: usize,
    end: usize,
) {
    // Four vectors per source and step while the accumulators (4 * R) and
    // nibbles (8) fit the 32 registers; two for more rows.
    // SAFETY: the same contract.
    unsafe {
        if R <= 3 {
            nibbles512_unrolled::<R, 4>(tables, row0, srcs, dsts, start, end)
        } else {
            nibbles512_unrolled::<R, 2>(tables, row0, srcs, dsts, start, end)
        }
    }
}

/// [`nibbles512`] with `U` vectors (64 bytes each) per source and step.
///
/// # Safety
///
/// The contract of [`super::KernelFn`] with `dsts.len() == R`; AVX-512F and BW.
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn nibbles512_unrolled<const R: usize, const U: usize>(
    tables: &Tables,
    row0: usize,
    srcs: &[*const u8],
    dsts: &[*mut u8],
    start: usize,
    end: usize,
) {
    let dsts: &[*mut u8; R] = dsts.try_into().expect("the dispatcher passes R rows");
    let low = _mm512_set1_epi8(0x0f);
    let step = 64 * U;
    let mut off = start;
    while off + step <= end {
        let mut acc = [[_mm512_setzero_si512(); R]; U];
        for (j, &src) in srcs.iter().enumerate() {
            let mut lo = [_mm512_setzero_si512(); U];
            let mut hi = [_mm512_setzero_si512(); U];
            for u in 0..U {
                // SAFETY: every source is readable for `end` bytes and
                // off + 64 * (u + 1) <= off + step <= end.
                let x = unsafe { _mm512_loadu_si512(src.add(off + 64 * u).cast()) };
                lo[u] = _mm512_and_si512(x, low);
                hi[u] = _mm512_and_si512(_mm512_srli_epi64::<4>(x), low);
            }
            for r in 0..R {
                let t = tables512(tables, row0 + r, j);
                for u in 0..U {
                    acc[u][r] = mul_add512(acc[u][r], t, lo[u], hi[u]);
                }
            }
        }
        for r in 0..R {
            for u in 0..U {
                // SAFETY: every destination is writable for `end` bytes and
                // off + 64 * (u + 1) <= end.
                unsafe { _mm512_storeu_si512(dsts[r].add(off + 64 * u).cast(), acc[u][r]) };
            }
        }
        off += step;
    }
    while off < end {
        let mask = byte_mask(end - off);
        let mut acc = [_mm512_setzero_si512(); R];
        for (j, &src) in srcs.iter().enumerate() {
            // SAFETY: the mask covers only bytes below `end`, which are
            // readable; masked-off bytes are not accessed (no fault).
            let x = unsafe { _mm512_maskz_loadu_epi8(mask, src.add(off).cast()) };
            let lo = _mm512_and_si512(x, low);
            let hi = _mm512_and_si512(_mm512_srli_epi64::<4>(x), low);
            for r in 0..R {
                acc[r] = mul_add512(acc[r], tables512(tables, row0 + r, j), lo, hi);
            }
        }
        for r in 0..R {
            // SAFETY: the mask covers only bytes below `end`, which are writable.
            unsafe { _mm512_mask_storeu_epi8(dsts[r].add(off).cast(), mask, acc[r]) };
        }
        off += 64;
    }
}

// --- AVX-512 GFNI --------------------------------------------------------------------

/// The 8x8 bit matrix of coefficient (`row`, `col`) in every 64-bit lane.
#[inline]
#[target_feature(enable = "avx512f")]
fn matrix512(tables: &Tables, row: usize, col: usize) -> __m512i {
    _mm512_set1_epi64(tables.affine(row, col) as i64)
}

/// # Safety
///
/// The contract of [`super::KernelFn`] with `dsts.len() == R`; AVX-512F, BW and GFNI.
#[target_feature(enable = "avx512f,avx512bw,gfni")]
unsafe fn gfni512<const R: usize>(
    tables: &Tables,
    row0: usize,
    srcs: &[*const u8],
    dsts: &[*mut u8],
    start: usize,
    end: usize,
) {
    let dsts: &[*mut u8; R] = dsts.try_into().expect("the dispatcher passes R rows");
    let mut off = start;
    while off + 128 <= end {
        let mut acc0 = [_mm512_setzero_si512(); R];
        let mut acc1 = [_mm512_setzero_si512(); R];
        for (j, &src) in srcs.iter().enumerate() {
            // SAFETY: every source is readable for `end` bytes and off + 128 <= end.
            let (x0, x1) = unsafe {
                (
                    _mm512_loadu_si512(src.add(off).cast()),
                    _mm512_loadu_si512(src.add(off + 64).cast()),
                )
            };
            for r in 0..R {
                let a = matrix512(tables, row0 + r, j);
                acc0[r] = _mm512_xor_si512(acc0[r], _mm512_gf2p8affine_epi64_epi8::<0>(x0, a));
                acc1[r] = _mm512_xor_si512(acc1[r], _mm512_gf2p8affine_epi64_epi8::<0>(x1, a));
            }
        }
        for r in 0..R {
            // SAFETY: every destination is writable for `end` bytes, off + 128 <= end.
            unsafe {
                _mm512_storeu_si512(dsts[r].add(off).cast(), acc0[r]);
                _mm512_storeu_si512(dsts[r].add(off + 64).cast(), acc1[r]);
            }
        }
        off += 128;
    }
    while off < end {
        let mask = byte_mask(end - off);
        let mut acc = [_mm512_setzero_si512(); R];
        for (j, &src) in srcs.iter().enumerate() {
            // SAFETY: the mask covers only readable bytes below `end`.
            let x = unsafe { _mm512_maskz_loadu_epi8(mask, src.add(off).cast()) };
            for r in 0..R {
                let a = matrix512(tables, row0 + r, j);
                acc[r] = _mm512_xor_si512(acc[r], _mm512_gf2p8affine_epi64_epi8::<0>(x, a));
            }
        }
        for r in 0..R {
            // SAFETY: the mask covers only writable bytes below `end`.
            unsafe { _mm512_mask_storeu_epi8(dsts[r].add(off).cast(), mask, acc[r]) };
        }
        off += 64;
    }
}

// --- AVX2 nibble tables --------------------------------------------------------------

#[inline]
#[target_feature(enable = "avx2")]
fn tables256(tables: &Tables, row: usize, col: usize) -> (__m256i, __m256i) {
    let table = tables.nibbles(row, col);
    // SAFETY: `table` is 32 readable bytes; unaligned loads of 16 bytes at 0 and 16.
    unsafe {
        (
            _mm256_broadcastsi128_si256(_mm_loadu_si128(table.as_ptr().cast())),
            _mm256_broadcastsi128_si256(_mm_loadu_si128(table.as_ptr().add(16).cast())),
        )
    }
}

#[inline]
#[target_feature(enable = "avx2")]
fn mul_add256(acc: __m256i, tables: (__m256i, __m256i), lo: __m256i, hi: __m256i) -> __m256i {
    _mm256_xor_si256(
        acc,
        _mm256_xor_si256(
            _mm256_shuffle_epi8(tables.0, lo),
            _mm256_shuffle_epi8(tables.1, hi),
        ),
    )
}

/// # Safety
///
/// The contract of [`super::KernelFn`] with `dsts.len() == R`; AVX2.
#[target_feature(enable = "avx2")]
unsafe fn nibbles256<const R: usize>(
    tables: &Tables,
    row0: usize,
    srcs: &[*const u8],
    dsts: &[*mut u8],
    start: usize,
    end: usize,
) {
    let dsts_r: &[*mut u8; R] = dsts.try_into().expect("the dispatcher passes R rows");
    let low = _mm256_set1_epi8(0x0f);
    let mut off = start;
    while off + 64 <= end {
        let mut acc0 = [_mm256_setzero_si256(); R];
        let mut acc1 = [_mm256_setzero_si256(); R];
        for (j, &src) in srcs.iter().enumerate() {
            // SAFETY: every source is readable for `end` bytes and off + 64 <= end.
            let (x0, x1) = unsafe {
                (
                    _mm256_loadu_si256(src.add(off).cast()),
                    _mm256_loadu_si256(src.add(off + 32).cast()),
                )
            };
            let lo0 = _mm256_and_si256(x0, low);
            let hi0 = _mm256_and_si256(_mm256_srli_epi64::<4>(x0), low);
            let lo1 = _mm256_and_si256(x1, low);
            let hi1 = _mm256_and_si256(_mm256_srli_epi64::<4>(x1), low);
            for r in 0..R {
                let t = tables256(tables, row0 + r, j);
                acc0[r] = mul_add256(acc0[r], t, lo0, hi0);
                acc1[r] = mul_add256(acc1[r], t, lo1, hi1);
            }
        }
        for r in 0..R {
            // SAFETY: every destination is writable for `end` bytes, off + 64 <= end.
            unsafe {
                _mm256_storeu_si256(dsts_r[r].add(off).cast(), acc0[r]);
                _mm256_storeu_si256(dsts_r[r].add(off + 32).cast(), acc1[r]);
            }
        }
        off += 64;
    }
    if off + 32 <= end {
        let mut acc = [_mm256_setzero_si256(); R];
        for (j, &src) in srcs.iter().enumerate() {
            // SAFETY: every source is readable for `end` bytes and off + 32 <= end.
            let x = unsafe { _mm256_loadu_si256(src.add(off).cast()) };
            let lo = _mm256_and_si256(x, low);
            let hi = _mm256_and_si256(_mm256_srli_epi64::<4>(x), low);
            for r in 0..R {
                acc[r] = mul_add256(acc[r], tables256(tables, row0 + r, j), lo, hi);
            }
        }
        for r in 0..R {
            // SAFETY: every destination is writable for `end` bytes, off + 32 <= end.
            unsafe { _mm256_storeu_si256(dsts_r[r].add(off).cast(), acc[r]) };
        }
        off += 32;
    }
    // SAFETY: the same contract, over the last (< 32) columns.
    unsafe { scalar::dot_prod(tables, row0, srcs, dsts, off, end) };
}

// --- AVX2 GFNI -----------------------------------------------------------------------

#[inline]
#[target_feature(enable = "avx2")]
fn matrix256(tables: &Tables, row: usize, col: usize) -> __m256i {
    _mm256_set1_epi64x(tables.affine(row, col) as i64)
}

/// # Safety
///
/// The contract of [`super::KernelFn`] with `dsts.len() == R`; AVX2 and GFNI.
#[target_feature(enable = "avx2,gfni")]
unsafe fn gfni256<const R: usize>(
    tables: &Tables,
    row0: usize,
    srcs: &[*const u8],
    dsts: &[*mut u8],
    start: usize,
    end: usize,
) {
    let dsts_r: &[*mut u8; R] = dsts.try_into().expect("the dispatcher passes R rows");
    let mut off = start;
    while off + 64 <= end {
        let mut acc0 = [_mm256_setzero_si256(); R];
        let mut acc1 = [_mm256_setzero_si256(); R];
        for (j, &src) in srcs.iter().enumerate() {
            // SAFETY: every source is readable for `end` bytes and off + 64 <= end.
            let (x0, x1) = unsafe {
                (
                    _mm256_loadu_si256(src.add(off).cast()),
                    _mm256_loadu_si256(src.add(off + 32).cast()),
                )
            };
            for r in 0..R {
                let a = matrix256(tables, row0 + r, j);
                acc0[r] = _mm256_xor_si256(acc0[r], _mm256_gf2p8affine_epi64_epi8::<0>(x0, a));
                acc1[r] = _mm256_xor_si256(acc1[r], _mm256_gf2p8affine_epi64_epi8::<0>(x1, a));
            }
        }
        for r in 0..R {
            // SAFETY: every destination is writable for `end` bytes, off + 64 <= end.
            unsafe {
                _mm256_storeu_si256(dsts_r[r].add(off).cast(), acc0[r]);
                _mm256_storeu_si256(dsts_r[r].add(off + 32).cast(), acc1[r]);
            }
        }
        off += 64;
    }
    if off + 32 <= end {
        let mut acc = [_mm256_setzero_si256(); R];
        for (j, &src) in srcs.iter().enumerate() {
            // SAFETY: every source is readable for `end` bytes and off + 32 <= end.
            let x = unsafe { _mm256_loadu_si256(src.add(off).cast()) };
            for r in 0..R {
                let a = matrix256(tables, row0 + r, j);
                acc[r] = _mm256_xor_si256(acc[r], _mm256_gf2p8affine_epi64_epi8::<0>(x, a));
            }
        }
        for r in 0..R {
            // SAFETY: every destination is writable for `end` bytes, off + 32 <= end.
            unsafe { _mm256_storeu_si256(dsts_r[r].add(off).cast(), acc[r]) };
        }
        off += 32;
    }
    // SAFETY: the same contract, over the last (< 32) columns.
    unsafe { scalar::dot_prod(tables, row0, srcs, dsts, off, end) };
}
