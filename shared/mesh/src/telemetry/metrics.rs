//! Metrics of a process, served in the OpenMetrics / Prometheus text formats on an HTTP port.
//!
//! RPC metrics follow the OpenTelemetry RPC semantic conventions (the stable ones, v1.38 and
//! later) as a Prometheus exporter names them: `rpc_server_call_duration_seconds` and
//! `rpc_client_call_duration_seconds`, histograms labelled `rpc_system_name`, `rpc_method`
//! (`package.Service/Method`) and `rpc_response_status_code` (the code's name, `OK`,
//! `UNAVAILABLE`), plus `rpc_service` (the convention's older attribute, kept because
//! dashboards group by service). Chosen over the go-grpc-prometheus names because the same
//! names come out of every OpenTelemetry SDK, so one dashboard covers our Rust services and a
//! caller's Python or Go stubs. Their buckets carry exemplars (`trace_id`, `span_id`) when the
//! call was traced, in the OpenMetrics exposition.
//!
//! The server layer records a call when its response headers are out: the status of a unary
//! call (tonic sends errors as trailers-only responses, so the code is in the headers) and the
//! time to the first response byte of a streaming one. The client layer records the whole
//! call as the caller sees it, retries included.
//! Hand-written: no shipped tower layer records gRPC status codes in Prometheus.
//!
//! Other components register their own families through [`Metrics::register`].

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::exemplar::HistogramWithExemplars;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::Shutdown;
use crate::layer::{Layered, OnCall};
use crate::methods::Entry;

/// Labels of a finished call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    /// Always `grpc`.
    pub rpc_system_name: &'static str,
    /// Full gRPC service name.
    pub rpc_service: String,
    /// `package.Service/Method`.
    pub rpc_method: String,
    /// The gRPC status code's name (`OK`, `NOT_FOUND`, ...).
    pub rpc_response_status_code: &'static str,
}

/// Labels of a method.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    /// Always `grpc`.
    pub rpc_system_name: &'static str,
    /// Full gRPC service name.
    pub rpc_service: String,
    /// `package.Service/Method`.
    pub rpc_method: String,
}

/// The exemplar of a latency sample: the trace it belongs to.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TraceLabels {
    /// W3C trace id, hex.
    pub trace_id: String,
    /// W3C span id, hex.
    pub span_id: String,
}

/// A latency histogram whose buckets remember the trace of their latest sample.
pub type TracedHistogram = HistogramWithExemplars<TraceLabels>;

/// The label values of every call to a path the contracts do not declare.
const UNKNOWN: &str = "unknown";
/// The key those calls share in the handle map (not a valid request path).
const UNKNOWN_PATH: &str = "unknown";
/// The methods of the services open without a key, which the contracts' table does not hold.
const OPEN_METHODS: [&str; 4] = [
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/// The names of the gRPC status codes by number, as the conventions spell them.
const CODE_NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// The name of the status code in a `grpc-status` value; anything else is `UNKNOWN`.
pub fn code_name(status: &str) -> &'static str {
    status
        .parse::<usize>()
        .ok()
        .and_then(|n| CODE_NAMES.get(n))
        .copied()
        .unwrap_or("UNKNOWN")
}

/// Latency buckets in seconds, from 50 µs: most calls here finish in well under a millisecond.
pub const BUCKETS: [f64; 16] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 10.0,
];

/// A latency histogram over [`BUCKETS`] (for components registering their own).
pub fn latency_histogram() -> prometheus_client::metrics::histogram::Histogram {
    prometheus_client::metrics::histogram::Histogram::new(BUCKETS.iter().copied())
}

/// Which end of a call a layer measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Server,
    Client,
}

/// The RPC families of one side.
struct RpcFamilies {
    duration: Family<CallLabels, TracedHistogram>,
    /// Server side only (a client's are its callers' business).
    active: Family<MethodLabels, Gauge>,
    /// Handles of each method's metrics by request path, so that a call finds them without
    /// building label strings (the hot path allocates nothing once a method has been seen).
    methods: std::sync::RwLock<std::collections::HashMap<String, Arc<MethodMetrics>>>,
}

impl RpcFamilies {
    fn new() -> Self {
        Self {
            duration: Family::new_with_constructor(|| {
                HistogramWithExemplars::new(BUCKETS.iter().copied())
            }),
            active: Family::default(),
            methods: Default::default(),
        }
    }
}

struct Inner {
    registry: std::sync::Mutex<Registry>,
    server: RpcFamilies,
    client: RpcFamilies,
    peers: PeerFamilies,
    signals: Family<OutcomeLabels, Counter>,
    active_streams: Gauge,
    /// Text of metrics kept elsewhere (the cache's counters), rendered at each scrape.
    extra: std::sync::RwLock<Vec<TextSource>>,
}

/// Renders metric families in the text exposition format (`# HELP`, `# TYPE`, samples).
pub type TextSource = Arc<dyn Fn() -> String + Send + Sync>;

/// The metrics of one method, shared with their families.
struct MethodMetrics {
    labels: MethodLabels,
    active: Gauge,
    ok: TracedHistogram,
    /// The side's duration family, for the series of the other status codes.
    durations: Family<CallLabels, TracedHistogram>,
}

/// Labels of a signal evaluation's outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `computed`, or `skipped` (price moved less than the skip threshold).
    pub outcome: String,
}

/// Labels of a peer a client stack calls.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabels {
    /// The peer, e.g. `tickmesh.v1.ComputationService`.
    pub peer: String,
}

/// Labels of a breaker's transition.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransitionLabels {
    /// The peer, e.g. `tickmesh.v1.ComputationService`.
    pub peer: String,
    /// The state entered: `open`, `half_open` or `closed`.
    pub state: &'static str,
}

struct PeerFamilies {
    retries: Family<PeerLabels, Counter>,
    budget_exhausted: Family<PeerLabels, Counter>,
    breaker_state: Family<PeerLabels, Gauge>,
    breaker_transitions: Family<TransitionLabels, Counter>,
}

/// The client-stack metrics of one peer.
#[derive(Clone, Debug)]
pub struct PeerMetrics {
    peer: String,
    /// Calls sent again.
    pub retries: Counter,
    /// Retries not sent because the retry budget was spent.
    pub budget_exhausted: Counter,
    /// 0 closed, 1 half-open, 2 open.
    pub breaker_state: Gauge,
    transitions: Family<TransitionLabels, Counter>,
}

impl PeerMetrics {
    /// Counts the breaker entering `state` (`open`, `half_open`, `closed`) and sets the gauge.
    pub fn breaker_entered(&self, state: &'static str, value: i64) {
        self.breaker_state.set(value);
        self.transitions
            .get_or_create(&TransitionLabels {
                peer: self.peer.clone(),
                state,
            })
            .inc();
    }
}

/// The metrics of a process; clones share them.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers the RPC, client-stack, signal and stream metrics.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let server = RpcFamilies::new();
        let client = RpcFamilies::new();
        registry.register_with_unit(
            "rpc_server_call_duration",
            "Duration of incoming RPCs, to the response headers (OpenTelemetry rpc.server.call.duration)",
            Unit::Seconds,
            server.duration.clone(),
        );
        registry.register(
            "tickmesh_rpc_server_active_calls",
            "Incoming RPCs being handled",
            server.active.clone(),
        );
        registry.register_with_unit(
            "rpc_client_call_duration",
            "Duration of outgoing RPCs through the client stack, retries included (OpenTelemetry rpc.client.call.duration)",
            Unit::Seconds,
            client.duration.clone(),
        );
        let peers = PeerFamilies {
            retries: Family::default(),
            budget_exhausted: Family::default(),
            breaker_state: Family::default(),
            breaker_transitions: Family::default(),
        };
        registry.register(
            "tickmesh_client_retries",
            "Calls the client stack sent again to a peer",
            peers.retries.clone(),
        );
        registry.register(
            "tickmesh_client_retry_budget_exhausted",
            "Retries to a peer not sent because the retry budget was spent",
            peers.budget_exhausted.clone(),
        );
        registry.register(
            "tickmesh_client_breaker_state",
            "Circuit breaker state per peer: 0 closed, 1 half-open, 2 open",
            peers.breaker_state.clone(),
        );
        registry.register(
            "tickmesh_client_breaker_transitions",
            "Circuit breaker transitions per peer, by the state entered",
            peers.breaker_transitions.clone(),
        );
        let signals = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "tickmesh_signals",
            "Signal evaluations by outcome: computed, or skipped because the price moved less \
             than processing.skip_unchanged_threshold_percent",
            signals.clone(),
        );
        let active_streams = Gauge::default();
        registry.register(
            "tickmesh_query_active_streams",
            "Open StreamMarketData streams that are making progress or idle, not those stalled on a client that stopped reading (the query service's autoscaling metric)",
            active_streams.clone(),
        );
        registry.register(
            "tickmesh_protocol_warnings",
            "Warnings of the HTTP/2 stack about peers (e.g. connections cut for too many \
             stream resets); the log shows at most one per 10 s",
            super::logging::protocol_warnings().clone(),
        );
        Self {
            inner: Arc::new(Inner {
                registry: std::sync::Mutex::new(registry),
                server,
                client,
                peers,
                signals,
                active_streams,
                extra: Default::default(),
            }),
        }
    }

    /// Registers more families: `add` gets the process's registry (no prefix: give full names,
    /// `tickmesh_<component>_...`). Each component registers once per process.
    pub fn register(&self, add: impl FnOnce(&mut Registry)) {
        add(&mut self
            .inner
            .registry
            .lock()
            .unwrap_or_else(|e| e.into_inner()));
    }

    /// The metric handles of the method at `path` (classified as `entry`), created on first use.
    ///
    /// Paths come from clients: only the methods the contracts declare (and those of health and
    /// reflection) get series of their own. Any other path counts under the one
    /// `rpc_service="unknown", rpc_method="unknown"` series, so made-up paths cannot grow the
    /// process or `/metrics`.
    fn method(&self, side: Side, path: &str, entry: Entry) -> Arc<MethodMetrics> {
        let known = entry.method.is_some() || OPEN_METHODS.contains(&path);
        let path = if known { path } else { UNKNOWN_PATH };
        let families = match side {
            Side::Server => &self.inner.server,
            Side::Client => &self.inner.client,
        };
        if let Some(found) = families
            .methods
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(path)
        {
            return found.clone();
        }
        let (service, method) = match known {
            true => {
                let full = path.trim_start_matches('/');
                let service = full.split_once('/').map_or(UNKNOWN, |(s, _)| s);
                (service, full)
            }
            false => (UNKNOWN, UNKNOWN),
        };
        let labels = MethodLabels {
            rpc_system_name: "grpc",
            rpc_service: service.to_owned(),
            rpc_method: method.to_owned(),
        };
        let ok = CallLabels {
            rpc_system_name: "grpc",
            rpc_service: labels.rpc_service.clone(),
            rpc_method: labels.rpc_method.clone(),
            rpc_response_status_code: "OK",
        };
        let handles = Arc::new(MethodMetrics {
            active: match side {
                Side::Server => families.active.get_or_create(&labels).clone(),
                // Not registered: counted, never exported.
                Side::Client => Gauge::default(),
            },
            ok: families.duration.get_or_create(&ok).clone(),
            durations: families.duration.clone(),
            labels,
        });
        // A bounded set of keys: the declared methods, the open ones and UNKNOWN_PATH.
        families
            .methods
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(path.to_owned(), handles.clone());
        handles
    }

    /// The counter of signal evaluations with `outcome` (`computed` or `skipped`).
    pub fn signal_outcome(&self, outcome: &str) -> Counter {
        self.inner
            .signals
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .clone()
    }

    /// The gauge of open market-data streams.
    pub fn active_streams(&self) -> Gauge {
        self.inner.active_streams.clone()
    }

    /// The client-stack metrics of calls to `peer`.
    pub fn peer(&self, peer: &str) -> PeerMetrics {
        let labels = PeerLabels {
            peer: peer.to_owned(),
        };
        let peers = &self.inner.peers;
        // Every series at 0 from the start, so that a rate over them exists before the first
        // retry or transition (alert rules and dashboards read them).
        for state in ["open", "half_open", "closed"] {
            let _ = peers.breaker_transitions.get_or_create(&TransitionLabels {
                peer: peer.to_owned(),
                state,
            });
        }
        PeerMetrics {
            peer: peer.to_owned(),
            retries: peers.retries.get_or_create(&labels).clone(),
            budget_exhausted: peers.budget_exhausted.get_or_create(&labels).clone(),
            breaker_state: peers.breaker_state.get_or_create(&labels).clone(),
            transitions: peers.breaker_transitions.clone(),
        }
    }

    /// Adds families rendered by `source` to every scrape (for counters kept outside this
    /// registry, such as the cache's).
    pub fn add_text_source(&self, source: TextSource) {
        self.inner
            .extra
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(source);
    }

    /// The metrics in the OpenMetrics text exposition format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        {
            let registry = self
                .inner
                .registry
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            // Writing into a String cannot fail.
            let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
        }
        let extra = self.inner.extra.read().unwrap_or_else(|e| e.into_inner());
        // The other families go before the closing `# EOF`: the process's own under the
        // standard names (what the stock dashboards and the Go and Python clients export),
        // then the added sources.
        let end = text.rfind("# EOF").unwrap_or(text.len());
        let mut more = process_text();
        for source in extra.iter() {
            more.push_str(&source());
        }
        text.insert_str(end, &more);
        text
    }

    /// The tower layer that records every call of a server.
    pub fn layer(&self) -> MetricsLayer {
        MetricsLayer {
            metrics: self.clone(),
            side: Side::Server,
        }
    }

    /// The tower layer that records every call of a client stack, as the caller sees it.
    pub fn client_layer(&self) -> MetricsLayer {
        MetricsLayer {
            metrics: self.clone(),
            side: Side::Client,
        }
    }

    /// The metrics in the classic Prometheus text format (0.0.4), what `promtool check metrics`
    /// and most scrapers read: [`Metrics::encode`]'s OpenMetrics converted.
    pub fn encode_prometheus(&self) -> String {
        prometheus_text(&self.encode())
    }

    /// Serves `GET /metrics` on `listener` until `shutdown`: OpenMetrics when the scraper asks
    /// for it (`Accept: application/openmetrics-text`, as Prometheus does), the Prometheus text
    /// format otherwise.
    pub fn serve(
        &self,
        listener: TcpListener,
        shutdown: &Shutdown,
    ) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
        let addr = listener.local_addr()?;
        let metrics = self.clone();
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move |headers: http::HeaderMap| {
                let metrics = metrics.clone();
                async move {
                    let openmetrics = headers
                        .get_all(http::header::ACCEPT)
                        .iter()
                        .filter_map(|v| v.to_str().ok())
                        .any(|v| v.contains("application/openmetrics-text"));
                    if openmetrics {
                        (
                            [(
                                "content-type",
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            )],
                            metrics.encode(),
                        )
                    } else {
                        (
                            [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
                            metrics.encode_prometheus(),
                        )
                    }
                }
            }),
        );
        let shutdown = shutdown.clone();
        let task = tokio::spawn(async move {
            let stopped = async move { shutdown.wait().await };
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(stopped)
                .await
            {
                tracing::warn!(error = %e, "metrics endpoint stopped");
            }
        });
        tracing::info!(%addr, "metrics served at /metrics");
        Ok((addr, task))
    }
}

/// OpenMetrics text as the Prometheus text format 0.0.4: a counter family `x` (samples
/// `x_total`) is declared as `x_total`, its `x_created` samples are left out, `# UNIT` and
/// `# EOF` go, `unknown` is `untyped`, and exemplars (after ` # ` on a sample line) are cut.
pub fn prometheus_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut counters: std::collections::HashSet<&str> = std::collections::HashSet::new();
    // HELP comes before TYPE in OpenMetrics; the counter's new name is known at TYPE.
    let mut help: Option<(&str, &str)> = None;
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            if let Some((name, text)) = help.take() {
                out.push_str(&format!("# HELP {name} {text}\n"));
            }
            let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
            help = Some((name, text));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let (name, kind) = match kind {
                "counter" => {
                    counters.insert(name);
                    (format!("{name}_total"), "counter")
                }
                "unknown" => (name.to_owned(), "untyped"),
                other => (name.to_owned(), other),
            };
            if let Some((_, text)) = help.take() {
                out.push_str(&format!("# HELP {name} {text}\n"));
            }
            out.push_str(&format!("# TYPE {name} {kind}\n"));
        } else if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        } else if line.starts_with('#') {
            out.push_str(line);
            out.push('\n');
        } else if !line.is_empty() {
            let name_end = line.find(['{', ' ']).unwrap_or(line.len());
            let name = &line[..name_end];
            if name
                .strip_suffix("_created")
                .is_some_and(|family| counters.contains(family))
            {
                continue;
            }
            // An exemplar follows the value; label values may hold " # " themselves.
            let labels_end = if line[name_end..].starts_with('{') {
                label_set_end(line, name_end)
            } else {
                name_end
            };
            let sample = line[labels_end..]
                .find(" # ")
                .map_or(line, |at| &line[..labels_end + at]);
            out.push_str(sample);
            out.push('\n');
        }
    }
    if let Some((name, text)) = help {
        out.push_str(&format!("# HELP {name} {text}\n"));
    }
    out
}

/// Clock ticks per second of /proc's CPU times (USER_HZ): 100 on every Linux architecture
/// tickmesh is built for (x86_64, aarch64); the kernel's own HZ does not change it.
const USER_HZ: f64 = 100.0;

/// The standard process metrics (`process_cpu_seconds_total`, `process_resident_memory_bytes`,
/// `process_virtual_memory_bytes`, `process_open_fds`, `process_max_fds`,
/// `process_start_time_seconds`), read from /proc, in OpenMetrics text. A value /proc does not
/// give (not Linux) is left out.
fn process_text() -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, value: Option<f64>| {
        if let Some(value) = value {
            let sample = if kind == "counter" {
                format!("{name}_total")
            } else {
                name.to_owned()
            };
            let _ = writeln!(
                out,
                "# HELP {name} {help}.\n# TYPE {name} {kind}\n{sample} {value}"
            );
        }
    };
    let stat = std::fs::read_to_string("/proc/self/stat").ok();
    // The fields after the command name (which may hold spaces): state is the first.
    let fields: Vec<&str> = stat
        .as_deref()
        .and_then(|s| s.rsplit_once(')'))
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let field = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    // utime and stime are fields 14 and 15 of stat(5), starttime 22, vsize 23: here 11, 12,
    // 19 and 20 (the list starts at field 3).
    let cpu = field(11).zip(field(12)).map(|(u, s)| (u + s) / USER_HZ);
    family(
        "process_cpu_seconds",
        "counter",
        "Total user and system CPU time spent in seconds",
        cpu,
    );
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<f64>().ok())
        });
    family(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes",
        pages.map(|p| p * 4096.0),
    );
    family(
        "process_virtual_memory_bytes",
        "gauge",
        "Virtual memory size in bytes",
        field(20),
    );
    let fds = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|entries| entries.count() as f64);
    family(
        "process_open_fds",
        "gauge",
        "Number of open file descriptors",
        fds,
    );
    let max_fds = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| {
            limits
                .lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|v| v.parse::<f64>().ok())
        });
    family(
        "process_max_fds",
        "gauge",
        "Maximum number of open file descriptors",
        max_fds,
    );
    let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse::<f64>().ok())
    });
    family(
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since unix epoch in seconds",
        boot.zip(field(19))
            .map(|(boot, ticks)| boot + ticks / USER_HZ),
    );
    out
}

/// The byte after the `}` closing the label set that opens at `open` (quoted values may hold
/// braces and escaped quotes).
fn label_set_end(line: &str, open: usize) -> usize {
    let (mut quoted, mut escaped) = (false, false);
    for (i, c) in line[open..].char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '}' if !quoted => return open + i + 1,
            _ => {}
        }
    }
    line.len()
}

/// Records RED metrics of the calls passing through.
#[derive(Clone, Debug)]
pub struct MetricsLayer {
    metrics: Metrics,
    side: Side,
}

impl<S> tower::Layer<S> for MetricsLayer {
    type Service = Layered<Self, S>;

    fn layer(&self, inner: S) -> Self::Service {
        Layered::new(self.clone(), inner)
    }
}

impl<S, B, R> OnCall<S, B> for MetricsLayer
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Unpin,
{
    // No box of its own: the inner call, counted when it completes.
    type Future = Measured<S::Future>;

    fn call(&self, inner: &mut S, request: http::Request<B>) -> Self::Future {
        let method = self
            .metrics
            .method(self.side, request.uri().path(), Entry::of(&request));
        method.active.inc();
        Measured {
            call: inner.call(request),
            metrics: Some((method, Instant::now())),
        }
    }
}

/// The trace of the span the caller is in, when it is recorded (the RPC span the trace layer
/// opened around this call); `None` at the cost of one atomic load when nothing is exported.
fn current_trace() -> Option<TraceLabels> {
    use opentelemetry::trace::TraceContextExt as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    if !super::logging::exporting_spans() {
        return None;
    }
    let span = tracing::Span::current();
    if span.is_none() || span.is_disabled() {
        return None;
    }
    let context = span.context();
    let ids = context.span().span_context().clone();
    (ids.is_valid() && ids.is_sampled()).then(|| TraceLabels {
        trace_id: ids.trace_id().to_string(),
        span_id: ids.span_id().to_string(),
    })
}

/// A call whose outcome and latency are recorded when it completes.
pub struct Measured<F> {
    call: F,
    /// Taken when recorded.
    metrics: Option<(Arc<MethodMetrics>, Instant)>,
}

impl<F, R, E> Future for Measured<F>
where
    F: Future<Output = Result<http::Response<R>, E>> + Unpin,
{
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let response = std::task::ready!(Pin::new(&mut self.call).poll(cx));
        if let Some((method, started)) = self.metrics.take() {
            method.active.dec();
            let elapsed = started.elapsed().as_secs_f64();
            let code = match &response {
                Ok(r) => r
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .map_or("OK", code_name),
                // The transport failed before any status: UNKNOWN.
                Err(_) => "UNKNOWN",
            };
            let exemplar = current_trace();
            if code == "OK" {
                method.ok.observe(elapsed, exemplar, None);
            } else {
                let labels = CallLabels {
                    rpc_system_name: "grpc",
                    rpc_service: method.labels.rpc_service.clone(),
                    rpc_method: method.labels.rpc_method.clone(),
                    rpc_response_status_code: code,
                };
                method
                    .durations
                    .get_or_create(&labels)
                    .observe(elapsed, exemplar, None);
            }
        }
        Poll::Ready(response)
    }
}

impl<F> Drop for Measured<F> {
    fn drop(&mut self) {
        // A call dropped before it completed (the client went away) leaves the active count.
        if let Some((method, _)) = self.metrics.take() {
            method.active.dec();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::prometheus_text;

    #[test]
    fn openmetrics_counters_become_prometheus_text_counters() {
        let openmetrics = "# HELP calls Calls served.\n# TYPE calls counter\n# UNIT calls calls\n\
                           calls_total{method=\"a # b\"} 3 # {trace_id=\"abc\"} 1.0\n\
                           calls_created{method=\"a # b\"} 1700000000.0\n\
                           # HELP up Whether it is up.\n# TYPE up gauge\nup 1\n\
                           # TYPE odd unknown\nodd 2\n# EOF\n";
        assert_eq!(
            prometheus_text(openmetrics),
            "# HELP calls_total Calls served.\n# TYPE calls_total counter\n\
             calls_total{method=\"a # b\"} 3\n\
             # HELP up Whether it is up.\n# TYPE up gauge\nup 1\n\
             # TYPE odd untyped\nodd 2\n"
        );
    }
}
