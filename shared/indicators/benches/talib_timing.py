"""Times TA-Lib on the columns written by `benches/src/bin/indicators.rs`.

Usage: talib_timing.py COLUMNS.f64 POINTS REPS

COLUMNS.f64 holds open, high, low, close, volume one after the other, POINTS little-endian
f64 each. Prints one JSON object: indicator name -> median nanoseconds per point over REPS
timed calls (after two warm-up calls), each call timed with time.perf_counter_ns.
"""

import json
import statistics
import sys
import time

import numpy as np
import talib


def main():
    path, points, reps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    o, h, l, c, v = np.fromfile(path, dtype="<f8").reshape(5, points)
    calls = {
        "sma": lambda: talib.SMA(c, 20),
        "ema": lambda: talib.EMA(c, 20),
        "wma": lambda: talib.WMA(c, 20),
        "dema": lambda: talib.DEMA(c, 20),
        "tema": lambda: talib.TEMA(c, 20),
        "rsi": lambda: talib.RSI(c, 14),
        "macd": lambda: talib.MACD(c, 12, 26, 9),
        "bbands": lambda: talib.BBANDS(c, 20, 2.0, 2.0, 0),
        "atr": lambda: talib.ATR(h, l, c, 14),
        "natr": lambda: talib.NATR(h, l, c, 14),
        "stddev": lambda: talib.STDDEV(c, 20, 1.0),
        "roc": lambda: talib.ROC(c, 10),
        "mom": lambda: talib.MOM(c, 10),
        "stoch": lambda: talib.STOCH(h, l, c, 5, 3, 0, 3, 0),
        "willr": lambda: talib.WILLR(h, l, c, 14),
        "cci": lambda: talib.CCI(h, l, c, 14),
        "mfi": lambda: talib.MFI(h, l, c, v, 14),
        "obv": lambda: talib.OBV(c, v),
        "adx": lambda: talib.ADX(h, l, c, 14),
    }
    result = {}
    for name, call in calls.items():
        call()
        call()
        times = []
        for _ in range(reps):
            start = time.perf_counter_ns()
            call()
            times.append(time.perf_counter_ns() - start)
        result[name] = statistics.median(times) / points
    print(json.dumps(result))


if __name__ == "__main__":
    main()
