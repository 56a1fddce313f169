//! Streaming: one bar at a time, O(1) per bar, no allocation after construction.

use crate::Error;
use crate::spec::{Column, Kind, Spec};
use crate::ta::ma::{DemaState, EmaState, SmaState, TemaState, WmaState};
use crate::ta::osc::{
    AdxState, CciState, LagState, MacdState, MfiState, RsiState, StochState, WillrState,
};
use crate::ta::vol::{AtrState, BbandsState, RealizedVolatilityState, StddevState};
use crate::ta::volume::{ObvState, VwapState};

/// One OHLCV bar.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Bar {
    /// Opening price.
    pub open: f64,
    /// Highest price.
    pub high: f64,
    /// Lowest price.
    pub low: f64,
    /// Closing price.
    pub close: f64,
    /// Traded volume.
    pub volume: f64,
}

impl Bar {
    /// The value of one column.
    pub const fn get(&self, column: Column) -> f64 {
        match column {
            Column::Open => self.open,
            Column::High => self.high,
            Column::Low => self.low,
            Column::Close => self.close,
            Column::Volume => self.volume,
        }
    }
}

#[derive(Debug, Clone)]
enum State {
    Sma(SmaState),
    Ema(EmaState),
    Wma(WmaState),
    Dema(DemaState),
    Tema(TemaState),
    Rsi(RsiState),
    Macd(MacdState),
    Bbands(BbandsState),
    Atr(AtrState),
    Stddev(StddevState),
    Lag(LagState),
    Stoch(StochState),
    Willr(WillrState),
    Cci(CciState),
    Mfi(MfiState),
    Obv(ObvState),
    Adx(AdxState),
    Vwap(VwapState),
    RealizedVolatility(RealizedVolatilityState),
}

/// Any indicator, fed one bar at a time; gives the same values as the batch functions.
///
/// Every update is O(1) and allocation-free, amortised where TA-Lib recomputes from the window:
/// WMA rebuilds its sums every `8 * period` bars; STDDEV, BBANDS and realised volatility
/// re-centre their variance in O(period) every `32 * period` bars or when the level moves by
/// about a thousand standard deviations; the STOCH / WILLR extremes are monotonic deques. CCI is
/// the exception: its mean deviation needs the whole window, O(period) per bar.
#[derive(Debug, Clone)]
pub struct Streaming {
    spec: Spec,
    state: State,
    out: [f64; 3],
    bars: usize,
}

impl Streaming {
    /// A streaming indicator for `spec` (resolved: zero parameters take their defaults).
    pub fn new(spec: &Spec) -> Result<Streaming, Error> {
        let spec = spec.resolved()?;
        let p = spec.period as usize;
        let state = match spec.kind {
            Kind::Sma => State::Sma(SmaState::new(p)?),
            Kind::Ema => State::Ema(EmaState::new(p)?),
            Kind::Wma => State::Wma(WmaState::new(p)?),
            Kind::Dema => State::Dema(DemaState::new(p)?),
            Kind::Tema => State::Tema(TemaState::new(p)?),
            Kind::Rsi => State::Rsi(RsiState::new(p)?),
            Kind::Macd => State::Macd(MacdState::new(
                spec.fast_period as usize,
                spec.slow_period as usize,
                spec.signal_period as usize,
            )?),
            Kind::Bbands => State::Bbands(BbandsState::new(p, spec.deviations)?),
            Kind::Atr => State::Atr(AtrState::atr(p)?),
            Kind::Natr => State::Atr(AtrState::natr(p)?),
            Kind::Stddev => State::Stddev(StddevState::new(p, spec.deviations)?),
            Kind::Roc => State::Lag(LagState::roc(p)?),
            Kind::Mom => State::Lag(LagState::mom(p)?),
            Kind::Stoch => State::Stoch(StochState::new(
                p,
                spec.fast_period as usize,
                spec.slow_period as usize,
            )?),
            Kind::Willr => State::Willr(WillrState::new(p)?),
            Kind::Cci => State::Cci(CciState::new(p)?),
            Kind::Mfi => State::Mfi(MfiState::new(p)?),
            Kind::Obv => State::Obv(ObvState::new()),
            Kind::Adx => State::Adx(AdxState::new(p)?),
            Kind::Vwap => State::Vwap(VwapState::new(p)?),
            Kind::RealizedVolatility => State::RealizedVolatility(RealizedVolatilityState::new(p)?),
        };
        Ok(Streaming {
            spec,
            state,
            out: [f64::NAN; 3],
            bars: 0,
        })
    }

    /// The resolved spec.
    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    /// Bars accepted so far.
    pub fn bars(&self) -> usize {
        self.bars
    }

    /// Adds a bar; the outputs (in [`Spec::output_names`] order) once warm, `None` during the
    /// warm-up. A bar with a non-finite value in a column the indicator reads (or a
    /// non-positive close for realised volatility) is ignored: the state does not change and
    /// the result is `None` (see [`try_update`](Streaming::try_update)).
    #[inline]
    pub fn update(&mut self, bar: Bar) -> Option<&[f64]> {
        self.try_update(bar).ok().flatten()
    }

    /// Like [`update`](Streaming::update), but says why a bar was refused.
    #[inline]
    pub fn try_update(&mut self, bar: Bar) -> Result<Option<&[f64]>, Error> {
        self.check(&bar)?;
        self.bars += 1;
        let n = self.push(&bar);
        Ok((n > 0).then(|| &self.out[..n]))
    }

    #[inline]
    fn check(&self, bar: &Bar) -> Result<(), Error> {
        let all_finite = bar.open.is_finite()
            & bar.high.is_finite()
            & bar.low.is_finite()
            & bar.close.is_finite()
            & bar.volume.is_finite();
        if all_finite && bar.close > 0.0 {
            return Ok(());
        }
        self.check_columns(bar)
    }

    #[cold]
    fn check_columns(&self, bar: &Bar) -> Result<(), Error> {
        for &column in self.spec.kind.columns() {
            if !bar.get(column).is_finite() {
                return Err(Error::NonFinite {
                    column: column.name(),
                    index: self.bars,
                });
            }
        }
        // The close is finite here, so `<= 0.0` catches every non-positive one.
        if self.spec.kind == Kind::RealizedVolatility && bar.close <= 0.0 {
            return Err(Error::NonPositive {
                column: "close",
                index: self.bars,
            });
        }
        Ok(())
    }

    /// Feeds the state; the number of outputs written (0 while warming up).
    #[inline]
    fn push(&mut self, bar: &Bar) -> usize {
        let Bar {
            high,
            low,
            close,
            volume,
            ..
        } = *bar;
        let one = |value: Option<f64>, out: &mut [f64; 3]| match value {
            Some(v) => {
                out[0] = v;
                1
            }
            None => 0,
        };
        match &mut self.state {
            State::Sma(s) => one(s.update(close), &mut self.out),
            State::Ema(s) => one(s.update(close), &mut self.out),
            State::Wma(s) => one(s.update(close), &mut self.out),
            State::Dema(s) => one(s.update(close), &mut self.out),
            State::Tema(s) => one(s.update(close), &mut self.out),
            State::Rsi(s) => one(s.update(close), &mut self.out),
            State::Atr(s) => one(s.update(high, low, close), &mut self.out),
            State::Stddev(s) => one(s.update(close), &mut self.out),
            State::Lag(s) => one(s.update(close), &mut self.out),
            State::Willr(s) => one(s.update(high, low, close), &mut self.out),
            State::Cci(s) => one(s.update(high, low, close), &mut self.out),
            State::Mfi(s) => one(s.update(high, low, close, volume), &mut self.out),
            State::Obv(s) => one(s.update(close, volume), &mut self.out),
            State::Adx(s) => one(s.update(high, low, close), &mut self.out),
            State::Vwap(s) => one(s.update(high, low, close, volume), &mut self.out),
            State::RealizedVolatility(s) => one(s.update(close), &mut self.out),
            State::Macd(s) => match s.update(close) {
                Some(values) => {
                    self.out = values;
                    3
                }
                None => 0,
            },
            State::Bbands(s) => match s.update(close) {
                Some(values) => {
                    self.out = values;
                    3
                }
                None => 0,
            },
            State::Stoch(s) => match s.update(high, low, close) {
                Some([k, d]) => {
                    self.out[0] = k;
                    self.out[1] = d;
                    2
                }
                None => 0,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bar(close: f64) -> Bar {
        Bar {
            open: close,
            high: close + 1.0,
            low: close - 1.0,
            close,
            volume: 10.0,
        }
    }

    #[test]
    fn a_warm_stream_gives_every_output() {
        let mut macd = Streaming::new(&Spec::new(Kind::Macd)).unwrap();
        let mut warm = None;
        for i in 0..40 {
            if let Some(out) = macd.update(bar(100.0 + i as f64)) {
                assert_eq!(out.len(), 3);
                warm.get_or_insert(i);
            }
        }
        assert_eq!(warm, Some(33));
        assert_eq!(macd.bars(), 40);
    }

    #[test]
    fn a_non_finite_bar_is_refused_and_changes_nothing() {
        let mut sma = Streaming::new(&Spec::new(Kind::Sma).with_period(2)).unwrap();
        assert!(sma.update(bar(1.0)).is_none());
        let error = sma.try_update(bar(f64::NAN)).unwrap_err();
        assert_eq!(
            error,
            Error::NonFinite {
                column: "close",
                index: 1
            }
        );
        assert!(sma.update(bar(f64::INFINITY)).is_none());
        assert_eq!(sma.update(bar(3.0)), Some(&[2.0][..]));
        assert_eq!(sma.bars(), 2);
    }

    #[test]
    fn a_nan_in_an_unread_column_is_accepted() {
        let mut sma = Streaming::new(&Spec::new(Kind::Sma).with_period(1)).unwrap();
        let out = sma.update(Bar {
            volume: f64::NAN,
            ..bar(5.0)
        });
        assert_eq!(out, Some(&[5.0][..]));
    }

    #[test]
    fn realised_volatility_refuses_a_non_positive_close() {
        let mut rv = Streaming::new(&Spec::new(Kind::RealizedVolatility)).unwrap();
        let error = rv.try_update(bar(0.0)).unwrap_err();
        assert_eq!(
            error,
            Error::NonPositive {
                column: "close",
                index: 0
            }
        );
    }
}
