"""Golden indicator values from TA-Lib itself, for tests/talib.rs.

Usage: golden.py OUTPUT.json

Writes the inputs and every indicator's outputs (NaN as null) for each dataset:
real data shipped inside the `backtesting` package (GOOG daily, EURUSD hourly; read from the
installed package, never copied into the repository) and synthetic edge cases (a random walk,
a constant series, gaps, very large and very small prices, and for every indicator exactly
lookback + 1 bars). TA-Lib computes everything it has; rolling VWAP and realised volatility,
which TA-Lib lacks, come from straightforward numpy / math.fsum formulas here.

Exit status 3 (with a message on stderr) when the reference libraries are not installed.
"""

import json
import math
import sys

try:
    import numpy as np
    import talib
    from backtesting.test import EURUSD, GOOG
except ImportError as error:  # pragma: no cover - environment problem
    print(
        f"missing reference library ({error}); run scripts/test.sh, which creates .venv "
        "from scripts/requirements-test.txt",
        file=sys.stderr,
    )
    sys.exit(3)

# Specs as the Rust side sees them (0 = default). Python maps them to TA-Lib calls on its own,
# leaving a zero parameter out so that TA-Lib applies its own default.
SPECS = [
    {"kind": "sma"}, {"kind": "sma", "period": 20}, {"kind": "sma", "period": 1},
    {"kind": "ema"}, {"kind": "ema", "period": 20}, {"kind": "ema", "period": 1},
    {"kind": "wma"}, {"kind": "wma", "period": 20}, {"kind": "wma", "period": 2},
    {"kind": "wma", "period": 1},
    {"kind": "dema"}, {"kind": "dema", "period": 10}, {"kind": "dema", "period": 1},
    {"kind": "tema"}, {"kind": "tema", "period": 10}, {"kind": "tema", "period": 1},
    {"kind": "rsi"}, {"kind": "rsi", "period": 2}, {"kind": "rsi", "period": 21},
    {"kind": "macd"},
    {"kind": "macd", "fast_period": 5, "slow_period": 13, "signal_period": 4},
    {"kind": "macd", "signal_period": 1},
    {"kind": "bbands"}, {"kind": "bbands", "period": 20},
    {"kind": "bbands", "period": 20, "deviations": 1.0},
    {"kind": "bbands", "period": 10, "deviations": 2.5},
    {"kind": "atr"}, {"kind": "atr", "period": 1}, {"kind": "atr", "period": 5},
    {"kind": "natr"}, {"kind": "natr", "period": 1}, {"kind": "natr", "period": 5},
    {"kind": "stddev"}, {"kind": "stddev", "period": 20, "deviations": 2.0},
    {"kind": "stddev", "period": 2},
    {"kind": "roc"}, {"kind": "roc", "period": 1},
    {"kind": "mom"}, {"kind": "mom", "period": 1},
    {"kind": "stoch"}, {"kind": "stoch", "period": 14, "fast_period": 3, "slow_period": 3},
    {"kind": "stoch", "period": 3, "fast_period": 1, "slow_period": 2},
    {"kind": "willr"}, {"kind": "willr", "period": 2},
    {"kind": "cci"}, {"kind": "cci", "period": 20}, {"kind": "cci", "period": 2},
    {"kind": "mfi"}, {"kind": "mfi", "period": 2},
    {"kind": "obv"},
    {"kind": "adx"}, {"kind": "adx", "period": 2}, {"kind": "adx", "period": 7},
    {"kind": "vwap"}, {"kind": "vwap", "period": 1}, {"kind": "vwap", "period": 5},
    {"kind": "realized_volatility"}, {"kind": "realized_volatility", "period": 2},
    {"kind": "realized_volatility", "period": 5},
]

# TA-Lib's lookbacks with default parameters, for the lookback + 1 datasets.
DEFAULT_PERIOD = {
    "sma": 30, "ema": 30, "wma": 30, "dema": 30, "tema": 30, "rsi": 14, "bbands": 5, "atr": 14,
    "natr": 14, "stddev": 5, "roc": 10, "mom": 10, "willr": 14, "cci": 14, "mfi": 14, "adx": 14,
    "vwap": 20, "realized_volatility": 20,
}


def kwargs(spec, **names):
    """TA-Lib keyword arguments for the non-zero fields of `spec` (field -> TA-Lib name)."""
    return {talib_name: spec[field] for field, talib_name in names.items() if spec.get(field)}


def vwap(h, l, c, v, period):
    """sum(typical * volume) / sum(volume) over `period` bars, exactly rounded sums."""
    typical = (h + l + c) / 3.0
    money = typical * v
    out = np.full(len(c), np.nan)
    for i in range(period - 1, len(c)):
        window = slice(i + 1 - period, i + 1)
        if np.all(v[window] == 0.0):
            continue
        out[i] = math.fsum(money[window]) / math.fsum(v[window])
    return out


def realized_volatility(c, period):
    """Sample standard deviation of the last `period` log returns (two-pass, numpy)."""
    returns = np.log(c[1:] / c[:-1])
    out = np.full(len(c), np.nan)
    if len(returns) >= period:
        windows = np.lib.stride_tricks.sliding_window_view(returns, period)
        out[period:] = np.std(windows, axis=1, ddof=1)
    return out


def compute(spec, o, h, l, c, v):
    """The outputs of `spec` as a dict name -> array."""
    kind = spec["kind"]
    if kind == "bbands" and not spec.get("period"):
        # The crate keeps TA-Lib's classic BBANDS default period of 5; TA-Lib 0.8 changed its
        # own default to 20, so the period is passed explicitly.
        spec = {**spec, "period": 5}
    period = kwargs(spec, period="timeperiod")
    if kind in ("sma", "ema", "wma", "dema", "tema", "rsi", "roc", "mom"):
        return {"value": getattr(talib, kind.upper())(c, **period)}
    if kind == "macd":
        args = kwargs(spec, fast_period="fastperiod", slow_period="slowperiod",
                      signal_period="signalperiod")
        macd, signal, hist = talib.MACD(c, **args)
        return {"macd": macd, "signal": signal, "hist": hist}
    if kind == "bbands":
        dev = {}
        if spec.get("deviations"):
            dev = {"nbdevup": spec["deviations"], "nbdevdn": spec["deviations"]}
        upper, middle, lower = talib.BBANDS(c, **period, **dev, matype=0)
        return {"upper": upper, "middle": middle, "lower": lower}
    if kind in ("atr", "natr", "willr", "cci", "adx"):
        return {"value": getattr(talib, kind.upper())(h, l, c, **period)}
    if kind == "stddev":
        return {"value": talib.STDDEV(c, **period, **kwargs(spec, deviations="nbdev"))}
    if kind == "stoch":
        args = kwargs(spec, period="fastk_period", fast_period="slowk_period",
                      slow_period="slowd_period")
        k, d = talib.STOCH(h, l, c, **args, slowk_matype=0, slowd_matype=0)
        return {"k": k, "d": d}
    if kind == "mfi":
        return {"value": talib.MFI(h, l, c, v, **period)}
    if kind == "obv":
        return {"value": talib.OBV(c, v)}
    if kind == "vwap":
        return {"value": vwap(h, l, c, v, spec.get("period") or 20)}
    if kind == "realized_volatility":
        return {"value": realized_volatility(c, spec.get("period") or 20)}
    raise ValueError(f"unknown kind {kind}")


def lookback(spec):
    """TA-Lib's lookback of a default spec."""
    kind = spec["kind"]
    if kind == "macd":
        return 33
    if kind == "stoch":
        return 8
    if kind == "obv":
        return 0
    p = DEFAULT_PERIOD[kind]
    return {"dema": 2 * (p - 1), "tema": 3 * (p - 1), "adx": 2 * p - 1}.get(
        kind, p if kind in ("rsi", "atr", "natr", "roc", "mom", "mfi", "realized_volatility")
        else p - 1)


def ohlcv_from_close(close, rng, volume_scale=1e5):
    """Plausible OHLCV around a close series."""
    n = len(close)
    spread = np.abs(close) * 0.01
    open_ = np.concatenate([[close[0]], close[:-1]])
    high = np.maximum(open_, close) + rng.random(n) * spread
    low = np.minimum(open_, close) - rng.random(n) * spread
    volume = np.floor(rng.random(n) * volume_scale)
    return open_, high, low, close, volume


def random_walk(rng, n, start=100.0, step=0.01):
    return start * np.exp(np.cumsum(rng.normal(0.0, step, n)))


def datasets():
    """(name, o, h, l, c, v) of every full dataset."""
    rng = np.random.default_rng(20240607)
    for name, frame in (("goog", GOOG), ("eurusd", EURUSD)):
        cols = [frame[col].to_numpy(dtype=np.float64) for col in
                ("Open", "High", "Low", "Close", "Volume")]
        yield (name, *cols)
    yield ("random_walk", *ohlcv_from_close(random_walk(rng, 2000), rng))
    n = 200
    flat = np.full(n, 100.0)
    yield ("constant", flat, flat, flat, flat, np.full(n, 1000.0))
    # Gaps: a jump from ~100 to ~300, later a fall to ~30, with zero-volume stretches.
    close = np.concatenate([random_walk(rng, 150), random_walk(rng, 150, 300.0),
                            random_walk(rng, 150, 30.0)])
    o, h, l, c, v = ohlcv_from_close(close, rng)
    v[200:230] = 0.0
    yield ("gaps", o, h, l, c, v)
    yield ("large", *ohlcv_from_close(random_walk(rng, 1000, 1e9), rng, 1e9))
    yield ("small", *ohlcv_from_close(random_walk(rng, 1000, 1e-6), rng, 1e3))


def nulls(values):
    return [None if math.isnan(x) else float(x) for x in values]


def case(name, o, h, l, c, v, specs):
    results = []
    for spec in specs:
        outputs = compute(spec, o, h, l, c, v)
        results.append({"spec": spec, "outputs": {k: nulls(x) for k, x in outputs.items()}})
    return {
        "name": name,
        "inputs": {"open": nulls(o), "high": nulls(h), "low": nulls(l), "close": nulls(c),
                   "volume": nulls(v)},
        "results": results,
    }


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    cases = [case(*data, SPECS) for data in datasets()]
    rng = np.random.default_rng(7)
    seen = set()
    for spec in SPECS:
        if spec["kind"] in seen:
            continue
        seen.add(spec["kind"])
        default = {"kind": spec["kind"]}
        n = lookback(default) + 1
        cases.append(case(f"minimal_{spec['kind']}",
                          *ohlcv_from_close(random_walk(rng, n), rng), [default]))
    document = {"talib_version": talib.__ta_version__.decode(), "cases": cases}
    with open(sys.argv[1], "w", encoding="utf-8") as out:
        json.dump(document, out, allow_nan=False)


if __name__ == "__main__":
    main()
