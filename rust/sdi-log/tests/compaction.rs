//! Log compaction: unit tests and a proptest against a model (per key the
//! latest value, every unkeyed record, every offset handed out) through
//! appends, appends past a gap, compactions, reopens and crash cuts.

use std::collections::HashMap;
use std::path::Path;

use proptest::prelude::*;
use sdi_log::kafka::{build_kafka_batch, parse_kafka_batch, PlainRecord};
use sdi_log::{batches, FsyncPolicy, Partition, PartitionConfig, Record, SWAP_MARKER_NAME};

type Key = Option<Vec<u8>>;
type Value = Option<Vec<u8>>;

/// One record read back: offset, timestamp, key, value.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Read {
    offset: u64,
    timestamp_ms: i64,
    key: Key,
    value: Value,
}

fn config() -> PartitionConfig {
    PartitionConfig {
        segment_bytes_max: 600,
        index_interval_bytes: 100,
        fsync: FsyncPolicy::Never,
        retention_ms: None,
        retention_bytes: None,
    }
}

/// Appends one Kafka batch of `records` (as the broker stores them); returns its base offset.
fn append_kafka(partition: &mut Partition, records: &[(Key, Value)], timestamp_ms: i64) -> u64 {
    append_kafka_at(partition, partition.next_offset(), records, timestamp_ms)
}

fn append_kafka_at(
    partition: &mut Partition,
    base: u64,
    records: &[(Key, Value)],
    timestamp_ms: i64,
) -> u64 {
    let entries: Vec<PlainRecord<'_>> = records
        .iter()
        .enumerate()
        .map(|(at, (key, value))| {
            (
                base + at as u64,
                timestamp_ms + at as i64,
                key.as_deref(),
                value.as_deref(),
            )
        })
        .collect();
    let bytes = build_kafka_batch(&entries);
    let count = records.len() as u32;
    let max = timestamp_ms + i64::from(count) - 1;
    if base == partition.next_offset() {
        partition
            .append_payload(&bytes, count, timestamp_ms, max)
            .expect("append")
    } else {
        partition
            .append_payload_at(base, &bytes, count, timestamp_ms, max)
            .expect("append at")
    }
}

/// Every record in the log, read front to back with small reads; checks that
/// offsets strictly increase and each log header agrees with its Kafka batch.
fn read_all(partition: &Partition) -> Vec<Read> {
    let mut out: Vec<Read> = Vec::new();
    let mut offset = partition.log_start_offset();
    while offset < partition.next_offset() {
        let bytes = partition.read(offset, 200).expect("read");
        if bytes.is_empty() {
            break; // a gap runs to the end of the log
        }
        for view in batches(&bytes) {
            let view = view.expect("valid batch");
            let kafka = parse_kafka_batch(view.payload).expect("a valid Kafka batch");
            assert_eq!(kafka.base_offset, view.header.base_offset);
            assert!(view.header.base_offset >= offset, "reads never go back");
            for record in &kafka.records {
                assert!(record.offset < view.header.next_offset());
                if let Some(last) = out.last() {
                    assert!(record.offset > last.offset, "offsets strictly increase");
                }
                out.push(Read {
                    offset: record.offset,
                    timestamp_ms: record.timestamp_ms,
                    key: record.key.map(<[u8]>::to_vec),
                    value: record.value.map(<[u8]>::to_vec),
                });
            }
            offset = view.header.next_offset();
        }
    }
    out
}

/// What the log must hold whatever compaction did.
#[derive(Default, Clone)]
struct Model {
    /// Key -> (offset, value) of its latest record.
    latest: HashMap<Vec<u8>, (u64, Value)>,
    /// Every record by offset, as appended.
    appended: HashMap<u64, (Key, Value)>,
    unkeyed: Vec<u64>,
}

impl Model {
    fn note(&mut self, base: u64, records: &[(Key, Value)]) {
        for (at, (key, value)) in records.iter().enumerate() {
            let offset = base + at as u64;
            self.appended.insert(offset, (key.clone(), value.clone()));
            match key {
                Some(key) => {
                    self.latest.insert(key.clone(), (offset, value.clone()));
                }
                None => self.unkeyed.push(offset),
            }
        }
    }

    fn check(&self, read: &[Read]) {
        for record in read {
            let (key, value) = self.appended.get(&record.offset).expect("appended");
            assert_eq!(
                (&record.key, &record.value),
                (key, value),
                "a record changed"
            );
        }
        let offsets: Vec<u64> = read.iter().map(|record| record.offset).collect();
        for offset in &self.unkeyed {
            assert!(
                offsets.binary_search(offset).is_ok(),
                "unkeyed record {offset} lost"
            );
        }
        for (key, (offset, value)) in &self.latest {
            let last = read.iter().rev().find(|r| r.key.as_ref() == Some(key));
            match (last, value) {
                (Some(last), _) => assert_eq!(
                    (last.offset, &last.value),
                    (*offset, value),
                    "key {key:?}: not its latest record"
                ),
                // Only a tombstone past its retention may go, with every older record of its key.
                (None, None) => {}
                (None, Some(_)) => panic!("key {key:?}: its latest value is lost"),
            }
        }
    }
}

fn key(n: u8) -> Key {
    Some(format!("key-{n}").into_bytes())
}

fn value(text: &str) -> Value {
    Some(text.as_bytes().to_vec())
}

#[test]
fn compaction_keeps_the_latest_record_per_key_and_shrinks_the_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut partition = Partition::open(dir.path(), config()).expect("open");
    let mut model = Model::default();
    for round in 0..60u8 {
        let records = vec![
            (key(round % 4), value(&format!("v{round}"))),
            (None, value(&format!("unkeyed {round}"))),
        ];
        let base = append_kafka(&mut partition, &records, i64::from(round) * 10);
        model.note(base, &records);
    }
    let before = partition.size_bytes();
    let segments = partition.segment_base_offsets();
    assert!(segments.len() > 3, "the test needs closed segments");
    let outcome = partition
        .compact(partition.next_offset(), 10_000, 1_000_000)
        .expect("compact");
    assert_eq!(outcome.segments_before, segments.len() - 1);
    assert!(outcome.records_removed > 0);
    assert!(partition.size_bytes() < before, "the log shrank");
    assert_eq!(partition.log_start_offset(), 0, "the log start stays");
    let read = read_all(&partition);
    model.check(&read);
    // Below the active segment each key appears once.
    let active = *partition.segment_base_offsets().last().expect("active");
    for n in 0..4 {
        let count = read
            .iter()
            .filter(|r| r.offset < active && r.key == key(n))
            .count();
        assert!(
            count <= 1,
            "key {n} appears {count} times in the compacted segments"
        );
    }
    // Reopening reads the same, and a read at a compacted-away offset returns the next batch.
    drop(partition);
    let partition = Partition::open(dir.path(), config()).expect("reopen");
    assert_eq!(read_all(&partition), read);
    let gone = (0..active)
        .find(|offset| read.iter().all(|r| r.offset != *offset))
        .expect("some offset was compacted away");
    let bytes = partition.read(gone, 1).expect("read in a gap");
    let first = batches(&bytes).next().expect("a batch").expect("valid");
    let next = read
        .iter()
        .find(|r| r.offset > gone)
        .expect("a later record");
    assert!(first.header.base_offset > gone);
    assert!(first.header.base_offset <= next.offset && next.offset < first.header.next_offset());
}

#[test]
fn the_active_segment_and_offsets_past_the_limit_are_not_compacted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut partition = Partition::open(dir.path(), config()).expect("open");
    for round in 0..40u8 {
        append_kafka(&mut partition, &[(key(0), value(&format!("v{round}")))], 1);
    }
    let bases = partition.segment_base_offsets();
    assert!(bases.len() >= 3);
    // Up to the second segment's base: only the first is compacted.
    let outcome = partition.compact(bases[1], 0, 0).expect("compact");
    assert_eq!(outcome.segments_before, 1);
    assert_eq!(partition.segment_base_offsets(), bases);
    let read = read_all(&partition);
    // Only the segments compacted count: the first keeps its last record of the key.
    let first: Vec<u64> = read
        .iter()
        .filter(|r| r.offset < bases[1])
        .map(|r| r.offset)
        .collect();
    assert_eq!(first, [bases[1] - 1]);
    // Below the first closed segment's end nothing happens.
    let outcome = partition.compact(bases[1] - 1, 0, 0).expect("compact");
    assert_eq!(outcome.segments_before, 0);
    // Everything: the active segment keeps its records, all with the same key.
    partition
        .compact(partition.next_offset(), 0, 0)
        .expect("compact");
    let active = *partition.segment_base_offsets().last().expect("active");
    let read = read_all(&partition);
    // The compacted segments keep one record of the key: the last one below the active segment.
    assert_eq!(read.iter().filter(|r| r.offset < active).count(), 1);
    assert_eq!(read.last().expect("a record").value, value("v39"));
}

#[test]
fn tombstones_go_after_their_retention_with_their_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut partition = Partition::open(dir.path(), config()).expect("open");
    append_kafka(
        &mut partition,
        &[(key(1), value("one")), (key(2), value("two"))],
        100,
    );
    append_kafka(&mut partition, &[(key(1), None)], 200);
    for round in 0..30 {
        append_kafka(
            &mut partition,
            &[(None, value(&format!("filler {round}")))],
            300,
        );
    }
    let up_to = partition.next_offset();
    // Within the retention the tombstone stays; the value it deletes goes.
    let outcome = partition.compact(up_to, 1_000, 10_000).expect("compact");
    assert_eq!(outcome.tombstones_removed, 0);
    let read = read_all(&partition);
    let of_key_1: Vec<_> = read.iter().filter(|r| r.key == key(1)).collect();
    assert_eq!(of_key_1.len(), 1);
    assert_eq!(of_key_1[0].value, None);
    // Past it, the tombstone goes too; key 2 stays.
    let outcome = partition
        .compact(up_to, 1_000_000, 10_000)
        .expect("compact");
    assert_eq!(outcome.tombstones_removed, 1);
    let read = read_all(&partition);
    assert!(read.iter().all(|r| r.key != key(1)));
    assert_eq!(
        read.iter()
            .find(|r| r.key == key(2))
            .map(|r| r.value.clone()),
        Some(value("two"))
    );
    assert_eq!(read.iter().filter(|r| r.key.is_none()).count(), 30);
}

#[test]
fn a_replica_appends_past_a_gap_and_offsets_for_time_skip_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut partition = Partition::open(dir.path(), config()).expect("open");
    append_kafka(&mut partition, &[(key(1), value("a"))], 10);
    append_kafka_at(&mut partition, 50, &[(key(1), value("b"))], 20);
    assert_eq!(partition.next_offset(), 51);
    assert!(
        partition.append_payload_at(3, b"x", 1, 0, 0).is_err(),
        "offsets only grow"
    );
    let bytes = partition.read(7, 1).expect("read in the gap");
    assert_eq!(
        batches(&bytes)
            .next()
            .expect("batch")
            .expect("valid")
            .header
            .base_offset,
        50
    );
    assert_eq!(partition.offset_for_time(15).expect("time"), Some(50));
    // Truncating into the gap keeps what is below and makes that the next offset.
    partition.truncate_to(30).expect("truncate");
    assert_eq!(partition.next_offset(), 30);
    assert_eq!(read_all(&partition).len(), 1);
    drop(partition);
    let partition = Partition::open(dir.path(), config()).expect("reopen");
    assert_eq!(read_all(&partition).len(), 1);
}

#[test]
fn crash_before_the_marker_keeps_the_old_segments_and_after_it_the_new() {
    let (mut saw_old, mut saw_new) = (false, false);
    for steps in 1..40 {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut partition = Partition::open(dir.path(), config()).expect("open");
        for round in 0..30u8 {
            append_kafka(
                &mut partition,
                &[(key(round % 3), value(&format!("v{round}")))],
                5,
            );
        }
        let before = read_all(&partition);
        let copy = tempfile::tempdir().expect("tempdir");
        copy_dir(dir.path(), copy.path());
        let mut twin = Partition::open(copy.path(), config()).expect("open copy");
        twin.compact(twin.next_offset(), 0, 0)
            .expect("compact copy");
        let after = read_all(&twin);
        assert_ne!(before, after);

        let crashed = partition.compact_crashing_after(partition.next_offset(), 0, 0, steps);
        drop(partition);
        let partition = Partition::open(dir.path(), config()).expect("reopen");
        let read = read_all(&partition);
        assert!(
            read == before || read == after,
            "crash after {steps} steps ({crashed:?}) left a mix"
        );
        assert!(!dir.path().join(SWAP_MARKER_NAME).exists());
        let leftovers = std::fs::read_dir(dir.path())
            .expect("list")
            .filter(|entry| {
                let name = entry.as_ref().expect("entry").file_name();
                let name = name.to_string_lossy();
                name.ends_with(".cleaned") || name.ends_with(".tmp")
            })
            .count();
        assert_eq!(leftovers, 0, "leftovers cleaned at open");
        saw_old |= read == before;
        saw_new |= read == after;
        if crashed.is_ok() {
            assert_eq!(read, after);
            break; // the compaction completed within this many steps
        }
    }
    assert!(
        saw_old && saw_new,
        "crashes both before and after the commit point"
    );
}

#[test]
fn records_batches_are_kept_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut partition = Partition::open(dir.path(), config()).expect("open");
    for _ in 0..30 {
        partition
            .append_records(
                &[Record {
                    key: b"k",
                    value: b"same key",
                }],
                1,
            )
            .expect("append");
    }
    let before = partition.size_bytes();
    partition
        .compact(partition.next_offset(), 0, 0)
        .expect("compact");
    assert_eq!(partition.size_bytes(), before);
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).expect("list") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
    }
}

#[derive(Clone, Debug)]
enum Op {
    Append {
        records: Vec<(Option<u8>, Option<u8>)>,
        timestamp_ms: i64,
    },
    AppendPastGap {
        gap: u64,
        key: Option<u8>,
    },
    Compact {
        /// Which offset to compact up to: a fraction (in 1/8) of the next offset.
        eighths: u64,
        now_ms: i64,
        retention_ms: u64,
    },
    CrashCompact {
        steps: u32,
        now_ms: i64,
    },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    let record = (
        prop::option::weighted(0.8, 0u8..6),
        prop::option::weighted(0.85, any::<u8>()),
    );
    prop_oneof![
        8 => (prop::collection::vec(record, 1..5), 0i64..1000)
            .prop_map(|(records, timestamp_ms)| Op::Append { records, timestamp_ms }),
        1 => (1u64..20, prop::option::of(0u8..6)).prop_map(|(gap, key)| Op::AppendPastGap { gap, key }),
        2 => (0u64..=8, 0i64..2000, 0u64..1500)
            .prop_map(|(eighths, now_ms, retention_ms)| Op::Compact { eighths, now_ms, retention_ms }),
        1 => (1u32..30, 0i64..2000).prop_map(|(steps, now_ms)| Op::CrashCompact { steps, now_ms }),
        1 => Just(Op::Reopen),
    ]
}

fn records_of(spec: &[(Option<u8>, Option<u8>)]) -> Vec<(Key, Value)> {
    spec.iter()
        .map(|(key_n, byte)| {
            (
                key_n.map(|n| format!("key-{n}").into_bytes()),
                byte.map(|byte| vec![byte; usize::from(byte % 17)]),
            )
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn compaction_matches_the_model(ops in prop::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut partition = Partition::open(dir.path(), config()).expect("open");
        let mut model = Model::default();
        let mut handed_out = 0u64;
        for op in ops {
            match op {
                Op::Append { records, timestamp_ms } => {
                    let records = records_of(&records);
                    let base = append_kafka(&mut partition, &records, timestamp_ms);
                    prop_assert!(base >= handed_out);
                    handed_out = base + records.len() as u64;
                    model.note(base, &records);
                }
                Op::AppendPastGap { gap, key } => {
                    let records = records_of(&[(key, Some(7))]);
                    let base = partition.next_offset() + gap;
                    append_kafka_at(&mut partition, base, &records, 500);
                    handed_out = base + 1;
                    model.note(base, &records);
                }
                Op::Compact { eighths, now_ms, retention_ms } => {
                    let up_to = partition.next_offset() * eighths / 8;
                    partition.compact(up_to, now_ms, retention_ms).expect("compact");
                }
                Op::CrashCompact { steps, now_ms } => {
                    let up_to = partition.next_offset();
                    let _ = partition.compact_crashing_after(up_to, now_ms, 100, steps);
                    drop(partition);
                    partition = Partition::open(dir.path(), config()).expect("reopen");
                }
                Op::Reopen => {
                    drop(partition);
                    partition = Partition::open(dir.path(), config()).expect("reopen");
                }
            }
            prop_assert_eq!(partition.next_offset(), handed_out);
            prop_assert_eq!(partition.log_start_offset(), 0);
            let read = read_all(&partition);
            model.check(&read);
            // A read at any offset starts with the first surviving record at or after it.
            for probe in [0, handed_out / 3, handed_out / 2, handed_out.saturating_sub(1)] {
                if probe >= handed_out {
                    continue;
                }
                let bytes = partition.read(probe, 1).expect("read");
                let want = read.iter().find(|r| r.offset >= probe);
                let got = batches(&bytes).next().map(|view| {
                    let view = view.expect("valid");
                    let kafka = parse_kafka_batch(view.payload).expect("kafka");
                    kafka.records.iter().find(|r| r.offset >= probe).map(|r| r.offset)
                });
                prop_assert_eq!(got.flatten(), want.map(|r| r.offset));
            }
        }
    }
}
