#!/usr/bin/env node
// The TypeScript client's rows/s: 100,000 minute bars from a `tickmesh up` into JavaScript, two
// ways, against the Python client on the same mesh, in the same run:
//
//   (a) `connect(query).candles(symbol, "1m")`        an array of Bar objects
//   (b) `connect(query).candleColumns(symbol, "1m")`  Float64Array columns
//   (c) `tickmesh.Client(query).candles(symbol, "1m")` the Python SDK's DataFrame (the baseline,
//       the figure of benches/sdk_read_sql.py)
//
// Each is timed end to end, from opening the client to the finished result, closing included,
// in alternating rounds (the order rotates every round). (c) runs in one Python process started
// before the rounds, which times each call itself (so its start-up and imports are not counted)
// and waits for the next while Node times its own.
//
//     node benches/ts_candles.mjs [--bars N] [--rounds R]
//
// It runs `tickmesh up` from `$CARGO_TARGET_DIR/release/` (or `target/release/`) on a throwaway
// SQLite store (as benches/report.py's Mesh does), ingests N synthetic minute bars through the
// TypeScript client's `ingestCandles`, waits until the store file stops changing (the mesh makes
// signals from new bars in the background), checks that the three ways give the same rows, and
// prints each way's median time and rows/s, the spread of its rounds, and the ratios of rows/s to
// the Python client's. The SDK is imported from clients/typescript/dist (build it first:
// `npm ci` or `npx tsc -p tsconfig.json` there); Python is `.venv/bin/python` with
// clients/python/src first on its path.
import { execFileSync, spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath, pathToFileURL } from "node:url";
import { parseArgs } from "node:util";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const SDK = join(ROOT, "clients", "typescript", "dist", "node.js");
const SYMBOL = "BENCH";
const MINUTE_MS = 60_000;
const START_MS = 1_599_999_960_000; // a multiple of a minute (benches/sdk_read_sql.py's START_US)

const { values: args } = parseArgs({
  options: { bars: { type: "string", default: "100000" }, rounds: { type: "string", default: "7" } },
});
const BARS = Number(args.bars);
const ROUNDS = Number(args.rounds);

class Failed extends Error {}

function fail(message) {
  throw new Failed(message);
}

function binary() {
  const target = process.env.CARGO_TARGET_DIR ?? join(ROOT, "target");
  const path = join(target, "release", "tickmesh");
  if (!existsSync(path)) fail(`${path} is missing: build it first (cargo build --release -p tickmesh)`);
  return path;
}

function python() {
  const venv = join(ROOT, ".venv", "bin", "python");
  return existsSync(venv) ? venv : "python3";
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** `tickmesh up` on free ports with a throwaway SQLite store (benches/report.py's Mesh). */
async function startMesh(dir) {
  const ready = join(dir, "ready.json");
  const config = join(dir, "bench-config.yaml");
  // The per-caller rate limit far above any load here, as report.py sets it.
  writeFileSync(config, "rate_limits:\n  default_caller:\n    rate_per_second: 1000000000\n    burst: 1000000000\n");
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("TICKMESH_")));
  const log = join(dir, "mesh.log");
  const proc = spawn(
    binary(),
    ["--config", config, "up", "--base-port", "0", "--ready-file", ready, "--store", `sqlite:${join(dir, "mesh.db")}`],
    {
      cwd: dir,
      env: { ...env, TICKMESH_METRICS_ADDR: "127.0.0.1:0", TICKMESH_LOG: "warn", TICKMESH_LOG_FORMAT: "text" },
      stdio: ["ignore", "ignore", "pipe"],
    },
  );
  let stderr = "";
  proc.stderr.on("data", (d) => (stderr += d));
  const deadline = Date.now() + 30_000;
  while (!existsSync(ready)) {
    if (proc.exitCode !== null || Date.now() > deadline) {
      proc.kill("SIGKILL");
      fail(`tickmesh up did not start:\n${stderr}`);
    }
    await sleep(20);
  }
  await sleep(50); // the file is written whole, but give the writer its close
  const addrs = JSON.parse(readFileSync(ready, "utf8"));
  return {
    addrs,
    db: join(dir, "mesh.db"),
    async stop() {
      if (proc.exitCode !== null) return;
      const exited = new Promise((r) => proc.once("exit", r));
      proc.kill("SIGTERM");
      const timer = setTimeout(() => proc.kill("SIGKILL"), 15_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** N minute bars: benches/sdk_read_sql.py's synthetic series. */
function syntheticBars(n) {
  const bars = new Array(n);
  let close = 100;
  for (let k = 0; k < n; k++) {
    close += Math.sin(k * 0.01) * 0.1;
    bars[k] = { time: START_MS + k * MINUTE_MS, open: close - 0.1, high: close + 0.5, low: close - 0.5, close, volume: 1000 + k };
  }
  return bars;
}

function storeFiles(db) {
  return [db, `${db}-wal`].map((f) => (existsSync(f) ? `${statSync(f).mtimeMs}:${statSync(f).size}` : "-")).join(",");
}

/** Waits until the store's files have not changed for `quietMs`; returns the seconds waited. */
async function waitQuiet(db, quietMs = 3000, limitMs = 120_000) {
  const started = Date.now();
  let last = storeFiles(db);
  let since = Date.now();
  while (Date.now() - since < quietMs) {
    if (Date.now() - started > limitMs) fail(`${db} still changing after ${limitMs / 1000} s`);
    await sleep(200);
    const now = storeFiles(db);
    if (now !== last) {
      last = now;
      since = Date.now();
    }
  }
  return (Date.now() - started) / 1000;
}

function compilersRunning() {
  try {
    execFileSync("pgrep", ["-x", "rustc"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

// The Python client, one process for every round: `run` on stdin times one Client.candles and
// prints the seconds and what is needed to check its rows against the TypeScript client's.
const WORKER = `
import json, sys, time
sys.path.insert(0, sys.argv[1])
import tickmesh
query, symbol = sys.argv[2], sys.argv[3]
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    t = time.perf_counter()
    with tickmesh.Client(query) as client:
        df = client.candles(symbol, "1m")
    seconds = time.perf_counter() - t
    n = len(df)
    picks = [0, n // 2, n - 1] if n else []
    print(json.dumps({
        "seconds": seconds,
        "rows": n,
        "time_ms": [int(df.index[i].value // 1_000_000) for i in picks],
        "close": [float(df["close"].iloc[i]) for i in picks],
        "volume": [float(df["volume"].iloc[i]) for i in picks],
    }), flush=True)
`;

function startPython(query) {
  const proc = spawn(python(), ["-c", WORKER, join(ROOT, "clients", "python", "src"), query, SYMBOL], {
    stdio: ["pipe", "pipe", "inherit"],
  });
  const lines = createInterface({ input: proc.stdout });
  const queue = [];
  const waiting = [];
  let exited;
  lines.on("line", (line) => (waiting.length ? waiting.shift().resolve(JSON.parse(line)) : queue.push(line)));
  proc.once("exit", (code) => {
    exited = new Failed(`the Python worker exited (${code})`);
    waiting.splice(0).forEach((w) => w.reject(exited));
  });
  const next = () =>
    new Promise((resolve, reject) => {
      if (queue.length) return resolve(JSON.parse(queue.shift()));
      if (exited) return reject(exited);
      waiting.push({ resolve, reject });
    });
  return {
    ready: next,
    async run() {
      proc.stdin.write("run\n");
      return next();
    },
    stop() {
      proc.stdin.end();
    },
  };
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

async function main() {
  const { connect } = await import(pathToFileURL(SDK).href).catch((e) =>
    fail(`${SDK}: ${e.message} (build the SDK: npx tsc -p tsconfig.json in clients/typescript)`),
  );
  const dir = mkdtempSync(join(tmpdir(), "tickmesh-ts-bench-"));
  const mesh = await startMesh(dir);
  let worker;
  try {
    const query = mesh.addrs.query;
    const writer = connect(query, { ingestion: mesh.addrs.ingestion, computation: mesh.addrs.computation });
    const summary = await writer.ingestCandles(syntheticBars(BARS), SYMBOL, "1m", { batchRows: 10_000 });
    writer.close();
    if (summary.stored !== BARS) fail(`ingest stored ${summary.stored} of ${BARS}: ${JSON.stringify(summary)}`);
    const waited = await waitQuiet(mesh.db);
    worker = startPython(query);
    await worker.ready();

    const peers = { ingestion: mesh.addrs.ingestion, computation: mesh.addrs.computation };
    const ways = {
      bars: async () => {
        const client = connect(query, peers);
        try {
          return await client.candles(SYMBOL, "1m");
        } finally {
          client.close();
        }
      },
      columns: async () => {
        const client = connect(query, peers);
        try {
          return await client.candleColumns(SYMBOL, "1m");
        } finally {
          client.close();
        }
      },
    };

    // The same rows all three ways, before any timing (also warms every path: the server's
    // held candle history, V8's compiled code, the Python imports).
    const bars = await ways.bars();
    const columns = await ways.columns();
    const py = await worker.run();
    if (bars.length !== BARS || columns.close.length !== BARS || py.rows !== BARS) {
      fail(`rows: candles ${bars.length}, candleColumns ${columns.close.length}, Python ${py.rows}, not ${BARS}`);
    }
    for (let i = 0; i < BARS; i++) {
      const b = bars[i];
      if (
        b.time.getTime() !== columns.time[i] || b.close !== columns.close[i] || b.open !== columns.open[i] ||
        b.high !== columns.high[i] || b.low !== columns.low[i] || b.volume !== columns.volume[i] ||
        b.time.getTime() !== START_MS + i * MINUTE_MS
      ) {
        fail(`row ${i}: candles ${JSON.stringify(b)} differs from candleColumns or the ingested bar`);
      }
    }
    const picks = [0, BARS >> 1, BARS - 1];
    const ours = { time_ms: picks.map((i) => bars[i].time.getTime()), close: picks.map((i) => bars[i].close), volume: picks.map((i) => bars[i].volume) };
    for (const key of Object.keys(ours)) {
      if (JSON.stringify(ours[key]) !== JSON.stringify(py[key])) fail(`${key} at rows ${picks}: TypeScript ${ours[key]}, Python ${py[key]}`);
    }

    const times = { bars: [], columns: [], python: [] };
    const order = ["bars", "columns", "python"];
    const before = storeFiles(mesh.db);
    let busy = compilersRunning();
    for (let r = 0; r < ROUNDS; r++) {
      const rotated = [...order.slice(r % 3), ...order.slice(0, r % 3)];
      for (const way of rotated) {
        if (way === "python") {
          times.python.push((await worker.run()).seconds);
        } else {
          const t = performance.now();
          await ways[way]();
          times[way].push((performance.now() - t) / 1000);
        }
      }
    }
    const quiet = storeFiles(mesh.db) === before;
    busy ||= compilersRunning();

    const rate = (way) => BARS / median(times[way]);
    console.log(
      `${BARS.toLocaleString("en")} minute bars, median of ${ROUNDS} rotating rounds (store quiet after ${waited.toFixed(1)} s; ` +
        `${quiet ? "unchanged" : "CHANGED, figures suspect"} while timing); node ${process.version}:`,
    );
    const names = {
      bars: "TS candles() -> Bar[]",
      columns: "TS candleColumns() -> Float64Array",
      python: "Python Client.candles() -> DataFrame",
    };
    for (const way of order) {
      const rounds = [...times[way]].sort((a, b) => a - b).map((t) => (t * 1e3).toFixed(1)).join(", ");
      console.log(
        `  ${names[way].padEnd(38)} ${(median(times[way]) * 1e3).toFixed(1).padStart(7)} ms  ` +
          `${Math.round(rate(way)).toLocaleString("en").padStart(11)} rows/s  (rounds ${rounds} ms)`,
      );
    }
    for (const way of ["bars", "columns"]) {
      console.log(`  ratio rows/s ${names[way]} / Python: ${(rate(way) / rate("python")).toFixed(2)}x`);
    }
    if (busy) console.log("  warning: a rustc was running before or after the rounds: figures less reliable");
  } finally {
    worker?.stop();
    await mesh.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

try {
  await main();
} catch (e) {
  console.error(e instanceof Failed ? e.message : e);
  process.exitCode = 1;
}
