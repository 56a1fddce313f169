//! A gRPC load generator in the spirit of ghz, with its own baseline.
//!
//! It calls one unary RPC (`--call package.Service/Method`, request as proto3 JSON in `--data`,
//! encoded through the descriptors compiled into tickmesh) with `--concurrency` callers over
//! `--connections` HTTP/2 connections, for `--duration` or `--requests`, closed loop or at a
//! fixed `--rate` (open loop: a request that could not be sent when it was due, because its
//! caller was still waiting on the server, counts its latency from the due time, so a stalled
//! server cannot hide its queue — coordinated omission corrected; a caller that was idle and
//! only released late by the pacer thread counts from the send). After a warm-up it records
//! an HDR histogram (p50/p90/p99/p99.9) and errors by status code, with a progress bar. Then it
//! runs the same load against a bare echo server it starts itself (same request bytes) and
//! reports every figure also as a ratio to that baseline. `--json FILE` writes the result.
//!
//! `--serve-echo ADDR` only serves the echo RPC (`/tickmesh.bench.Echo/Echo`), e.g. for a
//! cross-check with h2load (`--reply-bytes N`: it answers a message of N bytes instead of the
//! request, the floor of an answer of that size); `--encode-request FILE` writes the request of
//! `--call`/`--data` as one gRPC frame (what `h2load -d` sends) and exits; `--serve-sink ADDR`
//! serves a stand-in OTLP trace receiver that counts the spans it gets (printed as `spans received: N` when it stops) and
//! discards them (to measure a traced mesh without a collector); `--echo-only` measures only the echo baseline (request bytes from
//! `--call`/`--data`). The JSON has each run's percentile distribution (p50 to p99.99, for a
//! latency chart) besides the summary figures.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::{Buf, BufMut};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage};
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;

/// Path of the echo RPC of the baseline server.
pub const ECHO_PATH: &str = "/tickmesh.bench.Echo/Echo";

/// Messages as raw bytes: the load generator never decodes what it sends or receives.
#[derive(Debug, Clone, Copy, Default)]
struct Raw;

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;

    fn encoder(&mut self) -> Raw {
        Raw
    }

    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

/// What one of the bare unary servers of this tool answers: the echo baseline and the stand-in
/// OTLP trace receiver differ only in this.
trait Answer: Send + 'static {
    /// The gRPC service it serves.
    const SERVICE: &'static str;
    /// The one method path it answers, or `None` for every method of [`Answer::SERVICE`].
    const PATH: Option<&'static str>;
    fn answer(request: Vec<u8>) -> Vec<u8>;
}

/// The echo server: answers every `Echo` call with its request, or with a message of
/// `--reply-bytes` bytes when that is set (the floor of an answer of a given size).
struct Echo;

/// `--reply-bytes` of `--serve-echo`.
static REPLY_BYTES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();

impl Answer for Echo {
    const SERVICE: &'static str = "tickmesh.bench.Echo";
    const PATH: Option<&'static str> = Some(ECHO_PATH);
    fn answer(request: Vec<u8>) -> Vec<u8> {
        match REPLY_BYTES.get() {
            Some(&n) => vec![0; n],
            None => request,
        }
    }
}

/// A stand-in OTLP trace receiver: takes every `TraceService/Export` call and answers with an
/// empty (successful) response, so that a traced process exports for real without a collector.
struct Sink;

impl Answer for Sink {
    const SERVICE: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
    const PATH: Option<&'static str> = None;
    fn answer(request: Vec<u8>) -> Vec<u8> {
        SPANS_RECEIVED.fetch_add(count_spans(&request), std::sync::atomic::Ordering::Relaxed);
        Vec::new()
    }
}

/// Spans the sink was sent, printed when it stops (so a run can check that none was dropped).
static SPANS_RECEIVED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The length-delimited fields numbered `field` of a protobuf message (others skipped; a
/// malformed message ends the walk).
fn fields(message: &[u8], field: u32) -> Vec<&[u8]> {
    use prost::encoding::{DecodeContext, WireType, decode_key, decode_varint, skip_field};
    let mut found = Vec::new();
    let mut buf = message;
    while !buf.is_empty() {
        let Ok((tag, wire_type)) = decode_key(&mut buf) else {
            break;
        };
        if wire_type == WireType::LengthDelimited {
            let len = decode_varint(&mut buf)
                .ok()
                .and_then(|n| usize::try_from(n).ok());
            let Some(len) = len.filter(|&n| n <= buf.len()) else {
                break;
            };
            if tag == field {
                found.push(&buf[..len]);
            }
            buf = &buf[len..];
        } else if skip_field(wire_type, tag, &mut buf, DecodeContext::default()).is_err() {
            break;
        }
    }
    found
}

/// Spans in an `ExportTraceServiceRequest`: resource_spans (1) / scope_spans (2) / spans (2).
fn count_spans(request: &[u8]) -> u64 {
    fields(request, 1)
        .into_iter()
        .flat_map(|resource| fields(resource, 2))
        .map(|scope| fields(scope, 2).len() as u64)
        .sum()
}

/// A bare tonic service answering as `A` does (raw bytes in and out, gzip accepted).
struct Bare<A>(std::marker::PhantomData<fn() -> A>);

impl<A> Clone for Bare<A> {
    fn clone(&self) -> Self {
        Bare(std::marker::PhantomData)
    }
}

impl<A: Answer> tonic::server::NamedService for Bare<A> {
    const NAME: &'static str = A::SERVICE;
}

impl<A: Answer> tonic::server::UnaryService<Vec<u8>> for Bare<A> {
    type Response = Vec<u8>;
    type Future = std::future::Ready<Result<tonic::Response<Vec<u8>>, Status>>;

    fn call(&mut self, request: tonic::Request<Vec<u8>>) -> Self::Future {
        std::future::ready(Ok(tonic::Response::new(A::answer(request.into_inner()))))
    }
}

impl<A: Answer> tower::Service<http::Request<tonic::body::Body>> for Bare<A> {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let service = self.clone();
        Box::pin(async move {
            if A::PATH.is_some_and(|path| request.uri().path() != path) {
                return Ok(Status::unimplemented("no such method here").into_http());
            }
            let mut grpc = tonic::server::Grpc::new(Raw)
                .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
            Ok(grpc.unary(service, request).await)
        })
    }
}

/// Serves [`Bare<A>`] on `addr` (port 0: any free port) from this runtime; returns the address.
async fn serve<A: Answer>(addr: SocketAddr) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(Bare::<A>(std::marker::PhantomData))
            .serve_with_incoming(incoming),
    );
    Ok(bound)
}

/// `load --serve-echo 127.0.0.1:0` in a child process, killed on drop.
struct EchoProcess {
    child: std::process::Child,
    addr: String,
}

impl EchoProcess {
    fn start() -> anyhow::Result<EchoProcess> {
        use std::io::BufRead as _;
        let mut child = std::process::Command::new(std::env::current_exe()?)
            .args(["--serve-echo", "127.0.0.1:0"])
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().context("echo server stdout")?;
        let mut line = String::new();
        std::io::BufReader::new(stdout).read_line(&mut line)?;
        // "echo server on ADDR (...)"
        let addr = line
            .split_whitespace()
            .nth(3)
            .with_context(|| format!("echo server said {line:?}"))?
            .to_owned();
        Ok(EchoProcess { child, addr })
    }
}

impl Drop for EchoProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug, Clone)]
struct Args {
    target: Option<String>,
    call: String,
    data: String,
    metadata: Vec<(String, String)>,
    concurrency: usize,
    connections: usize,
    duration: Duration,
    requests: Option<u64>,
    rate: Option<f64>,
    warmup: Duration,
    json: Option<std::path::PathBuf>,
    serve_echo: Option<SocketAddr>,
    serve_sink: Option<SocketAddr>,
    no_baseline: bool,
    echo_only: bool,
    reply_bytes: Option<usize>,
    encode_request: Option<std::path::PathBuf>,
}

fn parse() -> anyhow::Result<Args> {
    let mut a = Args {
        target: None,
        call: String::new(),
        data: "{}".into(),
        metadata: Vec::new(),
        concurrency: 32,
        connections: 4,
        duration: Duration::from_secs(5),
        requests: None,
        rate: None,
        warmup: Duration::from_secs(1),
        json: None,
        serve_echo: None,
        serve_sink: None,
        no_baseline: false,
        echo_only: false,
        reply_bytes: None,
        encode_request: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--target" => a.target = Some(value()?),
            "--call" => a.call = value()?,
            "--data" => a.data = value()?,
            "--metadata" | "-H" => {
                let v = value()?;
                let (k, val) = v
                    .split_once(':')
                    .with_context(|| format!("{v}: want key:value"))?;
                a.metadata
                    .push((k.trim().to_ascii_lowercase(), val.trim().to_owned()));
            }
            "--concurrency" | "-c" => a.concurrency = value()?.parse()?,
            "--connections" => a.connections = value()?.parse()?,
            "--duration" | "-z" => a.duration = Duration::from_secs_f64(value()?.parse()?),
            "--requests" | "-n" => a.requests = Some(value()?.parse()?),
            "--rate" | "-r" => a.rate = Some(value()?.parse()?),
            "--warmup" => a.warmup = Duration::from_secs_f64(value()?.parse()?),
            "--json" => a.json = Some(value()?.into()),
            "--serve-echo" => a.serve_echo = Some(value()?.parse()?),
            "--serve-sink" => a.serve_sink = Some(value()?.parse()?),
            "--no-baseline" => a.no_baseline = true,
            "--echo-only" => a.echo_only = true,
            "--reply-bytes" => a.reply_bytes = Some(value()?.parse()?),
            "--encode-request" => a.encode_request = Some(value()?.into()),
            other => bail!("unknown argument {other}"),
        }
    }
    a.concurrency = a.concurrency.max(1);
    a.connections = a.connections.clamp(1, a.concurrency);
    Ok(a)
}

/// The request message of `call` (`pkg.Service/Method`) from proto3 JSON.
fn encode_request(call: &str, json: &str) -> anyhow::Result<Vec<u8>> {
    let pool = DescriptorPool::decode(tickmesh_proto::FILE_DESCRIPTOR_SET)?;
    let (service, method) = call
        .trim_start_matches('/')
        .split_once('/')
        .with_context(|| format!("--call {call}: want package.Service/Method"))?;
    let service = pool
        .get_service_by_name(service)
        .with_context(|| format!("no service {service} in the tickmesh contracts"))?;
    let method = service
        .methods()
        .find(|m| m.name() == method)
        .with_context(|| format!("{} has no method {method}", service.full_name()))?;
    if method.is_client_streaming() || method.is_server_streaming() {
        bail!("{call} streams; the load generator calls unary RPCs");
    }
    let mut deserializer = serde_json::Deserializer::from_str(json);
    let message = DynamicMessage::deserialize(method.input(), &mut deserializer)
        .with_context(|| format!("--data is not a {}", method.input().full_name()))?;
    Ok(message.encode_to_vec())
}

/// What one run measured.
#[derive(Debug)]
struct Run {
    histogram: Histogram<u64>,
    ok: u64,
    errors: BTreeMap<String, u64>,
    elapsed: Duration,
    /// Size of the last successful response's message (a check that the call returns what
    /// it should, e.g. a page of 500 candles).
    response_bytes: usize,
}

impl Run {
    fn rate(&self) -> f64 {
        (self.ok + self.errors.values().sum::<u64>()) as f64 / self.elapsed.as_secs_f64()
    }

    fn quantile_ms(&self, q: f64) -> f64 {
        self.histogram.value_at_quantile(q) as f64 / 1000.0
    }
}

async fn channels(addr: &str, n: usize) -> anyhow::Result<Vec<Channel>> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(
            Channel::from_shared(format!("http://{addr}"))?
                .tcp_nodelay(true)
                .connect()
                .await
                .with_context(|| format!("cannot connect to {addr}"))?,
        );
    }
    Ok(out)
}

/// One measured run of `path` at `addr`.
async fn load(
    addr: &str,
    path: &str,
    body: &[u8],
    args: &Args,
    duration: Duration,
    progress: Option<&ProgressBar>,
) -> anyhow::Result<Run> {
    let channels = channels(addr, args.connections).await?;
    let path = http::uri::PathAndQuery::from_str(path)?;
    let metadata: Vec<(
        tonic::metadata::MetadataKey<tonic::metadata::Ascii>,
        tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
    )> = args
        .metadata
        .iter()
        .map(|(k, v)| Ok((k.parse()?, v.parse()?)))
        .collect::<anyhow::Result<_>>()?;
    let started = Instant::now();
    let deadline = started + duration;
    let issued = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let pacer = args
        .rate
        .map(|rate| Pacer::start(rate, started, deadline, stop.clone()));
    let mut tasks = Vec::new();
    for worker in 0..args.concurrency {
        let mut grpc = tonic::client::Grpc::new(channels[worker % channels.len()].clone());
        let (path, body, metadata) = (path.clone(), body.to_vec(), metadata.clone());
        let (issued, stop) = (issued.clone(), stop.clone());
        let (rate, limit) = (args.rate, args.requests);
        let permits = pacer.as_ref().map(|p| p.permits.clone());
        let progress = progress.cloned();
        tasks.push(tokio::spawn(async move {
            let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let mut errors: BTreeMap<String, u64> = BTreeMap::new();
            let mut ok = 0u64;
            let mut response_bytes = 0usize;
            let mut last_finish = Instant::now();
            loop {
                // Open loop: a call may start only with a permit, which the pacer releases
                // when the call is due (see `Pacer`).
                if let Some(permits) = &permits {
                    match permits.acquire().await {
                        Ok(permit) => permit.forget(),
                        Err(_) => break,
                    }
                }
                let slot = issued.fetch_add(1, Ordering::Relaxed);
                if stop.load(Ordering::Relaxed) || limit.is_some_and(|n| slot >= n) {
                    break;
                }
                // The call of this slot is due at its time. If this caller was still busy with
                // its previous call then (the server fell behind), the latency counts from the
                // due time, however late it could be sent: coordinated omission corrected. If
                // it was idle and only the pacer released it late, it counts from the send:
                // the generator's own lateness is not the server's.
                let due = match rate {
                    Some(rate) => {
                        let due = started + Duration::from_secs_f64(slot as f64 / rate);
                        if last_finish > due {
                            due
                        } else {
                            Instant::now()
                        }
                    }
                    None => Instant::now(),
                };
                if Instant::now() >= deadline && limit.is_none() {
                    stop.store(true, Ordering::Relaxed);
                    break;
                }
                let mut request = tonic::Request::new(body.clone());
                for (k, v) in &metadata {
                    request.metadata_mut().insert(k.clone(), v.clone());
                }
                let result = async {
                    grpc.ready()
                        .await
                        .map_err(|e| Status::unavailable(e.to_string()))?;
                    grpc.unary(request, path.clone(), Raw).await
                }
                .await;
                last_finish = Instant::now();
                let micros = last_finish.duration_since(due).as_micros().max(1) as u64;
                histogram.saturating_record(micros);
                match result {
                    Ok(response) => {
                        ok += 1;
                        response_bytes = response.get_ref().len();
                    }
                    Err(status) => *errors.entry(format!("{:?}", status.code())).or_default() += 1,
                }
                if let Some(p) = &progress {
                    p.inc(1);
                }
            }
            anyhow::Ok((histogram, ok, errors, response_bytes))
        }));
    }
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let (mut ok, mut errors, mut response_bytes) = (0, BTreeMap::new(), 0);
    let mut results = Vec::with_capacity(tasks.len());
    for task in tasks {
        results.push(task.await);
    }
    if let Some(pacer) = pacer {
        pacer.finish();
    }
    for task in results {
        let (h, o, e, bytes) = task??;
        response_bytes = response_bytes.max(bytes);
        histogram.add(&h)?;
        ok += o;
        for (code, n) in e {
            *errors.entry(code).or_insert(0) += n;
        }
    }
    Ok(Run {
        histogram,
        ok,
        errors,
        elapsed: started.elapsed(),
        response_bytes,
    })
}

/// The open loop's clock: a thread that releases one permit per call when the call is due,
/// `rate` per second from `started`, waking every [`Pacer::TICK`] at most (or at the next due
/// time, when that is later). tokio's timer has 1 ms ticks: callers sleeping until their due
/// times would all wake on the same tick and send a millisecond's calls as one burst, whose
/// queueing the latency figures would then show; a thread sleeping on the OS's high-resolution
/// timer spreads them over the millisecond.
struct Pacer {
    permits: Arc<tokio::sync::Semaphore>,
    thread: std::thread::JoinHandle<()>,
}

impl Pacer {
    const TICK: Duration = Duration::from_micros(100);

    fn start(rate: f64, started: Instant, deadline: Instant, stop: Arc<AtomicBool>) -> Pacer {
        let permits = Arc::new(tokio::sync::Semaphore::new(0));
        let released = permits.clone();
        let thread = std::thread::Builder::new()
            .name("load-pacer".into())
            .spawn(move || {
                let mut slot = 0u64;
                let due = |slot: u64| started + Duration::from_secs_f64(slot as f64 / rate);
                loop {
                    let now = Instant::now();
                    let mut n = 0;
                    while due(slot) <= now {
                        slot += 1;
                        n += 1;
                    }
                    if n > 0 {
                        released.add_permits(n);
                    }
                    if now >= deadline || stop.load(Ordering::Relaxed) || released.is_closed() {
                        break;
                    }
                    let next = due(slot).saturating_duration_since(Instant::now());
                    std::thread::sleep(next.max(Self::TICK));
                }
                // Callers still waiting learn that the run is over (they check the deadline
                // and the stop flag once they hold a permit).
                if !released.is_closed() {
                    released.add_permits(tokio::sync::Semaphore::MAX_PERMITS / 2);
                }
            })
            .expect("spawning the pacer thread");
        Pacer { permits, thread }
    }

    /// Stops the thread once every caller is done.
    fn finish(self) {
        self.permits.close();
        let _ = self.thread.join();
    }
}

fn bar(label: &str, args: &Args) -> ProgressBar {
    let bar = match args.requests {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::new_spinner(),
    };
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{spinner}} {label} [{{elapsed_precise}}] {{pos}} calls ({{per_sec}}) {{wide_bar}}"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

/// Latency at quantiles from p50 to p99.99, evenly spaced on a log scale of 1 / (1 - q) (the
/// usual HDR percentile plot), in milliseconds.
fn distribution(run: &Run) -> Vec<serde_json::Value> {
    // q = 1 - 0.5 * 10^(-k/20): p50 at k = 0, p99.99 at k = 74, twenty points per decade.
    (0..=74)
        .map(|k| {
            let q = 1.0 - 0.5 * 10f64.powf(-f64::from(k) / 20.0);
            serde_json::json!({"percentile": q * 100.0, "ms": run.quantile_ms(q)})
        })
        .collect()
}

fn report(run: &Run) -> serde_json::Value {
    serde_json::json!({
        "distribution": distribution(run),
        "calls_per_second": run.rate(),
        "ok": run.ok,
        "errors": run.errors,
        "p50_ms": run.quantile_ms(0.5),
        "p90_ms": run.quantile_ms(0.9),
        "p99_ms": run.quantile_ms(0.99),
        "p999_ms": run.quantile_ms(0.999),
        "max_ms": run.histogram.max() as f64 / 1000.0,
        "seconds": run.elapsed.as_secs_f64(),
        "response_bytes": run.response_bytes,
    })
}

/// `--echo-only`: the echo baseline alone, with the request bytes of `--call`/`--data`.
async fn echo_only(args: &Args) -> anyhow::Result<()> {
    let body = encode_request(&args.call, &args.data)?;
    let measured = args
        .requests
        .map_or(args.duration, |_| Duration::from_secs(3600));
    let echo = serve::<Echo>("127.0.0.1:0".parse()?).await?.to_string();
    load(&echo, ECHO_PATH, &body, args, args.warmup, None).await?;
    let progress = bar("echo", args);
    let run = load(&echo, ECHO_PATH, &body, args, measured, Some(&progress)).await?;
    progress.finish_and_clear();
    println!(
        "{ECHO_PATH} (bare tonic echo in this process), {} callers over {} connections, {} B: \
         {:.0} calls/s, p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, errors {:?}",
        args.concurrency,
        args.connections,
        body.len(),
        run.rate(),
        run.quantile_ms(0.5),
        run.quantile_ms(0.99),
        run.quantile_ms(0.999),
        run.errors
    );
    if let Some(path) = &args.json {
        let json = serde_json::json!({
            "call": ECHO_PATH,
            "target": echo,
            "mode": "closed loop",
            "concurrency": args.concurrency,
            "connections": args.connections,
            "request_bytes": body.len(),
            "target_result": report(&run),
        });
        std::fs::write(path, serde_json::to_string_pretty(&json)?)?;
        println!("JSON written to {}", path.display());
    }
    if run.ok == 0 {
        bail!("no echo call succeeded: {:?}", run.errors);
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = parse()?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        if let Some(path) = &args.encode_request {
            // The request as a gRPC frame (uncompressed, 4-byte length), e.g. for `h2load -d`.
            let message = encode_request(&args.call, &args.data)?;
            let mut frame = vec![0u8];
            frame.extend_from_slice(&u32::try_from(message.len())?.to_be_bytes());
            frame.extend_from_slice(&message);
            std::fs::write(path, frame)?;
            return Ok(());
        }
        if let Some(addr) = args.serve_echo {
            if let Some(n) = args.reply_bytes {
                let _ = REPLY_BYTES.set(n);
            }
            let bound = serve::<Echo>(addr).await?;
            println!("echo server on {bound} ({ECHO_PATH}); Ctrl-C stops it");
            tokio::signal::ctrl_c().await?;
            return Ok(());
        }
        if let Some(addr) = args.serve_sink {
            let bound = serve::<Sink>(addr).await?;
            println!("OTLP trace sink on {bound} (counts and discards every export); Ctrl-C stops it");
            tokio::signal::ctrl_c().await?;
            let spans = SPANS_RECEIVED.load(std::sync::atomic::Ordering::Relaxed);
            println!("spans received: {spans}");
            return Ok(());
        }
        if args.echo_only {
            return echo_only(&args).await;
        }
        let Some(target) = args.target.clone() else {
            bail!("--target HOST:PORT and --call package.Service/Method are needed (or --serve-echo ADDR)");
        };
        let body = encode_request(&args.call, &args.data)?;
        let path = format!("/{}", args.call.trim_start_matches('/'));
        let mode = match args.rate {
            Some(rate) => format!("open loop at {rate} calls/s"),
            None => "closed loop".into(),
        };
        let measured = args.requests.map_or(args.duration, |_| Duration::from_secs(3600));

        load(&target, &path, &body, &args, args.warmup, None).await?;
        let progress = bar(&args.call, &args);
        let run = load(&target, &path, &body, &args, measured, Some(&progress)).await?;
        progress.finish_and_clear();

        let baseline = if args.no_baseline {
            None
        } else {
            // The baseline server runs in a process of its own, as the server under test
            // does: served from this process, it would be spared the cross-process wake-ups
            // the target pays.
            let echo_process = EchoProcess::start()?;
            let echo = echo_process.addr.clone();
            load(&echo, ECHO_PATH, &body, &args, args.warmup, None).await?;
            let progress = bar("echo baseline", &args);
            let base = load(&echo, ECHO_PATH, &body, &args, measured, Some(&progress)).await?;
            progress.finish_and_clear();
            Some(base)
        };

        println!(
            "{} at {target}, {mode}, {} callers over {} connections, {} B request",
            args.call,
            args.concurrency,
            args.connections,
            body.len()
        );
        println!(
            "{:<14} {:>11} {:>9} {:>9} {:>9} {:>9} {:>9}  errors",
            "", "calls/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms"
        );
        let line = |name: &str, r: &Run| {
            println!(
                "{name:<14} {:>11.0} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}  {:?}",
                r.rate(),
                r.quantile_ms(0.5),
                r.quantile_ms(0.9),
                r.quantile_ms(0.99),
                r.quantile_ms(0.999),
                r.histogram.max() as f64 / 1000.0,
                r.errors
            );
        };
        line("target", &run);
        let mut json = serde_json::json!({
            "call": args.call,
            "target": target,
            "mode": mode,
            "rate": args.rate,
            "duration_s": measured.as_secs_f64(),
            "concurrency": args.concurrency,
            "connections": args.connections,
            "request_bytes": body.len(),
            "target_result": report(&run),
        });
        if let Some(base) = &baseline {
            line("echo baseline", base);
            let ratio = |f: &dyn Fn(&Run) -> f64| f(&run) / f(base);
            let ratios = serde_json::json!({
                "throughput": ratio(&|r| r.rate()),
                "p50": ratio(&|r| r.quantile_ms(0.5)),
                "p90": ratio(&|r| r.quantile_ms(0.9)),
                "p99": ratio(&|r| r.quantile_ms(0.99)),
                "p999": ratio(&|r| r.quantile_ms(0.999)),
            });
            println!(
                "target / echo: throughput {:.3}x, p50 {:.2}x, p90 {:.2}x, p99 {:.2}x, p99.9 {:.2}x",
                ratios["throughput"].as_f64().unwrap_or(f64::NAN),
                ratios["p50"].as_f64().unwrap_or(f64::NAN),
                ratios["p90"].as_f64().unwrap_or(f64::NAN),
                ratios["p99"].as_f64().unwrap_or(f64::NAN),
                ratios["p999"].as_f64().unwrap_or(f64::NAN),
            );
            json["baseline_result"] = report(base);
            json["ratio_to_baseline"] = ratios;
        }
        if let Some(path) = &args.json {
            std::fs::write(path, serde_json::to_string_pretty(&json)?)?;
            println!("JSON written to {}", path.display());
        }
        if run.ok == 0 {
            bail!("no call succeeded: {:?}", run.errors);
        }
        anyhow::Ok(())
    })
}

#[cfg(test)]
mod tests {
    /// A length-delimited field: key, length, bytes.
    fn field(number: u8, bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![(number << 3) | 2, u8::try_from(bytes.len()).unwrap()];
        out.extend_from_slice(bytes);
        out
    }

    #[test]
    fn spans_are_counted_through_resource_and_scope() {
        let span = field(2, &field(1, b"0123456789abcdef"));
        // A scope with two spans and its own scope field (1), a resource with that scope twice.
        let scope = [field(1, b"scope"), span.clone(), span].concat();
        let resource = [field(1, b"resource"), field(2, &scope), field(2, &scope)].concat();
        let request = [field(1, &resource), vec![0x10, 0x01]].concat();
        assert_eq!(super::count_spans(&request), 4);
        assert_eq!(
            super::count_spans(&request[..request.len() / 2]),
            0,
            "a cut message"
        );
    }
}
