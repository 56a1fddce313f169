// `connectWeb()` for browsers: tickmesh's services over gRPC-Web (@connectrpc/connect-web).
import { createGrpcWebTransport } from "@connectrpc/connect-web";

import { TickmeshClient, clientInterceptors, type ClientOptions } from "./client.js";

export interface WebClientOptions extends ClientOptions {
  /** The ingestion service's gRPC-Web base URL, when the page writes. */
  ingestion?: string | undefined;
  /** The computation service's gRPC-Web base URL (portfolio optimization). */
  computation?: string | undefined;
}

/**
 * A client whose query service answers gRPC-Web at `baseUrl` (default: the page's own origin,
 * where `tickmesh up` serves the dashboard).
 */
export function connectWeb(baseUrl: string = globalThis.location.origin, options: WebClientOptions = {}): TickmeshClient {
  const interceptors = clientInterceptors(options);
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
