//! Trading signals from streaming indicators: MA crossover, RSI zones, MACD signal-line cross
//! and Bollinger breakout, combined into one action with a confidence.
//!
//! # Votes
//!
//! Each strategy votes Buy, Sell or Hold with a strength in [0, 1]:
//!
//! - **MA crossover** (fast and slow EMA): Buy while the fast EMA is above the slow one, Sell
//!   while below; strength 1 on the bar where it crosses, 0.5 afterwards; Hold (0) when equal.
//! - **RSI**: Buy when the RSI leaves the oversold zone upwards, Sell when it leaves the
//!   overbought zone downwards, strength 1; inside a zone, the reversal it anticipates with a
//!   strength growing with the depth, up to 0.5 (`0.5 * (oversold - rsi) / oversold`, `0.5 *
//!   (rsi - overbought) / (100 - overbought)`); Hold (0) in between.
//! - **MACD**: like the MA crossover, for the MACD line against its signal line (the sign of
//!   the histogram): 1 on the crossing bar, 0.5 afterwards.
//! - **Bollinger breakout**: Buy when the close is above the upper band, Sell when below the
//!   lower band, strength `0.5 + 0.5 * min(1, distance beyond the band / band half-width)`;
//!   Hold (0) inside the bands.
//!
//! The first evaluation has no previous bar, so it sees no crossing.
//!
//! # Combination
//!
//! `net` is the sum of the enabled strategies' strengths, counted positive for Buy and negative
//! for Sell; `confidence = |net| / number of enabled strategies`, in [0, 1]. The combined
//! action is Buy for a positive and Sell for a negative `net` when `confidence` reaches
//! [`Params::min_confidence`], Hold otherwise.

use std::sync::Arc;

use crate::Error;
use crate::batch::Columns;
use crate::spec::{Column, check_period};
use crate::stream::Bar;
use crate::ta::check_data;
use crate::ta::ma::EmaState;
use crate::ta::osc::{MacdState, RsiState};
use crate::ta::vol::BbandsState;

/// A signal-generating strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// Fast EMA crossing the slow EMA.
    MaCrossover,
    /// RSI leaving the overbought / oversold zone.
    Rsi,
    /// MACD line crossing its signal line.
    Macd,
    /// Close breaking out of the Bollinger Bands.
    Bollinger,
}

impl Strategy {
    /// Every strategy, in proto order.
    pub const ALL: [Strategy; 4] = [
        Strategy::MaCrossover,
        Strategy::Rsi,
        Strategy::Macd,
        Strategy::Bollinger,
    ];

    /// The stable snake-case name.
    pub const fn name(self) -> &'static str {
        match self {
            Strategy::MaCrossover => "ma_crossover",
            Strategy::Rsi => "rsi",
            Strategy::Macd => "macd",
            Strategy::Bollinger => "bollinger",
        }
    }

    const fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// A set of strategies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StrategySet(u8);

impl StrategySet {
    /// Every strategy.
    pub const fn all() -> StrategySet {
        StrategySet(0b1111)
    }

    /// No strategy.
    pub const fn empty() -> StrategySet {
        StrategySet(0)
    }

    /// The set with `strategy` added.
    pub const fn with(self, strategy: Strategy) -> StrategySet {
        StrategySet(self.0 | strategy.bit())
    }

    /// Whether `strategy` is in the set.
    pub const fn contains(self, strategy: Strategy) -> bool {
        self.0 & strategy.bit() != 0
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The number of strategies in the set.
    pub const fn len(self) -> usize {
        self.0.count_ones() as usize
    }
}

impl FromIterator<Strategy> for StrategySet {
    fn from_iter<I: IntoIterator<Item = Strategy>>(iter: I) -> StrategySet {
        iter.into_iter()
            .fold(StrategySet::empty(), StrategySet::with)
    }
}

/// What a strategy recommends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Open or add to a long position.
    Buy,
    /// Close or go short.
    Sell,
    /// Do nothing.
    Hold,
}

/// One strategy's opinion.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Vote {
    /// The strategy.
    pub strategy: Strategy,
    /// What it recommends.
    pub action: Action,
    /// How strongly, in [0, 1] (0 for Hold).
    pub strength: f64,
}

/// Parameters of the strategies; zero values take the defaults (the proto `StrategyParams`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    /// Fast EMA of the MA crossover (12).
    pub fast_ma_period: u32,
    /// Slow EMA of the MA crossover (26).
    pub slow_ma_period: u32,
    /// RSI period (14).
    pub rsi_period: u32,
    /// RSI overbought level (70).
    pub rsi_overbought: f64,
    /// RSI oversold level (30).
    pub rsi_oversold: f64,
    /// MACD fast period (12).
    pub macd_fast_period: u32,
    /// MACD slow period (26).
    pub macd_slow_period: u32,
    /// MACD signal period (9).
    pub macd_signal_period: u32,
    /// Bollinger period (20).
    pub bollinger_period: u32,
    /// Bollinger width in standard deviations (2).
    pub bollinger_deviations: f64,
    /// Strategies to combine (empty: all of them).
    pub strategies: StrategySet,
    /// Confidence below which the combined action is Hold (0.25).
    pub min_confidence: f64,
}

impl Default for Params {
    fn default() -> Params {
        Params {
            fast_ma_period: 12,
            slow_ma_period: 26,
            rsi_period: 14,
            rsi_overbought: 70.0,
            rsi_oversold: 30.0,
            macd_fast_period: 12,
            macd_slow_period: 26,
            macd_signal_period: 9,
            bollinger_period: 20,
            bollinger_deviations: 2.0,
            strategies: StrategySet::all(),
            min_confidence: 0.25,
        }
    }
}

impl Params {
    /// Zero values replaced by their defaults, validated: periods in range, the fast EMA and
    /// MACD fast period below their slow counterparts, `0 < oversold < overbought < 100`, a
    /// finite non-negative width and a confidence threshold in [0, 1].
    pub fn resolved(&self) -> Result<Params, Error> {
        let d = Params::default();
        let or = |v: u32, default: u32| if v == 0 { default } else { v };
        let orf = |v: f64, default: f64| if v == 0.0 { default } else { v };
        let p = Params {
            fast_ma_period: or(self.fast_ma_period, d.fast_ma_period),
            slow_ma_period: or(self.slow_ma_period, d.slow_ma_period),
            rsi_period: or(self.rsi_period, d.rsi_period),
            rsi_overbought: orf(self.rsi_overbought, d.rsi_overbought),
            rsi_oversold: orf(self.rsi_oversold, d.rsi_oversold),
            macd_fast_period: or(self.macd_fast_period, d.macd_fast_period),
            macd_slow_period: or(self.macd_slow_period, d.macd_slow_period),
            macd_signal_period: or(self.macd_signal_period, d.macd_signal_period),
            bollinger_period: or(self.bollinger_period, d.bollinger_period),
            bollinger_deviations: orf(self.bollinger_deviations, d.bollinger_deviations),
            strategies: if self.strategies.is_empty() {
                d.strategies
            } else {
                self.strategies
            },
            min_confidence: self.min_confidence,
        };
        check_period("fast_ma_period", p.fast_ma_period as usize, 1)?;
        check_period("slow_ma_period", p.slow_ma_period as usize, 1)?;
        if p.fast_ma_period >= p.slow_ma_period {
            return Err(invalid(
                "fast_ma_period",
                p.fast_ma_period.into(),
                "must be less than slow_ma_period",
            ));
        }
        check_period("rsi_period", p.rsi_period as usize, 2)?;
        check_period("bollinger_period", p.bollinger_period as usize, 2)?;
        // The MACD periods are checked by its state.
        MacdState::new(
            p.macd_fast_period as usize,
            p.macd_slow_period as usize,
            p.macd_signal_period as usize,
        )?;
        let (ob, os) = (p.rsi_overbought, p.rsi_oversold);
        if !(os > 0.0 && os < 100.0) {
            return Err(invalid("rsi_oversold", os, "must be between 0 and 100"));
        }
        if !(ob > os && ob < 100.0) {
            return Err(invalid(
                "rsi_overbought",
                ob,
                "must be between rsi_oversold and 100",
            ));
        }
        if !(p.bollinger_deviations.is_finite() && p.bollinger_deviations >= 0.0) {
            return Err(invalid(
                "bollinger_deviations",
                p.bollinger_deviations,
                "must be finite and not negative",
            ));
        }
        if !(0.0..=1.0).contains(&p.min_confidence) {
            return Err(invalid(
                "min_confidence",
                p.min_confidence,
                "must be between 0 and 1",
            ));
        }
        Ok(p)
    }
}

fn invalid(name: &'static str, value: f64, reason: &'static str) -> Error {
    Error::InvalidParameter {
        name,
        value,
        reason,
    }
}

/// A named indicator value behind a signal (e.g. `rsi_14`).
#[derive(Debug, Clone, PartialEq)]
pub struct NamedValue {
    /// The name: `ema_12`, `ema_26`, `rsi_14` (periods from the params), `macd`,
    /// `macd_signal`, `bb_upper`, `bb_middle`, `bb_lower`, `close`.
    pub name: Arc<str>,
    /// Its value at the evaluated bar.
    pub value: f64,
}

/// The signal at one bar.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// Index of the bar (bars fed to the engine before it).
    pub index: usize,
    /// Close of the bar.
    pub close: f64,
    /// The votes of the enabled strategies, in [`Strategy::ALL`] order.
    pub votes: Vec<Vote>,
    /// The combined action.
    pub action: Action,
    /// Confidence of the combined action, in [0, 1].
    pub confidence: f64,
    /// The indicator values behind the votes.
    pub values: [NamedValue; 9],
}

impl Evaluation {
    /// Runs a fresh engine over `cols` (only `close` is read); one evaluation per bar once warm.
    pub fn from_history(params: &Params, cols: &Columns) -> Result<Vec<Evaluation>, Error> {
        let mut engine = SignalEngine::new(params)?;
        cols.check_lengths()?;
        cols.check_finite(&[Column::Close])?;
        check_data(cols.len(), engine.lookback())?;
        let mut evaluations = Vec::with_capacity(cols.len() - engine.lookback());
        for &close in cols.close {
            evaluations.extend(engine.update_close(close));
        }
        Ok(evaluations)
    }

    /// The evaluation at the last bar of `cols`.
    pub fn latest(params: &Params, cols: &Columns) -> Result<Evaluation, Error> {
        let mut engine = SignalEngine::new(params)?;
        cols.check_lengths()?;
        cols.check_finite(&[Column::Close])?;
        check_data(cols.len(), engine.lookback())?;
        let mut last = None;
        for &close in cols.close {
            last = engine.update_close(close);
        }
        last.ok_or(Error::NotEnoughData {
            need: engine.lookback() + 1,
            have: cols.len(),
        })
    }

    /// The value named `name`, if any.
    pub fn value(&self, name: &str) -> Option<f64> {
        self.values
            .iter()
            .find(|v| &*v.name == name)
            .map(|v| v.value)
    }
}

/// The previous bar's indicator state, for crossings.
#[derive(Debug, Clone, Copy)]
struct Previous {
    spread: f64,
    hist: f64,
    rsi: f64,
}

/// Signals of one symbol, updated bar by bar in O(1) without allocating (beyond the returned
/// evaluation).
#[derive(Debug, Clone)]
pub struct SignalEngine {
    params: Params,
    fast: EmaState,
    slow: EmaState,
    rsi: RsiState,
    macd: MacdState,
    bands: BbandsState,
    names: [Arc<str>; 9],
    previous: Option<Previous>,
    bars: usize,
    lookback: usize,
}

impl SignalEngine {
    /// An engine for `params` (resolved: zero values take their defaults).
    pub fn new(params: &Params) -> Result<SignalEngine, Error> {
        let p = params.resolved()?;
        let name = |s: String| -> Arc<str> { Arc::from(s) };
        let names = [
            name(format!("ema_{}", p.fast_ma_period)),
            name(format!("ema_{}", p.slow_ma_period)),
            name(format!("rsi_{}", p.rsi_period)),
            Arc::from("macd"),
            Arc::from("macd_signal"),
            Arc::from("bb_upper"),
            Arc::from("bb_middle"),
            Arc::from("bb_lower"),
            Arc::from("close"),
        ];
        let lookback = [
            p.slow_ma_period as usize - 1,
            p.rsi_period as usize,
            (p.macd_slow_period + p.macd_signal_period) as usize - 2,
            p.bollinger_period as usize - 1,
        ]
        .into_iter()
        .max()
        .unwrap_or(0);
        Ok(SignalEngine {
            params: p,
            fast: EmaState::new(p.fast_ma_period as usize)?,
            slow: EmaState::new(p.slow_ma_period as usize)?,
            rsi: RsiState::new(p.rsi_period as usize)?,
            macd: MacdState::new(
                p.macd_fast_period as usize,
                p.macd_slow_period as usize,
                p.macd_signal_period as usize,
            )?,
            bands: BbandsState::new(p.bollinger_period as usize, p.bollinger_deviations)?,
            names,
            previous: None,
            bars: 0,
            lookback,
        })
    }

    /// The resolved parameters.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// Bars before the first evaluation.
    pub fn lookback(&self) -> usize {
        self.lookback
    }

    /// Adds a bar (only the close is read); the evaluation once every indicator is warm. A
    /// non-finite close is ignored (`None`, state unchanged).
    pub fn update(&mut self, bar: Bar) -> Option<Evaluation> {
        self.update_close(bar.close)
    }

    fn update_close(&mut self, close: f64) -> Option<Evaluation> {
        if !close.is_finite() {
            return None;
        }
        let index = self.bars;
        self.bars += 1;
        let fast = self.fast.update(close);
        let slow = self.slow.update(close);
        let rsi = self.rsi.update(close);
        let macd = self.macd.update(close);
        let bands = self.bands.update(close);
        let (Some(fast), Some(slow), Some(rsi), Some([line, signal, hist]), Some(bands)) =
            (fast, slow, rsi, macd, bands)
        else {
            return None;
        };
        let now = Previous {
            spread: fast - slow,
            hist,
            rsi,
        };
        let previous = self.previous.replace(now);
        let p = &self.params;
        let votes: Vec<Vote> = Strategy::ALL
            .into_iter()
            .filter(|&s| p.strategies.contains(s))
            .map(|strategy| {
                let (action, strength) = match strategy {
                    Strategy::MaCrossover => crossing(now.spread, previous.map(|v| v.spread)),
                    Strategy::Macd => crossing(now.hist, previous.map(|v| v.hist)),
                    Strategy::Rsi => rsi_vote(
                        rsi,
                        previous.map(|v| v.rsi),
                        p.rsi_oversold,
                        p.rsi_overbought,
                    ),
                    Strategy::Bollinger => breakout(close, bands),
                };
                Vote {
                    strategy,
                    action,
                    strength,
                }
            })
            .collect();
        let net: f64 = votes
            .iter()
            .map(|v| match v.action {
                Action::Buy => v.strength,
                Action::Sell => -v.strength,
                Action::Hold => 0.0,
            })
            .sum();
        let confidence = (net.abs() / votes.len().max(1) as f64).min(1.0);
        let action = if confidence < p.min_confidence || net == 0.0 {
            Action::Hold
        } else if net > 0.0 {
            Action::Buy
        } else {
            Action::Sell
        };
        let [upper, middle, lower] = bands;
        let values = [fast, slow, rsi, line, signal, upper, middle, lower, close];
        let names = &self.names;
        let values = std::array::from_fn(|i| NamedValue {
            name: names[i].clone(),
            value: values[i],
        });
        Some(Evaluation {
            index,
            close,
            votes,
            action,
            confidence,
            values,
        })
    }
}

/// A crossing strategy on the sign of `now` (spread or histogram).
fn crossing(now: f64, previous: Option<f64>) -> (Action, f64) {
    let crossed = |up: bool| match previous {
        Some(prev) if up => prev <= 0.0,
        Some(prev) => prev >= 0.0,
        None => false,
    };
    if now > 0.0 {
        (Action::Buy, if crossed(true) { 1.0 } else { 0.5 })
    } else if now < 0.0 {
        (Action::Sell, if crossed(false) { 1.0 } else { 0.5 })
    } else {
        (Action::Hold, 0.0)
    }
}

fn rsi_vote(rsi: f64, previous: Option<f64>, oversold: f64, overbought: f64) -> (Action, f64) {
    match previous {
        Some(prev) if prev <= oversold && rsi > oversold => return (Action::Buy, 1.0),
        Some(prev) if prev >= overbought && rsi < overbought => return (Action::Sell, 1.0),
        _ => {}
    }
    if rsi < oversold {
        (Action::Buy, (0.5 * (oversold - rsi) / oversold).min(0.5))
    } else if rsi > overbought {
        (
            Action::Sell,
            (0.5 * (rsi - overbought) / (100.0 - overbought)).min(0.5),
        )
    } else {
        (Action::Hold, 0.0)
    }
}

fn breakout(close: f64, [upper, middle, lower]: [f64; 3]) -> (Action, f64) {
    let strength = |beyond: f64, half: f64| {
        let ratio = if half > 0.0 {
            (beyond / half).min(1.0)
        } else {
            1.0
        };
        0.5 + 0.5 * ratio
    };
    if close > upper {
        (Action::Buy, strength(close - upper, upper - middle))
    } else if close < lower {
        (Action::Sell, strength(lower - close, middle - lower))
    } else {
        (Action::Hold, 0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn closes(n: usize) -> Vec<f64> {
        (0..n)
            .map(|i| 100.0 + (i as f64 * 0.3).sin() * 5.0 + i as f64 * 0.05)
            .collect()
    }

    #[test]
    fn the_engine_warms_up_after_its_longest_lookback() {
        let mut engine = SignalEngine::new(&Params::default()).unwrap();
        assert_eq!(engine.lookback(), 33);
        let data = closes(40);
        let first = data.iter().position(|&c| {
            engine
                .update(Bar {
                    close: c,
                    ..Bar::default()
                })
                .is_some()
        });
        assert_eq!(first, Some(33));
    }

    #[test]
    fn evaluations_carry_votes_values_and_a_bounded_confidence() {
        let data = closes(300);
        let zeros = vec![0.0; data.len()];
        let cols = Columns {
            open: &data,
            high: &data,
            low: &data,
            close: &data,
            volume: &zeros,
        };
        let all = Evaluation::from_history(&Params::default(), &cols).unwrap();
        assert_eq!(all.len(), 300 - 33);
        for e in &all {
            assert_eq!(e.votes.len(), 4);
            assert!((0.0..=1.0).contains(&e.confidence));
            assert!(e.votes.iter().all(|v| (0.0..=1.0).contains(&v.strength)));
            assert_eq!(e.value("close"), Some(e.close));
            assert!(e.value("ema_12").is_some() && e.value("rsi_14").is_some());
        }
        assert!(all.iter().any(|e| e.action == Action::Buy));
        assert!(all.iter().any(|e| e.action == Action::Sell));
        let latest = Evaluation::latest(&Params::default(), &cols).unwrap();
        assert_eq!(&latest, all.last().unwrap());
    }

    #[test]
    fn only_enabled_strategies_vote() {
        let params = Params {
            strategies: [Strategy::Rsi, Strategy::Bollinger].into_iter().collect(),
            ..Params::default()
        };
        let data = closes(100);
        let zeros = vec![0.0; data.len()];
        let cols = Columns {
            open: &data,
            high: &data,
            low: &data,
            close: &data,
            volume: &zeros,
        };
        let e = Evaluation::latest(&params, &cols).unwrap();
        let strategies: Vec<_> = e.votes.iter().map(|v| v.strategy).collect();
        assert_eq!(strategies, vec![Strategy::Rsi, Strategy::Bollinger]);
    }

    #[test]
    fn bad_params_are_rejected() {
        let params = Params {
            fast_ma_period: 30,
            ..Params::default()
        };
        assert!(matches!(
            SignalEngine::new(&params),
            Err(Error::InvalidParameter {
                name: "fast_ma_period",
                ..
            })
        ));
        let params = Params {
            rsi_oversold: 80.0,
            ..Params::default()
        };
        assert!(SignalEngine::new(&params).is_err());
    }

    #[test]
    fn crossings_are_full_strength_and_trends_half() {
        assert_eq!(crossing(1.0, Some(-1.0)), (Action::Buy, 1.0));
        assert_eq!(crossing(1.0, Some(2.0)), (Action::Buy, 0.5));
        assert_eq!(crossing(-1.0, Some(0.0)), (Action::Sell, 1.0));
        assert_eq!(crossing(0.0, None), (Action::Hold, 0.0));
        assert_eq!(rsi_vote(35.0, Some(25.0), 30.0, 70.0), (Action::Buy, 1.0));
        assert_eq!(rsi_vote(65.0, Some(75.0), 30.0, 70.0), (Action::Sell, 1.0));
        assert_eq!(rsi_vote(50.0, Some(50.0), 30.0, 70.0), (Action::Hold, 0.0));
        assert_eq!(breakout(12.0, [11.0, 10.0, 9.0]), (Action::Buy, 1.0));
        assert_eq!(breakout(10.0, [11.0, 10.0, 9.0]), (Action::Hold, 0.0));
    }
}
