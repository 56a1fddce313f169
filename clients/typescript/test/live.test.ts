// @tickmesh/client against a live mesh: services/tickmesh/tests/it/sdk_typescript.rs starts
// `tickmesh up` and runs `npm test` with the addresses in TICKMESH_QUERY / TICKMESH_INGESTION /
// TICKMESH_COMPUTATION, the GOOG daily CSV of the `backtesting` package in GOOG_CSV and
// TA-Lib's values on its closes (services/tickmesh/tests/it/talib_goog.py) in TALIB_JSON and
// pandas' weekly and monthly bars of it (pandas_goog_resampled.py there) in RESAMPLED_JSON.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { after, before, describe, test } from "node:test";

import {
  InvalidArgument,
  NotFound,
  Unavailable,
  connect,
  serviceConfig,
  type Bar,
  type Interceptor,
  type MarketEvent,
  type TickmeshClient,
} from "@tickmesh/client/node";

function env(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run this through cargo test (sdk_typescript)`);
  return value;
}

/** The CSV as a user reads it: dates at midnight UTC, numbers as numbers. */
function readGoog(): Bar[] {
  const [, ...lines] = readFileSync(env("GOOG_CSV"), "utf8").trim().split(/\r?\n/);
  return lines.map((line) => {
    const [date, open, high, low, close, volume] = line.split(",");
    const time = new Date(`${date}T00:00:00Z`);
    return {
      time,
      timeUs: time.getTime() * 1000,
      open: Number(open),
      high: Number(high),
      low: Number(low),
      close: Number(close),
      volume: Number(volume),
    };
  });
}

const DAY_MS = 86_400_000;

function close(a: number | null, b: number, what: string): void {
  if (a === null) {
    assert.ok(Number.isNaN(b), `${what}: TA-Lib has no value, the client ${b}`);
  } else {
    assert.ok(Math.abs(a - b) <= 1e-9 * Math.max(1, Math.abs(a)), `${what}: TA-Lib ${a}, the client ${b}`);
  }
}

describe("@tickmesh/client against tickmesh up", () => {
  let client: TickmeshClient;
  const goog = readGoog();

  before(async () => {
    client = connect(env("TICKMESH_QUERY"), {
      ingestion: env("TICKMESH_INGESTION"),
      computation: env("TICKMESH_COMPUTATION"),
    });
    // Batches of 500: the 2,148 bars take 5 calls, so batching and row offsets are exercised.
    const summary = await client.ingestCandles(goog, "GOOG", "1d", { batchRows: 500 });
    assert.equal(summary.stored, goog.length);
    assert.equal(summary.batches, Math.ceil(goog.length / 500));
    assert.deepEqual([summary.rejectedCount, summary.rejected], [0, []]);
  });

  after(() => client.close());

  test("GOOG's daily bars come back equal to the CSV, as an array, an iterator and columns", async () => {
    // Pages of 300 rows: paging is the client's job, every row must come back once.
    const bars = await client.candles("GOOG", "1d", { pageSize: 300 });
    assert.deepEqual(bars, goog);
    assert.deepEqual(await client.candles("GOOG", "1d"), goog);
    let n = 0;
    for await (const bar of client.iterCandles("GOOG", "1d", { pageSize: 1000 })) {
      assert.deepEqual(bar, goog[n++]);
    }
    assert.equal(n, goog.length);
    const columns = await client.candleColumns("GOOG", "1d", { pageSize: 700 });
    assert.deepEqual(Array.from(columns.time), goog.map((b) => b.time.getTime()));
    assert.deepEqual(Array.from(columns.close), goog.map((b) => b.close));
    assert.deepEqual(Array.from(columns.volume), goog.map((b) => b.volume));
  });

  test("a range takes Dates, ISO strings and epoch milliseconds", async () => {
    const want = goog.filter((b) => b.time >= new Date("2010-01-01T00:00:00Z") && b.time < new Date("2011-01-01T00:00:00Z"));
    assert.ok(want.length > 200);
    assert.deepEqual(await client.candles("GOOG", "1d", { start: "2010-01-01", end: new Date("2011-01-01T00:00:00Z") }), want);
    assert.deepEqual(await client.candles("GOOG", "1d", { start: Date.UTC(2010, 0, 1), end: "2011-01-01T00:00:00" }), want);
    assert.deepEqual(await client.candles("GOOG", "1d", { start: "2030-01-01" }), []);
  });

  test("bar sizes not stored are resampled by the mesh, equal to pandas", async () => {
    const pandas = JSON.parse(readFileSync(env("RESAMPLED_JSON"), "utf8")) as Record<string, number[][]>;
    for (const bar of ["1w", "1mo"]) {
      const want = pandas[bar]!.map(([ms, open, high, low, close, volume]) => ({
        time: new Date(ms!),
        timeUs: ms! * 1000,
        open,
        high,
        low,
        close,
        volume,
      }));
      assert.ok(want.length > 100);
      assert.deepEqual(await client.candles("GOOG", bar), want, bar);
    }
    const weekly = await client.candles("GOOG", "1w", { start: "2010-01-04", end: "2011-01-03" });
    assert.deepEqual([weekly[0]!.time, weekly.length], [new Date("2010-01-04T00:00:00Z"), 52]);
    const rsi = await client.indicators("GOOG", "1w", { rsi: 14 });
    assert.deepEqual(Object.keys(rsi.columns), ["rsi_14"]);
    assert.equal(rsi.time.length, pandas["1w"]!.length);
    await assert.rejects(client.candles("GOOG", "7y"), RangeError);
  });

  test("the same bars again count as duplicates", async () => {
    const again = await client.ingestCandles(goog.slice(0, 700), "GOOG", "1d");
    assert.deepEqual([again.stored, again.duplicates, again.rejectedCount], [0, 700, 0]);
  });

  test("rejected rows are reported with their position in the array", async () => {
    const bars = Array.from({ length: 6 }, (_, i) => ({
      time: new Date(Date.UTC(2020, 0, 1) + i * DAY_MS),
      open: i === 4 ? Number.NaN : 10,
      high: 11,
      low: 9,
      close: 10.5,
      volume: 100,
    }));
    const progress: number[] = [];
    const summary = await client.ingestCandles(bars, "REJ", "1d", { batchRows: 3, onProgress: (done) => progress.push(done) });
    assert.deepEqual([summary.stored, summary.rejectedCount], [5, 1]);
    assert.deepEqual(summary.rejected.map((r) => [r.row, r.field]), [[4, "open"]]);
    assert.deepEqual(progress, [3, 6]);
  });

  test("latest prices: the close of the newest bar, at its end; missing symbols listed", async () => {
    const prices = await client.latestPrices(["GOOG", "NODATA"]);
    const last = goog[goog.length - 1]!;
    assert.deepEqual(prices.prices, [{ symbol: "GOOG", price: last.close, time: new Date(last.time.getTime() + DAY_MS) }]);
    assert.deepEqual(prices.missingSymbols, ["NODATA"]);
  });

  test("indicators equal TA-Lib's, named like TA-Lib's outputs, then come from the cache", async () => {
    const talib = JSON.parse(readFileSync(env("TALIB_JSON"), "utf8")) as Record<string, (number | null)[]>;
    const asked = { rsi: 14, macd: [12, 26, 9], sma_20: null };
    const got = await client.indicators("GOOG", "1d", asked);
    assert.deepEqual(Object.keys(got.columns), ["rsi_14", "macd", "macdsignal", "macdhist", "sma_20"]);
    assert.deepEqual(got.time, goog.map((b) => b.time));
    const pairs: [string, string][] = [
      ["rsi_14", "rsi_14"],
      ["macd", "macd"],
      ["macdsignal", "macd_signal"],
      ["macdhist", "macd_hist"],
      ["sma_20", "sma_20"],
    ];
    for (const [column, reference] of pairs) {
      const want = talib[reference]!;
      assert.equal(want.length, goog.length);
      want.forEach((v, i) => close(v, got.columns[column]![i]!, `${column}[${i}]`));
    }
    const again = await client.indicators("GOOG", "1d", asked);
    assert.equal(again.cacheHit, true);
    assert.deepEqual(again.columns, got.columns);
  });

  test("a bad symbol is InvalidArgument naming the field; an unknown interval a RangeError", async () => {
    await assert.rejects(client.candles("not a symbol!", "1d"), (e: unknown) => {
      assert.ok(e instanceof InvalidArgument, String(e));
      assert.deepEqual(e.fields, ["symbol"]);
      assert.ok(e.fieldViolations[0]!.description.length > 0);
      return true;
    });
    await assert.rejects(client.latestPrices(["GOOG", "bad symbol"]), (e: unknown) => {
      assert.ok(e instanceof InvalidArgument, String(e));
      assert.deepEqual(e.fields, ["symbols[1]"]);
      return true;
    });
    await assert.rejects(client.candles("GOOG", "1x"), /unknown interval/);
  });

  test("an unreachable service is Unavailable after the service config's five attempts", async () => {
    // Port 1 on loopback: nothing listens. The counting interceptor runs inside the retries.
    let attempts = 0;
    const count: Interceptor = (next) => (req) => {
      attempts++;
      return next(req);
    };
    const down = connect("127.0.0.1:1", { ingestion: "127.0.0.1:1", computation: "127.0.0.1:1", interceptors: [count] });
    try {
      await assert.rejects(down.candles("GOOG", "1d"), Unavailable);
      assert.equal(attempts, 5);
      // A stream is not retried by the interceptor (stream() resumes by itself).
      attempts = 0;
      await assert.rejects(down.stream(["GOOG"], { reconnectForMs: 0 }).next(), Unavailable);
      assert.ok(attempts >= 1);
    } finally {
      down.close();
    }
  });

  test("health and the running config, as every port serves them", async () => {
    assert.equal(await client.health(), "SERVING");
    assert.equal(await client.health("tickmesh.v1.QueryService"), "SERVING");
    await assert.rejects(client.health("no.such.Service"), NotFound);
    const config = await client.config();
    const threshold = config.circuitBreaker?.failureThreshold ?? 0;
    assert.ok(threshold >= 1, `circuit breaker failure threshold ${threshold}`);
  });

  test("the shipped service config is clients/service_config.json", () => {
    const shipped = JSON.parse(readFileSync(new URL("../../service_config.json", import.meta.url), "utf8"));
    assert.deepEqual(serviceConfig, shipped);
    const names = serviceConfig.methodConfig[0]!.name.map((n) => `${n.service}/${n.method}`);
    assert.ok(names.includes("tickmesh.v1.QueryService/ExportCandles"));
    assert.ok(!names.includes("tickmesh.v1.QueryService/StreamMarketData"));
  });

  test("a stream replays stored candles, then goes live", async () => {
    const tail = goog.slice(-3);
    await client.ingestCandles(tail, "STRM", "1d");
    const events = client.stream(["STRM"], { kinds: ["candle"], resumeFrom: tail[0]!.time });
    const got: MarketEvent[] = [];
    for (let i = 0; i < 3; i++) got.push((await events.next()).value as MarketEvent);
    assert.deepEqual(got.map((e) => e.time), tail.map((b) => b.time));
    assert.ok(got.every((e) => e.historical && e.kind === "candle" && e.symbol === "STRM"));
    const newTime = new Date(tail[2]!.time.getTime() + DAY_MS);
    await client.ingestCandles([{ time: newTime, open: 1, high: 2, low: 0.5, close: 1.5, volume: 10 }], "STRM", "1d");
    const live = (await events.next()).value as MarketEvent;
    assert.deepEqual([live.time, live.historical, live.kind], [newTime, false, "candle"]);
    assert.equal(live.kind === "candle" && live.payload.close, 1.5);
    await events.return(undefined);
  });

  test("signals from the ingested bars, newest first", async () => {
    // The computation service makes them from the bus after the candles were committed: poll.
    const deadline = Date.now() + 20_000;
    let signals = await client.signals({ symbols: ["GOOG"], limit: 5 });
    while (signals.length === 0) {
      assert.ok(Date.now() < deadline, "no signal for GOOG in 20 s");
      await new Promise((r) => setTimeout(r, 100));
      signals = await client.signals({ symbols: ["GOOG"], limit: 5 });
    }
    assert.ok(signals.length >= 1 && signals.length <= 5);
    for (let i = 1; i < signals.length; i++) assert.ok(signals[i - 1]!.time >= signals[i]!.time);
    for (const s of signals) {
      assert.deepEqual([s.symbol, s.interval], ["GOOG", "1d"]);
      assert.ok(["buy", "sell", "hold"].includes(s.action), s.action);
      assert.ok(s.confidence >= 0 && s.confidence <= 1);
    }
  });

  test("ticks in batches, then the latest price is the last trade", async () => {
    const ticks = [
      { time: "2024-01-02T14:30:00Z", price: 101.5, size: 10, side: "buy" as const },
      { time: "2024-01-02T14:30:01Z", price: 101.6, size: 3, side: "sell" as const },
      { time: "2024-01-02T14:30:02Z", price: 101.4, size: 1 },
    ];
    const first = await client.ingestTicks(ticks, "TCK", { batchRows: 2 });
    assert.deepEqual([first.stored, first.duplicates, first.batches], [3, 0, 2]);
    const again = await client.ingestTicks(ticks, "TCK");
    assert.deepEqual([again.stored, again.duplicates], [0, 3]);
    const prices = await client.latestPrices(["TCK"]);
    assert.deepEqual(prices.prices, [{ symbol: "TCK", price: 101.4, time: new Date("2024-01-02T14:30:02Z") }]);
  });

  test("portfolio weights sum to one", async () => {
    // A second asset: GOOG's bars times a seeded walk (not collinear with GOOG).
    let seed = 7;
    let level = 1;
    const other = goog.map((b) => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      level *= 1 + (seed / 2 ** 31 - 0.5) * 0.02;
      return { ...b, open: b.open * level, high: b.high * level, low: b.low * level, close: b.close * level };
    });
    await client.ingestCandles(other, "PF2", "1d");
    const p = await client.optimizePortfolio(["GOOG", "PF2"], { objective: "min_variance", lookbackBars: 250 });
    assert.deepEqual(Object.keys(p.weights), ["GOOG", "PF2"]);
    const sum = Object.values(p.weights).reduce((a, b) => a + b, 0);
    assert.ok(Math.abs(sum - 1) < 1e-9, String(sum));
    assert.ok(Object.values(p.weights).every((w) => w >= 0 && w <= 1));
    assert.equal(p.observations, 250);
  });
});
