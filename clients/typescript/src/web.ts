// `connectWeb()` for browsers: tickmesh's services over gRPC-Web (@connectrpc/connect-web).
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";

import { TickmeshClient, clientInterceptors, type ClientOptions } from "./client.js";

export interface WebClientOptions extends ClientOptions {
  /** The ingestion service's gRPC-Web base URL, when the page writes. */
  ingestion?: string | undefined;
  /** The computation service's gRPC-Web base URL (portfolio optimization). */
  computation?: string | undefined;
}

/**
 * A fetch that could not reach the server (refused, reset, offline) fails with a TypeError,
 * which Connect reports as UNKNOWN; over gRPC the same is UNAVAILABLE. Said as UNAVAILABLE
 * here, so retries from the service config and `stream()`'s resume treat it as what it is.
 */
function asUnavailable(error: unknown): unknown {
  const connect = ConnectError.from(error);
  const network = connect.code === Code.Unknown && connect.cause instanceof TypeError;
  return network ? new ConnectError(connect.rawMessage, Code.Unavailable, undefined, undefined, error) : error;
}

async function* unavailableOnBreak<T>(messages: AsyncIterable<T>): AsyncIterable<T> {
  try {
    yield* messages;
  } catch (error) {
    throw asUnavailable(error);
  }
}

/** Innermost, so the retry interceptor and `stream()` see UNAVAILABLE. */
const networkErrorsAreUnavailable: Interceptor = (next) => async (req) => {
  try {
    const response = await next(req);
    return response.stream ? { ...response, message: unavailableOnBreak(response.message) } : response;
  } catch (error) {
    throw asUnavailable(error);
  }
};

/**
 * A client whose query service answers gRPC-Web at `baseUrl` (default: the page's own origin,
 * where `tickmesh up` serves the dashboard).
 */
export function connectWeb(baseUrl: string = globalThis.location.origin, options: WebClientOptions = {}): TickmeshClient {
  const interceptors = [...clientInterceptors(options), networkErrorsAreUnavailable];
  const transport = (url: string) => createGrpcWebTransport({ baseUrl: url, interceptors });
  return new TickmeshClient(
    {
      query: transport(baseUrl),
      ingestion: options.ingestion === undefined ? undefined : transport(options.ingestion),
      computation: options.computation === undefined ? undefined : transport(options.computation),
    },
    { timeoutMs: options.timeoutMs },
  );
}

export * from "./index.js";
