//! The reference index: every query looks at every point.

use crate::query::{check_points, Query};
use crate::{vec_bytes, GeoError, Scratch};

/// A flat list of points scanned in full by every query: the oracle the
/// tests hold the other indexes to, and fine for a few thousand points.
/// Same storage, distances and ordering as the other indexes.
#[derive(Clone, Debug, Default)]
pub struct BruteForce {
    points: Vec<(u64, i32, i32)>,
}

impl BruteForce {
    /// Hold the points `(ids[i], lats[i], lons[i])`; ids must be unique.
    pub fn new(ids: &[u64], lats: &[f64], lons: &[f64]) -> Result<BruteForce, GeoError> {
        let fixed = check_points(ids, lats, lons)?;
        let points = ids
            .iter()
            .zip(fixed)
            .map(|(&id, (lat, lon))| (id, lat, lon))
            .collect();
        Ok(BruteForce { points })
    }

    fn count(&self) -> usize {
        self.points.len()
    }

    fn bytes(&self) -> usize {
        std::mem::size_of::<Self>() + vec_bytes(&self.points)
    }

    fn collect(&self, q: &Query, scratch: &mut Scratch) {
        for &(id, lat, lon) in &self.points {
            let d = q.distance(lat, lon);
            if d <= q.radius_m {
                scratch.hits.push((id, d));
            }
        }
    }

    fn knn_collect(&self, q: &Query, k: usize, _key: u64, scratch: &mut Scratch) {
        scratch.hits.extend(
            self.points
                .iter()
                .map(|&(id, lat, lon)| (id, q.distance(lat, lon))),
        );
        if scratch.hits.len() > k {
            scratch
                .hits
                .select_nth_unstable_by(k - 1, crate::query::cmp_hit);
            scratch.hits.truncate(k);
        }
    }
}

impl crate::Locality for BruteForce {}

crate::impl_spatial_index!(BruteForce);
