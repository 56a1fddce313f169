//! Measures how long `tickmesh up` takes from process spawn until all four services answer a
//! gRPC health check with SERVING, and from SIGTERM until the process has exited. The baseline,
//! measured in the same run, is spawn-to-exit of `tickmesh --version`: the cost of starting the
//! process at all.
//!
//! Usage: cargo run --release -p tickmesh-benches --bin startup -- [--runs N] [--bin PATH]
//! [--json FILE]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

fn main() -> anyhow::Result<()> {
    let mut runs = 20usize;
    let mut json: Option<PathBuf> = None;
    let mut bin = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/tickmesh");
    if let Ok(dir) = std::env::var("CARGO_TARGET_DIR") {
        bin = PathBuf::from(dir).join("release/tickmesh");
    }
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--runs" => runs = args.next().context("--runs N")?.parse()?,
            "--bin" => bin = args.next().context("--bin PATH")?.into(),
            "--json" => json = Some(args.next().context("--json FILE")?.into()),
            other => bail!("unknown argument {other}"),
        }
    }
    anyhow::ensure!(runs >= 1, "--runs must be at least 1");
    if !bin.exists() {
        bail!(
            "{} not found: build it first with `cargo build --release`",
            bin.display()
        );
    }
    let runtime = tokio::runtime::Runtime::new()?;

    let mut baseline = Vec::with_capacity(runs);
    let mut serving = Vec::with_capacity(runs);
    let mut stopping = Vec::with_capacity(runs);
    // What `up` logs (warnings and errors), shown when a run fails.
    let log = std::env::temp_dir().join(format!("tickmesh-startup-{}.log", std::process::id()));
    for run in 0..runs {
        let started = Instant::now();
        let status = Command::new(&bin)
            .arg("--version")
            .stdout(Stdio::null())
            .status()?;
        anyhow::ensure!(status.success(), "tickmesh --version failed");
        baseline.push(started.elapsed());

        // The four services' ports, and the one before them: the dashboard's (`up` serves it on
        // base - 1). Checking only the four let a taken dashboard port stop `up` at start, which
        // then looked like a refused or GOAWAY'd health check.
        let base = free_consecutive_ports(5)? + 1;
        let started = Instant::now();
        let mut child = Command::new(&bin)
            .args(["up", "--base-port", &base.to_string()])
            .env("TICKMESH_METRICS_ADDR", "127.0.0.1:0")
            .env("TICKMESH_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()?;
        if let Err(e) = runtime.block_on(wait_serving(base)) {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "run {run}: {e:#}; tickmesh up (base port {base}) logged:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        serving.push(started.elapsed());

        let stop = Instant::now();
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()?;
        let status = child.wait()?;
        anyhow::ensure!(status.success(), "run {run}: tickmesh exited with {status}");
        stopping.push(stop.elapsed());
        eprint!("\rrun {}/{runs}", run + 1);
    }
    eprintln!();

    let (b, s, t) = (
        median(&mut baseline),
        median(&mut serving),
        median(&mut stopping),
    );
    println!("tickmesh up, {runs} runs, medians (min / p90):");
    println!(
        "  process start baseline (--version): {:>7.2} ms ({:.2} / {:.2})",
        ms(b),
        ms(baseline[0]),
        ms(p90(&baseline))
    );
    println!(
        "  spawn -> 4 services SERVING:        {:>7.2} ms ({:.2} / {:.2})  = {:.1}x baseline",
        ms(s),
        ms(serving[0]),
        ms(p90(&serving)),
        ms(s) / ms(b)
    );
    println!(
        "  SIGTERM -> exit 0:                  {:>7.2} ms ({:.2} / {:.2})",
        ms(t),
        ms(stopping[0]),
        ms(p90(&stopping))
    );
    if let Some(path) = json {
        let figures = |sorted: &[Duration]| {
            serde_json::json!({
                "median_ms": ms(sorted[sorted.len() / 2]),
                "min_ms": ms(sorted[0]),
                "p90_ms": ms(p90(sorted)),
            })
        };
        let out = serde_json::json!({
            "runs": runs,
            "baseline_version": figures(&baseline),
            "serving": figures(&serving),
            "sigterm_to_exit": figures(&stopping),
            "ratio_serving_to_baseline": ms(s) / ms(b),
            "ratio_exit_to_baseline": ms(t) / ms(b),
        });
        std::fs::write(&path, serde_json::to_string_pretty(&out)?)?;
    }
    Ok(())
}

/// Waits until every service answers a health check with SERVING. A plain TCP connect is
/// retried every 0.2 ms until the port accepts (cheap, so the figure is at most that late),
/// then the health check runs over a fresh HTTP/2 connection.
async fn wait_serving(base: u16) -> anyhow::Result<()> {
    let services = [
        "tickmesh.v1.IngestionService",
        "tickmesh.v1.ComputationService",
        "tickmesh.v1.CachingService",
        "tickmesh.v1.QueryService",
    ];
    let deadline = Instant::now() + Duration::from_secs(10);
    for (offset, service) in services.into_iter().enumerate() {
        let port = base + offset as u16;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            anyhow::ensure!(Instant::now() < deadline, "{service} not listening in 10 s");
            std::thread::sleep(Duration::from_micros(200));
        }
        // While `up` waits for its store and bus, a first server on the same listeners answers
        // NOT_SERVING; when the services take over, it closes its connections with GOAWAY
        // (NO_ERROR, the call not processed). A client that connected in between asks again on
        // a new connection, as a readiness probe would.
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))?
            .tcp_nodelay(true);
        let mut last_error = None;
        loop {
            anyhow::ensure!(
                Instant::now() < deadline,
                "{service} not SERVING in 10 s (last error: {last_error:?})"
            );
            let request = HealthCheckRequest {
                service: service.to_owned(),
            };
            let status = match endpoint.connect().await {
                Ok(channel) => HealthClient::new(channel).check(request).await,
                Err(e) => Err(tonic::Status::unavailable(e.to_string())),
            };
            match status {
                Ok(answer) if answer.get_ref().status == ServingStatus::Serving as i32 => break,
                Ok(_) => {}
                Err(e) => {
                    last_error = Some(e.message().to_owned());
                    tokio::time::sleep(Duration::from_micros(200)).await;
                }
            }
        }
    }
    Ok(())
}

/// A port P such that P..P+n are all free right now.
fn free_consecutive_ports(n: u16) -> anyhow::Result<u16> {
    for _ in 0..100 {
        let first = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        if first.checked_add(n).is_none() {
            continue;
        }
        if (0..n).all(|i| TcpListener::bind(("127.0.0.1", first + i)).is_ok()) {
            return Ok(first);
        }
    }
    bail!("no {n} consecutive free ports found")
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn p90(sorted: &[Duration]) -> Duration {
    sorted[(sorted.len() * 9 / 10).min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
