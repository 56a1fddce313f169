// State shared by the entry chunk and the lazily loaded chunks (chart, mesh), and the test hooks.

/** One tick as the page rendered it (for ingest-to-screen latency in web/test/dashboard.mjs). */
export interface RenderedTick {
  tradeId: string;
  symbol: string;
  price: number;
  /** Date.now() in the animation frame that drew it. */
  at: number;
}

/** `window.__tickmesh`: what the tests read. */
export interface TestHooks {
  /** Bars on the candlestick chart. */
  bars: number;
  /** The last price shown per symbol. */
  lastPrice: Record<string, number>;
  /** performance.now() when the last tick was rendered. */
  lastTickAt: number;
  /** Stream events applied (after dropping duplicates by event id). */
  events: number;
  /** Events dropped because their event id was seen already. */
  duplicates: number;
  /** Whether the live stream is connected. */
  connected: boolean;
  /** The last 1000 ticks rendered, oldest first. */
  rendered: RenderedTick[];
  /** Every change of #status: "connecting", "live", "reconnecting", "auth". */
  statusLog: { status: string; at: number }[];
  /** performance.now() when the chart first showed its history (0: not yet). */
  chartReadyAt: number;
  symbols: string[];
  selected: string;
  interval: string;
}

declare global {
  interface Window {
    __tickmesh: TestHooks;
  }
}

export const RENDERED_CAP = 1000;

// Durations of the page's last unary calls, milliseconds (a ring of LATENCY_WINDOW).
export const LATENCY_WINDOW = 200;
const latencies: number[] = [];
let latencyAt = 0;

export function recordLatency(ms: number): void {
  if (latencies.length < LATENCY_WINDOW) latencies.push(ms);
  else latencies[latencyAt] = ms;
  latencyAt = (latencyAt + 1) % LATENCY_WINDOW;
}

/** p50 / p99 (nearest rank) of the recorded unary calls, and how many there are. */
export function latencySummary(): { n: number; p50: number; p99: number } {
  const sorted = [...latencies].sort((a, b) => a - b);
  const rank = (p: number) => sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))] ?? Number.NaN;
  return { n: sorted.length, p50: rank(0.5), p99: rank(0.99) };
}

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done);
  });
}

/** The chart module's interface (src/chart.ts, loaded with a dynamic import). */
export interface ChartBar {
  /** Open time, seconds since the epoch (UTC). */
  time: number;
  open: number;
  high: number;
  low: number;
  close: number;
}

export interface ChartMarker {
  /** Bar open time, seconds. */
  time: number;
  action: "buy" | "sell";
  strategy: string;
}

/** Indicator values by bar time (seconds); NaN where there is none. */
export interface ChartIndicators {
  time: number[];
  sma: number[];
  upper: number[];
  middle: number[];
  lower: number[];
  rsi: number[];
}

export interface ChartView {
  /** Replaces the bars and clears the overlays and markers (a new symbol or interval). */
  load(bars: ChartBar[], intraday: boolean): void;
  /** A trade in the bar opening at `time`: moves that bar (or opens a new last one). */
  tick(time: number, price: number): void;
  /** A candle from the stream: appends or replaces its bar. */
  candle(bar: ChartBar): void;
  /** Indicator values (a tail or all), merged into the overlays. */
  indicators(values: ChartIndicators): void;
  /** Adds markers (one per bar and action). */
  markers(markers: ChartMarker[]): void;
  marker(marker: ChartMarker): void;
  bars(): number;
  /** Open time (seconds) of the bar `back` bars before the last (clamped to the first). */
  barTime(back: number): number | undefined;
}
