//! Criterion benches of the engine on the exchange-core-like mix (see `sdi_exchange::workload`).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sdi_exchange::workload::{funding_commands, mixed_workload, workload_config};
use sdi_exchange::Engine;

fn bench_mix(c: &mut Criterion) {
    let commands = mixed_workload(200_000, 42);
    let mut group = c.benchmark_group("engine");
    group.throughput(Throughput::Elements(commands.len() as u64));
    for funds in [false, true] {
        group.bench_function(
            if funds {
                "mix_with_funds"
            } else {
                "mix_matching_only"
            },
            |b| {
                let mut events = Vec::with_capacity(commands.len() * 4);
                b.iter_batched_ref(
                    || {
                        let mut engine = Engine::new(workload_config(funds)).expect("valid config");
                        if funds {
                            // Fund every account first, or every order is refused cheaply.
                            let mut sink = Vec::new();
                            for command in funding_commands() {
                                engine.process(&command, 0, &mut sink);
                            }
                        }
                        engine
                    },
                    |engine| {
                        events.clear();
                        for (seq, command) in commands.iter().enumerate() {
                            engine.process(command, seq as u64 + 1, &mut events);
                        }
                    },
                    criterion::BatchSize::LargeInput,
                );
            },
        );
    }
    group.finish();
}

criterion_group!(benches, bench_mix);
criterion_main!(benches);
