//! The matcher stage between two rings gives the same events as the engine
//! called directly, and stops cleanly when the gateway closes its ring.

use std::time::{Duration, Instant};

use sdi_exchange::pipeline::{encode_events, MatcherStage, StageConfig};
use sdi_exchange::types::{COMMAND_BYTES, EVENT_BYTES};
use sdi_exchange::workload::{funding_commands, mixed_workload, workload_config};
use sdi_exchange::Exchange;

#[test]
fn the_stage_matches_the_engine_called_directly() {
    let dir = std::env::temp_dir().join(format!("sdi-pipeline-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let (commands_path, events_path) = (dir.join("commands"), dir.join("events"));
    sdi_ring::create(&commands_path, 1 << 16, true).expect("ring");
    sdi_ring::create(&events_path, 1 << 16, true).expect("ring");

    let mut commands = funding_commands();
    commands.extend(mixed_workload(30_000, 4));
    let mut expected = Vec::new();
    let mut direct = Exchange::in_memory(workload_config(true)).expect("engine");
    // The stage stamps with the wall clock, which sets each account's trading
    // day; stamp the direct run with today's time too.
    let today_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64;
    direct
        .submit(&mut commands.clone(), today_ns, &mut expected)
        .expect("submit");
    let mut expected_bytes = Vec::new();
    encode_events(&expected, &mut expected_bytes);

    let stage = MatcherStage::start(
        Exchange::in_memory(workload_config(true)).expect("engine"),
        &commands_path,
        &events_path,
        StageConfig {
            batch_records_max: 512,
            ..StageConfig::default()
        },
    )
    .expect("start");
    let mut gateway = sdi_ring::Producer::attach(&commands_path).expect("producer");
    let mut market_data = sdi_ring::Consumer::attach(&events_path).expect("consumer");
    let rows: Vec<u8> = commands.iter().flat_map(|c| c.to_bytes()).collect();
    let mut pushed = 0;
    let mut received = Vec::new();
    let mut buffer = vec![0u8; 1024 * EVENT_BYTES];
    let deadline = Instant::now() + Duration::from_secs(60);
    while received.len() < expected_bytes.len() {
        assert!(Instant::now() < deadline, "the stage stalled");
        if pushed < commands.len() {
            pushed += gateway
                .try_push_rows(&rows[pushed * COMMAND_BYTES..], COMMAND_BYTES)
                .expect("push");
            if pushed == commands.len() {
                gateway.close();
            }
        }
        let count = market_data
            .try_pop_rows(&mut buffer, EVENT_BYTES)
            .expect("pop");
        received.extend_from_slice(&buffer[..count * EVENT_BYTES]);
    }
    assert_eq!(received.len(), expected_bytes.len());
    assert!(received == expected_bytes, "the stage's events differ");
    // The gateway closed: the stage finishes on its own.
    let started = Instant::now();
    while !stage.is_finished() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the stage did not finish"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let report = stage.stop().expect("report");
    assert_eq!(report.commands, commands.len() as u64);
    assert_eq!(report.events, expected.len() as u64);
    assert_eq!(report.state_hash, direct.engine().state_hash());
    std::fs::remove_dir_all(&dir).expect("cleanup");
}
