//! Momentum and oscillators: RSI, MACD, ROC, MOM, STOCH, WILLR, CCI, MFI, ADX.

use super::fma::{self, Kernel};
use super::ma::{SmaState, ema_k, sma_into};
use super::{check_data, check_len, ema_step, negligible, prepare, true_range, typical_price};
use crate::Error;
use crate::ring::Ring;
use crate::spec::check_period;

/// Wilder's RSI as TA-Lib 0.8 computes it: average gain and loss smoothed by
/// `(avg * (period - 1) + move) * (1 / period)`, RSI `100 * gain / (gain + loss)` (0 when the sum
/// is not positive).
pub fn rsi_into(input: &[f64], period: usize, out: &mut [f64]) -> Result<(), Error> {
    check_period("period", period, 2)?;
    prepare("out", input.len(), out, period)?;
    let mut core = RsiCore::new(period);
    core.prev = input[0];
    for &x in &input[1..=period] {
        core.seed(x);
    }
    out[period] = core.finish_seed();
    for (o, &x) in out[period + 1..].iter_mut().zip(&input[period + 1..]) {
        *o = core.step(x);
    }
    Ok(())
}

#[derive(Debug, Clone)]
struct RsiCore {
    inv: f64,
    keep: f64,
    prev: f64,
    gain: f64,
    loss: f64,
}

impl RsiCore {
    fn new(period: usize) -> RsiCore {
        RsiCore {
            inv: 1.0 / period as f64,
            keep: (period - 1) as f64,
            prev: 0.0,
            gain: 0.0,
            loss: 0.0,
        }
    }

    /// The gain and loss parts of a move, as TA-Lib splits it (a zero move is a zero loss).
    #[inline(always)]
    fn split(&mut self, x: f64) -> (f64, f64) {
        let change = x - self.prev;
        self.prev = x;
        let up = if change > 0.0 { change } else { 0.0 };
        (up, up - change)
    }

    #[inline]
    fn seed(&mut self, x: f64) {
        let (up, down) = self.split(x);
        self.gain += up;
        self.loss += down;
    }

    #[inline]
    fn finish_seed(&mut self) -> f64 {
        self.loss *= self.inv;
        self.gain *= self.inv;
        self.value()
    }

    #[inline(always)]
    fn step(&mut self, x: f64) -> f64 {
        let (up, down) = self.split(x);
        self.gain = (self.gain * self.keep + up) * self.inv;
        self.loss = (down + self.loss * self.keep) * self.inv;
        self.value()
    }

    #[inline(always)]
    fn value(&self) -> f64 {
        let total = self.loss + self.gain;
        if total > 0.0 {
            self.gain / total * 100.0
        } else {
            0.0
        }
    }
}

/// Streaming [`rsi_into`].
#[derive(Debug, Clone)]
pub struct RsiState {
    core: RsiCore,
    period: usize,
    seen: usize,
}

impl RsiState {
    /// A state for `period` (2..=100000).
    pub fn new(period: usize) -> Result<RsiState, Error> {
        check_period("period", period, 2)?;
        Ok(RsiState {
            core: RsiCore::new(period),
            period,
            seen: 0,
        })
    }

    /// Adds a close; the RSI once `period + 1` closes were seen.
    #[inline]
    pub fn update(&mut self, x: f64) -> Option<f64> {
        self.seen += 1;
        if self.seen == 1 {
            self.core.prev = x;
            return None;
        }
        if self.seen <= self.period {
            self.core.seed(x);
            return None;
        }
        if self.seen == self.period + 1 {
            self.core.seed(x);
            return Some(self.core.finish_seed());
        }
        Some(self.core.step(x))
    }
}

/// Checks MACD periods: fast and slow at least 2 with fast below slow, signal at least 1.
fn check_macd(fast: usize, slow: usize, signal: usize) -> Result<(), Error> {
    check_period("fast_period", fast, 2)?;
    check_period("slow_period", slow, 2)?;
    check_period("signal_period", signal, 1)?;
    if fast >= slow {
        return Err(Error::InvalidParameter {
            name: "fast_period",
            value: fast as f64,
            reason: "must be less than slow_period",
        });
    }
    Ok(())
}

/// MACD as TA_MACD: fast and slow EMAs whose SMA seeds end on the same bar (bar `slow - 1`), the
/// signal EMA of the MACD line seeded with its first `signal` values, and the histogram.
#[allow(clippy::too_many_arguments)]
pub fn macd_into(
    input: &[f64],
    fast: usize,
    slow: usize,
    signal: usize,
    macd: &mut [f64],
    signal_out: &mut [f64],
    hist: &mut [f64],
) -> Result<(), Error> {
    check_macd(fast, slow, signal)?;
    let lookback = (slow - 1) + (signal - 1);
    prepare("macd", input.len(), macd, lookback)?;
    prepare("signal", input.len(), signal_out, lookback)?;
    prepare("hist", input.len(), hist, lookback)?;
    let mut core = MacdCore::new(fast, slow, signal);
    let (seed, rest) = input.split_at(lookback + 1);
    for &x in &seed[..lookback] {
        core.seed(x);
    }
    let [m, s, h] = core.finish_seed(seed[lookback]);
    macd[lookback] = m;
    signal_out[lookback] = s;
    hist[lookback] = h;
    fma::run(MacdLoop {
        core,
        input: rest,
        macd: &mut macd[lookback + 1..],
        signal: &mut signal_out[lookback + 1..],
        hist: &mut hist[lookback + 1..],
    });
    Ok(())
}

/// MACD after its seed.
struct MacdLoop<'a> {
    core: MacdCore,
    input: &'a [f64],
    macd: &'a mut [f64],
    signal: &'a mut [f64],
    hist: &'a mut [f64],
}

impl Kernel for MacdLoop<'_> {
    #[inline(always)]
    fn run(self) {
        let MacdLoop {
            mut core,
            input,
            macd,
            signal,
            hist,
        } = self;
        let outs = macd.iter_mut().zip(signal).zip(hist);
        if core.signal_period == 1 {
            for (((m, s), h), &x) in outs.zip(input) {
                let line = core.line(x);
                *m = line;
                *s = line;
                *h = same_line_hist(line);
            }
        } else {
            for (((m, s), h), &x) in outs.zip(input) {
                let [line, sig, diff] = core.step(x);
                *m = line;
                *s = sig;
                *h = diff;
            }
        }
    }
}

/// TA-Lib's histogram when the signal line is the MACD line itself (a signal period of 1):
/// `macd - macd`, which is 0 for a finite line.
#[allow(clippy::eq_op, reason = "TA-Lib subtracts the line from itself")]
#[inline(always)]
fn same_line_hist(line: f64) -> f64 {
    line - line
}

#[derive(Debug, Clone)]
struct MacdCore {
    fast_k: f64,
    slow_k: f64,
    signal_k: f64,
    fast_period: usize,
    slow_period: usize,
    signal_period: usize,
    seen: usize,
    fast: f64,
    slow: f64,
    signal: f64,
}

impl MacdCore {
    fn new(fast: usize, slow: usize, signal: usize) -> MacdCore {
        MacdCore {
            fast_k: ema_k(fast),
            slow_k: ema_k(slow),
            signal_k: ema_k(signal),
            fast_period: fast,
            slow_period: slow,
            signal_period: signal,
            seen: 0,
            fast: 0.0,
            slow: 0.0,
            signal: 0.0,
        }
    }

    /// Advances both price EMAs; the MACD line.
    #[inline(always)]
    fn line(&mut self, x: f64) -> f64 {
        self.fast = ema_step(self.fast, x, self.fast_k);
        self.slow = ema_step(self.slow, x, self.slow_k);
        self.fast - self.slow
    }

    /// Feeds one of the first `lookback` inputs.
    #[inline]
    fn seed(&mut self, x: f64) {
        self.seen += 1;
        if self.seen < self.slow_period {
            self.slow += x;
            if self.seen > self.slow_period - self.fast_period {
                self.fast += x;
            }
        } else if self.seen == self.slow_period {
            self.slow = (self.slow + x) / self.slow_period as f64;
            self.fast = (self.fast + x) / self.fast_period as f64;
            self.signal = 0.0 + (self.fast - self.slow);
        } else {
            let line = self.line(x);
            self.signal += line;
        }
    }

    /// Feeds the input at the lookback; the first outputs.
    #[inline]
    fn finish_seed(&mut self, x: f64) -> [f64; 3] {
        self.seed(x);
        let line = self.fast - self.slow;
        if self.signal_period == 1 {
            return [line, line, same_line_hist(line)];
        }
        self.signal /= self.signal_period as f64;
        [line, self.signal, line - self.signal]
    }

    #[inline(always)]
    fn step(&mut self, x: f64) -> [f64; 3] {
        let line = self.line(x);
        self.signal = ema_step(self.signal, line, self.signal_k);
        [line, self.signal, line - self.signal]
    }
}

/// Streaming [`macd_into`]: `[macd, signal, hist]`.
#[derive(Debug, Clone)]
pub struct MacdState {
    core: MacdCore,
    lookback: usize,
}

impl MacdState {
    /// A state for the given periods (fast and slow at least 2, fast below slow; signal at
    /// least 1).
    pub fn new(fast: usize, slow: usize, signal: usize) -> Result<MacdState, Error> {
        check_macd(fast, slow, signal)?;
        Ok(MacdState {
            core: MacdCore::new(fast, slow, signal),
            lookback: slow + signal - 2,
        })
    }

    /// Adds a close; `[macd, signal, hist]` once `lookback + 1` closes were seen.
    #[inline]
    pub fn update(&mut self, x: f64) -> Option<[f64; 3]> {
        if self.core.seen < self.lookback {
            self.core.seed(x);
            return None;
        }
        if self.core.seen == self.lookback {
            return Some(self.core.finish_seed(x));
        }
        if self.core.signal_period == 1 {
            let line = self.core.line(x);
            return Some([line, line, same_line_hist(line)]);
        }
        Some(self.core.step(x))
    }
}

/// Rate of change in percent (TA_ROC): `(x / x[-period] - 1) * 100`, 0 when the old price is 0.
pub fn roc_into(input: &[f64], period: usize, out: &mut [f64]) -> Result<(), Error> {
    check_period("period", period, 1)?;
    prepare("out", input.len(), out, period)?;
    for ((o, &x), &old) in out[period..].iter_mut().zip(&input[period..]).zip(input) {
        *o = roc(x, old);
    }
    Ok(())
}

#[inline(always)]
fn roc(x: f64, old: f64) -> f64 {
    // Computed unconditionally so that the loop vectorises; a zero `old` selects 0.
    let value = (x / old - 1.0) * 100.0;
    if old != 0.0 { value } else { 0.0 }
}

/// Momentum (TA_MOM): `x - x[-period]`.
pub fn mom_into(input: &[f64], period: usize, out: &mut [f64]) -> Result<(), Error> {
    check_period("period", period, 1)?;
    prepare("out", input.len(), out, period)?;
    for ((o, &x), &old) in out[period..].iter_mut().zip(&input[period..]).zip(input) {
        *o = x - old;
    }
    Ok(())
}

/// Streaming ROC and MOM: the value `period` bars back.
#[derive(Debug, Clone)]
pub struct LagState {
    window: Ring,
    momentum: bool,
}

impl LagState {
    /// A ROC state for `period` (1..=100000).
    pub fn roc(period: usize) -> Result<LagState, Error> {
        check_period("period", period, 1)?;
        Ok(LagState {
            window: Ring::new(period),
            momentum: false,
        })
    }

    /// A MOM state for `period` (1..=100000).
    pub fn mom(period: usize) -> Result<LagState, Error> {
        check_period("period", period, 1)?;
        Ok(LagState {
            window: Ring::new(period),
            momentum: true,
        })
    }

    /// Adds a close; the ROC or MOM once `period + 1` closes were seen.
    #[inline]
    pub fn update(&mut self, x: f64) -> Option<f64> {
        let old = self.window.push(x)?;
        Some(if self.momentum { x - old } else { roc(x, old) })
    }
}

/// Calls `f(i, highest, lowest)` for every bar `i >= period - 1` with the extremes of the
/// `period` bars ending at `i` (van Herk / Gil-Werman: prefix extremes of the current block of
/// `period` bars against suffix extremes of the previous one, three comparisons per value).
#[inline]
fn for_each_extremes(high: &[f64], low: &[f64], period: usize, mut f: impl FnMut(usize, f64, f64)) {
    let n = high.len().min(low.len());
    let mut suffix_high = vec![f64::NEG_INFINITY; period];
    let mut suffix_low = vec![f64::INFINITY; period];
    let mut block = 0;
    while block < n {
        let end = (block + period).min(n);
        let (highs, lows) = (&high[block..end], &low[block..end]);
        let (mut prefix_high, mut prefix_low) = (f64::NEG_INFINITY, f64::INFINITY);
        for (offset, (&h, &l)) in highs.iter().zip(lows).enumerate() {
            prefix_high = max(prefix_high, h);
            prefix_low = min(prefix_low, l);
            let i = block + offset;
            if i + 1 < period {
                continue;
            }
            // The window starts `offset + 1` values into the previous block (or at this one).
            match (suffix_high.get(offset + 1), suffix_low.get(offset + 1)) {
                (Some(&sh), Some(&sl)) => f(i, max(sh, prefix_high), min(sl, prefix_low)),
                _ => f(i, prefix_high, prefix_low),
            }
        }
        let (mut sh, mut sl) = (f64::NEG_INFINITY, f64::INFINITY);
        let suffixes = suffix_high.iter_mut().zip(suffix_low.iter_mut());
        for ((h_out, l_out), (&h, &l)) in suffixes.zip(highs.iter().zip(lows)).rev() {
            sh = max(sh, h);
            sl = min(sl, l);
            *h_out = sh;
            *l_out = sl;
        }
        block = end;
    }
}

#[inline(always)]
fn max(a: f64, b: f64) -> f64 {
    if b > a { b } else { a }
}

#[inline(always)]
fn min(a: f64, b: f64) -> f64 {
    if b < a { b } else { a }
}

/// A sliding-window maximum or minimum in O(1) amortised time, allocated once.
#[derive(Debug, Clone)]
struct MonoDeque {
    index: Vec<u64>,
    value: Vec<f64>,
    head: usize,
    len: usize,
    max: bool,
}

impl MonoDeque {
    fn new(period: usize, max: bool) -> MonoDeque {
        MonoDeque {
            index: vec![0; period],
            value: vec![0.0; period],
            head: 0,
            len: 0,
            max,
        }
    }

    /// `k` (below twice the capacity) wrapped into the buffer.
    #[inline(always)]
    fn wrap(&self, k: usize) -> usize {
        if k >= self.value.len() {
            k - self.value.len()
        } else {
            k
        }
    }

    /// Adds bar `i` with value `v`; the extreme of the last `period` bars.
    #[inline]
    fn push(&mut self, i: u64, v: f64) -> f64 {
        let cap = self.value.len();
        while self.len > 0 {
            let back = self.wrap(self.head + self.len - 1);
            let dominated = if self.max {
                self.value[back] <= v
            } else {
                self.value[back] >= v
            };
            if !dominated {
                break;
            }
            self.len -= 1;
        }
        if self.len == cap {
            // Full (a strictly monotonic window, or NaN, which never dominates): the oldest
            // entry is bar `i - period`, which leaves the window with this bar anyway.
            self.head = self.wrap(self.head + 1);
            self.len -= 1;
        }
        let slot = self.wrap(self.head + self.len);
        self.index[slot] = i;
        self.value[slot] = v;
        self.len += 1;
        if self.index[self.head] + cap as u64 <= i {
            self.head = self.wrap(self.head + 1);
            self.len -= 1;
        }
        self.value[self.head]
    }
}

/// Highest high and lowest low of the last `period` bars, streaming.
#[derive(Debug, Clone)]
struct Extremes {
    highs: MonoDeque,
    lows: MonoDeque,
    seen: u64,
    lookback: u64,
}

impl Extremes {
    fn new(period: usize) -> Extremes {
        Extremes {
            highs: MonoDeque::new(period, true),
            lows: MonoDeque::new(period, false),
            seen: 0,
            lookback: period as u64 - 1,
        }
    }

    /// `(highest, lowest)` once `period` bars were seen.
    #[inline]
    fn update(&mut self, high: f64, low: f64) -> Option<(f64, f64)> {
        let i = self.seen;
        self.seen += 1;
        let highest = self.highs.push(i, high);
        let lowest = self.lows.push(i, low);
        (i >= self.lookback).then_some((highest, lowest))
    }
}

/// TA-Lib 0.8's fast %K: `(close - lowest) / (highest - lowest) * 100`, 0 when the range is
/// negligible next to the prices.
#[inline(always)]
fn fast_k(close: f64, highest: f64, lowest: f64) -> f64 {
    let range = highest - lowest;
    if negligible(range, highest, lowest) {
        0.0
    } else {
        (close - lowest) / range * 100.0
    }
}

/// Slow stochastic (TA_STOCH with SMA smoothing): fast %K over `fastk` bars, %K its
/// `slowk`-bar SMA, %D the `slowd`-bar SMA of %K.
#[allow(clippy::too_many_arguments)]
pub fn stoch_into(
    high: &[f64],
    low: &[f64],
    close: &[f64],
    fastk: usize,
    slowk: usize,
    slowd: usize,
    k: &mut [f64],
    d: &mut [f64],
) -> Result<(), Error> {
    check_period("period", fastk, 1)?;
    check_period("fast_period", slowk, 1)?;
    check_period("slow_period", slowd, 1)?;
    let n = close.len();
    check_len("high", high.len(), n)?;
    check_len("low", low.len(), n)?;
    let lookback = (fastk - 1) + (slowk - 1) + (slowd - 1);
    prepare("k", n, k, lookback)?;
    prepare("d", n, d, lookback)?;
    // Fast %K goes into `d` first, %K into `k`, then %D over %K replaces fast %K in `d`.
    for_each_extremes(high, low, fastk, |i, highest, lowest| {
        d[i] = fast_k(close[i], highest, lowest);
    });
    let first_k = fastk - 1;
    sma_into(&d[first_k..], slowk, &mut k[first_k..])?;
    let first_d = first_k + slowk - 1;
    sma_into(&k[first_d..], slowd, &mut d[first_d..])?;
    k[..lookback].fill(f64::NAN);
    d[..lookback].fill(f64::NAN);
    Ok(())
}

/// Streaming [`stoch_into`]: `[k, d]`.
#[derive(Debug, Clone)]
pub struct StochState {
    extremes: Extremes,
    slow_k: SmaState,
    slow_d: SmaState,
}

impl StochState {
    /// A state for fast %K, slow %K and slow %D periods (each 1..=100000).
    pub fn new(fastk: usize, slowk: usize, slowd: usize) -> Result<StochState, Error> {
        check_period("period", fastk, 1)?;
        Ok(StochState {
            extremes: Extremes::new(fastk),
            slow_k: SmaState::new(slowk).map_err(|e| rename(e, "fast_period"))?,
            slow_d: SmaState::new(slowd).map_err(|e| rename(e, "slow_period"))?,
        })
    }

    /// Adds a bar; `[k, d]` once the lookback was covered.
    #[inline]
    pub fn update(&mut self, high: f64, low: f64, close: f64) -> Option<[f64; 2]> {
        let (highest, lowest) = self.extremes.update(high, low)?;
        let k = self.slow_k.update(fast_k(close, highest, lowest))?;
        let d = self.slow_d.update(k)?;
        Some([k, d])
    }
}

fn rename(error: Error, name: &'static str) -> Error {
    match error {
        Error::InvalidParameter { value, reason, .. } => Error::InvalidParameter {
            name,
            value,
            reason,
        },
        other => other,
    }
}

/// Williams' %R as TA-Lib 0.8: `(highest - close) / (highest - lowest) * -100` clamped to
/// [-100, 0], 0 when the range is negligible next to the prices.
pub fn willr_into(
    high: &[f64],
    low: &[f64],
    close: &[f64],
    period: usize,
    out: &mut [f64],
) -> Result<(), Error> {
    check_period("period", period, 2)?;
    let n = close.len();
    check_len("high", high.len(), n)?;
    check_len("low", low.len(), n)?;
    prepare("out", n, out, period - 1)?;
    for_each_extremes(high, low, period, |i, highest, lowest| {
        out[i] = willr(close[i], highest, lowest);
    });
    Ok(())
}

#[inline(always)]
fn willr(close: f64, highest: f64, lowest: f64) -> f64 {
    let range = highest - lowest;
    if negligible(range, highest, lowest) {
        return 0.0;
    }
    ((highest - close) / range * -100.0).clamp(-100.0, 0.0)
}

/// Streaming [`willr_into`].
#[derive(Debug, Clone)]
pub struct WillrState {
    extremes: Extremes,
}

impl WillrState {
    /// A state for `period` (2..=100000).
    pub fn new(period: usize) -> Result<WillrState, Error> {
        check_period("period", period, 2)?;
        Ok(WillrState {
            extremes: Extremes::new(period),
        })
    }

    /// Adds a bar; %R once `period` bars were seen.
    #[inline]
    pub fn update(&mut self, high: f64, low: f64, close: f64) -> Option<f64> {
        let (highest, lowest) = self.extremes.update(high, low)?;
        Some(willr(close, highest, lowest))
    }
}

/// CCI as TA-Lib 0.8: typical prices in a ring whose slots are summed in storage order, mean
/// deviation over the same ring, `(tp - mean) / (0.015 * meandev)`, 0 when the numerator or the
/// mean deviation is negligible next to the mean.
pub fn cci_into(
    high: &[f64],
    low: &[f64],
    close: &[f64],
    period: usize,
    out: &mut [f64],
) -> Result<(), Error> {
    check_period("period", period, 2)?;
    let n = close.len();
    check_len("high", high.len(), n)?;
    check_len("low", low.len(), n)?;
    let lookback = period - 1;
    check_len("out", out.len(), n)?;
    check_data(n, lookback)?;
    // Typical prices first, then the CCI from the last bar backwards: a window only reads
    // typical prices at or before its own bar, which are not overwritten yet.
    for (((o, &h), &l), &c) in out.iter_mut().zip(high).zip(low).zip(close) {
        *o = typical_price(h, l, c);
    }
    let p = period as f64;
    // Windows from the last backwards, four at a time, each copied in ring order into a row of
    // `rows`: their sums are independent chains, so interleaving them overlaps the latencies
    // without changing any window's arithmetic.
    let mut rows = vec![0.0; LANES * period];
    let mut end = n;
    while end >= lookback + LANES {
        let last: [usize; LANES] = std::array::from_fn(|w| end - 1 - w);
        for (row, &i) in rows.chunks_exact_mut(period).zip(&last) {
            ring_order(&out[i - lookback..=i], i, row);
        }
        let [a, b, c, d] = rows_of(&rows, period);
        let mut sums = [0.0; LANES];
        for (((&a, &b), &c), &d) in a.iter().zip(b).zip(c).zip(d) {
            sums[0] += a;
            sums[1] += b;
            sums[2] += c;
            sums[3] += d;
        }
        let means = sums.map(|sum| sum / p);
        let mut devs = [0.0; LANES];
        for (((&a, &b), &c), &d) in a.iter().zip(b).zip(c).zip(d) {
            devs[0] += (a - means[0]).abs();
            devs[1] += (b - means[1]).abs();
            devs[2] += (c - means[2]).abs();
            devs[3] += (d - means[3]).abs();
        }
        let values: [f64; LANES] =
            std::array::from_fn(|w| cci_value(out[last[w]], means[w], devs[w], p));
        for (&i, value) in last.iter().zip(values) {
            out[i] = value;
        }
        end -= LANES;
    }
    let row = &mut rows[..period];
    for i in (lookback..end).rev() {
        ring_order(&out[i - lookback..=i], i, row);
        let mean = cci_sum(row) / p;
        let mut dev = 0.0;
        for &v in row.iter() {
            dev += (v - mean).abs();
        }
        out[i] = cci_value(out[i], mean, dev, p);
    }
    out[..lookback].fill(f64::NAN);
    Ok(())
}

/// Windows computed together by [`cci_into`].
const LANES: usize = 4;

/// Copies the window ending at bar `last` into `row` in the order of TA-Lib's CCI ring, which
/// puts bar `j` in slot `j % period` and sums the slots from 0.
#[inline(always)]
fn ring_order(window: &[f64], last: usize, row: &mut [f64]) {
    // Slot 0 holds the window's bar that is a multiple of the period; the slots after `last`'s
    // hold the window's earliest bars.
    let start = window.len() - 1 - last % window.len();
    let (from_slot_zero, wrapped) = row.split_at_mut(window.len() - start);
    from_slot_zero.copy_from_slice(&window[start..]);
    wrapped.copy_from_slice(&window[..start]);
}

/// The four rows of `rows`.
#[inline(always)]
fn rows_of(rows: &[f64], period: usize) -> [&[f64]; LANES] {
    let (a, rest) = rows.split_at(period);
    let (b, rest) = rest.split_at(period);
    let (c, d) = rest.split_at(period);
    [a, b, c, d]
}

/// A left-to-right sum from 0.0.
#[inline(always)]
fn cci_sum(values: &[f64]) -> f64 {
    let mut total = 0.0;
    for &v in values {
        total += v;
    }
    total
}

#[inline(always)]
fn cci_value(tp: f64, mean: f64, dev_sum: f64, p: f64) -> f64 {
    let numerator = tp - mean;
    let tiny = mean.abs() * 1e-14;
    if tiny >= numerator.abs() {
        return 0.0;
    }
    let mean_dev = dev_sum / p;
    if tiny >= mean_dev.abs() {
        return 0.0;
    }
    let denominator = mean_dev * 0.015;
    if denominator == 0.0 {
        0.0
    } else {
        numerator / denominator
    }
}

/// Streaming [`cci_into`]. Each update is O(period): the mean deviation needs the whole window
/// whenever the mean moves.
#[derive(Debug, Clone)]
pub struct CciState {
    ring: Ring,
    period: f64,
}

impl CciState {
    /// A state for `period` (2..=100000).
    pub fn new(period: usize) -> Result<CciState, Error> {
        check_period("period", period, 2)?;
        Ok(CciState {
            ring: Ring::new(period),
            period: period as f64,
        })
    }

    /// Adds a bar; the CCI once `period` bars were seen.
    #[inline]
    pub fn update(&mut self, high: f64, low: f64, close: f64) -> Option<f64> {
        let tp = typical_price(high, low, close);
        self.ring.push(tp);
        if !self.ring.is_full() {
            return None;
        }
        let slots = self.ring.storage();
        let mean = cci_sum(slots) / self.period;
        let mut dev = 0.0;
        for &v in slots {
            dev += (v - mean).abs();
        }
        Some(cci_value(tp, mean, dev, self.period))
    }
}

/// Money flow index as TA-Lib 0.8: money flow `typical * volume` counted positive or negative by
/// the move of the typical price (no flow when the move is negligible next to the prices);
/// after `period` bars in a row without flow the sums restart from zero.
pub fn mfi_into(
    high: &[f64],
    low: &[f64],
    close: &[f64],
    volume: &[f64],
    period: usize,
    out: &mut [f64],
) -> Result<(), Error> {
    check_period("period", period, 2)?;
    let n = close.len();
    check_len("high", high.len(), n)?;
    check_len("low", low.len(), n)?;
    check_len("volume", volume.len(), n)?;
    prepare("out", n, out, period)?;
    // MfiCore's bookkeeping with the sums in locals, which keeps them in registers.
    let mut positive = vec![0.0; period];
    let mut negative = vec![0.0; period];
    let (mut pos_sum, mut neg_sum) = (0.0, 0.0);
    let (mut slot, mut idle) = (0, 0);
    let mut prev_tp = typical_price(high[0], low[0], close[0]);
    for i in 1..n {
        let tp = typical_price(high[i], low[i], close[i]);
        if i > period {
            pos_sum -= positive[slot];
            neg_sum -= negative[slot];
        }
        let (pos, neg, no_flow) = money_flow(tp, prev_tp, volume[i]);
        prev_tp = tp;
        pos_sum += pos;
        neg_sum += neg;
        positive[slot] = pos;
        negative[slot] = neg;
        slot += 1;
        if slot == period {
            slot = 0;
        }
        if no_flow {
            idle += 1;
            if idle >= period {
                pos_sum = 0.0;
                neg_sum = 0.0;
                idle = period;
            }
        } else {
            idle = 0;
        }
        if i >= period {
            out[i] = mfi_value(pos_sum, neg_sum);
        }
    }
    Ok(())
}

/// A bar's money flow `(positive, negative, none)`: `typical * volume` on the side of the
/// typical price's move; none when the move is negligible next to the prices or the flow is 0.
#[inline(always)]
fn money_flow(tp: f64, prev_tp: f64, volume: f64) -> (f64, f64, bool) {
    let change = tp - prev_tp;
    if negligible(change, tp, prev_tp) {
        return (0.0, 0.0, true);
    }
    let money = volume * tp;
    let neg = if 0.0 > change { money } else { 0.0 };
    // `money - money` is +0.0, as TA-Lib stores: the same values without a second select,
    // which LLVM would turn into an unpredictable branch.
    let pos = money - neg;
    (pos, neg, money == 0.0)
}

/// `100 * positive / total`, the positive flow clamped to [0, total]; 0 without flow.
#[inline(always)]
fn mfi_value(pos_sum: f64, neg_sum: f64) -> f64 {
    let total = pos_sum + neg_sum;
    let positive = if 0.0 > pos_sum {
        0.0
    } else if total < pos_sum {
        total
    } else {
        pos_sum
    };
    // Divided unconditionally so that the selects need no branch.
    let value = positive / total * 100.0;
    if 0.0 >= total { 0.0 } else { value }
}

#[derive(Debug, Clone)]
struct MfiCore {
    positive: Vec<f64>,
    negative: Vec<f64>,
    slot: usize,
    pos_sum: f64,
    neg_sum: f64,
    prev_tp: f64,
    /// Bars in a row without money flow, saturating at the period.
    idle: usize,
}

impl MfiCore {
    fn new(period: usize) -> MfiCore {
        MfiCore {
            positive: vec![0.0; period],
            negative: vec![0.0; period],
            slot: 0,
            pos_sum: 0.0,
            neg_sum: 0.0,
            prev_tp: 0.0,
            idle: 0,
        }
    }

    /// Adds one bar's flow; `full` once the ring holds `period` flows to drop.
    #[inline]
    fn flow(&mut self, high: f64, low: f64, close: f64, volume: f64, full: bool) {
        let tp = typical_price(high, low, close);
        if full {
            self.pos_sum -= self.positive[self.slot];
            self.neg_sum -= self.negative[self.slot];
        }
        let (pos, neg, no_flow) = money_flow(tp, self.prev_tp, volume);
        self.prev_tp = tp;
        self.pos_sum += pos;
        self.neg_sum += neg;
        self.positive[self.slot] = pos;
        self.negative[self.slot] = neg;
        self.slot += 1;
        if self.slot == self.positive.len() {
            self.slot = 0;
        }
        if no_flow {
            self.idle += 1;
            if self.idle >= self.positive.len() {
                self.pos_sum = 0.0;
                self.neg_sum = 0.0;
                self.idle = self.positive.len();
            }
        } else {
            self.idle = 0;
        }
    }

    #[inline]
    fn value(&self) -> f64 {
        mfi_value(self.pos_sum, self.neg_sum)
    }
}

/// Streaming [`mfi_into`].
#[derive(Debug, Clone)]
pub struct MfiState {
    core: MfiCore,
    period: usize,
    seen: usize,
}

impl MfiState {
    /// A state for `period` (2..=100000).
    pub fn new(period: usize) -> Result<MfiState, Error> {
        check_period("period", period, 2)?;
        Ok(MfiState {
            core: MfiCore::new(period),
            period,
            seen: 0,
        })
    }

    /// Adds a bar; the MFI once `period + 1` bars were seen.
    #[inline]
    pub fn update(&mut self, high: f64, low: f64, close: f64, volume: f64) -> Option<f64> {
        self.seen += 1;
        if self.seen == 1 {
            self.core.prev_tp = typical_price(high, low, close);
            return None;
        }
        self.core
            .flow(high, low, close, volume, self.seen > self.period + 1);
        (self.seen > self.period).then(|| self.core.value())
    }
}

/// Average directional index as TA-Lib 0.8 (Wilder sums of directional movement and true
/// range, DI computed while the true range is positive, DX skipped while the DI sum is within
/// 1e-14 of zero).
pub fn adx_into(
    high: &[f64],
    low: &[f64],
    close: &[f64],
    period: usize,
    out: &mut [f64],
) -> Result<(), Error> {
    check_period("period", period, 2)?;
    let n = close.len();
    check_len("high", high.len(), n)?;
    check_len("low", low.len(), n)?;
    let lookback = 2 * period - 1;
    prepare("out", n, out, lookback)?;
    let mut core = AdxCore::new(period);
    core.first(high[0], low[0], close[0]);
    for i in 1..period {
        core.tr += core.movement(high[i], low[i], close[i]);
    }
    for i in period..lookback {
        if let Some(dx) = core.smooth(high[i], low[i], close[i]) {
            core.adx += dx;
        }
    }
    if let Some(dx) = core.smooth(high[lookback], low[lookback], close[lookback]) {
        core.adx += dx;
    }
    core.adx /= core.p;
    out[lookback] = core.adx;
    for i in lookback + 1..n {
        if let Some(dx) = core.smooth(high[i], low[i], close[i]) {
            core.adx = (core.adx * core.keep + dx) / core.p;
        }
        out[i] = core.adx;
    }
    Ok(())
}

#[derive(Debug, Clone)]
struct AdxCore {
    period: usize,
    p: f64,
    keep: f64,
    seen: usize,
    prev_high: f64,
    prev_low: f64,
    prev_close: f64,
    plus_dm: f64,
    minus_dm: f64,
    tr: f64,
    adx: f64,
}

impl AdxCore {
    fn new(period: usize) -> AdxCore {
        AdxCore {
            period,
            p: period as f64,
            keep: (period - 1) as f64,
            seen: 0,
            prev_high: 0.0,
            prev_low: 0.0,
            prev_close: 0.0,
            plus_dm: 0.0,
            minus_dm: 0.0,
            tr: 0.0,
            adx: 0.0,
        }
    }

    fn first(&mut self, high: f64, low: f64, close: f64) {
        self.prev_high = high;
        self.prev_low = low;
        self.prev_close = close;
    }

    /// Adds a bar's directional movement to the sums; its true range. Moves the previous bar
    /// along.
    #[inline(always)]
    fn movement(&mut self, high: f64, low: f64, close: f64) -> f64 {
        let up = high - self.prev_high;
        let down = self.prev_low - low;
        self.prev_high = high;
        self.prev_low = low;
        // Adding +0.0 to the (never negative-zero) sums changes nothing: branch-free.
        // Non-short-circuit `&` keeps the conditions as flags rather than branches.
        let minus = (down > 0.0) & (down > up);
        let plus = !minus & (up > 0.0) & (up > down);
        self.minus_dm += if minus { down } else { 0.0 };
        self.plus_dm += if plus { up } else { 0.0 };
        let tr = true_range(high, low, self.prev_close);
        self.prev_close = close;
        tr
    }

    /// Wilder-smooths the sums with one more bar; its DX, if the true range and the DI sum
    /// allow one.
    #[inline(always)]
    fn smooth(&mut self, high: f64, low: f64, close: f64) -> Option<f64> {
        self.minus_dm -= self.minus_dm / self.p;
        self.plus_dm -= self.plus_dm / self.p;
        let tr = self.movement(high, low, close);
        self.tr = self.tr - self.tr / self.p + tr;
        #[allow(
            clippy::neg_cmp_op_on_partial_ord,
            reason = "a NaN true range skips the DI, as in TA-Lib"
        )]
        if !(self.tr > 0.0) {
            return None;
        }
        let minus_di = self.minus_dm / self.tr * 100.0;
        let plus_di = self.plus_dm / self.tr * 100.0;
        let total = minus_di + plus_di;
        if total > -1e-14 && total < 1e-14 {
            return None;
        }
        Some((minus_di - plus_di).abs() / total * 100.0)
    }

    #[inline]
    fn update(&mut self, high: f64, low: f64, close: f64) -> Option<f64> {
        self.seen += 1;
        if self.seen == 1 {
            self.first(high, low, close);
            return None;
        }
        if self.seen <= self.period {
            self.tr += self.movement(high, low, close);
            return None;
        }
        let dx = self.smooth(high, low, close);
        let warm = 2 * self.period;
        if self.seen <= warm {
            if let Some(dx) = dx {
                self.adx += dx;
            }
            if self.seen < warm {
                return None;
            }
            self.adx /= self.p;
        } else if let Some(dx) = dx {
            self.adx = (self.adx * self.keep + dx) / self.p;
        }
        Some(self.adx)
    }
}

/// Streaming [`adx_into`].
#[derive(Debug, Clone)]
pub struct AdxState {
    core: AdxCore,
}

impl AdxState {
    /// A state for `period` (2..=100000).
    pub fn new(period: usize) -> Result<AdxState, Error> {
        check_period("period", period, 2)?;
        Ok(AdxState {
            core: AdxCore::new(period),
        })
    }

    /// Adds a bar; the ADX once `2 * period` bars were seen.
    #[inline]
    pub fn update(&mut self, high: f64, low: f64, close: f64) -> Option<f64> {
        self.core.update(high, low, close)
    }
}
