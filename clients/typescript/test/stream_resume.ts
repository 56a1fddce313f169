// A subscriber for services/tickmesh/tests/it/sdk_typescript.rs: follows the candles of a
// symbol through `stream()` (which resumes across restarts of the mesh) and prints one JSON line
// per event until it has `count` events.
//
// Usage: node dist-test/stream_resume.js QUERY_ADDR SYMBOL RESUME_FROM_US COUNT
import { connect } from "@tickmesh/client/node";

const [target, symbol, resumeFrom, count] = process.argv.slice(2);
if (!target || !symbol || !resumeFrom || !count) {
  console.error("usage: stream_resume.js QUERY_ADDR SYMBOL RESUME_FROM_US COUNT");
  process.exit(2);
}
// The test's addresses are all the query port: this subscriber only streams.
const client = connect(target, { ingestion: target, computation: target });
console.log(JSON.stringify({ ready: true }));
let n = 0;
for await (const event of client.stream([symbol], { kinds: ["candle"], resumeFrom: BigInt(resumeFrom), reconnectForMs: 30_000 })) {
  console.log(JSON.stringify({ id: event.eventId, time_us: Number(event.timeUs), historical: event.historical }));
  if (++n === Number(count)) break;
}
client.close();
