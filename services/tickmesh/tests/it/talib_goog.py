"""TA-Lib's values on the GOOG daily closes of the `backtesting` package, as JSON on stdout:
the outside reference the computation service is checked against end to end."""

import json
import math
import os
import sys

import numpy as np
import pandas as pd
import talib

import backtesting

path = os.path.join(os.path.dirname(backtesting.__file__), "test", "GOOG.csv")
frame = pd.read_csv(path)
high = frame["High"].to_numpy(dtype=float)
low = frame["Low"].to_numpy(dtype=float)
close = frame["Close"].to_numpy(dtype=float)


def clean(values):
    return [None if math.isnan(v) else float(v) for v in values]


macd, signal, hist = talib.MACD(close, 12, 26, 9)
upper, middle, lower = talib.BBANDS(close, 20, 2.0, 2.0, 0)
json.dump(
    {
        "rows": len(close),
        "sma_20": clean(talib.SMA(close, 20)),
        "ema_30": clean(talib.EMA(close, 30)),
        "rsi_14": clean(talib.RSI(close, 14)),
        "macd": clean(macd),
        "macd_signal": clean(signal),
        "macd_hist": clean(hist),
        "bb_upper": clean(upper),
        "bb_lower": clean(lower),
        "atr_14": clean(talib.ATR(high, low, close, 14)),
    },
    sys.stdout,
)
