// `connect()` for Node.js: tickmesh's services over gRPC on HTTP/2 (@connectrpc/connect-node).
import { Http2SessionManager, createGrpcTransport } from "@connectrpc/connect-node";

import { TickmeshClient, clientInterceptors, peerAddresses, type ClientOptions } from "./client.js";

export interface NodeClientOptions extends ClientOptions {
  /** The ingestion service (default: next to the query port, see `peerAddresses`). */
  ingestion?: string | undefined;
  /** The computation service (default: next to the query port). */
  computation?: string | undefined;
  /** `true` for TLS (https) with Node's default roots; plaintext otherwise. */
  tls?: boolean | undefined;
  /**
   * Accept gzip-compressed responses (default false: on a LAN, compressing costs more than its
   * bytes save, see the Python SDK's README; turn it on over a slow link).
   */
  acceptGzip?: boolean | undefined;
}

/**
 * A client of the mesh whose query service is at `target` (`"127.0.0.1:7404"`). Close it with
 * `client.close()` (its HTTP/2 connections keep Node running otherwise).
 */
export function connect(target: string, options: NodeClientOptions = {}): TickmeshClient {
  const peers = options.ingestion && options.computation ? undefined : peerAddresses(target);
  const interceptors = clientInterceptors(options);
  const sessions: Http2SessionManager[] = [];
  const transport = (address: string) => {
    const baseUrl = `${options.tls ? "https" : "http"}://${address}`;
    const sessionManager = new Http2SessionManager(baseUrl);
    sessions.push(sessionManager);
    return createGrpcTransport({
      baseUrl,
      sessionManager,
      interceptors,
      ...(options.acceptGzip ? {} : { acceptCompression: [] }),
      // The mesh's largest responses (an ExportCandles page of 32,768 bars is ~1.3 MB).
      readMaxBytes: 64 * 1024 * 1024,
    });
  };
  return new TickmeshClient(
    {
      query: transport(target),
      ingestion: transport(options.ingestion ?? peers!.ingestion),
      computation: transport(options.computation ?? peers!.computation),
    },
    {
      timeoutMs: options.timeoutMs,
      onClose: () => sessions.forEach((s) => s.abort()),
    },
  );
}

export * from "./index.js";
