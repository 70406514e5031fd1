//! A region quadtree over latitude and longitude with updates in place.
//!
//! The root is the whole `[-90, 90] x [-180, 180]` rectangle in fixed point;
//! a node splits at the middle of both ranges into four children. Points
//! live in the leaves (16 bytes each: id and fixed-point coordinates); a
//! leaf splits when it holds more than `capacity` points (100 by default,
//! as in the book), unless all its points sit at one spot or it is
//! [`MAX_DEPTH`] deep, so any number of points can share a position. An
//! inner node keeps the count of points below it and folds back into a
//! leaf when a removal leaves it with at most `capacity / 2` (the slack
//! keeps a point going back and forth from splitting and folding each
//! time). A hash map from id to position finds a point's leaf for
//! [`Quadtree::move_point`] and [`Quadtree::remove`].
//!
//! A radius query walks the nodes whose rectangle meets the circle's
//! latitude band and longitude window (which wraps at the antimeridian and
//! spans every longitude when a pole is inside). A k-nearest query takes
//! the k-th nearest point of the leaf under the query as an upper bound and
//! grows radius queries up to it; when that leaf holds fewer than k points
//! it visits nodes best first by an exact lower bound of the great-circle
//! distance to their rectangle and stops when the next node is farther
//! than the k-th point found.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

use crate::query::{check_point, check_points, cmp_hit, to_fixed, Query, HALF_TURN};
use crate::{vec_bytes, GeoError, Hit, Scratch};

/// The deepest a leaf goes (cells of 180 / 2^32 degree, under 1e-7 degree:
/// finer than the stored coordinates).
pub const MAX_DEPTH: u32 = 32;
/// The book's leaf capacity.
pub const DEFAULT_CAPACITY: usize = 100;

/// A point in a leaf.
#[derive(Clone, Copy, Debug)]
struct Entry {
    id: u64,
    lat: i32,
    lon: i32,
}

#[derive(Clone, Debug)]
enum Node {
    Leaf(Vec<Entry>),
    Inner { children: [u32; 4], count: usize },
}

/// A node's rectangle in fixed point, half-open `[lat0, lat1) x [lon0, lon1)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Rect {
    lat0: i64,
    lat1: i64,
    lon0: i64,
    lon1: i64,
}

const ROOT: Rect = Rect {
    lat0: -HALF_TURN / 2,
    lat1: HALF_TURN / 2 + 1,
    lon0: -HALF_TURN,
    lon1: HALF_TURN + 1,
};

impl Rect {
    fn mid(&self) -> (i64, i64) {
        (
            self.lat0 + (self.lat1 - self.lat0) / 2,
            self.lon0 + (self.lon1 - self.lon0) / 2,
        )
    }

    /// The child (0..4) holding a point.
    fn quadrant(&self, lat: i32, lon: i32) -> usize {
        let (ml, mo) = self.mid();
        usize::from(i64::from(lat) >= ml) * 2 + usize::from(i64::from(lon) >= mo)
    }

    fn child(&self, quadrant: usize) -> Rect {
        let (ml, mo) = self.mid();
        let (lat0, lat1) = if quadrant & 2 == 0 {
            (self.lat0, ml)
        } else {
            (ml, self.lat1)
        };
        let (lon0, lon1) = if quadrant & 1 == 0 {
            (self.lon0, mo)
        } else {
            (mo, self.lon1)
        };
        Rect {
            lat0,
            lat1,
            lon0,
            lon1,
        }
    }

    /// Inclusive i32 bounds `(lat0, lat1, lon0, lon1)`.
    fn inclusive(&self) -> (i32, i32, i32, i32) {
        let c = |x: i64| x.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32;
        (
            c(self.lat0),
            c(self.lat1 - 1),
            c(self.lon0),
            c(self.lon1 - 1),
        )
    }
}

/// A multiplicative hash for u64 ids (ids are not attacker-chosen keys of
/// a long-lived public table here; SipHash would cost more than the tree).
#[derive(Default, Clone, Copy)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }

    fn write_u64(&mut self, x: u64) {
        let h = (x ^ self.0).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = h ^ (h >> 29);
    }
}

type IdMap = HashMap<u64, (i32, i32), BuildHasherDefault<IdHasher>>;

/// A region quadtree over latitude and longitude with insert, move and
/// remove in place (see the module docs).
#[derive(Clone, Debug)]
pub struct Quadtree {
    nodes: Vec<Node>,
    free: Vec<u32>,
    positions: IdMap,
    capacity: usize,
}

impl Default for Quadtree {
    /// An empty tree with the book's leaf capacity (100).
    fn default() -> Self {
        Quadtree {
            nodes: vec![Node::Leaf(Vec::new())],
            free: Vec::new(),
            positions: IdMap::default(),
            capacity: DEFAULT_CAPACITY,
        }
    }
}

impl Quadtree {
    /// An empty tree whose leaves split past `capacity` points (`>= 1`).
    pub fn with_capacity(capacity: usize) -> Result<Quadtree, GeoError> {
        if capacity == 0 {
            return Err(GeoError::Capacity);
        }
        Ok(Quadtree {
            capacity,
            ..Quadtree::default()
        })
    }

    /// A tree of the points `(ids[i], lats[i], lons[i])` with the book's
    /// leaf capacity (100); ids must be unique.
    pub fn new(ids: &[u64], lats: &[f64], lons: &[f64]) -> Result<Quadtree, GeoError> {
        Quadtree::build(ids, lats, lons, DEFAULT_CAPACITY)
    }

    /// A tree of the points with leaves of at most `capacity` points.
    pub fn build(
        ids: &[u64],
        lats: &[f64],
        lons: &[f64],
        capacity: usize,
    ) -> Result<Quadtree, GeoError> {
        let mut tree = Quadtree::with_capacity(capacity)?;
        let fixed = check_points(ids, lats, lons)?;
        tree.positions.reserve(ids.len());
        for (&id, (lat, lon)) in ids.iter().zip(fixed) {
            tree.positions.insert(id, (lat, lon));
            tree.place(Entry { id, lat, lon });
        }
        for node in &mut tree.nodes {
            if let Node::Leaf(v) = node {
                v.shrink_to_fit();
            }
        }
        Ok(tree)
    }

    /// The leaf capacity.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Whether `id` is in the tree.
    pub fn contains(&self, id: u64) -> bool {
        self.positions.contains_key(&id)
    }

    /// The stored position `(lat, lon)` of `id` (see [`crate::snap`]).
    pub fn get(&self, id: u64) -> Option<(f64, f64)> {
        self.positions
            .get(&id)
            .map(|&(lat, lon)| (crate::query::to_deg(lat), crate::query::to_deg(lon)))
    }

    /// Add a point; its id must not be in the tree yet.
    pub fn insert(&mut self, id: u64, lat: f64, lon: f64) -> Result<(), GeoError> {
        check_point(lat, lon)?;
        if self.positions.contains_key(&id) {
            return Err(GeoError::DuplicateId(id));
        }
        if u32::try_from(self.positions.len() + 1).is_err() {
            return Err(GeoError::TooManyPoints(self.positions.len() + 1));
        }
        let (lat, lon) = (to_fixed(lat), to_fixed(lon));
        self.positions.insert(id, (lat, lon));
        self.place(Entry { id, lat, lon });
        Ok(())
    }

    /// Move point `id` to `(lat, lon)`.
    pub fn move_point(&mut self, id: u64, lat: f64, lon: f64) -> Result<(), GeoError> {
        check_point(lat, lon)?;
        if !self.positions.contains_key(&id) {
            return Err(GeoError::UnknownId(id));
        }
        self.remove(id);
        self.insert(id, lat, lon)
    }

    /// Add points, or move the ones already in the tree, in one call (the
    /// last of repeated ids wins). Every point is checked before anything
    /// changes, so a bad one leaves the tree as it was.
    pub fn upsert(&mut self, ids: &[u64], lats: &[f64], lons: &[f64]) -> Result<(), GeoError> {
        crate::query::check_lengths("lats", ids.len(), lats.len(), "ids")?;
        crate::query::check_lengths("lons", ids.len(), lons.len(), "ids")?;
        for (i, (&lat, &lon)) in lats.iter().zip(lons).enumerate() {
            check_point(lat, lon).map_err(|e| e.at(i))?;
        }
        let fresh = ids
            .iter()
            .filter(|id| !self.positions.contains_key(id))
            .count();
        if u32::try_from(self.positions.len() + fresh).is_err() {
            return Err(GeoError::TooManyPoints(self.positions.len() + fresh));
        }
        for ((&id, &lat), &lon) in ids.iter().zip(lats).zip(lons) {
            self.remove(id);
            let (lat, lon) = (to_fixed(lat), to_fixed(lon));
            self.positions.insert(id, (lat, lon));
            self.place(Entry { id, lat, lon });
        }
        Ok(())
    }

    /// Remove every point of `ids` that is in the tree; how many were.
    pub fn remove_many(&mut self, ids: &[u64]) -> usize {
        ids.iter().filter(|&&id| self.remove(id)).count()
    }

    /// Remove point `id`; returns whether it was there.
    pub fn remove(&mut self, id: u64) -> bool {
        let Some((lat, lon)) = self.positions.remove(&id) else {
            return false;
        };
        let mut path: Vec<u32> = Vec::with_capacity(MAX_DEPTH as usize + 1);
        let (mut node, mut rect) = (0u32, ROOT);
        loop {
            path.push(node);
            match &mut self.nodes[node as usize] {
                Node::Inner { children, count } => {
                    *count -= 1;
                    let q = rect.quadrant(lat, lon);
                    node = children[q];
                    rect = rect.child(q);
                }
                Node::Leaf(entries) => {
                    if let Some(at) = entries.iter().position(|e| e.id == id) {
                        entries.swap_remove(at);
                    }
                    break;
                }
            }
        }
        // Fold the topmost inner node on the path that got small enough.
        let fold = path.iter().copied().find(|&n| {
            matches!(self.nodes[n as usize], Node::Inner { count, .. } if count <= self.capacity / 2)
        });
        if let Some(n) = fold {
            let mut entries = Vec::new();
            self.drain_into(n, &mut entries);
            self.nodes[n as usize] = Node::Leaf(entries);
        }
        true
    }

    /// Move every point under `node` into `out` and free `node`'s descendants.
    fn drain_into(&mut self, node: u32, out: &mut Vec<Entry>) {
        match std::mem::replace(&mut self.nodes[node as usize], Node::Leaf(Vec::new())) {
            Node::Leaf(entries) => out.extend(entries),
            Node::Inner { children, .. } => {
                for c in children {
                    self.drain_into(c, out);
                    self.free.push(c);
                }
            }
        }
    }

    fn alloc(&mut self, node: Node) -> u32 {
        if let Some(i) = self.free.pop() {
            self.nodes[i as usize] = node;
            i
        } else {
            self.nodes.push(node);
            // At most 4 nodes per point plus the root fit u32: points are
            // bounded by u32::MAX and empty leaves only come with splits.
            (self.nodes.len() - 1) as u32
        }
    }

    /// Put an entry (already in `positions`) into its leaf, splitting it
    /// if it overflows.
    fn place(&mut self, e: Entry) {
        let (mut node, mut rect, mut depth) = (0u32, ROOT, 0u32);
        loop {
            match &mut self.nodes[node as usize] {
                Node::Inner { children, count } => {
                    *count += 1;
                    let q = rect.quadrant(e.lat, e.lon);
                    node = children[q];
                    rect = rect.child(q);
                    depth += 1;
                }
                Node::Leaf(entries) => {
                    entries.push(e);
                    if entries.len() > self.capacity {
                        self.split(node, rect, depth);
                    }
                    return;
                }
            }
        }
    }

    /// Split an overflowing leaf (and any child that still overflows).
    fn split(&mut self, node: u32, rect: Rect, depth: u32) {
        let Node::Leaf(entries) = &self.nodes[node as usize] else {
            return;
        };
        let first = entries[0];
        if depth >= MAX_DEPTH
            || entries
                .iter()
                .all(|e| e.lat == first.lat && e.lon == first.lon)
        {
            return;
        }
        let Node::Leaf(entries) =
            std::mem::replace(&mut self.nodes[node as usize], Node::Leaf(Vec::new()))
        else {
            return;
        };
        let count = entries.len();
        let mut parts: [Vec<Entry>; 4] = Default::default();
        for e in entries {
            parts[rect.quadrant(e.lat, e.lon)].push(e);
        }
        let mut children = [0u32; 4];
        for (q, part) in parts.into_iter().enumerate() {
            children[q] = self.alloc(Node::Leaf(part));
        }
        self.nodes[node as usize] = Node::Inner { children, count };
        for (q, &c) in children.iter().enumerate() {
            if matches!(&self.nodes[c as usize], Node::Leaf(v) if v.len() > self.capacity) {
                self.split(c, rect.child(q), depth + 1);
            }
        }
    }

    /// The depth of the deepest leaf (0 for a lone root leaf).
    pub fn depth(&self) -> u32 {
        let mut deepest = 0;
        let mut stack = vec![(0u32, 0u32)];
        while let Some((n, d)) = stack.pop() {
            deepest = deepest.max(d);
            if let Node::Inner { children, .. } = &self.nodes[n as usize] {
                stack.extend(children.iter().map(|&c| (c, d + 1)));
            }
        }
        deepest
    }

    fn count(&self) -> usize {
        self.positions.len()
    }

    fn bytes(&self) -> usize {
        let leaves: usize = self
            .nodes
            .iter()
            .map(|n| match n {
                Node::Leaf(v) => vec_bytes(v),
                Node::Inner { .. } => 0,
            })
            .sum();
        // hashbrown: a power-of-two number of buckets at most 7/8 full,
        // one control byte per bucket plus a group of 16.
        let buckets = if self.positions.capacity() == 0 {
            0
        } else {
            (self.positions.capacity() * 8 / 7).next_power_of_two()
        };
        let map = buckets * (std::mem::size_of::<(u64, (i32, i32))>() + 1) + 16;
        std::mem::size_of::<Self>() + vec_bytes(&self.nodes) + vec_bytes(&self.free) + leaves + map
    }

    fn collect(&self, q: &Query, scratch: &mut Scratch) {
        let mut stack: Vec<(u32, Rect)> = Vec::with_capacity(64);
        stack.push((0, ROOT));
        while let Some((n, rect)) = stack.pop() {
            match &self.nodes[n as usize] {
                Node::Leaf(entries) => {
                    for e in entries {
                        if let Some(d) = q.within(e.lat, e.lon) {
                            scratch.hits.push((e.id, d));
                        }
                    }
                }
                Node::Inner { children, .. } => {
                    for (i, &c) in children.iter().enumerate() {
                        let r = rect.child(i);
                        let (a, b, lo, hi) = r.inclusive();
                        if a <= b && lo <= hi && q.box_overlaps(a, b, lo, hi) {
                            stack.push((c, r));
                        }
                    }
                }
            }
        }
    }

    /// The k nearest: when the leaf under the query holds at least k
    /// points, the k-th smallest of their distances bounds the answer, and
    /// radius queries (cheap box walks) grow from the smaller of that bound
    /// and the mean-density estimate until one holds k points (the one at
    /// the bound always does). Otherwise a best-first search.
    fn knn_collect(&self, q: &Query, k: usize, _key: u64, scratch: &mut Scratch) {
        let n = self.positions.len();
        let (qlat, qlon) = (to_fixed(q.lat), to_fixed(q.lon));
        let (mut node, mut rect) = (0u32, ROOT);
        let leaf = loop {
            match &self.nodes[node as usize] {
                Node::Inner { children, .. } => {
                    let c = rect.quadrant(qlat, qlon);
                    node = children[c];
                    rect = rect.child(c);
                }
                Node::Leaf(entries) => break entries,
            }
        };
        if k >= n || leaf.len() < k {
            self.best_first(q, k, scratch);
            return;
        }
        scratch.dists.clear();
        scratch
            .dists
            .extend(leaf.iter().map(|e| q.distance(e.lat, e.lon)));
        let (_, &mut r_ub, _) = scratch.dists.select_nth_unstable_by(k - 1, f64::total_cmp);
        let guess = 1.5 * 2.0 * crate::EARTH_RADIUS_M * (k as f64 / n as f64).sqrt();
        let mut r = r_ub.min(guess);
        loop {
            let rq = Query::unchecked(q.lat, q.lon, r);
            scratch.hits.clear();
            self.collect(&rq, scratch);
            if scratch.hits.len() >= k || r >= r_ub {
                break;
            }
            r = (r * 2.0).min(r_ub);
        }
        if scratch.hits.len() > k {
            scratch.hits.select_nth_unstable_by(k - 1, cmp_hit);
            scratch.hits.truncate(k);
        }
    }

    fn best_first(&self, q: &Query, k: usize, scratch: &mut Scratch) {
        // Best first: nodes by the lower bound of their distance; `best`
        // is a max-heap of the k best hits so far.
        let mut nodes: BinaryHeap<Reverse<(OrdF64, u32, Rect)>> = BinaryHeap::new();
        let mut best: BinaryHeap<HitOrd> =
            BinaryHeap::with_capacity(k.min(self.positions.len()) + 1);
        nodes.push(Reverse((OrdF64(0.0), 0, ROOT)));
        while let Some(Reverse((OrdF64(lb), n, rect))) = nodes.pop() {
            if best.len() == k && best.peek().is_some_and(|w| lb > w.0 .1) {
                break;
            }
            match &self.nodes[n as usize] {
                Node::Leaf(entries) => {
                    for e in entries {
                        let hit = HitOrd((e.id, q.distance(e.lat, e.lon)));
                        if best.len() < k {
                            best.push(hit);
                        } else if best.peek().is_some_and(|w| hit < *w) {
                            best.pop();
                            best.push(hit);
                        }
                    }
                }
                Node::Inner { children, .. } => {
                    for (i, &c) in children.iter().enumerate() {
                        let r = rect.child(i);
                        let (a, b, lo, hi) = r.inclusive();
                        if a > b || lo > hi {
                            continue;
                        }
                        let lb = q.box_lower_bound(a, b, lo, hi);
                        if best.len() == k && best.peek().is_some_and(|w| lb > w.0 .1) {
                            continue;
                        }
                        nodes.push(Reverse((OrdF64(lb), c, r)));
                    }
                }
            }
        }
        scratch.hits.extend(best.into_iter().map(|h| h.0));
    }
}

impl crate::Locality for Quadtree {}

crate::impl_spatial_index!(Quadtree);

/// f64 with a total order.
#[derive(Clone, Copy, Debug)]
struct OrdF64(f64);

impl PartialEq for OrdF64 {
    fn eq(&self, other: &Self) -> bool {
        self.0.total_cmp(&other.0).is_eq()
    }
}
impl Eq for OrdF64 {}
impl PartialOrd for OrdF64 {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for OrdF64 {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// A hit ordered as results are (distance, then id).
#[derive(Clone, Copy, Debug)]
struct HitOrd(Hit);

impl PartialEq for HitOrd {
    fn eq(&self, other: &Self) -> bool {
        cmp_hit(&self.0, &other.0).is_eq()
    }
}
impl Eq for HitOrd {}
impl PartialOrd for HitOrd {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for HitOrd {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        cmp_hit(&self.0, &other.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SpatialIndex;

    #[test]
    fn splits_and_folds() {
        let n = 1000u64;
        let ids: Vec<u64> = (0..n).collect();
        let lats: Vec<f64> = ids
            .iter()
            .map(|&i| (i as f64 * 0.37) % 180.0 - 90.0)
            .collect();
        let lons: Vec<f64> = ids
            .iter()
            .map(|&i| (i as f64 * 7.3) % 360.0 - 180.0)
            .collect();
        let mut t = Quadtree::build(&ids, &lats, &lons, 8).unwrap();
        assert!(t.depth() > 2);
        for &i in &ids[4..] {
            assert!(t.remove(i));
        }
        assert!(!t.remove(10));
        assert_eq!(t.len(), 4);
        assert_eq!(t.depth(), 0, "folded back into one leaf");
        assert_eq!(t.nodes.len() - t.free.len(), 1);
        assert_eq!(t.knn(0.0, 0.0, 100).unwrap().len(), 4);
    }

    #[test]
    fn upsert_and_remove_many_in_batches() {
        let mut t = Quadtree::default();
        t.upsert(&[1, 2, 3], &[10.0, 20.0, 30.0], &[1.0, 2.0, 3.0])
            .unwrap();
        // 2 moves, 4 is new, and the last of a repeated id wins.
        t.upsert(&[2, 4, 4], &[-20.0, 40.0, 41.0], &[-2.0, 4.0, 5.0])
            .unwrap();
        assert_eq!(t.len(), 4);
        assert_eq!(t.get(2), Some((-20.0, -2.0)));
        assert_eq!(t.get(4), Some((41.0, 5.0)));
        // A bad point anywhere changes nothing.
        let bad = t.upsert(&[5, 1], &[0.0, 91.0], &[0.0, 0.0]);
        assert!(matches!(bad, Err(GeoError::At { index: 1, .. })));
        assert!(!t.contains(5));
        assert_eq!(t.get(1), Some((10.0, 1.0)));
        assert!(t.upsert(&[6], &[0.0, 1.0], &[0.0]).is_err());
        assert_eq!(t.remove_many(&[1, 3, 99, 1]), 2);
        assert_eq!(t.len(), 2);
        let near = t.knn(-20.0, -2.0, 1).unwrap();
        assert_eq!(near[0].0, 2);
    }

    #[test]
    fn one_spot_many_points() {
        let ids: Vec<u64> = (0..500).collect();
        let lats = vec![12.5; 500];
        let lons = vec![-7.25; 500];
        let mut t = Quadtree::build(&ids, &lats, &lons, 4).unwrap();
        assert_eq!(t.depth(), 0, "identical points do not split");
        // One quantum apart: splits down to the depth cap, no further.
        t.insert(1000, 12.5 + 1e-7, -7.25).unwrap();
        t.insert(1001, 12.5, -7.25 + 1e-7).unwrap();
        assert!(t.depth() <= MAX_DEPTH);
        let hits = t.radius(12.5, -7.25, 0.0, None, 0).unwrap();
        assert_eq!(hits.len(), 500);
        assert_eq!(t.radius(12.5, -7.25, 0.02, None, 0).unwrap().len(), 502);
        assert_eq!(
            t.knn(12.5, -7.25, 3)
                .unwrap()
                .iter()
                .map(|h| h.0)
                .collect::<Vec<_>>(),
            [0, 1, 2]
        );
    }

    #[test]
    fn bad_updates() {
        let mut t = Quadtree::default();
        assert!(matches!(
            Quadtree::with_capacity(0),
            Err(GeoError::Capacity)
        ));
        t.insert(1, 0.0, 0.0).unwrap();
        assert_eq!(t.insert(1, 1.0, 1.0), Err(GeoError::DuplicateId(1)));
        assert_eq!(t.move_point(2, 1.0, 1.0), Err(GeoError::UnknownId(2)));
        assert_eq!(t.move_point(1, 91.0, 1.0), Err(GeoError::Latitude(91.0)));
        assert_eq!(t.get(1), Some((0.0, 0.0)));
        t.move_point(1, -45.0, 179.5).unwrap();
        assert_eq!(t.get(1), Some((-45.0, 179.5)));
        assert!(t.contains(1));
        assert_eq!(t.len(), 1);
    }
}
