//! `sdi._rust.geo`: the bindings of the `sdi-geo` core (proximity search).
//!
//! One class, `GeoIndex`, over the three indexes of the core (`geohash`,
//! `quadtree`, `cell`), built from numpy arrays of ids and coordinates.
//! Queries return numpy arrays (ids as uint64, distances in metres as
//! float64) and run with the GIL released; batch queries take arrays of
//! query points and return one flat answer with offsets, so a thousand
//! queries cost one call. The quadtree also takes inserts, moves and
//! removes; the sorted indexes are rebuilt instead.

use std::sync::RwLock;

use numpy::{PyArray1, PyReadonlyArray1};
use pyo3::prelude::*;

use crate::errors::{run_core, to_py_err, CoreError, Kind};
use sdi_geo::{geohash, Batch, CellIndex, GeoError, GeohashIndex, Hit, Quadtree, SpatialIndex};

impl CoreError for GeoError {
    fn kind(&self) -> Kind {
        match self {
            GeoError::TooManyPoints(_) => Kind::LimitExceeded,
            _ => Kind::InvalidArgument,
        }
    }
}

enum Index {
    Geohash(GeohashIndex),
    Quadtree(Quadtree),
    Cell(CellIndex),
}

impl Index {
    fn as_spatial(&self) -> &(dyn SpatialIndex + Sync) {
        match self {
            Index::Geohash(index) => index,
            Index::Quadtree(index) => index,
            Index::Cell(index) => index,
        }
    }

    fn radius_batch_parallel(
        &self,
        lats: &[f64],
        lons: &[f64],
        radii: &[f64],
        limit: Option<usize>,
        offset: usize,
        threads: usize,
    ) -> Result<Batch, GeoError> {
        match self {
            Index::Geohash(i) => i.radius_batch_parallel(lats, lons, radii, limit, offset, threads),
            Index::Quadtree(i) => {
                i.radius_batch_parallel(lats, lons, radii, limit, offset, threads)
            }
            Index::Cell(i) => i.radius_batch_parallel(lats, lons, radii, limit, offset, threads),
        }
    }

    fn knn_batch_parallel(
        &self,
        lats: &[f64],
        lons: &[f64],
        k: usize,
        threads: usize,
    ) -> Result<Batch, GeoError> {
        match self {
            Index::Geohash(i) => i.knn_batch_parallel(lats, lons, k, threads),
            Index::Quadtree(i) => i.knn_batch_parallel(lats, lons, k, threads),
            Index::Cell(i) => i.knn_batch_parallel(lats, lons, k, threads),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Index::Geohash(_) => "geohash",
            Index::Quadtree(_) => "quadtree",
            Index::Cell(_) => "cell",
        }
    }
}

/// A spatial index of `(id, latitude, longitude)` points.
///
/// `kind` is `"cell"` (Hilbert-curve cells on a cube, the most compact),
/// `"geohash"` (points sorted by geohash) or `"quadtree"` (leaves split past
/// `capacity` points; takes inserts, moves and removes).
#[pyclass(name = "GeoIndex", module = "sdi._rust.geo", frozen)]
pub struct PyGeoIndex {
    kind: &'static str,
    index: RwLock<Index>,
}

/// What a call on a `GeoIndex` can fail with, besides the core's errors.
#[derive(Debug)]
enum CallError {
    Geo(GeoError),
    Poisoned,
    QuadtreeOnly(&'static str, &'static str),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Geo(error) => error.fmt(f),
            CallError::Poisoned => f.write_str(
                "the index was left inconsistent by an earlier internal error; rebuild it",
            ),
            CallError::QuadtreeOnly(kind, what) => write!(
                f,
                "a {kind} index is sorted once and cannot {what}; build a new one, or use \
                 kind=\"quadtree\" for points that change"
            ),
        }
    }
}

impl CoreError for CallError {
    fn kind(&self) -> Kind {
        match self {
            CallError::Geo(error) => error.kind(),
            CallError::Poisoned => Kind::Internal,
            CallError::QuadtreeOnly(..) => Kind::InvalidArgument,
        }
    }
}

type Answer<'py> = (Bound<'py, PyArray1<u64>>, Bound<'py, PyArray1<f64>>);
type BatchAnswer<'py> = (
    Bound<'py, PyArray1<u64>>,
    Bound<'py, PyArray1<u64>>,
    Bound<'py, PyArray1<f64>>,
);

fn answer(py: Python<'_>, hits: Vec<Hit>) -> Answer<'_> {
    let (ids, distances): (Vec<u64>, Vec<f64>) = hits.into_iter().unzip();
    (
        PyArray1::from_vec(py, ids),
        PyArray1::from_vec(py, distances),
    )
}

fn batch_answer(py: Python<'_>, batch: Batch) -> BatchAnswer<'_> {
    let offsets: Vec<u64> = batch.offsets.iter().map(|&o| o as u64).collect();
    (
        PyArray1::from_vec(py, offsets),
        PyArray1::from_vec(py, batch.ids),
        PyArray1::from_vec(py, batch.distances_m),
    )
}

fn slice<'a, T: numpy::Element>(
    py: Python<'_>,
    array: &'a PyReadonlyArray1<'_, T>,
    name: &str,
) -> PyResult<&'a [T]> {
    array.as_slice().map_err(|_| {
        to_py_err(
            py,
            Kind::InvalidArgument,
            format!("{name} must be a contiguous 1-D array (numpy.ascontiguousarray)"),
        )
    })
}

impl PyGeoIndex {
    /// Runs `work` on the index under its read lock, all with the GIL released:
    /// a thread waiting for the lock never holds the GIL a writer needs back.
    fn reading<T, F>(&self, py: Python<'_>, work: F) -> PyResult<T>
    where
        T: Send,
        F: FnOnce(&(dyn SpatialIndex + Sync)) -> Result<T, GeoError> + Send,
    {
        run_core(py, || {
            let index = self.index.read().map_err(|_| CallError::Poisoned)?;
            work(index.as_spatial()).map_err(CallError::Geo)
        })
    }

    /// Like [`Self::reading`], with the index itself (for calls that need its type).
    fn reading_index<T, F>(&self, py: Python<'_>, work: F) -> PyResult<T>
    where
        T: Send,
        F: FnOnce(&Index) -> Result<T, GeoError> + Send,
    {
        run_core(py, || {
            let index = self.index.read().map_err(|_| CallError::Poisoned)?;
            work(&index).map_err(CallError::Geo)
        })
    }

    /// Runs `work` on the quadtree under the write lock, with the GIL released.
    fn updating<T, F>(&self, py: Python<'_>, what: &'static str, work: F) -> PyResult<T>
    where
        T: Send,
        F: FnOnce(&mut Quadtree) -> Result<T, GeoError> + Send,
    {
        run_core(py, || {
            let mut index = self.index.write().map_err(|_| CallError::Poisoned)?;
            match &mut *index {
                Index::Quadtree(tree) => work(tree).map_err(CallError::Geo),
                other => Err(CallError::QuadtreeOnly(other.kind(), what)),
            }
        })
    }
}

#[pymethods]
impl PyGeoIndex {
    #[new]
    #[pyo3(signature = (kind, ids, lats, lons, capacity = 100))]
    fn new(
        py: Python<'_>,
        kind: &str,
        ids: PyReadonlyArray1<'_, u64>,
        lats: PyReadonlyArray1<'_, f64>,
        lons: PyReadonlyArray1<'_, f64>,
        capacity: usize,
    ) -> PyResult<Self> {
        let (ids, lats, lons) = (
            slice(py, &ids, "ids")?,
            slice(py, &lats, "lats")?,
            slice(py, &lons, "lons")?,
        );
        let index = match kind {
            "geohash" => Index::Geohash(run_core(py, || GeohashIndex::new(ids, lats, lons))?),
            "cell" => Index::Cell(run_core(py, || CellIndex::new(ids, lats, lons))?),
            "quadtree" => {
                Index::Quadtree(run_core(py, || Quadtree::build(ids, lats, lons, capacity))?)
            }
            other => {
                return Err(to_py_err(
                    py,
                    Kind::InvalidArgument,
                    format!(
                        "unknown index kind {other:?}; use \"cell\", \"geohash\" or \"quadtree\""
                    ),
                ))
            }
        };
        Ok(PyGeoIndex {
            kind: index.kind(),
            index: RwLock::new(index),
        })
    }

    /// `"cell"`, `"geohash"` or `"quadtree"`.
    #[getter]
    fn kind(&self) -> &'static str {
        self.kind
    }

    fn __len__(&self, py: Python<'_>) -> PyResult<usize> {
        self.reading(py, |index| Ok(index.len()))
    }

    /// Bytes the index holds (``memory_bytes() / len(index)`` per point).
    fn memory_bytes(&self, py: Python<'_>) -> PyResult<usize> {
        self.reading(py, |index| Ok(index.memory_bytes()))
    }

    /// Points within `radius_m` of `(lat, lon)`: ids and distances, nearest first.
    #[pyo3(signature = (lat, lon, radius_m, limit = None, offset = 0))]
    fn radius<'py>(
        &self,
        py: Python<'py>,
        lat: f64,
        lon: f64,
        radius_m: f64,
        limit: Option<usize>,
        offset: usize,
    ) -> PyResult<Answer<'py>> {
        let hits = self.reading(py, |index| index.radius(lat, lon, radius_m, limit, offset))?;
        Ok(answer(py, hits))
    }

    /// The `k` points nearest to `(lat, lon)`: ids and distances, nearest first.
    fn knn<'py>(&self, py: Python<'py>, lat: f64, lon: f64, k: usize) -> PyResult<Answer<'py>> {
        let hits = self.reading(py, |index| index.knn(lat, lon, k))?;
        Ok(answer(py, hits))
    }

    /// Many radius queries at once: `(offsets, ids, distances)`, query `i`'s
    /// hits at `offsets[i]:offsets[i + 1]`. `radii_m` has one radius per
    /// query or one for all; `threads` splits the batch.
    #[pyo3(signature = (lats, lons, radii_m, limit = None, offset = 0, threads = 1))]
    #[allow(clippy::too_many_arguments)]
    fn radius_batch<'py>(
        &self,
        py: Python<'py>,
        lats: PyReadonlyArray1<'_, f64>,
        lons: PyReadonlyArray1<'_, f64>,
        radii_m: PyReadonlyArray1<'_, f64>,
        limit: Option<usize>,
        offset: usize,
        threads: usize,
    ) -> PyResult<BatchAnswer<'py>> {
        let (lats, lons, radii) = (
            slice(py, &lats, "lats")?,
            slice(py, &lons, "lons")?,
            slice(py, &radii_m, "radii_m")?,
        );
        let batch = self.reading_index(py, |index| {
            index.radius_batch_parallel(lats, lons, radii, limit, offset, threads)
        })?;
        Ok(batch_answer(py, batch))
    }

    /// Many k-nearest queries at once, answered as :meth:`radius_batch`.
    #[pyo3(signature = (lats, lons, k, threads = 1))]
    fn knn_batch<'py>(
        &self,
        py: Python<'py>,
        lats: PyReadonlyArray1<'_, f64>,
        lons: PyReadonlyArray1<'_, f64>,
        k: usize,
        threads: usize,
    ) -> PyResult<BatchAnswer<'py>> {
        let (lats, lons) = (slice(py, &lats, "lats")?, slice(py, &lons, "lons")?);
        let batch =
            self.reading_index(py, |index| index.knn_batch_parallel(lats, lons, k, threads))?;
        Ok(batch_answer(py, batch))
    }

    /// Adds points, or moves the ones already there (quadtree only), in one call;
    /// the last of repeated ids wins. Every point is checked before any changes.
    fn upsert(
        &self,
        py: Python<'_>,
        ids: PyReadonlyArray1<'_, u64>,
        lats: PyReadonlyArray1<'_, f64>,
        lons: PyReadonlyArray1<'_, f64>,
    ) -> PyResult<()> {
        let (ids, lats, lons) = (
            slice(py, &ids, "ids")?,
            slice(py, &lats, "lats")?,
            slice(py, &lons, "lons")?,
        );
        self.updating(py, "take updates", |tree| tree.upsert(ids, lats, lons))
    }

    /// Removes points (quadtree only); how many were there.
    fn remove_many(&self, py: Python<'_>, ids: PyReadonlyArray1<'_, u64>) -> PyResult<usize> {
        let ids = slice(py, &ids, "ids")?;
        self.updating(py, "remove points", |tree| Ok(tree.remove_many(ids)))
    }

    /// Adds a point (quadtree only); InvalidArgument if the id is there already.
    fn insert(&self, py: Python<'_>, id: u64, lat: f64, lon: f64) -> PyResult<()> {
        self.updating(py, "take inserts", |tree| tree.insert(id, lat, lon))
    }

    /// Moves a point to a new position (quadtree only).
    #[pyo3(name = "move")]
    fn move_point(&self, py: Python<'_>, id: u64, lat: f64, lon: f64) -> PyResult<()> {
        self.updating(py, "move points", |tree| tree.move_point(id, lat, lon))
    }

    /// Removes a point (quadtree only); whether it was there.
    fn remove(&self, py: Python<'_>, id: u64) -> PyResult<bool> {
        self.updating(py, "remove points", |tree| Ok(tree.remove(id)))
    }
}

type Coords<'py> = (Bound<'py, PyArray1<f64>>, Bound<'py, PyArray1<f64>>);

/// Geohash strings of `precision` characters (1-12) for arrays of points.
#[pyfunction]
fn geohash_encode(
    py: Python<'_>,
    lats: PyReadonlyArray1<'_, f64>,
    lons: PyReadonlyArray1<'_, f64>,
    precision: usize,
) -> PyResult<Vec<String>> {
    let (lats, lons) = (slice(py, &lats, "lats")?, slice(py, &lons, "lons")?);
    run_core(py, || geohash::encode_batch(lats, lons, precision))
}

/// The centres of geohash cells: `(lats, lons)`.
#[pyfunction]
fn geohash_decode(py: Python<'_>, hashes: Vec<String>) -> PyResult<Coords<'_>> {
    let cells = run_core(py, || geohash::decode_batch(&hashes))?;
    let (lats, lons): (Vec<f64>, Vec<f64>) = cells.iter().map(|cell| cell.center()).unzip();
    Ok((PyArray1::from_vec(py, lats), PyArray1::from_vec(py, lons)))
}

/// The 8 neighbours of a geohash cell, clockwise from north (None past a pole).
#[pyfunction]
fn geohash_neighbors(py: Python<'_>, hash: &str) -> PyResult<Vec<Option<String>>> {
    let neighbors = run_core(py, || geohash::neighbors(hash))?;
    Ok(neighbors.to_array().into_iter().collect())
}

/// Great-circle distance in metres between two points (haversine).
#[pyfunction]
fn haversine_m(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    sdi_geo::haversine_m(lat1, lon1, lat2, lon2)
}

pub fn register(parent: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = parent.py();
    let module = PyModule::new(py, "geo")?;
    module.add_class::<PyGeoIndex>()?;
    module.add_function(wrap_pyfunction!(geohash_encode, &module)?)?;
    module.add_function(wrap_pyfunction!(geohash_decode, &module)?)?;
    module.add_function(wrap_pyfunction!(geohash_neighbors, &module)?)?;
    module.add_function(wrap_pyfunction!(haversine_m, &module)?)?;
    module.add("EARTH_RADIUS_M", sdi_geo::EARTH_RADIUS_M)?;
    module.setattr("__name__", "sdi._rust.geo")?;
    parent.add_submodule(&module)?;
    py.import("sys")?
        .getattr("modules")?
        .set_item("sdi._rust.geo", &module)?;
    Ok(())
}
