//! Criterion benches: build, radius (1 km and 5 km) and k-nearest (k = 10)
//! over 1M points, uniform on the sphere and clustered like cities, for
//! the three indexes. Queries are drawn from the same distribution as the
//! points (so a clustered query lands in a city); throughput is queries
//! per second. Each bench's default run is short (10 samples, 2 s); set
//! `GEO_BENCH_POINTS` to change the number of points.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sdi_geo::{CellIndex, GeohashIndex, Quadtree, SpatialIndex};

/// xorshift64*: deterministic data without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        let (u, v) = (self.unit().max(1e-300), self.unit());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

/// Uniform on the sphere.
fn uniform(n: usize, seed: u64) -> (Vec<f64>, Vec<f64>) {
    let mut rng = Rng(seed);
    (0..n)
        .map(|_| {
            let lat = (2.0 * rng.unit() - 1.0).asin().to_degrees();
            let lon = rng.unit() * 360.0 - 180.0;
            (lat, lon)
        })
        .unzip()
}

/// 2,000 "cities" with Zipf-like sizes, points spread ~N(0, 10 km) around them.
fn clustered(n: usize, seed: u64) -> (Vec<f64>, Vec<f64>) {
    let mut rng = Rng(seed);
    let (clat, clon) = uniform(2_000, 0xC17E5);
    let weights: Vec<f64> = (1..=clat.len()).map(|r| 1.0 / r as f64).collect();
    let total: f64 = weights.iter().sum();
    let mut cumulative = Vec::with_capacity(weights.len());
    let mut acc = 0.0;
    for w in &weights {
        acc += w / total;
        cumulative.push(acc);
    }
    (0..n)
        .map(|_| {
            let c = cumulative
                .partition_point(|&x| x < rng.unit())
                .min(clat.len() - 1);
            let lat = (clat[c] + rng.normal() * 0.09).clamp(-90.0, 90.0);
            let scale = 0.09 / clat[c].to_radians().cos().max(0.05);
            let mut lon = clon[c] + rng.normal() * scale;
            if lon > 180.0 {
                lon -= 360.0;
            }
            if lon < -180.0 {
                lon += 360.0;
            }
            (lat, lon.clamp(-180.0, 180.0))
        })
        .unzip()
}

fn points() -> usize {
    std::env::var("GEO_BENCH_POINTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000)
}

fn bench_geo(c: &mut Criterion) {
    let n = points();
    let ids: Vec<u64> = (0..n as u64).collect();
    for (dist, (lats, lons)) in [("uniform", uniform(n, 1)), ("clustered", clustered(n, 2))] {
        let (qlats, qlons) = if dist == "uniform" {
            uniform(1_000, 3)
        } else {
            clustered(1_000, 4)
        };
        let mut group = c.benchmark_group(format!("build_{dist}_{n}"));
        group
            .sample_size(10)
            .measurement_time(Duration::from_secs(5))
            .warm_up_time(Duration::from_millis(500));
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function("geohash", |b| {
            b.iter(|| GeohashIndex::new(&ids, &lats, &lons).unwrap())
        });
        group.bench_function("quadtree", |b| {
            b.iter(|| Quadtree::new(&ids, &lats, &lons).unwrap())
        });
        group.bench_function("cell", |b| {
            b.iter(|| CellIndex::new(&ids, &lats, &lons).unwrap())
        });
        group.finish();

        let geohash = GeohashIndex::new(&ids, &lats, &lons).unwrap();
        let quadtree = Quadtree::new(&ids, &lats, &lons).unwrap();
        let cell = CellIndex::new(&ids, &lats, &lons).unwrap();
        let indexes: [(&str, &dyn SpatialIndex); 3] = [
            ("geohash", &geohash),
            ("quadtree", &quadtree),
            ("cell", &cell),
        ];
        for (name, index) in indexes {
            eprintln!(
                "{dist} {n}: {name} holds {} bytes, {:.2} bytes per point",
                index.memory_bytes(),
                index.memory_bytes() as f64 / n as f64
            );
        }

        let mut group = c.benchmark_group(format!("query_{dist}_{n}"));
        group
            .sample_size(10)
            .measurement_time(Duration::from_secs(2))
            .warm_up_time(Duration::from_millis(300));
        group.throughput(Throughput::Elements(qlats.len() as u64));
        for (name, index) in indexes {
            for radius in [1_000.0, 5_000.0] {
                group.bench_with_input(
                    BenchmarkId::new(format!("radius_{}km", radius / 1000.0), name),
                    &radius,
                    |b, &r| {
                        b.iter(|| {
                            black_box(index.radius_batch(&qlats, &qlons, &[r], None, 0).unwrap())
                        })
                    },
                );
            }
            group.bench_with_input(BenchmarkId::new("knn_10", name), &10, |b, &k| {
                b.iter(|| black_box(index.knn_batch(&qlats, &qlons, k).unwrap()))
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench_geo);
criterion_main!(benches);
