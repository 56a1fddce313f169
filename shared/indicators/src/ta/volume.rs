//! Volume: OBV and rolling VWAP.

use super::{check_len, prepare, typical_price};
use crate::Error;
use crate::ring::Ring;
use crate::spec::check_period;

/// On-balance volume (TA_OBV): starts at the first volume, then adds the volume on an up close
/// and subtracts it on a down close.
pub fn obv_into(close: &[f64], volume: &[f64], out: &mut [f64]) -> Result<(), Error> {
    let n = close.len();
    check_len("volume", volume.len(), n)?;
    prepare("out", n, out, 0)?;
    let mut obv = volume[0];
    out[0] = obv;
    for (((o, &c), &prev), &v) in out[1..]
        .iter_mut()
        .zip(&close[1..])
        .zip(close)
        .zip(&volume[1..])
    {
        obv = obv_step(obv, c, prev, v);
        *o = obv;
    }
    Ok(())
}

/// Streaming [`obv_into`].
#[derive(Debug, Clone, Default)]
pub struct ObvState {
    prev: Option<f64>,
    obv: f64,
}

impl ObvState {
    /// A state before the first bar.
    pub fn new() -> ObvState {
        ObvState::default()
    }

    /// Adds a bar; the OBV (from the first bar on).
    #[inline]
    pub fn update(&mut self, close: f64, volume: f64) -> Option<f64> {
        self.obv = match self.prev {
            None => volume,
            Some(prev) => obv_step(self.obv, close, prev, volume),
        };
        self.prev = Some(close);
        Some(self.obv)
    }
}

/// TA-Lib's OBV step, written as selects so that it compiles without branches.
#[inline(always)]
fn obv_step(obv: f64, close: f64, prev: f64, volume: f64) -> f64 {
    let up = obv + volume;
    let down = obv - volume;
    let value = if close < prev { down } else { obv };
    if close > prev { up } else { value }
}

/// A compensated (Neumaier) running sum: values can be added and removed for ever without the
/// rounding errors of a plain running sum piling up.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CompensatedSum {
    sum: f64,
    compensation: f64,
}

impl CompensatedSum {
    #[inline(always)]
    pub(crate) fn add(&mut self, x: f64) {
        let t = self.sum + x;
        if self.sum.abs() >= x.abs() {
            self.compensation += (self.sum - t) + x;
        } else {
            self.compensation += (x - t) + self.sum;
        }
        self.sum = t;
    }

    #[inline(always)]
    pub(crate) fn value(&self) -> f64 {
        self.sum + self.compensation
    }
}

/// Rolling VWAP over `period` bars: `sum(typical * volume) / sum(volume)` with the typical price
/// `((high + low) + close) / 3`, both sums compensated. A window whose volumes are all zero has
/// no VWAP: NaN. Volumes are expected to be non-negative.
pub fn vwap_into(
    high: &[f64],
    low: &[f64],
    close: &[f64],
    volume: &[f64],
    period: usize,
    out: &mut [f64],
) -> Result<(), Error> {
    check_period("period", period, 1)?;
    let n = close.len();
    check_len("high", high.len(), n)?;
    check_len("low", low.len(), n)?;
    check_len("volume", volume.len(), n)?;
    let lookback = period - 1;
    prepare("out", n, out, lookback)?;
    let mut core = VwapCore::default();
    let flow = |i: usize| {
        (
            typical_price(high[i], low[i], close[i]) * volume[i],
            volume[i],
        )
    };
    for (i, o) in out.iter_mut().enumerate() {
        core.add(flow(i));
        if i >= lookback {
            *o = core.value(period);
            core.remove(flow(i - lookback));
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, Default)]
struct VwapCore {
    money: CompensatedSum,
    volume: CompensatedSum,
    /// Bars in the window with a zero volume.
    idle: usize,
}

impl VwapCore {
    #[inline(always)]
    fn add(&mut self, (money, volume): (f64, f64)) {
        self.money.add(money);
        self.volume.add(volume);
        if volume == 0.0 {
            self.idle += 1;
        }
    }

    #[inline(always)]
    fn remove(&mut self, (money, volume): (f64, f64)) {
        self.money.add(-money);
        self.volume.add(-volume);
        if volume == 0.0 {
            self.idle -= 1;
        }
    }

    #[inline(always)]
    fn value(&self, period: usize) -> f64 {
        if self.idle == period {
            f64::NAN
        } else {
            self.money.value() / self.volume.value()
        }
    }
}

/// Streaming [`vwap_into`].
#[derive(Debug, Clone)]
pub struct VwapState {
    money: Ring,
    volume: Ring,
    core: VwapCore,
    period: usize,
}

impl VwapState {
    /// A state for `period` (1..=100000).
    pub fn new(period: usize) -> Result<VwapState, Error> {
        check_period("period", period, 1)?;
        Ok(VwapState {
            money: Ring::new(period),
            volume: Ring::new(period),
            core: VwapCore::default(),
            period,
        })
    }

    /// Adds a bar; the VWAP once `period` bars were seen.
    #[inline]
    pub fn update(&mut self, high: f64, low: f64, close: f64, volume: f64) -> Option<f64> {
        let flow = (typical_price(high, low, close) * volume, volume);
        self.core.add(flow);
        self.money.push(flow.0);
        self.volume.push(flow.1);
        if !self.money.is_full() {
            return None;
        }
        let value = self.core.value(self.period);
        self.core
            .remove((self.money.oldest(), self.volume.oldest()));
        Some(value)
    }
}
