//! Hilbert cell ids on the faces of a cube, in the spirit of S2, and the
//! [`CellIndex`] built on them.
//!
//! # The scheme
//!
//! A point becomes a unit vector `p`; its face is the axis of its largest
//! component (`+x, +y, +z, -x, -y, -z` are faces 0 to 5), and its face
//! coordinates are the gnomonic projection `u = p[a+1] / |p[a]|`,
//! `v = p[a+2] / |p[a]|` (in `[-1, 1]`, axes taken mod 3). S2's quadratic
//! transform maps `u, v` to `s, t` in `[0, 1]` so that cells of one level
//! vary less in area (about 2x rather than 5x between a face's centre and
//! its corners), and `s, t` are cut into `2^30` rows and columns. The cell
//! id is `face << 60 | hilbert(i, j)`, the 60-bit position of the leaf
//! cell along a Hilbert curve of order 30 on that face. A cell of level `L`
//! is a contiguous id range: its leaves share the top `2L` bits of the
//! curve position.
//!
//! Why a cube and not a Hilbert curve over latitude and longitude: on a
//! latitude/longitude grid, cells shrink to slivers near the poles (a
//! circle around a pole would need every column of a row) and the
//! antimeridian cuts the grid in two; on the cube every cell of a level
//! has about the same area and shape, neither the poles nor the
//! antimeridian are special (they are interior lines of faces), and a
//! circle's covering takes a bounded number of cells anywhere. The price is
//! some trigonometry per point at build time (a sine and cosine each for
//! latitude and longitude), none at query time beyond the circle's own.
//!
//! # Covering
//!
//! For a circle of angular radius `r` (below 16 degrees, some 1,800 km),
//! the extreme `u` of the circle on a face are where a plane
//! `u = x / w` is tangent to the circle's cone: `(q_u - u q_w)^2 =
//! sin^2 r (1 + u^2)`, a quadratic with roots `(q_u q_w +- sin r
//! sqrt(q_u^2 + q_w^2 - sin^2 r)) / (q_w^2 - sin^2 r)`. That gives the
//! circle's exact `u, v` bounding box on each face it reaches (those with
//! `q_w > sin r`), padded and clipped to the face.
//!
//! The covering adapts to the data: it starts from the finest level at
//! which the box takes at most [`START_CELLS`] cells (2 x 2) and splits
//! every cell whose id range spans more than [`REFINE_BLOCKS`] blocks of
//! points (64 points) into those of its four children that meet the box,
//! down to the leaves if need be. A child's blocks are searched for only
//! within its parent's, so refinement costs a few comparisons in memory
//! already in cache. Over sparse data a query costs a handful of block
//! look-ups; over a dense city the cells left are about the size of the
//! points' spacing, so few points outside the circle are scanned. A circle
//! wider than 16 degrees (some 1,800 km) takes every face it can reach
//! whole (it holds a good part of the points there anyway).

use std::f64::consts::PI;

use crate::query::{to_deg, Query};
use crate::sorted::{merge_ranges, Sorted};
use crate::{GeoError, Scratch};

/// The finest level: `2^30` leaf cells a side per face (about 1 cm).
pub const MAX_LEVEL: u32 = 30;
/// At most this many cells per face in the plain covering (no refinement).
const MAX_CELLS_PER_FACE: u64 = 16;
/// Bits of the curve position within a face.
const POS_BITS: u32 = 2 * MAX_LEVEL;

/// Position of `(i, j)` along the Hilbert curve of order `level` (`0` for
/// level 0): `level` is capped at [`MAX_LEVEL`] and the bits of `i` and `j`
/// from `level` up are ignored.
#[inline]
pub fn hilbert_pos(level: u32, i: u32, j: u32) -> u64 {
    let level = level.min(MAX_LEVEL);
    let mask = (1u32 << level) - 1;
    let (mut i, mut j) = (i & mask, j & mask);
    let mut d = 0u64;
    let mut s = if level == 0 { 0 } else { 1u32 << (level - 1) };
    while s > 0 {
        let ri = u32::from(i & s != 0);
        let rj = u32::from(j & s != 0);
        d += u64::from(s) * u64::from(s) * u64::from((3 * ri) ^ rj);
        // Rotate the quadrant so the sub-curve starts where the curve enters it.
        if rj == 0 {
            if ri == 1 {
                i ^= s - 1;
                j ^= s - 1;
            }
            std::mem::swap(&mut i, &mut j);
        }
        s >>= 1;
    }
    d
}

/// Unit vector of a point in degrees.
#[inline]
fn unit(lat: f64, lon: f64) -> [f64; 3] {
    let (sl, cl) = lat.to_radians().sin_cos();
    let (so, co) = lon.to_radians().sin_cos();
    [cl * co, cl * so, sl]
}

/// S2's quadratic map from `u` in `[-1, 1]` to `s` in `[0, 1]`.
#[inline]
fn u_to_s(u: f64) -> f64 {
    if u >= 0.0 {
        0.5 * (1.0 + 3.0 * u).sqrt()
    } else {
        1.0 - 0.5 * (1.0 - 3.0 * u).sqrt()
    }
}

/// The row (or column) of `s` at `level`.
#[inline]
fn s_to_ij(s: f64, level: u32) -> u32 {
    let n = 1u32 << level;
    // For x > 0 the truncating cast is the floor (without a libm call).
    let x = s * f64::from(n);
    if x <= 0.0 {
        0
    } else {
        (x as u32).min(n - 1)
    }
}

/// Face and face coordinates `(u, v)` of a unit vector.
#[inline]
fn face_uv(p: [f64; 3]) -> (u64, f64, f64) {
    let a = [p[0].abs(), p[1].abs(), p[2].abs()];
    let k = if a[0] >= a[1] && a[0] >= a[2] {
        0
    } else if a[1] >= a[2] {
        1
    } else {
        2
    };
    let face = if p[k] >= 0.0 { k } else { k + 3 };
    (face as u64, p[(k + 1) % 3] / a[k], p[(k + 2) % 3] / a[k])
}

/// The leaf cell id of a point in degrees: `face << 60 | position`.
///
/// ```
/// let north = sdi_geo::cell::cell_id(90.0, 0.0).unwrap();
/// assert_eq!(north >> 60, 2); // the +z face
/// ```
pub fn cell_id(lat: f64, lon: f64) -> Result<u64, GeoError> {
    crate::query::check_point(lat, lon)?;
    Ok(leaf_id(lat, lon))
}

#[inline]
fn leaf_id(lat: f64, lon: f64) -> u64 {
    let (face, u, v) = face_uv(unit(lat, lon));
    let i = s_to_ij(u_to_s(u), MAX_LEVEL);
    let j = s_to_ij(u_to_s(v), MAX_LEVEL);
    (face << POS_BITS) | hilbert_pos(MAX_LEVEL, i, j)
}

/// The level of the cell whose first id seeds a k-nearest search (cells of
/// some 150 m): near enough to the query's own leaf, at half the cost.
const SEED_LEVEL: u32 = 16;

/// The first leaf id of the level-[`SEED_LEVEL`] cell holding a point.
#[inline]
fn seed_key(lat: f64, lon: f64) -> u64 {
    let (face, u, v) = face_uv(unit(lat, lon));
    let i = s_to_ij(u_to_s(u), SEED_LEVEL);
    let j = s_to_ij(u_to_s(v), SEED_LEVEL);
    (face << POS_BITS) | (hilbert_pos(SEED_LEVEL, i, j) << (2 * (MAX_LEVEL - SEED_LEVEL)))
}

/// The id range `[first, last]` of the level-`level` cell holding leaf `id`.
pub fn cell_range(id: u64, level: u32) -> (u64, u64) {
    let level = level.min(MAX_LEVEL);
    let shift = 2 * (MAX_LEVEL - level);
    let first = (id >> shift) << shift;
    (first, first | ((1u64 << shift) - 1))
}

/// Angular radius (radians) past which a circle takes whole faces.
const BIG_CAP: f64 = 0.28;
/// Angle from a face's centre to its corners.
const FACE_RADIUS: f64 = 0.955_316_618_124_509_3;

/// The circle's `s, t` bounding box on one face.
#[derive(Clone, Copy, Debug, Default)]
struct FaceBox {
    face: u64,
    s0: f64,
    s1: f64,
    t0: f64,
    t1: f64,
}

impl FaceBox {
    /// The cells of `level` the box spans: rows `i0..=i1`, columns `j0..=j1`.
    #[inline]
    fn cells(&self, level: u32) -> (u32, u32, u32, u32) {
        (
            s_to_ij(self.s0, level),
            s_to_ij(self.s1, level),
            s_to_ij(self.t0, level),
            s_to_ij(self.t1, level),
        )
    }

    /// The finest level at which the box spans at most `max` cells.
    fn level(&self, max: u64) -> u32 {
        let span = (self.s1 - self.s0).max(self.t1 - self.t0).max(1e-18);
        let mut level = (3.0 / span).log2().floor().clamp(0.0, f64::from(MAX_LEVEL)) as u32;
        loop {
            let (i0, i1, j0, j1) = self.cells(level);
            if u64::from(i1 - i0 + 1) * u64::from(j1 - j0 + 1) <= max || level == 0 {
                return level;
            }
            level -= 1;
        }
    }

    /// The id range of cell `(i, j)` of `level` on this face.
    #[inline]
    fn range(&self, level: u32, i: u32, j: u32) -> (u64, u64) {
        let shift = 2 * (MAX_LEVEL - level);
        let first = (self.face << POS_BITS) | (hilbert_pos(level, i, j) << shift);
        (first, first | ((1u64 << shift) - 1))
    }
}

/// The circle's box on each face it reaches, for a circle of angular
/// radius at most [`BIG_CAP`]; returns how many boxes.
fn face_boxes(q: &Query, out: &mut [FaceBox; 6]) -> usize {
    let r = q.ang_pad;
    let c = q.xyz;
    let sr = r.sin();
    let mut n = 0;
    for face in 0..6u64 {
        let k = (face % 3) as usize;
        let sign = if face < 3 { 1.0 } else { -1.0 };
        let qw = sign * c[k];
        // With r < 16 degrees, a face the circle reaches has its centre
        // within 54.7 + 16 degrees, so q_w > cos(70.7) > sin(16) > sin r.
        if qw <= sr {
            continue;
        }
        let (qu, qv) = (c[(k + 1) % 3], c[(k + 2) % 3]);
        let den = qw * qw - sr * sr;
        let bounds = |qx: f64| {
            let root = sr * (qx * qx + qw * qw - sr * sr).max(0.0).sqrt();
            let lo = (qx * qw - root) / den - 1e-9;
            let hi = (qx * qw + root) / den + 1e-9;
            (lo.max(-1.0), hi.min(1.0))
        };
        let (u0, u1) = bounds(qu);
        let (v0, v1) = bounds(qv);
        if u0 > u1 || v0 > v1 {
            continue;
        }
        out[n] = FaceBox {
            face,
            s0: u_to_s(u0),
            s1: u_to_s(u1),
            t0: u_to_s(v0),
            t1: u_to_s(v1),
        };
        n += 1;
    }
    n
}

/// Id ranges covering the query circle with at most
/// [`MAX_CELLS_PER_FACE`] cells per face (see the module docs).
pub(crate) fn cover(q: &Query, ranges: &mut Vec<(u64, u64)>) {
    ranges.clear();
    let r = q.ang_pad;
    if r >= PI {
        ranges.push((0, u64::MAX));
        return;
    }
    if r > BIG_CAP {
        for face in 0..6u64 {
            let k = (face % 3) as usize;
            let sign = if face < 3 { 1.0 } else { -1.0 };
            let qw = sign * q.xyz[k];
            if qw.clamp(-1.0, 1.0).acos() <= r + FACE_RADIUS + 1e-9 {
                ranges.push((
                    face << POS_BITS,
                    (face << POS_BITS) | ((1u64 << POS_BITS) - 1),
                ));
            }
        }
        return;
    }
    let mut boxes = [FaceBox::default(); 6];
    let n = face_boxes(q, &mut boxes);
    for b in &boxes[..n] {
        let level = b.level(MAX_CELLS_PER_FACE);
        let (i0, i1, j0, j1) = b.cells(level);
        for i in i0..=i1 {
            for j in j0..=j1 {
                ranges.push(b.range(level, i, j));
            }
        }
    }
    merge_ranges(ranges);
}

/// A covering cell holding more than this many blocks of points is split
/// into its children that meet the circle's box.
pub const REFINE_BLOCKS: usize = 4;
/// Cells per face a covering starts from before refinement.
pub const START_CELLS: u64 = 4;

/// Points sorted by Hilbert cell id on the cube (see the module docs).
///
/// 16 bytes per point (fixed-point latitude and longitude, id) plus one
/// 8-byte cell id per 16 points and a box tree for k-nearest queries (1.6
/// bytes per point): the ids of the other points are not stored, a range
/// scan starts at the block that can hold its first id and the exact
/// distance filter drops what lies outside. A radius query covers
/// the circle with cells refined where the points are dense (see the module
/// docs), scans the blocks of those cells once each and keeps the points
/// within the distance.
#[derive(Clone, Debug, Default)]
pub struct CellIndex {
    points: Sorted,
}

impl CellIndex {
    /// Index the points `(ids[i], lats[i], lons[i])`; ids must be unique.
    pub fn new(ids: &[u64], lats: &[f64], lons: &[f64]) -> Result<CellIndex, GeoError> {
        let points = Sorted::build(ids, lats, lons, 63, |lat, lon| {
            leaf_id(to_deg(lat), to_deg(lon))
        })?;
        Ok(CellIndex { points })
    }

    fn count(&self) -> usize {
        self.points.len()
    }

    fn bytes(&self) -> usize {
        self.points.bytes()
    }

    /// Cover the circle with at most [`START_CELLS`] cells per face, split
    /// every cell that holds more than [`REFINE_BLOCKS`] blocks into its
    /// children that meet the circle's box (searching only the parent's
    /// blocks), and scan the blocks of the cells left. Sparse data costs a
    /// few block look-ups per query; dense data gets a tight covering.
    fn collect(&self, q: &Query, scratch: &mut Scratch) {
        if q.ang_pad > BIG_CAP {
            cover(q, &mut scratch.ranges);
            for &(lo, hi) in &scratch.ranges {
                let (c0, c1) = self.points.counts(lo, hi);
                scratch.spans.push((c0.saturating_sub(1), c1));
            }
        } else {
            let mut boxes = [FaceBox::default(); 6];
            let n = face_boxes(q, &mut boxes);
            for b in &boxes[..n] {
                let level = b.level(START_CELLS);
                let (i0, i1, j0, j1) = b.cells(level);
                for i in i0..=i1 {
                    for j in j0..=j1 {
                        self.refine(b, level, i, j, None, &mut scratch.spans);
                    }
                }
            }
        }
        self.points.scan_spans(q, scratch);
    }

    fn refine(
        &self,
        b: &FaceBox,
        level: u32,
        i: u32,
        j: u32,
        parent: Option<(usize, usize)>,
        spans: &mut Vec<(usize, usize)>,
    ) {
        let (lo, hi) = b.range(level, i, j);
        let (c0, c1) = match parent {
            None => self.points.counts(lo, hi),
            Some(p) => self.points.counts_within(lo, hi, p),
        };
        let b0 = c0.saturating_sub(1);
        if b0 >= c1 {
            return;
        }
        // A cell strictly inside the box has all its children in the box:
        // splitting it would prune nothing.
        let (i0, i1, j0, j1) = b.cells(level);
        let inside = i0 < i && i < i1 && j0 < j && j < j1;
        if inside || c1 - b0 <= REFINE_BLOCKS || level == MAX_LEVEL {
            spans.push((b0, c1));
            return;
        }
        let (i0, i1, j0, j1) = b.cells(level + 1);
        for ci in (2 * i)..=(2 * i + 1) {
            for cj in (2 * j)..=(2 * j + 1) {
                if (i0..=i1).contains(&ci) && (j0..=j1).contains(&cj) {
                    self.refine(b, level + 1, ci, cj, Some((c0, c1)), spans);
                }
            }
        }
    }

    fn knn_collect(&self, q: &Query, k: usize, key: u64, scratch: &mut Scratch) {
        self.points.knn(q, k, key as usize, scratch);
    }
}

impl crate::Locality for CellIndex {
    /// The block holding the first leaf of the query's level-[`SEED_LEVEL`]
    /// cell.
    fn knn_key(&self, lat: f64, lon: f64) -> u64 {
        self.points.seed_block(seed_key(lat, lon)) as u64
    }

    fn knn_ahead(&self, key: u64) {
        self.points.prefetch_block(key as usize);
    }
}

crate::impl_spatial_index!(CellIndex);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hilbert_is_a_curve() {
        // Every step moves to a 4-neighbour, at each order.
        for level in 1..=5u32 {
            let n = 1u32 << level;
            let mut at = vec![(0, 0); (n * n) as usize];
            for i in 0..n {
                for j in 0..n {
                    at[hilbert_pos(level, i, j) as usize] = (i, j);
                }
            }
            for w in at.windows(2) {
                let d = w[0].0.abs_diff(w[1].0) + w[0].1.abs_diff(w[1].1);
                assert_eq!(d, 1, "level {level}: {:?}", w);
            }
        }
    }

    #[test]
    fn cells_nest() {
        for &(lat, lon) in &[(0.0, 0.0), (45.0, 45.0), (-89.9, 179.9), (12.3, -45.6)] {
            let id = leaf_id(lat, lon);
            let (face, u, v) = face_uv(unit(lat, lon));
            for level in 0..=MAX_LEVEL {
                let (i, j) = (s_to_ij(u_to_s(u), level), s_to_ij(u_to_s(v), level));
                let first =
                    (face << POS_BITS) | (hilbert_pos(level, i, j) << (2 * (MAX_LEVEL - level)));
                assert_eq!(cell_range(id, level).0, first, "{lat} {lon} {level}");
            }
        }
    }

    #[test]
    fn hilbert_takes_any_input() {
        assert_eq!(hilbert_pos(0, 5, 7), 0);
        assert_eq!(
            hilbert_pos(40, u32::MAX, 0),
            hilbert_pos(30, (1 << 30) - 1, 0)
        );
        assert_eq!(hilbert_pos(2, 4 + 1, 8 + 2), hilbert_pos(2, 1, 2));
        assert_eq!(cell_range(u64::MAX, 99), (u64::MAX, u64::MAX));
    }

    #[test]
    fn faces() {
        assert_eq!(leaf_id(0.0, 0.0) >> 60, 0);
        assert_eq!(leaf_id(0.0, 90.0) >> 60, 1);
        assert_eq!(leaf_id(90.0, 0.0) >> 60, 2);
        assert_eq!(leaf_id(0.0, 180.0) >> 60, 3);
        assert_eq!(leaf_id(0.0, -180.0) >> 60, 3);
        assert_eq!(leaf_id(0.0, -90.0) >> 60, 4);
        assert_eq!(leaf_id(-90.0, 0.0) >> 60, 5);
        assert!(cell_id(f64::NAN, 0.0).is_err());
    }

    #[test]
    fn cover_holds_the_circle() {
        for &(lat, lon, r) in &[
            (0.0, 180.0, 2_000.0),
            (89.9999, 0.0, 5_000.0),
            (-90.0, 0.0, 500.0),
            (45.0, 45.0, 20_000.0),
            (35.26, 45.0, 1_000.0), // a cube corner
            (10.0, 10.0, 3.0e6),
        ] {
            let q = Query::new(lat, lon, r).unwrap();
            let mut ranges = Vec::new();
            cover(&q, &mut ranges);
            assert!(ranges.len() <= 3 * MAX_CELLS_PER_FACE as usize);
            // Points on the circle all around.
            for step in 0..64 {
                let bearing = f64::from(step) * PI / 32.0;
                let d = r / crate::EARTH_RADIUS_M * 0.999_999;
                let (p, l) = (lat.to_radians(), lon.to_radians());
                let p2 = (p.sin() * d.cos() + p.cos() * d.sin() * bearing.cos()).asin();
                let l2 =
                    l + (bearing.sin() * d.sin() * p.cos()).atan2(d.cos() - p.sin() * p2.sin());
                let (la, mut lo) = (p2.to_degrees(), l2.to_degrees());
                if lo > 180.0 {
                    lo -= 360.0;
                }
                if lo < -180.0 {
                    lo += 360.0;
                }
                let id = leaf_id(la, lo);
                assert!(
                    ranges.iter().any(|&(a, b)| a <= id && id <= b),
                    "{lat} {lon} {r}: ({la}, {lo}) not covered"
                );
            }
        }
    }
}
