//! Which indicator, with which parameters: the mirror of the proto `IndicatorSpec`.

use crate::Error;

/// The largest period any indicator accepts (TA-Lib's limit).
pub const MAX_PERIOD: u32 = 100_000;

/// An indicator the crate computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Simple moving average (TA_SMA).
    Sma,
    /// Exponential moving average seeded with an SMA (TA_EMA).
    Ema,
    /// Weighted moving average (TA_WMA).
    Wma,
    /// Double exponential moving average (TA_DEMA).
    Dema,
    /// Triple exponential moving average (TA_TEMA).
    Tema,
    /// Wilder's relative strength index (TA_RSI).
    Rsi,
    /// Moving average convergence/divergence: macd, signal, hist (TA_MACD).
    Macd,
    /// Bollinger Bands around an SMA: upper, middle, lower (TA_BBANDS).
    Bbands,
    /// Average true range, Wilder smoothing (TA_ATR).
    Atr,
    /// ATR as a percentage of the close (TA_NATR).
    Natr,
    /// Population standard deviation times a multiplier (TA_STDDEV).
    Stddev,
    /// Rate of change in percent (TA_ROC).
    Roc,
    /// Momentum: price minus the price `period` bars ago (TA_MOM).
    Mom,
    /// Slow stochastic with SMA smoothing: k, d (TA_STOCH).
    Stoch,
    /// Williams' %R (TA_WILLR).
    Willr,
    /// Commodity channel index (TA_CCI).
    Cci,
    /// Money flow index (TA_MFI).
    Mfi,
    /// On-balance volume (TA_OBV).
    Obv,
    /// Average directional index (TA_ADX).
    Adx,
    /// Rolling volume-weighted average of the typical price over `period` bars.
    Vwap,
    /// Sample standard deviation of `period` log close-to-close returns, not annualised.
    RealizedVolatility,
}

impl Kind {
    /// Every kind, in proto order.
    pub const ALL: [Kind; 21] = [
        Kind::Sma,
        Kind::Ema,
        Kind::Wma,
        Kind::Dema,
        Kind::Tema,
        Kind::Rsi,
        Kind::Macd,
        Kind::Bbands,
        Kind::Atr,
        Kind::Natr,
        Kind::Stddev,
        Kind::Roc,
        Kind::Mom,
        Kind::Stoch,
        Kind::Willr,
        Kind::Cci,
        Kind::Mfi,
        Kind::Obv,
        Kind::Adx,
        Kind::Vwap,
        Kind::RealizedVolatility,
    ];

    /// The stable snake-case name (`"sma"`, `"realized_volatility"`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            Kind::Sma => "sma",
            Kind::Ema => "ema",
            Kind::Wma => "wma",
            Kind::Dema => "dema",
            Kind::Tema => "tema",
            Kind::Rsi => "rsi",
            Kind::Macd => "macd",
            Kind::Bbands => "bbands",
            Kind::Atr => "atr",
            Kind::Natr => "natr",
            Kind::Stddev => "stddev",
            Kind::Roc => "roc",
            Kind::Mom => "mom",
            Kind::Stoch => "stoch",
            Kind::Willr => "willr",
            Kind::Cci => "cci",
            Kind::Mfi => "mfi",
            Kind::Obv => "obv",
            Kind::Adx => "adx",
            Kind::Vwap => "vwap",
            Kind::RealizedVolatility => "realized_volatility",
        }
    }

    /// The kind with this [`name`](Kind::name), if any.
    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|kind| kind.name() == name)
    }

    /// The names of the kind's outputs, in the order they are produced.
    pub const fn output_names(self) -> &'static [&'static str] {
        match self {
            Kind::Macd => &["macd", "signal", "hist"],
            Kind::Bbands => &["upper", "middle", "lower"],
            Kind::Stoch => &["k", "d"],
            _ => &["value"],
        }
    }

    /// The input columns the kind reads.
    pub const fn columns(self) -> &'static [Column] {
        match self {
            Kind::Sma
            | Kind::Ema
            | Kind::Wma
            | Kind::Dema
            | Kind::Tema
            | Kind::Rsi
            | Kind::Macd
            | Kind::Bbands
            | Kind::Stddev
            | Kind::Roc
            | Kind::Mom
            | Kind::RealizedVolatility => &[Column::Close],
            Kind::Atr | Kind::Natr | Kind::Stoch | Kind::Willr | Kind::Cci | Kind::Adx => {
                &[Column::High, Column::Low, Column::Close]
            }
            Kind::Mfi | Kind::Vwap => &[Column::High, Column::Low, Column::Close, Column::Volume],
            Kind::Obv => &[Column::Close, Column::Volume],
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One input column of OHLCV data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Column {
    /// Opening price.
    Open,
    /// Highest price.
    High,
    /// Lowest price.
    Low,
    /// Closing price.
    Close,
    /// Traded volume.
    Volume,
}

impl Column {
    /// The column's lowercase name, as used in errors.
    pub const fn name(self) -> &'static str {
        match self {
            Column::Open => "open",
            Column::High => "high",
            Column::Low => "low",
            Column::Close => "close",
            Column::Volume => "volume",
        }
    }
}

/// An indicator and its parameters; a zero parameter means the indicator's default.
///
/// The defaults are TA-Lib's: SMA/EMA/WMA/DEMA/TEMA 30, RSI 14, MACD 12/26/9, BBANDS 5 periods
/// with 2 deviations (the classic default; TA-Lib 0.8 itself now defaults to 20 periods), ATR
/// and NATR 14, STDDEV 5 with 1 deviation, ROC and MOM 10, STOCH 5/3/3, WILLR, CCI, MFI and ADX
/// 14; VWAP and realised volatility 20.
///
/// The fields mirror the proto `IndicatorSpec`: `period` is the main lookback (and fast %K of
/// STOCH), `fast_period` the MACD fast period (STOCH slow %K), `slow_period` the MACD slow period
/// (STOCH slow %D), `signal_period` the MACD signal period and `deviations` the BBANDS width
/// (default 2) or the STDDEV multiplier (default 1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spec {
    /// Which indicator.
    pub kind: Kind,
    /// Main period; STOCH fast %K.
    pub period: u32,
    /// MACD fast period; STOCH slow %K period.
    pub fast_period: u32,
    /// MACD slow period; STOCH slow %D period.
    pub slow_period: u32,
    /// MACD signal period.
    pub signal_period: u32,
    /// BBANDS width in standard deviations; STDDEV multiplier.
    pub deviations: f64,
}

/// Which parameters a kind uses, with TA-Lib's default and minimum for each.
struct Params {
    /// (default, minimum) of `period`, `fast_period`, `slow_period`, `signal_period`; `None` if
    /// the kind does not use the field.
    periods: [Option<(u32, u32)>; 4],
    /// Default of `deviations`, if used.
    deviations: Option<f64>,
}

const fn single(default: u32, min: u32) -> Params {
    Params {
        periods: [Some((default, min)), None, None, None],
        deviations: None,
    }
}

const fn params(kind: Kind) -> Params {
    match kind {
        Kind::Sma | Kind::Ema | Kind::Wma | Kind::Dema | Kind::Tema => single(30, 1),
        Kind::Rsi => single(14, 2),
        Kind::Macd => Params {
            periods: [None, Some((12, 2)), Some((26, 2)), Some((9, 1))],
            deviations: None,
        },
        // TA-Lib's classic BBANDS default period of 5 (TA-Lib 0.8 moved its own to 20).
        Kind::Bbands => Params {
            periods: [Some((5, 2)), None, None, None],
            deviations: Some(2.0),
        },
        Kind::Atr | Kind::Natr => single(14, 1),
        Kind::Stddev => Params {
            periods: [Some((5, 2)), None, None, None],
            deviations: Some(1.0),
        },
        Kind::Roc | Kind::Mom => single(10, 1),
        Kind::Stoch => Params {
            periods: [Some((5, 1)), Some((3, 1)), Some((3, 1)), None],
            deviations: None,
        },
        Kind::Willr | Kind::Cci | Kind::Mfi | Kind::Adx => single(14, 2),
        Kind::Obv => Params {
            periods: [None; 4],
            deviations: None,
        },
        Kind::Vwap => single(20, 1),
        Kind::RealizedVolatility => single(20, 2),
    }
}

const PERIOD_NAMES: [&str; 4] = ["period", "fast_period", "slow_period", "signal_period"];

impl Spec {
    /// A spec of `kind` with every parameter at its default.
    pub const fn new(kind: Kind) -> Spec {
        Spec {
            kind,
            period: 0,
            fast_period: 0,
            slow_period: 0,
            signal_period: 0,
            deviations: 0.0,
        }
    }

    /// The same spec with `period` set.
    pub const fn with_period(mut self, period: u32) -> Spec {
        self.period = period;
        self
    }

    /// The same spec with `fast_period` set.
    pub const fn with_fast_period(mut self, fast_period: u32) -> Spec {
        self.fast_period = fast_period;
        self
    }

    /// The same spec with `slow_period` set.
    pub const fn with_slow_period(mut self, slow_period: u32) -> Spec {
        self.slow_period = slow_period;
        self
    }

    /// The same spec with `signal_period` set.
    pub const fn with_signal_period(mut self, signal_period: u32) -> Spec {
        self.signal_period = signal_period;
        self
    }

    /// The same spec with `deviations` set.
    pub const fn with_deviations(mut self, deviations: f64) -> Spec {
        self.deviations = deviations;
        self
    }

    /// Zero fields replaced by defaults and fields the kind ignores set to zero, unvalidated.
    fn with_defaults(&self) -> Spec {
        let params = params(self.kind);
        let given = [
            self.period,
            self.fast_period,
            self.slow_period,
            self.signal_period,
        ];
        let mut periods = [0u32; 4];
        for ((slot, value), param) in periods.iter_mut().zip(given).zip(params.periods) {
            if let Some((default, _)) = param {
                *slot = if value == 0 { default } else { value };
            }
        }
        let deviations = match params.deviations {
            Some(default) if self.deviations == 0.0 => default,
            Some(_) => self.deviations,
            None => 0.0,
        };
        Spec {
            kind: self.kind,
            period: periods[0],
            fast_period: periods[1],
            slow_period: periods[2],
            signal_period: periods[3],
            deviations,
        }
    }

    /// The spec with defaults filled in, validated.
    ///
    /// Zero parameters take TA-Lib's defaults; parameters the kind does not use are set to zero
    /// so that equal computations have equal resolved specs. Errors if a period is below the
    /// kind's minimum or above [`MAX_PERIOD`], if MACD's fast period is not below its slow
    /// period, or if `deviations` is negative or not finite.
    pub fn resolved(&self) -> Result<Spec, Error> {
        let spec = self.with_defaults();
        let params = params(self.kind);
        let values = [
            spec.period,
            spec.fast_period,
            spec.slow_period,
            spec.signal_period,
        ];
        for ((name, value), param) in PERIOD_NAMES.into_iter().zip(values).zip(params.periods) {
            if let Some((_, min)) = param {
                check_period(name, value as usize, min as usize)?;
            }
        }
        if self.kind == Kind::Macd && spec.fast_period >= spec.slow_period {
            return Err(Error::InvalidParameter {
                name: "fast_period",
                value: f64::from(spec.fast_period),
                reason: "must be less than slow_period",
            });
        }
        if params.deviations.is_some() && !(spec.deviations.is_finite() && spec.deviations >= 0.0) {
            return Err(Error::InvalidParameter {
                name: "deviations",
                value: spec.deviations,
                reason: "must be finite and not negative",
            });
        }
        Ok(spec)
    }

    /// TA-Lib's lookback: the number of leading NaN outputs (zero parameters count as defaults).
    pub fn lookback(&self) -> usize {
        let s = self.with_defaults();
        let p = s.period as usize;
        match s.kind {
            Kind::Sma | Kind::Ema | Kind::Wma | Kind::Bbands | Kind::Stddev => p.saturating_sub(1),
            Kind::Willr | Kind::Cci | Kind::Vwap => p.saturating_sub(1),
            Kind::Dema => 2 * p.saturating_sub(1),
            Kind::Tema => 3 * p.saturating_sub(1),
            Kind::Rsi | Kind::Atr | Kind::Natr | Kind::Roc | Kind::Mom | Kind::Mfi => p,
            Kind::RealizedVolatility => p,
            Kind::Macd => {
                (s.slow_period as usize).saturating_sub(1)
                    + (s.signal_period as usize).saturating_sub(1)
            }
            Kind::Stoch => {
                p.saturating_sub(1)
                    + (s.fast_period as usize).saturating_sub(1)
                    + (s.slow_period as usize).saturating_sub(1)
            }
            Kind::Obv => 0,
            Kind::Adx => (2 * p).saturating_sub(1),
        }
    }

    /// The names of the outputs ("value"; "macd", "signal", "hist"; "upper", "middle",
    /// "lower"; "k", "d").
    pub fn output_names(&self) -> &'static [&'static str] {
        self.kind.output_names()
    }
}

/// Checks that `value` lies in `min..=MAX_PERIOD`.
pub(crate) fn check_period(name: &'static str, value: usize, min: usize) -> Result<(), Error> {
    if value < min {
        return Err(Error::InvalidParameter {
            name,
            value: value as f64,
            reason: if min <= 1 {
                "must be at least 1"
            } else {
                "must be at least 2"
            },
        });
    }
    if value > MAX_PERIOD as usize {
        return Err(Error::InvalidParameter {
            name,
            value: value as f64,
            reason: "must be at most 100000",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_parameters_resolve_to_ta_lib_defaults() {
        let macd = Spec::new(Kind::Macd).resolved().unwrap();
        assert_eq!(
            (macd.fast_period, macd.slow_period, macd.signal_period),
            (12, 26, 9)
        );
        assert_eq!(macd.period, 0);
        let bb = Spec::new(Kind::Bbands).resolved().unwrap();
        assert_eq!((bb.period, bb.deviations), (5, 2.0));
        let sd = Spec::new(Kind::Stddev).resolved().unwrap();
        assert_eq!((sd.period, sd.deviations), (5, 1.0));
        let stoch = Spec::new(Kind::Stoch).resolved().unwrap();
        assert_eq!(
            (stoch.period, stoch.fast_period, stoch.slow_period),
            (5, 3, 3)
        );
        assert_eq!(Spec::new(Kind::Sma).resolved().unwrap().period, 30);
        assert_eq!(Spec::new(Kind::Rsi).resolved().unwrap().period, 14);
        assert_eq!(Spec::new(Kind::Vwap).resolved().unwrap().period, 20);
        assert_eq!(
            Spec::new(Kind::RealizedVolatility)
                .resolved()
                .unwrap()
                .period,
            20
        );
    }

    #[test]
    fn unused_parameters_are_cleared() {
        let spec = Spec::new(Kind::Sma)
            .with_fast_period(3)
            .with_deviations(4.0);
        let resolved = spec.resolved().unwrap();
        assert_eq!(resolved, Spec::new(Kind::Sma).with_period(30));
    }

    #[test]
    fn macd_fast_not_below_slow_is_rejected() {
        let spec = Spec::new(Kind::Macd)
            .with_fast_period(26)
            .with_slow_period(26);
        assert!(matches!(
            spec.resolved(),
            Err(Error::InvalidParameter {
                name: "fast_period",
                ..
            })
        ));
    }

    #[test]
    fn periods_out_of_range_are_rejected() {
        let spec = Spec::new(Kind::Sma).with_period(100_001);
        assert!(matches!(
            spec.resolved(),
            Err(Error::InvalidParameter { name: "period", .. })
        ));
        let spec = Spec::new(Kind::Rsi).with_period(1);
        assert!(matches!(
            spec.resolved(),
            Err(Error::InvalidParameter { name: "period", .. })
        ));
        assert!(Spec::new(Kind::Sma).with_period(1).resolved().is_ok());
    }

    #[test]
    fn bad_deviations_are_rejected() {
        for deviations in [f64::NAN, -1.0, f64::INFINITY] {
            let spec = Spec::new(Kind::Bbands).with_deviations(deviations);
            assert!(matches!(
                spec.resolved(),
                Err(Error::InvalidParameter {
                    name: "deviations",
                    ..
                })
            ));
        }
    }

    #[test]
    fn lookbacks_match_ta_lib() {
        let lb = |spec: Spec| spec.lookback();
        assert_eq!(lb(Spec::new(Kind::Sma).with_period(20)), 19);
        assert_eq!(lb(Spec::new(Kind::Dema).with_period(20)), 38);
        assert_eq!(lb(Spec::new(Kind::Tema).with_period(20)), 57);
        assert_eq!(lb(Spec::new(Kind::Rsi)), 14);
        assert_eq!(lb(Spec::new(Kind::Macd)), 33);
        assert_eq!(lb(Spec::new(Kind::Stoch)), 8);
        assert_eq!(lb(Spec::new(Kind::Adx)), 27);
        assert_eq!(lb(Spec::new(Kind::Obv)), 0);
        assert_eq!(lb(Spec::new(Kind::RealizedVolatility)), 20);
    }

    #[test]
    fn names_round_trip() {
        for kind in Kind::ALL {
            assert_eq!(Kind::from_name(kind.name()), Some(kind));
        }
        assert_eq!(Kind::from_name("nope"), None);
    }
}
