//! Arithmetic in GF(2^8) with the polynomial x^8 + x^4 + x^3 + x^2 + 1
//! (0x11D, the field of ISA-L and of most storage Reed-Solomon codes), and
//! the small dense matrices the codec builds from it.
//!
//! All tables are built at compile time: `EXP`/`LOG` over the generator 2,
//! and the full 64 KiB product table [`MUL`] that the scalar kernel and the
//! SIMD table builders read.

/// The field polynomial, with the x^8 term.
pub const POLY: u16 = 0x11D;

const fn build_exp_log() -> ([u8; 512], [u8; 256]) {
    let mut exp = [0u8; 512];
    let mut log = [0u8; 256];
    let mut x: u16 = 1;
    let mut i = 0;
    while i < 255 {
        exp[i] = x as u8;
        exp[i + 255] = x as u8;
        log[x as usize] = i as u8;
        x <<= 1;
        if x & 0x100 != 0 {
            x ^= POLY;
        }
        i += 1;
    }
    // exp[510], exp[511] are never read (log values are < 255, so sums are < 510).
    (exp, log)
}

const EXP_LOG: ([u8; 512], [u8; 256]) = build_exp_log();
/// `EXP[i] = 2^i` for `i` in `0..510` (doubled so that `EXP[LOG[a] + LOG[b]]` needs no modulo).
pub static EXP: [u8; 512] = EXP_LOG.0;
/// `LOG[a]` for `a != 0`; `LOG[0]` is unused.
pub static LOG: [u8; 256] = EXP_LOG.1;

const fn build_mul() -> [[u8; 256]; 256] {
    let (exp, log) = build_exp_log();
    let mut table = [[0u8; 256]; 256];
    let mut a = 1;
    while a < 256 {
        let mut b = 1;
        while b < 256 {
            table[a][b] = exp[log[a] as usize + log[b] as usize];
            b += 1;
        }
        a += 1;
    }
    table
}

/// `MUL[a][b] = a * b` in the field: 64 KiB, one row per coefficient.
pub static MUL: [[u8; 256]; 256] = build_mul();

/// `a * b` through the log and exp tables (the reference the tests use).
#[inline]
pub fn mul(a: u8, b: u8) -> u8 {
    if a == 0 || b == 0 {
        0
    } else {
        EXP[LOG[a as usize] as usize + LOG[b as usize] as usize]
    }
}

/// `a * b` by shift and reduce, bit by bit: the slowest and most obviously
/// right definition, used to check the tables.
pub fn mul_bitwise(mut a: u8, mut b: u8) -> u8 {
    let mut product = 0u8;
    while b != 0 {
        if b & 1 != 0 {
            product ^= a;
        }
        let carry = a & 0x80 != 0;
        a <<= 1;
        if carry {
            a ^= (POLY & 0xFF) as u8;
        }
        b >>= 1;
    }
    product
}

/// The multiplicative inverse of `a`; `None` for zero.
#[inline]
pub fn inv(a: u8) -> Option<u8> {
    if a == 0 {
        None
    } else {
        Some(EXP[255 - LOG[a as usize] as usize])
    }
}

/// The 8x8 bit matrix for `vgf2p8affineqb` that multiplies a byte by `c`.
///
/// The instruction computes output bit `i` as the parity of
/// `matrix.byte[7 - i] & x`. Multiplication by `c` is linear over GF(2):
/// `c * x = xor over set bits b of x of (c * 2^b)`, so output bit `i` takes
/// input bit `b` exactly when bit `i` of `c * 2^b` is set.
pub fn affine_matrix(c: u8) -> u64 {
    let columns: [u8; 8] = std::array::from_fn(|b| MUL[c as usize][1 << b]);
    let mut matrix = 0u64;
    for i in 0..8 {
        let mut row = 0u8;
        for (b, &column) in columns.iter().enumerate() {
            row |= ((column >> i) & 1) << b;
        }
        matrix |= u64::from(row) << (8 * (7 - i));
    }
    matrix
}

/// Software model of one byte of `vgf2p8affineqb` with `imm8 = 0`, exactly as
/// Intel's pseudo-code writes it; the tests check [`affine_matrix`] with it
/// on machines without GFNI.
pub fn affine_apply(matrix: u64, x: u8) -> u8 {
    let mut out = 0u8;
    for i in 0..8 {
        let row = (matrix >> (8 * (7 - i))) as u8;
        out |= (((row & x).count_ones() & 1) as u8) << i;
    }
    out
}

/// The `(k + m) x k` systematic generator matrix, row-major: the identity on
/// top, then ISA-L's `gf_gen_cauchy1_matrix` rows `a[i][j] = 1 / (i ^ j)` for
/// `i` in `k..k + m`, `j` in `0..k`.
///
/// Every square submatrix of a Cauchy matrix `1 / (x_i + y_j)` with distinct
/// `x_i`, distinct `y_j` and no `x_i == y_j` is invertible; here `x_i = i >= k`
/// and `y_j = j < k`, so that holds for `k + m <= 256`. A `k x k` submatrix of
/// `[I; C]` made of `d` identity rows and `k - d` Cauchy rows is invertible
/// exactly when the `(k - d) x (k - d)` block of `C` on the columns the
/// identity rows miss is, so any `k` shards determine the data.
pub fn generator(k: usize, m: usize) -> Vec<u8> {
    let mut matrix = vec![0u8; (k + m) * k];
    for i in 0..k {
        matrix[i * k + i] = 1;
    }
    for i in k..k + m {
        for j in 0..k {
            // i != j and both < 256, so i ^ j is a nonzero byte.
            matrix[i * k + j] = inv((i ^ j) as u8).unwrap_or(0);
        }
    }
    matrix
}

/// Inverts the `n x n` row-major matrix by Gauss-Jordan elimination;
/// `None` if it is singular.
pub fn invert(matrix: &[u8], n: usize) -> Option<Vec<u8>> {
    debug_assert_eq!(matrix.len(), n * n);
    let mut a = matrix.to_vec();
    let mut out = vec![0u8; n * n];
    for i in 0..n {
        out[i * n + i] = 1;
    }
    for col in 0..n {
        let pivot = (col..n).find(|&row| a[row * n + col] != 0)?;
        if pivot != col {
            for j in 0..n {
                a.swap(pivot * n + j, col * n + j);
                out.swap(pivot * n + j, col * n + j);
            }
        }
        let scale = inv(a[col * n + col])?;
        for j in 0..n {
            a[col * n + j] = mul(a[col * n + j], scale);
            out[col * n + j] = mul(out[col * n + j], scale);
        }
        for row in 0..n {
            let factor = a[row * n + col];
            if row == col || factor == 0 {
                continue;
            }
            for j in 0..n {
                a[row * n + j] ^= mul(factor, a[col * n + j]);
                out[row * n + j] ^= mul(factor, out[col * n + j]);
            }
        }
    }
    Some(out)
}

/// `row (1 x n) * matrix (n x n)`.
pub fn row_times(row: &[u8], matrix: &[u8], n: usize) -> Vec<u8> {
    (0..n)
        .map(|j| {
            row.iter()
                .enumerate()
                .fold(0u8, |acc, (i, &r)| acc ^ mul(r, matrix[i * n + j]))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_agree_with_bitwise_multiplication() {
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                let want = mul_bitwise(a, b);
                assert_eq!(MUL[a as usize][b as usize], want, "{a} * {b}");
                assert_eq!(mul(a, b), want, "{a} * {b}");
            }
        }
    }

    #[test]
    fn inverses() {
        assert_eq!(inv(0), None);
        for a in 1..=255u8 {
            assert_eq!(mul(a, inv(a).unwrap()), 1);
        }
    }

    #[test]
    fn affine_matrices_multiply() {
        for c in 0..=255u8 {
            let matrix = affine_matrix(c);
            for x in 0..=255u8 {
                assert_eq!(affine_apply(matrix, x), mul(c, x), "c={c} x={x}");
            }
        }
        // The identity matrix of the instruction's documentation.
        assert_eq!(affine_matrix(1), 0x0102_0408_1020_4080);
    }

    #[test]
    fn invert_round_trips() {
        let g = generator(5, 3);
        // rows 1, 3, 5, 6, 7
        let rows = [1usize, 3, 5, 6, 7];
        let sub: Vec<u8> = rows
            .iter()
            .flat_map(|&r| g[r * 5..r * 5 + 5].to_vec())
            .collect();
        let inverse = invert(&sub, 5).unwrap();
        for i in 0..5 {
            let product = row_times(&sub[i * 5..i * 5 + 5], &inverse, 5);
            for (j, &value) in product.iter().enumerate() {
                assert_eq!(value, u8::from(i == j));
            }
        }
        assert_eq!(invert(&[1, 1, 1, 1], 2), None);
    }
}
