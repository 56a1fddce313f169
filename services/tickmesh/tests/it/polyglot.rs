//! Clients in other languages, run as users run them: grpcurl through reflection, the Python
//! example (grpcio stubs generated from proto/), the Node example (grpc-js), and a Python client
//! reading a typed cached value.

use std::process::Command;

use tickmesh_proto::v1::ingestion_service_client::IngestionServiceClient;
use tickmesh_proto::v1::{IngestTickBatchRequest, Side};

use crate::support::{
    Process, SERVICES, VENV_HINT, channel, describe, in_repo, program, run, tick,
};

fn up() -> Process {
    Process::start(&["up", "--base-port", "0"], |_| {})
}

fn grpcurl(args: &[&str]) -> String {
    let grpcurl = program("grpcurl", VENV_HINT);
    let output = run(Command::new(grpcurl).arg("-plaintext").args(args));
    assert!(
        output.status.success(),
        "grpcurl {args:?}: {}",
        describe(&output)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn grpcurl_lists_and_describes_every_service_through_reflection() {
    let mesh = up();
    for (target, service) in SERVICES {
        let addr = mesh.addr(target);
        let listed = grpcurl(&[addr, "list"]);
        let mut names: Vec<&str> = listed.lines().collect();
        names.sort();
        let mut expected = vec![
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
            "tickmesh.v1.ConfigService",
            service,
        ];
        expected.sort();
        assert_eq!(names, expected, "grpcurl list on {target}");

        for name in [
            service,
            "tickmesh.v1.ConfigService",
            "grpc.health.v1.Health",
        ] {
            let described = grpcurl(&[addr, "describe", name]);
            assert!(
                described.contains(&format!("{name} is a service")) && described.contains("rpc "),
                "describe {name}: {described}"
            );
        }
        // Message types resolve too, including imported ones.
        let message = grpcurl(&[
            addr,
            "describe",
            "tickmesh.v1.PerformanceOptimizationConfig",
        ]);
        assert!(
            message.contains("CircuitBreakerConfig circuit_breaker = 8"),
            "{message}"
        );

        let health = grpcurl(&[addr, "grpc.health.v1.Health/Check"]);
        assert!(health.contains("\"SERVING\""), "{health}");
        let config = grpcurl(&["-d", "{}", addr, "tickmesh.v1.ConfigService/GetConfig"]);
        let value: serde_json::Value = serde_json::from_str(&config).unwrap();
        assert_eq!(
            value["config"]["circuitBreaker"]["failureThreshold"], 5,
            "{config}"
        );
    }
}

#[test]
fn the_python_example_client_checks_health_and_reads_the_config() {
    let python = program(
        "python",
        "create the test venv: python3 -m venv .venv && .venv/bin/pip install -r scripts/requirements-test.txt",
    );
    let mesh = up();
    for (target, service) in SERVICES {
        let output = run(Command::new(&python)
            .arg(in_repo("examples/python/client.py"))
            .args(["--addr", mesh.addr(target), "--service", service]));
        assert!(
            output.status.success(),
            "python client on {target}: {}",
            describe(&output)
        );
        assert!(String::from_utf8_lossy(&output.stdout).contains("failure_threshold=5"));
    }
}

#[test]
fn the_node_example_client_checks_health_and_reads_the_config() {
    let node = crate::sdk_typescript::node();
    assert!(
        in_repo("examples/node/node_modules/@tickmesh/client").exists(),
        "examples/node has no node_modules: run `npm ci` in examples/node (scripts/test.sh does)"
    );
    // The example imports the compiled package (clients/typescript/dist).
    crate::sdk_typescript::built_sdk();
    let mesh = up();
    for (target, service) in SERVICES {
        let output = run(Command::new(&node)
            .arg(in_repo("examples/node/client.js"))
            .args(["--addr", mesh.addr(target), "--service", service]));
        assert!(
            output.status.success(),
            "node client on {target}: {}",
            describe(&output)
        );
        assert!(String::from_utf8_lossy(&output.stdout).contains("failure_threshold=5"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_client_reads_a_typed_cached_value_without_the_rust_codec() {
    let python = program("python3", VENV_HINT);
    let mesh = up();
    let mut ingest = IngestionServiceClient::new(channel(mesh.addr("ingestion")).await);
    ingest
        .ingest_tick_batch(IngestTickBatchRequest {
            ticks: vec![tick(
                "BTC-USD",
                1_709_251_200_000_000,
                "1".into(),
                61_234.5,
                0.25,
                Side::Buy,
            )],
            ..Default::default()
        })
        .await
        .unwrap();
    // The caching service loads the price from the store and stores it in its own encoding;
    // the Python stubs read it from the contract's `CacheValue`.
    let output = run(Command::new(&python)
        .arg(crate::support::in_repo(
            "services/tickmesh/tests/it/cache_client.py",
        ))
        .args([mesh.addr("caching"), "latest_prices", "BTC-USD"]));
    assert!(output.status.success(), "{}", describe(&output));
    let got: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(got["found"], true, "{got}");
    assert_eq!(got["kind"], "latest_price", "{got}");
    assert_eq!(got["value"]["symbol"], "BTC-USD", "{got}");
    assert_eq!(got["value"]["price"], 61_234.5, "{got}");
    assert_eq!(got["value"]["size"], 0.25, "{got}");
    assert_eq!(got["value"]["timeUs"], "1709251200000000", "{got}");
    // A typed value's storage bytes do not leave the caching service.
    assert_eq!(got["legacy_bytes"], 0, "{got}");
}
