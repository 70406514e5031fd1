//! Random sequences of appends, reads, time lookups, retention and reopens,
//! checked against a plain in-memory model: a list of segments, each a list
//! of batches, rolled and trimmed by the rules the crate documents.

use proptest::prelude::*;
use sdi_log::constants::BATCH_HEADER_BYTES;
use sdi_log::{batches, FsyncPolicy, Partition, PartitionConfig, PayloadKind, Record};

const SEGMENT_BYTES_MAX: u64 = 512;
const RETENTION_MS: u64 = 50;
const RETENTION_BYTES: u64 = 1500;

fn config() -> PartitionConfig {
    PartitionConfig {
        segment_bytes_max: SEGMENT_BYTES_MAX,
        index_interval_bytes: 64,
        fsync: FsyncPolicy::Never,
        retention_ms: Some(RETENTION_MS),
        retention_bytes: Some(RETENTION_BYTES),
    }
}

#[derive(Clone, Debug)]
enum Op {
    AppendRecords {
        count: usize,
        value_bytes: usize,
        timestamp_ms: i64,
    },
    AppendPayload {
        payload_bytes: usize,
        count: u32,
        first_timestamp_ms: i64,
        spread_ms: i64,
    },
    Read {
        pick: usize,
        max_bytes: usize,
    },
    OffsetForTime {
        timestamp_ms: i64,
    },
    Retention {
        now_ms: i64,
    },
    Reopen,
    Truncate {
        pick: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1usize..6, 0usize..40, 0i64..300).prop_map(|(count, value_bytes, timestamp_ms)| {
            Op::AppendRecords { count, value_bytes, timestamp_ms }
        }),
        3 => (0usize..200, 1u32..50, 0i64..300, 0i64..20).prop_map(
            |(payload_bytes, count, first_timestamp_ms, spread_ms)| Op::AppendPayload {
                payload_bytes, count, first_timestamp_ms, spread_ms
            }
        ),
        4 => (any::<usize>(), 1usize..700).prop_map(|(pick, max_bytes)| Op::Read { pick, max_bytes }),
        1 => (-10i64..330).prop_map(|timestamp_ms| Op::OffsetForTime { timestamp_ms }),
        1 => (0i64..400).prop_map(|now_ms| Op::Retention { now_ms }),
        1 => Just(Op::Reopen),
        1 => any::<usize>().prop_map(|pick| Op::Truncate { pick }),
    ]
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct ModelBatch {
    base_offset: u64,
    record_count: u32,
    kind: PayloadKind,
    /// The records' key and value, for record batches.
    records: Vec<(Vec<u8>, Vec<u8>)>,
    /// The payload, for opaque batches.
    payload: Vec<u8>,
    first_timestamp_ms: i64,
    max_timestamp_ms: i64,
    batch_bytes: u64,
}

impl ModelBatch {
    fn next_offset(&self) -> u64 {
        self.base_offset + u64::from(self.record_count)
    }
}

#[derive(Default)]
struct Model {
    segments: Vec<Vec<ModelBatch>>,
    next_offset: u64,
}

impl Model {
    fn new() -> Self {
        Self {
            segments: vec![Vec::new()],
            ..Self::default()
        }
    }

    fn segment_bytes(segment: &[ModelBatch]) -> u64 {
        segment.iter().map(|batch| batch.batch_bytes).sum()
    }

    fn append(&mut self, mut batch: ModelBatch) -> u64 {
        let active = self.segments.last().unwrap();
        if !active.is_empty() && Self::segment_bytes(active) + batch.batch_bytes > SEGMENT_BYTES_MAX
        {
            self.segments.push(Vec::new());
        }
        batch.base_offset = self.next_offset;
        self.next_offset = batch.next_offset();
        self.segments.last_mut().unwrap().push(batch);
        self.next_offset - self.segments.last().unwrap().last().unwrap().record_count as u64
    }

    fn log_start_offset(&self) -> u64 {
        self.segments[0]
            .first()
            .map_or(self.next_offset, |batch| batch.base_offset)
    }

    fn all(&self) -> impl Iterator<Item = &ModelBatch> {
        self.segments.iter().flatten()
    }

    /// Drops the batches from `offset` on (a batch boundary), and a segment
    /// left empty unless it is the first.
    fn truncate(&mut self, offset: u64) {
        for segment in &mut self.segments {
            segment.retain(|batch| batch.base_offset < offset);
        }
        while self.segments.len() > 1 && self.segments.last().unwrap().is_empty() {
            self.segments.pop();
        }
        self.next_offset = offset;
    }

    fn retention(&mut self, now_ms: i64) -> usize {
        let mut deleted = 0;
        while self.segments.len() > 1 {
            let max = self.segments[0]
                .iter()
                .map(|batch| batch.max_timestamp_ms)
                .max()
                .unwrap();
            let expired = now_ms - max > RETENTION_MS as i64;
            let total: u64 = self
                .segments
                .iter()
                .map(|segment| Self::segment_bytes(segment))
                .sum();
            if !expired && total <= RETENTION_BYTES {
                break;
            }
            self.segments.remove(0);
            deleted += 1;
        }
        deleted
    }
}

fn same_batch(view: &sdi_log::BatchView<'_>, expected: &ModelBatch) {
    assert_eq!(view.header.base_offset, expected.base_offset);
    assert_eq!(view.header.record_count, expected.record_count);
    assert_eq!(view.header.kind, expected.kind);
    assert_eq!(view.header.first_timestamp_ms, expected.first_timestamp_ms);
    assert_eq!(view.header.max_timestamp_ms, expected.max_timestamp_ms);
    assert_eq!(u64::from(view.header.batch_bytes), expected.batch_bytes);
    match expected.kind {
        PayloadKind::Records => {
            let records: Vec<(Vec<u8>, Vec<u8>)> = view
                .records()
                .unwrap()
                .iter()
                .map(|record| (record.key.to_vec(), record.value.to_vec()))
                .collect();
            assert_eq!(records, expected.records);
        }
        PayloadKind::Opaque => assert_eq!(view.payload, expected.payload.as_slice()),
    }
}

fn check_everything(partition: &Partition, model: &Model) {
    assert_eq!(partition.log_start_offset(), model.log_start_offset());
    assert_eq!(partition.next_offset(), model.next_offset);
    let expected_bases: Vec<u64> = model
        .segments
        .iter()
        .filter_map(|segment| segment.first().map(|batch| batch.base_offset))
        .collect();
    let bases = partition.segment_base_offsets();
    assert_eq!(
        bases[..expected_bases.len()],
        expected_bases[..],
        "segments as the model rolled them"
    );
    let mut offset = partition.log_start_offset();
    let mut expected = model.all();
    while offset < partition.next_offset() {
        let bytes = partition.read(offset, 1 << 16).unwrap();
        for view in batches(&bytes) {
            let view = view.unwrap();
            same_batch(&view, expected.next().unwrap());
            offset = view.header.next_offset();
        }
    }
    assert!(expected.next().is_none());
}

fn run(ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let mut partition = Partition::open(dir.path(), config()).unwrap();
    let mut model = Model::new();
    for op in ops {
        match op {
            Op::AppendRecords {
                count,
                value_bytes,
                timestamp_ms,
            } => {
                let owned: Vec<(Vec<u8>, Vec<u8>)> = (0..count)
                    .map(|index| {
                        (
                            vec![index as u8; index % 3],
                            vec![(index * 7) as u8; value_bytes],
                        )
                    })
                    .collect();
                let records: Vec<Record<'_>> = owned
                    .iter()
                    .map(|(key, value)| Record { key, value })
                    .collect();
                let batch_bytes = BATCH_HEADER_BYTES
                    + owned
                        .iter()
                        .map(|(key, value)| 8 + key.len() + value.len())
                        .sum::<usize>();
                let expected = model.append(ModelBatch {
                    base_offset: 0,
                    record_count: count as u32,
                    kind: PayloadKind::Records,
                    records: owned.clone(),
                    payload: Vec::new(),
                    first_timestamp_ms: timestamp_ms,
                    max_timestamp_ms: timestamp_ms,
                    batch_bytes: batch_bytes as u64,
                });
                assert_eq!(
                    partition.append_records(&records, timestamp_ms).unwrap(),
                    expected
                );
            }
            Op::AppendPayload {
                payload_bytes,
                count,
                first_timestamp_ms,
                spread_ms,
            } => {
                let payload: Vec<u8> = (0..payload_bytes).map(|index| (index * 31) as u8).collect();
                let expected = model.append(ModelBatch {
                    base_offset: 0,
                    record_count: count,
                    kind: PayloadKind::Opaque,
                    records: Vec::new(),
                    payload: payload.clone(),
                    first_timestamp_ms,
                    max_timestamp_ms: first_timestamp_ms + spread_ms,
                    batch_bytes: (BATCH_HEADER_BYTES + payload_bytes) as u64,
                });
                let base = partition
                    .append_payload(
                        &payload,
                        count,
                        first_timestamp_ms,
                        first_timestamp_ms + spread_ms,
                    )
                    .unwrap();
                assert_eq!(base, expected);
            }
            Op::Read { pick, max_bytes } => {
                let start = model.log_start_offset();
                let span = model.next_offset - start;
                if span == 0 {
                    assert!(partition.read(start, max_bytes).unwrap().is_empty());
                    continue;
                }
                let offset = start + (pick as u64 % span);
                let bytes = partition.read(offset, max_bytes).unwrap();
                let views: Vec<_> = batches(&bytes).map(Result::unwrap).collect();
                let segment = model
                    .segments
                    .iter()
                    .find(|segment| {
                        segment
                            .last()
                            .is_some_and(|batch| batch.next_offset() > offset)
                    })
                    .unwrap();
                let first = segment
                    .iter()
                    .position(|batch| batch.next_offset() > offset)
                    .unwrap();
                assert!(!views.is_empty());
                for (view, expected) in views.iter().zip(&segment[first..]) {
                    same_batch(view, expected);
                }
                assert!(views.len() <= segment.len() - first);
                if views.len() > 1 {
                    assert!(
                        bytes.len() <= max_bytes,
                        "only a lone first batch may exceed max_bytes"
                    );
                }
                if let Some(next) = segment.get(first + views.len()) {
                    assert!(
                        bytes.len() as u64 + next.batch_bytes > max_bytes as u64,
                        "a read takes all that fits"
                    );
                }
            }
            Op::OffsetForTime { timestamp_ms } => {
                let expected = model
                    .all()
                    .find(|batch| batch.max_timestamp_ms >= timestamp_ms)
                    .map(|batch| batch.base_offset);
                assert_eq!(partition.offset_for_time(timestamp_ms).unwrap(), expected);
            }
            Op::Retention { now_ms } => {
                let deleted = model.retention(now_ms);
                assert_eq!(
                    partition.apply_retention(now_ms).unwrap().segments_deleted,
                    deleted
                );
            }
            Op::Reopen => {
                drop(partition);
                partition = Partition::open(dir.path(), config()).unwrap();
                check_everything(&partition, &model);
            }
            Op::Truncate { pick } => {
                // Any batch boundary, the end included.
                let mut boundaries: Vec<u64> = model.all().map(|batch| batch.base_offset).collect();
                boundaries.push(model.next_offset);
                let offset = boundaries[pick % boundaries.len()];
                partition.truncate_to(offset).unwrap();
                model.truncate(offset);
                check_everything(&partition, &model);
            }
        }
        assert_eq!(partition.log_start_offset(), model.log_start_offset());
        assert_eq!(partition.next_offset(), model.next_offset);
    }
    check_everything(&partition, &model);
    drop(partition);
    check_everything(&Partition::open(dir.path(), config()).unwrap(), &model);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn partition_matches_the_model(ops in prop::collection::vec(op(), 1..120)) {
        run(ops);
    }
}
