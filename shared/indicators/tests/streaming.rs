#![allow(clippy::unwrap_used)]
//! For random valid series and parameters, streaming gives the same bits as batch at every bar.

use proptest::prelude::*;
use tickmesh_indicators::{Bar, Columns, Error, Kind, Spec, Streaming, compute};

/// A valid spec of any kind, with small periods so that short series warm up.
fn spec() -> impl Strategy<Value = Spec> {
    (
        0..Kind::ALL.len(),
        1u32..30,
        2u32..15,
        1u32..20,
        1u32..12,
        0u32..9,
    )
        .prop_map(|(k, period, fast, extra, small, dev)| {
            let kind = Kind::ALL[k];
            let min = match kind {
                Kind::Rsi
                | Kind::Bbands
                | Kind::Stddev
                | Kind::Willr
                | Kind::Cci
                | Kind::Mfi
                | Kind::Adx
                | Kind::RealizedVolatility => 2,
                _ => 1,
            };
            match kind {
                Kind::Macd => Spec::new(kind)
                    .with_fast_period(fast)
                    .with_slow_period(fast + extra)
                    .with_signal_period(small),
                Kind::Stoch => Spec::new(kind)
                    .with_period(period.min(15))
                    .with_fast_period(small)
                    .with_slow_period(extra.min(8)),
                // Zero (the default) now and then; quarter steps of deviations.
                _ => Spec::new(kind)
                    .with_period(if period == 29 { 0 } else { period.max(min) })
                    .with_deviations(f64::from(dev) * 0.5),
            }
        })
}

/// A random walk with flat stretches and zero volumes, so that every branch is reached.
fn bars() -> impl Strategy<Value = Vec<Bar>> {
    let step = (
        -0.04f64..0.04,
        0.0f64..0.02,
        0.0f64..0.02,
        0u32..5_000,
        0u8..10,
    );
    (prop::collection::vec(step, 0..200), 1e-3f64..1e4).prop_map(|(steps, start)| {
        let mut close = start;
        steps
            .into_iter()
            .map(|(r, up, down, volume, kind)| {
                let open = close;
                if kind > 1 {
                    close *= r.exp();
                }
                let (high, low) = if kind == 0 {
                    (close, close)
                } else {
                    (open.max(close) * (1.0 + up), open.min(close) * (1.0 - down))
                };
                let volume = if kind == 1 { 0.0 } else { f64::from(volume) };
                Bar {
                    open,
                    high,
                    low,
                    close,
                    volume,
                }
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn streaming_equals_batch_bit_for_bit(spec in spec(), bars in bars()) {
        let column = |f: fn(&Bar) -> f64| bars.iter().map(f).collect::<Vec<f64>>();
        let (open, high, low, close, volume) = (
            column(|b| b.open),
            column(|b| b.high),
            column(|b| b.low),
            column(|b| b.close),
            column(|b| b.volume),
        );
        let cols = Columns { open: &open, high: &high, low: &low, close: &close, volume: &volume };
        let mut stream = Streaming::new(&spec).unwrap();
        let streamed: Vec<Option<Vec<f64>>> =
            bars.iter().map(|bar| stream.update(*bar).map(<[f64]>::to_vec)).collect();
        match compute(&spec, &cols) {
            Ok(batch) => {
                for (i, step) in streamed.iter().enumerate() {
                    match step {
                        None => prop_assert!(i < batch.lookback, "not warm at {}", i),
                        Some(values) => {
                            prop_assert!(i >= batch.lookback, "warm too early at {}", i);
                            for (value, (name, column)) in values.iter().zip(&batch.outputs) {
                                prop_assert_eq!(
                                    value.to_bits(),
                                    column[i].to_bits(),
                                    "{} at {}: streaming {} batch {}",
                                    name,
                                    i,
                                    value,
                                    column[i]
                                );
                            }
                        }
                    }
                }
            }
            Err(Error::NotEnoughData { need, have }) => {
                prop_assert_eq!(have, bars.len());
                prop_assert_eq!(need, spec.lookback() + 1);
                prop_assert!(streamed.iter().all(Option::is_none));
            }
            Err(other) => prop_assert!(false, "unexpected error {}", other),
        }
    }
}
