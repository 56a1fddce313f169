#!/usr/bin/env node
// Smoke-test client for one tickmesh server port, written the way a Node.js user would: a thin
// use of @tickmesh/client (clients/typescript; its messages are generated from the protos by
// buf, nothing is compiled at run time). It
//   1. checks grpc.health.v1.Health/Check is SERVING for service "" and for --service,
//   2. calls tickmesh.v1.ConfigService/GetConfig and checks the circuit breaker settings,
//   3. prints a short summary of the running PerformanceOptimizationConfig.
// Exit code 0 means every check passed; otherwise the reason is printed to stderr.
import { parseArgs } from 'node:util';

import { connect } from '@tickmesh/client/node';
import { PerformanceOptimizationConfigSchema } from '@tickmesh/client/gen/config_pb';

class CheckFailed extends Error {}

function usage() {
  return [
    'usage: node client.js [--addr HOST:PORT] [--service NAME] [--timeout SECONDS]',
    '',
    '  --addr        server address (default 127.0.0.1:7404)',
    '  --service     full service name the port serves (default tickmesh.v1.QueryService)',
    '  --timeout     deadline in seconds for each call (default 5)',
  ].join('\n');
}

function parseCli(argv) {
  const { values } = parseArgs({
    args: argv,
    options: {
      addr: { type: 'string', default: '127.0.0.1:7404' },
      service: { type: 'string', default: 'tickmesh.v1.QueryService' },
      timeout: { type: 'string', default: '5' },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  });
  const timeoutMs = Number(values.timeout) * 1000;
  if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) {
    throw new CheckFailed(`--timeout must be a positive number of seconds, got ${values.timeout}`);
  }
  return { addr: values.addr, service: values.service, timeoutMs, help: values.help };
}

// name=VALUE for each top-level enum field (the four strategy enums), in field order.
function enumFieldsSummary(config) {
  return PerformanceOptimizationConfigSchema.fields
    .filter((f) => f.fieldKind === 'enum')
    .map((f) => `${f.name}=${f.enum.value[config[f.localName]]?.name ?? config[f.localName]}`);
}

function durationSeconds(d) {
  return d ? Number(d.seconds) + d.nanos / 1e9 : 0;
}

async function check(client, service) {
  for (const name of ['', service]) {
    const shown = name ? `'${name}'` : '"" (whole server)';
    const status = await client.health(name).catch((err) => {
      throw new CheckFailed(`grpc.health.v1.Health/Check for ${shown} failed: ${err.message}`);
    });
    if (status !== 'SERVING') {
      throw new CheckFailed(`health of ${shown} is ${status}, want SERVING`);
    }
    console.log(`health ${shown}: SERVING`);
  }
  const config = await client.config().catch((err) => {
    throw new CheckFailed(`tickmesh.v1.ConfigService/GetConfig failed: ${err.message}`);
  });
  const breaker = config.circuitBreaker;
  if (!breaker) {
    throw new CheckFailed('config.circuit_breaker is not set');
  }
  if (!(breaker.failureThreshold >= 1)) {
    throw new CheckFailed(`config.circuit_breaker.failure_threshold is ${breaker.failureThreshold}, want >= 1`);
  }
  const enums = enumFieldsSummary(config);
  console.log(`config: ${enums.length ? enums.join(', ') : '(no strategy enums)'}`);
  console.log(
    'circuit breaker: ' +
      `failure_threshold=${breaker.failureThreshold}, ` +
      `success_threshold=${breaker.successThreshold}, ` +
      `open_duration=${durationSeconds(breaker.openDuration)}s`,
  );
}

async function main() {
  let args;
  try {
    args = parseCli(process.argv.slice(2));
  } catch (err) {
    console.error(`${err.message}\n\n${usage()}`);
    return 2;
  }
  if (args.help) {
    console.log(usage());
    return 0;
  }
  // One port: health and config are served on every port, so all three addresses are this one.
  const client = connect(args.addr, {
    ingestion: args.addr,
    computation: args.addr,
    timeoutMs: args.timeoutMs,
    serviceConfig: false, // a smoke test reports a down port at once instead of retrying
  });
  try {
    await check(client, args.service);
  } catch (err) {
    console.error(`FAIL (${args.addr}): ${err instanceof CheckFailed ? err.message : `unexpected error: ${err.stack || err}`}`);
    return 1;
  } finally {
    client.close();
  }
  console.log(`OK: all checks passed against ${args.addr}`);
  return 0;
}

process.exitCode = await main();
