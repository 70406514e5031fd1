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
    drop(exchange);

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

#[test]
fn a_second_writer_is_refused_while_the_first_holds_the_journal() {
    let path = temp_journal("locked");
    let first =
        Exchange::open(workload_config(true), &path, Durability::Buffered, |_| {}).expect("open");
    let error = Exchange::open(workload_config(true), &path, Durability::Buffered, |_| {})
        .err()
        .expect("must refuse");
    assert!(matches!(error, Error::Locked { .. }), "{error}");
    drop(first);
    Exchange::open(workload_config(true), &path, Durability::Buffered, |_| {})
        .expect("free again once the first is gone");
}

#[test]
fn a_standby_follows_and_takes_over_without_losing_a_sequence_number() {
    use sdi_exchange::Standby;
    let path = temp_journal("standby");
    let mut commands = funding_commands();
    commands.extend(mixed_workload(6_000, 9));
    let (first_part, rest) = commands.split_at_mut(4_000);

    let mut primary =
        Exchange::open(workload_config(true), &path, Durability::Buffered, |_| {}).expect("open");
    let mut standby = Standby::follow(workload_config(true), &path).expect("follow");
    let mut primary_events = Vec::new();
    let mut standby_events = Vec::new();
    for batch in first_part.chunks_mut(700) {
        primary
            .submit(batch, 1, &mut primary_events)
            .expect("submit");
        standby
            .poll(|events| standby_events.extend_from_slice(events))
            .expect("poll");
        assert_eq!(standby.next_input_seq(), primary.next_input_seq());
        assert_eq!(standby.engine().state_hash(), primary.engine().state_hash());
    }
    assert_eq!(standby_events, primary_events);

    // While the primary lives, the standby cannot take over.
    let standby = match standby.try_take_over(Durability::Buffered, |_| {}) {
        Ok(Ok(_)) => panic!("took over from a live primary"),
        Ok(Err(standby)) => standby,
        Err(error) => panic!("{error}"),
    };
    // The primary writes a last batch the standby has not polled, then dies
    // in the middle of another record.
    primary
        .submit(&mut rest[..500], 1, &mut primary_events)
        .expect("submit");
    let hash_at_death = primary.engine().state_hash();
    let seq_at_death = primary.next_input_seq();
    drop(primary);
    let mut file = OpenOptions::new().append(true).open(&path).expect("open");
    file.write_all(&[0x5A; 20]).expect("torn write");
    drop(file);

    let mut taken_over_events = Vec::new();
    let mut promoted = match standby.try_take_over(Durability::Buffered, |events| {
        taken_over_events.extend_from_slice(events)
    }) {
        Ok(Ok(exchange)) => exchange,
        Ok(Err(_)) => panic!("the primary is gone, the lock must be free"),
        Err(error) => panic!("{error}"),
    };
    assert_eq!(promoted.next_input_seq(), seq_at_death);
    assert_eq!(promoted.engine().state_hash(), hash_at_death);
    assert!(
        !taken_over_events.is_empty(),
        "the unpolled batch was replayed on takeover"
    );

    // It goes on where the primary stopped: the same state as one uninterrupted run.
    let mut events = Vec::new();
    promoted
        .submit(&mut rest[500..], 1, &mut events)
        .expect("submit");
    let mut reference = Exchange::in_memory(workload_config(true)).expect("engine");
    let mut all = funding_commands();
    all.extend(mixed_workload(6_000, 9));
    let mut sink = Vec::new();
    for batch in all.chunks_mut(700) {
        reference.submit(batch, 1, &mut sink).expect("submit");
    }
    assert_eq!(
        promoted.engine().state_hash(),
        reference.engine().state_hash()
    );
    assert_eq!(promoted.next_input_seq(), reference.next_input_seq());
}
