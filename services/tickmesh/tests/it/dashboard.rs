//! The dashboard in a real browser: Debian's Chromium, headless, driven by playwright-core
//! (`web/test/dashboard.mjs`) against `tickmesh up` serving the page it embeds. After a replay
//! of GOOG's daily CSV: the page loads without a console error within the paint budgets, the
//! chart holds every stored bar (as `GetCandles` pages them), the price list shows GOOG's
//! latest price (as `GetLatestPrices` gives it), ticks ingested through gRPC appear on the page
//! (the ingest-to-screen latency is printed for benches/README.md), the screenshot's chart is
//! not blank; across a restart of the mesh the page says it is reconnecting, then live again,
//! with every tick shown once; and with auth on it asks for an API key and keeps it in the tab.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use tickmesh_proto::v1::query_service_client::QueryServiceClient;
use tickmesh_proto::v1::{GetCandlesRequest, GetLatestPricesRequest, Interval};

use crate::sdk_typescript::{built_sdk, node};
use crate::support::{Process, channel, describe, goog_csv, in_repo, run, scratch_file, tickmesh};

const HINT: &str = "web has no node_modules: run scripts/test.sh --install-only (or `npm ci` in clients/typescript, then in web)";

fn chromium() -> PathBuf {
    let path = PathBuf::from("/usr/bin/chromium");
    assert!(
        path.exists(),
        "/usr/bin/chromium is missing: apt-get install chromium (scripts/test.sh --install-only does)"
    );
    path
}

fn dashboard_script() -> PathBuf {
    assert!(
        in_repo("web/node_modules/playwright-core").exists(),
        "{HINT}"
    );
    // The script imports @tickmesh/client/node: the package's dist must be built.
    built_sdk();
    in_repo("web/test/dashboard.mjs")
}

fn replay_goog(ingestion: &str) {
    let output = run(tickmesh()
        .args(["replay", "--symbol", "GOOG", "--target", ingestion])
        .arg(goog_csv()));
    assert!(output.status.success(), "replay: {}", describe(&output));
}

/// The last JSON line of the script's stdout (its figures).
fn figures(stdout: &str) -> serde_json::Value {
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON line in:\n{stdout}"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"))
}

async fn stored_bars(query: &str) -> (usize, f64) {
    let mut client = QueryServiceClient::new(channel(query).await);
    let mut request = GetCandlesRequest {
        symbol: "GOOG".into(),
        interval: Interval::Interval1d as i32,
        page_size: 5000,
        ..Default::default()
    };
    let mut bars = 0;
    loop {
        let page = client
            .get_candles(request.clone())
            .await
            .unwrap()
            .into_inner();
        bars += page.candles.len();
        if page.next_page_token.is_empty() {
            break;
        }
        request.page_token = page.next_page_token;
    }
    let latest = client
        .get_latest_prices(GetLatestPricesRequest {
            symbols: vec!["GOOG".into()],
        })
        .await
        .unwrap()
        .into_inner();
    (bars, latest.prices[0].price)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_in_chromium_shows_the_replayed_market_and_live_ticks() {
    let script = dashboard_script();
    let chromium = chromium();
    let mesh = Process::start(&["up", "--base-port", "0"], |_| {});
    replay_goog(mesh.addr("ingestion"));
    let (bars, latest) = stored_bars(mesh.addr("query")).await;
    let screenshot = scratch_file("dashboard.png");
    std::fs::create_dir_all(screenshot.parent().unwrap()).unwrap();
    let output = run(Command::new(node())
        .arg(&script)
        .env("TICKMESH_WEB", format!("http://{}", mesh.addr("web")))
        .env("TICKMESH_INGESTION", mesh.addr("ingestion"))
        .env("TICKMESH_QUERY", mesh.addr("query"))
        .env("CHROMIUM", &chromium)
        .env("SCREENSHOT", &screenshot)
        .env("TICKS", "100"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "web/test/dashboard.mjs: {}\n--- mesh log\n{}",
        describe(&output),
        mesh.log()
    );
    let f = figures(&stdout);
    assert_eq!(f["ok"], true, "{f}");
    // The chart holds every stored bar (checked before the test's ticks, which add one day's bar
    // at most), the price list GOOG's latest price as the query service gives it.
    assert_eq!(f["bars"].as_u64(), Some(bars as u64), "{f}");
    let shown = f["price"]
        .as_f64()
        .or_else(|| {
            f["price"]
                .as_str()
                .and_then(|p| p.replace(',', "").parse().ok())
        })
        .unwrap_or_else(|| panic!("no price in {f}"));
    assert!(
        (shown - latest).abs() < 0.01,
        "page {shown}, GetLatestPrices {latest}: {f}"
    );
    // The page budgets of the issue: first contentful paint < 1.5 s, largest < 2.5 s.
    let fcp = f["paint"]["fcpMs"].as_f64().unwrap();
    let lcp = f["paint"]["lcpMs"].as_f64().unwrap();
    assert!(
        fcp < 1500.0 && lcp < 2500.0,
        "fcp {fcp} ms, lcp {lcp} ms: {f}"
    );
    assert!(f["latency"]["p99Ms"].as_f64().is_some(), "{f}");
    assert!(
        std::fs::metadata(&screenshot).unwrap().len() > 10_000,
        "{}",
        screenshot.display()
    );
    eprintln!("dashboard figures: {f}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_a_restart_of_the_mesh_and_resumes_without_a_gap() {
    let script = dashboard_script();
    let chromium = chromium();
    let base = crate::sdk_python::free_base_port().to_string();
    let store = format!("sqlite:{}", scratch_file("store.db").display());
    let start = |store: &str| {
        let store = store.to_owned();
        Process::start(&["up", "--base-port", &base], move |c| {
            c.env("TICKMESH_STORE_URL", store);
        })
    };
    let mut mesh = start(&store);
    replay_goog(mesh.addr("ingestion"));
    let mut child = Command::new(node())
        .arg(&script)
        .arg("--restart-phase")
        .env("TICKMESH_WEB", format!("http://{}", mesh.addr("web")))
        .env("TICKMESH_INGESTION", mesh.addr("ingestion"))
        .env("TICKMESH_QUERY", mesh.addr("query"))
        .env("CHROMIUM", &chromium)
        .env("SCREENSHOT", scratch_file("restart.png"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = crate::support::line_channel(child.stdout.take().unwrap());
    let mut seen = Vec::new();
    loop {
        let line = lines
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|e| panic!("no {{\"ready\":true}} from the page test ({e}): {seen:?}"));
        let ready = line.contains("\"ready\":true");
        seen.push(line);
        if ready {
            break;
        }
    }
    // The whole mesh goes (SIGTERM, its streams end) and comes back on the same ports and store.
    mesh.terminate();
    mesh.wait_exit(Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(1));
    mesh = start(&store);
    writeln!(child.stdin.take().unwrap(), "restarted").unwrap();
    let status = child.wait().unwrap();
    let rest: Vec<String> = lines.try_iter().collect();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    let all = seen
        .iter()
        .chain(rest.iter())
        .cloned()
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        status.success(),
        "web/test/dashboard.mjs --restart-phase: {status}\n{all}\n--- stderr\n{stderr}\n--- mesh log\n{}",
        mesh.log()
    );
    let f = figures(&all);
    assert_eq!(f["ok"], true, "{f}");
    eprintln!("restart figures: {f}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_auth_on_the_dashboard_asks_for_a_key_and_keeps_it_in_the_tab() {
    let script = dashboard_script();
    let chromium = chromium();
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let key = "ops-key-0123456789abcdef0123";
    std::fs::write(&keys, format!("ops admin {key}\n")).unwrap();
    let auth = |c: &mut Command| {
        c.env("TICKMESH_AUTH__ENABLED", "true")
            .env("TICKMESH_AUTH__KEYS_FILE", &keys);
    };
    let mesh = Process::start(&["up", "--base-port", "0"], auth);
    let output = run(tickmesh()
        .args(["replay", "--symbol", "GOOG", "--api-key", key, "--target"])
        .arg(mesh.addr("ingestion"))
        .arg(goog_csv()));
    assert!(output.status.success(), "replay: {}", describe(&output));
    let output = run(Command::new(node())
        .arg(&script)
        .env("TICKMESH_WEB", format!("http://{}", mesh.addr("web")))
        .env("TICKMESH_INGESTION", mesh.addr("ingestion"))
        .env("TICKMESH_QUERY", mesh.addr("query"))
        .env("TICKMESH_API_KEY", key)
        .env("AUTH_FORM", "1")
        .env("CHROMIUM", &chromium)
        .env("SCREENSHOT", scratch_file("auth.png"))
        .env("TICKS", "5"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "web/test/dashboard.mjs (AUTH_FORM): {}\n--- mesh log\n{}",
        describe(&output),
        mesh.log()
    );
    let f = figures(&stdout);
    assert_eq!(f["ok"], true, "{f}");
    assert_eq!(f["authForm"], "shown, key accepted", "{f}");
}
