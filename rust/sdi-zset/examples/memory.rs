//! Memory per member: builds sets of N members (8-16 random bytes, integer
//! scores) and prints `memory_bytes()` and the overhead per member beyond
//! the member bytes and the 8-byte score.
//!
//! `cargo run --release -p sdi-zset --example memory -- 1000000 25000000`

use std::time::Instant;

use sdi_zset::ZSet;

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("a member count"))
        .collect();
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for n in if sizes.is_empty() {
        vec![1_000_000]
    } else {
        sizes
    } {
        let mut z = ZSet::new();
        let mut payload = 0usize;
        let t = Instant::now();
        let mut i = 0u64;
        while z.len() < n {
            let len = 8 + (next() % 9) as usize;
            let mut m = format!("{i:x}:").into_bytes();
            i += 1;
            while m.len() < len {
                m.push(b'a' + (next() % 26) as u8);
            }
            let s = (next() % 1_000_000) as f64;
            if z.insert(s, &m).expect("insert").is_none() {
                payload += m.len() + 8;
            }
        }
        let built = t.elapsed();
        let fresh = z.memory_bytes();
        println!(
            "n={n} member+score bytes={payload} memory_bytes={fresh} overhead/member={:.2} \
             (after random inserts) built in {built:.2?}; {:?}",
            (fresh as f64 - payload as f64) / n as f64,
            z.stats()
        );
        let t = Instant::now();
        for _ in 0..n / 4 {
            let r = (next() % n as u64) as usize;
            let m = z.get_by_rank(r).expect("rank").1.to_vec();
            z.incr((next() % 100) as f64, &m).expect("incr");
        }
        let churn = t.elapsed();
        let bytes = z.memory_bytes();
        let stats = z.stats();
        drop(z);
        // The same members loaded with one batch ZADD into an empty set.
        let mut members = Vec::with_capacity(n);
        let mut scores = Vec::with_capacity(n);
        let mut payload_bulk = 0;
        for i in 0..n as u64 {
            let len = 8 + (next() % 9) as usize;
            let mut m = format!("{i:x}:").into_bytes();
            while m.len() < len {
                m.push(b'a' + (next() % 26) as u8);
            }
            payload_bulk += m.len() + 8;
            members.push(m);
            scores.push((next() % 1_000_000) as f64);
        }
        let t = Instant::now();
        let mut bulk = ZSet::new();
        bulk.add_many(&scores, &members).expect("add_many");
        let loaded = t.elapsed();
        println!(
            "n={n} member+score bytes={payload_bulk} memory_bytes={} overhead/member={:.2} \
             (one add_many into an empty set) loaded in {loaded:.2?}; {:?}",
            bulk.memory_bytes(),
            (bulk.memory_bytes() as f64 - payload_bulk as f64) / n as f64,
            bulk.stats()
        );
        drop(bulk);
        println!(
            "n={n} member+score bytes={payload} memory_bytes={bytes} overhead/member={:.2} \
             (after n/4 ZINCRBY) n/4 incr in {:.2?}; {:?}",
            (bytes as f64 - payload as f64) / n as f64,
            churn,
            stats
        );
    }
}
