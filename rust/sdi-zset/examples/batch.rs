//! Batch throughput as benchmarks/cores/zset.py measures it: `add_many` of
//! n 11-byte members into an empty set, `incr_many` of n/4 random members,
//! batch ZREVRANK; the overhead per member after the load and the
//! increments; median of the rounds.
//!
//! `cargo run --release -p sdi-zset --example batch -- 1000000 3`; with
//! `INCR_ONLY=1`, one round of five `incr_many` passes over the same set
//! (steadier figures on a busy machine).

use std::time::Instant;

use sdi_zset::ZSet;

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map_or(1_000_000, |a| a.parse().expect("n"));
    let rounds: usize = args.next().map_or(3, |a| a.parse().expect("rounds"));
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut ids: Vec<u64> = (0..n as u64).collect();
    for i in (1..n).rev() {
        ids.swap(i, (next() % (i as u64 + 1)) as usize);
    }
    let members: Vec<Vec<u8>> = ids
        .iter()
        .map(|i| format!("p{i:010}").into_bytes())
        .collect();
    let scores: Vec<f64> = (0..n).map(|_| (next() % 1_000_000) as f64).collect();
    let ops: Vec<&[u8]> = (0..n / 4)
        .map(|_| &members[(next() % n as u64) as usize][..])
        .collect();
    let deltas: Vec<f64> = (0..n / 4).map(|_| (1 + next() % 99) as f64).collect();
    let payload: usize = members.iter().map(|m| m.len() + 8).sum();
    let over = |z: &ZSet| (z.memory_bytes() as f64 - payload as f64) / z.len() as f64;
    let (mut load, mut incr, mut rank) = (vec![], vec![], vec![]);
    for _ in 0..rounds {
        let mut z = ZSet::new();
        let t = Instant::now();
        z.add_many(&scores, &members).expect("add");
        load.push(n as f64 / t.elapsed().as_secs_f64());
        let o1 = over(&z);
        let t = Instant::now();
        z.incr_many(&deltas, &ops).expect("incr");
        incr.push(ops.len() as f64 / t.elapsed().as_secs_f64());
        if std::env::var_os("INCR_ONLY").is_some() {
            for _ in 0..4 {
                let t = Instant::now();
                z.incr_many(&deltas, &ops).expect("incr");
                incr.push(ops.len() as f64 / t.elapsed().as_secs_f64());
            }
            incr.sort_by(f64::total_cmp);
            println!("incr max {:.0}/s all {incr:.0?}", incr[incr.len() - 1]);
            return;
        }
        let o2 = over(&z);
        let t = Instant::now();
        let r = z.ranks(&ops, true);
        rank.push(ops.len() as f64 / t.elapsed().as_secs_f64());
        assert!(r.iter().all(Option::is_some));
        println!(
            "overhead: {o1:.2} after load, {o2:.2} after incr; {:?}",
            z.stats()
        );
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "n={n}: load {:.0}/s  incr {:.0}/s  revrank {:.0}/s",
        med(&mut load),
        med(&mut incr),
        med(&mut rank)
    );
}
