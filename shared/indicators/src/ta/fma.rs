//! Run-time dispatch of the loops built on `f64::mul_add` to a copy compiled for FMA.
//!
//! TA-Lib 0.8 computes the EMA step and Wilder's ATR smoothing with C `fma()` and picks a build
//! of those functions with the FMA instruction at run time. Equal bits need `f64::mul_add`,
//! which is exact everywhere but, without the `fma` target feature (the default `x86-64`
//! target), a call into compiler-builtins on the loop-carried chain: 1.6x to 4x slower. So the
//! hot loops are written once, as a [`Kernel`] whose `run` is `#[inline(always)]`, and [`run`]
//! calls it either through a `#[target_feature(enable = "fma")]` function, where it compiles to
//! `vfmadd`, when the CPU has FMA, or directly otherwise. Both give the same bits (a fused
//! multiply-add is exactly rounded either way), so the binary stays portable to x86-64 CPUs
//! without FMA. Builds where `fma` is enabled at compile time, and other architectures, call
//! the kernel directly.
//!
//! This module is the only place in the crate with `unsafe`: calling a `#[target_feature]`
//! function from code compiled without that feature is `unsafe` because running it on a CPU
//! without the feature is undefined behaviour; the call happens only after
//! `is_x86_feature_detected!("fma")` said the CPU (and the OS, for the AVX state FMA uses) has it.

/// A loop whose `f64::mul_add`s should be FMA instructions where the CPU has them.
pub(crate) trait Kernel {
    /// Runs the loop. Implementations must be `#[inline(always)]`, so that the FMA copy inlines
    /// the loop body instead of calling a copy compiled without the feature.
    fn run(self);
}

/// Runs `kernel`, compiled for FMA when the CPU supports it.
#[inline]
pub(crate) fn run<K: Kernel>(kernel: K) {
    #[cfg(all(
        any(target_arch = "x86", target_arch = "x86_64"),
        not(target_feature = "fma")
    ))]
    if fma_available() {
        // SAFETY: `run_fma`'s only requirement is a CPU with the `fma` target feature (and the
        // `avx` it implies), which `fma_available` has just checked with
        // `is_x86_feature_detected!` (CPUID plus the OS's XSAVE support for the AVX state).
        #[allow(unsafe_code)]
        unsafe {
            run_fma(kernel)
        };
        return;
    }
    kernel.run();
}

#[cfg(all(
    any(target_arch = "x86", target_arch = "x86_64"),
    not(target_feature = "fma")
))]
#[target_feature(enable = "fma")]
fn run_fma<K: Kernel>(kernel: K) {
    kernel.run();
}

/// Whether to take the FMA copy: the CPU has FMA (cached by std after the first check), and in
/// unit tests not forced onto the portable path.
#[cfg(all(
    any(target_arch = "x86", target_arch = "x86_64"),
    not(target_feature = "fma")
))]
#[inline]
fn fma_available() -> bool {
    #[cfg(test)]
    if tests::PORTABLE.with(std::cell::Cell::get) {
        return false;
    }
    std::arch::is_x86_feature_detected!("fma")
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use crate::ta::{atr_into, dema_into, ema_into, macd_into, natr_into, tema_into};

    thread_local! {
        /// Set by [`portable`]: [`super::run`] calls kernels directly on this thread.
        pub(super) static PORTABLE: Cell<bool> = const { Cell::new(false) };
    }

    /// Runs `f` on the portable path (`mul_add` without the FMA instruction).
    fn portable<R>(f: impl FnOnce() -> R) -> R {
        PORTABLE.with(|p| p.set(true));
        let result = f();
        PORTABLE.with(|p| p.set(false));
        result
    }

    /// A random walk with intrabar ranges, from xorshift64*.
    fn bars(n: usize) -> [Vec<f64>; 3] {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut uniform = move || {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
        };
        let (mut high, mut low, mut close) = (vec![], vec![], vec![]);
        let mut c = 100.0;
        for _ in 0..n {
            let o = c;
            c *= 1.0 + (uniform() - 0.5) * 0.02;
            high.push(f64::max(o, c) * (1.0 + uniform() * 0.005));
            low.push(f64::min(o, c) * (1.0 - uniform() * 0.005));
            close.push(c);
        }
        [high, low, close]
    }

    fn same_bits(a: &[f64], b: &[f64]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
    }

    /// Every dispatched indicator, concatenated.
    fn all_outputs(h: &[f64], l: &[f64], c: &[f64]) -> Vec<f64> {
        let n = c.len();
        let mut all = Vec::new();
        let mut out = vec![0.0; n];
        for period in [1, 2, 14, 20] {
            ema_into(c, period, &mut out).expect("ema");
            all.extend_from_slice(&out);
            dema_into(c, period, &mut out).expect("dema");
            all.extend_from_slice(&out);
            tema_into(c, period, &mut out).expect("tema");
            all.extend_from_slice(&out);
            atr_into(h, l, c, period, &mut out).expect("atr");
            all.extend_from_slice(&out);
            natr_into(h, l, c, period, &mut out).expect("natr");
            all.extend_from_slice(&out);
        }
        let (mut s, mut d) = (vec![0.0; n], vec![0.0; n]);
        for signal in [1, 9] {
            macd_into(c, 12, 26, signal, &mut out, &mut s, &mut d).expect("macd");
            for column in [&out, &s, &d] {
                all.extend_from_slice(column);
            }
        }
        all
    }

    #[test]
    fn the_fma_and_portable_paths_give_the_same_bits() {
        let [h, l, c] = bars(5_000);
        let dispatched = all_outputs(&h, &l, &c);
        let plain = portable(|| all_outputs(&h, &l, &c));
        assert!(same_bits(&dispatched, &plain));
    }
}
