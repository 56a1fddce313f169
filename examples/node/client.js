#!/usr/bin/env node
// Smoke-test client for one tickmesh server port, written the way a Node.js user would.
//
// It loads the repo's proto/tickmesh/v1/config.proto at run time with @grpc/proto-loader, then:
//   1. checks grpc.health.v1.Health/Check is SERVING for service "" and for --service,
//   2. calls tickmesh.v1.ConfigService/GetConfig and checks the circuit breaker settings,
//   3. prints a short summary of the running PerformanceOptimizationConfig.
// Exit code 0 means every check passed; otherwise the reason is printed to stderr.
'use strict';

const path = require('node:path');
const { parseArgs } = require('node:util');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
// grpc-health-check 2.x exports the proto-loader definition of grpc.health.v1.Health as
// `service` (it no longer ships a generated client), so the client is built from it here.
const health = require('grpc-health-check');

const CONFIG_MESSAGE = 'tickmesh.v1.PerformanceOptimizationConfig';

class CheckFailed extends Error {}

function usage() {
  return [
    'usage: node client.js [--addr HOST:PORT] [--service NAME] [--timeout SECONDS] [--proto-root DIR]',
    '',
    '  --addr        server address (default 127.0.0.1:7404)',
    '  --service     full service name the port serves (default tickmesh.v1.QueryService)',
    '  --timeout     deadline in seconds for connecting and for each call (default 5)',
    "  --proto-root  directory holding tickmesh/v1/*.proto (default: the repo's proto/)",
  ].join('\n');
}

function parseCli(argv) {
  const { values } = parseArgs({
    args: argv,
    options: {
      addr: { type: 'string', default: '127.0.0.1:7404' },
      service: { type: 'string', default: 'tickmesh.v1.QueryService' },
      timeout: { type: 'string', default: '5' },
      'proto-root': { type: 'string', default: path.resolve(__dirname, '..', '..', 'proto') },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  });
  const timeoutMs = Number(values.timeout) * 1000;
  if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) {
    throw new CheckFailed(`--timeout must be a positive number of seconds, got ${values.timeout}`);
  }
  return {
    addr: values.addr,
    service: values.service,
    timeoutMs,
    protoRoot: path.resolve(values['proto-root']),
    help: values.help,
  };
}

function deadline(timeoutMs) {
  return new Date(Date.now() + timeoutMs);
}

// One unary call with a deadline; an RPC error becomes a readable failure.
function unary(client, method, request, timeoutMs, what) {
  return new Promise((resolve, reject) => {
    client[method](request, { deadline: deadline(timeoutMs) }, (err, response) => {
      if (err) {
        const code = grpc.status[err.code] ?? err.code;
        reject(new CheckFailed(`${what} failed: ${code}: ${err.details || '(no details)'}`));
      } else {
        resolve(response);
      }
    });
  });
}

function waitForReady(client, addr, timeoutMs) {
  return new Promise((resolve, reject) => {
    client.waitForReady(deadline(timeoutMs), (err) => {
      if (err) {
        reject(new CheckFailed(`could not connect to ${addr} within ${timeoutMs / 1000}s: ${err.message}`));
      } else {
        resolve();
      }
    });
  });
}

function loadConfigPackage(protoRoot) {
  try {
    return protoLoader.loadSync('tickmesh/v1/config.proto', {
      includeDirs: [protoRoot],
      keepCase: true,
      longs: String,
      enums: String,
      defaults: true,
      oneofs: true,
    });
  } catch (err) {
    throw new CheckFailed(`cannot load tickmesh/v1/config.proto under ${protoRoot}: ${err.message}`);
  }
}

async function checkHealth(channelOpts, services, timeoutMs) {
  const HealthClient = grpc.makeClientConstructor(health.service, 'grpc.health.v1.Health');
  const client = new HealthClient(channelOpts.addr, channelOpts.creds);
  try {
    await waitForReady(client, channelOpts.addr, timeoutMs);
    for (const service of services) {
      const shown = service ? `'${service}'` : '"" (whole server)';
      const resp = await unary(client, 'Check', { service }, timeoutMs, `grpc.health.v1.Health/Check for ${shown}`);
      // health.service was loaded with enums: String, so status is the enum value's name.
      if (resp.status !== 'SERVING') {
        throw new CheckFailed(`health of ${shown} is ${resp.status}, want SERVING`);
      }
      console.log(`health ${shown}: SERVING`);
    }
  } finally {
    client.close();
  }
}

// name=VALUE for each top-level enum field (the four strategy enums), in field order.
function enumFieldsSummary(packageDefinition, config) {
  const type = packageDefinition[CONFIG_MESSAGE];
  if (!type || !type.type) {
    throw new CheckFailed(`config.proto does not define ${CONFIG_MESSAGE}`);
  }
  return type.type.field
    .filter((f) => f.type === 'TYPE_ENUM' && f.label !== 'LABEL_REPEATED')
    .sort((a, b) => a.number - b.number)
    .map((f) => `${f.name}=${config[f.name]}`);
}

function durationSeconds(d) {
  if (!d) return 0;
  return Number(d.seconds || 0) + Number(d.nanos || 0) / 1e9;
}

async function checkConfig(channelOpts, protoRoot, timeoutMs) {
  const packageDefinition = loadConfigPackage(protoRoot);
  const proto = grpc.loadPackageDefinition(packageDefinition);
  const ConfigService = proto.tickmesh && proto.tickmesh.v1 && proto.tickmesh.v1.ConfigService;
  if (!ConfigService) {
    throw new CheckFailed('config.proto does not define tickmesh.v1.ConfigService');
  }
  const client = new ConfigService(channelOpts.addr, channelOpts.creds);
  let resp;
  try {
    resp = await unary(client, 'GetConfig', {}, timeoutMs, 'tickmesh.v1.ConfigService/GetConfig');
  } finally {
    client.close();
  }

  const config = resp.config;
  if (!config) {
    throw new CheckFailed('GetConfig returned no config');
  }
  const breaker = config.circuit_breaker;
  if (!breaker) {
    throw new CheckFailed('config.circuit_breaker is not set');
  }
  if (!(breaker.failure_threshold >= 1)) {
    throw new CheckFailed(`config.circuit_breaker.failure_threshold is ${breaker.failure_threshold}, want >= 1`);
  }

  const enums = enumFieldsSummary(packageDefinition, config);
  console.log(`config: ${enums.length ? enums.join(', ') : '(no strategy enums)'}`);
  console.log(
    'circuit breaker: ' +
      `failure_threshold=${breaker.failure_threshold}, ` +
      `success_threshold=${breaker.success_threshold}, ` +
      `open_duration=${durationSeconds(breaker.open_duration)}s`,
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
  const channelOpts = { addr: args.addr, creds: grpc.credentials.createInsecure() };
  try {
    await checkHealth(channelOpts, ['', args.service], args.timeoutMs);
    await checkConfig(channelOpts, args.protoRoot, args.timeoutMs);
  } catch (err) {
    if (err instanceof CheckFailed) {
      console.error(`FAIL (${args.addr}): ${err.message}`);
    } else {
      console.error(`FAIL (${args.addr}): unexpected error: ${err.stack || err}`);
    }
    return 1;
  }
  console.log(`OK: all checks passed against ${args.addr}`);
  return 0;
}

main().then((code) => {
  // Exit explicitly so no lingering gRPC timer keeps the process alive.
  process.exit(code);
});
