//! The indicators, one module per family: a batch function over slices and an O(1) streaming
//! state for each, sharing their arithmetic so that both give the same bits.
//!
//! Batch functions write one value per input bar: NaN for the first `lookback` bars, then the
//! indicator. They check parameters and lengths but not the values: what NaN or infinite input
//! gives is unspecified (use [`compute_into`](crate::compute_into), which rejects it).
//!
//! The arithmetic follows TA-Lib 0.8's compiled code operation by operation, including its
//! explicit fused multiply-adds (`f64::mul_add`, which is exact everywhere and a single
//! instruction when built with the `fma` target feature; the batch loops built on it pick an
//! FMA build at run time, see `fma.rs`) and its numerical guards.

mod fma;
pub mod ma;
pub mod osc;
pub mod vol;
pub mod volume;

pub use ma::{
    DemaState, EmaState, SmaState, TemaState, WmaState, dema_into, ema_into, sma_into, tema_into,
    wma_into,
};
pub use osc::{
    AdxState, CciState, LagState, MacdState, MfiState, RsiState, StochState, WillrState, adx_into,
    cci_into, macd_into, mfi_into, mom_into, roc_into, rsi_into, stoch_into, willr_into,
};
pub use vol::{
    AtrState, BbandsState, RealizedVolatilityState, StddevState, atr_into, bbands_into, natr_into,
    realized_volatility_into, stddev_into,
};
pub use volume::{ObvState, VwapState, obv_into, vwap_into};

use crate::Error;

/// Checks an output buffer's length and that the input covers the lookback, then fills the
/// warm-up prefix with NaN.
pub(crate) fn prepare(
    name: &'static str,
    len: usize,
    out: &mut [f64],
    lookback: usize,
) -> Result<(), Error> {
    check_len(name, out.len(), len)?;
    check_data(len, lookback)?;
    out[..lookback].fill(f64::NAN);
    Ok(())
}

/// Checks that a slice has the reference length.
pub(crate) fn check_len(column: &'static str, len: usize, expected: usize) -> Result<(), Error> {
    if len == expected {
        Ok(())
    } else {
        Err(Error::LengthMismatch {
            column,
            len,
            expected,
        })
    }
}

/// Checks that `have` bars give at least one output after `lookback` bars.
pub(crate) fn check_data(have: usize, lookback: usize) -> Result<(), Error> {
    if have > lookback {
        Ok(())
    } else {
        Err(Error::NotEnoughData {
            need: lookback + 1,
            have,
        })
    }
}

/// TA-Lib's EMA recursion: `fma(x - prev, k, prev)`.
#[inline(always)]
pub(crate) fn ema_step(prev: f64, x: f64, k: f64) -> f64 {
    (x - prev).mul_add(k, prev)
}

/// TA-Lib's true range: high - low, replaced by the larger distance to the previous close.
#[inline(always)]
pub(crate) fn true_range(high: f64, low: f64, prev_close: f64) -> f64 {
    let mut greatest = high - low;
    let to_high = (prev_close - high).abs();
    if to_high > greatest {
        greatest = to_high;
    }
    let to_low = (prev_close - low).abs();
    if to_low > greatest {
        greatest = to_low;
    }
    greatest
}

/// TA-Lib's typical price, `((high + low) + close) / 3`.
#[inline(always)]
pub(crate) fn typical_price(high: f64, low: f64, close: f64) -> f64 {
    (high + low + close) / 3.0
}

/// TA-Lib's relative zero test of a range: whether `|diff|` is within `1e-14 * (|a| + |b|)`.
#[inline(always)]
pub(crate) fn negligible(diff: f64, a: f64, b: f64) -> bool {
    (a.abs() + b.abs()) * 1e-14 >= diff.abs()
}
