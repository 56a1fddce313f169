//! Faults and bad input: garbage on the wire, the database going away mid-stream, and a
//! replay of real market data through the binary.

use std::ffi::OsString;
use std::process::Command;
use std::time::Duration;

use prost::Message;
use tickmesh_proto::v1::ingestion_service_client::IngestionServiceClient;
use tickmesh_proto::v1::{IngestTickBatchRequest, IngestTicksRequest, Side, Tick};
use tonic::Code;

use crate::support::{
    self, Process, VENV_HINT, channel, describe, goog_csv, program, run, serve_ingestion, tickmesh,
};

fn tick(i: i64) -> Tick {
    support::tick(
        "BTC-USD",
        1_709_251_200_000_000 + i * 1_000,
        format!("{i}"),
        50_000.0 + i as f64,
        0.5,
        Side::Sell,
    )
}

fn ingestion_on(pg: &tickmesh_testkit::Postgres) -> Process {
    serve_ingestion(&[("TICKMESH_STORE_URL", OsString::from(pg.url()))])
}

/// Sends raw bytes as the request of a unary RPC from Python grpcio (a real client that does
/// not care what the bytes are) and prints `CODE details` per payload.
const RAW_CALLER: &str = r#"
import sys, grpc
addr, method = sys.argv[1], sys.argv[2]
channel = grpc.insecure_channel(addr)
call = channel.unary_unary(method, request_serializer=lambda b: b, response_deserializer=lambda b: b)
for payload in sys.argv[3:]:
    try:
        call(bytes.fromhex(payload), timeout=10)
        print("OK")
    except grpc.RpcError as e:
        print(e.code().name, e.details())
"#;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_wire_is_invalid_argument_and_stores_nothing() {
    let pg = tickmesh_testkit::Postgres::start().expect("a throwaway PostgreSQL");
    let mesh = ingestion_on(&pg);
    let valid = IngestTickBatchRequest {
        ticks: (0..20).map(tick).collect(),
        source: "garbage".into(),
    }
    .encode_to_vec();
    let truncated = &valid[..valid.len() / 2 + 3];
    let random: Vec<u8> = (0u32..256)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let python = program("python", VENV_HINT);
    let output = run(Command::new(python).args([
        "-c",
        RAW_CALLER,
        mesh.addr("ingestion"),
        "/tickmesh.v1.IngestionService/IngestTickBatch",
        &hex(truncated),
        &hex(&random),
        &hex(&[0xff; 64]),
    ]));
    assert!(output.status.success(), "{}", describe(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    for line in &lines {
        assert!(line.starts_with("INVALID_ARGUMENT"), "{stdout}");
    }
    assert!(
        lines[0].contains("not a valid tickmesh.v1.IngestTickBatchRequest"),
        "{stdout}"
    );
    assert_eq!(pg.psql("select count(*) from ticks").unwrap(), "0");
    assert_eq!(pg.psql("select count(*) from outbox").unwrap(), "0");
    // The server is still fine: the valid message goes through afterwards.
    let mut client = IngestionServiceClient::new(channel(mesh.addr("ingestion")).await);
    let summary = client
        .ingest_tick_batch(IngestTickBatchRequest::decode(valid.as_slice()).unwrap())
        .await
        .unwrap()
        .into_inner()
        .summary
        .unwrap();
    assert_eq!(summary.stored, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopping_mid_stream_is_unavailable_and_a_retry_leaves_one_copy() {
    let mut pg = tickmesh_testkit::Postgres::start().expect("a throwaway PostgreSQL");
    let mesh = ingestion_on(&pg);
    let mut client = IngestionServiceClient::new(channel(mesh.addr("ingestion")).await);
    let batches: Vec<IngestTicksRequest> = (0..4)
        .map(|b| IngestTicksRequest {
            ticks: (b * 500..(b + 1) * 500).map(tick).collect(),
            source: "fault".into(),
        })
        .collect();

    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let call = {
        let mut client = client.clone();
        tokio::spawn(async move {
            client
                .ingest_ticks(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
        })
    };
    for batch in &batches[..3] {
        tx.send(batch.clone()).await.unwrap();
    }
    // Let the three batches commit, then take the database away.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while pg.psql("select count(*) from ticks").unwrap() != "1500" {
        assert!(std::time::Instant::now() < deadline, "{}", mesh.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    pg.stop();
    let _ = tx.send(batches[3].clone()).await;
    drop(tx);
    let outcome = tokio::time::timeout(Duration::from_secs(30), call)
        .await
        .expect("the call ends instead of hanging")
        .unwrap();
    let status = outcome.expect_err("nothing is acknowledged while the store is down");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    pg.restart().unwrap();
    // The client retries the whole stream: what was committed before counts as duplicates.
    let summary = client
        .ingest_ticks(tokio_stream::iter(batches))
        .await
        .unwrap()
        .into_inner()
        .summary
        .unwrap();
    assert_eq!((summary.stored, summary.duplicates), (500, 1500));
    assert_eq!(
        pg.psql("select count(*), count(distinct trade_id) from ticks")
            .unwrap(),
        "2000|2000"
    );
}

/// The GOOG daily candles the `backtesting` package ships (read from the test venv, never
/// copied into the repository: the package is AGPL).
#[test]
fn replaying_real_goog_candles_stores_each_row_once() {
    let csv = goog_csv();
    let text = std::fs::read_to_string(&csv).unwrap();
    let rows: Vec<&str> = text.lines().skip(1).filter(|l| !l.is_empty()).collect();
    let pg = tickmesh_testkit::Postgres::start().expect("a throwaway PostgreSQL");
    let mesh = ingestion_on(&pg);
    for round in 0..2 {
        let output = run(tickmesh()
            .args(["replay", "--symbol", "GOOG", "--batch", "500", "--target"])
            .arg(mesh.addr("ingestion"))
            .arg(&csv));
        assert!(output.status.success(), "{}", describe(&output));
        let stdout = String::from_utf8_lossy(&output.stdout);
        let expected = if round == 0 {
            format!("{} stored, 0 already stored", rows.len())
        } else {
            format!("0 stored, {} already stored", rows.len())
        };
        assert!(stdout.contains(&expected), "round {round}: {stdout}");
    }
    // Every CSV row is in the store with its values (the CSV is the reference).
    assert_eq!(
        pg.psql("select count(*) from candles where symbol = 'GOOG' and interval_code = 7")
            .unwrap(),
        rows.len().to_string()
    );
    for row in [rows[0], rows[rows.len() / 2], rows[rows.len() - 1]] {
        let fields: Vec<&str> = row.split(',').collect();
        let sql = format!(
            "select open, high, low, close, volume from candles where symbol = 'GOOG' and interval_code = 7 \
             and open_time_us = (extract(epoch from date '{}') * 1000000)::bigint",
            fields[0]
        );
        let stored: Vec<f64> = pg
            .psql(&sql)
            .unwrap()
            .split('|')
            .map(|v| v.parse().unwrap())
            .collect();
        let csv_values: Vec<f64> = fields[1..6].iter().map(|v| v.parse().unwrap()).collect();
        assert_eq!(stored, csv_values, "{row}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_source_streams_progress_and_stores_a_recorded_source_once() {
    use tickmesh_proto::v1::ReplaySourceRequest;
    use tokio_stream::StreamExt;
    let csv = goog_csv();
    let rows = std::fs::read_to_string(&csv)
        .unwrap()
        .lines()
        .skip(1)
        .count() as u64;
    let pg = tickmesh_testkit::Postgres::start().expect("a throwaway PostgreSQL");
    let mesh = serve_ingestion(&[
        ("TICKMESH_STORE_URL", OsString::from(pg.url())),
        ("TICKMESH_REPLAY_DIR", OsString::from(csv.parent().unwrap())),
    ]);
    let mut client = IngestionServiceClient::new(channel(mesh.addr("ingestion")).await);
    let request = |source: &str| ReplaySourceRequest {
        source: source.into(),
        symbol: "GOOG".into(),
        ..Default::default()
    };
    for round in 0..2 {
        let mut stream = client
            .replay_source(request("GOOG"))
            .await
            .unwrap()
            .into_inner();
        let mut updates = Vec::new();
        while let Some(update) = stream.next().await {
            updates.push(update.unwrap());
        }
        let last = updates.last().unwrap();
        assert!(last.done, "the stream ends with a done message");
        assert!(updates.len() > 2, "progress comes batch by batch");
        assert_eq!((last.rows_read, last.rows_total), (rows, rows));
        let summary = last.summary.clone().unwrap();
        let expected = if round == 0 { (rows, 0) } else { (0, rows) };
        assert_eq!(
            (summary.stored, summary.duplicates),
            expected,
            "round {round}"
        );
    }
    assert_eq!(
        pg.psql("select count(*) from candles where symbol = 'GOOG'")
            .unwrap(),
        rows.to_string()
    );
    let escape = client
        .replay_source(request("../etc/passwd"))
        .await
        .unwrap_err();
    assert_eq!(escape.code(), Code::InvalidArgument);
    let unknown = client.replay_source(request("NOPE")).await.unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
}
