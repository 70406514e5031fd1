//! Crash safety: torn and damaged tails are cut, damage in the middle is
//! refused, and index files are rebuilt from the data files.

mod common;

use std::path::{Path, PathBuf};

use common::{append_numbered, read_all};
use sdi_log::{BatchHeader, Error, Partition, PartitionConfig};

fn config() -> PartitionConfig {
    PartitionConfig {
        segment_bytes_max: 2048,
        index_interval_bytes: 100,
        ..common::small_config()
    }
}

/// A partition of several segments; returns what it holds.
fn build(dir: &Path) -> Vec<(BatchHeader, Vec<u8>)> {
    let mut partition = Partition::open(dir, config()).unwrap();
    for batch in 0..60u64 {
        append_numbered(
            &mut partition,
            batch,
            1 + (batch % 3) as usize,
            batch as i64,
        );
    }
    assert!(partition.segment_base_offsets().len() >= 3);
    read_all(&partition)
}

fn segment_files(dir: &Path, extension: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|found| found == extension))
        .collect();
    files.sort();
    files
}

/// The active segment's data file and where its last batch begins.
fn last_batch(dir: &Path, all: &[(BatchHeader, Vec<u8>)]) -> (PathBuf, Vec<u8>, usize) {
    let log = segment_files(dir, "log").pop().unwrap();
    let bytes = std::fs::read(&log).unwrap();
    let last = all.last().unwrap().0;
    (log, bytes.clone(), bytes.len() - last.batch_bytes as usize)
}

fn check_recovered_without_last(
    dir: &Path,
    all: &[(BatchHeader, Vec<u8>)],
    log: &Path,
    start: usize,
) {
    let mut partition = Partition::open(dir, config()).unwrap();
    let last = all.last().unwrap().0;
    assert_eq!(
        partition.next_offset(),
        last.base_offset,
        "exactly the last batch is cut"
    );
    assert_eq!(read_all(&partition), all[..all.len() - 1]);
    assert_eq!(
        std::fs::metadata(log).unwrap().len(),
        start as u64,
        "the torn tail is gone from disk"
    );
    // The partition goes on from there: the offsets of the lost batch are given out again.
    assert_eq!(append_numbered(&mut partition, 999, 1, 0), last.base_offset);
}

#[test]
fn a_torn_last_batch_is_cut_at_every_byte() {
    let dir = tempfile::tempdir().unwrap();
    let all = build(dir.path());
    let (log, original, start) = last_batch(dir.path(), &all);
    for cut in start..original.len() {
        std::fs::write(&log, &original[..cut]).unwrap();
        check_recovered_without_last(dir.path(), &all, &log, start);
    }
}

#[test]
fn a_damaged_last_batch_is_cut_at_every_byte() {
    let dir = tempfile::tempdir().unwrap();
    let all = build(dir.path());
    let (log, original, start) = last_batch(dir.path(), &all);
    for at in start..original.len() {
        let mut damaged = original.clone();
        damaged[at] ^= 0x01;
        std::fs::write(&log, &damaged).unwrap();
        check_recovered_without_last(dir.path(), &all, &log, start);
    }
}

#[test]
fn a_damaged_batch_followed_by_a_valid_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let all = build(dir.path());
    let (log, original, start) = last_batch(dir.path(), &all);
    let second_to_last = start - all[all.len() - 2].0.batch_bytes as usize;
    for at in [second_to_last, second_to_last + 8, start - 1] {
        let mut damaged = original.clone();
        damaged[at] ^= 0x80;
        std::fs::write(&log, &damaged).unwrap();
        assert!(matches!(
            Partition::open(dir.path(), config()),
            Err(Error::Corrupt { .. })
        ));
        assert_eq!(
            std::fs::read(&log).unwrap(),
            damaged,
            "nothing is cut from a corrupt log"
        );
    }
    std::fs::write(&log, &original).unwrap();
    assert_eq!(
        read_all(&Partition::open(dir.path(), config()).unwrap()),
        all
    );
}

#[test]
fn missing_or_garbage_indexes_are_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let all = build(dir.path());
    let indexes: Vec<PathBuf> = [
        segment_files(dir.path(), "index"),
        segment_files(dir.path(), "timeindex"),
    ]
    .concat();
    let originals: Vec<Vec<u8>> = indexes
        .iter()
        .map(|path| std::fs::read(path).unwrap())
        .collect();
    assert!(originals.iter().any(|bytes| !bytes.is_empty()));
    let damages: [fn(&Path); 4] = [
        |path| std::fs::remove_file(path).unwrap(),
        |path| std::fs::write(path, b"garbage that is not an index").unwrap(),
        |path| std::fs::write(path, [0xffu8; 24]).unwrap(),
        |path| std::fs::write(path, []).unwrap(),
    ];
    for damage in damages {
        for path in &indexes {
            damage(path);
        }
        let partition = Partition::open(dir.path(), config()).unwrap();
        assert_eq!(read_all(&partition), all);
        for (index, (path, original)) in indexes.iter().zip(&originals).enumerate() {
            assert_eq!(
                &std::fs::read(path).unwrap(),
                original,
                "index file {index} rebuilt as written"
            );
        }
        assert_eq!(
            partition.offset_for_time(30).unwrap(),
            Some(all[30].0.base_offset)
        );
    }
}

#[test]
fn damage_in_a_closed_segment_is_refused_when_it_must_be_read() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    let log = segment_files(dir.path(), "log").remove(0);
    let mut bytes = std::fs::read(&log).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    std::fs::write(&log, &bytes).unwrap();
    std::fs::remove_file(log.with_extension("index")).unwrap();
    assert!(matches!(
        Partition::open(dir.path(), config()),
        Err(Error::Corrupt { .. })
    ));
}
