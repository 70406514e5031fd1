//! Behaviour of one partition through its public API.

mod common;

use common::{append_numbered, read_all, small_config};
use sdi_log::constants::{BATCH_BYTES_MAX, BATCH_RECORDS_MAX};
use sdi_log::{batches, Error, FsyncPolicy, Partition, PartitionConfig, PayloadKind, Record};

#[test]
fn offsets_are_assigned_contiguously_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut partition = Partition::open(dir.path(), small_config()).unwrap();
    assert_eq!(
        (partition.log_start_offset(), partition.next_offset()),
        (0, 0)
    );
    assert_eq!(append_numbered(&mut partition, 0, 3, 10), 0);
    assert_eq!(append_numbered(&mut partition, 1, 2, 11), 3);
    assert_eq!(
        partition
            .append_payload(b"opaque kafka bytes", 5, 12, 15)
            .unwrap(),
        5
    );
    assert_eq!(partition.next_offset(), 10);

    for offset in 0..10 {
        let bytes = partition.read(offset, 1).unwrap();
        let first = batches(&bytes).next().unwrap().unwrap();
        assert!(first.header.base_offset <= offset && offset < first.header.next_offset());
    }
    let bytes = partition.read(7, 1 << 20).unwrap();
    let batch = batches(&bytes).next().unwrap().unwrap();
    assert_eq!(batch.header.kind, PayloadKind::Opaque);
    assert_eq!(batch.payload, b"opaque kafka bytes");
    assert_eq!(
        (
            batch.header.first_timestamp_ms,
            batch.header.max_timestamp_ms
        ),
        (12, 15)
    );
    assert!(
        batch.records().is_err(),
        "an opaque payload has no records to decode"
    );

    let bytes = partition.read(3, 1 << 20).unwrap();
    let batch = batches(&bytes).next().unwrap().unwrap();
    let records = batch.records().unwrap();
    assert_eq!(records.len(), 2);
    assert_eq!(
        records[0],
        Record {
            key: b"key",
            value: b"batch-1-value"
        }
    );
    assert!(
        partition.read(10, 100).unwrap().is_empty(),
        "next_offset reads nothing"
    );
    assert!(matches!(
        partition.read(11, 100),
        Err(Error::OffsetOutOfRange { .. })
    ));
}

#[test]
fn segments_roll_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let before = {
        let mut partition = Partition::open(dir.path(), small_config()).unwrap();
        for batch in 0..40 {
            append_numbered(&mut partition, batch, 3, batch as i64);
        }
        assert!(
            partition.segment_base_offsets().len() > 3,
            "1 KiB segments roll"
        );
        read_all(&partition)
    };
    let partition = Partition::open(dir.path(), small_config()).unwrap();
    assert_eq!(partition.next_offset(), 120);
    assert_eq!(read_all(&partition), before);
    assert!(dir.path().join("00000000000000000000.log").exists());
}

#[test]
fn a_second_writer_is_locked_out() {
    let dir = tempfile::tempdir().unwrap();
    let partition = Partition::open(dir.path(), small_config()).unwrap();
    assert!(matches!(
        Partition::open(dir.path(), small_config()),
        Err(Error::Locked { .. })
    ));
    drop(partition);
    Partition::open(dir.path(), small_config()).expect("the lock goes with the handle");
}

#[test]
fn limits_and_bad_configurations_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let bad = PartitionConfig {
        segment_bytes_max: 10,
        ..small_config()
    };
    assert!(matches!(
        Partition::open(dir.path(), bad),
        Err(Error::Config(_))
    ));
    let bad = PartitionConfig {
        fsync: FsyncPolicy::Interval { interval_ms: 0 },
        ..small_config()
    };
    assert!(matches!(
        Partition::open(dir.path(), bad),
        Err(Error::Config(_))
    ));

    let mut partition = Partition::open(dir.path(), small_config()).unwrap();
    assert!(matches!(
        partition.append_records(&[], 0),
        Err(Error::InvalidArgument(_))
    ));
    assert!(partition
        .append_payload(b"x", BATCH_RECORDS_MAX + 1, 0, 0)
        .is_err());
    assert!(matches!(
        partition.append_payload(&[0u8; 2000], 1, 0, 0),
        Err(Error::BatchTooLarge { .. })
    ));
    assert!(
        partition.append_payload(b"x", 1, 5, 4).is_err(),
        "max before first"
    );
    let config = PartitionConfig {
        segment_bytes_max: 1 << 30,
        ..small_config()
    };
    drop(partition);
    let mut partition = Partition::open(dir.path(), config).unwrap();
    assert!(matches!(
        partition.append_payload(&vec![0u8; BATCH_BYTES_MAX], 1, 0, 0),
        Err(Error::BatchTooLarge { .. })
    ));
    assert_eq!(partition.next_offset(), 0, "nothing refused was written");
}

#[test]
fn offset_for_time_finds_the_first_batch_at_or_after() {
    let dir = tempfile::tempdir().unwrap();
    let mut partition = Partition::open(dir.path(), small_config()).unwrap();
    // Timestamps 0, 10, 20, ... with one batch going back in time.
    let mut bases = Vec::new();
    for batch in 0..50u64 {
        let timestamp = if batch == 25 { 5 } else { batch as i64 * 10 };
        bases.push(append_numbered(&mut partition, batch, 2, timestamp));
    }
    let check = |partition: &Partition| {
        assert_eq!(partition.offset_for_time(-1).unwrap(), Some(0));
        assert_eq!(partition.offset_for_time(0).unwrap(), Some(0));
        assert_eq!(partition.offset_for_time(1).unwrap(), Some(bases[1]));
        assert_eq!(partition.offset_for_time(250).unwrap(), Some(bases[26]));
        assert_eq!(partition.offset_for_time(241).unwrap(), Some(bases[26]));
        assert_eq!(partition.offset_for_time(490).unwrap(), Some(bases[49]));
        assert_eq!(partition.offset_for_time(491).unwrap(), None);
    };
    check(&partition);
    drop(partition);
    check(&Partition::open(dir.path(), small_config()).unwrap());
}

#[test]
fn retention_deletes_old_and_excess_segments_but_never_the_active_one() {
    let dir = tempfile::tempdir().unwrap();
    let config = PartitionConfig {
        retention_ms: Some(100),
        retention_bytes: Some(3000),
        ..small_config()
    };
    let mut partition = Partition::open(dir.path(), config).unwrap();
    for batch in 0..60u64 {
        append_numbered(&mut partition, batch, 2, 1000 + batch as i64);
    }
    let segments = partition.segment_base_offsets().len();
    let outcome = partition.apply_retention(1000).unwrap();
    assert!(
        outcome.segments_deleted > 0,
        "over 3000 bytes, so the size limit deletes"
    );
    assert!(partition.size_bytes() <= 3000);
    assert_eq!(
        partition.segment_base_offsets().len(),
        segments - outcome.segments_deleted
    );
    assert_eq!(
        partition.log_start_offset(),
        partition.segment_base_offsets()[0]
    );
    assert!(matches!(
        partition.read(0, 100),
        Err(Error::OffsetOutOfRange { .. })
    ));

    let outcome = partition.apply_retention(1_000_000).unwrap();
    assert!(outcome.segments_deleted > 0);
    assert_eq!(
        partition.segment_base_offsets().len(),
        1,
        "only the active segment is left"
    );
    assert_eq!(partition.next_offset(), 120);
    let start = partition.log_start_offset();
    drop(partition);
    let partition = Partition::open(dir.path(), config).unwrap();
    assert_eq!(
        (partition.log_start_offset(), partition.next_offset()),
        (start, 120)
    );
    read_all(&partition);
}

#[test]
fn every_fsync_policy_appends_and_flushes() {
    for fsync in [
        FsyncPolicy::EveryBatch,
        FsyncPolicy::Interval { interval_ms: 1 },
        FsyncPolicy::Never,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let config = PartitionConfig {
            fsync,
            ..small_config()
        };
        let mut partition = Partition::open(dir.path(), config).unwrap();
        for batch in 0..20 {
            append_numbered(&mut partition, batch, 1, 0);
            if batch == 10 {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        }
        partition.flush().unwrap();
        drop(partition);
        assert_eq!(
            Partition::open(dir.path(), config).unwrap().next_offset(),
            20
        );
    }
}

/// The bench's workload at a tiny size, so the bench cannot rot unnoticed.
#[test]
fn bench_workload_smoke() {
    let dir = tempfile::tempdir().unwrap();
    let mut partition = Partition::open(dir.path(), PartitionConfig::default()).unwrap();
    let value = [7u8; 100];
    let records: Vec<Record<'_>> = (0..1000)
        .map(|_| Record {
            key: b"",
            value: &value,
        })
        .collect();
    for batch in 0..3 {
        partition.append_records(&records, batch).unwrap();
    }
    let mut offset = 0;
    let mut buffer = Vec::new();
    let mut count = 0;
    while offset < partition.next_offset() {
        partition.read_into(offset, 1 << 20, &mut buffer).unwrap();
        for batch in batches(&buffer) {
            let batch = batch.unwrap();
            count += batch.records().unwrap().len();
            offset = batch.header.next_offset();
        }
    }
    assert_eq!(count, 3000);
}

#[test]
fn payload_reads_drop_the_headers_and_keep_the_payloads_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut partition = Partition::open(dir.path(), small_config()).unwrap();
    partition.append_payload(b"first", 2, 1, 1).unwrap();
    partition.append_payload(b"second!", 1, 2, 2).unwrap();
    partition.append_payload(b"third", 4, 3, 3).unwrap();
    let mut out = vec![0xAA; 3];
    partition.read_payloads_into(0, 1 << 20, &mut out).unwrap();
    assert_eq!(out, b"firstsecond!third");
    // From an offset inside the second batch: that batch whole, then the rest.
    partition.read_payloads_into(2, 1 << 20, &mut out).unwrap();
    assert_eq!(out, b"second!third");
    // A tiny budget still returns the first batch whole.
    partition.read_payloads_into(3, 1, &mut out).unwrap();
    assert_eq!(out, b"third");
    partition.read_payloads_into(7, 1 << 20, &mut out).unwrap();
    assert!(out.is_empty());
    assert!(matches!(
        partition.read_payloads_into(8, 1 << 20, &mut out),
        Err(Error::OffsetOutOfRange { .. })
    ));
}

#[test]
fn truncation_cuts_back_to_a_batch_boundary_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = small_config();
    config.segment_bytes_max = 400;
    let mut partition = Partition::open(dir.path(), config).unwrap();
    let mut bases = Vec::new();
    for batch in 0..12 {
        bases.push(
            partition
                .append_payload(&[batch as u8; 60], 2, batch, batch)
                .unwrap(),
        );
    }
    assert!(partition.segment_base_offsets().len() >= 3);
    // Inside a batch: refused, nothing changed.
    assert!(matches!(
        partition.truncate_to(bases[5] + 1),
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(partition.next_offset(), 24);
    // At a segment's base: that segment and the later ones go.
    let second = partition.segment_base_offsets()[1];
    partition.truncate_to(second).unwrap();
    assert_eq!(partition.next_offset(), second);
    assert_eq!(partition.segment_base_offsets(), vec![0]);
    // Appends go on from there, and everything reads back after a reopen.
    assert_eq!(partition.append_payload(b"new", 1, 99, 99).unwrap(), second);
    partition.truncate_to(bases[1]).unwrap();
    assert_eq!(partition.next_offset(), bases[1]);
    partition.append_payload(b"after", 3, 100, 100).unwrap();
    drop(partition);
    let partition = Partition::open(dir.path(), config).unwrap();
    let bytes = partition.read(0, 1 << 20).unwrap();
    let payloads: Vec<Vec<u8>> = batches(&bytes)
        .map(|b| b.unwrap().payload.to_vec())
        .collect();
    assert_eq!(payloads, vec![vec![0u8; 60], b"after".to_vec()]);
    assert_eq!(partition.next_offset(), 5);
}

#[test]
fn truncation_to_the_log_start_empties_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut partition = Partition::open(dir.path(), small_config()).unwrap();
    partition.append_payload(b"a", 1, 1, 1).unwrap();
    partition.append_payload(b"b", 1, 2, 2).unwrap();
    partition.truncate_to(0).unwrap();
    assert_eq!(partition.next_offset(), 0);
    assert!(partition.read(0, 100).unwrap().is_empty());
    assert!(matches!(
        partition.truncate_to(1),
        Err(Error::OffsetOutOfRange { .. })
    ));
    assert_eq!(partition.append_payload(b"c", 1, 3, 3).unwrap(), 0);
}
