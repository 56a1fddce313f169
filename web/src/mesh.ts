// The mesh panel (a separate chunk): health of each service as the web origin answers it, the
// cache hit rate (CachingService.GetStats), the signal skip rate
// (ComputationService.GetSignalStats) and the latency of the page's own unary calls. A service
// the origin does not serve shows "n/a".
import { Code, createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { codeName, fromError, type TickmeshClient } from "@tickmesh/client/web";
import { CachingService } from "@tickmesh/client/gen/caching_pb";
import { ComputationService } from "@tickmesh/client/gen/computation_pb";

import { LATENCY_WINDOW, latencySummary, sleep } from "./shared";

export interface MeshContext {
  root: HTMLElement;
  client: TickmeshClient;
  /** The page's interceptors (API key, retries, timing). */
  interceptors: Interceptor[];
  signal: AbortSignal;
  onUnauthenticated: (message: string) => void;
}

const SERVICES = [
  ["query", "tickmesh.v1.QueryService"],
  ["ingestion", "tickmesh.v1.IngestionService"],
  ["computation", "tickmesh.v1.ComputationService"],
  ["caching", "tickmesh.v1.CachingService"],
] as const;
const POLL_MS = 5000;
const RETRY_MS = 2000;

function el<K extends keyof HTMLElementTagNameMap>(tag: K, text = "", className = ""): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  if (text) e.textContent = text;
  if (className) e.className = className;
  return e;
}

function percent(x: number): string {
  return `${(x * 100).toFixed(1)}%`;
}

function ms(x: number): string {
  return Number.isFinite(x) ? `${x < 10 ? x.toFixed(1) : x.toFixed(0)} ms` : "n/a";
}

export function startMesh(ctx: MeshContext): void {
  const transport = createGrpcWebTransport({ baseUrl: location.origin, interceptors: ctx.interceptors });
  const caching = createClient(CachingService, transport);
  const computation = createClient(ComputationService, transport);

  const root = ctx.root;
  root.replaceChildren();
  const fields = new Map<string, HTMLElement>();
  const section = (title: string, names: [string, string][]) => {
    root.append(el("h3", title));
    const dl = el("dl");
    for (const [key, label] of names) {
      const dd = el("dd", "…");
      dd.dataset.field = key;
      dl.append(el("dt", label), dd);
      fields.set(key, dd);
    }
    root.append(dl);
  };
  section(
    "Health",
    SERVICES.map(([short, name]) => [`health:${name}`, short]),
  );
  section("Cache", [
    ["hitRate", "hit rate"],
    ["l2", "L2 (Redis)"],
  ]);
  section("Signals", [["skipRate", "skip rate"]]);
  section("This page", [
    ["p50", "call p50"],
    ["p99", "call p99"],
    ["calls", "calls measured"],
    ["events", "stream events"],
  ]);

  const set = (key: string, text: string, className = "") => {
    const dd = fields.get(key);
    if (dd === undefined) return;
    dd.textContent = text;
    dd.className = className;
  };

  // "n/a" for what this origin does not serve; the status code otherwise.
  const failure = (key: string, error: unknown): boolean => {
    const e = fromError(error);
    if (e.code === Code.Unauthenticated) {
      ctx.onUnauthenticated(e.rawMessage);
      return true;
    }
    const na = e.code === Code.Unimplemented || e.code === Code.NotFound;
    if (!na) failing = true;
    set(key, na ? "n/a" : e.code === Code.Unavailable ? "unreachable" : codeName(e.code).toLowerCase(), na ? "na" : "not-serving");
    return false;
  };

  const options = () => ({ timeoutMs: 5000, signal: ctx.signal });

  let failing = false;

  async function poll(): Promise<boolean> {
    failing = false;
    const tasks: Promise<boolean | void>[] = SERVICES.map(([, name]) =>
      ctx.client.health(name).then(
        (s) => set(`health:${name}`, s.toLowerCase().replace("_", " "), s === "SERVING" ? "serving" : "not-serving"),
        (e: unknown) => failure(`health:${name}`, e),
      ),
    );
    tasks.push(
      caching.getStats({}, options()).then(
        (r) => {
          set("hitRate", percent(r.hitRate));
          set("l2", r.l2Available ? "available" : "unavailable", r.l2Available ? "serving" : "na");
        },
        (e: unknown) => {
          const stop = failure("hitRate", e);
          set("l2", "n/a", "na");
          return stop;
        },
      ),
    );
    tasks.push(
      computation.getSignalStats({}, options()).then(
        (r) => {
          const total = r.total;
          set("skipRate", total === undefined ? "n/a" : `${percent(total.skipRate)} of ${total.evaluated}`);
        },
        (e: unknown) => failure("skipRate", e),
      ),
    );
    const results = await Promise.all(tasks);
    const lat = latencySummary();
    set("p50", ms(lat.p50));
    set("p99", ms(lat.p99));
    set("calls", `${lat.n} (last ${LATENCY_WINDOW})`);
    set("events", String(window.__tickmesh.events));
    return results.some((r) => r === true);
  }

  void (async () => {
    while (!ctx.signal.aborted) {
      if (await poll()) return;
      // Sooner while something is unreachable, so the panel catches up after a restart.
      await sleep(failing ? RETRY_MS : POLL_MS, ctx.signal);
    }
  })();
}
