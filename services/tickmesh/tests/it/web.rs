//! The dashboard's address (`web.addr`, `--web-addr`): the embedded page and gRPC-Web on one
//! origin, behind the query service's stack. Spoken to as a browser would, in plain HTTP/1.1
//! over a socket: the page's files, a gRPC-Web call (frames and trailers as the gRPC-Web
//! protocol lays them out), CORS preflights, and auth still checked for gRPC-Web. The page
//! itself runs in Chromium in `dashboard.rs`.

use std::time::Duration;

use crate::support::{Process, describe, header, http, line_channel, run, tickmesh};

/// A gRPC-Web call of `path` with an empty request message; its status from the trailer frame
/// (or the headers, for a trailers-only answer) and the data frames' total length.
fn grpc_web(addr: &str, path: &str, extra_headers: &str) -> (u16, Option<String>, usize) {
    // One uncompressed frame: flag 0, length 0 (an empty message: every field default).
    let frame = [0u8, 0, 0, 0, 0];
    let head = format!(
        "POST {path} HTTP/1.1\r\nContent-Type: application/grpc-web+proto\r\nX-Grpc-Web: 1{extra_headers}"
    );
    let (status, headers, body) = http(addr, &head, &frame);
    let mut grpc_status = header(&headers, "grpc-status").map(str::to_owned);
    let mut data = 0;
    let framed =
        header(&headers, "content-type").is_some_and(|t| t.starts_with("application/grpc-web"));
    let mut rest = if framed { &body[..] } else { &[][..] };
    while rest.len() >= 5 {
        let flag = rest[0];
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        let payload = &rest[5..5 + len];
        if flag & 0x80 != 0 {
            let trailers = String::from_utf8_lossy(payload);
            grpc_status = trailers
                .lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("grpc-status"))
                .map(|(_, v)| v.trim().to_owned());
        } else {
            data += len;
        }
        rest = &rest[5 + len..];
    }
    (status, grpc_status, data)
}

#[test]
fn the_dashboard_address_serves_the_page_and_grpc_web_on_one_origin() {
    let mesh = Process::start(&["up", "--base-port", "0"], |_| {});
    let web = mesh.addr("web");
    assert_ne!(web, mesh.addr("query"), "its own port");

    let (status, headers, body) = http(web, "GET / HTTP/1.1", b"");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(
        header(&headers, "content-type"),
        Some("text/html; charset=utf-8")
    );
    let page = String::from_utf8_lossy(&body);
    assert!(page.contains("<script"), "{page}");
    // Every script and stylesheet the page names is served, with its media type.
    let mut named = 0;
    let page_relative = page.replace("\"./assets/", "\"/assets/");
    for part in page_relative.split("\"/assets/").skip(1) {
        let file = &part[..part.find('"').unwrap()];
        let (status, headers, _) = http(web, &format!("GET /assets/{file} HTTP/1.1"), b"");
        assert_eq!(status, 200, "/assets/{file}");
        let kind = header(&headers, "content-type").unwrap();
        assert!(
            kind.starts_with("text/javascript") || kind.starts_with("text/css"),
            "/assets/{file}: {kind}"
        );
        named += 1;
    }
    assert!(named > 0, "index.html names no /assets/ file: {page}");
    assert_eq!(http(web, "GET /no-such-file.js HTTP/1.1", b"").0, 404);

    // gRPC-Web on the same origin: health of the query service and of this process's other
    // services' read APIs (the mesh panel), through the query service's stack.
    let (status, grpc_status, data) = grpc_web(web, "/grpc.health.v1.Health/Check", "");
    assert_eq!((status, grpc_status.as_deref()), (200, Some("0")));
    assert!(
        data > 0,
        "a HealthCheckResponse with status SERVING has a field"
    );
    let (_, grpc_status, _) = grpc_web(web, "/tickmesh.v1.CachingService/GetStats", "");
    assert_eq!(grpc_status.as_deref(), Some("0"));
    let (_, grpc_status, _) = grpc_web(web, "/tickmesh.v1.ComputationService/GetSignalStats", "");
    assert_eq!(grpc_status.as_deref(), Some("0"));
    // An empty GetLatestPricesRequest is refused with INVALID_ARGUMENT, as over gRPC.
    let (_, grpc_status, _) = grpc_web(web, "/tickmesh.v1.QueryService/GetLatestPrices", "");
    assert_eq!(grpc_status.as_deref(), Some("3"));
    // Ingestion is not on the dashboard's address.
    let (_, grpc_status, _) = grpc_web(web, "/tickmesh.v1.IngestionService/IngestCandles", "");
    assert_eq!(grpc_status.as_deref(), Some("12"), "UNIMPLEMENTED");

    // CORS: the page's own origin needs none; any other is refused (no origin is listed).
    let same = format!("\r\nOrigin: http://{web}");
    assert_eq!(
        grpc_web(web, "/grpc.health.v1.Health/Check", &same)
            .1
            .as_deref(),
        Some("0")
    );
    let evil = "\r\nOrigin: http://evil.example";
    assert_eq!(grpc_web(web, "/grpc.health.v1.Health/Check", evil).0, 403);
    let preflight = "OPTIONS /grpc.health.v1.Health/Check HTTP/1.1\r\nOrigin: http://evil.example\r\n\
                     Access-Control-Request-Method: POST";
    assert_eq!(http(web, preflight, b"").0, 403);
}

#[test]
fn listed_origins_get_cors_and_grpc_web_still_needs_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    std::fs::write(&keys, "viewer read viewer-key-0123456789abcdef\n").unwrap();
    let config = dir.path().join("tickmesh.yaml");
    std::fs::write(
        &config,
        format!(
            "web:\n  cors_allowed_origins: [\"http://app.example:8080\"]\nauth:\n  enabled: true\n  keys_file: {}\n",
            keys.display()
        ),
    )
    .unwrap();
    let mesh = Process::start(&["up", "--base-port", "0"], |c| {
        c.env("TICKMESH_CONFIG", &config);
    });
    let web = mesh.addr("web");
    let preflight = "OPTIONS /tickmesh.v1.QueryService/GetLatestPrices HTTP/1.1\r\n\
                     Origin: http://app.example:8080\r\nAccess-Control-Request-Method: POST\r\n\
                     Access-Control-Request-Headers: content-type,x-grpc-web,authorization";
    let (status, headers, _) = http(web, preflight, b"");
    assert_eq!(status, 204);
    assert_eq!(
        header(&headers, "access-control-allow-origin"),
        Some("http://app.example:8080")
    );
    assert!(
        header(&headers, "access-control-allow-headers")
            .unwrap()
            .contains("authorization")
    );
    // The page loads without a key (it must, to ask for one); calls do not.
    assert_eq!(http(web, "GET / HTTP/1.1", b"").0, 200);
    let listed = "\r\nOrigin: http://app.example:8080";
    let (_, grpc_status, _) = grpc_web(web, "/tickmesh.v1.QueryService/GetLatestPrices", listed);
    assert_eq!(grpc_status.as_deref(), Some("16"), "UNAUTHENTICATED");
    let with_key = format!("{listed}\r\nAuthorization: Bearer viewer-key-0123456789abcdef");
    let (status, grpc_status, _) =
        grpc_web(web, "/tickmesh.v1.QueryService/GetLatestPrices", &with_key);
    // An empty request: past auth, refused by the service itself.
    assert_eq!((status, grpc_status.as_deref()), (200, Some("3")));
}

#[test]
fn the_dashboard_can_be_turned_off_and_is_the_query_services_alone() {
    let mesh = Process::start(&["up", "--base-port", "0", "--web-addr", "off"], |_| {});
    assert!(!mesh.addrs.contains_key("web"), "{:?}", mesh.addrs);
    drop(mesh);
    let output = run(tickmesh().args([
        "serve",
        "--target",
        "ingestion",
        "--listen",
        "127.0.0.1:0",
        "--web-addr",
        "127.0.0.1:0",
    ]));
    assert!(!output.status.success(), "{}", describe(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("served by the query service only"),
        "{}",
        describe(&output)
    );
    // `serve --target query --web-addr` serves it next to the query service.
    let query = Process::start(
        &[
            "serve",
            "--target",
            "query",
            "--listen",
            "127.0.0.1:0",
            "--web-addr",
            "127.0.0.1:0",
        ],
        |_| {},
    );
    let (_, grpc_status, _) = grpc_web(query.addr("web"), "/grpc.health.v1.Health/Check", "");
    assert_eq!(grpc_status.as_deref(), Some("0"));
}

#[test]
fn demo_serve_keeps_the_mesh_and_the_page_up_until_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut demo = tickmesh()
        .args([
            "--log",
            "error",
            "demo",
            "--synthetic",
            "--serve",
            "--web-addr",
        ])
        .arg("127.0.0.1:0")
        .arg("--chart")
        .arg(dir.path().join("chart.svg"))
        .current_dir(dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lines = line_channel(demo.stdout.take().unwrap());
    let mut printed = Vec::new();
    let url = loop {
        let line = lines
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|e| panic!("no dashboard URL printed ({e}): {printed:?}"));
        if let Some(rest) = line.strip_prefix("dashboard: http://") {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
        printed.push(line);
    };
    // "127.0.0.1:PORT/?symbols=SYN-ALPHA,..."
    let (addr, query) = url.split_once('/').unwrap();
    assert!(query.contains("symbols=SYN-ALPHA"), "{url}");
    assert_eq!(http(addr, "GET / HTTP/1.1", b"").0, 200);
    let (_, grpc_status, _) = grpc_web(addr, "/grpc.health.v1.Health/Check", "");
    assert_eq!(grpc_status.as_deref(), Some("0"));
    // Still up a while later (it serves until a signal), then SIGTERM stops it cleanly.
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        demo.try_wait().unwrap().is_none(),
        "the demo exited by itself"
    );
    let killed = run(std::process::Command::new("kill")
        .arg("-TERM")
        .arg(demo.id().to_string()));
    assert!(killed.status.success());
    let status = demo.wait().unwrap();
    assert!(status.success(), "demo --serve after SIGTERM: {status}");
}
