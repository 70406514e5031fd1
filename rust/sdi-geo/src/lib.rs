//! Proximity search on the sphere for the proximity service (book vol. 2
//! chapter 1): three indexes over `(id, latitude, longitude)` points behind
//! one query interface, [`SpatialIndex`], with exact great-circle distances.
//! Pure Rust; the Python bindings build on it.
//!
//! * [`GeohashIndex`]: points sorted by their 60-bit geohash (a Z-order
//!   curve over latitude and longitude, as Redis GEO keeps them); a radius
//!   query covers the circle's latitude/longitude box with geohash cells at
//!   a depth chosen from the radius, split at the antimeridian and widened
//!   to every longitude when a pole is inside. The [`geohash`] module has
//!   the codec: encode, decode, neighbours, batch forms.
//! * [`Quadtree`]: a region quadtree over latitude and longitude whose
//!   leaves split past a capacity (100 by default, the book's number), with
//!   insert, move and remove in place.
//! * [`CellIndex`]: points sorted by a Hilbert-curve cell id on the six
//!   faces of a cube, as S2 does ([`cell`] explains the scheme), with a
//!   covering of the query circle by cells that are refined where the
//!   points are dense. The most compact and, with the geohash index, the
//!   fastest: about 18.2 bytes per point. Both sorted indexes answer
//!   k-nearest queries by a depth-first search of a tree of boxes over
//!   blocks of 16 points (see the `sorted` module source).
//!
//! # Coordinates and distances
//!
//! Coordinates are WGS84 degrees, latitude in `[-90, 90]` and longitude in
//! `[-180, 180]`. Every index stores them in fixed point (1e-7 degree, at
//! most 1.1 cm; [`snap`] gives the stored position) and measures
//! great-circle distances by the haversine formula on a sphere of radius
//! [`EARTH_RADIUS_M`] (6,371,008.8 m) to those stored positions. The three
//! indexes compute every distance by the same expression from the same
//! stored coordinates, so they return identical results, and results are
//! ordered by distance then id, so ties are deterministic.
//!
//! # Bad input
//!
//! Every public call validates its input and returns a [`GeoError`] that
//! says what to fix: NaN or out-of-range coordinates, a negative or NaN
//! radius, `k = 0`, slices of different lengths, a duplicate id. No call
//! panics on bad input.
//!
//! ```
//! use sdi_geo::{CellIndex, GeohashIndex, Quadtree, SpatialIndex};
//!
//! let ids = [1, 2, 3];
//! let lats = [48.8584, 48.8606, 51.5007];
//! let lons = [2.2945, 2.3376, -0.1246];
//! let cells = CellIndex::new(&ids, &lats, &lons).unwrap();
//! let near = cells.radius(48.8566, 2.3522, 5_000.0, None, 0).unwrap();
//! assert_eq!(near.iter().map(|h| h.0).collect::<Vec<_>>(), [2, 1]);
//!
//! let geohash = GeohashIndex::new(&ids, &lats, &lons).unwrap();
//! let quad = Quadtree::new(&ids, &lats, &lons).unwrap();
//! assert_eq!(geohash.knn(48.8566, 2.3522, 3).unwrap(), cells.knn(48.8566, 2.3522, 3).unwrap());
//! assert_eq!(quad.knn(48.8566, 2.3522, 3).unwrap(), cells.knn(48.8566, 2.3522, 3).unwrap());
//! ```

#![warn(missing_docs)]

pub mod brute;
pub mod cell;
pub mod geohash;
pub mod quadtree;
mod query;
mod sorted;

pub use brute::BruteForce;
pub use cell::CellIndex;
pub use geohash::GeohashIndex;
pub use quadtree::Quadtree;
pub use query::{haversine_m, snap, COORD_SCALE, EARTH_RADIUS_M, HALF_CIRCUMFERENCE_M};

/// One result: the point's id and its distance from the query in metres.
pub type Hit = (u64, f64);

/// What a geo call can fail with. No call panics on bad input.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum GeoError {
    /// A latitude that is NaN or outside `[-90, 90]`.
    #[error("latitude {0} is not in [-90, 90] (WGS84 degrees; NaN is not allowed)")]
    Latitude(f64),
    /// A longitude that is NaN or outside `[-180, 180]`.
    #[error("longitude {0} is not in [-180, 180] (WGS84 degrees; NaN is not allowed)")]
    Longitude(f64),
    /// A radius that is negative, NaN or infinite.
    #[error("radius {0} m is not allowed: give a finite distance in metres >= 0")]
    Radius(f64),
    /// `k = 0` for a k-nearest query.
    #[error("k must be at least 1 for a k-nearest query")]
    ZeroK,
    /// Slices that must be parallel have different lengths.
    #[error(
        "{what} has {got} items but {like} has {expected}; give one item per point (or per query)"
    )]
    LengthMismatch {
        /// The slice with the wrong length.
        what: &'static str,
        /// Its length.
        got: usize,
        /// The slice it must match.
        like: &'static str,
        /// The length it must have.
        expected: usize,
    },
    /// Two points with the same id.
    #[error("id {0} appears twice; ids must be unique (move a point with `move_point`)")]
    DuplicateId(u64),
    /// An id that is not in the index.
    #[error("id {0} is not in the index")]
    UnknownId(u64),
    /// More points than an index holds (`u32::MAX`).
    #[error("{0} points is more than an index holds (at most 4294967295)")]
    TooManyPoints(usize),
    /// A geohash precision outside `1..=12` characters (or `1..=60` bits).
    #[error("geohash precision {got} is out of range: use 1..={max} {unit}")]
    Precision {
        /// The precision asked for.
        got: usize,
        /// The largest allowed.
        max: usize,
        /// `characters` or `bits`.
        unit: &'static str,
    },
    /// A string that is not a geohash.
    #[error("{hash:?} is not a geohash: {reason}")]
    Geohash {
        /// The string given.
        hash: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A geohash value with bits set above its precision.
    #[error("geohash value {value:#x} has bits set above its {bits} bits")]
    GeohashBits {
        /// The value given.
        value: u64,
        /// Its precision in bits.
        bits: usize,
    },
    /// A leaf capacity of 0.
    #[error("a quadtree leaf capacity must be at least 1 (the book uses 100)")]
    Capacity,
    /// An error about item `index` of a slice.
    #[error("item {index}: {source}")]
    At {
        /// Position of the offending item.
        index: usize,
        /// What is wrong with it.
        source: Box<GeoError>,
    },
}

impl GeoError {
    /// This error, said of item `index` of a slice.
    pub(crate) fn at(self, index: usize) -> GeoError {
        GeoError::At {
            index,
            source: Box::new(self),
        }
    }
}

/// Results of a batch of queries in compressed form: the hits of query `i`
/// are `ids[offsets[i]..offsets[i + 1]]` with `distances_m` alongside,
/// ready to hand to numpy without one allocation per query.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Batch {
    /// `n + 1` offsets into `ids` and `distances_m`, starting at 0.
    pub offsets: Vec<usize>,
    /// The ids found, query after query.
    pub ids: Vec<u64>,
    /// Their distances in metres.
    pub distances_m: Vec<f64>,
}

impl Batch {
    /// The number of queries.
    pub fn len(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    /// Whether there are no queries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The hits of query `i` (`None` past the end).
    pub fn get(&self, i: usize) -> Option<Vec<Hit>> {
        let (&a, &b) = (self.offsets.get(i)?, self.offsets.get(i + 1)?);
        Some(
            self.ids[a..b]
                .iter()
                .copied()
                .zip(self.distances_m[a..b].iter().copied())
                .collect(),
        )
    }

    fn with_capacity(n: usize) -> Batch {
        let mut offsets = Vec::with_capacity(n + 1);
        offsets.push(0);
        Batch {
            offsets,
            ids: Vec::new(),
            distances_m: Vec::new(),
        }
    }

    fn push(&mut self, hits: &[Hit]) {
        self.ids.extend(hits.iter().map(|h| h.0));
        self.distances_m.extend(hits.iter().map(|h| h.1));
        self.offsets.push(self.ids.len());
    }
}

/// The query interface of every index. Distances are great-circle metres
/// (see the crate docs); results are sorted by distance, then id.
pub trait SpatialIndex {
    /// The number of points.
    fn len(&self) -> usize;

    /// Whether the index holds no point.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes held by the structure (heap and inline), so
    /// `memory_bytes() / len()` is the cost of a point.
    fn memory_bytes(&self) -> usize;

    /// Points within `radius_m` metres (inclusive) of `(lat, lon)`, sorted
    /// by distance then id, skipping the first `offset` and returning at
    /// most `limit` (all when `None`): pages `offset = 0, l, 2l, ...` with
    /// `limit = Some(l)` concatenate to the full answer. A radius of half
    /// the circumference or more returns every point.
    fn radius(
        &self,
        lat: f64,
        lon: f64,
        radius_m: f64,
        limit: Option<usize>,
        offset: usize,
    ) -> Result<Vec<Hit>, GeoError>;

    /// The `k` points nearest to `(lat, lon)` (all of them when `k >= len()`),
    /// sorted by distance then id. `k = 0` is an error.
    fn knn(&self, lat: f64, lon: f64, k: usize) -> Result<Vec<Hit>, GeoError>;

    /// [`radius`](Self::radius) for many queries in one call: query `i` is
    /// `(lats[i], lons[i])` with radius `radii_m[i]` (or `radii_m[0]` for
    /// every query when it has one item). Every query is validated before
    /// any runs.
    fn radius_batch(
        &self,
        lats: &[f64],
        lons: &[f64],
        radii_m: &[f64],
        limit: Option<usize>,
        offset: usize,
    ) -> Result<Batch, GeoError>;

    /// [`knn`](Self::knn) for many queries in one call.
    fn knn_batch(&self, lats: &[f64], lons: &[f64], k: usize) -> Result<Batch, GeoError>;

    /// [`radius_batch`](Self::radius_batch) split over `threads` threads
    /// (scoped; `0` or `1` runs on the caller's thread). Same answer.
    fn radius_batch_parallel(
        &self,
        lats: &[f64],
        lons: &[f64],
        radii_m: &[f64],
        limit: Option<usize>,
        offset: usize,
        threads: usize,
    ) -> Result<Batch, GeoError>
    where
        Self: Sync,
    {
        let _ = query::check_batch(lats, lons, radii_m)?;
        parallel(lats.len(), threads, |a, b| {
            let radii = if radii_m.len() == 1 {
                radii_m
            } else {
                &radii_m[a..b]
            };
            self.radius_batch(&lats[a..b], &lons[a..b], radii, limit, offset)
        })
    }

    /// [`knn_batch`](Self::knn_batch) split over `threads` threads.
    fn knn_batch_parallel(
        &self,
        lats: &[f64],
        lons: &[f64],
        k: usize,
        threads: usize,
    ) -> Result<Batch, GeoError>
    where
        Self: Sync,
    {
        if k == 0 {
            return Err(GeoError::ZeroK);
        }
        let _ = query::check_batch(lats, lons, &[0.0])?;
        parallel(lats.len(), threads, |a, b| {
            self.knn_batch(&lats[a..b], &lons[a..b], k)
        })
    }
}

/// Run `run(a, b)` on `threads` contiguous chunks of `0..n` and join the
/// batches in order.
fn parallel(
    n: usize,
    threads: usize,
    run: impl Fn(usize, usize) -> Result<Batch, GeoError> + Sync,
) -> Result<Batch, GeoError> {
    let threads = threads.clamp(1, n.max(1));
    if threads == 1 {
        return run(0, n);
    }
    let chunk = n.div_ceil(threads);
    let parts: Vec<Result<Batch, GeoError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .step_by(chunk)
            .map(|a| {
                let run = &run;
                s.spawn(move || run(a, (a + chunk).min(n)))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    });
    let mut out = Batch::with_capacity(n);
    for part in parts {
        let part = part?;
        let base = out.ids.len();
        out.offsets
            .extend(part.offsets[1..].iter().map(|o| o + base));
        out.ids.extend(part.ids);
        out.distances_m.extend(part.distances_m);
    }
    Ok(out)
}

/// Batches of at least this many queries run in locality order.
const LOCALITY_MIN: usize = 32;
/// How many queries ahead a batch starts loading what a query will touch.
const AHEAD: usize = 3;

/// How an index orders a batch of k-nearest queries and where it starts
/// each: the defaults order by a Z-order key and load nothing ahead.
pub(crate) trait Locality {
    /// A key of the query point: queries with near keys are near each
    /// other, and the index's k-nearest search gets it back.
    fn knn_key(&self, lat: f64, lon: f64) -> u64 {
        query::z_key(lat, lon)
    }

    /// Start loading the memory a k-nearest search from `key` touches first.
    fn knn_ahead(&self, _key: u64) {}
}

/// Answer the queries of a batch: `one(i, key(i), scratch)` leaves the hits
/// of query `i`, in result order, in `scratch.hits` (cleared before each
/// call).
///
/// A batch of [`LOCALITY_MIN`] queries or more runs in the order of the
/// keys, so that queries near each other run one after the other and find
/// the index's memory they share still in cache, and `ahead(key)` is
/// called [`AHEAD`] queries early, to start loading what a query touches
/// first; the hits are then put back in query order. The answer is the
/// same.
pub(crate) fn run_batch(
    n: usize,
    key: impl Fn(usize) -> u64,
    ahead: impl Fn(u64),
    mut one: impl FnMut(usize, u64, &mut Scratch),
) -> Batch {
    let mut scratch = Scratch::default();
    let mut out = Batch::with_capacity(n);
    if n < LOCALITY_MIN {
        for i in 0..n {
            scratch.hits.clear();
            one(i, key(i), &mut scratch);
            out.push(&scratch.hits);
        }
        return out;
    }
    let mut order: Vec<(u64, usize)> = (0..n).map(|i| (key(i), i)).collect();
    order.sort_unstable();
    let mut spans = vec![(0usize, 0usize); n];
    let mut hits: Vec<Hit> = Vec::new();
    for (p, &(k, i)) in order.iter().enumerate() {
        if let Some(&(next, _)) = order.get(p + AHEAD) {
            ahead(next);
        }
        scratch.hits.clear();
        one(i, k, &mut scratch);
        let start = hits.len();
        hits.extend_from_slice(&scratch.hits);
        spans[i] = (start, hits.len());
    }
    out.ids.reserve(hits.len());
    out.distances_m.reserve(hits.len());
    for &(a, b) in &spans {
        out.push(&hits[a..b]);
    }
    out
}

/// Per-call working memory, reused across the queries of a batch.
#[derive(Default)]
pub(crate) struct Scratch {
    /// Key ranges of a covering.
    pub ranges: Vec<(u64, u64)>,
    /// Candidate hits.
    pub hits: Vec<Hit>,
    /// Distances of a k-nearest window.
    pub dists: Vec<f64>,
    /// Block spans `[b0, b1)` to scan.
    pub spans: Vec<(usize, usize)>,
    /// The best `k` of a k-nearest search, `(distance bits, id)`: a heap
    /// with the worst on top, or a sorted list for a small `k`.
    pub best: std::collections::BinaryHeap<(u64, u64)>,
    pub best_list: Vec<(u64, u64)>,
}

/// Implements [`SpatialIndex`] for a type with inherent
/// `fn collect(&self, &Query, &mut Scratch)` (every hit within the radius
/// into `scratch.hits`, any order), `fn knn_collect(&self, &Query, k, key,
/// &mut Scratch)` (the `min(k, len)` nearest into `scratch.hits`, any
/// order; `key` from its [`Locality::knn_key`]),
/// `fn count(&self)` and `fn bytes(&self)`.
macro_rules! impl_spatial_index {
    ($ty:ty) => {
        impl $crate::SpatialIndex for $ty {
            fn len(&self) -> usize {
                self.count()
            }

            fn memory_bytes(&self) -> usize {
                self.bytes()
            }

            fn radius(
                &self,
                lat: f64,
                lon: f64,
                radius_m: f64,
                limit: Option<usize>,
                offset: usize,
            ) -> Result<Vec<$crate::Hit>, $crate::GeoError> {
                let q = $crate::query::Query::new(lat, lon, radius_m)?;
                let mut scratch = $crate::Scratch::default();
                self.collect(&q, &mut scratch);
                let mut hits = scratch.hits;
                $crate::query::page(&mut hits, limit, offset);
                Ok(hits)
            }

            fn knn(
                &self,
                lat: f64,
                lon: f64,
                k: usize,
            ) -> Result<Vec<$crate::Hit>, $crate::GeoError> {
                if k == 0 {
                    return Err($crate::GeoError::ZeroK);
                }
                $crate::query::check_point(lat, lon)?;
                let q = $crate::query::Query::point(lat, lon);
                let mut scratch = $crate::Scratch::default();
                let key = $crate::Locality::knn_key(self, lat, lon);
                self.knn_collect(&q, k, key, &mut scratch);
                let mut hits = scratch.hits;
                $crate::query::sort_hits(&mut hits);
                Ok(hits)
            }

            fn radius_batch(
                &self,
                lats: &[f64],
                lons: &[f64],
                radii_m: &[f64],
                limit: Option<usize>,
                offset: usize,
            ) -> Result<$crate::Batch, $crate::GeoError> {
                let radius_of = $crate::query::check_batch(lats, lons, radii_m)?;
                let key = |i: usize| $crate::query::z_key(lats[i], lons[i]);
                Ok($crate::run_batch(
                    lats.len(),
                    key,
                    |_| {},
                    |i, _, scratch| {
                        let q = $crate::query::Query::unchecked(lats[i], lons[i], radius_of(i));
                        self.collect(&q, scratch);
                        $crate::query::page(&mut scratch.hits, limit, offset);
                    },
                ))
            }

            fn knn_batch(
                &self,
                lats: &[f64],
                lons: &[f64],
                k: usize,
            ) -> Result<$crate::Batch, $crate::GeoError> {
                if k == 0 {
                    return Err($crate::GeoError::ZeroK);
                }
                let _ = $crate::query::check_batch(lats, lons, &[0.0])?;
                use $crate::Locality;
                let key = |i: usize| self.knn_key(lats[i], lons[i]);
                let ahead = |key: u64| self.knn_ahead(key);
                Ok($crate::run_batch(
                    lats.len(),
                    key,
                    ahead,
                    |i, key, scratch| {
                        let q = $crate::query::Query::point(lats[i], lons[i]);
                        self.knn_collect(&q, k, key, scratch);
                        $crate::query::sort_hits(&mut scratch.hits);
                    },
                ))
            }
        }
    };
}
pub(crate) use impl_spatial_index;

/// Bytes of a vector's buffer.
pub(crate) fn vec_bytes<T>(v: &Vec<T>) -> usize {
    v.capacity() * std::mem::size_of::<T>()
}
