//! Starting `tickmesh` as a real process and talking to it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Full gRPC names of the four services by their `--target` names.
pub const SERVICES: [(&str, &str); 4] = [
    ("ingestion", "tickmesh.v1.IngestionService"),
    ("computation", "tickmesh.v1.ComputationService"),
    ("caching", "tickmesh.v1.CachingService"),
    ("query", "tickmesh.v1.QueryService"),
];

/// The `tickmesh` command with no `TICKMESH_*` variables inherited from the test environment.
///
/// `TICKMESH_TEST_BINARY=/path/to/tickmesh` runs the tests against another build (an older
/// commit's, to see a regression test fail there).
pub fn tickmesh() -> Command {
    let binary = std::env::var_os("TICKMESH_TEST_BINARY")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_tickmesh").into());
    let mut command = Command::new(binary);
    for (name, _) in std::env::vars() {
        if name.starts_with("TICKMESH_") {
            command.env_remove(name);
        }
    }
    command.env("TICKMESH_LOG_FORMAT", "json");
    // Tests run side by side: every process its own metrics port.
    command.env("TICKMESH_METRICS_ADDR", "127.0.0.1:0");
    // Each process its own embedded store, inside cargo's scratch dir for tests.
    command.env(
        "TICKMESH_STORE_URL",
        format!("sqlite:{}", scratch_file("store.db").display()),
    );
    command
}

/// A fresh path under cargo's per-target scratch directory.
pub fn scratch_file(name: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("it-{}-{n}", std::process::id()))
        .join(name)
}

/// A running `tickmesh` process, killed on drop.
pub struct Process {
    pub child: Child,
    /// Bound addresses by target name, from the ready file.
    pub addrs: BTreeMap<String, String>,
    pub startup_us: u64,
    /// Address of `GET /metrics`.
    pub metrics: String,
    _dir: tempfile::TempDir,
}

impl Process {
    /// Starts `tickmesh ARGS --ready-file F` and waits until F says every service is SERVING.
    pub fn start(args: &[&str], configure: impl FnOnce(&mut Command)) -> Process {
        let mut process = Self::spawn(args, configure);
        process.wait_ready(Duration::from_secs(30));
        process
    }

    /// Starts `tickmesh ARGS --ready-file F` without waiting for it to serve.
    pub fn spawn(args: &[&str], configure: impl FnOnce(&mut Command)) -> Process {
        let dir = tempfile::tempdir().unwrap();
        let ready = dir.path().join("ready.json");
        let mut command = tickmesh();
        command
            .args(args)
            .arg("--ready-file")
            .arg(&ready)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("stderr.log")).unwrap());
        configure(&mut command);
        let child = command.spawn().expect("tickmesh starts");
        Process {
            child,
            addrs: BTreeMap::new(),
            startup_us: 0,
            metrics: String::new(),
            _dir: dir,
        }
    }

    /// Waits until the ready file says every service is SERVING, at most `limit`, and reads the
    /// addresses from it.
    pub fn wait_ready(&mut self, limit: Duration) {
        let process = self;
        let ready = process._dir.path().join("ready.json");
        let deadline = Instant::now() + limit;
        while !ready.exists() {
            if let Some(status) = process.child.try_wait().unwrap() {
                panic!(
                    "tickmesh exited with {status} before it was ready:\n{}",
                    process.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "tickmesh not ready in {limit:?}:\n{}",
                process.log()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&ready).unwrap()).unwrap();
        for (key, value) in json.as_object().unwrap() {
            match (key.as_str(), value.as_str()) {
                ("metrics", Some(addr)) => process.metrics = addr.to_owned(),
                (_, Some(addr)) => {
                    process.addrs.insert(key.clone(), addr.to_owned());
                }
                _ => {}
            }
        }
        process.startup_us = json["startup_us"].as_u64().unwrap();
    }

    /// Address of one target.
    pub fn addr(&self, target: &str) -> &str {
        self.addrs
            .get(target)
            .unwrap_or_else(|| panic!("no {target} in {:?}", self.addrs))
    }

    /// What the process logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit, at most `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "tickmesh still running after {limit:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `tickmesh serve --target ingestion` on a free port, with `env` set.
pub fn serve_ingestion(env: &[(&str, std::ffi::OsString)]) -> Process {
    Process::start(
        &["serve", "--target", "ingestion", "--listen", "127.0.0.1:0"],
        |c| {
            c.envs(env.iter().map(|(k, v)| (*k, v)));
        },
    )
}

/// A plaintext channel to `addr` (host:port).
pub async fn channel(addr: &str) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"))
}

/// The health status of `service` ("" for the whole server) at `addr`.
pub async fn health(addr: &str, service: &str) -> ServingStatus {
    let mut client = HealthClient::new(channel(addr).await);
    let response = client
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .unwrap_or_else(|e| panic!("health check of {service:?} at {addr}: {e}"));
    ServingStatus::try_from(response.into_inner().status).unwrap()
}

/// The health status at `addr`, or None while nothing answers there.
pub async fn try_health(addr: &str, service: &str) -> Option<ServingStatus> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_millis(500))
        .timeout(Duration::from_secs(2))
        .connect()
        .await
        .ok()?;
    let response = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .ok()?;
    ServingStatus::try_from(response.into_inner().status).ok()
}

/// Finds a program the tests need, failing with how to install it. The test venv
/// (`.venv/bin`) comes first, so its python (with grpcio) wins over the system one.
pub fn program(name: &str, hint: &str) -> PathBuf {
    let in_venv = repo().join(".venv/bin").join(name);
    if in_venv.exists() {
        return in_venv;
    }
    tickmesh_testkit::find_binary(name, &[], hint).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs a command to completion, returning its output.
pub fn run(command: &mut Command) -> Output {
    command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"))
}

/// Stdout and stderr of a finished command, for assertion messages.
pub fn describe(output: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The repository root.
pub fn repo() -> PathBuf {
    tickmesh_testkit::workspace_root()
}

/// Path relative to the repository root.
pub fn in_repo(path: &str) -> PathBuf {
    repo().join(Path::new(path))
}

/// Resident memory of a process (`VmRSS`), in bytes.
pub fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap()
        * 1024
}

/// The value of `series` (name and labels, as exposed) on the `/metrics` at `addr`.
pub fn sample(addr: &str, series: &str) -> f64 {
    let text = scrape(addr);
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

/// The body of `GET /metrics` at `addr`, over a plain HTTP/1.1 connection.
pub fn scrape(addr: &str) -> String {
    let (status, headers, body) = http(addr, "GET /metrics HTTP/1.1", b"");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let kind = header(&headers, "content-type").unwrap_or_default();
    assert!(kind.starts_with("text/plain"), "{kind}");
    String::from_utf8(body).unwrap()
}

/// One HTTP/1.1 exchange (`Connection: close`): status, headers (lower-case names), body.
pub fn http(addr: &str, head: &str, body: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let request = format!(
        "{head}\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    (status, headers, body)
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = raw.windows(2).position(|w| w == b"\r\n").unwrap();
        let size = usize::from_str_radix(std::str::from_utf8(&raw[..line_end]).unwrap().trim(), 16)
            .unwrap();
        raw = &raw[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

// --- Test data -------------------------------------------------------------------------------

/// How to make the test venv, for the tests that need a program or a package from it.
pub const VENV_HINT: &str = "run scripts/test.sh, or: python3 -m venv .venv && .venv/bin/pip install -r scripts/requirements-test.txt";

/// A trade.
pub fn tick(
    symbol: &str,
    time_us: i64,
    trade_id: String,
    price: f64,
    size: f64,
    side: tickmesh_proto::v1::Side,
) -> tickmesh_proto::v1::Tick {
    tickmesh_proto::v1::Tick {
        symbol: symbol.to_owned(),
        time_us,
        trade_id,
        price,
        size,
        side: side as i32,
    }
}

/// A closed bar with the given open, high, low and close (no trade count).
pub fn candle(
    symbol: &str,
    interval: tickmesh_proto::v1::Interval,
    open_time_us: i64,
    [open, high, low, close]: [f64; 4],
    volume: f64,
) -> tickmesh_proto::v1::Candle {
    tickmesh_proto::v1::Candle {
        symbol: symbol.to_owned(),
        interval: interval as i32,
        open_time_us,
        open,
        high,
        low,
        close,
        volume,
        trade_count: 0,
        closed: true,
    }
}

/// The real GOOG daily candles that the `backtesting` package ships (AGPL: read from the
/// installed package, never copied into the repository).
pub fn goog_csv() -> PathBuf {
    let python = program("python3", VENV_HINT);
    let output = run(Command::new(python).args([
        "-c",
        "import backtesting, os; print(os.path.join(os.path.dirname(backtesting.__file__), 'test', 'GOOG.csv'))",
    ]));
    assert!(
        output.status.success(),
        "the backtesting package is missing from the test venv ({VENV_HINT}): {}",
        describe(&output)
    );
    PathBuf::from(String::from_utf8(output.stdout).unwrap().trim())
}

/// The mesh as four processes (`tickmesh serve --target ...`) on a PostgreSQL store and a Redis
/// bus, with the multi-layer cache: the production layout, on the test kit's servers.
pub struct FourProcesses {
    pub ingestion: Process,
    pub computation: Process,
    pub caching: Process,
    pub query: Process,
}

impl FourProcesses {
    pub fn start(pg: &tickmesh_testkit::Postgres, redis: &tickmesh_testkit::Redis) -> Self {
        Self::start_with(pg, redis, &[])
    }

    /// [`FourProcesses::start`] with more environment for every process.
    pub fn start_with(
        pg: &tickmesh_testkit::Postgres,
        redis: &tickmesh_testkit::Redis,
        more: &[(&str, std::ffi::OsString)],
    ) -> Self {
        let mut env: Vec<(&str, std::ffi::OsString)> = vec![
            ("TICKMESH_STORE_URL", pg.url().into()),
            ("TICKMESH_BUS_URL", redis.url().into()),
            (
                "TICKMESH_CACHING_STRATEGY",
                "CACHING_STRATEGY_MULTI_LAYER".into(),
            ),
            (
                "TICKMESH_DEPENDENCY_MANAGEMENT",
                "DEPENDENCY_MANAGEMENT_APPROACH_SELECTIVE_IMPORT".into(),
            ),
        ];
        env.extend(more.iter().cloned());
        let serve = |target: &str, extra: Vec<(&str, std::ffi::OsString)>| {
            let env = env.clone();
            Process::start(
                &["serve", "--target", target, "--listen", "127.0.0.1:0"],
                move |c| {
                    c.envs(env.iter().chain(extra.iter()).map(|(k, v)| (*k, v)));
                },
            )
        };
        let ingestion = serve("ingestion", vec![]);
        let computation = serve("computation", vec![]);
        let caching = serve("caching", vec![]);
        let query = serve(
            "query",
            vec![
                (
                    "TICKMESH_COMPUTATION_ADDR",
                    computation.addr("computation").into(),
                ),
                ("TICKMESH_CACHING_ADDR", caching.addr("caching").into()),
            ],
        );
        FourProcesses {
            ingestion,
            computation,
            caching,
            query,
        }
    }

    /// The four logs, for a failed assertion's message.
    pub fn logs(&self) -> String {
        [
            ("ingestion", &self.ingestion),
            ("computation", &self.computation),
            ("caching", &self.caching),
            ("query", &self.query),
        ]
        .iter()
        .map(|(name, p)| format!("--- {name} log\n{}", p.log()))
        .collect()
    }
}

/// `command` pointed at `mesh` the way the SDK test suites read it: TICKMESH_QUERY,
/// TICKMESH_INGESTION, TICKMESH_COMPUTATION, and GOOG_CSV (the `backtesting` package's file).
pub fn against_mesh<'a>(command: &'a mut Command, mesh: &Process) -> &'a mut Command {
    command
        .env("TICKMESH_QUERY", mesh.addr("query"))
        .env("TICKMESH_INGESTION", mesh.addr("ingestion"))
        .env("TICKMESH_COMPUTATION", mesh.addr("computation"))
        .env("GOOG_CSV", goog_csv())
}

/// The number of code blocks of `readme` (a path in the repository) fenced as ```lang, which
/// a README test runs one by one; at least one.
pub fn readme_blocks(readme: &str, lang: &str) -> usize {
    let text = std::fs::read_to_string(in_repo(readme)).unwrap();
    let fence = format!("```{lang}");
    let blocks = text.lines().filter(|l| l.trim_end() == fence).count();
    assert!(blocks > 0, "no {fence} block in {readme}");
    blocks
}

/// The lines a child writes to `stdout`, as they come, on a channel (a reader thread ends when
/// the pipe closes or the receiver is dropped).
pub fn line_channel(stdout: std::process::ChildStdout) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let (send, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if send.send(line).is_err() {
                break;
            }
        }
    });
    lines
}
