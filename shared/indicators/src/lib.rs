//! Technical indicators that give exactly TA-Lib's numbers, in batch over columns and streaming
//! one bar at a time, plus trading signals built on them.
//!
//! Pure library: no I/O, no async, no global state.
//!
//! - [`compute_into`] / [`compute`]: an indicator described by a [`Spec`] over OHLCV
//!   [`Columns`], validated; the per-indicator functions in [`ta`] (`sma_into`, `macd_into`,
//!   ...) do the work over plain slices.
//! - [`Streaming`]: any indicator fed [`Bar`] by bar; the per-indicator states in [`ta`]
//!   (`SmaState`, ...) do the work. Streaming and batch give the same bits.
//! - [`signals`]: MA crossover, RSI, MACD and Bollinger votes combined per symbol.
//!
//! # Equality with TA-Lib
//!
//! The reference is TA-Lib 0.8 (the C library in the `ta-lib` 0.8 Python wheel). Its lookbacks,
//! seeds and guards are reproduced, and so is its arithmetic, operation by operation, as its
//! compiled code performs it: e.g. the EMA step `fma(x - ema, k, ema)` (an explicit fused
//! multiply-add in TA-Lib, [`f64::mul_add`] here), the RSI's multiplication by `1 / period`,
//! the variance of STDDEV and BBANDS on shifted data re-centred on the window mean, CCI's sums
//! in ring-buffer order. The integration tests compare every indicator on real and synthetic
//! data against TA-Lib itself.
//!
//! `f64::mul_add` is exact on every target; without the `fma` target feature (e.g. a default
//! x86-64 build) it is a call into compiler-builtins instead of one instruction. The batch
//! loops that use it (EMA, DEMA, TEMA, MACD, ATR, NATR) therefore pick, at run time, a copy
//! compiled for FMA when the CPU has it, as TA-Lib does; the binary stays portable and the bits
//! are the same either way. The streaming states use `mul_add` as compiled (build with
//! `-C target-cpu=x86-64-v3` or `native` to get the instruction there too).

mod batch;
mod error;
mod ring;
pub mod signals;
mod spec;
mod stream;
pub mod ta;

pub use batch::{Columns, Computed, compute, compute_into};
pub use error::Error;
pub use spec::{Column, Kind, MAX_PERIOD, Spec};
pub use stream::{Bar, Streaming};
