#!/usr/bin/env node
// A development stand-in for the dashboard address of `tickmesh up` (which serves web/dist and
// gRPC-Web itself): serves web/dist and answers gRPC-Web on the same origin by forwarding
// every call over gRPC to a running mesh, unchanged (statuses, details, deadlines, the
// authorization header). Useful against a binary without the dashboard, or to put a mesh
// restart behind a stable page origin.
//
//   node web/scripts/dev-bridge.mjs --ready /tmp/ready.json [--port 7400]
//   node web/scripts/dev-bridge.mjs --query 127.0.0.1:7404 [--caching ...] [--computation ...] [--ingestion ...]
//   node web/scripts/dev-bridge.mjs --web 127.0.0.1:7400 [--port ...]
//
// With --web (or a ready file with "web"), every request but GET / HEAD is passed through to
// that dashboard address as it is (the mesh's own gRPC-Web; the Host header kept, so its
// same-origin check passes): the freshly built web/dist against a binary that embeds an older
// one. Otherwise QueryService and ConfigService go to the query port, CachingService and
// ComputationService to theirs, grpc.health.v1.Health to the port of the service asked about.
// Prints {"web":"127.0.0.1:PORT", ...} once listening.
import { readFileSync } from "node:fs";
import { createServer, request as httpRequest } from "node:http";
import { dirname, extname, join, normalize } from "node:path";
import { fileURLToPath } from "node:url";

import { createClient } from "@connectrpc/connect";
import { Http2SessionManager, connectNodeAdapter, createGrpcTransport } from "@connectrpc/connect-node";
import { CachingService } from "@tickmesh/client/gen/caching_pb";
import { ComputationService } from "@tickmesh/client/gen/computation_pb";
import { ConfigService } from "@tickmesh/client/gen/config_pb";
import { QueryService } from "@tickmesh/client/gen/query_pb";
// The health descriptor is not among the package's exports; the dev tool reads the file.
import { healthCheck } from "../node_modules/@tickmesh/client/dist/health.js";

const args = process.argv.slice(2);
const flag = (name) => {
  const at = args.indexOf(`--${name}`);
  return at >= 0 ? args[at + 1] : undefined;
};
let addrs = {};
if (flag("ready")) addrs = JSON.parse(readFileSync(flag("ready"), "utf8"));
for (const name of ["query", "caching", "computation", "ingestion", "web"]) {
  if (flag(name)) addrs[name] = flag(name);
}
const upstreamWeb = addrs.web;
if (!addrs.query && !upstreamWeb) {
  console.error("dev-bridge: --ready FILE, --web HOST:PORT or --query HOST:PORT needed");
  process.exit(2);
}
const port = Number(flag("port") ?? 0);
const dist = join(dirname(fileURLToPath(import.meta.url)), "..", "dist");

const transports = {};
const transport = (target) =>
  (transports[target] ??= createGrpcTransport({
    baseUrl: `http://${target}`,
    sessionManager: new Http2SessionManager(`http://${target}`),
    acceptCompression: [],
    readMaxBytes: 64 * 1024 * 1024,
  }));

function callOptions(context) {
  const headers = new Headers();
  const authorization = context.requestHeader.get("authorization");
  if (authorization !== null) headers.set("authorization", authorization);
  const timeoutMs = context.timeoutMs();
  return { signal: context.signal, headers, ...(timeoutMs === undefined ? {} : { timeoutMs }) };
}

function forward(router, service, target) {
  if (!target) return;
  const client = createClient(service, transport(target));
  for (const method of service.methods) {
    const call = client[method.localName];
    if (method.methodKind === "unary") {
      router.rpc(method, async (request, context) => await call(request, callOptions(context)));
    } else if (method.methodKind === "server_streaming") {
      router.rpc(method, async function* (request, context) {
        yield* call(request, callOptions(context));
      });
    }
  }
}

const HEALTH_TARGET = {
  "tickmesh.v1.IngestionService": "ingestion",
  "tickmesh.v1.ComputationService": "computation",
  "tickmesh.v1.CachingService": "caching",
};

const handler = connectNodeAdapter({
  grpcWeb: true,
  grpc: false,
  connect: false,
  readMaxBytes: 64 * 1024 * 1024,
  routes: (router) => {
    forward(router, QueryService, addrs.query);
    forward(router, ConfigService, addrs.query);
    forward(router, CachingService, addrs.caching);
    forward(router, ComputationService, addrs.computation);
    router.rpc(healthCheck, async (request, context) => {
      const target = addrs[HEALTH_TARGET[request.service] ?? "query"] ?? addrs.query;
      const response = await transport(target).unary(
        healthCheck,
        context.signal,
        context.timeoutMs(),
        callOptions(context).headers,
        request,
      );
      return response.message;
    });
  },
});

const TYPES = { ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8" };

const server = createServer((req, res) => {
  if (req.method === "GET" || req.method === "HEAD") {
    const path = normalize(decodeURIComponent(new URL(req.url, "http://x").pathname)).replace(/^(\.\.[/\\])+/, "");
    const file = join(dist, path === "/" ? "index.html" : path);
    try {
      const body = readFileSync(file);
      res.writeHead(200, { "content-type": TYPES[extname(file)] ?? "application/octet-stream", "cache-control": "no-cache" });
      res.end(req.method === "HEAD" ? undefined : body);
    } catch {
      res.writeHead(404, { "content-type": "text/plain" });
      res.end("not found\n");
    }
    return;
  }
  if (upstreamWeb) {
    const [host, upstreamPort] = [upstreamWeb.slice(0, upstreamWeb.lastIndexOf(":")), upstreamWeb.slice(upstreamWeb.lastIndexOf(":") + 1)];
    const upstream = httpRequest({ host, port: Number(upstreamPort), method: req.method, path: req.url, headers: req.headers }, (up) => {
      res.writeHead(up.statusCode ?? 502, up.headers);
      res.flushHeaders();
      up.pipe(res);
      // The mesh went away mid-response: break the browser's connection too, as the mesh's would.
      up.on("aborted", () => res.destroy());
      up.on("error", () => res.destroy());
      up.on("close", () => {
        if (!up.complete) res.destroy();
      });
    });
    upstream.on("error", () => res.destroy());
    req.pipe(upstream);
    res.on("close", () => upstream.destroy());
    return;
  }
  handler(req, res);
});
server.listen(port, "127.0.0.1", () => {
  console.log(JSON.stringify({ ...addrs, upstreamWeb, web: `127.0.0.1:${server.address().port}` }));
});
