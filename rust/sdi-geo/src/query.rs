//! The shared query machinery: validation, the fixed-point coordinates every
//! index stores, the exact great-circle distance and the cheap conservative
//! pre-filter (a latitude band and a longitude window) in front of it, and
//! the ordering and paging of results.
//!
//! Every index answers through [`Query`], so a point's distance is computed
//! by the same expression on the same stored coordinates whichever index
//! finds it: the three indexes return bit-identical results.

use std::cmp::Ordering;
use std::f64::consts::PI;

use crate::{GeoError, Hit};

/// Mean Earth radius in metres (IUGG mean radius R1 of WGS84, the value
/// Redis and H3 use). Every distance is `EARTH_RADIUS_M` times the central
/// angle given by the haversine formula.
pub const EARTH_RADIUS_M: f64 = 6_371_008.8;

/// Fixed-point scale of stored coordinates: degrees times `1e7`, held as
/// `i32` (1e-7 degree is at most 1.1 cm on the ground).
pub const COORD_SCALE: f64 = 1e7;

/// Radians per fixed-point unit.
const UNIT_TO_RAD: f64 = PI / 180.0 / COORD_SCALE;
/// Fixed-point units in 180 and 360 degrees.
pub(crate) const HALF_TURN: i64 = 1_800_000_000;
const FULL_TURN: i64 = 3_600_000_000;

/// Check one coordinate pair (WGS84 degrees).
pub(crate) fn check_point(lat: f64, lon: f64) -> Result<(), GeoError> {
    // `contains` is false for NaN.
    if !(-90.0..=90.0).contains(&lat) {
        return Err(GeoError::Latitude(lat));
    }
    if !(-180.0..=180.0).contains(&lon) {
        return Err(GeoError::Longitude(lon));
    }
    Ok(())
}

/// Fixed-point form of a valid latitude or longitude in degrees.
#[inline]
pub(crate) fn to_fixed(deg: f64) -> i32 {
    // |deg| <= 180, so |deg * 1e7| <= 1.8e9 < i32::MAX.
    (deg * COORD_SCALE).round() as i32
}

/// Unit vector of a stored point (fixed-point latitude and longitude).
#[inline]
pub(crate) fn unit_fixed(lat: i32, lon: i32) -> [f64; 3] {
    let (sl, cl) = (f64::from(lat) * UNIT_TO_RAD).sin_cos();
    let (so, co) = (f64::from(lon) * UNIT_TO_RAD).sin_cos();
    [cl * co, cl * so, sl]
}

/// Degrees of a fixed-point coordinate.
#[inline]
pub(crate) fn to_deg(fixed: i32) -> f64 {
    f64::from(fixed) / COORD_SCALE
}

/// The position a point is stored at (degrees): its coordinates rounded to
/// the nearest 1e-7 degree. Distances are measured to these positions.
///
/// ```
/// assert_eq!(sdi_geo::snap(1.000000049, -2.5), (1.0, -2.5));
/// ```
pub fn snap(lat: f64, lon: f64) -> (f64, f64) {
    (to_deg(to_fixed(lat)), to_deg(to_fixed(lon)))
}

/// Great-circle distance in metres between two points (WGS84 degrees) by
/// the haversine formula on a sphere of radius [`EARTH_RADIUS_M`]. The
/// inputs are not checked (NaN in, NaN out); the indexes validate theirs.
///
/// ```
/// let d = sdi_geo::haversine_m(0.0, 0.0, 0.0, 1.0);
/// assert!((d - 111_195.08).abs() < 0.01);
/// ```
pub fn haversine_m(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let s1 = ((p2 - p1) * 0.5).sin();
    let s2 = ((lon2 - lon1).to_radians() * 0.5).sin();
    let a = s1 * s1 + p1.cos() * p2.cos() * s2 * s2;
    2.0 * EARTH_RADIUS_M * a.clamp(0.0, 1.0).sqrt().asin()
}

/// Half the Earth's circumference: no two points are farther apart.
pub const HALF_CIRCUMFERENCE_M: f64 = PI * EARTH_RADIUS_M;

/// One validated query circle with everything precomputed that a scan needs.
#[derive(Clone, Debug)]
pub(crate) struct Query {
    /// Centre, degrees as given.
    pub lat: f64,
    pub lon: f64,
    lat_r: f64,
    lon_r: f64,
    sin_lat: f64,
    cos_lat: f64,
    /// Unit vector of the centre.
    pub xyz: [f64; 3],
    /// Radius in metres (inclusive).
    pub radius_m: f64,
    /// Angular radius in radians, padded a little (never smaller than the
    /// true one), for coverings and pre-filters.
    pub ang_pad: f64,
    /// Latitude band in fixed point, inclusive.
    pub lat_lo: i32,
    pub lat_hi: i32,
    /// Fixed-point centre longitude and the longitude half-window
    /// (`i64::MAX` when every longitude can be in the circle).
    qlon: i64,
    dlon: i64,
    /// The same box in degrees for the coverers: latitude band and the
    /// longitude half-window (`None` when unbounded).
    pub lat_lo_deg: f64,
    pub lat_hi_deg: f64,
    pub dlon_deg: Option<f64>,
}

impl Query {
    /// A circle around a validated centre; `radius_m` must be finite and `>= 0`.
    pub fn new(lat: f64, lon: f64, radius_m: f64) -> Result<Query, GeoError> {
        check_point(lat, lon)?;
        if !radius_m.is_finite() || radius_m < 0.0 {
            return Err(GeoError::Radius(radius_m));
        }
        Ok(Query::unchecked(lat, lon, radius_m))
    }

    /// A centre already known to be valid with radius 0 and no pre-filter
    /// box (every latitude and longitude passes it), for k-nearest
    /// searches, which bound their own scans: cheaper than
    /// [`Query::unchecked`].
    pub fn point(lat: f64, lon: f64) -> Query {
        Query::unchecked_with(lat, lon, 0.0, false)
    }

    /// [`Query::new`] for a centre and radius already known to be valid.
    pub fn unchecked(lat: f64, lon: f64, radius_m: f64) -> Query {
        Query::unchecked_with(lat, lon, radius_m, true)
    }

    fn unchecked_with(lat: f64, lon: f64, radius_m: f64, with_box: bool) -> Query {
        let lat_r = lat.to_radians();
        let lon_r = lon.to_radians();
        let (sin_lat, cos_lat) = lat_r.sin_cos();
        let (sin_lon, cos_lon) = lon_r.sin_cos();
        let ang = radius_m / EARTH_RADIUS_M;
        // Pad by a relative 1e-9 and 1e-9 rad (6 mm): far above the
        // rounding of the haversine, so the box is a superset of the circle.
        let ang_pad = ang * (1.0 + 1e-9) + 1e-9;
        let mut q = Query {
            lat,
            lon,
            lat_r,
            lon_r,
            sin_lat,
            cos_lat,
            xyz: [cos_lat * cos_lon, cos_lat * sin_lon, sin_lat],
            radius_m,
            ang_pad,
            lat_lo: i32::MIN,
            lat_hi: i32::MAX,
            qlon: i64::from(to_fixed(lon)),
            dlon: i64::MAX,
            lat_lo_deg: -90.0,
            lat_hi_deg: 90.0,
            dlon_deg: None,
        };
        if ang_pad >= PI || !with_box {
            return q;
        }
        let pad_deg = ang_pad.to_degrees();
        let lo = lat - pad_deg;
        let hi = lat + pad_deg;
        q.lat_lo_deg = lo.max(-90.0);
        q.lat_hi_deg = hi.min(90.0);
        // Truncating casts with 3 units of slack: beyond the floor (ceiling)
        // minus (plus) 2, without a libm call.
        q.lat_lo = ((lo * COORD_SCALE) as i64 - 3).max(i64::from(i32::MIN)) as i32;
        q.lat_hi = ((hi * COORD_SCALE) as i64 + 3).min(i64::from(i32::MAX)) as i32;
        if lo > -90.0 && hi < 90.0 {
            // No pole inside: every point of the circle is within
            // asin(sin(ang) / cos(lat)) of the centre's meridian.
            let dl = (ang_pad.sin() / cos_lat).min(1.0).asin().to_degrees();
            if dl < 180.0 {
                q.dlon_deg = Some(dl);
                q.dlon = (dl * COORD_SCALE) as i64 + 3;
            }
        }
        q
    }

    /// Latitude (radians), half the latitude difference and half the
    /// longitude difference (wrapped into `[-pi/2, pi/2]`) to a stored point.
    #[inline(always)]
    fn half_angles(&self, lat: i32, lon: i32) -> (f64, f64, f64) {
        let plat = f64::from(lat) * UNIT_TO_RAD;
        let h = (plat - self.lat_r) * 0.5;
        let mut dl = f64::from(lon) * UNIT_TO_RAD - self.lon_r;
        if dl > PI {
            dl -= 2.0 * PI;
        } else if dl < -PI {
            dl += 2.0 * PI;
        }
        (plat, h, dl * 0.5)
    }

    /// `sqrt` of the haversine term for half-angles `|h|, |g| <= 0.5`, by
    /// polynomials; the point's `cos(lat)` comes from the centre's by the
    /// angle-sum formula.
    #[inline(always)]
    fn small_y(&self, h: f64, g: f64) -> f64 {
        let (s1, c1, s2) = if h.abs() <= TINY && g.abs() <= TINY {
            (sin_tiny(h), cos_tiny(h), sin_tiny(g))
        } else {
            (sin_small(h), cos_small(h), sin_small(g))
        };
        // cos(lat_q + 2h) = cos(lat_q) cos(2h) - sin(lat_q) sin(2h)
        let cos_p =
            (self.cos_lat * (1.0 - 2.0 * s1 * s1) - self.sin_lat * (2.0 * s1 * c1)).max(0.0);
        let a = s1 * s1 + self.cos_lat * cos_p * s2 * s2;
        a.clamp(0.0, 1.0).sqrt()
    }

    /// Half-widths in fixed point of a latitude band and a longitude window
    /// around the centre that hold every point within `arc` radians of it
    /// (`u32::MAX` for no bound). Cheap (one square root): for the
    /// k-nearest search, whose bound shrinks as it goes.
    #[inline]
    pub fn windows(&self, arc: f64) -> (u32, u32) {
        let units = |rad: f64| {
            // Truncation plus 3 units: at least the ceiling plus 2.
            let u = rad * (1.0 + 1e-9) * (180.0 / PI * COORD_SCALE) + 3.0;
            if u < f64::from(u32::MAX) {
                u as u32
            } else {
                u32::MAX
            }
        };
        // Off the poles' reach, a circle's points are within
        // asin(sin(arc) / cos(lat)) <= t / sqrt(1 - t^2) of the centre's
        // meridian, with t = arc / cos(lat) >= sin(arc) / cos(lat); t < 1
        // also keeps both poles out (arc < cos(lat) <= pi/2 - |lat|).
        let t = arc / self.cos_lat;
        let dlon = if t < 0.99 {
            units(t / (1.0 - t * t).sqrt())
        } else {
            u32::MAX
        };
        (units(arc), dlon)
    }

    /// Exact distance in metres from the centre to a stored point.
    ///
    /// The haversine formula with small-angle polynomials where they are
    /// exact to the last bit or so (half-angles up to 0.5 rad, arcs up to
    /// 0.1 rad): no call into libm for a point within a few thousand
    /// kilometres. Farther points take the libm path.
    #[inline(always)]
    pub fn distance(&self, lat: i32, lon: i32) -> f64 {
        let (plat, h, g) = self.half_angles(lat, lon);
        let y = if h.abs() <= 0.5 && g.abs() <= 0.5 {
            self.small_y(h, g)
        } else {
            let (s1, s2) = (h.sin(), g.sin());
            let a = s1 * s1 + self.cos_lat * plat.cos() * s2 * s2;
            a.clamp(0.0, 1.0).sqrt()
        };
        let arc = if y <= TINY {
            asin_tiny(y)
        } else if y <= ASIN_SMALL_MAX {
            asin_small(y)
        } else {
            y.asin()
        };
        2.0 * EARTH_RADIUS_M * arc
    }

    /// The distance of a stored point if it lies in the circle.
    #[inline(always)]
    pub fn within(&self, lat: i32, lon: i32) -> Option<f64> {
        if lat < self.lat_lo || lat > self.lat_hi {
            return None;
        }
        if self.dlon != i64::MAX {
            let mut dl = (i64::from(lon) - self.qlon).abs();
            if dl > HALF_TURN {
                dl = FULL_TURN - dl;
            }
            if dl > self.dlon {
                return None;
            }
        }
        let d = self.distance(lat, lon);
        (d <= self.radius_m).then_some(d)
    }

    /// Whether the fixed-point box `[lat0, lat1] x [lon0, lon1]` (inclusive)
    /// can hold a point of the circle (conservative).
    #[inline]
    pub fn box_overlaps(&self, lat0: i32, lat1: i32, lon0: i32, lon1: i32) -> bool {
        if lat1 < self.lat_lo || lat0 > self.lat_hi {
            return false;
        }
        if self.dlon == i64::MAX {
            return true;
        }
        let (qlo, qhi) = (self.qlon - self.dlon, self.qlon + self.dlon);
        [-FULL_TURN, 0, FULL_TURN]
            .iter()
            .any(|shift| i64::from(lon0) + shift <= qhi && i64::from(lon1) + shift >= qlo)
    }

    /// A lower bound of the distance in metres from the centre to any point
    /// of the fixed-point box `[lat0, lat1] x [lon0, lon1]` (inclusive).
    pub fn box_lower_bound(&self, lat0: i32, lat1: i32, lon0: i32, lon1: i32) -> f64 {
        let (a, b) = (f64::from(lat0) * UNIT_TO_RAD, f64::from(lat1) * UNIT_TO_RAD);
        let (l0, l1) = (f64::from(lon0) * UNIT_TO_RAD, f64::from(lon1) * UNIT_TO_RAD);
        let q = self.lon_r;
        let exact = if q >= l0 && q <= l1 {
            // Same meridian range: the nearest point is straight north or south.
            let dlat = if self.lat_r < a {
                a - self.lat_r
            } else if self.lat_r > b {
                self.lat_r - b
            } else {
                0.0
            };
            EARTH_RADIUS_M * dlat
        } else {
            // For a fixed latitude the distance grows with |dlon| (up to pi),
            // so the nearest point is on the edge meridian nearest in
            // longitude; along that meridian cos(d) = C cos(lat - lat*), whose
            // maximum on [a, b] is at lat* or at an end.
            let dl = wrap_rad(q - l0).abs().min(wrap_rad(q - l1).abs());
            let star = self.sin_lat.atan2(self.cos_lat * dl.cos());
            let mut best = self.arc_m(a, dl).min(self.arc_m(b, dl));
            if star > a && star < b {
                best = best.min(self.arc_m(star, dl));
            }
            best
        };
        exact * (1.0 - 1e-9) - 1e-3
    }

    /// Distance to the point at latitude `lat` (radians), `dl` radians of
    /// longitude away.
    fn arc_m(&self, lat: f64, dl: f64) -> f64 {
        let s1 = ((lat - self.lat_r) * 0.5).sin();
        let s2 = (dl * 0.5).sin();
        let a = s1 * s1 + self.cos_lat * lat.cos() * s2 * s2;
        2.0 * EARTH_RADIUS_M * a.clamp(0.0, 1.0).sqrt().asin()
    }
}

/// `sin(x)` for `|x| <= 0.5` (Taylor to x^13: error below 1e-16 relative),
/// evaluated by Estrin's scheme (short dependency chains).
#[inline(always)]
fn sin_small(x: f64) -> f64 {
    let t = x * x;
    let t2 = t * t;
    let t4 = t2 * t2;
    let a = 1.0 + t * (-1.0 / 6.0);
    let b = 1.0 / 120.0 + t * (-1.0 / 5_040.0);
    let c = 1.0 / 362_880.0 + t * (-1.0 / 39_916_800.0);
    let d = 1.0 / 6_227_020_800.0;
    x * ((a + t2 * b) + t4 * (c + t2 * d))
}

/// `cos(x)` for `|x| <= 0.5` (Taylor to x^14), Estrin's scheme.
#[inline(always)]
fn cos_small(x: f64) -> f64 {
    let t = x * x;
    let t2 = t * t;
    let t4 = t2 * t2;
    let a = 1.0 + t * (-1.0 / 2.0);
    let b = 1.0 / 24.0 + t * (-1.0 / 720.0);
    let c = 1.0 / 40_320.0 + t * (-1.0 / 3_628_800.0);
    let d = 1.0 / 479_001_600.0 + t * (-1.0 / 87_178_291_200.0);
    (a + t2 * b) + t4 * (c + t2 * d)
}

/// The largest argument of the `_tiny` polynomials: half-angles and arcs
/// up to 127 km, the common case, at half the cost of the `_small` ones.
const TINY: f64 = 0.01;

/// `sin(x)` for `|x| <= 0.01` (Taylor to x^7: error below 1e-21 relative).
#[inline(always)]
fn sin_tiny(x: f64) -> f64 {
    let t = x * x;
    x * ((1.0 + t * (-1.0 / 6.0)) + (t * t) * (1.0 / 120.0 + t * (-1.0 / 5_040.0)))
}

/// `cos(x)` for `|x| <= 0.01` (Taylor to x^8).
#[inline(always)]
fn cos_tiny(x: f64) -> f64 {
    let t = x * x;
    let t2 = t * t;
    (1.0 + t * (-1.0 / 2.0)) + t2 * ((1.0 / 24.0 + t * (-1.0 / 720.0)) + t2 * (1.0 / 40_320.0))
}

/// `asin(y)` for `0 <= y <= 0.01` (Taylor to y^9: error below 1e-19 relative).
#[inline(always)]
fn asin_tiny(y: f64) -> f64 {
    let t = y * y;
    let t2 = t * t;
    y * ((1.0 + t * (1.0 / 6.0)) + t2 * ((3.0 / 40.0 + t * (5.0 / 112.0)) + t2 * (35.0 / 1_152.0)))
}

/// The largest `y` [`asin_small`] takes: arcs up to 637 km.
const ASIN_SMALL_MAX: f64 = 0.05;

/// `asin(y)` for `0 <= y <= 0.05` (Taylor to y^13: error below 1e-18
/// relative), Estrin's scheme.
#[inline(always)]
fn asin_small(y: f64) -> f64 {
    let t = y * y;
    let t2 = t * t;
    let t4 = t2 * t2;
    let a = 1.0 + t * (1.0 / 6.0);
    let b = 3.0 / 40.0 + t * (5.0 / 112.0);
    let c = 35.0 / 1_152.0 + t * (63.0 / 2_816.0);
    let d = 231.0 / 13_312.0;
    y * ((a + t2 * b) + t4 * (c + t2 * d))
}

/// An angle in radians brought into `[-pi, pi]`.
fn wrap_rad(x: f64) -> f64 {
    x - 2.0 * PI * (x / (2.0 * PI)).round()
}

/// The result order: distance, then id (ids are unique in an index).
#[inline]
pub(crate) fn cmp_hit(a: &Hit, b: &Hit) -> Ordering {
    a.1.total_cmp(&b.1).then(a.0.cmp(&b.0))
}

/// A Z-order (Morton) key of a valid point: 32 bits of latitude and 32 of
/// longitude interleaved. Points with near keys are near each other; a
/// cheap key to order a batch of queries by.
#[inline]
pub(crate) fn z_key(lat: f64, lon: f64) -> u64 {
    fn spread(x: u32) -> u64 {
        let mut x = u64::from(x);
        x = (x | x << 16) & 0x0000_FFFF_0000_FFFF;
        x = (x | x << 8) & 0x00FF_00FF_00FF_00FF;
        x = (x | x << 4) & 0x0F0F_0F0F_0F0F_0F0F;
        x = (x | x << 2) & 0x3333_3333_3333_3333;
        (x | x << 1) & 0x5555_5555_5555_5555
    }
    // Casts saturate: 2^32 (at 90 or 180) becomes u32::MAX.
    let a = ((lat + 90.0) / 180.0 * 4_294_967_296.0) as u32;
    let b = ((lon + 180.0) / 360.0 * 4_294_967_296.0) as u32;
    spread(a) << 1 | spread(b)
}

/// Sort hits in the result order (a pass when they are sorted already).
#[inline]
pub(crate) fn sort_hits(hits: &mut [Hit]) {
    if !hits.is_sorted_by(|a, b| cmp_hit(a, b).is_le()) {
        hits.sort_unstable_by(cmp_hit);
    }
}

/// A key in the result order: distances are never negative, so their bit
/// patterns sort as the numbers do (an integer compare, cheaper to sort by).
#[inline]
fn hit_key(h: &Hit) -> (u64, u64) {
    (h.1.to_bits(), h.0)
}

/// Sort `hits` and keep the page `[offset, offset + limit)`.
pub(crate) fn page(hits: &mut Vec<Hit>, limit: Option<usize>, offset: usize) {
    let end = match limit {
        Some(limit) => offset.saturating_add(limit).min(hits.len()),
        None => hits.len(),
    };
    if offset >= end {
        hits.clear();
        return;
    }
    if end < hits.len() {
        hits.select_nth_unstable_by_key(end - 1, hit_key);
        hits.truncate(end);
    }
    hits.sort_unstable_by_key(hit_key);
    hits.drain(..offset);
}

/// Validate the points an index is built from: equal lengths, valid
/// coordinates, unique ids. Returns the fixed-point coordinates.
pub(crate) fn check_points(
    ids: &[u64],
    lats: &[f64],
    lons: &[f64],
) -> Result<Vec<(i32, i32)>, GeoError> {
    check_lengths("lats", ids.len(), lats.len(), "ids")?;
    check_lengths("lons", ids.len(), lons.len(), "ids")?;
    if u32::try_from(ids.len()).is_err() {
        return Err(GeoError::TooManyPoints(ids.len()));
    }
    let mut fixed = Vec::with_capacity(ids.len());
    for (i, (&lat, &lon)) in lats.iter().zip(lons).enumerate() {
        check_point(lat, lon).map_err(|e| e.at(i))?;
        fixed.push((to_fixed(lat), to_fixed(lon)));
    }
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
        return Err(GeoError::DuplicateId(w[0]));
    }
    Ok(fixed)
}

/// `got` must equal `expected`.
pub(crate) fn check_lengths(
    what: &'static str,
    expected: usize,
    got: usize,
    like: &'static str,
) -> Result<(), GeoError> {
    if expected == got {
        Ok(())
    } else {
        Err(GeoError::LengthMismatch {
            what,
            got,
            like,
            expected,
        })
    }
}

/// Validate a batch of queries; returns the radius of query `i`.
pub(crate) fn check_batch<'a>(
    lats: &[f64],
    lons: &[f64],
    radii: &'a [f64],
) -> Result<impl Fn(usize) -> f64 + 'a, GeoError> {
    check_lengths("lons", lats.len(), lons.len(), "lats")?;
    if radii.len() != 1 {
        check_lengths(
            "radii_m (or one radius for all)",
            lats.len(),
            radii.len(),
            "lats",
        )?;
    }
    for (i, (&lat, &lon)) in lats.iter().zip(lons).enumerate() {
        check_point(lat, lon).map_err(|e| e.at(i))?;
    }
    for (i, &r) in radii.iter().enumerate() {
        if !r.is_finite() || r < 0.0 {
            return Err(GeoError::Radius(r).at(i));
        }
    }
    Ok(move |i: usize| if radii.len() == 1 { radii[0] } else { radii[i] })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance_matches_plain_haversine() {
        let q = Query::new(48.8566, 2.3522, 1e6).unwrap();
        let d = q.distance(to_fixed(51.5074), to_fixed(-0.1278));
        let e = haversine_m(48.8566, 2.3522, 51.5074, -0.1278);
        assert!((d - e).abs() < 0.05, "{d} vs {e}");
        assert!((d - 343_560.0).abs() < 500.0, "{d}");
    }

    #[test]
    fn box_contains_the_circle_across_the_antimeridian() {
        let q = Query::new(10.0, 179.99, 5_000.0).unwrap();
        let lon = to_fixed(-179.99);
        assert!(q.within(to_fixed(10.0), lon).is_some());
        assert!(q.box_overlaps(to_fixed(9.0), to_fixed(11.0), lon, lon));
        assert!(q.box_lower_bound(to_fixed(9.0), to_fixed(11.0), lon, lon) < 2_200.0);
    }

    #[test]
    fn lower_bound_over_the_pole() {
        // The counter-example to clamping lat* alone: the nearest corner
        // of a southern box seen from across the globe is over the pole.
        let q = Query::new(10.0, 0.0, 0.0).unwrap();
        let (a, b) = (to_fixed(-80.0), to_fixed(-20.0));
        let (l0, l1) = (to_fixed(170.0), to_fixed(171.0));
        let lb = q.box_lower_bound(a, b, l0, l1);
        let d = q.distance(a, l0);
        assert!(lb <= d && d - lb < 1.0, "{lb} {d}");
    }

    #[test]
    fn small_angle_paths_match_libm() {
        for i in -500i32..=500 {
            let x = f64::from(i) * 0.001;
            // Within a couple of units in the last place.
            assert!((sin_small(x) - x.sin()).abs() <= 5e-16 * x.abs(), "{x}");
            assert!((cos_small(x) - x.cos()).abs() <= 3e-16, "{x}");
            let y = f64::from(i.abs()) * 1e-4;
            assert!((asin_small(y) - y.asin()).abs() <= 5e-16 * y, "{y}");
            let x = f64::from(i) * 2e-5;
            assert!((sin_tiny(x) - x.sin()).abs() <= 5e-16 * x.abs(), "{x}");
            assert!((cos_tiny(x) - x.cos()).abs() <= 3e-16, "{x}");
            let y = x.abs();
            assert!((asin_tiny(y) - y.asin()).abs() <= 5e-16 * y, "{y}");
        }
        for &(a, b, c, d) in &[
            (89.9999999, 0.0, 89.9999999, 180.0),
            (-90.0, 0.0, -89.0, 10.0),
            (0.0, 179.9999, 0.0, -179.9999),
            (45.0, 45.0, 45.001, 45.001),
            (10.0, 10.0, 30.0, 40.0),
            (0.0, 0.0, 0.0, 180.0),
        ] {
            let q = Query::new(a, b, 0.0).unwrap();
            let got = q.distance(to_fixed(c), to_fixed(d));
            let want = haversine_m(a, b, to_deg(to_fixed(c)), to_deg(to_fixed(d)));
            assert!(
                (got - want).abs() < 1e-6,
                "{a} {b} {c} {d}: {got} vs {want}"
            );
        }
    }

    #[test]
    fn paging() {
        let mut all: Vec<Hit> = (0..10).map(|i| (i, f64::from(10 - i as u32 / 2))).collect();
        let mut full = all.clone();
        page(&mut full, None, 0);
        assert_eq!(full[0], (8, 6.0));
        assert_eq!(full[1], (9, 6.0));
        page(&mut all, Some(3), 2);
        assert_eq!(all, full[2..5].to_vec());
    }
}
