//! What one client can do to a process (issue 20), each against a real `tickmesh up`.

use std::str::FromStr;

use http::uri::PathAndQuery;
use tonic_prost::ProstCodec;

use crate::cli::requests_total;
use crate::support::{Process, channel, scrape};

/// Calls at made-up paths, on one connection, as a client without a key could send them.
const MADE_UP_PATHS: usize = 2_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_paths_count_under_one_series_and_metrics_stay_bounded() {
    let mesh = Process::start(&["up", "--base-port", "0"], |_| {});
    let addr = mesh.addr("query").to_owned();
    let mut grpc = tonic::client::Grpc::new(channel(&addr).await);
    let before = scrape(&mesh.metrics);
    let padding = "x".repeat(1_000);
    for i in 0..MADE_UP_PATHS {
        grpc.ready().await.unwrap();
        let path = PathAndQuery::from_str(&format!("/evil.v{i}.{padding}/M{i}")).unwrap();
        let status = grpc
            .unary(
                tonic::Request::new(()),
                path,
                ProstCodec::<(), ()>::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unimplemented, "{status:?}");
    }
    let after = scrape(&mesh.metrics);
    // Every made-up call is counted, under the one series (UNIMPLEMENTED is code 12).
    assert_eq!(
        requests_total(&after, "unknown", "unknown", "12"),
        MADE_UP_PATHS as f64
    );
    assert!(!after.contains("evil.v"), "no made-up path reaches a label");
    // Each made-up path used to add ~20 series of ~1 KB of labels (40 MB here); now the
    // exposition grows by the unknown series alone (in-flight, latency buckets, two counters).
    let grown = after.len().saturating_sub(before.len());
    assert!(
        grown < 16 * 1024,
        "/metrics grew by {grown} bytes for {MADE_UP_PATHS} made-up paths"
    );
}
