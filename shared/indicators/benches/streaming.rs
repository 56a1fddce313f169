//! Streaming costs: nanoseconds per `Streaming::update` for every indicator (default
//! parameters, warm state), and one signal cycle: a new bar for each of 1,000 symbols.
//!
//! Run with `cargo bench -p tickmesh-indicators --bench streaming`.
#![allow(
    missing_docs,
    reason = "criterion's macros generate undocumented functions"
)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use tickmesh_indicators::signals::{Params, SignalEngine};
use tickmesh_indicators::{Bar, Kind, Spec, Streaming};

/// A deterministic random walk of bars (xorshift64*).
fn bars(n: usize, seed: u64) -> Vec<Bar> {
    let mut state = seed.max(1);
    let mut uniform = move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut close: f64 = 100.0;
    (0..n)
        .map(|_| {
            let open = close;
            close *= 1.0 + (uniform() - 0.5) * 0.02;
            Bar {
                open,
                high: open.max(close) * (1.0 + uniform() * 0.005),
                low: open.min(close) * (1.0 - uniform() * 0.005),
                close,
                volume: (uniform() * 1e6).floor(),
            }
        })
        .collect()
}

fn updates(c: &mut Criterion) {
    let data = bars(4096, 42);
    let mut group = c.benchmark_group("streaming_update");
    for kind in Kind::ALL {
        let mut stream = Streaming::new(&Spec::new(kind)).expect("default specs are valid");
        for bar in &data {
            stream.update(*bar);
        }
        let mut i = 0;
        group.bench_function(kind.name(), |b| {
            b.iter(|| {
                i = (i + 1) & 4095;
                black_box(stream.update(data[i]).map(|o| o[0]))
            })
        });
    }
    group.finish();
}

fn signals(c: &mut Criterion) {
    const SYMBOLS: usize = 1_000;
    let history = bars(200, 7);
    let mut engines: Vec<SignalEngine> = (0..SYMBOLS)
        .map(|s| {
            let mut engine = SignalEngine::new(&Params::default()).expect("default params");
            for bar in &history[..100 + s % 50] {
                engine.update(*bar);
            }
            engine
        })
        .collect();
    let mut t = 0;
    c.bench_function("signals_1000_symbols_one_bar", |b| {
        b.iter(|| {
            t = (t + 1) % history.len();
            let mut buys = 0usize;
            for (s, engine) in engines.iter_mut().enumerate() {
                let bar = history[(t + s) % history.len()];
                if let Some(evaluation) = engine.update(bar) {
                    buys += usize::from(evaluation.confidence > 0.5);
                }
            }
            black_box(buys)
        })
    });
}

criterion_group!(benches, updates, signals);
criterion_main!(benches);
