//! Moving averages: SMA, EMA, WMA, DEMA, TEMA.

use super::fma::{self, Kernel};
use super::{ema_step, prepare};
use crate::Error;
use crate::ring::Ring;
use crate::spec::check_period;

/// Simple moving average (TA_SMA): a running sum that adds the newest value, divides by the
/// period, then subtracts the oldest.
pub fn sma_into(input: &[f64], period: usize, out: &mut [f64]) -> Result<(), Error> {
    check_period("period", period, 1)?;
    let lookback = period - 1;
    prepare("out", input.len(), out, lookback)?;
    let divisor = period as f64;
    let mut total = 0.0;
    for &x in &input[..lookback] {
        total += x;
    }
    for ((o, &x), &oldest) in out[lookback..]
        .iter_mut()
        .zip(&input[lookback..])
        .zip(input)
    {
        total += x;
        *o = total / divisor;
        total -= oldest;
    }
    Ok(())
}

/// Streaming [`sma_into`].
#[derive(Debug, Clone)]
pub struct SmaState {
    window: Ring,
    total: f64,
    period: usize,
}

impl SmaState {
    /// A state for `period` (1..=100000).
    pub fn new(period: usize) -> Result<SmaState, Error> {
        check_period("period", period, 1)?;
        Ok(SmaState {
            window: Ring::new(period),
            total: 0.0,
            period,
        })
    }

    /// Adds a value; the SMA once `period` values were seen.
    #[inline]
    pub fn update(&mut self, x: f64) -> Option<f64> {
        self.total += x;
        if self.window.len() + 1 < self.period {
            self.window.push(x);
            return None;
        }
        let value = self.total / self.period as f64;
        self.window.push(x);
        self.total -= self.window.oldest();
        Some(value)
    }
}

/// Exponential moving average (TA_EMA): seeded with the SMA of the first `period` values, then
/// `fma(x - ema, 2 / (period + 1), ema)`. A period of 1 copies the input.
pub fn ema_into(input: &[f64], period: usize, out: &mut [f64]) -> Result<(), Error> {
    check_period("period", period, 1)?;
    let lookback = period - 1;
    prepare("out", input.len(), out, lookback)?;
    if period == 1 {
        out.copy_from_slice(input);
        return Ok(());
    }
    let k = ema_k(period);
    let ema = sum(&input[..period]) / period as f64;
    out[lookback] = ema;
    fma::run(EmaLoop {
        input: &input[period..],
        out: &mut out[period..],
        k,
        ema,
    });
    Ok(())
}

/// The EMA after its seed.
struct EmaLoop<'a> {
    input: &'a [f64],
    out: &'a mut [f64],
    k: f64,
    ema: f64,
}

impl Kernel for EmaLoop<'_> {
    #[inline(always)]
    fn run(self) {
        let EmaLoop {
            input,
            out,
            k,
            mut ema,
        } = self;
        for (o, &x) in out.iter_mut().zip(input) {
            ema = ema_step(ema, x, k);
            *o = ema;
        }
    }
}

/// TA-Lib's smoothing factor `2 / (period + 1)`.
#[inline]
pub(crate) fn ema_k(period: usize) -> f64 {
    2.0 / (period + 1) as f64
}

/// A left-to-right sum starting from 0.0, as TA-Lib seeds its averages.
#[inline]
pub(crate) fn sum(values: &[f64]) -> f64 {
    let mut total = 0.0;
    for &v in values {
        total += v;
    }
    total
}

/// An EMA that seeds itself with the SMA of its first `period` inputs.
#[derive(Debug, Clone)]
pub(crate) struct EmaCore {
    k: f64,
    period: usize,
    seen: usize,
    value: f64,
}

impl EmaCore {
    pub(crate) fn new(period: usize) -> EmaCore {
        EmaCore {
            k: ema_k(period),
            period,
            seen: 0,
            value: 0.0,
        }
    }

    /// Feeds one input; the EMA once `period` inputs were seen.
    #[inline]
    pub(crate) fn update(&mut self, x: f64) -> Option<f64> {
        if self.seen < self.period {
            self.value += x;
            self.seen += 1;
            if self.seen < self.period {
                return None;
            }
            self.value /= self.period as f64;
        } else {
            self.value = ema_step(self.value, x, self.k);
        }
        Some(self.value)
    }
}

/// Streaming [`ema_into`].
#[derive(Debug, Clone)]
pub struct EmaState {
    core: EmaCore,
}

impl EmaState {
    /// A state for `period` (1..=100000).
    pub fn new(period: usize) -> Result<EmaState, Error> {
        check_period("period", period, 1)?;
        Ok(EmaState {
            core: EmaCore::new(period),
        })
    }

    /// Adds a value; the EMA once `period` values were seen.
    #[inline]
    pub fn update(&mut self, x: f64) -> Option<f64> {
        if self.core.period == 1 {
            return Some(x);
        }
        self.core.update(x)
    }
}

/// Weighted moving average (TA_WMA, weights 1..=period), with TA-Lib 0.8's running sums that
/// are rebuilt from the window every `8 * period` outputs. A period of 1 copies the input.
pub fn wma_into(input: &[f64], period: usize, out: &mut [f64]) -> Result<(), Error> {
    check_period("period", period, 1)?;
    let lookback = period - 1;
    prepare("out", input.len(), out, lookback)?;
    if period == 1 {
        out.copy_from_slice(input);
        return Ok(());
    }
    let mut core = WmaCore::new(period);
    for &x in &input[..lookback] {
        core.seed(x);
    }
    for (i, o) in out.iter_mut().enumerate().skip(lookback) {
        let window = &input[i - lookback..=i];
        *o = core.step(input[i], window, &[]);
    }
    Ok(())
}

/// The running state of TA-Lib's WMA.
#[derive(Debug, Clone)]
struct WmaCore {
    period: f64,
    divider: f64,
    /// Plain sum of the window; `trailing` comes off at the next step.
    sub: f64,
    /// Weighted sum, prepared for the next value.
    sum: f64,
    /// The value to drop at the next step (0 before the first output).
    trailing: f64,
    seeded: usize,
    rebuild_every: usize,
    countdown: usize,
}

impl WmaCore {
    fn new(period: usize) -> WmaCore {
        let p = period as f64;
        WmaCore {
            period: p,
            divider: ((period + 1) as f64 * p) * 0.5,
            sub: 0.0,
            sum: 0.0,
            trailing: 0.0,
            seeded: 0,
            rebuild_every: 8 * period,
            countdown: 8 * period,
        }
    }

    #[inline]
    fn seed(&mut self, x: f64) {
        self.seeded += 1;
        self.sub += x;
        self.sum += self.seeded as f64 * x;
    }

    /// One output for the window ending at `x`, given oldest first as `a` then `b`.
    #[inline]
    fn step(&mut self, x: f64, a: &[f64], b: &[f64]) -> f64 {
        let oldest = a.first().or(b.first()).copied().unwrap_or(x);
        self.countdown -= 1;
        let full = if self.countdown == 0 {
            self.countdown = self.rebuild_every;
            let (mut sub, mut full) = (0.0, 0.0);
            for (j, &v) in a.iter().chain(b).enumerate() {
                sub += v;
                full += (j + 1) as f64 * v;
            }
            self.sub = sub;
            full
        } else {
            self.sub += x;
            self.sub -= self.trailing;
            x * self.period + self.sum
        };
        self.sum = full - self.sub;
        self.trailing = oldest;
        full / self.divider
    }
}

/// Streaming [`wma_into`].
#[derive(Debug, Clone)]
pub struct WmaState {
    window: Ring,
    core: WmaCore,
    period: usize,
}

impl WmaState {
    /// A state for `period` (1..=100000).
    pub fn new(period: usize) -> Result<WmaState, Error> {
        check_period("period", period, 1)?;
        Ok(WmaState {
            window: Ring::new(period),
            core: WmaCore::new(period),
            period,
        })
    }

    /// Adds a value; the WMA once `period` values were seen.
    #[inline]
    pub fn update(&mut self, x: f64) -> Option<f64> {
        if self.period == 1 {
            return Some(x);
        }
        self.window.push(x);
        if !self.window.is_full() {
            self.core.seed(x);
            return None;
        }
        let (a, b) = self.window.as_slices();
        Some(self.core.step(x, a, b))
    }
}

/// Double EMA (TA_DEMA): `2 * e1 - e2` where e2 is the EMA of e1, each seeded with the SMA of
/// its first `period` inputs. A period of 1 copies the input.
pub fn dema_into(input: &[f64], period: usize, out: &mut [f64]) -> Result<(), Error> {
    check_period("period", period, 1)?;
    let lookback = 2 * (period - 1);
    prepare("out", input.len(), out, lookback)?;
    if period == 1 {
        out.copy_from_slice(input);
        return Ok(());
    }
    let k = ema_k(period);
    let p = period as f64;
    let mut e1 = sum(&input[..period]) / p;
    let mut acc = 0.0 + e1;
    for &x in &input[period..=lookback] {
        e1 = ema_step(e1, x, k);
        acc += e1;
    }
    let e2 = acc / p;
    out[lookback] = (e1 + e1) - e2;
    fma::run(DemaLoop {
        input: &input[lookback + 1..],
        out: &mut out[lookback + 1..],
        k,
        e1,
        e2,
    });
    Ok(())
}

/// The DEMA after its seed.
struct DemaLoop<'a> {
    input: &'a [f64],
    out: &'a mut [f64],
    k: f64,
    e1: f64,
    e2: f64,
}

impl Kernel for DemaLoop<'_> {
    #[inline(always)]
    fn run(self) {
        let DemaLoop {
            input,
            out,
            k,
            mut e1,
            mut e2,
        } = self;
        for (o, &x) in out.iter_mut().zip(input) {
            e1 = ema_step(e1, x, k);
            e2 = ema_step(e2, e1, k);
            *o = (e1 + e1) - e2;
        }
    }
}

/// Streaming [`dema_into`].
#[derive(Debug, Clone)]
pub struct DemaState {
    e1: EmaCore,
    e2: EmaCore,
    period: usize,
}

impl DemaState {
    /// A state for `period` (1..=100000).
    pub fn new(period: usize) -> Result<DemaState, Error> {
        check_period("period", period, 1)?;
        Ok(DemaState {
            e1: EmaCore::new(period),
            e2: EmaCore::new(period),
            period,
        })
    }

    /// Adds a value; the DEMA once `2 * (period - 1) + 1` values were seen.
    #[inline]
    pub fn update(&mut self, x: f64) -> Option<f64> {
        if self.period == 1 {
            return Some(x);
        }
        let e1 = self.e1.update(x)?;
        let e2 = self.e2.update(e1)?;
        Some((e1 + e1) - e2)
    }
}

/// Triple EMA (TA_TEMA): `e3 + (3 * e1 - 3 * e2)` over chained EMAs, each seeded with the SMA
/// of its first `period` inputs. A period of 1 copies the input.
pub fn tema_into(input: &[f64], period: usize, out: &mut [f64]) -> Result<(), Error> {
    check_period("period", period, 1)?;
    let lb = period - 1;
    let lookback = 3 * lb;
    prepare("out", input.len(), out, lookback)?;
    if period == 1 {
        out.copy_from_slice(input);
        return Ok(());
    }
    let k = ema_k(period);
    let p = period as f64;
    let mut e1 = sum(&input[..period]) / p;
    let mut acc = 0.0 + e1;
    for &x in &input[period..=2 * lb] {
        e1 = ema_step(e1, x, k);
        acc += e1;
    }
    let mut e2 = acc / p;
    let mut acc = 0.0 + e2;
    for &x in &input[2 * lb + 1..=lookback] {
        e1 = ema_step(e1, x, k);
        e2 = ema_step(e2, e1, k);
        acc += e2;
    }
    let e3 = acc / p;
    out[lookback] = tema_combine(e1, e2, e3);
    fma::run(TemaLoop {
        input: &input[lookback + 1..],
        out: &mut out[lookback + 1..],
        k,
        e: [e1, e2, e3],
    });
    Ok(())
}

/// The TEMA after its seed.
struct TemaLoop<'a> {
    input: &'a [f64],
    out: &'a mut [f64],
    k: f64,
    e: [f64; 3],
}

impl Kernel for TemaLoop<'_> {
    #[inline(always)]
    fn run(self) {
        let TemaLoop {
            input,
            out,
            k,
            e: [mut e1, mut e2, mut e3],
        } = self;
        for (o, &x) in out.iter_mut().zip(input) {
            e1 = ema_step(e1, x, k);
            e2 = ema_step(e2, e1, k);
            e3 = ema_step(e3, e2, k);
            *o = tema_combine(e1, e2, e3);
        }
    }
}

#[inline(always)]
fn tema_combine(e1: f64, e2: f64, e3: f64) -> f64 {
    (3.0 * e1 - 3.0 * e2) + e3
}

/// Streaming [`tema_into`].
#[derive(Debug, Clone)]
pub struct TemaState {
    e1: EmaCore,
    e2: EmaCore,
    e3: EmaCore,
    period: usize,
}

impl TemaState {
    /// A state for `period` (1..=100000).
    pub fn new(period: usize) -> Result<TemaState, Error> {
        check_period("period", period, 1)?;
        Ok(TemaState {
            e1: EmaCore::new(period),
            e2: EmaCore::new(period),
            e3: EmaCore::new(period),
            period,
        })
    }

    /// Adds a value; the TEMA once `3 * (period - 1) + 1` values were seen.
    #[inline]
    pub fn update(&mut self, x: f64) -> Option<f64> {
        if self.period == 1 {
            return Some(x);
        }
        let e1 = self.e1.update(x)?;
        let e2 = self.e2.update(e1)?;
        let e3 = self.e3.update(e2)?;
        Some(tema_combine(e1, e2, e3))
    }
}
