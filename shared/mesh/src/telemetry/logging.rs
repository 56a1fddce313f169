//! Structured logs and traces for every tickmesh process.
//!
//! Logs go to stderr (stdout stays free for command output), as JSON lines or human-readable
//! text. Traces go over OTLP/gRPC when the standard `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, and are off otherwise; the other standard
//! variables apply too (`OTEL_SERVICE_NAME`, `OTEL_TRACES_SAMPLER` with
//! `OTEL_TRACES_SAMPLER_ARG`, `OTEL_BSP_SCHEDULE_DELAY`, `OTEL_SDK_DISABLED`). Jaeger takes OTLP
//! directly on port 4317.

use std::io::IsTerminal;

use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::fmt::format::{Format, Json, JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry, reload};

/// Output format of the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines on a terminal, JSON otherwise.
    Auto,
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The installed telemetry; [`Telemetry::shutdown`] flushes the spans still pending.
#[derive(Debug, Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    /// Swaps the log filter at run time.
    filter: Option<reload::Handle<EnvFilter, Registry>>,
    /// The filter of the command line (`--log`, TICKMESH_LOG).
    base: String,
}

/// Warnings of the HTTP/2 stack (h2, hyper) about what a peer did, such as a connection
/// cut for too many stream resets: counted here, logged at most once per [`QUIET_EVERY`].
static PROTOCOL_WARNINGS: std::sync::LazyLock<prometheus_client::metrics::counter::Counter> =
    std::sync::LazyLock::new(Default::default);
/// How often one protocol warning reaches the log at most.
pub const QUIET_EVERY: std::time::Duration = std::time::Duration::from_secs(10);
static LAST_PROTOCOL_LOG: std::sync::Mutex<Option<std::time::Instant>> =
    std::sync::Mutex::new(None);

/// Whether this process exports spans (an OTLP endpoint is configured and the layer installed):
/// the metrics layer looks for a trace to attach as an exemplar only then.
static EXPORTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether spans of this process go to OTLP.
pub fn exporting_spans() -> bool {
    EXPORTING.load(std::sync::atomic::Ordering::Relaxed)
}

/// The counter of the HTTP/2 stack's warnings (`tickmesh_protocol_warnings_total`).
pub fn protocol_warnings() -> &'static prometheus_client::metrics::counter::Counter {
    &PROTOCOL_WARNINGS
}

/// Whether an event goes to the log: the HTTP/2 stack's warnings (a peer can cause one per
/// connection, thousands a second) are counted and let through once per [`QUIET_EVERY`].
fn not_a_flood(meta: &tracing::Metadata<'_>) -> bool {
    if !protocol_warning(meta) {
        return true;
    }
    PROTOCOL_WARNINGS.inc();
    let mut last = LAST_PROTOCOL_LOG.lock().unwrap_or_else(|e| e.into_inner());
    let due = last.is_none_or(|at| at.elapsed() >= QUIET_EVERY);
    if due {
        *last = Some(std::time::Instant::now());
    }
    due
}

/// A warning (or error) event of the HTTP/2 stack.
fn protocol_warning(meta: &tracing::Metadata<'_>) -> bool {
    let target = meta.target();
    (target.starts_with("h2") || target.starts_with("hyper"))
        && meta.is_event()
        && *meta.level() <= tracing::Level::WARN
}

/// [`not_a_flood`] as a per-layer filter: asked at every protocol warning (its answer changes
/// with time), never for anything else (which it always lets through).
fn quiet_filter<S>() -> impl tracing_subscriber::layer::Filter<S> {
    use tracing_subscriber::filter::DynFilterFn;
    DynFilterFn::new(|meta, _cx| not_a_flood(meta)).with_callsite_filter(|meta| {
        if protocol_warning(meta) {
            tracing::subscriber::Interest::sometimes()
        } else {
            tracing::subscriber::Interest::always()
        }
    })
}

/// The filter for `directives`, with per-RPC spans off unless the directives name them.
fn log_filter(directives: &str) -> Result<EnvFilter, String> {
    let directives = if directives.contains(super::trace::RPC_TARGET) {
        directives.to_owned()
    } else {
        format!("{directives},{}=off", super::trace::RPC_TARGET)
    };
    EnvFilter::try_new(&directives).map_err(|e| e.to_string())
}

impl Telemetry {
    /// Whether spans are exported over OTLP.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Follows `log_filter` in the configuration: at once, and on every change for as long as
    /// the configuration lives (an empty value means the command line's filter).
    pub fn follow_config(&self, config: &crate::ConfigHandle) {
        let Some(handle) = self.filter.clone() else {
            return;
        };
        let base = self.base.clone();
        let mut updates = config.subscribe();
        tokio::spawn(async move {
            let mut applied = base.clone();
            loop {
                let wanted = {
                    let snapshot = updates.borrow_and_update();
                    if snapshot.config.log_filter.is_empty() {
                        base.clone()
                    } else {
                        snapshot.config.log_filter.clone()
                    }
                };
                if wanted != applied {
                    match log_filter(&wanted).map(|f| handle.reload(f)) {
                        Ok(Ok(())) => {
                            tracing::info!(filter = wanted, "log filter changed");
                            applied = wanted;
                        }
                        Ok(Err(e)) => tracing::warn!(error = %e, "log filter not changed"),
                        Err(e) => tracing::warn!(error = %e, "log filter not changed"),
                    }
                }
                if updates.changed().await.is_err() {
                    return;
                }
            }
        });
    }

    /// Exports the spans still pending and stops the exporter. Call it inside the runtime, before
    /// the runtime shuts down.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(e) = provider.shutdown()
        {
            tracing::warn!(error = %e, "flushing traces on shutdown failed");
        }
    }
}

fn otlp_configured() -> bool {
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    !disabled && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

/// The OTLP tracer provider, when an endpoint is configured. Must run inside a tokio runtime
/// (the gRPC exporter's connection lives on it).
fn tracer_provider(service_name: &str) -> Result<Option<SdkTracerProvider>, String> {
    if !otlp_configured() {
        return Ok(None);
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()
        .map_err(|e| format!("OTLP exporter: {e}"))?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    if std::env::var("OTEL_SERVICE_NAME").is_err() {
        resource = resource.with_service_name(service_name.to_owned());
    }
    Ok(Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build(),
    ))
}

/// The JSON event format with the trace and span ids of the span the event happened in (when
/// traces are on and it is part of one), as `trace_id` / `span_id` in W3C hex: a log line of a
/// request leads to its trace in Jaeger, and back.
struct WithTraceIds(Format<Json>);

impl<S, N> FormatEvent<S, N> for WithTraceIds
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        let context = tracing::Span::current().context();
        let span = context.span();
        let ids = span.span_context();
        // The object's closing brace (the line ends with "}\n").
        match line.rfind('}') {
            Some(end) if ids.is_valid() => {
                writer.write_str(&line[..end])?;
                write!(
                    writer,
                    ",\"trace_id\":\"{}\",\"span_id\":\"{}\"",
                    ids.trace_id(),
                    ids.span_id()
                )?;
                writer.write_str(&line[end..])
            }
            _ => writer.write_str(&line),
        }
    }
}

/// Installs the global subscriber: level from `filter` (e.g. `info,tickmesh=debug`), logs on
/// stderr, and OTLP traces under `service_name` (unless `OTEL_SERVICE_NAME` says otherwise) when
/// an endpoint is configured. A second call (tests starting several apps) keeps the first
/// subscriber.
pub fn init(filter: &str, format: LogFormat, service_name: &str) -> Telemetry {
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    // Per-RPC spans are for traces, not for the log, unless the filter names them.
    let base = filter.to_owned();
    let filter = log_filter(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    // One filter, both conditions: two nested per-layer filters do not combine their
    // callsite interest, so every callsite the log filter turns off (every `trace!` span of h2
    // and hyper) was still created and asked at run time, on every poll: GetLatestPrices ran at
    // 0.40x of the echo instead of 0.9x. The quiet filter goes first, so a protocol warning is
    // counted even when the log filter hides it.
    use tracing_subscriber::filter::FilterExt as _;
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let (provider, problem) = match tracer_provider(service_name) {
        Ok(provider) => (provider, None),
        Err(e) => (None, Some(e)),
    };
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false);
    let fmt: Box<dyn Layer<Registry> + Send + Sync> = match (json, provider.is_some()) {
        // Traces on: every JSON line says which trace and span it belongs to.
        (true, true) => fmt
            .fmt_fields(JsonFields::new())
            .event_format(WithTraceIds(
                tracing_subscriber::fmt::format()
                    .json()
                    .flatten_event(true)
                    .with_target(false),
            ))
            .with_filter(quiet_filter().and(filter))
            .boxed(),
        (true, false) => fmt
            .json()
            .flatten_event(true)
            .with_filter(quiet_filter().and(filter))
            .boxed(),
        (false, _) => fmt
            .compact()
            .with_filter(quiet_filter().and(filter))
            .boxed(),
    };
    let otel = provider.as_ref().map(|provider| {
        EXPORTING.store(true, std::sync::atomic::Ordering::Relaxed);
        // Spans carry the RPC attributes and nothing per span that costs without telling an
        // operator anything: no source location, thread, target or busy/idle times (two clock
        // reads per poll), and the OpenTelemetry context is not made current on every poll
        // (nothing here reads `Context::current`; propagation and the log and exemplar ids go
        // through the tracing span).
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("tickmesh"))
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_tracked_inactivity(false)
            .with_context_activation(false)
            .with_filter(tracing_subscriber::filter::LevelFilter::INFO)
            .boxed()
    });
    // Only the layers in use: a placeholder layer would declare interest in every callsite,
    // and the registry would then build a span for every RPC (and evaluate every `trace!` of
    // h2 and tonic) with nobody to see them, about a fifth of a small RPC's cost.
    let mut layers = vec![fmt];
    layers.extend(otel);
    let installed = tracing_subscriber::registry()
        .with(layers)
        .try_init()
        .is_ok();
    if let Some(problem) = problem {
        tracing::warn!(error = %problem, "traces are off");
    } else if provider.is_some() && installed {
        tracing::info!(service = service_name, "exporting traces over OTLP");
    }
    Telemetry {
        provider: provider.filter(|_| installed),
        filter: installed.then_some(handle),
        base,
    }
}
