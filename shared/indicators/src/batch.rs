//! Batch: a whole column set at once, validated, into caller-owned buffers.

use crate::Error;
use crate::spec::{Column, Kind, Spec};
use crate::stream::Bar;
use crate::ta::ma::{dema_into, ema_into, sma_into, tema_into, wma_into};
use crate::ta::osc::{
    adx_into, cci_into, macd_into, mfi_into, mom_into, roc_into, rsi_into, stoch_into, willr_into,
};
use crate::ta::vol::{atr_into, bbands_into, natr_into, realized_volatility_into, stddev_into};
use crate::ta::volume::{obv_into, vwap_into};
use crate::ta::{check_data, check_len};

/// OHLCV columns of one symbol, oldest bar first; all must have the same length.
#[derive(Debug, Clone, Copy)]
pub struct Columns<'a> {
    /// Opening prices.
    pub open: &'a [f64],
    /// Highest prices.
    pub high: &'a [f64],
    /// Lowest prices.
    pub low: &'a [f64],
    /// Closing prices (the reference length).
    pub close: &'a [f64],
    /// Traded volumes.
    pub volume: &'a [f64],
}

impl<'a> Columns<'a> {
    /// The number of bars (the length of `close`).
    pub fn len(&self) -> usize {
        self.close.len()
    }

    /// Whether there are no bars.
    pub fn is_empty(&self) -> bool {
        self.close.is_empty()
    }

    /// One column by name.
    pub fn get(&self, column: Column) -> &'a [f64] {
        match column {
            Column::Open => self.open,
            Column::High => self.high,
            Column::Low => self.low,
            Column::Close => self.close,
            Column::Volume => self.volume,
        }
    }

    /// The bar at `index`, if any.
    pub fn bar(&self, index: usize) -> Option<Bar> {
        Some(Bar {
            open: *self.open.get(index)?,
            high: *self.high.get(index)?,
            low: *self.low.get(index)?,
            close: *self.close.get(index)?,
            volume: *self.volume.get(index)?,
        })
    }

    /// Checks that every column has the length of `close`.
    pub fn check_lengths(&self) -> Result<(), Error> {
        let n = self.len();
        for column in [Column::Open, Column::High, Column::Low, Column::Volume] {
            check_len(column.name(), self.get(column).len(), n)?;
        }
        Ok(())
    }

    /// Checks that the given columns hold only finite values.
    pub fn check_finite(&self, columns: &[Column]) -> Result<(), Error> {
        for &column in columns {
            if let Some(index) = self.get(column).iter().position(|v| !v.is_finite()) {
                return Err(Error::NonFinite {
                    column: column.name(),
                    index,
                });
            }
        }
        Ok(())
    }
}

/// The outputs of one indicator over a column set.
#[derive(Debug, Clone, PartialEq)]
pub struct Computed {
    /// Leading NaN values of every output.
    pub lookback: usize,
    /// `(name, values)` per output, in [`Spec::output_names`] order, one value per bar.
    pub outputs: Vec<(&'static str, Vec<f64>)>,
}

/// Computes `spec` over `cols` into `out` (one buffer per output, resized to the number of
/// bars; NaN for the warm-up).
///
/// Errors on invalid parameters, columns of different lengths, a wrong number of buffers,
/// fewer bars than the lookback plus one, and NaN or infinite values in the columns the
/// indicator reads (realised volatility also needs positive closes).
pub fn compute_into(spec: &Spec, cols: &Columns, out: &mut [Vec<f64>]) -> Result<(), Error> {
    let spec = spec.resolved()?;
    cols.check_lengths()?;
    let outputs = spec.output_names().len();
    if out.len() != outputs {
        return Err(Error::OutputCount {
            expected: outputs,
            got: out.len(),
        });
    }
    let n = cols.len();
    check_data(n, spec.lookback())?;
    cols.check_finite(spec.kind.columns())?;
    // Closes are finite here, so `<= 0.0` catches every non-positive one.
    if spec.kind == Kind::RealizedVolatility
        && let Some(index) = cols.close.iter().position(|&c| c <= 0.0)
    {
        return Err(Error::NonPositive {
            column: "close",
            index,
        });
    }
    for buffer in out.iter_mut() {
        buffer.resize(n, f64::NAN);
    }
    let Columns {
        high,
        low,
        close,
        volume,
        ..
    } = *cols;
    let p = spec.period as usize;
    match (spec.kind, out) {
        (Kind::Sma, [o]) => sma_into(close, p, o),
        (Kind::Ema, [o]) => ema_into(close, p, o),
        (Kind::Wma, [o]) => wma_into(close, p, o),
        (Kind::Dema, [o]) => dema_into(close, p, o),
        (Kind::Tema, [o]) => tema_into(close, p, o),
        (Kind::Rsi, [o]) => rsi_into(close, p, o),
        (Kind::Macd, [m, s, h]) => macd_into(
            close,
            spec.fast_period as usize,
            spec.slow_period as usize,
            spec.signal_period as usize,
            m,
            s,
            h,
        ),
        (Kind::Bbands, [u, m, l]) => bbands_into(close, p, spec.deviations, u, m, l),
        (Kind::Atr, [o]) => atr_into(high, low, close, p, o),
        (Kind::Natr, [o]) => natr_into(high, low, close, p, o),
        (Kind::Stddev, [o]) => stddev_into(close, p, spec.deviations, o),
        (Kind::Roc, [o]) => roc_into(close, p, o),
        (Kind::Mom, [o]) => mom_into(close, p, o),
        (Kind::Stoch, [k, d]) => stoch_into(
            high,
            low,
            close,
            p,
            spec.fast_period as usize,
            spec.slow_period as usize,
            k,
            d,
        ),
        (Kind::Willr, [o]) => willr_into(high, low, close, p, o),
        (Kind::Cci, [o]) => cci_into(high, low, close, p, o),
        (Kind::Mfi, [o]) => mfi_into(high, low, close, volume, p, o),
        (Kind::Obv, [o]) => obv_into(close, volume, o),
        (Kind::Adx, [o]) => adx_into(high, low, close, p, o),
        (Kind::Vwap, [o]) => vwap_into(high, low, close, volume, p, o),
        (Kind::RealizedVolatility, [o]) => realized_volatility_into(close, p, o),
        (_, out) => Err(Error::OutputCount {
            expected: outputs,
            got: out.len(),
        }),
    }
}

/// Computes `spec` over `cols` into new buffers.
pub fn compute(spec: &Spec, cols: &Columns) -> Result<Computed, Error> {
    let names = spec.output_names();
    let mut buffers = vec![Vec::with_capacity(cols.len()); names.len()];
    compute_into(spec, cols, &mut buffers)?;
    Ok(Computed {
        lookback: spec.lookback(),
        outputs: names.iter().copied().zip(buffers).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Streaming;

    fn walk(n: usize) -> Vec<f64> {
        (0..n)
            .map(|i| 100.0 + (i as f64 * 0.7).sin() * 3.0 + i as f64 * 0.1)
            .collect()
    }

    fn cols(close: &[f64]) -> Columns<'_> {
        Columns {
            open: close,
            high: close,
            low: close,
            close,
            volume: close,
        }
    }

    #[test]
    fn a_zero_period_takes_the_default() {
        let close = walk(40);
        let computed = compute(&Spec::new(Kind::Sma), &cols(&close)).unwrap();
        assert_eq!(computed.lookback, 29);
        let values = &computed.outputs[0].1;
        assert!(values[28].is_nan() && !values[29].is_nan());
        let explicit = compute(&Spec::new(Kind::Sma).with_period(30), &cols(&close)).unwrap();
        let bits = |c: &Computed| {
            c.outputs[0]
                .1
                .iter()
                .map(|v| v.to_bits())
                .collect::<Vec<_>>()
        };
        assert_eq!(bits(&computed), bits(&explicit));
        assert_eq!(
            Streaming::new(&Spec::new(Kind::Sma)).unwrap().spec().period,
            30
        );
    }

    #[test]
    fn a_period_longer_than_the_data_is_not_enough_data() {
        let close = walk(10);
        let error = compute(&Spec::new(Kind::Sma).with_period(20), &cols(&close)).unwrap_err();
        assert_eq!(error, Error::NotEnoughData { need: 20, have: 10 });
        let error = compute(&Spec::new(Kind::Rsi).with_period(10), &cols(&close)).unwrap_err();
        assert_eq!(error, Error::NotEnoughData { need: 11, have: 10 });
        let exact = compute(&Spec::new(Kind::Rsi).with_period(9), &cols(&close)).unwrap();
        assert_eq!(exact.outputs[0].1.iter().filter(|v| !v.is_nan()).count(), 1);
    }

    #[test]
    fn a_nan_price_is_rejected() {
        let mut close = walk(50);
        close[17] = f64::NAN;
        let error = compute(&Spec::new(Kind::Ema).with_period(5), &cols(&close)).unwrap_err();
        assert_eq!(
            error,
            Error::NonFinite {
                column: "close",
                index: 17
            }
        );
        close[17] = f64::INFINITY;
        let error = compute(&Spec::new(Kind::Ema).with_period(5), &cols(&close)).unwrap_err();
        assert_eq!(
            error,
            Error::NonFinite {
                column: "close",
                index: 17
            }
        );
    }

    #[test]
    fn a_nan_in_a_column_the_indicator_does_not_read_is_ignored() {
        let close = walk(50);
        let volume = vec![f64::NAN; 50];
        let cols = Columns {
            volume: &volume,
            ..cols(&close)
        };
        assert!(compute(&Spec::new(Kind::Sma).with_period(5), &cols).is_ok());
        let error = compute(&Spec::new(Kind::Obv), &cols).unwrap_err();
        assert_eq!(
            error,
            Error::NonFinite {
                column: "volume",
                index: 0
            }
        );
    }

    #[test]
    fn macd_with_fast_not_below_slow_is_an_invalid_parameter() {
        let close = walk(100);
        let spec = Spec::new(Kind::Macd)
            .with_fast_period(30)
            .with_slow_period(26);
        assert!(matches!(
            compute(&spec, &cols(&close)),
            Err(Error::InvalidParameter {
                name: "fast_period",
                ..
            })
        ));
        assert!(Streaming::new(&spec).is_err());
    }

    #[test]
    fn columns_of_different_lengths_are_rejected() {
        let close = walk(50);
        let short = walk(49);
        let cols = Columns {
            high: &short,
            ..cols(&close)
        };
        let error = compute(&Spec::new(Kind::Sma).with_period(5), &cols).unwrap_err();
        assert_eq!(
            error,
            Error::LengthMismatch {
                column: "high",
                len: 49,
                expected: 50
            }
        );
    }

    #[test]
    fn the_number_of_output_buffers_must_match() {
        let close = walk(50);
        let mut out = vec![Vec::new()];
        let error = compute_into(&Spec::new(Kind::Macd), &cols(&close), &mut out).unwrap_err();
        assert_eq!(
            error,
            Error::OutputCount {
                expected: 3,
                got: 1
            }
        );
    }

    #[test]
    fn output_buffers_are_resized_to_the_input() {
        let close = walk(50);
        let mut out = vec![vec![1.0; 3], vec![1.0; 80]];
        compute_into(&Spec::new(Kind::Stoch), &cols(&close), &mut out).unwrap();
        assert!(out.iter().all(|o| o.len() == 50));
        assert!(out[0][..8].iter().all(|v| v.is_nan()) && !out[0][8].is_nan());
    }

    #[test]
    fn realised_volatility_needs_positive_closes() {
        let mut close = walk(50);
        close[3] = 0.0;
        let spec = Spec::new(Kind::RealizedVolatility).with_period(5);
        let error = compute(&spec, &cols(&close)).unwrap_err();
        assert_eq!(
            error,
            Error::NonPositive {
                column: "close",
                index: 3
            }
        );
    }

    #[test]
    fn plain_functions_check_their_buffers_and_periods() {
        let close = walk(50);
        let mut out = vec![0.0; 49];
        let error = crate::ta::ma::sma_into(&close, 5, &mut out).unwrap_err();
        assert_eq!(
            error,
            Error::LengthMismatch {
                column: "out",
                len: 49,
                expected: 50
            }
        );
        let mut out = vec![0.0; 50];
        let error = crate::ta::ma::sma_into(&close, 0, &mut out).unwrap_err();
        assert!(matches!(
            error,
            Error::InvalidParameter { name: "period", .. }
        ));
    }
}
