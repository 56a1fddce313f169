//! Volatility: BBANDS, STDDEV, ATR, NATR and realised volatility.

use super::fma::{self, Kernel};
use super::volume::CompensatedSum;
use super::{check_len, prepare, true_range};
use crate::Error;
use crate::ring::Ring;
use crate::spec::check_period;

/// TA-Lib 0.8's rolling population variance: sums of `x - shift` and `(x - shift)^2`, re-centred
/// on the window mean (recomputed from the window, O(period)) when cancellation threatens, when
/// the value leaving dominates the sums, and every `32 * period` outputs.
#[derive(Debug, Clone)]
pub(crate) struct VarCore {
    inv_p: f64,
    shift: f64,
    s1: f64,
    s2: f64,
    seeded: bool,
    countdown: usize,
    every: usize,
}

impl VarCore {
    pub(crate) fn new(period: usize) -> VarCore {
        VarCore {
            inv_p: 1.0 / period as f64,
            shift: 0.0,
            s1: 0.0,
            s2: 0.0,
            seeded: false,
            countdown: 32 * period,
            every: 32 * period,
        }
    }

    /// Adds one of the first `period - 1` values; the first one becomes the shift.
    #[inline]
    pub(crate) fn seed(&mut self, x: f64) {
        if !self.seeded {
            self.seeded = true;
            self.shift = x;
        }
        let d = x - self.shift;
        self.s1 += d;
        self.s2 += d * d;
    }

    /// The variance of the full window `a` then `b` (oldest first) ending with `x`, and prepares
    /// for the next value by dropping the window's oldest value.
    #[inline(always)]
    pub(crate) fn step(&mut self, x: f64, a: &[f64], b: &[f64]) -> f64 {
        let oldest = match a.first() {
            Some(&v) => v,
            None => b.first().copied().unwrap_or(x),
        };
        let d = x - self.shift;
        let t = oldest - self.shift;
        // Opaque to the optimiser: otherwise LLVM packs `s2 - t2` with `m2 - m1 * m1` into one
        // vector subtraction, which lengthens the loop-carried chain of `s2` by a multiply.
        let t2 = std::hint::black_box(t * t);
        let s1 = self.s1 + d;
        let s2 = self.s2 + d * d;
        let m1 = self.inv_p * s1;
        let m2 = self.inv_p * s2;
        let var = m2 - m1 * m1;
        // TA-Lib drops the oldest value from s1 only when it does not re-centre, which then
        // replaces both sums anyway.
        let (s1_next, s2_next) = (s1 - t, s2 - t2);
        self.countdown -= 1;
        if self.inv_p * s2_next * 1e-6 > var || t2 > s2_next * 1e6 || self.countdown == 0 {
            let (shift, s1, s2, var) = recenter(self.inv_p, oldest, a, b);
            self.shift = shift;
            self.s1 = s1;
            self.s2 = s2;
            self.countdown = self.every;
            return var;
        }
        self.s1 = s1_next;
        self.s2 = s2_next;
        var
    }
}

/// VarCore's re-centring on the window mean: the new shift, sums (without the oldest value)
/// and the window's variance (0 when it is below 1e-12 of the mean square).
#[cold]
#[inline(never)]
fn recenter(inv_p: f64, oldest: f64, a: &[f64], b: &[f64]) -> (f64, f64, f64, f64) {
    let mut total = 0.0;
    for &v in a.iter().chain(b) {
        total += v;
    }
    let shift = total * inv_p;
    let (mut s1, mut s2) = (0.0, 0.0);
    for &v in a.iter().chain(b) {
        let d = v - shift;
        s1 += d;
        s2 += d * d;
    }
    let m1 = inv_p * s1;
    let m2 = inv_p * s2;
    let mut var = m2 - m1 * m1;
    if m2 * 1e-12 > var {
        var = 0.0;
    }
    let t = oldest - shift;
    (shift, s1 - t, s2 - t * t, var)
}

/// Standard deviation (TA_STDDEV): `sqrt(variance) * deviations` over `period` values, with
/// TA-Lib 0.8's re-centred rolling variance.
pub fn stddev_into(
    input: &[f64],
    period: usize,
    deviations: f64,
    out: &mut [f64],
) -> Result<(), Error> {
    check_period("period", period, 2)?;
    check_deviations(deviations)?;
    let lookback = period - 1;
    prepare("out", input.len(), out, lookback)?;
    let mut var = VarCore::new(period);
    for &x in &input[..lookback] {
        var.seed(x);
    }
    for (i, o) in out.iter_mut().enumerate().skip(lookback) {
        *o = var.step(input[i], &input[i - lookback..=i], &[]).sqrt() * deviations;
    }
    Ok(())
}

fn check_deviations(deviations: f64) -> Result<(), Error> {
    if deviations.is_finite() && deviations >= 0.0 {
        Ok(())
    } else {
        Err(Error::InvalidParameter {
            name: "deviations",
            value: deviations,
            reason: "must be finite and not negative",
        })
    }
}

/// Streaming [`stddev_into`].
#[derive(Debug, Clone)]
pub struct StddevState {
    window: Ring,
    var: VarCore,
    deviations: f64,
}

impl StddevState {
    /// A state for `period` (2..=100000) and a finite, non-negative multiplier.
    pub fn new(period: usize, deviations: f64) -> Result<StddevState, Error> {
        check_period("period", period, 2)?;
        check_deviations(deviations)?;
        Ok(StddevState {
            window: Ring::new(period),
            var: VarCore::new(period),
            deviations,
        })
    }

    /// Adds a value; the deviation once `period` values were seen.
    #[inline]
    pub fn update(&mut self, x: f64) -> Option<f64> {
        self.window.push(x);
        if !self.window.is_full() {
            self.var.seed(x);
            return None;
        }
        let (a, b) = self.window.as_slices();
        Some(self.var.step(x, a, b).sqrt() * self.deviations)
    }
}

/// Bollinger Bands (TA_BBANDS with an SMA middle band): `middle ± deviations * stddev`, the
/// middle band TA_SMA's running sum, the deviation TA-Lib 0.8's re-centred variance (a zero
/// variance gives a zero width).
#[allow(clippy::too_many_arguments)]
pub fn bbands_into(
    input: &[f64],
    period: usize,
    deviations: f64,
    upper: &mut [f64],
    middle: &mut [f64],
    lower: &mut [f64],
) -> Result<(), Error> {
    check_period("period", period, 2)?;
    check_deviations(deviations)?;
    let lookback = period - 1;
    let n = input.len();
    prepare("upper", n, upper, lookback)?;
    prepare("middle", n, middle, lookback)?;
    prepare("lower", n, lower, lookback)?;
    let mut core = BbandsCore::new(period, deviations);
    for &x in &input[..lookback] {
        core.seed(x);
    }
    let outs = upper
        .iter_mut()
        .zip(middle.iter_mut())
        .zip(lower.iter_mut())
        .enumerate();
    for (i, ((u, m), l)) in outs.skip(lookback) {
        let window = &input[i - lookback..=i];
        [*u, *m, *l] = core.step(input[i], window, &[]);
    }
    Ok(())
}

#[derive(Debug, Clone)]
struct BbandsCore {
    var: VarCore,
    total: f64,
    period: f64,
    deviations: f64,
}

impl BbandsCore {
    fn new(period: usize, deviations: f64) -> BbandsCore {
        BbandsCore {
            var: VarCore::new(period),
            total: 0.0,
            period: period as f64,
            deviations,
        }
    }

    #[inline]
    fn seed(&mut self, x: f64) {
        self.total += x;
        self.var.seed(x);
    }

    #[inline(always)]
    fn middle_and_variance(&mut self, x: f64, a: &[f64], b: &[f64]) -> (f64, f64) {
        self.total += x;
        let middle = self.total / self.period;
        let oldest = match a.first() {
            Some(&v) => v,
            None => b.first().copied().unwrap_or(x),
        };
        self.total -= oldest;
        (middle, self.var.step(x, a, b))
    }

    #[inline(always)]
    fn bands(&self, middle: f64, var: f64) -> [f64; 3] {
        let sd = if var == 0.0 { 0.0 } else { var.sqrt() };
        let width = sd * self.deviations;
        [middle + width, middle, middle - width]
    }

    #[inline(always)]
    fn step(&mut self, x: f64, a: &[f64], b: &[f64]) -> [f64; 3] {
        let (middle, var) = self.middle_and_variance(x, a, b);
        self.bands(middle, var)
    }
}

/// Streaming [`bbands_into`]: `[upper, middle, lower]`.
#[derive(Debug, Clone)]
pub struct BbandsState {
    window: Ring,
    core: BbandsCore,
}

impl BbandsState {
    /// A state for `period` (2..=100000) and a finite, non-negative width.
    pub fn new(period: usize, deviations: f64) -> Result<BbandsState, Error> {
        check_period("period", period, 2)?;
        check_deviations(deviations)?;
        Ok(BbandsState {
            window: Ring::new(period),
            core: BbandsCore::new(period, deviations),
        })
    }

    /// Adds a close; the bands once `period` closes were seen.
    #[inline]
    pub fn update(&mut self, x: f64) -> Option<[f64; 3]> {
        self.window.push(x);
        if !self.window.is_full() {
            self.core.seed(x);
            return None;
        }
        let (a, b) = self.window.as_slices();
        Some(self.core.step(x, a, b))
    }
}

/// Average true range as TA-Lib 0.8: the SMA of the first `period` true ranges, then
/// `fma((period - 1) / period, atr, tr * (1 - (period - 1) / period))`. A period of 1 is the
/// true range itself.
pub fn atr_into(
    high: &[f64],
    low: &[f64],
    close: &[f64],
    period: usize,
    out: &mut [f64],
) -> Result<(), Error> {
    atr_like(high, low, close, period, out, false)
}

/// Normalised ATR (TA_NATR): `atr / close * 100`, 0 when the close is 0. As in TA-Lib 0.8, a
/// period of 1 gives the plain (not normalised) true range.
pub fn natr_into(
    high: &[f64],
    low: &[f64],
    close: &[f64],
    period: usize,
    out: &mut [f64],
) -> Result<(), Error> {
    atr_like(high, low, close, period, out, true)
}

fn atr_like(
    high: &[f64],
    low: &[f64],
    close: &[f64],
    period: usize,
    out: &mut [f64],
    normalise: bool,
) -> Result<(), Error> {
    check_period("period", period, 1)?;
    let n = close.len();
    check_len("high", high.len(), n)?;
    check_len("low", low.len(), n)?;
    prepare("out", n, out, period)?;
    let mut core = AtrCore::new(period);
    for i in 1..period {
        core.seed(true_range(high[i], low[i], close[i - 1]));
    }
    let first = core.finish_seed(true_range(high[period], low[period], close[period - 1]));
    out[period] = if normalise && period > 1 {
        natr(first, close[period])
    } else {
        first
    };
    let rest = AtrLoop {
        high: &high[period..],
        low: &low[period..],
        close: &close[period - 1..],
        out: &mut out[period..],
        keep: core.keep,
        take: core.take,
        atr: core.atr,
    };
    if period == 1 {
        rest.true_range();
    } else if normalise {
        fma::run(NatrLoop(rest));
    } else {
        fma::run(rest);
    }
    Ok(())
}

/// (N)ATR after its seed: `out[i]` from `high[i]`, `low[i]`, `close[i]` and `close[i + 1]`,
/// with `out[0]` already written.
struct AtrLoop<'a> {
    high: &'a [f64],
    low: &'a [f64],
    /// From the close before the bar of `out[0]`.
    close: &'a [f64],
    out: &'a mut [f64],
    keep: f64,
    take: f64,
    atr: f64,
}

impl AtrLoop<'_> {
    /// A period of 1: the true range.
    fn true_range(self) {
        let rest = self.out[1..]
            .iter_mut()
            .zip(&self.high[1..])
            .zip(&self.low[1..])
            .zip(&self.close[1..]);
        for (((o, &h), &l), &prev) in rest {
            *o = true_range(h, l, prev);
        }
    }
}

impl Kernel for AtrLoop<'_> {
    /// ATR after its seed: one loop, each true range computed next to the step that takes it,
    /// which is TA-Lib's own loop. On cached columns the chain of fused multiply-adds sets the
    /// pace (one FMA latency per bar) and the true ranges of the bars ahead run out of order
    /// alongside it; at a million bars memory does, on both sides. Blocks of true ranges first
    /// (as NATR does) measured 2-5 % slower at a million bars (benches/README.md, "Indicators
    /// vs TA-Lib", lists what else was tried).
    #[inline(always)]
    fn run(self) {
        let AtrLoop {
            high,
            low,
            close,
            out,
            keep,
            take,
            mut atr,
        } = self;
        let rest = out[1..]
            .iter_mut()
            .zip(&high[1..])
            .zip(&low[1..])
            .zip(&close[1..]);
        for (((o, &h), &l), &prev) in rest {
            atr = keep.mul_add(atr, true_range(h, l, prev) * take);
            *o = atr;
        }
    }
}

/// NATR after its seed.
struct NatrLoop<'a>(AtrLoop<'a>);

/// Bars per block of true ranges.
const BLOCK: usize = 32;

impl Kernel for NatrLoop<'_> {
    /// Wilder's smoothing of the true range, divided by the close.
    #[inline(always)]
    fn run(self) {
        let AtrLoop {
            high,
            low,
            close,
            out,
            keep,
            take,
            mut atr,
        } = self.0;
        // True ranges a block at a time, in vectors, ahead of the chain of fused multiply-adds
        // that the smoothing is, and the divisions by the close, slower per bar than that
        // chain, in vectors after it, off the chain. Each close is read from its own column,
        // never back from `out`.
        let blocks = out[1..]
            .chunks_mut(BLOCK)
            .zip(high[1..].chunks(BLOCK))
            .zip(low[1..].chunks(BLOCK))
            .zip(close[1..].chunks(BLOCK).zip(close[2..].chunks(BLOCK)));
        let mut scaled = [0.0; BLOCK];
        for (((out, high), low), (prev, close)) in blocks {
            for (((t, &h), &l), &p) in scaled.iter_mut().zip(high).zip(low).zip(prev) {
                *t = true_range(h, l, p) * take;
            }
            for (o, &t) in out.iter_mut().zip(&scaled) {
                atr = keep.mul_add(atr, t);
                *o = atr;
            }
            for (o, &c) in out.iter_mut().zip(close) {
                *o = natr(*o, c);
            }
        }
    }
}

#[inline(always)]
fn natr(atr: f64, close: f64) -> f64 {
    if close != 0.0 {
        atr / close * 100.0
    } else {
        0.0
    }
}

#[derive(Debug, Clone)]
struct AtrCore {
    keep: f64,
    take: f64,
    period: f64,
    one: bool,
    atr: f64,
}

impl AtrCore {
    fn new(period: usize) -> AtrCore {
        let keep = (period - 1) as f64 / period as f64;
        AtrCore {
            keep,
            take: 1.0 - keep,
            period: period as f64,
            one: period == 1,
            atr: 0.0,
        }
    }

    #[inline]
    fn seed(&mut self, tr: f64) {
        self.atr += tr;
    }

    #[inline]
    fn finish_seed(&mut self, tr: f64) -> f64 {
        self.atr = (self.atr + tr) / self.period;
        self.atr
    }

    #[inline(always)]
    fn step(&mut self, tr: f64) -> f64 {
        if self.one {
            return tr;
        }
        self.atr = self.keep.mul_add(self.atr, tr * self.take);
        self.atr
    }
}

/// Streaming [`atr_into`] and [`natr_into`].
#[derive(Debug, Clone)]
pub struct AtrState {
    core: AtrCore,
    period: usize,
    seen: usize,
    prev_close: f64,
    normalise: bool,
}

impl AtrState {
    /// An ATR state for `period` (1..=100000).
    pub fn atr(period: usize) -> Result<AtrState, Error> {
        AtrState::new(period, false)
    }

    /// A NATR state for `period` (1..=100000).
    pub fn natr(period: usize) -> Result<AtrState, Error> {
        AtrState::new(period, true)
    }

    fn new(period: usize, normalise: bool) -> Result<AtrState, Error> {
        check_period("period", period, 1)?;
        Ok(AtrState {
            core: AtrCore::new(period),
            period,
            seen: 0,
            prev_close: 0.0,
            normalise,
        })
    }

    /// Adds a bar; the (N)ATR once `period + 1` bars were seen.
    #[inline]
    pub fn update(&mut self, high: f64, low: f64, close: f64) -> Option<f64> {
        self.seen += 1;
        let prev = std::mem::replace(&mut self.prev_close, close);
        if self.seen == 1 {
            return None;
        }
        let tr = true_range(high, low, prev);
        let atr = if self.seen <= self.period {
            self.core.seed(tr);
            return None;
        } else if self.seen == self.period + 1 {
            self.core.finish_seed(tr)
        } else {
            self.core.step(tr)
        };
        Some(if self.normalise && self.period > 1 {
            natr(atr, close)
        } else {
            atr
        })
    }
}

/// Realised volatility: the sample standard deviation (n - 1 denominator) of the last `period`
/// log returns `ln(close / previous close)`, not annualised. Closes must be positive
/// (non-positive ones give NaN here; [`compute_into`](crate::compute_into) rejects them).
///
/// Rolling compensated sums of the returns around a shift; when the sum of squared deviations
/// falls below a thousandth of the sum of squares (cancellation), the window is recomputed
/// around its mean in O(period), so the result stays within a few units in the last place of a
/// two-pass computation.
pub fn realized_volatility_into(
    close: &[f64],
    period: usize,
    out: &mut [f64],
) -> Result<(), Error> {
    check_period("period", period, 2)?;
    prepare("out", close.len(), out, period)?;
    let mut rv = RvCore::new(period);
    // The return ending at bar i is written to out[i], its volatility `period` bars earlier (a
    // slot no later window reads); the values are shifted into place at the end.
    for i in 1..close.len() {
        let r = (close[i] / close[i - 1]).ln();
        out[i] = r;
        if i < period {
            rv.seed(r);
        } else {
            let value = rv.step(r, &out[i + 1 - period..=i], &[]);
            out[i - period] = value;
        }
    }
    let n = close.len();
    out.copy_within(0..n - period, period);
    out[..period].fill(f64::NAN);
    Ok(())
}

#[derive(Debug, Clone)]
struct RvCore {
    n: f64,
    shift: f64,
    seeded: bool,
    s1: CompensatedSum,
    s2: CompensatedSum,
}

impl RvCore {
    fn new(period: usize) -> RvCore {
        RvCore {
            n: period as f64,
            shift: 0.0,
            seeded: false,
            s1: CompensatedSum::default(),
            s2: CompensatedSum::default(),
        }
    }

    #[inline]
    fn seed(&mut self, r: f64) {
        if !self.seeded {
            self.seeded = true;
            self.shift = r;
        }
        let d = r - self.shift;
        self.s1.add(d);
        self.s2.add(d * d);
    }

    /// The volatility of the full window `a` then `b` ending with `r`; drops the oldest return.
    #[inline(always)]
    fn step(&mut self, r: f64, a: &[f64], b: &[f64]) -> f64 {
        self.seed(r);
        let (s1, s2) = (self.s1.value(), self.s2.value());
        let mut squares = s2 - s1 * s1 / self.n;
        #[allow(
            clippy::neg_cmp_op_on_partial_ord,
            reason = "NaN sums are recomputed from the window too"
        )]
        if !(squares > 1e-3 * s2) {
            squares = self.recenter(a, b);
        }
        let oldest = match a.first() {
            Some(&v) => v,
            None => b.first().copied().unwrap_or(r),
        };
        let t = oldest - self.shift;
        self.s1.add(-t);
        self.s2.add(-(t * t));
        let var = squares / (self.n - 1.0);
        if var < 0.0 { 0.0 } else { var.sqrt() }
    }

    /// Recomputes the sums around the window mean; the sum of squared deviations.
    #[cold]
    #[inline(never)]
    fn recenter(&mut self, a: &[f64], b: &[f64]) -> f64 {
        let mut total = 0.0;
        for &v in a.iter().chain(b) {
            total += v;
        }
        self.shift = total / self.n;
        self.s1 = CompensatedSum::default();
        self.s2 = CompensatedSum::default();
        for &v in a.iter().chain(b) {
            let d = v - self.shift;
            self.s1.add(d);
            self.s2.add(d * d);
        }
        let (s1, s2) = (self.s1.value(), self.s2.value());
        s2 - s1 * s1 / self.n
    }
}

/// Streaming [`realized_volatility_into`].
#[derive(Debug, Clone)]
pub struct RealizedVolatilityState {
    returns: Ring,
    core: RvCore,
    prev_close: Option<f64>,
}

impl RealizedVolatilityState {
    /// A state for `period` (2..=100000) returns.
    pub fn new(period: usize) -> Result<RealizedVolatilityState, Error> {
        check_period("period", period, 2)?;
        Ok(RealizedVolatilityState {
            returns: Ring::new(period),
            core: RvCore::new(period),
            prev_close: None,
        })
    }

    /// Adds a close; the volatility once `period + 1` closes were seen.
    #[inline]
    pub fn update(&mut self, close: f64) -> Option<f64> {
        let prev = self.prev_close.replace(close)?;
        let r = (close / prev).ln();
        self.returns.push(r);
        if !self.returns.is_full() {
            self.core.seed(r);
            return None;
        }
        let (a, b) = self.returns.as_slices();
        Some(self.core.step(r, a, b))
    }
}
