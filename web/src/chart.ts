// The candlestick chart (lightweight-charts 5, Apache-2.0), loaded lazily by main.ts: candles
// with SMA(20) and Bollinger(20, 2) overlays in the first pane, RSI(14) in a second pane,
// buy / sell markers from the signals.
import {
  CandlestickSeries,
  ColorType,
  CrosshairMode,
  LineSeries,
  LineStyle,
  createChart,
  createSeriesMarkers,
  type CandlestickData,
  type ISeriesApi,
  type LineData,
  type SeriesMarker,
  type Time,
  type UTCTimestamp,
} from "lightweight-charts";

import type { ChartBar, ChartIndicators, ChartMarker, ChartView } from "./shared";

const UP = "#26a69a";
const DOWN = "#ef5350";

type Line = ISeriesApi<"Line">;

function ts(seconds: number): UTCTimestamp {
  return seconds as UTCTimestamp;
}

// Index of the bar opening at `time` in `bars` (sorted), or -(insertion point) - 1.
function search(bars: ChartBar[], time: number): number {
  let lo = 0;
  let hi = bars.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const t = bars[mid]!.time;
    if (t === time) return mid;
    if (t < time) lo = mid + 1;
    else hi = mid - 1;
  }
  return -lo - 1;
}

function candleData(bar: ChartBar): CandlestickData<Time> {
  return { time: ts(bar.time), open: bar.open, high: bar.high, low: bar.low, close: bar.close };
}

export function createChartView(container: HTMLElement): ChartView {
  const chart = createChart(container, {
    autoSize: true,
    layout: {
      background: { type: ColorType.Solid, color: "#171d24" },
      textColor: "#c3ccd6",
      panes: { separatorColor: "#2a323c" },
    },
    grid: { vertLines: { color: "#222a33" }, horzLines: { color: "#222a33" } },
    crosshair: { mode: CrosshairMode.Normal },
    rightPriceScale: { borderColor: "#2a323c" },
    timeScale: { borderColor: "#2a323c", rightOffset: 4 },
  });
  const candles = chart.addSeries(CandlestickSeries, {
    upColor: UP,
    downColor: DOWN,
    borderVisible: false,
    wickUpColor: UP,
    wickDownColor: DOWN,
  });
  const overlay = (color: string, style: LineStyle = LineStyle.Solid): Line =>
    chart.addSeries(LineSeries, {
      color,
      lineWidth: 1,
      lineStyle: style,
      priceLineVisible: false,
      lastValueVisible: false,
      crosshairMarkerVisible: false,
    });
  const sma = overlay("#f0b429");
  const upper = overlay("#5c7cfa", LineStyle.Dashed);
  const middle = overlay("#5c7cfa", LineStyle.Dotted);
  const lower = overlay("#5c7cfa", LineStyle.Dashed);
  const rsi = chart.addSeries(LineSeries, { color: "#b197fc", lineWidth: 1, priceLineVisible: false }, 1);
  rsi.createPriceLine({ price: 70, color: DOWN, lineWidth: 1, lineStyle: LineStyle.Dashed, axisLabelVisible: false, title: "" });
  rsi.createPriceLine({ price: 30, color: UP, lineWidth: 1, lineStyle: LineStyle.Dashed, axisLabelVisible: false, title: "" });
  const panes = chart.panes();
  panes[0]?.setStretchFactor(3);
  panes[1]?.setStretchFactor(1);
  const markers = createSeriesMarkers(candles, []);

  let bars: ChartBar[] = [];
  // Indicator values by bar time, per line.
  const lines: [Line, keyof Omit<ChartIndicators, "time">][] = [
    [sma, "sma"],
    [upper, "upper"],
    [middle, "middle"],
    [lower, "lower"],
    [rsi, "rsi"],
  ];
  let values = new Map<Line, Map<number, number>>();
  let marks = new Map<string, ChartMarker>();

  function drawLines(): void {
    for (const [line] of lines) {
      const points = [...(values.get(line) ?? new Map<number, number>()).entries()]
        .sort((a, b) => a[0] - b[0])
        .map(([time, value]): LineData<Time> => ({ time: ts(time), value }));
      line.setData(points);
    }
  }

  function mergeIndicators(frame: ChartIndicators): void {
    for (const [line, key] of lines) {
      let column = values.get(line);
      if (column === undefined) values.set(line, (column = new Map()));
      const data = frame[key];
      frame.time.forEach((time, i) => {
        const v = data[i];
        // NaN: no value in this frame (its warm-up); a value drawn already stays.
        if (v !== undefined && Number.isFinite(v)) column.set(time, v);
      });
    }
  }

  function drawMarkers(): void {
    const list: SeriesMarker<Time>[] = [...marks.values()]
      .sort((a, b) => a.time - b.time || a.action.localeCompare(b.action))
      .map((m) =>
        m.action === "buy"
          ? { time: ts(m.time), position: "belowBar", shape: "arrowUp", color: UP, id: `${m.time}-buy` }
          : { time: ts(m.time), position: "aboveBar", shape: "arrowDown", color: DOWN, id: `${m.time}-sell` },
      );
    markers.setMarkers(list);
  }

  // Puts `bar` in place: the last bar, a new last bar, or an older one (historical update);
  // a bar older than the last that the chart does not have is inserted (setData).
  function put(bar: ChartBar): void {
    const last = bars[bars.length - 1];
    if (last === undefined || bar.time > last.time) {
      bars.push(bar);
      candles.update(candleData(bar));
      return;
    }
    const at = search(bars, bar.time);
    if (at >= 0) {
      bars[at] = bar;
      candles.update(candleData(bar), at !== bars.length - 1);
    } else {
      bars.splice(-at - 1, 0, bar);
      candles.setData(bars.map(candleData));
    }
  }

  return {
    load(newBars, intraday) {
      chart.applyOptions({ timeScale: { timeVisible: intraday, secondsVisible: false } });
      bars = [...newBars].sort((a, b) => a.time - b.time);
      candles.setData(bars.map(candleData));
      values = new Map();
      drawLines();
      marks = new Map();
      drawMarkers();
      chart.timeScale().scrollToRealTime();
    },
    tick(time, price) {
      const at = search(bars, time);
      if (at >= 0) {
        const bar = bars[at]!;
        // Only the newest bar's close follows trades; an older bar only widens.
        const latest = at === bars.length - 1;
        put({
          time,
          open: bar.open,
          high: Math.max(bar.high, price),
          low: Math.min(bar.low, price),
          close: latest ? price : bar.close,
        });
      } else if (bars.length === 0 || time > bars[bars.length - 1]!.time) {
        put({ time, open: price, high: price, low: price, close: price });
      }
      // A trade in an older bar the chart does not show: left to the closed candle.
    },
    candle(bar) {
      put(bar);
    },
    indicators(frame) {
      mergeIndicators(frame);
      drawLines();
    },
    markers(list) {
      for (const m of list) marks.set(`${m.time}-${m.action}`, m);
      drawMarkers();
    },
    marker(m) {
      const key = `${m.time}-${m.action}`;
      if (marks.has(key)) return;
      marks.set(key, m);
      drawMarkers();
    },
    bars: () => bars.length,
    barTime(back) {
      if (bars.length === 0) return undefined;
      return bars[Math.max(0, bars.length - 1 - back)]!.time;
    },
  };
}
