//! Crash test: a child process writes mail and reports each acknowledged
//! write; the parent kills it with SIGKILL mid-stream, reopens the index and
//! checks that every acknowledged write is there and nothing torn is
//! visible.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::{make_doc, TempDir};
use sdi_lsm::{parse_query, Attrs, Filter, Index, Op, Options, SyncPolicy};

const CHILD_ENV: &str = "SDI_LSM_CRASH_CHILD_DIR";

fn options() -> Options {
    Options {
        sync: SyncPolicy::Never,
        memtable_bytes_max: 64 << 10,
        merge_width: 2,
        runs_max: 4,
        background_compaction: true,
        tokenize_threads: 2,
    }
}

fn doc(id: u64) -> sdi_lsm::Doc {
    let n = id as usize;
    make_doc(
        1,
        id,
        Attrs {
            date: id as i64,
            folder: 0,
            flags: 0,
        },
        n,
        &[n, n + 1],
        &[n * 3, n + 7, 2],
        n % 4 == 0,
    )
}

/// The child: writes batches of ten mails forever, printing the last id of
/// each batch once `write_batch` has returned. Does nothing unless run by
/// the parent below.
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let index = Index::open(dir, options()).unwrap();
    let mut id = 0u64;
    loop {
        let ops: Vec<Op> = (id..id + 10).map(|i| Op::Add(doc(i))).collect();
        index.write_batch(&ops).unwrap();
        if id % 50 == 0 && id > 0 {
            index.delete(1, id - 25).unwrap();
        }
        id += 10;
        println!("acked {}", id - 1);
    }
}

#[test]
fn sigkill_mid_stream_loses_no_acknowledged_write() {
    for round in 0..3 {
        let dir = TempDir::new("crash");
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, &dir.0)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut acked = None;
        let target = 300 + round * 400;
        while let Some(Ok(line)) = lines.next() {
            if let Some(id) = line.strip_prefix("acked ") {
                let id: u64 = id.parse().unwrap();
                acked = Some(id);
                if id >= target {
                    break;
                }
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let acked = acked.expect("the child acknowledged nothing");
        let index = Index::open(
            &dir.0,
            Options {
                background_compaction: false,
                ..options()
            },
        )
        .unwrap();
        let all = index
            .search(
                1,
                &parse_query("").unwrap(),
                &Filter::default(),
                10_000,
                None,
            )
            .unwrap();
        // Batches are atomic and in order: the ids present are 0..=last
        // for some last >= acked, a whole number of batches, minus the
        // deleted ones.
        let last = all[0];
        assert!(
            all.len() as u64 > target * 9 / 10,
            "{} recovered",
            all.len()
        );
        eprintln!(
            "round {round}: acknowledged {acked}, recovered {} mails up to {last}, runs {:?}",
            all.len(),
            index.stats().run_bytes.len()
        );
        assert!(
            last >= acked,
            "acknowledged {acked}, recovered up to {last}"
        );
        assert_eq!(last % 10, 9, "a torn batch is visible");
        let deleted = |id: u64| id % 50 == 25 && id + 25 < last;
        let want: Vec<u64> = (0..=last)
            .rev()
            .filter(|&id| !deleted(id) || id + 25 > last)
            .collect();
        let missing: Vec<u64> = want
            .iter()
            .copied()
            .filter(|id| !all.contains(id))
            .collect();
        let extra: Vec<u64> = all
            .iter()
            .copied()
            .filter(|id| !want.contains(id))
            .collect();
        // A delete is its own write after its batch: one at the very end may
        // or may not have landed.
        assert!(
            missing.iter().all(|&id| id % 50 == 25),
            "missing {missing:?}"
        );
        assert!(
            extra.iter().all(|&id| id % 50 == 25 && id + 35 >= last),
            "extra {extra:?}"
        );
        // Every recovered mail is searchable by its text.
        let q = parse_query("from:alice").unwrap();
        let by_text = index
            .search(1, &q, &Filter::default(), 10_000, None)
            .unwrap();
        assert!(by_text.iter().all(|id| all.contains(id)));
        assert!(!by_text.is_empty());
        index.close().unwrap();
    }
}
