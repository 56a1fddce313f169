// Conversions between JavaScript values and tickmesh's wire types.
import { Interval } from "./gen/tickmesh/v1/market_pb.js";

/**
 * A point in time: a `Date`, an ISO 8601 string (without an offset: UTC), milliseconds since
 * the epoch as a `number` (what `Date.now()` gives), or microseconds since the epoch as a
 * `bigint` (the wire's unit). `undefined` / `null`: unbounded.
 */
export type TimeLike = Date | string | number | bigint | null | undefined;

/** Interval names as the Python SDK and the CLI spell them. */
export const INTERVALS = {
  "1s": Interval.INTERVAL_1S,
  "1m": Interval.INTERVAL_1M,
  "5m": Interval.INTERVAL_5M,
  "15m": Interval.INTERVAL_15M,
  "1h": Interval.INTERVAL_1H,
  "4h": Interval.INTERVAL_4H,
  "1d": Interval.INTERVAL_1D,
} as const;

export type IntervalName = keyof typeof INTERVALS;

const INTERVAL_NAMES = new Map<Interval, IntervalName>(
  Object.entries(INTERVALS).map(([name, value]) => [value, name as IntervalName]),
);

/** `"1d"`, `"4h"`, ... as the wire enum (a `RangeError` for anything else). */
export function interval(value: IntervalName | string): Interval {
  const wire = (INTERVALS as Record<string, Interval>)[value.toLowerCase()];
  if (wire === undefined) {
    throw new RangeError(`unknown interval ${JSON.stringify(value)}: one of ${Object.keys(INTERVALS).join(", ")}`);
  }
  return wire;
}

/** The name of a wire interval (`""` for one this client does not know). */
export function intervalName(value: Interval): string {
  return INTERVAL_NAMES.get(value) ?? "";
}

/** Microseconds since the epoch of `value`; 0 (unbounded) for `undefined` / `null`. */
export function timeUs(value: TimeLike): bigint {
  if (value === undefined || value === null) {
    return 0n;
  }
  if (typeof value === "bigint") {
    return value;
  }
  let ms: number;
  if (typeof value === "number") {
    ms = value;
  } else if (value instanceof Date) {
    ms = value.getTime();
  } else {
    // A date or date-time without an offset is UTC, as in the Python SDK.
    const hasZone = /(?:[zZ]|[+-]\d\d:?\d\d)$/.test(value);
    const isDate = /^\d{4}-\d\d-\d\d$/.test(value);
    ms = Date.parse(hasZone || isDate ? value : `${value}Z`);
  }
  if (!Number.isFinite(ms)) {
    throw new RangeError(`not a time: ${String(value)}`);
  }
  return BigInt(Math.round(ms)) * 1000n;
}

/** A wire time (microseconds) as a `Date` (millisecond precision). */
export function toDate(us: bigint | number): Date {
  return new Date(Number(us) / 1000);
}

// A bar size the query service resamples to: a count and a unit (query.proto, GetCandlesRequest.bar).
const BAR = /^[1-9][0-9]*(s|m|h|d|w|mo)$/;

/** A bar size ("90s", "10m", "2h", "1w", "1mo") as the wire spells it (a `RangeError` otherwise). */
export function barSize(value: string): string {
  const text = value.toLowerCase();
  if (!BAR.test(text)) {
    throw new RangeError(
      `unknown interval ${JSON.stringify(value)}: one of ${Object.keys(INTERVALS).join(", ")}, ` +
        "or a bar size to resample to (a count and s, m, h, d, w or mo: \"2h\", \"1w\", \"1mo\")",
    );
  }
  return text;
}

/**
 * Whether bars of `value` are resampled by the query service (GetCandles' `bar`) rather than
 * read as stored: a size that is not a stored interval, or days in a time zone / session.
 */
export function isResampled(value: string, timeZone?: string, session?: string): boolean {
  return Boolean(timeZone || session) || !(value.toLowerCase() in INTERVALS);
}
