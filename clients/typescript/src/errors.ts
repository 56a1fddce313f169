// Typed errors for tickmesh's gRPC statuses, with the details the server attaches
// (google.rpc.BadRequest field violations, google.rpc.RetryInfo delays).
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";
import { Code, ConnectError } from "@connectrpc/connect";

export { Code };

/** One bad field of a request: `field` as the server names it (`symbol`, `symbols[2]`). */
export interface FieldViolation {
  field: string;
  description: string;
}

/** A call that failed; `code` is the gRPC status code, `rawMessage` the server's text. */
export class TickmeshError extends Error {
  override name = "TickmeshError";
  readonly code: Code;
  readonly rawMessage: string;
  readonly fieldViolations: FieldViolation[];
  /** Seconds to wait before retrying, from the server's RetryInfo (`undefined`: none sent). */
  readonly retryDelay: number | undefined;

  constructor(
    code: Code,
    rawMessage: string,
    details: { fieldViolations?: FieldViolation[]; retryDelay?: number | undefined; cause?: unknown } = {},
  ) {
    super(`${codeName(code)}: ${rawMessage}`, { cause: details.cause });
    this.code = code;
    this.rawMessage = rawMessage;
    this.fieldViolations = details.fieldViolations ?? [];
    this.retryDelay = details.retryDelay;
  }
}

/** The request was wrong; `fieldViolations` says which fields and why. */
export class InvalidArgument extends TickmeshError {
  override name = "InvalidArgument";
  get fields(): string[] {
    return this.fieldViolations.map((v) => v.field);
  }
}

/** A limit was hit (a stream fell too far behind, too many streams open, ...). */
export class ResourceExhausted extends TickmeshError {
  override name = "ResourceExhausted";
}

/** Over the caller's rate limit or the server sheds load: retry after `retryDelay` seconds. */
export class RateLimited extends ResourceExhausted {
  override name = "RateLimited";
}

/** The service could not be reached or refused for now (retried already where idempotent). */
export class Unavailable extends TickmeshError {
  override name = "Unavailable";
}

/** No API key, or one the mesh does not know. */
export class Unauthenticated extends TickmeshError {
  override name = "Unauthenticated";
}

/** The API key's scope does not cover the method. */
export class PermissionDenied extends TickmeshError {
  override name = "PermissionDenied";
}

/** What was asked for does not exist. */
export class NotFound extends TickmeshError {
  override name = "NotFound";
}

/** The call's timeout passed. */
export class DeadlineExceeded extends TickmeshError {
  override name = "DeadlineExceeded";
}

const BY_CODE: Partial<Record<Code, typeof TickmeshError>> = {
  [Code.InvalidArgument]: InvalidArgument,
  [Code.Unavailable]: Unavailable,
  [Code.Unauthenticated]: Unauthenticated,
  [Code.PermissionDenied]: PermissionDenied,
  [Code.NotFound]: NotFound,
  [Code.DeadlineExceeded]: DeadlineExceeded,
  [Code.ResourceExhausted]: ResourceExhausted,
};

/** `INVALID_ARGUMENT` for `Code.InvalidArgument`: the name gRPC documents. */
export function codeName(code: Code): string {
  const name = Code[code] ?? String(code);
  return name.replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
}

const BAD_REQUEST = "google.rpc.BadRequest";
const RETRY_INFO = "google.rpc.RetryInfo";

// The two detail messages are small and stable (googleapis' error_details.proto), so they are
// read field by field here rather than generated from a vendored copy of googleapis.
function readBadRequest(bytes: Uint8Array): FieldViolation[] {
  const violations: FieldViolation[] = [];
  const reader = new BinaryReader(bytes);
  while (reader.pos < reader.len) {
    const [field, wire] = reader.tag();
    if (field === 1 && wire === WireType.LengthDelimited) {
      const inner = new BinaryReader(reader.bytes());
      const violation: FieldViolation = { field: "", description: "" };
      while (inner.pos < inner.len) {
        const [f, w] = inner.tag();
        if (f === 1 && w === WireType.LengthDelimited) violation.field = inner.string();
        else if (f === 2 && w === WireType.LengthDelimited) violation.description = inner.string();
        else inner.skip(w);
      }
      violations.push(violation);
    } else {
      reader.skip(wire);
    }
  }
  return violations;
}

function readRetryInfo(bytes: Uint8Array): number | undefined {
  const reader = new BinaryReader(bytes);
  let delay: number | undefined;
  while (reader.pos < reader.len) {
    const [field, wire] = reader.tag();
    if (field === 1 && wire === WireType.LengthDelimited) {
      // google.protobuf.Duration: seconds (1), nanos (2).
      const inner = new BinaryReader(reader.bytes());
      let seconds = 0;
      let nanos = 0;
      while (inner.pos < inner.len) {
        const [f, w] = inner.tag();
        if (f === 1 && w === WireType.Varint) seconds = Number(inner.int64());
        else if (f === 2 && w === WireType.Varint) nanos = inner.int32();
        else inner.skip(w);
      }
      delay = seconds + nanos / 1e9;
    } else {
      reader.skip(wire);
    }
  }
  return delay;
}

/** The typed error for a failed call: a `RateLimited` when RESOURCE_EXHAUSTED has a RetryInfo. */
export function fromError(error: unknown): TickmeshError {
  if (error instanceof TickmeshError) {
    return error;
  }
  const connect = ConnectError.from(error);
  const fieldViolations: FieldViolation[] = [];
  let retryDelay: number | undefined;
  for (const detail of connect.details) {
    // Details parsed from the wire are {type, value: bytes}; others (desc + message) are ours.
    if (!("type" in detail) || !(detail.value instanceof Uint8Array)) {
      continue;
    }
    const bytes = detail.value;
    try {
      if (detail.type === BAD_REQUEST) fieldViolations.push(...readBadRequest(bytes));
      else if (detail.type === RETRY_INFO) retryDelay = readRetryInfo(bytes);
    } catch {
      // A detail that does not parse is left out; the status and message still say what failed.
    }
  }
  let cls = BY_CODE[connect.code] ?? TickmeshError;
  if (connect.code === Code.ResourceExhausted && retryDelay !== undefined) {
    cls = RateLimited;
  }
  return new cls(connect.code, connect.rawMessage, { fieldViolations, retryDelay, cause: error });
}
