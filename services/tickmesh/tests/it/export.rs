//! `QueryService.ExportCandles` against a real process on both store backends: GOOG's daily
//! bars replayed from the `backtesting` CSV come back as columns equal to the CSV row for row
//! (the CSV is the reference, not our own earlier output), in pages that respect the row bound
//! and stay well under gRPC's 4 MiB default message limit, over a range too; bad symbols,
//! intervals, ranges, page sizes and tokens are INVALID_ARGUMENT naming the field; the call
//! needs a key with the read scope when auth is on.

use std::ffi::OsString;
use std::io::Write;

use prost::Message;
use tickmesh_proto::v1::query_service_client::QueryServiceClient;
use tickmesh_proto::v1::{ExportCandlesRequest, ExportCandlesResponse, Interval};
use tonic::transport::Channel;
use tonic::{Code, Request};
use tonic_types::StatusExt;

use crate::support::{self, Process, channel, describe, run, tickmesh};

/// The server's page bound (`MAX_EXPORT_PAGE` in services/query/src/export.rs).
const MAX_PAGE: usize = 32_768;
const VIEWER_KEY: &str = "viewer-key-5d0c2b9e71aa";
const FEEDER_KEY: &str = "feeder-key-e83f1c0a4b62";

/// The CSV's rows as (open time in µs, [open, high, low, close, volume]).
pub(crate) fn goog_rows() -> (std::path::PathBuf, Vec<(i64, [f64; 5])>) {
    let path = support::goog_csv();
    let rows = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .skip(1)
        .filter(|l| !l.is_empty())
        .map(|line| {
            let f: Vec<&str> = line.split(',').collect();
            let d: Vec<i64> = f[0][..10].split('-').map(|p| p.parse().unwrap()).collect();
            let days = tickmesh_store::time::days_from_civil(d[0], d[1] as u32, d[2] as u32);
            let v: Vec<f64> = f[1..6].iter().map(|x| x.parse().unwrap()).collect();
            (days * 86_400_000_000, [v[0], v[1], v[2], v[3], v[4]])
        })
        .collect();
    (path, rows)
}

fn keyed<T>(message: T, key: Option<&str>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(key) = key {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {key}").parse().unwrap());
    }
    request
}

/// Every page of `request`, checking each against the bound it asked for.
async fn export_all(
    client: &mut QueryServiceClient<Channel>,
    mut request: ExportCandlesRequest,
    key: Option<&str>,
) -> Vec<ExportCandlesResponse> {
    let bound = match request.page_size {
        0 => MAX_PAGE,
        n => n as usize,
    };
    let mut pages = Vec::new();
    loop {
        let page = client
            .export_candles(keyed(request.clone(), key))
            .await
            .unwrap_or_else(|e| panic!("{request:?}: {e:?}"))
            .into_inner();
        let n = page.time_us.len();
        assert!(n <= bound, "a page of {n} rows, bound {bound}");
        for column in [&page.open, &page.high, &page.low, &page.close, &page.volume] {
            assert_eq!(column.len(), n, "columns of unequal length");
        }
        assert!(
            page.encoded_len() < 2 * 1024 * 1024,
            "{} bytes",
            page.encoded_len()
        );
        let last = page.next_page_token.is_empty();
        request.page_token = page.next_page_token.clone();
        pages.push(page);
        if last {
            return pages;
        }
    }
}

/// The rows of `pages` in order, asserting they are exactly `want`.
fn assert_rows(pages: &[ExportCandlesResponse], want: &[(i64, [f64; 5])]) {
    let mut got = Vec::new();
    for p in pages {
        for i in 0..p.time_us.len() {
            got.push((
                p.time_us[i],
                [p.open[i], p.high[i], p.low[i], p.close[i], p.volume[i]],
            ));
        }
    }
    assert_eq!(got.len(), want.len(), "row count");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g, w, "row {i}");
    }
}

/// The field of the first violation of an INVALID_ARGUMENT.
fn violated_field(status: &tonic::Status) -> String {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let details = status.get_error_details();
    let bad = details
        .bad_request()
        .unwrap_or_else(|| panic!("no BadRequest in {status:?}"));
    assert!(!bad.field_violations[0].description.is_empty(), "{bad:?}");
    bad.field_violations[0].field.clone()
}

/// Replays the GOOG CSV into `ingestion` and checks every export property against `query`.
async fn goog_exports_equal_the_csv(ingestion: &str, query: &str, key: Option<&str>) {
    let (csv, rows) = goog_rows();
    let mut replay = tickmesh();
    replay
        .args(["replay", "--symbol", "GOOG", "--batch", "500", "--target"])
        .arg(ingestion)
        .arg(&csv);
    if key.is_some() {
        replay.env("TICKMESH_API_KEY", FEEDER_KEY);
    }
    let output = run(&mut replay);
    assert!(output.status.success(), "{}", describe(&output));

    let mut client = QueryServiceClient::new(channel(query).await);
    let goog = ExportCandlesRequest {
        symbol: "GOOG".into(),
        interval: Interval::Interval1d as i32,
        ..Default::default()
    };
    // The default page holds all 2,148 bars: one page.
    let whole = export_all(&mut client, goog.clone(), key).await;
    assert_eq!(whole.len(), 1);
    assert_rows(&whole, &rows);
    // Pages of 700: four, every row once at the seams.
    let paged = export_all(
        &mut client,
        ExportCandlesRequest {
            page_size: 700,
            ..goog.clone()
        },
        key,
    )
    .await;
    assert_eq!(paged.len(), rows.len().div_ceil(700));
    assert_rows(&paged, &rows);
    // [start, end): rows 100..1500 of the CSV.
    let ranged = export_all(
        &mut client,
        ExportCandlesRequest {
            start_time_us: rows[100].0,
            end_time_us: rows[1500].0,
            page_size: 512,
            ..goog.clone()
        },
        key,
    )
    .await;
    assert_rows(&ranged, &rows[100..1500]);
    // A range with no bars is one empty page.
    let empty = export_all(
        &mut client,
        ExportCandlesRequest {
            start_time_us: rows[rows.len() - 1].0 + 1,
            ..goog.clone()
        },
        key,
    )
    .await;
    assert_rows(&empty, &[]);

    // Bad input: INVALID_ARGUMENT naming the field.
    let first_page = export_all(
        &mut client,
        ExportCandlesRequest {
            page_size: 1000,
            ..goog.clone()
        },
        key,
    )
    .await;
    let cases = [
        (
            ExportCandlesRequest {
                symbol: "not a symbol!".into(),
                ..goog.clone()
            },
            "symbol",
        ),
        (
            ExportCandlesRequest {
                symbol: String::new(),
                ..goog.clone()
            },
            "symbol",
        ),
        (
            ExportCandlesRequest {
                interval: Interval::Unspecified as i32,
                ..goog.clone()
            },
            "interval",
        ),
        (
            ExportCandlesRequest {
                interval: 99,
                ..goog.clone()
            },
            "interval",
        ),
        (
            ExportCandlesRequest {
                start_time_us: rows[10].0,
                end_time_us: rows[5].0,
                ..goog.clone()
            },
            "end_time_us",
        ),
        (
            ExportCandlesRequest {
                start_time_us: -5,
                ..goog.clone()
            },
            "start_time_us",
        ),
        (
            ExportCandlesRequest {
                page_size: MAX_PAGE as u32 + 1,
                ..goog.clone()
            },
            "page_size",
        ),
        (
            ExportCandlesRequest {
                page_token: "zz".into(),
                ..goog.clone()
            },
            "page_token",
        ),
        // A token of another query (another range) is refused, not silently applied.
        (
            ExportCandlesRequest {
                page_token: first_page[0].next_page_token.clone(),
                start_time_us: rows[1].0,
                ..goog.clone()
            },
            "page_token",
        ),
    ];
    for (request, field) in cases {
        let status = client
            .export_candles(keyed(request.clone(), key))
            .await
            .expect_err(&format!("{request:?} was accepted"));
        assert_eq!(violated_field(&status), field, "{request:?}: {status:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_on_tickmesh_up_equals_the_csv_and_needs_the_read_scope() {
    let mut keys = tempfile::NamedTempFile::new().unwrap();
    writeln!(keys, "feeder write {FEEDER_KEY}\nviewer read {VIEWER_KEY}").unwrap();
    let keys_path = keys.path().as_os_str().to_owned();
    let mesh = Process::start(&["up", "--base-port", "0"], move |c| {
        c.env("TICKMESH_AUTH__ENABLED", "true")
            .env("TICKMESH_AUTH__KEYS_FILE", keys_path);
    });
    goog_exports_equal_the_csv(mesh.addr("ingestion"), mesh.addr("query"), Some(VIEWER_KEY)).await;

    let mut client = QueryServiceClient::new(channel(mesh.addr("query")).await);
    let request = ExportCandlesRequest {
        symbol: "GOOG".into(),
        interval: Interval::Interval1d as i32,
        page_size: 10,
        ..Default::default()
    };
    let anonymous = client
        .export_candles(keyed(request.clone(), None))
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated, "{anonymous:?}");
    let unknown = client
        .export_candles(keyed(request, Some("not-a-key-at-all-000")))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::Unauthenticated, "{unknown:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_on_postgres_equals_the_csv() {
    let pg = tickmesh_testkit::Postgres::start().expect("a throwaway PostgreSQL");
    let url: OsString = pg.url().into();
    let mesh = Process::start(&["up", "--base-port", "0"], move |c| {
        c.env("TICKMESH_STORE_URL", url);
    });
    goog_exports_equal_the_csv(mesh.addr("ingestion"), mesh.addr("query"), None).await;
}
