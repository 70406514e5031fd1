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
//!
//! For k-nearest queries a packed tree of boxes sits over the blocks: the
//! axis-aligned box (in `f32`, rounded outward) of the unit vectors of each
//! block's points, then of each run of [`FANOUT`] boxes, up to at most
//! [`FANOUT`] at the top (24 bytes per block, 1.6 bytes per point in all).
//! The distance in space from the query's unit vector to a box bounds the
//! chord, hence the great-circle distance, to every point in it, with no
//! trigonometry and no special case at the poles or the antimeridian.

use crate::query::{check_points, to_fixed, unit_fixed, Query};
use crate::{vec_bytes, GeoError, Scratch, EARTH_RADIUS_M};

/// Points per block of the sparse key index.
pub(crate) const BLOCK: usize = 16;
/// Children per node of the box tree over the blocks.
const FANOUT: usize = 16;
/// Outward padding of a box's `f32` bounds (unit-sphere units, about 6 m):
/// far above the rounding of the conversion, so a box holds its points.
const BOX_PAD: f64 = 1e-6;

/// The axis-aligned box of a set of unit vectors, rounded outward to `f32`.
#[derive(Clone, Copy, Debug)]
struct Aabb {
    lo: [f32; 3],
    hi: [f32; 3],
}

impl Aabb {
    const EMPTY: Aabb = Aabb {
        lo: [f32::INFINITY; 3],
        hi: [f32::NEG_INFINITY; 3],
    };

    fn add_point(&mut self, p: [f64; 3]) {
        for (a, &x) in p.iter().enumerate() {
            // |x| <= 1: the f32 rounding error is below 1e-7 < BOX_PAD.
            self.lo[a] = self.lo[a].min((x - BOX_PAD) as f32);
            self.hi[a] = self.hi[a].max((x + BOX_PAD) as f32);
        }
    }

    fn add_box(&mut self, b: &Aabb) {
        for a in 0..3 {
            self.lo[a] = self.lo[a].min(b.lo[a]);
            self.hi[a] = self.hi[a].max(b.hi[a]);
        }
    }
}

/// The boxes of up to [`FANOUT`] sibling nodes, column-wise (empty boxes
/// past the last sibling), so their gaps to a query compute in SIMD lanes.
#[derive(Clone, Debug)]
struct Group {
    lo: [[f32; FANOUT]; 3],
    hi: [[f32; FANOUT]; 3],
}

impl Group {
    fn new(boxes: &[Aabb]) -> Group {
        let mut g = Group {
            lo: [[f32::INFINITY; FANOUT]; 3],
            hi: [[f32::NEG_INFINITY; FANOUT]; 3],
        };
        for (c, b) in boxes.iter().enumerate() {
            for a in 0..3 {
                g.lo[a][c] = b.lo[a];
                g.hi[a][c] = b.hi[a];
            }
        }
        g
    }

    /// The squared distance in space from `q` to each box, in `f32`: a
    /// lower bound of the squared chord from `q` to the box's points, up
    /// to a relative 3e-7 (the boxes are padded by far more than the
    /// absolute rounding of `q` and of the differences).
    #[inline(always)]
    fn gaps2(&self, q: &[f32; 3]) -> [f32; FANOUT] {
        let mut out = [0.0f32; FANOUT];
        for (a, &qa) in q.iter().enumerate() {
            for ((o, &lo), &hi) in out.iter_mut().zip(&self.lo[a]).zip(&self.hi[a]) {
                let below = lo - qa;
                let above = qa - hi;
                // Comparisons rather than f32::max, whose NaN handling
                // (there is no NaN here) costs instructions.
                let g = if below > above { below } else { above };
                let g = if g > 0.0 { g } else { 0.0 };
                *o += g * g;
            }
        }
        out
    }
}

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
    /// A packed tree of boxes over the points' unit vectors, for k-nearest
    /// queries. The nodes of height 0 are the blocks; node `i` of height
    /// `h + 1` has the nodes `FANOUT i ..` of height `h` below it, whose
    /// boxes are `groups[h][i]`. The top height has at most [`FANOUT`]
    /// nodes, in `groups[top][0]`.
    groups: Vec<Vec<Group>>,
    /// The number of nodes of each height.
    nodes: Vec<usize>,
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
            groups: Vec::new(),
            nodes: Vec::new(),
        };
        let mut leaves = Vec::with_capacity(n.div_ceil(BLOCK));
        for (j, &(k, id, i)) in order.iter().enumerate() {
            let (lat, lon) = fixed[i as usize];
            s.lat.push(lat);
            s.lon.push(lon);
            s.ids.push(id);
            if j % BLOCK == 0 {
                s.block_keys.push(k);
                leaves.push(Aabb::EMPTY);
            }
            if let Some(b) = leaves.last_mut() {
                b.add_point(unit_fixed(lat, lon));
            }
        }
        let mut level = leaves;
        while !level.is_empty() {
            s.nodes.push(level.len());
            s.groups
                .push(level.chunks(FANOUT).map(Group::new).collect());
            if level.len() <= FANOUT {
                break;
            }
            level = level
                .chunks(FANOUT)
                .map(|run| {
                    let mut b = Aabb::EMPTY;
                    run.iter().for_each(|c| b.add_box(c));
                    b
                })
                .collect();
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
            + vec_bytes(&self.groups)
            + self.groups.iter().map(vec_bytes).sum::<usize>()
            + vec_bytes(&self.nodes)
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

    /// The block that holds curve key `key` (or would): where a k-nearest
    /// search near the key starts.
    #[inline]
    pub fn seed_block(&self, key: u64) -> usize {
        self.count(key, false).saturating_sub(1)
    }

    /// Start loading the points of block `b` (ignored past the end).
    #[inline]
    pub fn prefetch_block(&self, b: usize) {
        let i = b * BLOCK;
        if i < self.ids.len() {
            prefetch(&self.lat[i]);
            prefetch(&self.lon[i]);
            prefetch(&self.ids[i]);
            prefetch(&self.ids[(i + BLOCK / 2).min(self.ids.len() - 1)]);
        }
    }

    /// The `min(k, len)` nearest points into `scratch.hits` (any order).
    ///
    /// Block `seed` (from [`Sorted::seed_block`]: the block holding the
    /// query's curve key, whose points are near on the ground) is scanned
    /// first, which gives a bound early; then a depth-first search of the
    /// box tree visits, nearest box first, the nodes whose box is within
    /// the k-th best distance so far (the bound shrinks as it goes). The
    /// best `k` are kept by `(distance, id)`, the result order, so ties are
    /// exact. A point is measured only when it lies in the latitude band
    /// and longitude window of the k-th best distance.
    pub fn knn(&self, q: &Query, k: usize, seed: usize, scratch: &mut Scratch) {
        let n = self.ids.len();
        if k >= n {
            for i in 0..n {
                let d = q.distance(self.lat[i], self.lon[i]);
                scratch.hits.push((self.ids[i], d));
            }
            return;
        }
        let mut s = KnnState::new(q, k, scratch);
        let seed = seed.min(self.block_keys.len() - 1);
        self.knn_block(q, seed, &mut s);
        let top = self.groups.len() - 1;
        let qf = q.xyz.map(|x| x as f32);
        self.knn_node(&qf, q, top, 0, seed, &mut s);
        let hits = s.list.drain(..).chain(s.best.drain());
        scratch
            .hits
            .extend(hits.map(|(bits, id)| (id, f64::from_bits(bits))));
        scratch.best_list = s.list;
        scratch.best = s.best;
    }

    /// Search the nodes of group `group` of height `h` that can hold a
    /// point nearer than the k-th best, nearest box first; block `seed` is
    /// already done.
    fn knn_node(
        &self,
        qf: &[f32; 3],
        q: &Query,
        h: usize,
        group: usize,
        seed: usize,
        s: &mut KnnState,
    ) {
        let gaps = self.groups[h][group].gaps2(qf);
        let first = group * FANOUT;
        let count = (self.nodes[h] - first).min(FANOUT);
        // The nodes in reach, by gap (insertion sort: at most FANOUT).
        let mut near = [(0.0f32, 0usize); FANOUT];
        let mut m = 0;
        for (c, &g) in gaps[..count].iter().enumerate() {
            if g <= s.bound2 {
                let mut at = m;
                while at > 0 && near[at - 1].0 > g {
                    near[at] = near[at - 1];
                    at -= 1;
                }
                near[at] = (g, first + c);
                m += 1;
            }
        }
        // Start the loads of what comes next while the first is searched.
        for &(_, c) in &near[..m] {
            if h > 0 {
                let g = &self.groups[h - 1][c];
                for a in 0..3 {
                    prefetch(&g.lo[a]);
                    prefetch(&g.hi[a]);
                }
            } else {
                self.prefetch_block(c);
            }
        }
        for &(g, c) in &near[..m] {
            if g > s.bound2 {
                break;
            }
            if h > 0 {
                self.knn_node(qf, q, h - 1, c, seed, s);
            } else if c != seed {
                self.knn_block(q, c, s);
            }
        }
    }

    /// Offer the points of block `b` to a k-nearest search: those inside
    /// the current latitude and longitude windows are measured (without a
    /// branch per point, so the measurements overlap), and those that beat
    /// the k-th best enter.
    #[inline]
    fn knn_block(&self, q: &Query, b: usize, s: &mut KnnState) {
        let start = b * BLOCK;
        let end = (start + BLOCK).min(self.ids.len());
        let lat = &self.lat[start..end];
        let lon = &self.lon[start..end];
        if s.stale {
            s.stale = false;
            (s.lat_win, s.lon_win) = q.windows(s.arc);
        }
        let mut near = [0u8; BLOCK];
        let mut m = 0;
        for j in 0..lat.len() {
            let dlat = lat[j].abs_diff(s.qlat);
            let dl = lon[j].abs_diff(s.qlon);
            let dlon = dl.min(FULL_TURN - dl);
            near[m] = j as u8;
            m += usize::from((dlat <= s.lat_win) & (dlon <= s.lon_win));
        }
        let mut dist = [0.0f64; BLOCK];
        for t in 0..m {
            let j = usize::from(near[t]);
            dist[t] = q.distance(lat[j], lon[j]);
        }
        for t in 0..m {
            let bits = dist[t].to_bits();
            if bits > s.worst.0 {
                continue;
            }
            let key = (bits, self.ids[start + usize::from(near[t])]);
            if key < s.worst {
                s.offer(key);
            }
        }
    }
}

/// Ask for the cache line holding `x` (a hint: nothing on targets without it).
#[inline(always)]
fn prefetch<T>(x: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: SSE is part of the x86-64 baseline, and a prefetch is a
        // hint that never faults, whatever the address.
        unsafe { _mm_prefetch::<_MM_HINT_T0>((x as *const T).cast::<i8>()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = x;
}

/// Up to this `k`, a k-nearest search keeps its best in a sorted list
/// rather than a heap.
const SMALL_K: usize = 32;

/// Fixed-point units in 360 degrees.
const FULL_TURN: u32 = 3_600_000_000;

/// The state of a k-nearest search.
struct KnnState {
    /// The best `k` so far, worst on top (for `k > SMALL_K`).
    best: std::collections::BinaryHeap<(u64, u64)>,
    /// The best `k` so far in order (for `k <= SMALL_K`).
    list: Vec<(u64, u64)>,
    k: usize,
    /// The k-th best `(distance bits, id)`, all ones while fewer than k.
    worst: (u64, u64),
    /// The query's latitude and longitude in fixed point.
    qlat: i32,
    qlon: i32,
    /// The k-th best arc in radians, padded (infinite while fewer than k).
    arc: f64,
    /// Points outside these half-windows (fixed point) cannot enter.
    lat_win: u32,
    lon_win: u32,
    /// Whether the windows lag behind `arc`.
    stale: bool,
    /// Nodes whose squared gap ([`Group::gaps2`]) exceeds this cannot hold
    /// a point that enters.
    bound2: f32,
}

impl KnnState {
    fn new(q: &Query, k: usize, scratch: &mut Scratch) -> KnnState {
        let mut best = std::mem::take(&mut scratch.best);
        let mut list = std::mem::take(&mut scratch.best_list);
        best.clear();
        list.clear();
        KnnState {
            best,
            list,
            k,
            worst: (u64::MAX, u64::MAX),
            qlat: to_fixed(q.lat),
            qlon: to_fixed(q.lon),
            arc: f64::INFINITY,
            lat_win: u32::MAX,
            lon_win: u32::MAX,
            stale: false,
            bound2: f32::INFINITY,
        }
    }

    /// Take a point that beats the k-th best.
    #[inline]
    fn offer(&mut self, key: (u64, u64)) {
        let worst = if self.k <= SMALL_K {
            // Insertion into the sorted list: a few moves for a small k.
            let v = &mut self.list;
            if v.len() == self.k {
                v.pop();
            }
            v.push(key);
            let mut at = v.len() - 1;
            while at > 0 && v[at - 1] > key {
                v[at] = v[at - 1];
                at -= 1;
            }
            v[at] = key;
            if v.len() < self.k {
                return;
            }
            v[v.len() - 1]
        } else {
            if self.best.len() < self.k {
                self.best.push(key);
                if self.best.len() < self.k {
                    return;
                }
            } else if let Some(mut top) = self.best.peek_mut() {
                *top = key;
            }
            let Some(&worst) = self.best.peek() else {
                return;
            };
            worst
        };
        self.worst = worst;
        // The k-th best arc in radians, padded well past the rounding of
        // the haversine (1e-7 rad covers its worst case, near antipodes).
        // The chord of an arc is at most the arc, and the latitude
        // difference of two points at most their arc.
        self.arc = f64::from_bits(worst.0) * ((1.0 + 1e-9) / EARTH_RADIUS_M) + 1e-7;
        // Padded by a relative 1e-6 for the f32 rounding of the gaps.
        self.bound2 = (self.arc * self.arc * (1.0 + 1e-6)) as f32;
        self.stale = true;
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
