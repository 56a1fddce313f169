// @tickmesh/client: the transport-agnostic core. Import `connect` from "@tickmesh/client/node"
// (Node.js, gRPC) or `connectWeb` from "@tickmesh/client/web" (browsers, gRPC-Web).
export * from "./client.js";
export * from "./convert.js";
export * from "./errors.js";
export type { ServingStatus } from "./health.js";
export { retryInterceptor, retryPolicies, type MethodConfig, type RetryPolicy, type ServiceConfig } from "./retry.js";
export { serviceConfig } from "./gen/service_config.js";
export type { Interceptor, Transport } from "@connectrpc/connect";
