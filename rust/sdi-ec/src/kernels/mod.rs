//! The dot-product kernels: `dst[r] = xor over j of coef[r][j] * src[j]`,
//! byte by byte, for every output row `r` and source `j`.
//!
//! Encoding is this product with the parity rows of the generator matrix;
//! reconstruction is the same product with rows of the inverted matrix. Each
//! SIMD kernel computes up to [`ROWS_PER_PASS`] output rows in one pass over
//! the sources (the way ISA-L's `gf_Nvect_dot_prod` does), keeping the
//! accumulators in registers, so for 4+2 every source byte is read once.
//!
//! The best kernel the CPU supports is found once (`is_x86_feature_detected!`)
//! and cached; a [`crate::Codec`] keeps the function pointer of its kernel.

use std::sync::OnceLock;

use crate::gf;

pub(crate) mod scalar;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86;

/// Output rows per pass over the sources in the SIMD kernels (ISA-L's limit
/// too); more rows are done in groups, over column blocks that stay in cache.
pub const ROWS_PER_PASS: usize = 6;

/// A coefficient matrix prepared for every kernel: the raw coefficients, the
/// two 16-entry nibble product tables of each (for `vpshufb`), and its 8x8
/// bit matrix (for `vgf2p8affineqb`).
#[derive(Clone, Debug)]
pub(crate) struct Tables {
    rows: usize,
    cols: usize,
    coef: Vec<u8>,
    /// Per coefficient, `c * n` for `n` in `0..16`, then `c * (n << 4)`.
    nibbles: Vec<[u8; 32]>,
    /// Per coefficient, the affine matrix of [`gf::affine_matrix`].
    affine: Vec<u64>,
}

impl Tables {
    /// Prepares the `rows x cols` row-major coefficient matrix `coef`.
    pub(crate) fn new(rows: usize, cols: usize, coef: Vec<u8>) -> Tables {
        assert_eq!(coef.len(), rows * cols, "coefficient matrix shape");
        let nibbles = coef
            .iter()
            .map(|&c| {
                let row = &gf::MUL[c as usize];
                let mut table = [0u8; 32];
                for n in 0..16 {
                    table[n] = row[n];
                    table[16 + n] = row[n << 4];
                }
                table
            })
            .collect();
        let affine = coef.iter().map(|&c| gf::affine_matrix(c)).collect();
        Tables {
            rows,
            cols,
            coef,
            nibbles,
            affine,
        }
    }

    pub(crate) fn rows(&self) -> usize {
        self.rows
    }

    pub(crate) fn cols(&self) -> usize {
        self.cols
    }

    #[inline(always)]
    pub(crate) fn coef(&self, row: usize, col: usize) -> u8 {
        self.coef[row * self.cols + col]
    }

    #[inline(always)]
    pub(crate) fn nibbles(&self, row: usize, col: usize) -> &[u8; 32] {
        &self.nibbles[row * self.cols + col]
    }

    #[inline(always)]
    pub(crate) fn affine(&self, row: usize, col: usize) -> u64 {
        self.affine[row * self.cols + col]
    }
}

/// A kernel entry point: computes output rows `row0..row0 + dsts.len()` of
/// `tables` over byte columns `start..end`.
///
/// # Safety
///
/// `srcs.len() == tables.cols()`, `row0 + dsts.len() <= tables.rows()`,
/// `dsts.len() <= ROWS_PER_PASS`; every pointer in `srcs` is valid for reads
/// and every pointer in `dsts` valid for writes of `end` bytes; no
/// destination overlaps a source or another destination; and the CPU
/// supports the kernel's target features.
pub(crate) type KernelFn = unsafe fn(
    tables: &Tables,
    row0: usize,
    srcs: &[*const u8],
    dsts: &[*mut u8],
    start: usize,
    end: usize,
);

/// The kernels, fastest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// AVX-512BW with GFNI: one `vgf2p8affineqb` per source, row and 64 bytes; masked tail.
    Avx512Gfni,
    /// AVX-512BW nibble tables: two `vpshufb` per source, row and 64 bytes; masked tail.
    Avx512,
    /// AVX2 with GFNI: `vgf2p8affineqb` on 32-byte vectors; scalar tail.
    Avx2Gfni,
    /// AVX2 nibble tables (`vpshufb` on 32-byte vectors); scalar tail.
    Avx2,
    /// Portable code: one lookup in the 64 KiB product table per byte and coefficient.
    Scalar,
}

impl Kernel {
    /// Every kernel, fastest first.
    pub const ALL: [Kernel; 5] = [
        Kernel::Avx512Gfni,
        Kernel::Avx512,
        Kernel::Avx2Gfni,
        Kernel::Avx2,
        Kernel::Scalar,
    ];

    /// The kernel's name: `avx512-gfni`, `avx512`, `avx2-gfni`, `avx2` or `scalar`.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Avx512Gfni => "avx512-gfni",
            Kernel::Avx512 => "avx512",
            Kernel::Avx2Gfni => "avx2-gfni",
            Kernel::Avx2 => "avx2",
            Kernel::Scalar => "scalar",
        }
    }

    /// The kernel called `name` (see [`Kernel::name`]).
    pub fn from_name(name: &str) -> Option<Kernel> {
        Kernel::ALL.into_iter().find(|kernel| kernel.name() == name)
    }

    /// Whether this CPU can run the kernel.
    pub fn is_supported(self) -> bool {
        match self {
            Kernel::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Gfni => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("gfni")
            }
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
            }
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2Gfni => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("gfni")
            }
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => std::arch::is_x86_feature_detected!("avx2"),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The kernels this CPU can run, fastest first.
    pub fn supported() -> Vec<Kernel> {
        Kernel::ALL
            .into_iter()
            .filter(|kernel| kernel.is_supported())
            .collect()
    }

    /// The fastest kernel this CPU supports that passes its self-test,
    /// detected once per process.
    pub fn best() -> Kernel {
        static BEST: OnceLock<Kernel> = OnceLock::new();
        *BEST.get_or_init(|| {
            Kernel::ALL
                .into_iter()
                .find(|kernel| kernel.passes_self_test())
                .unwrap_or(Kernel::Scalar)
        })
    }

    /// Whether the kernel is supported here and computes the same bytes as
    /// the scalar kernel on a small product that goes through every path
    /// (several row groups, the unrolled loops, the tail). Run once per
    /// kernel and process, so that a kernel that cannot be tested on the
    /// machines that build sdi (GFNI, say) is never used if it is wrong.
    pub fn passes_self_test(self) -> bool {
        static RESULTS: OnceLock<[bool; 5]> = OnceLock::new();
        let results = RESULTS.get_or_init(|| Kernel::ALL.map(self_test));
        results[Kernel::ALL.iter().position(|&k| k == self).unwrap_or(0)]
    }

    /// The kernel's entry point; only call it when [`Kernel::is_supported`].
    pub(crate) fn entry(self) -> KernelFn {
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Gfni => x86::avx512_gfni,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => x86::avx512_nibbles,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2Gfni => x86::avx2_gfni,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => x86::avx2_nibbles,
            _ => scalar::dot_prod,
        }
    }
}

impl std::fmt::Display for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// See [`Kernel::passes_self_test`].
fn self_test(kernel: Kernel) -> bool {
    // SAFETY: only called for a supported kernel.
    kernel.is_supported() && unsafe { entry_matches_scalar(kernel.entry()) }
}

/// Whether `entry` computes what the scalar kernel computes on a product
/// with two row groups, every unrolled loop and a tail.
///
/// # Safety
///
/// The CPU supports `entry`.
unsafe fn entry_matches_scalar(entry: KernelFn) -> bool {
    const COLS: usize = 5;
    const ROWS: usize = ROWS_PER_PASS + 1;
    const LEN: usize = 64 * 9 + 37;
    let coef: Vec<u8> = (0..ROWS * COLS).map(|i| (i * 37 + 1) as u8).collect();
    let tables = Tables::new(ROWS, COLS, coef);
    let sources: Vec<Vec<u8>> = (0..COLS)
        .map(|j| (0..LEN).map(|i| (i * i + 131 * i + 71 * j) as u8).collect())
        .collect();
    let srcs: Vec<*const u8> = sources.iter().map(|s| s.as_ptr()).collect();
    let mut want = vec![vec![0u8; LEN]; ROWS];
    let mut got = vec![vec![0xA5u8; LEN]; ROWS];
    let want_ptrs: Vec<*mut u8> = want.iter_mut().map(|o| o.as_mut_ptr()).collect();
    let got_ptrs: Vec<*mut u8> = got.iter_mut().map(|o| o.as_mut_ptr()).collect();
    // SAFETY: `ROWS x COLS` tables; sources and outputs are separate
    // vectors of `LEN` bytes; the scalar kernel runs anywhere and the
    // caller vouches for `entry`.
    unsafe {
        run(scalar::dot_prod, &tables, &srcs, &want_ptrs, LEN);
        run(entry, &tables, &srcs, &got_ptrs, LEN);
    }
    got == want
}

/// Bytes of each source per column block when the rows need several passes,
/// so that the sources stay in L2 between the passes.
const BLOCK_SOURCE_BYTES: usize = 256 << 10;

/// Runs `entry` over all rows of `tables` and all `len` columns.
///
/// # Safety
///
/// As for [`KernelFn`], with `dsts.len() == tables.rows()`, pointers valid
/// for `len` bytes, and `entry` supported by this CPU.
pub(crate) unsafe fn run(
    entry: KernelFn,
    tables: &Tables,
    srcs: &[*const u8],
    dsts: &[*mut u8],
    len: usize,
) {
    debug_assert_eq!(srcs.len(), tables.cols());
    debug_assert_eq!(dsts.len(), tables.rows());
    if dsts.is_empty() || len == 0 {
        return;
    }
    if dsts.len() <= ROWS_PER_PASS {
        // SAFETY: the caller's contract, with all rows in one pass.
        unsafe { entry(tables, 0, srcs, dsts, 0, len) };
        return;
    }
    let block = (BLOCK_SOURCE_BYTES / srcs.len().max(1)).max(4096) & !63;
    let mut start = 0;
    while start < len {
        let end = len.min(start + block);
        for (group, chunk) in dsts.chunks(ROWS_PER_PASS).enumerate() {
            // SAFETY: the caller's contract; each group has at most
            // ROWS_PER_PASS rows starting at row `group * ROWS_PER_PASS`.
            unsafe { entry(tables, group * ROWS_PER_PASS, srcs, chunk, start, end) };
        }
        start = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scalar kernel with its last output byte flipped.
    unsafe fn off_by_one_bit(
        tables: &Tables,
        row0: usize,
        srcs: &[*const u8],
        dsts: &[*mut u8],
        start: usize,
        end: usize,
    ) {
        // SAFETY: the same contract as the scalar kernel.
        unsafe { scalar::dot_prod(tables, row0, srcs, dsts, start, end) };
        if end > start {
            for &dst in dsts {
                // SAFETY: `dst` is writable for `end` bytes.
                unsafe { *dst.add(end - 1) ^= 1 };
            }
        }
    }

    #[test]
    fn the_self_test_catches_a_wrong_kernel() {
        // SAFETY: both entries are portable code.
        unsafe {
            assert!(entry_matches_scalar(scalar::dot_prod));
            assert!(!entry_matches_scalar(off_by_one_bit));
        }
    }
}
