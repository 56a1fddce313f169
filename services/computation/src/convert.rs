//! Between the contracts and the libraries: proto specs and params to the indicator library's,
//! results back to proto messages, and every error to a `tonic::Status`, in one place.

use std::collections::HashMap;

use tickmesh_indicators::signals::{Action, Evaluation, Params, Strategy as LibStrategy};
use tickmesh_indicators::{Kind, Spec};
use tickmesh_proto::v1::{
    IndicatorKind, IndicatorSpec, Interval, Signal, SignalAction, Strategy, StrategyParams,
    StrategyVote,
};
use tonic::Status;

pub use tickmesh_mesh::status::bad_field;

/// A known, specified interval.
pub fn interval(value: i32, field: &str) -> Result<Interval, Status> {
    match Interval::try_from(value) {
        Ok(Interval::Unspecified) | Err(_) => Err(bad_field(
            field,
            format!("{value} is not a candle interval (INTERVAL_1S .. INTERVAL_1D)"),
        )),
        Ok(interval) => Ok(interval),
    }
}

/// Symbols of a multi-symbol request: 1 to `max`, each a valid [`tickmesh_proto::Symbol`].
pub fn symbols(symbols: &[String], max: usize) -> Result<(), Status> {
    if symbols.is_empty() {
        return Err(bad_field("symbols", "at least one symbol"));
    }
    if symbols.len() > max {
        return Err(bad_field(
            "symbols",
            format!("at most {max} symbols per call, got {}", symbols.len()),
        ));
    }
    for (i, symbol) in symbols.iter().enumerate() {
        tickmesh_proto::Symbol::check(symbol)
            .map_err(|e| bad_field(format!("symbols[{i}]"), e.to_string()))?;
    }
    Ok(())
}

/// The library's spec of a proto spec, defaults filled in and validated.
pub fn spec(proto: &IndicatorSpec, field: &str) -> Result<Spec, Status> {
    let kind = match IndicatorKind::try_from(proto.kind) {
        Ok(IndicatorKind::Unspecified) | Err(_) => {
            return Err(bad_field(
                format!("{field}.kind"),
                format!("{} is not a known indicator", proto.kind),
            ));
        }
        // The proto enum lists the indicators in the library's order, from 1.
        Ok(kind) => Kind::ALL[kind as usize - 1],
    };
    Spec {
        kind,
        period: proto.period,
        fast_period: proto.fast_period,
        slow_period: proto.slow_period,
        signal_period: proto.signal_period,
        deviations: proto.deviations,
    }
    .resolved()
    .map_err(|e| indicator_error(e, field))
}

/// The proto form of a resolved spec.
pub fn spec_to_proto(spec: &Spec) -> IndicatorSpec {
    IndicatorSpec {
        kind: spec.kind as i32 + 1,
        period: spec.period,
        fast_period: spec.fast_period,
        slow_period: spec.slow_period,
        signal_period: spec.signal_period,
        deviations: spec.deviations,
    }
}

/// A library error about the request's parameters: INVALID_ARGUMENT on `field`.
pub fn indicator_error(error: tickmesh_indicators::Error, field: &str) -> Status {
    match &error {
        tickmesh_indicators::Error::InvalidParameter { name, .. } => {
            bad_field(format!("{field}.{name}"), error.to_string())
        }
        _ => bad_field(field, error.to_string()),
    }
}

/// Why one symbol could not be computed (it goes into the response's `errors`).
pub fn symbol_reason(error: &tickmesh_indicators::Error) -> String {
    match error {
        tickmesh_indicators::Error::NotEnoughData { need, have } => {
            format!("not enough history: {have} bars, the indicator needs {need}")
        }
        other => other.to_string(),
    }
}

/// The library's strategy params of the proto ones plus the strategies to combine.
pub fn params(proto: Option<&StrategyParams>, strategies: &[i32]) -> Result<Params, Status> {
    let p = proto.cloned().unwrap_or_default();
    let mut set = Vec::new();
    for (i, s) in strategies.iter().enumerate() {
        set.push(match Strategy::try_from(*s) {
            Ok(Strategy::MaCrossover) => LibStrategy::MaCrossover,
            Ok(Strategy::Rsi) => LibStrategy::Rsi,
            Ok(Strategy::Macd) => LibStrategy::Macd,
            Ok(Strategy::Bollinger) => LibStrategy::Bollinger,
            _ => {
                return Err(bad_field(
                    format!("strategies[{i}]"),
                    format!("{s} is not a strategy that can be combined"),
                ));
            }
        });
    }
    Params {
        fast_ma_period: p.fast_ma_period,
        slow_ma_period: p.slow_ma_period,
        rsi_period: p.rsi_period,
        rsi_overbought: p.rsi_overbought,
        rsi_oversold: p.rsi_oversold,
        bollinger_period: p.bollinger_period,
        bollinger_deviations: p.bollinger_deviations,
        strategies: set.into_iter().collect(),
        ..Params::default()
    }
    .resolved()
    .map_err(|e| indicator_error(e, "params"))
}

fn action(action: Action) -> SignalAction {
    match action {
        Action::Buy => SignalAction::Buy,
        Action::Sell => SignalAction::Sell,
        Action::Hold => SignalAction::Hold,
    }
}

fn strategy(strategy: LibStrategy) -> Strategy {
    match strategy {
        LibStrategy::MaCrossover => Strategy::MaCrossover,
        LibStrategy::Rsi => Strategy::Rsi,
        LibStrategy::Macd => Strategy::Macd,
        LibStrategy::Bollinger => Strategy::Bollinger,
    }
}

/// The combined signal of an evaluation at the bar opening at `time_us`.
pub fn signal(symbol: &str, interval: Interval, time_us: i64, evaluation: &Evaluation) -> Signal {
    let indicators: HashMap<String, f64> = evaluation
        .values
        .iter()
        .filter(|v| v.value.is_finite())
        .map(|v| (v.name.to_string(), v.value))
        .collect();
    Signal {
        symbol: symbol.to_owned(),
        interval: interval as i32,
        time_us,
        strategy: Strategy::Combined as i32,
        action: action(evaluation.action) as i32,
        confidence: evaluation.confidence,
        price: evaluation.close,
        indicators,
        votes: evaluation
            .votes
            .iter()
            .map(|v| StrategyVote {
                strategy: strategy(v.strategy) as i32,
                action: action(v.action) as i32,
                strength: v.strength,
            })
            .collect(),
    }
}

/// A store failure while reading or writing.
pub fn store_error(error: tickmesh_store::StoreError) -> Status {
    Status::unavailable(format!("store: {error}"))
}
