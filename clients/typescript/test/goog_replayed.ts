// A new user's first lines, for services/tickmesh/tests/it/sdk_mesh.rs: GOOG's daily bars,
// replayed into the mesh with `tickmesh replay`, as an array, checked against the CSV.
//
// Usage: node dist-test/goog_replayed.js QUERY_ADDR INGESTION_ADDR COMPUTATION_ADDR GOOG_CSV
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";

import { connect } from "@tickmesh/client/node";

const [query, ingestion, computation, csv] = process.argv.slice(2) as [string, string, string, string];

// The three lines (the addresses are given here because the four-process mesh has its own).
const client = connect(query, { ingestion, computation });
const bars = await client.candles("GOOG", "1d");
client.close();

const [, ...lines] = readFileSync(csv, "utf8").trim().split(/\r?\n/);
const want = lines.map((line) => {
  const [date, open, high, low, close, volume] = line.split(",");
  const time = new Date(`${date}T00:00:00Z`);
  return { time, timeUs: time.getTime() * 1000, open: Number(open), high: Number(high), low: Number(low), close: Number(close), volume: Number(volume) };
});
assert.equal(bars.length, want.length);
assert.deepEqual(bars, want);
console.log(`${bars.length} bars equal to ${csv}`);
