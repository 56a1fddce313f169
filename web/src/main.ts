// tickmesh dashboard, the entry chunk: symbol list with live prices, the live stream and its
// status, the API-key form. The chart (lightweight-charts) and the mesh panel are separate
// chunks loaded with dynamic import().
//
// Symbols: there is no list-symbols RPC and GetConfig has no watch list, so the page shows the
// symbols of `?symbols=GOOG,EURUSD` (default: GOOG). `?symbol=` picks the charted one (default:
// the first), `?interval=` the bar size (1m, 5m, 1h, 1d; default 1d).
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import {
  clientInterceptors,
  connectWeb,
  fromError,
  interval as wireInterval,
  intervalName,
  type MarketEvent,
  type TickmeshClient,
} from "@tickmesh/client/web";
import { SignalAction } from "@tickmesh/client/gen/market_pb";
import { SortOrder } from "@tickmesh/client/gen/query_pb";

import {
  RENDERED_CAP,
  recordLatency,
  sleep,
  type ChartBar,
  type ChartIndicators,
  type ChartMarker,
  type ChartView,
  type RenderedTick,
  type TestHooks,
} from "./shared";

const INTERVALS = ["1m", "5m", "1h", "1d"] as const;
type Interval = (typeof INTERVALS)[number];
const INTERVAL_MS: Record<Interval, number> = { "1m": 60_000, "5m": 300_000, "1h": 3_600_000, "1d": 86_400_000 };
const DAY_MS = 86_400_000;
/** Bars the chart loads: the newest page of GetCandles (its maximum page). */
const HISTORY_BARS = 5000;
const KEY_STORAGE = "tickmesh.apiKey";
const SYMBOL = /^[A-Za-z0-9._:/-]{1,32}$/;

// -- options from the URL -------------------------------------------------------------------------

const params = new URLSearchParams(location.search);
const symbols = [
  ...new Set(
    (params.get("symbols") ?? "GOOG")
      .split(",")
      .map((s) => s.trim())
      .filter((s) => SYMBOL.test(s)),
  ),
];
if (symbols.length === 0) symbols.push("GOOG");
let selected = symbols.includes(params.get("symbol") ?? "") ? params.get("symbol")! : symbols[0]!;
let interval: Interval = (INTERVALS as readonly string[]).includes(params.get("interval") ?? "")
  ? (params.get("interval") as Interval)
  : "1d";

// -- test hooks -----------------------------------------------------------------------------------

const hooks: TestHooks = (window.__tickmesh = {
  bars: 0,
  lastPrice: {},
  lastTickAt: 0,
  events: 0,
  duplicates: 0,
  connected: false,
  rendered: [],
  statusLog: [],
  chartReadyAt: 0,
  symbols: [...symbols],
  selected,
  interval,
});

// -- DOM ------------------------------------------------------------------------------------------

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const statusEl = $("status");
const pricesBody = $<HTMLTableElement>("prices").tBodies[0]!;
const chartEl = $("chart");
const chartTitle = $("chart-title");
const chartNote = $("chart-note");
const authForm = $<HTMLFormElement>("auth");
const meshEl = $("mesh");

type Status = "connecting" | "live" | "reconnecting" | "auth";
let status: Status | undefined;

function setStatus(next: Status, detail = ""): void {
  const text =
    next === "live"
      ? "live"
      : next === "reconnecting"
        ? "disconnected, reconnecting…"
        : next === "auth"
          ? "API key needed"
          : "connecting…";
  statusEl.textContent = detail ? `${text} (${detail})` : text;
  statusEl.className = `status ${next === "reconnecting" ? "down" : next}`;
  hooks.connected = next === "live";
  if (next !== status) {
    status = next;
    hooks.statusLog.push({ status: next, at: Date.now() });
    if (hooks.statusLog.length > 200) hooks.statusLog.shift();
  }
}

interface Row {
  tr: HTMLTableRowElement;
  price: HTMLElement;
  change: HTMLElement;
}
const rows = new Map<string, Row>();
for (const symbol of symbols) {
  const tr = document.createElement("tr");
  tr.dataset.symbol = symbol;
  const name = document.createElement("td");
  name.className = "sym";
  name.textContent = symbol;
  const price = document.createElement("td");
  price.className = "price num";
  price.textContent = "…";
  const change = document.createElement("td");
  change.className = "change num";
  tr.append(name, price, change);
  tr.addEventListener("click", () => select(symbol, interval));
  pricesBody.append(tr);
  rows.set(symbol, { tr, price, change });
}

const intervalsEl = $("intervals");
const intervalButtons = new Map<Interval, HTMLButtonElement>();
for (const iv of INTERVALS) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = iv;
  b.dataset.interval = iv;
  b.addEventListener("click", () => select(selected, iv));
  intervalsEl.append(b);
  intervalButtons.set(iv, b);
}

function showSelection(): void {
  for (const [symbol, row] of rows) row.tr.classList.toggle("selected", symbol === selected);
  for (const [iv, b] of intervalButtons) b.setAttribute("aria-pressed", String(iv === interval));
  chartTitle.textContent = `${selected} · ${interval}`;
  hooks.selected = selected;
  hooks.interval = interval;
}

// -- prices and the day's change --------------------------------------------------------------------
//
// The day's change of a symbol is its last price against a reference: the close of the newest
// daily bar that opened before the UTC day of the last price (the previous daily close), else
// the open of that day's daily bar, else the first price the page saw that day. A price stamped
// exactly at 00:00 UTC (the end of a daily candle, its close) belongs to the day before. When a
// trade of a later UTC day arrives, the last price before it becomes the reference.

interface Quote {
  price?: number;
  timeMs?: number;
  refDay?: number;
  refPrice?: number;
  missing?: boolean;
}
const quotes = new Map<string, Quote>(symbols.map((s) => [s, {}]));

const utcDay = (ms: number) => Math.floor(ms / DAY_MS) * DAY_MS;

function formatPrice(p: number): string {
  return p.toFixed(Math.abs(p) < 10 ? 5 : 2);
}

function drawQuote(symbol: string): void {
  const q = quotes.get(symbol);
  const row = rows.get(symbol);
  if (q === undefined || row === undefined) return;
  if (q.price === undefined) {
    row.price.textContent = q.missing ? "no data" : "…";
    row.price.classList.toggle("missing", Boolean(q.missing));
    row.change.textContent = "";
    return;
  }
  row.price.classList.remove("missing");
  row.price.textContent = formatPrice(q.price);
  hooks.lastPrice[symbol] = q.price;
  if (q.refPrice === undefined || q.refPrice === 0) {
    row.change.textContent = "";
    row.change.className = "change num";
    return;
  }
  const diff = q.price - q.refPrice;
  const pct = (diff / q.refPrice) * 100;
  const sign = diff > 0 ? "+" : diff < 0 ? "−" : "";
  row.change.textContent = `${sign}${Math.abs(pct).toFixed(2)}%`;
  row.change.title = `${sign}${formatPrice(Math.abs(diff))} against ${formatPrice(q.refPrice)}`;
  row.change.className = `change num ${diff > 0 ? "up" : diff < 0 ? "down" : ""}`;
}

// A price seen at `timeMs` (a trade, or GetLatestPrices). Older than what is shown: ignored.
function applyPrice(symbol: string, price: number, timeMs: number): void {
  const q = quotes.get(symbol);
  if (q === undefined) return;
  if (q.timeMs !== undefined && timeMs < q.timeMs) return;
  const day = utcDay(timeMs - 1);
  if (q.refDay === undefined || day > q.refDay) {
    q.refDay = day;
    q.refPrice = q.price ?? price;
  }
  q.price = price;
  q.timeMs = timeMs;
  q.missing = false;
  drawQuote(symbol);
}

async function loadPrices(client: TickmeshClient, signal: AbortSignal): Promise<void> {
  const latest = await retrying(() => client.latestPrices(symbols), signal);
  if (latest === undefined) return;
  for (const p of latest.prices) {
    const q = quotes.get(p.symbol);
    if (q === undefined) continue;
    const timeMs = p.time.getTime();
    if (q.timeMs === undefined || timeMs >= q.timeMs) {
      // The reference comes from the daily bars, not from the price before this one.
      q.refDay = undefined;
      q.refPrice = undefined;
      applyPrice(p.symbol, p.price, timeMs);
      void loadReference(client, p.symbol, utcDay(timeMs - 1), signal);
    }
  }
  for (const symbol of latest.missingSymbols) {
    const q = quotes.get(symbol);
    if (q !== undefined && q.price === undefined) {
      q.missing = true;
      drawQuote(symbol);
    }
  }
}

async function loadReference(client: TickmeshClient, symbol: string, day: number, signal: AbortSignal): Promise<void> {
  const page = await retrying(
    () =>
      client.query.getCandles(
        {
          symbol,
          interval: wireInterval("1d"),
          endTimeUs: BigInt(day + DAY_MS) * 1000n,
          pageSize: 2,
          order: SortOrder.DESCENDING,
        },
        { timeoutMs: 15_000, signal },
      ),
    signal,
  );
  const q = quotes.get(symbol);
  if (page === undefined || q === undefined || q.refDay !== day) return;
  const candles = page.candles.map((c) => ({ open: c.open, close: c.close, openMs: Number(c.openTimeUs) / 1000 }));
  const previous = candles.find((c) => c.openMs < day);
  const today = candles.find((c) => c.openMs === day);
  const ref = previous?.close ?? today?.open;
  if (ref !== undefined) {
    q.refPrice = ref;
    drawQuote(symbol);
  }
}

// -- calls: retries, auth ---------------------------------------------------------------------------

// Failures that waiting can cure: the server restarting, overloaded, or slow.
const TRANSIENT = new Set<Code>([Code.Unavailable, Code.DeadlineExceeded, Code.ResourceExhausted, Code.Aborted, Code.Unknown]);

/**
 * `call` until it answers: a transient failure waits with backoff (up to 10 s) and tries again;
 * UNAUTHENTICATED asks for a key; anything else (FAILED_PRECONDITION for too few bars,
 * NOT_FOUND, ...) goes to `onError`. `undefined` when it did not answer or the session ended.
 */
async function retrying<T>(
  call: () => Promise<T>,
  signal: AbortSignal,
  onError: (message: string) => void = () => {},
): Promise<T | undefined> {
  let backoff = 250;
  while (!signal.aborted) {
    try {
      return await call();
    } catch (error) {
      if (signal.aborted) return undefined;
      const e = fromError(error);
      if (e.code === Code.Unauthenticated) {
        needKey(e.rawMessage);
        return undefined;
      }
      if (!TRANSIENT.has(e.code)) {
        onError(e.rawMessage || e.message);
        return undefined;
      }
      await sleep(backoff, signal);
      backoff = Math.min(backoff * 2, 10_000);
    }
  }
  return undefined;
}

// -- the session: a client and everything running on it --------------------------------------------

let client: TickmeshClient;
let session = new AbortController();
let interceptors: Interceptor[] = [];

function isNetworkError(error: unknown): boolean {
  // fetch() rejects with a TypeError when the server cannot be reached or the connection
  // breaks mid-body; Connect calls that UNKNOWN, the SDK only resumes on UNAVAILABLE.
  return error instanceof TypeError || (error instanceof Error && error.name === "TypeError");
}

function unavailable(error: unknown): unknown {
  if (!isNetworkError(error)) return error;
  return new ConnectError((error as Error).message || "network error", Code.Unavailable, undefined, undefined, error);
}

// Innermost interceptor (inside the SDK's auth and retries): times unary calls, maps network
// failures to UNAVAILABLE, and tells the status badge when the live stream opens and breaks.
const observe: Interceptor = (next) => async (req) => {
  const started = performance.now();
  const isStream = req.method.name === "StreamMarketData";
  let res;
  try {
    res = await next(req);
  } catch (error) {
    if (isStream && !req.signal.aborted) streamDown();
    else if (!req.stream && !isNetworkError(error) && !req.signal.aborted) recordLatency(performance.now() - started);
    throw unavailable(error);
  }
  if (!res.stream) {
    recordLatency(performance.now() - started);
    return res;
  }
  if (!isStream) return res;
  streamUp();
  const messages = res.message;
  async function* watched() {
    try {
      yield* messages;
    } catch (error) {
      if (!req.signal.aborted) streamDown();
      throw unavailable(error);
    }
  }
  return { ...res, message: watched() };
};

function streamUp(): void {
  setStatus("live");
}

function streamDown(): void {
  if (status !== "auth") setStatus("reconnecting");
}

function makeClient(): TickmeshClient {
  const apiKey = sessionStorage.getItem(KEY_STORAGE) ?? undefined;
  interceptors = clientInterceptors({ apiKey, interceptors: [observe] });
  return connectWeb(location.origin, { apiKey, interceptors: [observe], timeoutMs: 10_000 });
}

function needKey(message: string): void {
  session.abort();
  setStatus("auth");
  const hadKey = sessionStorage.getItem(KEY_STORAGE) !== null;
  const label = authForm.querySelector("label")!;
  label.textContent = hadKey ? `The mesh rejected this API key (${message || "unauthenticated"}); another:` : "This mesh needs an API key";
  authForm.hidden = false;
  authForm.querySelector("input")!.focus();
}

authForm.addEventListener("submit", (ev) => {
  ev.preventDefault();
  const input = authForm.querySelector("input")!;
  const key = input.value.trim();
  if (!key) return;
  sessionStorage.setItem(KEY_STORAGE, key);
  input.value = "";
  authForm.hidden = true;
  start();
});

function start(): void {
  session.abort();
  session = new AbortController();
  client = makeClient();
  const signal = session.signal;
  setStatus("connecting");
  const floorUs = BigInt(Date.now() - 2000) * 1000n;
  void loadPrices(client, signal);
  void loadChart(signal);
  void streamLoop(client, floorUs, signal);
  void watchdog(client, signal);
  void startMesh(signal);
}

// -- the live stream --------------------------------------------------------------------------------

// Event ids applied (a resumed stream sends some again): the newest SEEN_CAP.
const SEEN_CAP = 100_000;
const seen = new Set<string>();
// The newest event time seen per (symbol, kind), microseconds: where a restarted stream resumes.
const lastSeen = new Map<string, bigint>();

// The current subscription; the watchdog aborts it to start a fresh one.
let streamAttempt: AbortController | undefined;

async function streamLoop(c: TickmeshClient, floorUs: bigint, signal: AbortSignal): Promise<void> {
  let backoff = 250;
  while (!signal.aborted) {
    const resumeFrom = lastSeen.size > 0 ? [...lastSeen.values()].reduce((a, b) => (a < b ? a : b)) : floorUs;
    const attempt = new AbortController();
    const stop = () => attempt.abort();
    signal.addEventListener("abort", stop);
    streamAttempt = attempt;
    try {
      // The SDK resubscribes by itself on UNAVAILABLE (the interceptor above shows the outage);
      // this loop starts it again after anything else, from the oldest last-seen event time.
      for await (const e of c.stream(symbols, {
        kinds: ["tick", "candle", "signal"],
        resumeFrom,
        reconnectForMs: 365 * DAY_MS,
        signal: attempt.signal,
      })) {
        backoff = 250;
        onEvent(e);
      }
    } catch (error) {
      if (signal.aborted) return;
      const e = fromError(error);
      if (e.code === Code.Unauthenticated) {
        needKey(e.rawMessage);
        return;
      }
      streamDown();
    } finally {
      signal.removeEventListener("abort", stop);
    }
    if (signal.aborted) return;
    if (attempt.signal.aborted) continue; // restarted by the watchdog: at once
    await sleep(backoff, signal);
    backoff = Math.min(backoff * 2, 5000);
  }
}

// A stream can hang without an error (a connection that died silently): every few seconds the
// watchdog asks the query service's health; when that fails while the stream looks live, the
// badge says so and the stream starts again (resuming, duplicates dropped).
const WATCHDOG_MS = 5000;

async function watchdog(c: TickmeshClient, signal: AbortSignal): Promise<void> {
  while (!signal.aborted) {
    await sleep(WATCHDOG_MS, signal);
    if (signal.aborted) return;
    try {
      await c.health("tickmesh.v1.QueryService");
    } catch (error) {
      if (signal.aborted) return;
      const code = fromError(error).code;
      if (code === Code.Unauthenticated) {
        needKey(fromError(error).rawMessage);
        return;
      }
      // Only an unreachable server: NOT_FOUND / UNIMPLEMENTED mean it answered.
      if ((code === Code.Unavailable || code === Code.DeadlineExceeded) && status === "live") {
        streamDown();
        streamAttempt?.abort();
      }
    }
  }
}

let pendingRender: RenderedTick[] = [];
let frameRequested = false;

function flushRendered(): void {
  frameRequested = false;
  const at = Date.now();
  for (const r of pendingRender) {
    r.at = at;
    hooks.rendered.push(r);
  }
  if (hooks.rendered.length > RENDERED_CAP) hooks.rendered.splice(0, hooks.rendered.length - RENDERED_CAP);
  pendingRender = [];
  hooks.lastTickAt = performance.now();
}

function onEvent(e: MarketEvent): void {
  if (seen.has(e.eventId)) {
    hooks.duplicates++;
    return;
  }
  seen.add(e.eventId);
  if (seen.size > SEEN_CAP) seen.delete(seen.values().next().value!);
  const key = `${e.symbol}\u0000${e.kind}`;
  const previous = lastSeen.get(key);
  if (previous === undefined || e.timeUs > previous) lastSeen.set(key, e.timeUs);
  hooks.events++;
  if (status !== "live" && status !== "auth") setStatus("live");

  if (e.kind === "tick") {
    const t = e.payload;
    const timeMs = Number(t.timeUs) / 1000;
    applyPrice(e.symbol, t.price, timeMs);
    chartEvent(e.symbol, (view) => view.tick(bucket(timeMs), t.price));
    pendingRender.push({ tradeId: t.tradeId, symbol: e.symbol, price: t.price, at: 0 });
    if (!frameRequested) {
      frameRequested = true;
      if (document.hidden) setTimeout(flushRendered, 0);
      else requestAnimationFrame(flushRendered);
    }
  } else if (e.kind === "candle") {
    const c = e.payload;
    if (intervalName(c.interval) !== interval) return;
    const bar: ChartBar = { time: Number(c.openTimeUs) / 1_000_000, open: c.open, high: c.high, low: c.low, close: c.close };
    chartEvent(e.symbol, (view) => view.candle(bar));
    if (e.symbol === selected) refreshIndicatorsSoon();
  } else if (e.kind === "signal") {
    const s = e.payload;
    if (intervalName(s.interval) !== interval) return;
    const action = s.action === SignalAction.BUY ? "buy" : s.action === SignalAction.SELL ? "sell" : undefined;
    if (action === undefined) return;
    const marker: ChartMarker = { time: Number(s.timeUs) / 1_000_000, action, strategy: String(s.strategy) };
    chartEvent(e.symbol, (view) => view.marker(marker));
  }
}

// Open time (seconds) of the bar of the selected interval a trade at `ms` falls in (bars are
// aligned to the epoch, days to UTC midnight).
function bucket(ms: number): number {
  const size = INTERVAL_MS[interval];
  return (Math.floor(ms / size) * size) / 1000;
}

// -- the chart (lazy chunk) -------------------------------------------------------------------------

let view: ChartView | undefined;
let chartModule: Promise<typeof import("./chart")> | undefined;
let chartGeneration = 0;
// Chart updates that arrived while its history was loading, applied after it.
let chartQueue: ((view: ChartView) => void)[] | undefined = [];

function chartEvent(symbol: string, apply: (view: ChartView) => void): void {
  if (symbol !== selected) return;
  if (chartQueue !== undefined || view === undefined) {
    (chartQueue ??= []).push(apply);
    if (chartQueue.length > 50_000) chartQueue.shift();
    return;
  }
  apply(view);
  hooks.bars = view.bars();
}

function select(symbol: string, iv: Interval): void {
  if (symbol === selected && iv === interval) return;
  selected = symbol;
  interval = iv;
  const url = new URL(location.href);
  url.searchParams.set("symbol", symbol);
  url.searchParams.set("interval", iv);
  history.replaceState(null, "", url);
  void loadChart(session.signal);
}

const INDICATORS = { sma_20: null, bbands: [20, 2], rsi: 14 };

function indicatorValues(frame: { time: Date[]; columns: Record<string, number[]> }): ChartIndicators {
  const col = (name: string) => frame.columns[name] ?? frame.time.map(() => Number.NaN);
  return {
    time: frame.time.map((t) => t.getTime() / 1000),
    sma: col("sma_20"),
    upper: col("upperband"),
    middle: col("middleband"),
    lower: col("lowerband"),
    rsi: col("rsi_14"),
  };
}

async function loadChart(signal: AbortSignal): Promise<void> {
  const generation = ++chartGeneration;
  const symbol = selected;
  const iv = interval;
  showSelection();
  chartQueue = [];
  chartNote.textContent = "loading…";
  chartModule ??= import("./chart");
  const c = client;
  const stale = () => signal.aborted || generation !== chartGeneration;

  let failure = "";
  const failed = (what: string) => (message: string) => {
    failure = `${what}: ${message}`;
  };
  const page = await retrying(
    () =>
      c.query.getCandles(
        { symbol, interval: wireInterval(iv), pageSize: HISTORY_BARS, order: SortOrder.DESCENDING },
        { timeoutMs: 30_000, signal },
      ),
    signal,
    failed("bars"),
  );
  if (stale()) return;
  const bars: ChartBar[] = (page?.candles ?? [])
    .map((k) => ({ time: Number(k.openTimeUs) / 1_000_000, open: k.open, high: k.high, low: k.low, close: k.close }))
    .reverse();
  const first = bars[0];
  const start = first === undefined ? undefined : new Date(first.time * 1000);
  // Indicators and signals load while the candles are drawn.
  const frameCall =
    first === undefined
      ? Promise.resolve(undefined)
      : retrying(() => c.indicators(symbol, iv, INDICATORS, { start }), signal, failed("indicators"));
  const signalsCall =
    first === undefined
      ? Promise.resolve([])
      : retrying(
          () => c.signals({ symbols: [symbol], actions: ["buy", "sell"], start, limit: HISTORY_BARS }),
          signal,
          failed("signals"),
        );
  const mod = await chartModule;
  if (stale()) return;
  view ??= mod.createChartView(chartEl);
  const v = view;
  v.load(bars, iv !== "1d");
  const queued = chartQueue ?? [];
  chartQueue = undefined;
  for (const apply of queued) apply(v);
  hooks.bars = v.bars();
  if (hooks.chartReadyAt === 0) hooks.chartReadyAt = performance.now();
  const noBars = `No ${iv} bars of ${symbol} yet; live trades will draw them.`;
  const count = `${bars.length} ${bars.length === 1 ? "bar" : "bars"}`;
  chartNote.textContent = bars.length === 0 ? (failure ? `${noBars} (${failure})` : noBars) : count;
  if (bars.length === 0) return;

  const [frame, signals] = await Promise.all([frameCall, signalsCall]);
  if (stale()) return;
  if (frame !== undefined) v.indicators(indicatorValues(frame));
  const markers: ChartMarker[] = (signals ?? [])
    .filter((s) => s.interval === iv && (s.action === "buy" || s.action === "sell"))
    .map((s) => ({ time: s.time.getTime() / 1000, action: s.action as "buy" | "sell", strategy: s.strategy }));
  v.markers(markers);
  const parts = [count];
  if (frame !== undefined) parts.push("SMA(20), Bollinger(20, 2), RSI(14)");
  parts.push(`${markers.length} buy/sell signals`);
  if (failure) parts.push(failure);
  chartNote.textContent = parts.join(" · ");
}

let indicatorTimer: ReturnType<typeof setTimeout> | undefined;

// After a closed candle: the indicators of the last bars again (once a second at most), from
// 300 bars back so that RSI's smoothing has settled where the values are merged in.
function refreshIndicatorsSoon(): void {
  if (indicatorTimer !== undefined) return;
  indicatorTimer = setTimeout(() => {
    indicatorTimer = undefined;
    const v = view;
    if (v === undefined || chartQueue !== undefined) return;
    const from = v.barTime(300);
    if (from === undefined) return;
    const symbol = selected;
    const iv = interval;
    const generation = chartGeneration;
    const signal = session.signal;
    client
      .indicators(symbol, iv, INDICATORS, { start: new Date(from * 1000) })
      .then((frame) => {
        if (!signal.aborted && generation === chartGeneration) v.indicators(indicatorValues(frame));
      })
      .catch(() => {
        // The next closed candle tries again.
      });
  }, 1000);
}

// -- the mesh panel (lazy chunk) --------------------------------------------------------------------

async function startMesh(signal: AbortSignal): Promise<void> {
  // After the first view has its data in flight: the panel is not needed to paint it.
  await sleep(300, signal);
  if (signal.aborted) return;
  const mesh = await import("./mesh");
  mesh.startMesh({
    root: meshEl,
    client,
    interceptors,
    signal,
    onUnauthenticated: needKey,
  });
}

showSelection();
start();
