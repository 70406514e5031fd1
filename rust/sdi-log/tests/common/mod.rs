//! Helpers shared by the integration tests.
#![allow(dead_code)]

use sdi_log::{batches, BatchHeader, FsyncPolicy, Partition, PartitionConfig, Record};

pub fn small_config() -> PartitionConfig {
    PartitionConfig {
        segment_bytes_max: 1024,
        index_interval_bytes: 128,
        fsync: FsyncPolicy::Never,
        retention_ms: None,
        retention_bytes: None,
    }
}

/// Appends a batch of `count` records whose values name their batch.
pub fn append_numbered(
    partition: &mut Partition,
    batch: u64,
    count: usize,
    timestamp_ms: i64,
) -> u64 {
    let value = format!("batch-{batch}-value");
    let records: Vec<Record<'_>> = (0..count)
        .map(|_| Record {
            key: b"key",
            value: value.as_bytes(),
        })
        .collect();
    partition
        .append_records(&records, timestamp_ms)
        .expect("append")
}

/// The headers and payloads of every batch from the log start to the end.
pub fn read_all(partition: &Partition) -> Vec<(BatchHeader, Vec<u8>)> {
    let mut out = Vec::new();
    let mut offset = partition.log_start_offset();
    while offset < partition.next_offset() {
        let bytes = partition.read(offset, 300).expect("read");
        assert!(
            !bytes.is_empty(),
            "a read below next_offset returned nothing"
        );
        for batch in batches(&bytes) {
            let batch = batch.expect("valid batch");
            assert_eq!(batch.header.base_offset, offset, "batches are contiguous");
            offset = batch.header.next_offset();
            out.push((batch.header, batch.payload.to_vec()));
        }
    }
    out
}
