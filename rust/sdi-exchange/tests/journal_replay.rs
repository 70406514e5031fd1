//! The sequencer's journal: replay rebuilds the same state and events, a torn
//! tail is cut off, corruption and a foreign configuration are refused.

use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};

use sdi_exchange::workload::{funding_commands, mixed_workload, workload_config};
use sdi_exchange::{Durability, Error, Event, Exchange};

fn temp_journal(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("sdi-exchange-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join("journal")
}

fn run_live(path: &std::path::Path, batches: usize) -> (Vec<Event>, u64, u64) {
    let mut exchange =
        Exchange::open(workload_config(true), path, Durability::Buffered, |_| {}).expect("open");
    let mut events = Vec::new();
    exchange
        .submit(&mut funding_commands(), 1, &mut events)
        .expect("fund");
    let mut commands = mixed_workload(batches * 500, 7);
    for (index, batch) in commands.chunks_mut(500).enumerate() {
        // Timestamps cross a day boundary halfway, and once go backwards (clamped).
        let now = if index == 3 {
            5
        } else {
            index as u64 * sdi_exchange::constants::DAY_NS / 4
        };
        exchange.submit(batch, now, &mut events).expect("submit");
    }
    (
        events,
        exchange.engine().state_hash(),
        exchange.next_input_seq(),
    )
}

#[test]
fn replay_rebuilds_the_same_state_and_events() {
    let path = temp_journal("replay");
    let (live_events, live_hash, next_seq) = run_live(&path, 10);
    assert!(live_events
        .iter()
        .any(|e| e.kind == sdi_exchange::EventKind::Trade as u8));
    let mut replayed = Vec::new();
    let exchange = Exchange::open(
        workload_config(true),
        &path,
        Durability::Buffered,
        |events| replayed.extend_from_slice(events),
    )
    .expect("reopen");
    assert_eq!(exchange.engine().state_hash(), live_hash);
    assert_eq!(exchange.next_input_seq(), next_seq);
    assert_eq!(replayed, live_events);
}

#[test]
fn a_torn_tail_is_cut_off_and_never_served() {
    let path = temp_journal("torn");
    let (_, _, next_seq) = run_live(&path, 2);
    let length = std::fs::metadata(&path).expect("journal").len();
    // A write the process died in: half a record of garbage at the end.
    let mut file = OpenOptions::new().append(true).open(&path).expect("open");
    file.write_all(&[0xAB; 40]).expect("write");
    drop(file);
    let exchange =
        Exchange::open(workload_config(true), &path, Durability::Buffered, |_| {}).expect("reopen");
    assert_eq!(exchange.next_input_seq(), next_seq);
    assert_eq!(std::fs::metadata(&path).expect("journal").len(), length);

    // A whole last record with a bad checksum is a torn write too.
    let mut file = OpenOptions::new().write(true).open(&path).expect("open");
    file.seek(SeekFrom::Start(length - 30)).expect("seek");
    file.write_all(&[0xFF; 4]).expect("write");
    drop(file);
    let exchange =
        Exchange::open(workload_config(true), &path, Durability::Buffered, |_| {}).expect("reopen");
    assert_eq!(exchange.next_input_seq(), next_seq - 1);
    assert_eq!(
        std::fs::metadata(&path).expect("journal").len(),
        length - 64
    );
}

#[test]
fn damage_in_the_middle_is_corruption_not_a_torn_tail() {
    let path = temp_journal("middle");
    run_live(&path, 2);
    let length = std::fs::metadata(&path).expect("journal").len();
    let mut file = OpenOptions::new().write(true).open(&path).expect("open");
    file.seek(SeekFrom::Start(64 + 64 * 10 + 20)).expect("seek");
    file.write_all(&[0x55; 8]).expect("write");
    drop(file);
    let error = Exchange::open(workload_config(true), &path, Durability::Buffered, |_| {})
        .err()
        .expect("must refuse");
    assert!(matches!(error, Error::Corrupt { .. }), "{error}");
    assert!(error.to_string().contains("corruption"), "{error}");
    // Nothing was cut off.
    assert_eq!(std::fs::metadata(&path).expect("journal").len(), length);
}

#[test]
fn a_journal_from_another_configuration_is_refused() {
    let path = temp_journal("config");
    run_live(&path, 1);
    let error = Exchange::open(workload_config(false), &path, Durability::Buffered, |_| {})
        .err()
        .expect("must refuse");
    assert!(
        error.to_string().contains("another configuration"),
        "{error}"
    );
}

#[test]
fn a_file_that_is_not_a_journal_is_refused() {
    let path = temp_journal("foreign");
    std::fs::write(&path, vec![7u8; 200]).expect("write");
    let error = Exchange::open(workload_config(true), &path, Durability::Buffered, |_| {})
        .err()
        .expect("must refuse");
    assert!(
        error.to_string().contains("not an sdi exchange journal"),
        "{error}"
    );
    std::fs::write(&path, b"short").expect("write");
    assert!(Exchange::open(workload_config(true), &path, Durability::Buffered, |_| {}).is_err());
}

#[test]
fn synced_appends_survive_reopen() {
    let path = temp_journal("sync");
    let mut exchange =
        Exchange::open(workload_config(true), &path, Durability::Sync, |_| {}).expect("open");
    let mut events = Vec::new();
    exchange
        .submit(&mut funding_commands(), 10, &mut events)
        .expect("fund");
    let hash = exchange.engine().state_hash();
    drop(exchange);
    let exchange =
        Exchange::open(workload_config(true), &path, Durability::Sync, |_| {}).expect("reopen");
    assert_eq!(exchange.engine().state_hash(), hash);
}
