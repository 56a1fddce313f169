#!/usr/bin/env node
// Browser test of the dashboard against a running mesh (headless Chromium via playwright-core).
//
//   node web/test/dashboard.mjs                  # the load / live / latency checks
//   node web/test/dashboard.mjs --restart-phase  # survives a restart of the mesh, driven by you
//
// Environment:
//   TICKMESH_WEB        the dashboard's origin, "http://127.0.0.1:PORT" (required)
//   TICKMESH_INGESTION  "127.0.0.1:PORT" of the ingestion service, for the test's ticks (required)
//   TICKMESH_QUERY      "127.0.0.1:PORT" of the query service (optional: the Node client wants one,
//                       the test only ingests; default: the ingestion address)
//   TICKMESH_API_KEY    when auth is on: a key with read and write scopes, for the page (put in
//                       its sessionStorage, as its key form does) and for ingesting (optional)
//   SCREENSHOT          where the PNG goes (default /tmp/tickmesh-dashboard.png)
//   CHROMIUM            the browser (default /usr/bin/chromium)
//   SYMBOL              the symbol the page shows and the test trades (default GOOG; it must have
//                       1d bars already, e.g. GOOG's daily CSV replayed)
//   TICKS               ticks ingested one by one for the latency figures (default 100)
//   PAGE_QUERY          extra query string for the page (default "symbols=$SYMBOL")
//   AUTH_FORM           "1": open the page without a key, expect its key form, type
//                       TICKMESH_API_KEY into it (auth on); then the default checks
//
// Output: JSON lines on stdout; the last one has every figure and "ok". Exit 0 when every check
// passed, 1 otherwise (the last line then has "ok": false and "error"). Progress goes to stderr.
//
// Default mode: opens the page, fails on any console error or page error, prints the paint
// timings ({"paint": {fcpMs, lcpMs, ...}}), checks `#chart canvas` exists, window.__tickmesh.bars
// > 0 and `#prices [data-symbol=SYMBOL] .price` is a number; ingests TICKS ticks one at a time
// (gRPC, @tickmesh/client/node) and for each waits until the page has rendered its trade id
// (window.__tickmesh.rendered), latency = rendered.at - Date.now() taken just before the ingest
// call ({"latency": {p50Ms, p99Ms, ...}}); writes the screenshot; checks the chart's canvases
// and the chart's box in the screenshot file (decoded again in a page of its own) are not
// blank (distinct colours); prints the final line.
//
// --restart-phase: the same load checks, then 10 ticks rendered, then it prints {"ready":true}
// and waits for one line on stdin. On {"ready":true} the driver kills the mesh (SIGTERM or
// SIGKILL), starts it again on the same ports (fixed --base-port and --web-addr: the page keeps
// its origin, the test its ingestion address) on the same store, waits for its ready file, and
// writes any line to the test's stdin. The test then ingests 20 ticks at once (some land before the page
// has resubscribed), waits for #status to say "live" again, and checks: the page showed
// "reconnecting" after {"ready":true} and "live" after it, and every tick of before and after is
// rendered exactly once (none missed, none twice). Console errors after {"ready":true} that are
// failed requests (net::ERR_*, "Failed to load resource") are expected while the mesh is down
// and ignored; any other console error fails the test.
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";

import { chromium } from "playwright-core";
import { connect } from "@tickmesh/client/node";

const restartPhase = process.argv.includes("--restart-phase");
const WEB = (process.env.TICKMESH_WEB ?? "").replace(/\/+$/, "");
const INGESTION = process.env.TICKMESH_INGESTION ?? "";
const QUERY = process.env.TICKMESH_QUERY || INGESTION;
const API_KEY = process.env.TICKMESH_API_KEY || undefined;
const SCREENSHOT = process.env.SCREENSHOT || "/tmp/tickmesh-dashboard.png";
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const SYMBOL = process.env.SYMBOL || "GOOG";
const TICKS = Number(process.env.TICKS || 100);
const PAGE_QUERY = process.env.PAGE_QUERY ?? `symbols=${encodeURIComponent(SYMBOL)}`;
// AUTH_FORM=1 (with TICKMESH_API_KEY): the page is opened without a key and must ask for one;
// the test types the key into its form, as a user does.
const AUTH_FORM = process.env.AUTH_FORM === "1";
const LOAD_TIMEOUT_MS = 60_000;
const TICK_TIMEOUT_MS = 15_000;

const figures = { mode: restartPhase ? "restart" : "default" };
const out = (line) => process.stdout.write(`${JSON.stringify(line)}\n`);
const log = (...parts) => process.stderr.write(`dashboard: ${parts.join(" ")}\n`);

class Failure extends Error {}
function check(condition, message) {
  if (!condition) throw new Failure(message);
}

function percentile(sorted, p) {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))];
}

function summary(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const mean = sorted.reduce((a, b) => a + b, 0) / (sorted.length || 1);
  return {
    n: sorted.length,
    p50Ms: percentile(sorted, 0.5),
    p99Ms: percentile(sorted, 0.99),
    minMs: sorted[0] ?? null,
    maxMs: sorted[sorted.length - 1] ?? null,
    meanMs: Number(mean.toFixed(2)),
  };
}

const consoleErrors = [];
let ignoreFailedRequests = false;
const FAILED_REQUEST = /net::ERR_|Failed to load resource/;

async function main() {
  check(WEB.startsWith("http"), "TICKMESH_WEB must be the dashboard's origin, e.g. http://127.0.0.1:7400");
  check(INGESTION !== "", "TICKMESH_INGESTION must be the ingestion service's host:port");

  const userDataDir = mkdtempSync(join(tmpdir(), "tickmesh-chromium-"));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
    viewport: { width: 1400, height: 900 },
  });
  let client;
  try {
    if (API_KEY && !AUTH_FORM) {
      // What the page's key form would store (sessionStorage of this tab), before its scripts run.
      await context.addInitScript((key) => sessionStorage.setItem("tickmesh.apiKey", key), API_KEY);
    }
    const page = context.pages()[0] ?? (await context.newPage());
    page.on("console", (message) => {
      if (message.type() !== "error") return;
      const text = message.text();
      if (ignoreFailedRequests && FAILED_REQUEST.test(text)) return;
      consoleErrors.push(text);
      log("console error:", text);
    });
    page.on("pageerror", (error) => {
      consoleErrors.push(`page error: ${error.message}`);
      log("page error:", error.message);
    });

    // -- load --------------------------------------------------------------------------------
    const url = `${WEB}/${PAGE_QUERY ? `?${PAGE_QUERY}` : ""}`;
    log("opening", url);
    const opened = Date.now();
    await page.goto(url, { waitUntil: "load", timeout: LOAD_TIMEOUT_MS });
    if (AUTH_FORM) {
      check(API_KEY, "AUTH_FORM=1 needs TICKMESH_API_KEY");
      // UNAUTHENTICATED: the form shows, nothing is charted yet; the key typed in connects.
      await page.waitForSelector("#auth:not([hidden])", { timeout: LOAD_TIMEOUT_MS });
      const before = await page.evaluate(() => window.__tickmesh?.bars ?? 0);
      check(before === 0, `bars on the chart before a key was given: ${before}`);
      await page.fill("#api-key", API_KEY);
      await page.click('#auth button[type="submit"]');
      const stored = await page.evaluate(() => sessionStorage.getItem("tickmesh.apiKey"));
      check(stored === API_KEY, "the key is kept in the tab's sessionStorage");
      figures.authForm = "shown, key accepted";
    }
    await page.waitForFunction(() => window.__tickmesh && window.__tickmesh.bars > 0, null, { timeout: LOAD_TIMEOUT_MS });
    const priceSelector = `#prices [data-symbol="${SYMBOL}"] .price`;
    await page.waitForFunction(
      (selector) => {
        const text = document.querySelector(selector)?.textContent ?? "";
        return /^-?\d+(\.\d+)?$/.test(text.trim());
      },
      priceSelector,
      { timeout: LOAD_TIMEOUT_MS },
    );
    figures.loadedMs = Date.now() - opened;
    const paint = await page.evaluate(async () => {
      const entry = (name) => performance.getEntriesByType("paint").find((e) => e.name === name)?.startTime ?? null;
      const lcp = await new Promise((resolve) => {
        let last = null;
        try {
          new PerformanceObserver((list) => {
            const entries = list.getEntries();
            if (entries.length > 0) last = entries[entries.length - 1].startTime;
          }).observe({ type: "largest-contentful-paint", buffered: true });
        } catch {
          // No LCP in this browser.
        }
        setTimeout(() => resolve(last), 250);
      });
      const nav = performance.getEntriesByType("navigation")[0];
      return {
        fcpMs: entry("first-contentful-paint"),
        fpMs: entry("first-paint"),
        lcpMs: lcp,
        domContentLoadedMs: nav ? nav.domContentLoadedEventEnd : null,
        loadMs: nav ? nav.loadEventEnd : null,
        chartReadyMs: window.__tickmesh.chartReadyAt || null,
      };
    });
    for (const key of Object.keys(paint)) if (typeof paint[key] === "number") paint[key] = Number(paint[key].toFixed(1));
    figures.paint = paint;
    out({ paint });

    check((await page.locator("#chart canvas").count()) > 0, "no canvas in #chart");
    const state = await page.evaluate(() => ({ bars: window.__tickmesh.bars, connected: window.__tickmesh.connected }));
    figures.bars = state.bars;
    check(state.bars > 0, `the chart has ${state.bars} bars`);
    const priceText = (await page.locator(priceSelector).textContent()).trim();
    figures.price = Number(priceText);
    check(Number.isFinite(figures.price), `${priceSelector} shows ${JSON.stringify(priceText)}`);
    await page.waitForFunction(() => window.__tickmesh.connected, null, { timeout: LOAD_TIMEOUT_MS });
    figures.status = (await page.locator("#status").textContent()).trim();
    check(/live/.test(figures.status), `#status says ${JSON.stringify(figures.status)}`);
    log(`loaded: ${figures.bars} bars, ${SYMBOL} ${figures.price}, fcp ${paint.fcpMs} ms, lcp ${paint.lcpMs} ms`);

    // -- live ticks --------------------------------------------------------------------------
    const newClient = () => connect(QUERY, { ingestion: INGESTION, computation: QUERY, apiKey: API_KEY });
    client = newClient();
    const runId = `${process.pid}-${Date.now()}`;
    let price = figures.price;
    let seq = 0;
    const nextTick = () => {
      price = Math.max(0.01, Number((price * (1 + (Math.random() - 0.5) * 0.002)).toFixed(2)));
      return { time: Date.now(), price, size: 1 + (seq % 5), tradeId: `dash-${runId}-${seq++}` };
    };
    const waitRendered = (tradeId) =>
      page.waitForFunction(
        (id) => window.__tickmesh.rendered.find((r) => r.tradeId === id)?.at ?? false,
        tradeId,
        { timeout: TICK_TIMEOUT_MS, polling: 5 },
      );
    async function tickAndWait() {
      const tick = nextTick();
      const before = Date.now();
      tick.time = before;
      await client.ingestTicks([tick], SYMBOL);
      const at = await (await waitRendered(tick.tradeId)).jsonValue();
      return { tradeId: tick.tradeId, latencyMs: at - before, before };
    }

    if (!restartPhase) {
      // The baseline, in the same run: the same ticks to a Node subscriber of the same stream
      // (@tickmesh/client over gRPC), so the figure above it is what the browser, gRPC-Web and
      // the page's rendering add.
      const received = new Map();
      const stop = new AbortController();
      const subscriber = newClient();
      const following = (async () => {
        try {
          for await (const e of subscriber.stream([SYMBOL], { kinds: ["tick"], signal: stop.signal })) {
            if (e.kind === "tick") received.set(e.payload.tradeId, Date.now());
          }
        } catch {
          // Ended by the abort below.
        }
      })();
      await new Promise((resolve) => setTimeout(resolve, 500));
      const latencies = [];
      const sent = [];
      for (let i = 0; i < TICKS; i++) {
        const { latencyMs, tradeId, before } = await tickAndWait();
        latencies.push(latencyMs);
        sent.push({ tradeId, before });
      }
      // The page may render the last tick before the subscriber has it: wait for it (a tick
      // that never comes still fails below).
      const waitUntil = Date.now() + TICK_TIMEOUT_MS;
      while (sent.some((t) => !received.has(t.tradeId)) && Date.now() < waitUntil) {
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      const baseline = sent.filter((t) => received.has(t.tradeId)).map((t) => received.get(t.tradeId) - t.before);
      stop.abort();
      await following;
      subscriber.close();
      figures.latency = summary(latencies);
      figures.nodeSubscriberLatency = summary(baseline);
      check(baseline.length === TICKS, `the Node subscriber got ${baseline.length} of ${TICKS} ticks`);
      out({ latency: figures.latency, nodeSubscriberLatency: figures.nodeSubscriberLatency });
      log(`ingest-to-screen over ${TICKS} ticks: p50 ${figures.latency.p50Ms} ms, p99 ${figures.latency.p99Ms} ms`);
      const shown = Number((await page.locator(priceSelector).textContent()).trim());
      check(Math.abs(shown - price) < 0.005, `the price shows ${shown}, the last tick was ${price}`);
    } else {
      const before = [];
      for (let i = 0; i < 10; i++) before.push((await tickAndWait()).tradeId);
      ignoreFailedRequests = true;
      const readyAt = Date.now();
      out({ ready: true });
      await new Promise((resolve) => {
        const lines = createInterface({ input: process.stdin });
        lines.once("line", () => {
          lines.close();
          resolve();
        });
        lines.once("close", resolve);
      });
      log("restarted; ingesting");
      client.close();
      client = newClient();
      const after = [];
      const burst = [];
      for (let i = 0; i < 20; i++) burst.push(nextTick());
      // One call per tick, at once: some are stored before the page has resubscribed.
      const ingestStart = Date.now();
      for (;;) {
        try {
          await Promise.all(burst.map((t) => client.ingestTicks([t], SYMBOL)));
          break;
        } catch (error) {
          // The mesh may still be starting: the ticks are idempotent, send them again.
          check(Date.now() - ingestStart < LOAD_TIMEOUT_MS, `cannot ingest after the restart: ${error}`);
          await new Promise((r) => setTimeout(r, 250));
        }
      }
      after.push(...burst.map((t) => t.tradeId));
      await page.waitForFunction(() => window.__tickmesh.connected, null, { timeout: LOAD_TIMEOUT_MS });
      await page.waitForFunction(
        (ids) => ids.every((id) => window.__tickmesh.rendered.some((r) => r.tradeId === id)),
        after,
        { timeout: LOAD_TIMEOUT_MS, polling: 50 },
      );
      const result = await page.evaluate(
        ({ ids, since }) => {
          const hooks = window.__tickmesh;
          const counts = Object.fromEntries(ids.map((id) => [id, 0]));
          for (const r of hooks.rendered) if (r.tradeId in counts) counts[r.tradeId]++;
          const log = hooks.statusLog.filter((s) => s.at >= since);
          const down = log.find((s) => s.status === "reconnecting");
          const up = down && log.find((s) => s.status === "live" && s.at >= down.at);
          return {
            missing: ids.filter((id) => counts[id] === 0),
            twice: ids.filter((id) => counts[id] > 1),
            statusLog: log.map((s) => `${s.status}@${s.at - since}`),
            sawReconnecting: Boolean(down),
            liveAgain: Boolean(up),
            outageMs: down && up ? up.at - down.at : null,
            duplicatesDropped: hooks.duplicates,
            status: document.getElementById("status").textContent,
          };
        },
        { ids: [...before, ...after], since: readyAt },
      );
      Object.assign(figures, { restart: result });
      check(result.sawReconnecting, `#status never said reconnecting after the restart (${result.statusLog.join(", ")})`);
      check(result.liveAgain && /live/.test(result.status), `#status did not come back to live (${result.status})`);
      check(result.missing.length === 0, `ticks never rendered: ${result.missing.join(", ")}`);
      check(result.twice.length === 0, `ticks rendered twice: ${result.twice.join(", ")}`);
      const { latencyMs } = await tickAndWait();
      figures.afterRestartLatencyMs = latencyMs;
      log(`restart: outage shown for ${result.outageMs} ms, ${before.length + after.length} ticks each rendered once`);
    }

    // -- screenshot, chart pixels -------------------------------------------------------------
    await page.waitForTimeout(300);
    await page.screenshot({ path: SCREENSHOT, fullPage: false });
    figures.screenshot = SCREENSHOT;
    const pixels = await page.evaluate(() => {
      const colours = new Set();
      let canvases = 0;
      let area = 0;
      for (const canvas of document.querySelectorAll("#chart canvas")) {
        if (canvas.width === 0 || canvas.height === 0) continue;
        const ctx = canvas.getContext("2d");
        if (!ctx) continue;
        canvases++;
        area += canvas.width * canvas.height;
        const { data } = ctx.getImageData(0, 0, canvas.width, canvas.height);
        for (let i = 0; i < data.length; i += 4) {
          if (data[i + 3] === 0) continue;
          colours.add((data[i] << 16) | (data[i + 1] << 8) | data[i + 2]);
        }
      }
      const rect = document.getElementById("chart").getBoundingClientRect();
      return { canvases, area, distinctColours: colours.size, width: rect.width, height: rect.height };
    });
    figures.chartPixels = pixels;
    check(pixels.distinctColours > 20, `the chart looks blank: ${pixels.distinctColours} distinct colours`);
    // The screenshot file itself: decoded by the browser in a page of its own, the chart's box
    // counted (the file a user would look at, not only the live canvases).
    const box = await page.locator("#chart").boundingBox();
    const png = readFileSync(SCREENSHOT).toString("base64");
    const viewer = await context.newPage();
    const shot = await viewer.evaluate(async ({ png, box }) => {
      const image = new Image();
      image.src = `data:image/png;base64,${png}`;
      await image.decode();
      const canvas = document.createElement("canvas");
      canvas.width = Math.round(box.width);
      canvas.height = Math.round(box.height);
      const ctx = canvas.getContext("2d");
      ctx.drawImage(image, box.x, box.y, box.width, box.height, 0, 0, canvas.width, canvas.height);
      const { data } = ctx.getImageData(0, 0, canvas.width, canvas.height);
      const colours = new Set();
      for (let i = 0; i < data.length; i += 4) colours.add((data[i] << 16) | (data[i + 1] << 8) | data[i + 2]);
      return { width: image.naturalWidth, height: image.naturalHeight, chartDistinctColours: colours.size };
    }, { png, box });
    await viewer.close();
    figures.screenshotPixels = shot;
    check(shot.chartDistinctColours > 20, `the screenshot's chart looks blank: ${shot.chartDistinctColours} distinct colours`);
    const final = await page.evaluate(() => ({ bars: window.__tickmesh.bars, events: window.__tickmesh.events }));
    figures.barsAtEnd = final.bars;
    figures.events = final.events;
    figures.mesh = (await page.locator("#mesh").innerText()).replace(/\s+/g, " ").trim();
    check(consoleErrors.length === 0, `console errors: ${consoleErrors.join(" | ")}`);
  } finally {
    client?.close();
    await context.close().catch(() => {});
    rmSync(userDataDir, { recursive: true, force: true });
  }
}

try {
  await main();
  out({ ok: true, ...figures, consoleErrors });
  process.exit(0);
} catch (error) {
  const message = error instanceof Failure ? error.message : String(error?.stack ?? error);
  log("FAILED:", message);
  out({ ok: false, error: message, ...figures, consoleErrors });
  process.exit(1);
}
