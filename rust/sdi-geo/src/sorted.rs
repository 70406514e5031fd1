//! Points sorted along a space-filling curve, with a sparse block index:
//! the storage under [`GeohashIndex`](crate::GeohashIndex) and
//! [`CellIndex`](crate::CellIndex).
//!
//! Points are held column-wise (latitude `i32`, longitude `i32`, id `u64`:
//! 16 bytes) in curve order. The curve key of a point is not stored: only
//! the key of the first point of every block of [`BLOCK`] points is (8 bytes
//! per block, half a byte per point), plus a radix table of the blocks by
//! the top bits of their key (about one `u32` per block, a quarter byte per
//! point) so that finding the blocks of a key range is a search among a
//! few keys. An index's covering gives cells, each a key range; each
//! cell's blocks `[b0, b1)` run from the last block starting below the
//! range to the last starting within it (keys repeat across blocks when
//! points share a cell). The block spans of all cells are merged so each
//! point is scanned at most once, and the exact distance filter drops the
//! points of the edge blocks that lie outside the cells. No per-point key,
//! no duplicates.

use crate::query::{check_points, Query};
use crate::{vec_bytes, GeoError, Scratch, EARTH_RADIUS_M};

/// Points per block of the sparse key index.
pub(crate) const BLOCK: usize = 16;

/// Points in curve order with one key per block.
#[derive(Clone, Debug, Default)]
pub(crate) struct Sorted {
    lat: Vec<i32>,
    lon: Vec<i32>,
    ids: Vec<u64>,
    /// Key of the first point of each block.
    block_keys: Vec<u64>,
    /// `radix[p]`: the number of blocks whose key's top bits (`key >>
    /// shift`) are below `p`; narrows each binary search to one bucket.
    radix: Vec<u32>,
    shift: u32,
}

impl Sorted {
    /// Validate and sort the points by `key(lat, lon)` (fixed point), then id.
    /// Keys must be below `2^key_bits`.
    pub fn build(
        ids: &[u64],
        lats: &[f64],
        lons: &[f64],
        key_bits: u32,
        key: impl Fn(i32, i32) -> u64,
    ) -> Result<Sorted, GeoError> {
        let fixed = check_points(ids, lats, lons)?;
        let mut order: Vec<(u64, u64, u32)> = fixed
            .iter()
            .zip(ids)
            .enumerate()
            // The index fits u32: check_points bounds the length.
            .map(|(i, (&(lat, lon), &id))| (key(lat, lon), id, i as u32))
            .collect();
        order.sort_unstable();
        let n = order.len();
        let mut s = Sorted {
            lat: Vec::with_capacity(n),
            lon: Vec::with_capacity(n),
            ids: Vec::with_capacity(n),
            block_keys: Vec::with_capacity(n.div_ceil(BLOCK)),
            radix: Vec::new(),
            shift: 0,
        };
        for (j, &(k, id, i)) in order.iter().enumerate() {
            let (lat, lon) = fixed[i as usize];
            s.lat.push(lat);
            s.lon.push(lon);
            s.ids.push(id);
            if j % BLOCK == 0 {
                s.block_keys.push(k);
            }
        }
        // About one bucket per block: a quarter byte per point.
        let bits = s.block_keys.len().max(2).ilog2().min(key_bits);
        s.shift = key_bits - bits;
        s.radix = vec![0; (1usize << bits) + 1];
        for &k in &s.block_keys {
            s.radix[(k >> s.shift) as usize + 1] += 1;
        }
        for p in 1..s.radix.len() {
            s.radix[p] += s.radix[p - 1];
        }
        Ok(s)
    }

    /// The number of blocks whose first key is `<= x` (`strict`: `< x`).
    #[inline]
    fn count(&self, x: u64, strict: bool) -> usize {
        let p = (x >> self.shift) as usize;
        if p + 1 >= self.radix.len() {
            return self.block_keys.len();
        }
        let (a, b) = (self.radix[p] as usize, self.radix[p + 1] as usize);
        let keys = &self.block_keys[a..b];
        a + if strict {
            keys.partition_point(|&k| k < x)
        } else {
            keys.partition_point(|&k| k <= x)
        }
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + vec_bytes(&self.lat)
            + vec_bytes(&self.lon)
            + vec_bytes(&self.ids)
            + vec_bytes(&self.block_keys)
            + vec_bytes(&self.radix)
    }

    /// `(blocks starting below lo, blocks starting at or below hi)` for a
    /// key range: the blocks that can hold it are `[c0 - 1, c1)` (from 0
    /// when `c0 = 0`).
    #[inline]
    pub fn counts(&self, lo: u64, hi: u64) -> (usize, usize) {
        (self.count(lo, true), self.count(hi, false))
    }

    /// [`Sorted::counts`] of a sub-range of a range whose counts are
    /// `parent`: a search in the parent's few blocks only.
    #[inline]
    pub fn counts_within(&self, lo: u64, hi: u64, (a, b): (usize, usize)) -> (usize, usize) {
        let keys = &self.block_keys[a..b];
        (
            a + keys.partition_point(|&k| k < lo),
            a + keys.partition_point(|&k| k <= hi),
        )
    }

    /// Scan block spans `[b0, b1)` (any order, overlapping allowed): each
    /// block once.
    pub fn scan_spans(&self, q: &Query, scratch: &mut Scratch) {
        let mut spans = std::mem::take(&mut scratch.spans);
        spans.sort_unstable();
        let mut pending: Option<(usize, usize)> = None;
        for &(b0, b1) in &spans {
            if b0 >= b1 {
                continue;
            }
            match pending {
                Some((a, b)) if b0 <= b => pending = Some((a, b.max(b1))),
                Some(span) => {
                    self.scan_blocks(q, span, scratch);
                    pending = Some((b0, b1));
                }
                None => pending = Some((b0, b1)),
            }
        }
        if let Some(span) = pending {
            self.scan_blocks(q, span, scratch);
        }
        spans.clear();
        scratch.spans = spans;
    }

    #[inline]
    fn scan_blocks(&self, q: &Query, (b0, b1): (usize, usize), scratch: &mut Scratch) {
        let start = b0 * BLOCK;
        let end = (b1 * BLOCK).min(self.ids.len());
        let lat = &self.lat[start..end];
        let lon = &self.lon[start..end];
        let ids = &self.ids[start..end];
        for i in 0..lat.len() {
            if let Some(d) = q.within(lat[i], lon[i]) {
                scratch.hits.push((ids[i], d));
            }
        }
    }

    /// The `min(k, len)` nearest points into `scratch.hits` (any order).
    ///
    /// The points stored around the query's own key are near it on the
    /// curve, hence near it on the ground: the k-th smallest distance among
    /// a window of them bounds the k-th nearest distance (`r_ub`). Radius
    /// queries then grow from an estimate (the smaller of `r_ub` and the
    /// radius that holds k points at the mean density) until one holds k
    /// points; the query at `r_ub` always does. Taking the k best of a
    /// radius query that holds at least k points is exact, ties included.
    pub fn knn(
        &self,
        q: &Query,
        k: usize,
        key: u64,
        collect: impl Fn(&Query, &mut Scratch),
        scratch: &mut Scratch,
    ) {
        let n = self.ids.len();
        if k >= n {
            for i in 0..n {
                let d = q.distance(self.lat[i], self.lon[i]);
                scratch.hits.push((self.ids[i], d));
            }
            return;
        }
        let pos = self.count(key, false) * BLOCK;
        let width = (2 * k).max(BLOCK).min(n);
        let start = pos.saturating_sub(width / 2).min(n - width);
        scratch.dists.clear();
        scratch
            .dists
            .extend((start..start + width).map(|i| q.distance(self.lat[i], self.lon[i])));
        let (_, &mut r_ub, _) = scratch.dists.select_nth_unstable_by(k - 1, f64::total_cmp);
        let guess = 2.0 * EARTH_RADIUS_M * (k as f64 / n as f64).sqrt();
        let f = 1.5;
        let mut r = r_ub.min(guess * f);
        loop {
            let rq = Query::unchecked(q.lat, q.lon, r);
            scratch.hits.clear();
            collect(&rq, scratch);
            if scratch.hits.len() >= k || r >= r_ub {
                break;
            }
            r = (r * 2.0).min(r_ub);
        }
        if scratch.hits.len() > k {
            scratch
                .hits
                .select_nth_unstable_by(k - 1, crate::query::cmp_hit);
            scratch.hits.truncate(k);
        }
    }
}

/// Sort key ranges and merge the overlapping or adjacent ones.
pub(crate) fn merge_ranges(ranges: &mut Vec<(u64, u64)>) {
    ranges.sort_unstable();
    let mut w = 0;
    for r in 0..ranges.len() {
        let (lo, hi) = ranges[r];
        if w > 0 && lo <= ranges[w - 1].1.saturating_add(1) {
            ranges[w - 1].1 = ranges[w - 1].1.max(hi);
        } else {
            ranges[w] = (lo, hi);
            w += 1;
        }
    }
    ranges.truncate(w);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge() {
        let mut r = vec![(10, 20), (0, 4), (5, 7), (15, 30), (40, 41)];
        merge_ranges(&mut r);
        assert_eq!(r, [(0, 7), (10, 30), (40, 41)]);
    }
}
