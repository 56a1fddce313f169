// `TickmeshClient`: tickmesh's query, computation and ingestion services as one-line calls that
// hand back plain rows and columns. Transport-agnostic: `@tickmesh/client/node` connects it over
// gRPC (HTTP/2), `@tickmesh/client/web` over gRPC-Web from a browser.
import { create } from "@bufbuild/protobuf";
import { createClient, type CallOptions, type Client, type Interceptor, type Transport } from "@connectrpc/connect";
import { Code, ConnectError } from "@connectrpc/connect";

import {
  barSize,
  interval as wireInterval,
  intervalName,
  isResampled,
  timeUs,
  toDate,
  type IntervalName,
  type TimeLike,
} from "./convert.js";
import { fromError, TickmeshError } from "./errors.js";
import { healthCheck, servingStatus, type ServingStatus } from "./health.js";
import { serviceConfig as shippedServiceConfig } from "./gen/service_config.js";
import {
  ComputationService,
  OptimizePortfolioRequestSchema,
  PortfolioObjective,
  WeightBoundSchema,
} from "./gen/tickmesh/v1/computation_pb.js";
import { ConfigService, type PerformanceOptimizationConfig } from "./gen/tickmesh/v1/config_pb.js";
import { IngestionService, type IngestSummary as WireSummary } from "./gen/tickmesh/v1/ingestion_pb.js";
import {
  CandleSchema,
  IndicatorKind,
  IndicatorSpecSchema,
  Side,
  SignalAction,
  Strategy,
  TickSchema,
  type Candle,
  type IndicatorSeries,
  type IndicatorSpec,
  type Signal,
  type Tick,
} from "./gen/tickmesh/v1/market_pb.js";
import {
  EventKind,
  ExportCandlesRequestSchema,
  GetCandlesRequestSchema,
  GetSignalsRequestSchema,
  SortOrder,
  QueryService,
  StreamMarketDataRequestSchema,
  type StreamMarketDataResponse,
} from "./gen/tickmesh/v1/query_pb.js";
import { retryInterceptor, type ServiceConfig } from "./retry.js";

/** ExportCandles' largest page (query.proto). */
export const EXPORT_PAGE_ROWS = 32_768;
/** Most rows GetSignals returns per page (the server's maximum). */
export const PAGE_SIZE = 5000;
/** Rows per ingestion call: half the server's default `ingestion.max_batch_rows` (10,000). */
export const BATCH_ROWS = 5000;

export interface ClientOptions {
  /** Sent as `authorization: Bearer <key>`. */
  apiKey?: string | undefined;
  /** Bounds every unary call, retries included (default 30 s); streams are unbounded. */
  timeoutMs?: number | undefined;
  /** The shipped retry config by default (`service_config.json`), your own, or `false`. */
  serviceConfig?: ServiceConfig | false | undefined;
  /** More interceptors, run inside the client's own (auth, retries). */
  interceptors?: Interceptor[] | undefined;
}

/** The transports of the three services a client calls. */
export interface Transports {
  query: Transport;
  ingestion?: Transport | undefined;
  computation?: Transport | undefined;
}

/** One bar. `time` is its open time; `timeUs` the same in microseconds since the epoch. */
export interface Bar {
  time: Date;
  timeUs: number;
  open: number;
  high: number;
  low: number;
  close: number;
  volume: number;
}

/** Bars as columns, for charts and numeric work (`time` in milliseconds, as `Date` counts). */
export interface BarColumns {
  time: Float64Array;
  open: Float64Array;
  high: Float64Array;
  low: Float64Array;
  close: Float64Array;
  volume: Float64Array;
}

export interface RangeOptions {
  start?: TimeLike;
  end?: TimeLike;
}

/**
 * A stored interval (`"1m"`, `"1h"`, `"1d"`, ...) or any bar size the query service resamples
 * to: a count and s, m, h, d, w (weeks from Monday) or mo (calendar months): `"2h"`, `"1w"`.
 */
export type BarSize = IntervalName | (string & {});

export interface ResampleOptions {
  /** Days, weeks and months in this IANA time zone (`"America/New_York"`) instead of UTC. */
  timeZone?: string;
  /** Days, weeks and months as the regular sessions of this exchange (`"XNYS"`). */
  session?: string;
}

export interface CandleOptions extends RangeOptions, ResampleOptions {
  /** Rows per ExportCandles page, at most 32,768 (stored intervals only). */
  pageSize?: number;
  signal?: AbortSignal;
}

/** One page of bars as columns: an ExportCandles page, or a page of resampled bars. */
export interface CandlePage {
  timeUs: bigint[];
  open: number[];
  high: number[];
  low: number[];
  close: number[];
  volume: number[];
  nextPageToken: string;
}

export interface LatestPrice {
  symbol: string;
  price: number;
  /** The newest tick's time, else the end of the newest candle (whose close it is). */
  time: Date;
}

export interface LatestPrices {
  prices: LatestPrice[];
  /** The symbols asked for that have no data. */
  missingSymbols: string[];
}

/** Parameters of one indicator: a period, positional parameters, or IndicatorSpec fields. */
export type IndicatorParams =
  | null
  | undefined
  | number
  | number[]
  | Partial<Pick<IndicatorSpec, "period" | "fastPeriod" | "slowPeriod" | "signalPeriod" | "deviations">>;

export interface IndicatorFrame {
  /** Bar open times, oldest first (the union over the indicators asked for). */
  time: Date[];
  /** One column per output, named as TA-Lib names it (NaN where an indicator has no value). */
  columns: Record<string, number[]>;
  /** Whether the mesh answered from its cache. */
  cacheHit: boolean;
}

export type StrategyName = "ma_crossover" | "rsi" | "macd" | "bollinger" | "combined";
export type ActionName = "buy" | "sell" | "hold";

export interface SignalRow {
  time: Date;
  symbol: string;
  interval: string;
  strategy: string;
  action: string;
  confidence: number;
  price: number;
  indicators: Record<string, number>;
}

export interface SignalQuery extends RangeOptions {
  symbols?: string[];
  strategies?: (StrategyName | Strategy)[];
  actions?: (ActionName | SignalAction)[];
  minConfidence?: number;
  /** At most this many rows (default: every page). */
  limit?: number;
}

export type ObjectiveName = "min_variance" | "max_sharpe" | "risk_parity";

export interface PortfolioQuery {
  interval?: IntervalName;
  objective?: ObjectiveName;
  lookbackBars?: number;
  bounds?: Record<string, [number, number]>;
  riskFreeRate?: number;
}

export interface Portfolio {
  weights: Record<string, number>;
  riskContribution: Record<string, number>;
  expectedReturn: number;
  volatility: number;
  sharpeRatio: number;
  observations: number;
}

export type EventKindName = "tick" | "candle" | "signal";

/** One market event of a stream; `time` is the tick's time, the candle's open or the signal's bar. */
export type MarketEvent =
  | { kind: "tick"; payload: Tick; eventId: string; symbol: string; time: Date; timeUs: bigint; historical: boolean }
  | { kind: "candle"; payload: Candle; eventId: string; symbol: string; time: Date; timeUs: bigint; historical: boolean }
  | { kind: "signal"; payload: Signal; eventId: string; symbol: string; time: Date; timeUs: bigint; historical: boolean };

export interface StreamOptions {
  kinds?: EventKindName[];
  /** Replay the stored events from this time first (`event.historical`). */
  resumeFrom?: TimeLike;
  intervals?: IntervalName[];
  /** Give up with `Unavailable` after this long without getting through (default 30 s). */
  reconnectForMs?: number;
  signal?: AbortSignal;
}

export interface BarInput {
  time: TimeLike;
  open: number;
  high: number;
  low: number;
  close: number;
  volume: number;
}

export interface TickInput {
  time: TimeLike;
  price: number;
  size: number;
  side?: "buy" | "sell" | undefined;
  /** Default: the row's position, as `tickmesh replay` numbers CSV lines. */
  tradeId?: string | undefined;
}

export interface IngestOptions {
  source?: string;
  batchRows?: number;
  /** Called after each batch with (rows done, rows in all). */
  onProgress?: (done: number, total: number) => void;
}

/** A row the server did not store: `row` is its position in the array given. */
export interface RejectedRow {
  row: number;
  field: string;
  reason: string;
}

export interface IngestSummary {
  stored: number;
  duplicates: number;
  rejectedCount: number;
  batches: number;
  rejected: RejectedRow[];
}

const KINDS: Record<string, IndicatorKind> = Object.fromEntries(
  Object.entries(IndicatorKind)
    .filter(([name, value]) => typeof value === "number" && name !== "UNSPECIFIED")
    .map(([name, value]) => [name.toLowerCase(), value as IndicatorKind]),
);
// TA-Lib's output names for the multi-output indicators, by the server's output names.
const TALIB_OUTPUTS: Partial<Record<IndicatorKind, Record<string, string>>> = {
  [IndicatorKind.MACD]: { macd: "macd", signal: "macdsignal", hist: "macdhist" },
  [IndicatorKind.BBANDS]: { upper: "upperband", middle: "middleband", lower: "lowerband" },
  [IndicatorKind.STOCH]: { k: "slowk", d: "slowd" },
};
type SpecField = "period" | "fastPeriod" | "slowPeriod" | "signalPeriod" | "deviations";
// Positional parameters by kind: [12, 26, 9] for MACD, [20, 2.0] for BBANDS, ...
const POSITIONAL: Partial<Record<IndicatorKind, SpecField[]>> = {
  [IndicatorKind.MACD]: ["fastPeriod", "slowPeriod", "signalPeriod"],
  [IndicatorKind.BBANDS]: ["period", "deviations"],
  [IndicatorKind.STDDEV]: ["period", "deviations"],
  [IndicatorKind.STOCH]: ["period", "fastPeriod", "slowPeriod"],
};

/** Row `i` of a page of bars. */
function barAt(page: CandlePage, i: number): Bar {
  const us = Number(page.timeUs[i]);
  return {
    time: new Date(us / 1000),
    timeUs: us,
    open: page.open[i]!,
    high: page.high[i]!,
    low: page.low[i]!,
    close: page.close[i]!,
    volume: page.volume[i]!,
  };
}

function indicatorSpec(name: string, params: IndicatorParams): IndicatorSpec {
  const key = name.toLowerCase();
  let kind = KINDS[key];
  if (kind === undefined) {
    const match = /^(.*)_(\d+)$/.exec(key); // "sma_50"
    if (match !== null && KINDS[match[1]!] !== undefined) {
      kind = KINDS[match[1]!];
      params ??= Number(match[2]);
    }
  }
  if (kind === undefined) {
    throw new RangeError(`unknown indicator ${JSON.stringify(name)}: one of ${Object.keys(KINDS).sort().join(", ")}`);
  }
  const spec = create(IndicatorSpecSchema, { kind });
  if (params === null || params === undefined) {
    return spec;
  }
  if (typeof params === "number") {
    spec.period = Math.trunc(params);
  } else if (Array.isArray(params)) {
    const names = POSITIONAL[kind] ?? ["period"];
    if (params.length > names.length) {
      throw new RangeError(`${name}: at most ${names.length} parameters (${names.join(", ")})`);
    }
    params.forEach((value, i) => {
      const field = names[i]!;
      spec[field] = field === "deviations" ? value : Math.trunc(value);
    });
  } else {
    Object.assign(spec, params);
  }
  return spec;
}

function indicatorColumns(series: IndicatorSeries): [string, number[]][] {
  const spec = series.spec;
  const kind = spec?.kind ?? IndicatorKind.UNSPECIFIED;
  const kindName = (IndicatorKind[kind] ?? String(kind)).toLowerCase();
  const renames = TALIB_OUTPUTS[kind];
  return series.outputs.map((output) => {
    if (renames !== undefined) {
      return [renames[output.name] ?? output.name, output.values];
    }
    return [spec?.period ? `${kindName}_${spec.period}` : kindName, output.values];
  });
}

function enumValue<E extends Record<string, string | number>>(e: E, what: string, value: string | number): number {
  if (typeof value === "number") return value;
  const wire = e[value.toUpperCase()];
  if (typeof wire !== "number") {
    throw new RangeError(`unknown ${what} ${JSON.stringify(value)}`);
  }
  return wire;
}

function enumName<E extends Record<string | number, string | number>>(e: E, value: number): string {
  const name = e[value];
  return typeof name === "string" ? name.toLowerCase() : String(value);
}

function summaryOf(): IngestSummary {
  return { stored: 0, duplicates: 0, rejectedCount: 0, batches: 0, rejected: [] };
}

function addSummary(total: IngestSummary, start: number, s: WireSummary | undefined): void {
  if (s === undefined) return;
  total.stored += Number(s.stored);
  total.duplicates += Number(s.duplicates);
  total.rejectedCount += Number(s.rejectedCount);
  total.batches += 1;
  for (const r of s.rejected) {
    total.rejected.push({ row: start + r.rowIndex, field: r.field, reason: r.reason });
  }
}

function event(response: StreamMarketDataResponse): MarketEvent | undefined {
  const e = response.event;
  if (e === undefined) return undefined;
  const base = { eventId: e.eventId, historical: response.historical };
  switch (e.payload.case) {
    case "tick": {
      const t = e.payload.value;
      return { ...base, kind: "tick", payload: t, symbol: t.symbol, timeUs: t.timeUs, time: toDate(t.timeUs) };
    }
    case "candle": {
      const c = e.payload.value;
      return { ...base, kind: "candle", payload: c, symbol: c.symbol, timeUs: c.openTimeUs, time: toDate(c.openTimeUs) };
    }
    case "signal": {
      const s = e.payload.value;
      return { ...base, kind: "signal", payload: s, symbol: s.symbol, timeUs: s.timeUs, time: toDate(s.timeUs) };
    }
    default:
      return undefined;
  }
}

function pause(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(finish, ms);
    function finish() {
      clearTimeout(timer);
      signal?.removeEventListener("abort", finish);
      resolve();
    }
    signal?.addEventListener("abort", finish);
  });
}

// Pause before resubscribing to a stream the server ended with OK (it shut down), so a server
// that keeps ending streams is not called in a tight loop.
const ENDED_PAUSE_MS = 100;
// Event ids remembered to drop the events a resumed stream sends again.
const SEEN_EVENTS = 200_000;

/**
 * A client of a tickmesh mesh. Make one with `connect()` from `@tickmesh/client/node` (or
 * `@tickmesh/client/web` in a browser), or from transports of your own.
 */
export class TickmeshClient {
  readonly query: Client<typeof QueryService>;
  /** ConfigService, which every tickmesh port serves: here the query service's. */
  readonly configService: Client<typeof ConfigService>;
  readonly #queryTransport: Transport;
  readonly #ingestion: Client<typeof IngestionService> | undefined;
  readonly #computation: Client<typeof ComputationService> | undefined;
  readonly #timeoutMs: number | undefined;
  readonly #onClose: () => void;

  constructor(transports: Transports, options: { timeoutMs?: number | undefined; onClose?: () => void } = {}) {
    this.query = createClient(QueryService, transports.query);
    this.configService = createClient(ConfigService, transports.query);
    this.#queryTransport = transports.query;
    this.#ingestion = transports.ingestion && createClient(IngestionService, transports.ingestion);
    this.#computation = transports.computation && createClient(ComputationService, transports.computation);
    this.#timeoutMs = options.timeoutMs === undefined ? 30_000 : options.timeoutMs;
    this.#onClose = options.onClose ?? (() => {});
  }

  /** The ingestion service's generated client (an error when no ingestion address was given). */
  get ingestion(): Client<typeof IngestionService> {
    if (this.#ingestion === undefined) throw new Error("this client has no ingestion transport");
    return this.#ingestion;
  }

  /** The computation service's generated client. */
  get computation(): Client<typeof ComputationService> {
    if (this.#computation === undefined) throw new Error("this client has no computation transport");
    return this.#computation;
  }

  /** Closes the connections (open streams end). */
  close(): void {
    this.#onClose();
  }

  async #call<T>(call: (options: CallOptions) => Promise<T>, signal?: AbortSignal): Promise<T> {
    const options: CallOptions = {};
    if (this.#timeoutMs !== undefined) options.timeoutMs = this.#timeoutMs;
    if (signal !== undefined) options.signal = signal;
    try {
      return await call(options);
    } catch (error) {
      throw fromError(error);
    }
  }

  /** The running PerformanceOptimizationConfig (`tickmesh.v1.ConfigService/GetConfig`). */
  async config(): Promise<PerformanceOptimizationConfig> {
    const response = await this.#call((o) => this.configService.getConfig({}, o));
    if (response.config === undefined) {
      throw new TickmeshError(Code.Internal, "GetConfig returned no config");
    }
    return response.config;
  }

  /**
   * The query port's health (`grpc.health.v1.Health/Check`) for `service`: "" for the whole
   * process, or a service's full name (`"tickmesh.v1.QueryService"`).
   */
  async health(service = ""): Promise<ServingStatus> {
    const response = await this.#call((o) =>
      this.#queryTransport.unary(healthCheck, o.signal, o.timeoutMs, undefined, { service } as never),
    );
    return servingStatus((response.message as { status?: unknown }).status);
  }

  // -- reads ------------------------------------------------------------------------------------

  /**
   * The ExportCandles pages of `symbol`'s bars with open times in [start, end) (unbounded when
   * left out), oldest first: packed columns, the fastest way to read many bars.
   */
  async *candlePages(symbol: string, interval: BarSize, options: CandleOptions = {}): AsyncGenerator<CandlePage> {
    if (isResampled(interval, options.timeZone, options.session)) {
      yield* this.#resampledPages(symbol, interval, options);
      return;
    }
    const pageSize = options.pageSize ?? EXPORT_PAGE_ROWS;
    if (!(pageSize >= 1)) {
      throw new RangeError(`pageSize must be at least 1, got ${pageSize}`);
    }
    const request = create(ExportCandlesRequestSchema, {
      symbol,
      interval: wireInterval(interval),
      startTimeUs: timeUs(options.start),
      endTimeUs: timeUs(options.end),
      pageSize: Math.min(pageSize, EXPORT_PAGE_ROWS),
    });
    for (;;) {
      const page = await this.#call((o) => this.query.exportCandles(request, o), options.signal);
      yield page;
      if (!page.nextPageToken) return;
      request.pageToken = page.nextPageToken;
    }
  }

  // GetCandles resampling to a bar size: ascending pages of Candle messages, as columns.
  async *#resampledPages(symbol: string, bar: string, options: CandleOptions): AsyncGenerator<CandlePage> {
    const request = create(GetCandlesRequestSchema, {
      symbol,
      bar: barSize(bar),
      timeZone: options.timeZone ?? "",
      session: options.session ?? "",
      startTimeUs: timeUs(options.start),
      endTimeUs: timeUs(options.end),
      pageSize: PAGE_SIZE,
      order: SortOrder.ASCENDING,
    });
    for (;;) {
      const page = await this.#call((o) => this.query.getCandles(request, o), options.signal);
      const c = page.candles;
      yield {
        timeUs: c.map((x) => x.openTimeUs),
        open: c.map((x) => x.open),
        high: c.map((x) => x.high),
        low: c.map((x) => x.low),
        close: c.map((x) => x.close),
        volume: c.map((x) => x.volume),
        nextPageToken: page.nextPageToken,
      };
      if (!page.nextPageToken) return;
      request.pageToken = page.nextPageToken;
    }
  }

  /** Every bar, one at a time, paging as it goes. */
  async *iterCandles(symbol: string, interval: BarSize, options: CandleOptions = {}): AsyncGenerator<Bar> {
    for await (const page of this.candlePages(symbol, interval, options)) {
      for (let i = 0; i < page.timeUs.length; i++) {
        yield barAt(page, i);
      }
    }
  }

  /**
   * Every bar as an array, oldest first. A stored interval is read with ExportCandles; any
   * other bar size (`"2h"`, `"1w"`, `"1mo"`) is resampled by the query service from the stored
   * bars (open first, high max, low min, close last, volume summed; periods without rows absent).
   */
  async candles(symbol: string, interval: BarSize, options: CandleOptions = {}): Promise<Bar[]> {
    // A plain loop per page: awaiting per row (iterCandles) costs ~40 % of the time.
    const bars: Bar[] = [];
    for await (const page of this.candlePages(symbol, interval, options)) {
      for (let i = 0; i < page.timeUs.length; i++) {
        bars.push(barAt(page, i));
      }
    }
    return bars;
  }

  /** Every bar as typed-array columns (`time` in epoch milliseconds), oldest first. */
  async candleColumns(symbol: string, interval: BarSize, options: CandleOptions = {}): Promise<BarColumns> {
    const pages: CandlePage[] = [];
    let rows = 0;
    for await (const page of this.candlePages(symbol, interval, options)) {
      pages.push(page);
      rows += page.timeUs.length;
    }
    const columns: BarColumns = {
      time: new Float64Array(rows),
      open: new Float64Array(rows),
      high: new Float64Array(rows),
      low: new Float64Array(rows),
      close: new Float64Array(rows),
      volume: new Float64Array(rows),
    };
    let at = 0;
    for (const page of pages) {
      for (let i = 0; i < page.timeUs.length; i++) columns.time[at + i] = Number(page.timeUs[i]) / 1000;
      columns.open.set(page.open, at);
      columns.high.set(page.high, at);
      columns.low.set(page.low, at);
      columns.close.set(page.close, at);
      columns.volume.set(page.volume, at);
      at += page.timeUs.length;
    }
    return columns;
  }

  /** The last price of each symbol; symbols without data are listed in `missingSymbols`. */
  async latestPrices(symbols: string[]): Promise<LatestPrices> {
    const response = await this.#call((o) => this.query.getLatestPrices({ symbols }, o));
    return {
      prices: response.prices.map((p) => ({ symbol: p.symbol, price: p.price, time: toDate(p.timeUs) })),
      missingSymbols: response.missingSymbols,
    };
  }

  /**
   * Indicator values by bar (stored or resampled, as for `candles`), computed by the mesh with
   * TA-Lib's definitions and cached.
   * `indicators` maps a name to its parameters: `{ rsi: 14, sma_50: null, macd: [12, 26, 9],
   * bbands: [20, 2] }` (null: TA-Lib's defaults). Columns are named as TA-Lib names its
   * outputs: `rsi_14`, `sma_50`, `macd`, `macdsignal`, `macdhist`, `upperband`, ...
   */
  async indicators(
    symbol: string,
    interval: BarSize,
    indicators: Record<string, IndicatorParams>,
    options: RangeOptions & ResampleOptions & { limit?: number } = {},
  ): Promise<IndicatorFrame> {
    const specs = Object.entries(indicators).map(([name, params]) => indicatorSpec(name, params));
    const bars = isResampled(interval, options.timeZone, options.session)
      ? { bar: barSize(interval), timeZone: options.timeZone ?? "", session: options.session ?? "" }
      : { interval: wireInterval(interval) };
    const response = await this.#call((o) =>
      this.query.getIndicators(
        {
          symbol,
          ...bars,
          indicators: specs,
          startTimeUs: timeUs(options.start),
          endTimeUs: timeUs(options.end),
          limit: options.limit ?? 0,
        },
        o,
      ),
    );
    // The union of the series' times, each column NaN where its indicator has no value.
    const times = [...new Set(response.series.flatMap((s) => s.timeUs))].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    const row = new Map(times.map((t, i) => [t, i]));
    const columns: Record<string, number[]> = {};
    for (const series of response.series) {
      for (const [name, values] of indicatorColumns(series)) {
        const column = new Array<number>(times.length).fill(Number.NaN);
        series.timeUs.forEach((t, i) => {
          column[row.get(t)!] = values[i] ?? Number.NaN;
        });
        columns[name] = column;
      }
    }
    return { time: times.map(toDate), columns, cacheHit: response.cacheHit };
  }

  /** Stored signals, newest first, every page (or the first `limit`). */
  async signals(query: SignalQuery = {}): Promise<SignalRow[]> {
    const limit = query.limit;
    const request = create(GetSignalsRequestSchema, {
      symbols: query.symbols ?? [],
      strategies: (query.strategies ?? []).map((s) => enumValue(Strategy, "strategy", s)),
      actions: (query.actions ?? []).map((a) => enumValue(SignalAction, "action", a)),
      startTimeUs: timeUs(query.start),
      endTimeUs: timeUs(query.end),
      minConfidence: query.minConfidence ?? 0,
      pageSize: limit ? Math.min(PAGE_SIZE, limit) : PAGE_SIZE,
    });
    const rows: SignalRow[] = [];
    while (limit === undefined || rows.length < limit) {
      const page = await this.#call((o) => this.query.getSignals(request, o));
      for (const s of page.signals) {
        rows.push({
          time: toDate(s.timeUs),
          symbol: s.symbol,
          interval: intervalName(s.interval),
          strategy: enumName(Strategy, s.strategy),
          action: enumName(SignalAction, s.action),
          confidence: s.confidence,
          price: s.price,
          indicators: { ...s.indicators },
        });
      }
      if (!page.nextPageToken) break;
      request.pageToken = page.nextPageToken;
    }
    return limit === undefined ? rows : rows.slice(0, limit);
  }

  /** Portfolio weights by symbol, with the portfolio's figures. */
  async optimizePortfolio(symbols: string[], query: PortfolioQuery = {}): Promise<Portfolio> {
    const request = create(OptimizePortfolioRequestSchema, {
      symbols,
      interval: wireInterval(query.interval ?? "1d"),
      lookbackBars: query.lookbackBars ?? 0,
      objective: enumValue(PortfolioObjective, "objective", query.objective ?? "min_variance"),
      bounds: Object.entries(query.bounds ?? {}).map(([symbol, [minWeight, maxWeight]]) =>
        create(WeightBoundSchema, { symbol, minWeight, maxWeight }),
      ),
      riskFreeRate: query.riskFreeRate ?? 0,
    });
    const response = await this.#call((o) => this.computation.optimizePortfolio(request, o));
    return {
      weights: Object.fromEntries(response.weights.map((w) => [w.symbol, w.weight])),
      riskContribution: Object.fromEntries(response.weights.map((w) => [w.symbol, w.riskContribution])),
      expectedReturn: response.expectedReturn,
      volatility: response.volatility,
      sharpeRatio: response.sharpeRatio,
      observations: response.observations,
    };
  }

  // -- live -------------------------------------------------------------------------------------

  /**
   * Market events of `symbols` as they happen (after the stored ones from `resumeFrom`, if
   * given). When the stream breaks with UNAVAILABLE (the query service is down),
   * RESOURCE_EXHAUSTED (this subscriber fell behind) or ends (the query service shut down for a
   * restart), it resubscribes from the oldest last-seen time per (symbol, kind) and drops the
   * events it already gave (by event id): nothing missed, nothing twice. It gives up with
   * `Unavailable` after `reconnectForMs` without getting through. Leave the loop (`break`) or
   * abort `signal` to end it.
   */
  async *stream(symbols: string[], options: StreamOptions = {}): AsyncGenerator<MarketEvent> {
    const request = create(StreamMarketDataRequestSchema, {
      symbols,
      kinds: (options.kinds ?? []).map((k) => enumValue(EventKind, "event kind", k)),
      intervals: (options.intervals ?? []).map(wireInterval),
      resumeFromTimeUs: timeUs(options.resumeFrom),
    });
    const floor = request.resumeFromTimeUs || BigInt(Date.now()) * 1000n;
    const last = new Map<string, bigint>();
    const seen = new Set<string>();
    const reconnectForMs = options.reconnectForMs ?? 30_000;
    let failingSince: number | undefined;
    let backoffMs = 100;
    const outer = options.signal;
    while (!outer?.aborted) {
      const call = new AbortController();
      const stop = () => call.abort();
      outer?.addEventListener("abort", stop);
      let waitMs = ENDED_PAUSE_MS;
      try {
        for await (const response of this.query.streamMarketData(request, { signal: call.signal })) {
          failingSince = undefined;
          backoffMs = 100;
          const e = event(response);
          if (e === undefined || seen.has(e.eventId)) continue;
          seen.add(e.eventId);
          if (seen.size > SEEN_EVENTS) seen.delete(seen.values().next().value!);
          const key = `${e.symbol}\u0000${e.kind}`;
          const previous = last.get(key);
          last.set(key, previous === undefined || e.timeUs > previous ? e.timeUs : previous);
          yield e;
        }
      } catch (error) {
        if (outer?.aborted) return;
        const code = ConnectError.from(error).code;
        if (code !== Code.Unavailable && code !== Code.ResourceExhausted) throw fromError(error);
        const now = Date.now();
        failingSince ??= now;
        if (now - failingSince > reconnectForMs) throw fromError(error);
        waitMs = backoffMs;
        backoffMs = Math.min(backoffMs * 2, 2000);
      } finally {
        outer?.removeEventListener("abort", stop);
        call.abort();
      }
      await pause(waitMs, outer);
      request.resumeFromTimeUs = last.size > 0 ? [...last.values()].reduce((a, b) => (a < b ? a : b)) : floor;
    }
  }

  // -- writes -----------------------------------------------------------------------------------

  async #ingest<T>(
    rows: T[],
    options: IngestOptions,
    send: (rows: T[], start: number, o: CallOptions) => Promise<{ summary?: WireSummary | undefined }>,
  ): Promise<IngestSummary> {
    const batchRows = options.batchRows ?? BATCH_ROWS;
    if (!(batchRows >= 1)) throw new RangeError(`batchRows must be at least 1, got ${batchRows}`);
    const summary = summaryOf();
    for (let start = 0; start < rows.length; start += batchRows) {
      const stop = Math.min(start + batchRows, rows.length);
      const response = await this.#call((o) => send(rows.slice(start, stop), start, o));
      addSummary(summary, start, response.summary);
      options.onProgress?.(stop, rows.length);
    }
    return summary;
  }

  /**
   * Stores `bars` as closed candles of `symbol`, in batches of `batchRows` (within the server's
   * `ingestion.max_batch_rows`). Idempotent: the same bars again count as duplicates.
   */
  async ingestCandles(bars: BarInput[], symbol: string, interval: IntervalName, options: IngestOptions = {}): Promise<IngestSummary> {
    const wire = wireInterval(interval);
    const source = options.source ?? "typescript";
    return this.#ingest(bars, options, (batch, _start, o) =>
      this.ingestion.ingestCandles(
        {
          source,
          candles: batch.map((b) =>
            create(CandleSchema, {
              symbol,
              interval: wire,
              openTimeUs: timeUs(b.time),
              open: b.open,
              high: b.high,
              low: b.low,
              close: b.close,
              volume: b.volume,
              closed: true,
            }),
          ),
        },
        o,
      ),
    );
  }

  /** Stores the trades of `symbol`, batched and idempotent likewise. */
  async ingestTicks(ticks: TickInput[], symbol: string, options: IngestOptions = {}): Promise<IngestSummary> {
    const source = options.source ?? "typescript";
    return this.#ingest(ticks, options, (batch, start, o) =>
      this.ingestion.ingestTickBatch(
        {
          source,
          ticks: batch.map((t, i) =>
            create(TickSchema, {
              symbol,
              timeUs: timeUs(t.time),
              tradeId: t.tradeId ?? String(start + i),
              price: t.price,
              size: t.size,
              side: t.side === "buy" ? Side.BUY : t.side === "sell" ? Side.SELL : Side.UNSPECIFIED,
            }),
          ),
        },
        o,
      ),
    );
  }
}

/** The interceptors every client runs: the API key, then the service config's retries. */
export function clientInterceptors(options: ClientOptions): Interceptor[] {
  const interceptors: Interceptor[] = [];
  const apiKey = options.apiKey;
  if (apiKey) {
    interceptors.push((next) => (req) => {
      req.header.set("authorization", `Bearer ${apiKey}`);
      return next(req);
    });
  }
  if (options.serviceConfig !== false) {
    interceptors.push(retryInterceptor(options.serviceConfig ?? shippedServiceConfig));
  }
  interceptors.push(...(options.interceptors ?? []));
  return interceptors;
}

/**
 * The ingestion and computation addresses next to a query address, in `tickmesh up`'s layout:
 * ingestion on the query port - 3, computation on the query port - 2.
 */
export function peerAddresses(target: string): { ingestion: string; computation: string } {
  const at = target.lastIndexOf(":");
  const port = Number(target.slice(at + 1));
  if (at < 0 || !Number.isInteger(port) || port < 3) {
    throw new RangeError(`cannot derive the ingestion / computation addresses from ${JSON.stringify(target)}: pass ingestion and computation`);
  }
  const host = target.slice(0, at);
  return { ingestion: `${host}:${port - 3}`, computation: `${host}:${port - 2}` };
}

export { TickmeshError };
