//! The portable kernel: one lookup in the 64 KiB product table per byte and
//! coefficient. Also the tail of the AVX2 kernels.

use super::Tables;
use crate::gf;

/// See [`super::KernelFn`]; needs no CPU feature.
///
/// # Safety
///
/// The contract of [`super::KernelFn`].
pub(crate) unsafe fn dot_prod(
    tables: &Tables,
    row0: usize,
    srcs: &[*const u8],
    dsts: &[*mut u8],
    start: usize,
    end: usize,
) {
    if start >= end {
        return;
    }
    let len = end - start;
    for (r, &dst) in dsts.iter().enumerate() {
        // SAFETY: `dst` is valid for writes of `end` bytes and overlaps no
        // source (the contract), so this is the only reference to the range.
        let out = unsafe { std::slice::from_raw_parts_mut(dst.add(start), len) };
        for (j, &src) in srcs.iter().enumerate() {
            // SAFETY: `src` is valid for reads of `end` bytes and is not
            // written while `out` exists (no destination overlaps a source).
            let input = unsafe { std::slice::from_raw_parts(src.add(start), len) };
            let table = &gf::MUL[tables.coef(row0 + r, j) as usize];
            if j == 0 {
                for (o, &x) in out.iter_mut().zip(input) {
                    *o = table[x as usize];
                }
            } else {
                for (o, &x) in out.iter_mut().zip(input) {
                    *o ^= table[x as usize];
                }
            }
        }
        if srcs.is_empty() {
            out.fill(0);
        }
    }
}
