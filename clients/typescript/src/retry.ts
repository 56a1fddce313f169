// Retries from a gRPC service config (gRFC A6 `retryPolicy`), as an interceptor: Connect's
// transports do not read service configs, so the shipped one (generated from the protos'
// idempotency options, see scripts/service_config.py) is applied here.
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";

export interface RetryPolicy {
  maxAttempts: number;
  /** A protobuf Duration in JSON: `"0.1s"`. */
  initialBackoff: string;
  maxBackoff: string;
  backoffMultiplier: number;
  /** Status codes by their gRPC names: `"UNAVAILABLE"`. */
  retryableStatusCodes: string[];
}

export interface MethodConfig {
  name: { service: string; method?: string }[];
  retryPolicy?: RetryPolicy;
}

export interface ServiceConfig {
  methodConfig: MethodConfig[];
}

interface Policy {
  maxAttempts: number;
  initialMs: number;
  maxMs: number;
  multiplier: number;
  codes: Set<Code>;
}

function durationMs(text: string): number {
  const match = /^(\d+(?:\.\d+)?)s$/.exec(text);
  if (match === null) {
    throw new RangeError(`not a protobuf Duration: ${JSON.stringify(text)}`);
  }
  return Number(match[1]) * 1000;
}

function codeOf(name: string): Code {
  const key = name
    .toLowerCase()
    .replace(/(^|_)([a-z])/g, (_, _sep: string, c: string) => c.toUpperCase()) as keyof typeof Code;
  const code = Code[key];
  if (typeof code !== "number") {
    throw new RangeError(`unknown status code ${JSON.stringify(name)}`);
  }
  return code;
}

/** The retry policy of each method (`"tickmesh.v1.QueryService/GetCandles"`) a config names. */
export function retryPolicies(config: ServiceConfig): Map<string, Policy> {
  const policies = new Map<string, Policy>();
  for (const entry of config.methodConfig) {
    const p = entry.retryPolicy;
    if (p === undefined) continue;
    // gRFC A6: maxAttempts above 5 is treated as 5.
    const policy: Policy = {
      maxAttempts: Math.min(Math.max(p.maxAttempts, 1), 5),
      initialMs: durationMs(p.initialBackoff),
      maxMs: durationMs(p.maxBackoff),
      multiplier: p.backoffMultiplier,
      codes: new Set(p.retryableStatusCodes.map(codeOf)),
    };
    for (const name of entry.name) {
      policies.set(`${name.service}/${name.method ?? "*"}`, policy);
    }
  }
  return policies;
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) {
      reject(signal.reason);
      return;
    }
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      if (signal.aborted) reject(signal.reason);
      else resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done);
  });
}

/**
 * An interceptor retrying the unary calls a service config covers, on its retryable codes,
 * with exponential backoff and full jitter (each wait uniform in [0, backoff)), as gRPC's
 * own clients do. Streams are not retried: `TickmeshClient.stream()` resumes them itself.
 */
export function retryInterceptor(config: ServiceConfig): Interceptor {
  const policies = retryPolicies(config);
  return (next) => async (req) => {
    const service = req.service.typeName;
    const policy = policies.get(`${service}/${req.method.name}`) ?? policies.get(`${service}/*`);
    if (policy === undefined || req.stream) {
      return next(req);
    }
    let backoff = policy.initialMs;
    for (let attempt = 1; ; attempt++) {
      try {
        return await next(req);
      } catch (error) {
        const code = ConnectError.from(error).code;
        if (attempt >= policy.maxAttempts || !policy.codes.has(code) || req.signal.aborted) {
          throw error;
        }
      }
      await sleep(Math.random() * backoff, req.signal);
      backoff = Math.min(backoff * policy.multiplier, policy.maxMs);
    }
  };
}
