//! Property tests: every index against brute-force haversine on random
//! points (poles, the antimeridian, duplicates, clusters), radius with
//! paging and k-nearest identical across the indexes, and the quadtree's
//! insert / move / remove against a model.

use std::collections::HashMap;

use proptest::prelude::*;
use sdi_geo::{
    haversine_m, snap, BruteForce, CellIndex, GeoError, GeohashIndex, Hit, Quadtree, SpatialIndex,
    HALF_CIRCUMFERENCE_M,
};

/// Places where things go wrong: poles, the antimeridian, the prime
/// meridian and equator, a cube corner of the cell index, cube-face edges.
const HOT: [(f64, f64); 9] = [
    (90.0, 0.0),
    (-90.0, 0.0),
    (0.0, 180.0),
    (45.0, -180.0),
    (0.0, 0.0),
    (35.264_389_682_754_654, 45.0),
    (0.0, 45.0),
    (89.0, 179.99),
    (-60.0, -135.0),
];

fn wrap_lon(lon: f64) -> f64 {
    if lon > 180.0 {
        lon - 360.0
    } else if lon < -180.0 {
        lon + 360.0
    } else {
        lon
    }
}

fn near(c: usize, dlat: f64, dlon: f64) -> (f64, f64) {
    let (lat, lon) = HOT[c % HOT.len()];
    ((lat + dlat).clamp(-90.0, 90.0), wrap_lon(lon + dlon))
}

/// A point: uniform, exactly on a pole or the antimeridian, or within
/// ~10 km (or ~10 m) of a hot spot.
fn arb_point() -> impl Strategy<Value = (f64, f64)> {
    prop_oneof![
        3 => (-90.0..=90.0f64, -180.0..=180.0f64),
        1 => (prop_oneof![Just(90.0), Just(-90.0)], -180.0..=180.0f64),
        1 => (-90.0..=90.0f64, prop_oneof![Just(180.0), Just(-180.0)]),
        4 => (0..HOT.len(), -0.1..0.1f64, -0.1..0.1f64).prop_map(|(c, a, b)| near(c, a, b)),
        2 => (0..HOT.len(), -1e-4..1e-4f64, -1e-4..1e-4f64).prop_map(|(c, a, b)| near(c, a, b)),
    ]
}

/// Points with unique ids, some sharing coordinates.
fn arb_points(max: usize) -> impl Strategy<Value = (Vec<u64>, Vec<f64>, Vec<f64>)> {
    (
        prop::collection::vec(arb_point(), 0..max),
        prop::collection::vec(any::<prop::sample::Index>(), 0..max / 4),
    )
        .prop_map(|(mut pts, dups)| {
            if !pts.is_empty() {
                for d in dups {
                    let p = pts[d.index(pts.len())];
                    pts.push(p);
                }
            }
            let ids = (0..pts.len() as u64)
                .map(|i| i.wrapping_mul(2_654_435_761) % (1 << 40))
                .collect();
            let (lats, lons) = pts.into_iter().unzip();
            (ids, lats, lons)
        })
}

fn arb_radius() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(0.0),
        0.0..50.0f64,
        500.0..20_000.0f64,
        20_000.0..2_000_000.0f64,
        2_000_000.0..21_000_000.0f64,
    ]
}

struct All {
    brute: BruteForce,
    others: Vec<(&'static str, Box<dyn SpatialIndex>)>,
}

fn build(ids: &[u64], lats: &[f64], lons: &[f64], capacity: usize) -> All {
    All {
        brute: BruteForce::new(ids, lats, lons).unwrap(),
        others: vec![
            (
                "geohash",
                Box::new(GeohashIndex::new(ids, lats, lons).unwrap()),
            ),
            (
                "quadtree",
                Box::new(Quadtree::build(ids, lats, lons, capacity).unwrap()),
            ),
            ("cell", Box::new(CellIndex::new(ids, lats, lons).unwrap())),
        ],
    }
}

/// The brute-force answer agrees with an independent haversine on the
/// snapped coordinates, except within a millimetre of the boundary.
fn check_against_haversine(
    expected: &[Hit],
    ids: &[u64],
    lats: &[f64],
    lons: &[f64],
    q: (f64, f64),
    r: f64,
) {
    let found: HashMap<u64, f64> = expected.iter().copied().collect();
    for i in 0..ids.len() {
        let (lat, lon) = snap(lats[i], lons[i]);
        let d = haversine_m(q.0, q.1, lat, lon);
        match found.get(&ids[i]) {
            Some(&got) => assert!(
                (got - d).abs() < 1e-3 && d <= r + 1e-3,
                "{got} vs {d}, r {r}"
            ),
            None => assert!(
                d > r - 1e-3,
                "point {} at {d} m missing from radius {r}",
                ids[i]
            ),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn radius_matches_brute_force(
        (ids, lats, lons) in arb_points(300),
        queries in prop::collection::vec((arb_point(), arb_radius()), 1..8),
        page in 1usize..40,
        capacity in 1usize..12,
    ) {
        let all = build(&ids, &lats, &lons, capacity);
        for &((lat, lon), r) in &queries {
            let expected = all.brute.radius(lat, lon, r, None, 0).unwrap();
            check_against_haversine(&expected, &ids, &lats, &lons, (lat, lon), r);
            for (name, index) in &all.others {
                let got = index.radius(lat, lon, r, None, 0).unwrap();
                prop_assert_eq!(&got, &expected, "{} radius {} at ({}, {})", name, r, lat, lon);
                let mut pages = Vec::new();
                let mut offset = 0;
                loop {
                    let p = index.radius(lat, lon, r, Some(page), offset).unwrap();
                    prop_assert!(p.len() <= page);
                    if p.is_empty() {
                        break;
                    }
                    offset += p.len();
                    pages.extend(p);
                }
                prop_assert_eq!(&pages, &expected, "{} paged by {}", name, page);
            }
        }
        // The batch form gives the same answers.
        let (qlats, qlons): (Vec<f64>, Vec<f64>) = queries.iter().map(|q| q.0).unzip();
        let radii: Vec<f64> = queries.iter().map(|q| q.1).collect();
        let expected = all.brute.radius_batch(&qlats, &qlons, &radii, Some(page), 1).unwrap();
        for (i, &((lat, lon), r)) in queries.iter().enumerate() {
            prop_assert_eq!(expected.get(i).unwrap(), all.brute.radius(lat, lon, r, Some(page), 1).unwrap());
        }
        for (name, index) in &all.others {
            prop_assert_eq!(&index.radius_batch(&qlats, &qlons, &radii, Some(page), 1).unwrap(), &expected, "{}", name);
        }
        let cells = CellIndex::new(&ids, &lats, &lons).unwrap();
        for threads in [0, 2, 3, 16] {
            prop_assert_eq!(&cells.radius_batch_parallel(&qlats, &qlons, &radii, Some(page), 1, threads).unwrap(), &expected);
            prop_assert_eq!(
                &cells.radius_batch_parallel(&qlats, &qlons, &radii[..1], None, 0, threads).unwrap(),
                &cells.radius_batch(&qlats, &qlons, &radii[..1], None, 0).unwrap()
            );
        }
    }

    #[test]
    fn knn_matches_brute_force(
        (ids, lats, lons) in arb_points(300),
        queries in prop::collection::vec(arb_point(), 1..8),
        k in prop_oneof![1usize..4, 4usize..40, 250usize..400],
        capacity in 1usize..12,
    ) {
        let all = build(&ids, &lats, &lons, capacity);
        let (qlats, qlons): (Vec<f64>, Vec<f64>) = queries.iter().copied().unzip();
        let expected = all.brute.knn_batch(&qlats, &qlons, k).unwrap();
        for (i, &(lat, lon)) in queries.iter().enumerate() {
            let e = expected.get(i).unwrap();
            prop_assert_eq!(e.len(), k.min(ids.len()));
            // Against an independent haversine: nothing closer was left out.
            if let Some(&(_, worst)) = e.last() {
                let closer = (0..ids.len())
                    .filter(|&j| {
                        let (a, b) = snap(lats[j], lons[j]);
                        haversine_m(lat, lon, a, b) < worst - 1e-3
                    })
                    .count();
                prop_assert!(closer < e.len().max(1));
            }
            for (name, index) in &all.others {
                prop_assert_eq!(&index.knn(lat, lon, k).unwrap(), &e, "{} k {} at ({}, {})", name, k, lat, lon);
            }
        }
        for (name, index) in &all.others {
            prop_assert_eq!(&index.knn_batch(&qlats, &qlons, k).unwrap(), &expected, "{}", name);
        }
        for threads in [0, 2, 3, 16] {
            prop_assert_eq!(&all.brute.knn_batch_parallel(&qlats, &qlons, k, threads).unwrap(), &expected);
        }
    }

    #[test]
    fn quadtree_updates_match_a_model(
        (ids, lats, lons) in arb_points(120),
        ops in prop::collection::vec((0u8..3, 0u64..64, arb_point()), 0..200),
        queries in prop::collection::vec((arb_point(), arb_radius()), 1..4),
        capacity in 1usize..9,
    ) {
        let mut tree = Quadtree::build(&ids, &lats, &lons, capacity).unwrap();
        let mut model: HashMap<u64, (f64, f64)> =
            ids.iter().zip(lats.iter().zip(&lons)).map(|(&id, (&a, &b))| (id, (a, b))).collect();
        for &(op, id, (lat, lon)) in &ops {
            match op {
                0 => {
                    let r = tree.insert(id, lat, lon);
                    if let std::collections::hash_map::Entry::Vacant(e) = model.entry(id) {
                        prop_assert!(r.is_ok());
                        e.insert((lat, lon));
                    } else {
                        prop_assert_eq!(r, Err(GeoError::DuplicateId(id)));
                    }
                }
                1 => {
                    let r = tree.move_point(id, lat, lon);
                    if let Some(p) = model.get_mut(&id) {
                        prop_assert!(r.is_ok());
                        *p = (lat, lon);
                    } else {
                        prop_assert_eq!(r, Err(GeoError::UnknownId(id)));
                    }
                }
                _ => prop_assert_eq!(tree.remove(id), model.remove(&id).is_some()),
            }
            prop_assert_eq!(tree.len(), model.len());
        }
        for (&id, &(lat, lon)) in &model {
            prop_assert_eq!(tree.get(id), Some(snap(lat, lon)));
        }
        let mut mids: Vec<u64> = model.keys().copied().collect();
        mids.sort_unstable();
        let mlats: Vec<f64> = mids.iter().map(|id| model[id].0).collect();
        let mlons: Vec<f64> = mids.iter().map(|id| model[id].1).collect();
        let brute = BruteForce::new(&mids, &mlats, &mlons).unwrap();
        for &((lat, lon), r) in &queries {
            prop_assert_eq!(tree.radius(lat, lon, r, None, 0).unwrap(), brute.radius(lat, lon, r, None, 0).unwrap());
            prop_assert_eq!(tree.knn(lat, lon, 7).unwrap(), brute.knn(lat, lon, 7).unwrap());
        }
        // A tree rebuilt from the model answers the same way.
        let rebuilt = Quadtree::build(&mids, &mlats, &mlons, capacity).unwrap();
        for &((lat, lon), r) in &queries {
            prop_assert_eq!(tree.radius(lat, lon, r, None, 0).unwrap(), rebuilt.radius(lat, lon, r, None, 0).unwrap());
        }
    }
}

fn indexes(ids: &[u64], lats: &[f64], lons: &[f64]) -> Vec<(&'static str, Box<dyn SpatialIndex>)> {
    let mut v = build(ids, lats, lons, 4).others;
    v.push(("brute", Box::new(BruteForce::new(ids, lats, lons).unwrap())));
    v
}

#[test]
fn empty_index() {
    for (name, index) in indexes(&[], &[], &[]) {
        assert_eq!(index.len(), 0, "{name}");
        assert!(index.is_empty());
        assert!(index
            .radius(0.0, 0.0, 1e9 / 1e3, None, 0)
            .unwrap()
            .is_empty());
        assert!(index
            .radius(90.0, 180.0, HALF_CIRCUMFERENCE_M * 2.0, None, 0)
            .unwrap()
            .is_empty());
        assert!(index.knn(0.0, 0.0, 5).unwrap().is_empty());
        assert_eq!(
            index.knn_batch(&[1.0, 2.0], &[3.0, 4.0], 5).unwrap().len(),
            2
        );
        assert!(index.knn_batch(&[], &[], 5).unwrap().is_empty());
    }
}

#[test]
fn radius_zero_half_circumference_and_k_past_n() {
    let ids = [10, 20, 30, 40];
    let lats = [0.0, 0.0, -90.0, 51.5];
    let lons = [0.0, 0.0, 77.0, -0.12];
    for (name, index) in indexes(&ids, &lats, &lons) {
        // Radius 0: the points exactly there, ties by id.
        assert_eq!(
            index.radius(0.0, 0.0, 0.0, None, 0).unwrap(),
            [(10, 0.0), (20, 0.0)],
            "{name}"
        );
        // The far side of the Earth: everything, the antipode last.
        let all = index
            .radius(0.0, 0.0, HALF_CIRCUMFERENCE_M, None, 0)
            .unwrap();
        assert_eq!(all.len(), 4, "{name}");
        let all = index.radius(0.0, 180.0, 1e9, None, 0).unwrap();
        assert_eq!(
            all.iter().map(|h| h.0).collect::<Vec<_>>(),
            [30, 40, 10, 20],
            "{name}"
        );
        assert!((all[3].1 - HALF_CIRCUMFERENCE_M).abs() < 1e-6);
        // k past n: every point, nearest first.
        let knn = index.knn(-89.0, 0.0, 100).unwrap();
        assert_eq!(
            knn.iter().map(|h| h.0).collect::<Vec<_>>(),
            [30, 10, 20, 40],
            "{name}"
        );
        // Paging past the end.
        assert!(index.radius(0.0, 0.0, 1e9, Some(2), 4).unwrap().is_empty());
        assert!(index.radius(0.0, 0.0, 1e9, Some(0), 0).unwrap().is_empty());
        assert_eq!(index.radius(0.0, 0.0, 1e9, Some(2), 3).unwrap().len(), 1);
        assert!(index.memory_bytes() > 0);
    }
}

#[test]
fn bad_input_is_an_error() {
    for (name, index) in indexes(&[1], &[0.0], &[0.0]) {
        let r = |lat, lon, radius| index.radius(lat, lon, radius, None, 0);
        let e = r(f64::NAN, 0.0, 1.0).unwrap_err().to_string();
        assert!(e.contains("latitude NaN"), "{name}: {e}");
        assert!(matches!(r(90.5, 0.0, 1.0), Err(GeoError::Latitude(_))));
        assert!(matches!(r(0.0, -180.5, 1.0), Err(GeoError::Longitude(_))));
        assert!(matches!(
            r(0.0, f64::INFINITY, 1.0),
            Err(GeoError::Longitude(_))
        ));
        assert!(matches!(r(0.0, 0.0, -1.0), Err(GeoError::Radius(_))));
        assert!(matches!(r(0.0, 0.0, f64::NAN), Err(GeoError::Radius(_))));
        assert!(matches!(
            r(0.0, 0.0, f64::INFINITY),
            Err(GeoError::Radius(_))
        ));
        assert_eq!(index.knn(0.0, 0.0, 0), Err(GeoError::ZeroK));
        assert_eq!(index.knn_batch(&[0.0], &[0.0], 0), Err(GeoError::ZeroK));
        assert!(matches!(
            index.knn(0.0, f64::NAN, 1),
            Err(GeoError::Longitude(_))
        ));
        assert!(matches!(
            index.knn_batch(&[0.0, 1.0], &[0.0], 1),
            Err(GeoError::LengthMismatch { .. })
        ));
        assert!(matches!(
            index.radius_batch(&[0.0, 1.0], &[0.0, 1.0], &[1.0, 2.0, 3.0], None, 0),
            Err(GeoError::LengthMismatch { .. })
        ));
        let e = index
            .radius_batch(&[0.0, 1.0], &[0.0, 1.0], &[1.0, -2.0], None, 0)
            .unwrap_err();
        assert!(matches!(e, GeoError::At { index: 1, .. }), "{e}");
        let e = index.knn_batch(&[0.0, 100.0], &[0.0, 1.0], 1).unwrap_err();
        assert_eq!(
            e.to_string(),
            "item 1: latitude 100 is not in [-90, 90] (WGS84 degrees; NaN is not allowed)"
        );
    }
    type Build = fn(&[u64], &[f64], &[f64]) -> Result<(), GeoError>;
    let builders: [Build; 4] = [
        |i, a, b| GeohashIndex::new(i, a, b).map(drop),
        |i, a, b| Quadtree::new(i, a, b).map(drop),
        |i, a, b| CellIndex::new(i, a, b).map(drop),
        |i, a, b| BruteForce::new(i, a, b).map(drop),
    ];
    for build in builders {
        assert!(matches!(
            build(&[1, 2], &[0.0], &[0.0, 0.0]),
            Err(GeoError::LengthMismatch { .. })
        ));
        assert!(matches!(
            build(&[1], &[0.0], &[0.0, 0.0]),
            Err(GeoError::LengthMismatch { .. })
        ));
        assert_eq!(
            build(&[1, 1], &[0.0, 1.0], &[0.0, 1.0]),
            Err(GeoError::DuplicateId(1))
        );
        assert!(matches!(
            build(&[1, 2], &[0.0, f64::NAN], &[0.0, 1.0]),
            Err(GeoError::At { index: 1, .. })
        ));
        assert!(matches!(
            build(&[1, 2], &[0.0, 0.0], &[0.0, 181.0]),
            Err(GeoError::At { index: 1, .. })
        ));
        assert!(build(&[1, 2], &[-90.0, 90.0], &[-180.0, 180.0]).is_ok());
    }
}

#[test]
fn memory_per_point_is_reported() {
    let n = 20_000u64;
    let ids: Vec<u64> = (0..n).collect();
    let lats: Vec<f64> = ids
        .iter()
        .map(|&i| ((i * 7919) % 1800) as f64 / 10.0 - 90.0)
        .collect();
    let lons: Vec<f64> = ids
        .iter()
        .map(|&i| ((i * 104_729) % 3600) as f64 / 10.0 - 180.0)
        .collect();
    for (name, index) in indexes(&ids, &lats, &lons) {
        let per_point = index.memory_bytes() as f64 / n as f64;
        assert!(per_point >= 16.0, "{name}: {per_point}");
        if name == "cell" || name == "geohash" {
            // 16 bytes of point, half a byte of block keys, a quarter of
            // radix table and 1.5 bytes of k-nearest box tree.
            assert!(per_point <= 18.5, "{name}: {per_point}");
        }
    }
}

#[test]
fn many_points_share_one_cell() {
    // More points with one curve key than a block holds: at the pole every
    // longitude maps to the same cell, and exact duplicates too.
    let n = 200u64;
    let ids: Vec<u64> = (0..n).collect();
    let lats: Vec<f64> = ids
        .iter()
        .map(|&i| {
            if i % 2 == 0 {
                -90.0
            } else {
                -89.9999999 + i as f64 * 1e-9
            }
        })
        .collect();
    let lons: Vec<f64> = ids
        .iter()
        .map(|&i| (i as f64 * 37.0) % 360.0 - 180.0)
        .collect();
    let brute = BruteForce::new(&ids, &lats, &lons).unwrap();
    for (name, index) in indexes(&ids, &lats, &lons) {
        for r in [0.0, 1e-6, 1.0, 9.98, 50.0] {
            assert_eq!(
                index.radius(-90.0, 0.096, r, None, 0).unwrap(),
                brute.radius(-90.0, 0.096, r, None, 0).unwrap(),
                "{name} {r}"
            );
        }
        assert_eq!(
            index.knn(-90.0, 0.0, 150).unwrap(),
            brute.knn(-90.0, 0.0, 150).unwrap(),
            "{name}"
        );
    }
}

#[test]
fn dense_clusters_match_brute_force() {
    // Enough points per cluster that the coverings refine deep.
    let mut state = 0x1234_5678_9abc_def0u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let (mut lats, mut lons) = (Vec::new(), Vec::new());
    for i in 0..20_000usize {
        let (lat, lon) = HOT[i % HOT.len()];
        let spread = if i % 3 == 0 { 0.05 } else { 0.001 };
        lats.push((lat + (next() - 0.5) * spread).clamp(-90.0, 90.0));
        lons.push(wrap_lon(lon + (next() - 0.5) * spread * 4.0));
    }
    let ids: Vec<u64> = (0..lats.len() as u64).rev().collect();
    let brute = BruteForce::new(&ids, &lats, &lons).unwrap();
    let all = indexes(&ids, &lats, &lons);
    for q in 0..60usize {
        let (lat, lon) = HOT[q % HOT.len()];
        let (lat, lon) = (
            (lat + (next() - 0.5) * 0.01).clamp(-90.0, 90.0),
            wrap_lon(lon + (next() - 0.5) * 0.04),
        );
        for r in [10.0, 100.0, 1_000.0, 5_000.0] {
            let expected = brute.radius(lat, lon, r, Some(50), 3).unwrap();
            for (name, index) in &all {
                assert_eq!(
                    index.radius(lat, lon, r, Some(50), 3).unwrap(),
                    expected,
                    "{name} {r} ({lat}, {lon})"
                );
            }
        }
        let expected = brute.knn(lat, lon, 25).unwrap();
        for (name, index) in &all {
            assert_eq!(
                index.knn(lat, lon, 25).unwrap(),
                expected,
                "{name} ({lat}, {lon})"
            );
        }
    }
}

#[test]
fn large_batches_match_brute_force() {
    // Enough points for a box tree of three heights, and batches large
    // enough to run in locality order: the answers must not change.
    let mut state = 0x0ddb_a11c_0ffe_e123u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let (mut lats, mut lons) = (Vec::new(), Vec::new());
    for i in 0..60_000usize {
        if i % 2 == 0 {
            lats.push((2.0 * next() - 1.0).asin().to_degrees());
            lons.push(next() * 360.0 - 180.0);
        } else if i % 7 == 1 && i > 1 {
            // A duplicate of an earlier point.
            lats.push(lats[i / 2]);
            lons.push(lons[i / 2]);
        } else {
            let (lat, lon) = HOT[i % HOT.len()];
            lats.push((lat + (next() - 0.5) * 0.2).clamp(-90.0, 90.0));
            lons.push(wrap_lon(lon + (next() - 0.5) * 0.8));
        }
    }
    let ids: Vec<u64> = (0..lats.len() as u64).map(|i| i * 7 % 60_000).collect();
    let brute = BruteForce::new(&ids, &lats, &lons).unwrap();
    let others = build(&ids, &lats, &lons, 16).others;
    let (mut qlats, mut qlons) = (Vec::new(), Vec::new());
    for q in 0..120usize {
        let (lat, lon) = if q % 3 == 0 {
            (
                (2.0 * next() - 1.0).asin().to_degrees(),
                next() * 360.0 - 180.0,
            )
        } else {
            let (lat, lon) = HOT[q % HOT.len()];
            (
                (lat + (next() - 0.5) * 0.3).clamp(-90.0, 90.0),
                wrap_lon(lon + (next() - 0.5) * 1.2),
            )
        };
        qlats.push(lat);
        qlons.push(lon);
    }
    for k in [1usize, 10, 40] {
        let expected: Vec<Vec<Hit>> = qlats
            .iter()
            .zip(&qlons)
            .map(|(&lat, &lon)| brute.knn(lat, lon, k).unwrap())
            .collect();
        for (name, index) in &others {
            let batch = index.knn_batch(&qlats, &qlons, k).unwrap();
            for (i, e) in expected.iter().enumerate() {
                assert_eq!(&batch.get(i).unwrap(), e, "{name} k {k} query {i}");
            }
        }
    }
    let cells = CellIndex::new(&ids, &lats, &lons).unwrap();
    let batch = cells.knn_batch_parallel(&qlats, &qlons, 10, 2).unwrap();
    for (i, (&lat, &lon)) in qlats.iter().zip(&qlons).enumerate() {
        assert_eq!(batch.get(i).unwrap(), brute.knn(lat, lon, 10).unwrap());
    }
    for r in [1_000.0, 30_000.0] {
        let expected: Vec<Vec<Hit>> = qlats
            .iter()
            .zip(&qlons)
            .map(|(&lat, &lon)| brute.radius(lat, lon, r, Some(30), 2).unwrap())
            .collect();
        for (name, index) in &others {
            let batch = index
                .radius_batch(&qlats, &qlons, &[r], Some(30), 2)
                .unwrap();
            for (i, e) in expected.iter().enumerate() {
                assert_eq!(&batch.get(i).unwrap(), e, "{name} r {r} query {i}");
            }
        }
    }
}
