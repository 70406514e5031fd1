//! Geohash: the codec and an index of points sorted by geohash.
//!
//! A geohash interleaves the bits of a point's longitude and latitude cells
//! (longitude first), five bits per base-32 character: 12 characters are 60
//! bits, 30 of longitude and 30 of latitude (cells of 3.7 cm by 1.9 cm at
//! the equator). [`encode`] and [`decode`] work on strings, [`encode_bits`]
//! and [`decode_bits`] on the integer form (`bits` bits, right-aligned, as
//! Redis keeps 52-bit geohashes), [`neighbors`] gives the eight cells
//! around one, and the `_batch` forms work over slices.
//!
//! A cell's bounds are half-open (`[min, max)`) except at the north and
//! east edges of the world: latitude 90 is in the top row and longitude 180
//! in the last column.

use crate::query::{check_lengths, check_point, to_deg, Query};
use crate::sorted::Sorted;
use crate::{GeoError, Scratch};

/// The geohash alphabet (base 32 without `a`, `i`, `l`, `o`).
const ALPHABET: &[u8; 32] = b"0123456789bcdefghjkmnpqrstuvwxyz";
/// The longest geohash this crate handles, in characters.
pub const MAX_PRECISION: usize = 12;
/// The longest geohash in bits.
pub const MAX_BITS: usize = 60;
/// Bits of latitude (and of longitude) at full precision.
const HALF: u32 = 30;

/// Spread the low 32 bits of `x` to the even bit positions.
#[inline]
fn spread(x: u64) -> u64 {
    let mut x = x & 0xFFFF_FFFF;
    x = (x | (x << 16)) & 0x0000_FFFF_0000_FFFF;
    x = (x | (x << 8)) & 0x00FF_00FF_00FF_00FF;
    x = (x | (x << 4)) & 0x0F0F_0F0F_0F0F_0F0F;
    x = (x | (x << 2)) & 0x3333_3333_3333_3333;
    (x | (x << 1)) & 0x5555_5555_5555_5555
}

/// Gather the even bits of `x` into the low 32 bits.
#[inline]
fn squash(x: u64) -> u64 {
    let mut x = x & 0x5555_5555_5555_5555;
    x = (x | (x >> 1)) & 0x3333_3333_3333_3333;
    x = (x | (x >> 2)) & 0x0F0F_0F0F_0F0F_0F0F;
    x = (x | (x >> 4)) & 0x00FF_00FF_00FF_00FF;
    x = (x | (x >> 8)) & 0x0000_FFFF_0000_FFFF;
    (x | (x >> 16)) & 0x0000_0000_FFFF_FFFF
}

/// The cell row of a latitude with `m` bits (`0..2^m`).
#[inline]
fn lat_cell(lat: f64, m: u32) -> u64 {
    let f = (lat + 90.0) / 180.0;
    cell_of(f, m)
}

/// The cell column of a longitude with `m` bits.
#[inline]
fn lon_cell(lon: f64, m: u32) -> u64 {
    let f = (lon + 180.0) / 360.0;
    cell_of(f, m)
}

#[inline]
fn cell_of(f: f64, m: u32) -> u64 {
    // f * 2^m is exact, so a coarser cell is the finer one shifted right.
    let top = (1u64 << m) - 1;
    let x = (f * (1u64 << m) as f64).floor();
    if x <= 0.0 {
        0
    } else {
        (x as u64).min(top)
    }
}

/// The full 60-bit geohash of a valid point.
#[inline]
pub(crate) fn key60(lat: f64, lon: f64) -> u64 {
    (spread(lon_cell(lon, HALF)) << 1) | spread(lat_cell(lat, HALF))
}

fn check_precision(precision: usize) -> Result<(), GeoError> {
    if (1..=MAX_PRECISION).contains(&precision) {
        Ok(())
    } else {
        Err(GeoError::Precision {
            got: precision,
            max: MAX_PRECISION,
            unit: "characters",
        })
    }
}

fn check_bits(bits: usize) -> Result<(), GeoError> {
    if (1..=MAX_BITS).contains(&bits) {
        Ok(())
    } else {
        Err(GeoError::Precision {
            got: bits,
            max: MAX_BITS,
            unit: "bits",
        })
    }
}

/// The geohash of `(lat, lon)` as an integer of `bits` bits (`1..=60`,
/// right-aligned; 52 is Redis's precision, `5 * n` is `n` characters).
///
/// ```
/// assert_eq!(sdi_geo::geohash::encode_bits(42.6, -5.6, 25).unwrap(), 0b01101_11111_11000_00100_00010);
/// ```
pub fn encode_bits(lat: f64, lon: f64, bits: usize) -> Result<u64, GeoError> {
    check_point(lat, lon)?;
    check_bits(bits)?;
    Ok(key60(lat, lon) >> (MAX_BITS - bits))
}

/// The geohash of `(lat, lon)` with `precision` characters (`1..=12`).
///
/// ```
/// assert_eq!(sdi_geo::geohash::encode(42.6, -5.6, 5).unwrap(), "ezs42");
/// ```
pub fn encode(lat: f64, lon: f64, precision: usize) -> Result<String, GeoError> {
    check_precision(precision)?;
    let v = encode_bits(lat, lon, 5 * precision)?;
    Ok(to_string(v, precision))
}

fn to_string(v: u64, precision: usize) -> String {
    (0..precision)
        .map(|i| ALPHABET[((v >> (5 * (precision - 1 - i))) & 31) as usize] as char)
        .collect()
}

/// The integer form of a geohash string: `(value, bits)`.
pub fn parse(hash: &str) -> Result<(u64, usize), GeoError> {
    let bad = |reason| GeoError::Geohash {
        hash: hash.to_owned(),
        reason,
    };
    if hash.is_empty() {
        return Err(bad("it is empty"));
    }
    if hash.len() > MAX_PRECISION {
        return Err(bad("it is longer than 12 characters"));
    }
    let mut v = 0u64;
    for c in hash.bytes() {
        let c = c.to_ascii_lowercase();
        let d = ALPHABET
            .iter()
            .position(|&a| a == c)
            .ok_or_else(|| bad("it has a character outside 0-9 and b-z less a, i, l, o"))?;
        v = (v << 5) | d as u64;
    }
    Ok((v, 5 * hash.len()))
}

/// A geohash cell: its bounds in degrees.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cell {
    /// Southern edge.
    pub lat_min: f64,
    /// Northern edge.
    pub lat_max: f64,
    /// Western edge.
    pub lon_min: f64,
    /// Eastern edge.
    pub lon_max: f64,
}

impl Cell {
    /// The centre `(lat, lon)`.
    pub fn center(&self) -> (f64, f64) {
        (
            (self.lat_min + self.lat_max) * 0.5,
            (self.lon_min + self.lon_max) * 0.5,
        )
    }
}

/// Split a `bits`-bit geohash into (longitude column, latitude row, their bit counts).
fn split(v: u64, bits: usize) -> (u64, u64, u32, u32) {
    let aligned = v << (64 - bits);
    // Longitude bits sit at the odd positions counted from the top, so at
    // the even positions of `aligned >> 1` ... line them up per coordinate.
    let lon_bits = bits.div_ceil(2) as u32;
    let lat_bits = (bits / 2) as u32;
    let lon = squash(aligned >> 1) >> (32 - lon_bits);
    let lat = squash(aligned) >> (32 - lat_bits).min(63);
    let lat = if lat_bits == 0 { 0 } else { lat };
    (lon, lat, lon_bits, lat_bits)
}

/// Join a column and row back into a `bits`-bit geohash.
fn join(lon: u64, lat: u64, bits: usize) -> u64 {
    let lon_bits = bits.div_ceil(2) as u32;
    let lat_bits = (bits / 2) as u32;
    let aligned = (spread(lon << (32 - lon_bits)) << 1) | spread(lat << (32 - lat_bits));
    aligned >> (64 - bits)
}

/// The bounds of a `bits`-bit geohash.
///
/// ```
/// let c = sdi_geo::geohash::decode_bits(0b01101_11111_11000_00100_00010, 25).unwrap();
/// assert!(c.lat_min <= 42.6 && 42.6 < c.lat_max && c.lon_min <= -5.6 && -5.6 < c.lon_max);
/// ```
pub fn decode_bits(value: u64, bits: usize) -> Result<Cell, GeoError> {
    check_bits(bits)?;
    if bits < 64 && value >> bits != 0 {
        return Err(GeoError::GeohashBits { value, bits });
    }
    let (lon, lat, lon_bits, lat_bits) = split(value, bits);
    let (h, w) = (
        180.0 / (1u64 << lat_bits) as f64,
        360.0 / (1u64 << lon_bits) as f64,
    );
    Ok(Cell {
        lat_min: -90.0 + lat as f64 * h,
        lat_max: -90.0 + (lat + 1) as f64 * h,
        lon_min: -180.0 + lon as f64 * w,
        lon_max: -180.0 + (lon + 1) as f64 * w,
    })
}

/// The bounds of a geohash string.
///
/// ```
/// let (lat, lon) = sdi_geo::geohash::decode("u4pruydqqvj").unwrap().center();
/// assert!((lat - 57.64911).abs() < 1e-5 && (lon - 10.40744).abs() < 1e-5);
/// ```
pub fn decode(hash: &str) -> Result<Cell, GeoError> {
    let (v, bits) = parse(hash)?;
    decode_bits(v, bits)
}

/// The eight cells around a geohash, `None` where there is no cell.
///
/// Columns wrap across the antimeridian (east of the last column is the
/// first). Rows do not wrap: the top row's cells all meet at the north
/// pole, so nothing lies north of them and `n`, `ne` and `nw` are `None`
/// there (likewise `s`, `se` and `sw` on the bottom row); a search near a
/// pole must take the whole polar row, as [`GeohashIndex`] does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Neighbors<T> {
    /// North.
    pub n: Option<T>,
    /// North-east.
    pub ne: Option<T>,
    /// East.
    pub e: Option<T>,
    /// South-east.
    pub se: Option<T>,
    /// South.
    pub s: Option<T>,
    /// South-west.
    pub sw: Option<T>,
    /// West.
    pub w: Option<T>,
    /// North-west.
    pub nw: Option<T>,
}

impl<T> Neighbors<T> {
    /// The cells in the order n, ne, e, se, s, sw, w, nw.
    pub fn to_array(self) -> [Option<T>; 8] {
        [
            self.n, self.ne, self.e, self.se, self.s, self.sw, self.w, self.nw,
        ]
    }

    fn map<U>(self, f: impl Fn(T) -> U) -> Neighbors<U> {
        let [n, ne, e, se, s, sw, w, nw] = self.to_array().map(|c| c.map(&f));
        Neighbors {
            n,
            ne,
            e,
            se,
            s,
            sw,
            w,
            nw,
        }
    }
}

/// [`neighbors`] of a `bits`-bit integer geohash.
pub fn neighbors_bits(value: u64, bits: usize) -> Result<Neighbors<u64>, GeoError> {
    check_bits(bits)?;
    if value >> bits != 0 {
        return Err(GeoError::GeohashBits { value, bits });
    }
    let (lon, lat, lon_bits, lat_bits) = split(value, bits);
    let cols = 1u64 << lon_bits;
    let rows = 1u64 << lat_bits;
    let east = (lon + 1) % cols;
    let west = (lon + cols - 1) % cols;
    let north = (lat + 1 < rows).then_some(lat + 1);
    let south = lat.checked_sub(1);
    let at = |c: u64, r: Option<u64>| r.map(|r| join(c, r, bits));
    Ok(Neighbors {
        n: at(lon, north),
        ne: at(east, north),
        e: at(east, Some(lat)),
        se: at(east, south),
        s: at(lon, south),
        sw: at(west, south),
        w: at(west, Some(lat)),
        nw: at(west, north),
    })
}

/// The eight cells around a geohash string (see [`Neighbors`] for the
/// poles and the antimeridian).
///
/// ```
/// let n = sdi_geo::geohash::neighbors("ezs42").unwrap();
/// assert_eq!(n.n.as_deref(), Some("ezs48"));
/// assert_eq!(n.e.as_deref(), Some("ezs43"));
/// ```
pub fn neighbors(hash: &str) -> Result<Neighbors<String>, GeoError> {
    let (v, bits) = parse(hash)?;
    Ok(neighbors_bits(v, bits)?.map(|c| to_string(c, bits / 5)))
}

/// [`encode`] over parallel slices.
pub fn encode_batch(lats: &[f64], lons: &[f64], precision: usize) -> Result<Vec<String>, GeoError> {
    check_lengths("lons", lats.len(), lons.len(), "lats")?;
    check_precision(precision)?;
    lats.iter()
        .zip(lons)
        .enumerate()
        .map(|(i, (&lat, &lon))| encode(lat, lon, precision).map_err(|e| e.at(i)))
        .collect()
}

/// [`encode_bits`] over parallel slices.
pub fn encode_bits_batch(lats: &[f64], lons: &[f64], bits: usize) -> Result<Vec<u64>, GeoError> {
    check_lengths("lons", lats.len(), lons.len(), "lats")?;
    check_bits(bits)?;
    lats.iter()
        .zip(lons)
        .enumerate()
        .map(|(i, (&lat, &lon))| encode_bits(lat, lon, bits).map_err(|e| e.at(i)))
        .collect()
}

/// [`decode`] over a slice of strings.
pub fn decode_batch<S: AsRef<str>>(hashes: &[S]) -> Result<Vec<Cell>, GeoError> {
    hashes
        .iter()
        .enumerate()
        .map(|(i, h)| decode(h.as_ref()).map_err(|e| e.at(i)))
        .collect()
}

/// [`decode_bits`] over a slice of values of `bits` bits.
pub fn decode_bits_batch(values: &[u64], bits: usize) -> Result<Vec<Cell>, GeoError> {
    check_bits(bits)?;
    values
        .iter()
        .enumerate()
        .map(|(i, &v)| decode_bits(v, bits).map_err(|e| e.at(i)))
        .collect()
}

/// At most this many geohash cells in the plain covering (no refinement).
#[cfg(test)]
const MAX_CELLS: u64 = 16;
/// Cells a refined covering starts from.
const START_CELLS: u64 = 4;
/// A covering cell holding more than this many blocks of points is split.
const REFINE_BLOCKS: usize = 4;

/// The query circle's box in degrees: a latitude band and one or two
/// longitude intervals (two when it crosses the antimeridian; all
/// longitudes when a pole is inside).
struct GeoBox {
    lat: (f64, f64),
    lons: [(f64, f64); 2],
    parts: usize,
}

impl GeoBox {
    fn new(q: &Query) -> GeoBox {
        let mut lons = [(0.0, 0.0); 2];
        let parts = match q.dlon_deg {
            None => {
                lons[0] = (-180.0, 180.0);
                1
            }
            Some(dl) => {
                let (lo, hi) = (q.lon - dl, q.lon + dl);
                if lo <= -180.0 {
                    lons = [(lo + 360.0, 180.0), (-180.0, hi)];
                    2
                } else if hi >= 180.0 {
                    lons = [(lo, 180.0), (-180.0, hi - 360.0)];
                    2
                } else {
                    lons[0] = (lo, hi);
                    1
                }
            }
        };
        GeoBox {
            lat: (q.lat_lo_deg, q.lat_hi_deg),
            lons,
            parts,
        }
    }

    /// Rows of the band at `depth` bits.
    fn rows(&self, depth: u32) -> (u64, u64) {
        let m = depth / 2;
        (lat_cell(self.lat.0, m), lat_cell(self.lat.1, m))
    }

    /// Columns of longitude interval `part` at `depth` bits.
    fn cols(&self, depth: u32, part: usize) -> (u64, u64) {
        let m = depth.div_ceil(2);
        let (lo, hi) = self.lons[part];
        (lon_cell(lo, m), lon_cell(hi, m))
    }

    /// The finest depth at which the box takes at most `max` cells.
    fn depth(&self, max: u64) -> u32 {
        let span = (self.lat.1 - self.lat.0).max(1e-12);
        let mut depth =
            (2.0 * (540.0 / span).log2().floor() + 1.0).clamp(0.0, MAX_BITS as f64) as u32;
        loop {
            let (r0, r1) = self.rows(depth);
            let cols: u64 = (0..self.parts)
                .map(|p| {
                    let (c0, c1) = self.cols(depth, p);
                    c1 - c0 + 1
                })
                .sum();
            if (r1 - r0 + 1) * cols <= max || depth == 0 {
                return depth;
            }
            depth -= 1;
        }
    }
}

/// The 60-bit key range of the cell at `depth` bits in column `c`, row `r`.
#[inline]
fn cell_range(depth: u32, c: u64, r: u64) -> (u64, u64) {
    let (lon_bits, lat_bits) = (depth.div_ceil(2), depth / 2);
    let first = (spread(c << (HALF - lon_bits)) << 1) | spread(r << (HALF - lat_bits));
    (first, first + ((1u64 << (MAX_BITS as u32 - depth)) - 1))
}

/// Key ranges (of 60-bit geohashes) covering the query's box with at most
/// [`MAX_CELLS`] cells, merged: the plain covering, without looking at
/// the points.
#[cfg(test)]
pub(crate) fn cover(q: &Query, ranges: &mut Vec<(u64, u64)>) {
    ranges.clear();
    let b = GeoBox::new(q);
    let depth = b.depth(MAX_CELLS);
    let (r0, r1) = b.rows(depth);
    for r in r0..=r1 {
        for p in 0..b.parts {
            let (c0, c1) = b.cols(depth, p);
            for c in c0..=c1 {
                ranges.push(cell_range(depth, c, r));
            }
        }
    }
    crate::sorted::merge_ranges(ranges);
}

/// Points sorted by geohash, the way Redis GEO keeps them in a sorted set.
///
/// 16 bytes per point (fixed-point latitude and longitude, id) plus one
/// 8-byte key per 16 points and a box tree for k-nearest queries (1.6
/// bytes per point); the geohash itself is recomputed, not stored.
/// A radius query covers the circle's box with geohash cells (the book's
/// "current cell and its 8 neighbours", generalised to any radius and to
/// boxes split by the antimeridian or widened by a pole): at most 4 to
/// start with, each split in two (the next bit) while it holds more than
/// 64 points, so dense areas get small cells. It scans the blocks of
/// those cells once each and keeps the points within the exact distance.
#[derive(Clone, Debug, Default)]
pub struct GeohashIndex {
    points: Sorted,
}

impl GeohashIndex {
    /// Index the points `(ids[i], lats[i], lons[i])`; ids must be unique.
    pub fn new(ids: &[u64], lats: &[f64], lons: &[f64]) -> Result<GeohashIndex, GeoError> {
        let points = Sorted::build(ids, lats, lons, 60, |lat, lon| {
            key60(to_deg(lat), to_deg(lon))
        })?;
        Ok(GeohashIndex { points })
    }

    fn count(&self) -> usize {
        self.points.len()
    }

    fn bytes(&self) -> usize {
        self.points.bytes()
    }

    /// Cover the box with at most [`START_CELLS`] cells, split each cell
    /// whose key range spans more than [`REFINE_BLOCKS`] blocks into its
    /// two halves (the next geohash bit) that meet the box, and scan the
    /// blocks of the cells left, each block once.
    fn collect(&self, q: &Query, scratch: &mut Scratch) {
        let b = GeoBox::new(q);
        let depth = b.depth(START_CELLS);
        let (r0, r1) = b.rows(depth);
        for r in r0..=r1 {
            for p in 0..b.parts {
                let (c0, c1) = b.cols(depth, p);
                for c in c0..=c1 {
                    self.refine(&b, p, depth, c, r, None, &mut scratch.spans);
                }
            }
        }
        self.points.scan_spans(q, scratch);
    }

    #[allow(clippy::too_many_arguments)]
    fn refine(
        &self,
        b: &GeoBox,
        part: usize,
        depth: u32,
        c: u64,
        r: u64,
        parent: Option<(usize, usize)>,
        spans: &mut Vec<(usize, usize)>,
    ) {
        let (lo, hi) = cell_range(depth, c, r);
        let (n0, n1) = match parent {
            None => self.points.counts(lo, hi),
            Some(p) => self.points.counts_within(lo, hi, p),
        };
        let b0 = n0.saturating_sub(1);
        if b0 >= n1 {
            return;
        }
        // A cell strictly inside the box has all its children in the box:
        // splitting it would prune nothing.
        let (r0, r1) = b.rows(depth);
        let (c0, c1) = b.cols(depth, part);
        let inside = r0 < r && r < r1 && c0 < c && c < c1;
        if inside || n1 - b0 <= REFINE_BLOCKS || depth == MAX_BITS as u32 {
            spans.push((b0, n1));
            return;
        }
        let next = depth + 1;
        if next % 2 == 1 {
            // The next bit halves the longitude.
            let (c0, c1) = b.cols(next, part);
            for cc in [2 * c, 2 * c + 1] {
                if (c0..=c1).contains(&cc) {
                    self.refine(b, part, next, cc, r, Some((n0, n1)), spans);
                }
            }
        } else {
            let (r0, r1) = b.rows(next);
            for rr in [2 * r, 2 * r + 1] {
                if (r0..=r1).contains(&rr) {
                    self.refine(b, part, next, c, rr, Some((n0, n1)), spans);
                }
            }
        }
    }

    fn knn_collect(&self, q: &Query, k: usize, key: u64, scratch: &mut Scratch) {
        self.points.knn(q, k, key as usize, scratch);
    }
}

impl crate::Locality for GeohashIndex {
    /// The block holding the query's geohash.
    fn knn_key(&self, lat: f64, lon: f64) -> u64 {
        self.points.seed_block(key60(lat, lon)) as u64
    }

    fn knn_ahead(&self, key: u64) {
        self.points.prefetch_block(key as usize);
    }
}

crate::impl_spatial_index!(GeohashIndex);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        assert_eq!(encode(42.6, -5.6, 5).unwrap(), "ezs42");
        assert_eq!(encode(57.64911, 10.40744, 11).unwrap(), "u4pruydqqvj");
        assert_eq!(encode(0.0, 0.0, 1).unwrap(), "s");
        assert_eq!(encode(-90.0, -180.0, 12).unwrap(), "000000000000");
        assert_eq!(encode(90.0, 180.0, 12).unwrap(), "zzzzzzzzzzzz");
        // Redis: GEOADD Sicily 13.361389 38.115556 "Palermo"; GEOHASH gives
        // "sqc8b49rny0" (its 11th character holds only 2 of Redis's 52 bits).
        assert_eq!(encode(38.115556, 13.361389, 10).unwrap(), "sqc8b49rny");
        let c = decode("ezs42").unwrap();
        assert!((c.lat_min - 42.583_007_812_5).abs() < 1e-9);
        assert!((c.lat_max - 42.626_953_125).abs() < 1e-9);
        assert!((c.lon_min + 5.625).abs() < 1e-9);
        assert!((c.lon_max + 5.581_054_687_5).abs() < 1e-9);
        assert_eq!(decode("EZS42").unwrap(), c);
    }

    #[test]
    fn bits_and_strings_agree() {
        let v = encode_bits(57.64911, 10.40744, 55).unwrap();
        assert_eq!(to_string(v, 11), "u4pruydqqvj");
        assert_eq!(parse("u4pruydqqvj").unwrap(), (v, 55));
        for bits in 1..=60 {
            let v = encode_bits(-33.86, 151.21, bits).unwrap();
            let c = decode_bits(v, bits).unwrap();
            assert!(c.lat_min <= -33.86 && -33.86 < c.lat_max, "{bits}");
            assert!(c.lon_min <= 151.21 && 151.21 < c.lon_max, "{bits}");
            let (lon, lat, lb, ab) = split(v, bits);
            assert_eq!(lb + ab, bits as u32);
            assert_eq!(join(lon, lat, bits), v);
        }
    }

    #[test]
    fn neighbours_in_the_open() {
        let n = neighbors("ezs42").unwrap();
        assert_eq!(
            n.to_array().map(Option::unwrap),
            ["ezs48", "ezs49", "ezs43", "ezs41", "ezs40", "ezefp", "ezefr", "ezefx"]
                .map(String::from)
        );
    }

    #[test]
    fn neighbours_across_the_antimeridian() {
        // "0" is the south-west corner cell, "z" the north-east one.
        let n = neighbors("p").unwrap(); // lat [-90, -45), lon [0, 45)... p is the east half's SW
        assert!(n.s.is_none());
        let w = neighbors("2").unwrap(); // lat [-45, 0), lon [-180, -135)
        assert_eq!(w.w.as_deref(), Some("r")); // lat [-45, 0), lon [135, 180)
        assert_eq!(w.e.as_deref(), Some("3"));
        let c = decode(w.nw.as_deref().unwrap()).unwrap();
        assert_eq!((c.lat_min, c.lon_min), (0.0, 135.0));
        // Fine cells on either side of the antimeridian at the equator.
        let east = encode(0.1, 179.9999, 7).unwrap();
        let west = encode(0.1, -179.9999, 7).unwrap();
        assert_eq!(neighbors(&east).unwrap().e, Some(west.clone()));
        assert_eq!(neighbors(&west).unwrap().w, Some(east));
    }

    #[test]
    fn neighbours_at_the_poles() {
        let top = encode(90.0, 10.0, 6).unwrap();
        let n = neighbors(&top).unwrap();
        assert!(n.n.is_none() && n.ne.is_none() && n.nw.is_none());
        let s = decode(n.s.as_deref().unwrap()).unwrap();
        assert!(s.lat_max < 90.0 && s.lat_max == decode(&top).unwrap().lat_min);
        let bottom = encode(-90.0, 179.999, 6).unwrap();
        let n = neighbors(&bottom).unwrap();
        assert!(n.s.is_none() && n.se.is_none() && n.sw.is_none());
        // East of the last column wraps to the first, still on the bottom row.
        let e = decode(n.e.as_deref().unwrap()).unwrap();
        assert_eq!((e.lat_min, e.lon_min), (-90.0, -180.0));
    }

    #[test]
    fn batches_and_bad_input() {
        let v = encode_batch(&[42.6, 57.64911], &[-5.6, 10.40744], 5).unwrap();
        assert_eq!(v, ["ezs42", "u4pru"]);
        let cells = decode_batch(&v).unwrap();
        assert!(cells[1].lat_min <= 57.64911 && 57.64911 < cells[1].lat_max);
        let bits = encode_bits_batch(&[42.6], &[-5.6], 25).unwrap();
        assert_eq!(decode_bits_batch(&bits, 25).unwrap()[0], cells[0]);
        assert!(matches!(encode(91.0, 0.0, 5), Err(GeoError::Latitude(_))));
        assert!(matches!(
            encode(0.0, f64::NAN, 5),
            Err(GeoError::Longitude(_))
        ));
        assert!(matches!(
            encode(0.0, 0.0, 13),
            Err(GeoError::Precision { .. })
        ));
        assert!(matches!(
            encode(0.0, 0.0, 0),
            Err(GeoError::Precision { .. })
        ));
        assert!(matches!(decode("ezs4a"), Err(GeoError::Geohash { .. })));
        assert!(matches!(decode(""), Err(GeoError::Geohash { .. })));
        assert!(matches!(
            decode_bits(64, 5),
            Err(GeoError::GeohashBits { .. })
        ));
        assert!(matches!(
            encode_batch(&[0.0, 100.0], &[0.0, 0.0], 5),
            Err(GeoError::At { index: 1, .. })
        ));
        assert!(matches!(
            encode_batch(&[0.0], &[0.0, 0.0], 5),
            Err(GeoError::LengthMismatch { .. })
        ));
    }

    #[test]
    fn cover_contains_the_cells_of_its_corners() {
        for &(lat, lon, r) in &[
            (0.0, 179.999, 2_000.0),
            (89.999, 0.0, 5_000.0),
            (-89.99, 45.0, 500.0),
            (45.0, -0.0001, 20_000.0),
            (10.0, 10.0, 3.0e6),
        ] {
            let q = Query::new(lat, lon, r).unwrap();
            let mut ranges = Vec::new();
            cover(&q, &mut ranges);
            assert!(ranges.len() <= MAX_CELLS as usize);
            for (la, lo) in [(lat, lon), (q.lat_lo_deg, lon), (q.lat_hi_deg, lon)] {
                let k = key60(la, lo);
                assert!(
                    ranges.iter().any(|&(a, b)| a <= k && k <= b),
                    "{lat} {lon} {r}"
                );
            }
        }
    }
}
