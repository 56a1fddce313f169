#![allow(clippy::unwrap_used)]
//! Every indicator, batch and streaming, against TA-Lib itself on real and synthetic data.
//!
//! `golden.py` (run with the workspace's `.venv` python) computes the reference values with the
//! TA-Lib C library at test time; nothing here is pasted from a previous run.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;
use tickmesh_indicators::{Columns, Kind, Spec, Streaming, compute};

/// Largest accepted relative difference, `|ours - talib| / max(|talib|, floor)`.
const TOLERANCE: f64 = 1e-9;

fn golden() -> Value {
    let root = tickmesh_testkit::workspace_root();
    let python = root.join(".venv/bin/python");
    let script = root.join("shared/indicators/tests/golden.py");
    assert!(
        python.exists(),
        "{} not found: the TA-Lib reference needs the test venv; run scripts/test.sh (it \
         creates .venv from scripts/requirements-test.txt)",
        python.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let path: PathBuf = dir.path().join("golden.json");
    let output = Command::new(&python)
        .arg(&script)
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{} failed ({}): {}\nrun scripts/test.sh to install the test venv (ta-lib, numpy, \
         backtesting from scripts/requirements-test.txt)",
        script.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

fn floats(value: &Value) -> Vec<f64> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap_or(f64::NAN))
        .collect()
}

fn spec_of(value: &Value) -> Spec {
    let kind = Kind::from_name(value["kind"].as_str().unwrap()).unwrap();
    let int = |name: &str| value.get(name).and_then(Value::as_u64).unwrap_or(0) as u32;
    Spec {
        kind,
        period: int("period"),
        fast_period: int("fast_period"),
        slow_period: int("slow_period"),
        signal_period: int("signal_period"),
        deviations: value
            .get("deviations")
            .and_then(Value::as_f64)
            .unwrap_or(0.0),
    }
}

/// Worst relative error of `ours` against `reference` and where; a NaN-position mismatch is an
/// error.
fn worst_error(ours: &[f64], reference: &[f64]) -> Result<(f64, usize), String> {
    if ours.len() != reference.len() {
        return Err(format!("length {} vs {}", ours.len(), reference.len()));
    }
    let scale = reference
        .iter()
        .filter(|v| v.is_finite())
        .fold(0.0f64, |m, v| m.max(v.abs()));
    // Values ten orders of magnitude below the series' largest compare absolutely.
    let floor = (scale * 1e-10).max(f64::MIN_POSITIVE);
    let mut worst = (0.0, 0);
    for (i, (&a, &b)) in ours.iter().zip(reference).enumerate() {
        if a.is_nan() != b.is_nan() {
            return Err(format!("NaN mismatch at {i}: ours {a}, talib {b}"));
        }
        if b.is_nan() {
            continue;
        }
        let error = (a - b).abs() / b.abs().max(floor);
        if error > worst.0 {
            worst = (error, i);
        }
    }
    Ok(worst)
}

#[derive(Default)]
struct Tally {
    worst: f64,
    worst_at: String,
    values: usize,
    identical: usize,
}

#[test]
fn every_indicator_equals_ta_lib_batch_and_streaming() {
    let golden = golden();
    let mut tallies: BTreeMap<&'static str, Tally> = BTreeMap::new();
    let mut failures = Vec::new();
    for case in golden["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let inputs = &case["inputs"];
        let [open, high, low, close, volume] =
            ["open", "high", "low", "close", "volume"].map(|c| floats(&inputs[c]));
        let cols = Columns {
            open: &open,
            high: &high,
            low: &low,
            close: &close,
            volume: &volume,
        };
        for result in case["results"].as_array().unwrap() {
            let spec = spec_of(&result["spec"]);
            let what = format!("{name} {spec:?}");
            let batch = compute(&spec, &cols).unwrap_or_else(|e| panic!("{what}: {e}"));
            // Streaming, bar by bar.
            let mut stream = Streaming::new(&spec).unwrap();
            let mut streamed = vec![Vec::with_capacity(close.len()); batch.outputs.len()];
            for i in 0..close.len() {
                let outputs = stream.update(cols.bar(i).unwrap());
                assert_eq!(
                    outputs.is_some(),
                    i >= batch.lookback,
                    "{what}: warm at bar {i}"
                );
                for (j, column) in streamed.iter_mut().enumerate() {
                    column.push(outputs.map_or(f64::NAN, |o| o[j]));
                }
            }
            let tally = tallies.entry(spec.kind.name()).or_default();
            for ((output, values), streamed) in batch.outputs.iter().zip(&streamed) {
                let reference = floats(&result["outputs"][*output]);
                for (label, ours) in [("batch", values), ("streaming", streamed)] {
                    let what = format!("{what} {output} {label}");
                    let (error, at) = match worst_error(ours, &reference) {
                        Ok(worst) => worst,
                        Err(problem) => {
                            failures.push(format!("{what}: {problem}"));
                            continue;
                        }
                    };
                    if error > TOLERANCE {
                        failures.push(format!(
                            "{what}: relative error {error:.3e} at {at}: ours {}, talib {}",
                            ours[at], reference[at]
                        ));
                    }
                    if error > tally.worst {
                        tally.worst = error;
                        tally.worst_at = what;
                    }
                }
                let finite = reference.iter().filter(|v| !v.is_nan()).count();
                tally.values += finite;
                tally.identical += values
                    .iter()
                    .zip(&reference)
                    .filter(|(a, b)| !b.is_nan() && a.to_bits() == b.to_bits())
                    .count();
                let same_bits = values
                    .iter()
                    .zip(streamed)
                    .all(|(a, b)| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()));
                assert!(
                    same_bits,
                    "{name} {spec:?} {output}: streaming differs from batch"
                );
            }
        }
    }
    eprintln!("TA-Lib {}", golden["talib_version"].as_str().unwrap_or("?"));
    eprintln!(
        "{:<20} {:>12} {:>10} {:>10}  worst at",
        "indicator", "worst rel", "values", "identical"
    );
    for (kind, t) in &tallies {
        eprintln!(
            "{kind:<20} {:>12.3e} {:>10} {:>10}  {}",
            t.worst, t.values, t.identical, t.worst_at
        );
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(tallies.len(), Kind::ALL.len(), "every kind is covered");
}
