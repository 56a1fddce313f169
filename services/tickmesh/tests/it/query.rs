//! The query service end to end: keyset pages while rows are being inserted, latest prices,
//! signals in pages, live streams with resume (no gap, no duplicate), slow consumers, shutdown,
//! and compressed responses.

use std::collections::HashSet;
use std::time::Duration;

use tickmesh_proto::v1::ingestion_service_client::IngestionServiceClient;
use tickmesh_proto::v1::query_service_client::QueryServiceClient;
use tickmesh_proto::v1::{
    Candle, EventKind, GetCandlesRequest, GetLatestPricesRequest, GetSignalsRequest,
    IngestCandlesRequest, IngestTickBatchRequest, Interval, Side, SortOrder,
    StreamMarketDataRequest, Tick, market_event::Payload,
};
use tonic::Code;
use tonic::codec::CompressionEncoding;

use crate::support::{self, Process, channel};

const DAY: i64 = 86_400_000_000;
const T0: i64 = 1_700_006_400_000_000; // a UTC midnight

fn candles(symbol: &str, days: std::ops::Range<i64>) -> Vec<Candle> {
    days.map(|d| {
        let close = 100.0 + (d as f64 * 0.37).sin() * 5.0;
        support::candle(
            symbol,
            Interval::Interval1d,
            T0 + d * DAY,
            [close, close + 1.0, close - 1.0, close],
            5.0,
        )
    })
    .collect()
}

fn ticks(symbol: &str, range: std::ops::Range<i64>) -> Vec<Tick> {
    range
        .map(|i| {
            support::tick(
                symbol,
                T0 + i * 1_000_000,
                format!("{i}"),
                30_000.0 + i as f64,
                0.1,
                Side::Buy,
            )
        })
        .collect()
}

struct Mesh {
    process: Process,
    ingest: IngestionServiceClient<tonic::transport::Channel>,
    query: QueryServiceClient<tonic::transport::Channel>,
}

async fn mesh() -> Mesh {
    let process = Process::start(&["up", "--base-port", "0"], |_| {});
    let ingest = IngestionServiceClient::new(channel(process.addr("ingestion")).await);
    let query = QueryServiceClient::new(channel(process.addr("query")).await);
    Mesh {
        process,
        ingest,
        query,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn candle_pages_hold_every_row_once_while_rows_are_inserted() {
    let mut m = mesh().await;
    m.ingest
        .ingest_candles(IngestCandlesRequest {
            candles: candles("PAGE", 0..1000),
            source: "t".into(),
        })
        .await
        .unwrap();
    for order in [SortOrder::Ascending, SortOrder::Descending] {
        let request = |token: String| GetCandlesRequest {
            symbol: "PAGE".into(),
            interval: Interval::Interval1d as i32,
            start_time_us: T0,
            end_time_us: T0 + 1000 * DAY,
            page_size: 64,
            order: order as i32,
            page_token: token,
            ..GetCandlesRequest::default()
        };
        let (mut seen, mut token, mut pages) = (Vec::new(), String::new(), 0);
        loop {
            let page = m
                .query
                .get_candles(request(token.clone()))
                .await
                .unwrap()
                .into_inner();
            // Rows arrive while paging: before, inside and after the range.
            let extra = candles("PAGE", (1000 + pages * 3)..(1003 + pages * 3));
            m.ingest
                .ingest_candles(IngestCandlesRequest {
                    candles: extra,
                    source: "t".into(),
                })
                .await
                .unwrap();
            seen.extend(page.candles.iter().map(|c| c.open_time_us));
            pages += 1;
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        let mut expected: Vec<i64> = (0..1000).map(|d| T0 + d * DAY).collect();
        if order == SortOrder::Descending {
            expected.reverse();
        }
        assert_eq!(
            seen, expected,
            "{order:?}: every row of the range exactly once, in order"
        );
        assert_eq!(pages, 16);
    }
    // A token is bound to its query; sizes are bounded.
    let first = m
        .query
        .get_candles(GetCandlesRequest {
            symbol: "PAGE".into(),
            interval: Interval::Interval1d as i32,
            page_size: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let err = m
        .query
        .get_candles(GetCandlesRequest {
            symbol: "PAGE".into(),
            interval: Interval::Interval1h as i32,
            page_size: 10,
            page_token: first.next_page_token,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let err = m
        .query
        .get_candles(GetCandlesRequest {
            symbol: "PAGE".into(),
            interval: Interval::Interval1d as i32,
            page_size: 1_000_000,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    drop(m.process);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_prices_and_signal_pages() {
    let mut m = mesh().await;
    m.ingest
        .ingest_tick_batch(IngestTickBatchRequest {
            ticks: ticks("BTC-USD", 0..50),
            ..Default::default()
        })
        .await
        .unwrap();
    m.ingest
        .ingest_candles(IngestCandlesRequest {
            candles: candles("SIG", 0..300),
            source: "t".into(),
        })
        .await
        .unwrap();
    let prices = m
        .query
        .get_latest_prices(GetLatestPricesRequest {
            symbols: vec!["BTC-USD".into(), "SIG".into(), "NOPE".into()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(prices.prices.len(), 2);
    assert_eq!(prices.prices[0].price, 30_049.0);
    assert_eq!(prices.prices[0].time_us, T0 + 49 * 1_000_000);
    assert_eq!(prices.prices[1].price, candles("SIG", 299..300)[0].close);
    assert_eq!(prices.missing_symbols, vec!["NOPE".to_owned()]);

    // Signals for SIG come from the bus; page through them newest first.
    let mut all = Vec::new();
    for _ in 0..200 {
        let page = m
            .query
            .get_signals(GetSignalsRequest {
                symbols: vec!["SIG".into()],
                page_size: 1000,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        if !page.signals.is_empty() {
            all = page.signals;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!all.is_empty(), "no signal stored:\n{}", m.process.log());
    let (mut paged, mut token) = (Vec::new(), String::new());
    loop {
        let page = m
            .query
            .get_signals(GetSignalsRequest {
                symbols: vec!["SIG".into()],
                page_size: 1,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        paged.extend(page.signals);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(paged, all);
    assert!(
        paged.windows(2).all(|w| w[0].time_us >= w[1].time_us),
        "newest first"
    );
    let confident = m
        .query
        .get_signals(GetSignalsRequest {
            symbols: vec!["SIG".into()],
            min_confidence: 0.99,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(confident.signals.iter().all(|s| s.confidence >= 0.99));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_stream_has_no_gap_and_no_duplicate_then_ends_on_shutdown() {
    let mut m = mesh().await;
    m.ingest
        .ingest_tick_batch(IngestTickBatchRequest {
            ticks: ticks("ETH-USD", 0..100),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut stream = m
        .query
        .stream_market_data(StreamMarketDataRequest {
            symbols: vec!["ETH-USD".into()],
            kinds: vec![EventKind::Tick as i32],
            resume_from_time_us: T0 + 50 * 1_000_000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    // Live writes race the history read.
    for batch in 0..5 {
        let range = (100 + batch * 20)..(120 + batch * 20);
        m.ingest
            .ingest_tick_batch(IngestTickBatchRequest {
                ticks: ticks("ETH-USD", range),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let mut ids = Vec::new();
    let mut historical = 0;
    while ids.len() < 150 {
        let item = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("events keep coming")
            .unwrap()
            .unwrap();
        historical += usize::from(item.historical);
        let Some(Payload::Tick(tick)) = item.event.unwrap().payload else {
            panic!("only ticks were asked for");
        };
        ids.push(tick.trade_id.parse::<i64>().unwrap());
    }
    let expected: Vec<i64> = (50..200).collect();
    assert_eq!(ids, expected, "ticks 50.. once each, in order");
    assert!(
        historical >= 50,
        "the stored ticks came as history ({historical})"
    );
    let unique: HashSet<_> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len());
    // The autoscaling metric of the query service counts the open stream.
    let metrics = crate::support::scrape(&m.process.metrics);
    assert!(
        metrics.contains("tickmesh_query_active_streams 1"),
        "{metrics}"
    );

    // SIGTERM: the stream ends cleanly (OK, no error).
    m.process.terminate();
    let end = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .unwrap();
    assert!(matches!(end, Ok(None)), "stream ended with {end:?}");
    assert!(m.process.wait_exit(Duration::from_secs(15)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_too_slow_gets_resource_exhausted_not_unbounded_memory() {
    let mut m = mesh().await;
    // A client with a small HTTP/2 window, so that not reading really holds the server back.
    let small_window =
        tonic::transport::Channel::from_shared(format!("http://{}", m.process.addr("query")))
            .unwrap()
            .initial_stream_window_size(Some(16 * 1024))
            .initial_connection_window_size(Some(16 * 1024))
            .connect()
            .await
            .unwrap();
    let mut stream = QueryServiceClient::new(small_window)
        .stream_market_data(StreamMarketDataRequest {
            symbols: vec!["FAST".into()],
            kinds: vec![EventKind::Tick as i32],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    // A second subscriber that keeps reading, on its own connection.
    let mut fast = QueryServiceClient::new(channel(m.process.addr("query")).await)
        .stream_market_data(StreamMarketDataRequest {
            symbols: vec!["FAST".into()],
            kinds: vec![EventKind::Tick as i32],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let got = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = got.clone();
    let reader = tokio::spawn(async move {
        let mut ids = Vec::new();
        while ids.len() < 20_000 {
            match tokio::time::timeout(Duration::from_secs(20), fast.message()).await {
                Ok(Ok(Some(item))) => {
                    if let Some(Payload::Tick(t)) = item.event.and_then(|e| e.payload) {
                        ids.push(t.trade_id.parse::<i64>().unwrap());
                        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                other => panic!("the reading subscriber was cut off: {other:?}"),
            }
        }
        ids
    });
    // Far more events than the subscriber buffer while the slow one reads nothing. Each write
    // waits until the reading subscriber has the previous one (a batch is 1,000 ticks plus the
    // candles they close, all in the 4,096-event buffer), so that one stays a reader that keeps
    // up even when the test machine is busy.
    for batch in 0..20 {
        let range = (batch * 1000)..((batch + 1) * 1000);
        m.ingest
            .ingest_tick_batch(IngestTickBatchRequest {
                ticks: ticks("FAST", range),
                ..Default::default()
            })
            .await
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while got.load(std::sync::atomic::Ordering::Relaxed) < (batch as usize + 1) * 1000 {
            assert!(
                std::time::Instant::now() < deadline,
                "the reading subscriber stalled"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let mut received = 0;
    let status = loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .unwrap()
        {
            Ok(Some(_)) => received += 1,
            Ok(None) => panic!("the stream ended without saying it fell behind"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("missed"), "{}", status.message());
    assert!(received < 20_000, "{received}");
    // The subscriber that kept reading got everything, in order.
    let ids = reader.await.unwrap();
    assert_eq!(ids, (0..20_000).collect::<Vec<i64>>());
    // Memory stayed bounded: the server's peak RSS (VmHWM) is reported.
    let status = std::fs::read_to_string(format!("/proc/{}/status", m.process.child.id())).unwrap();
    let peak = status
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .unwrap_or("VmHWM: ?")
        .to_owned();
    eprintln!("server peak RSS with a slow and a fast subscriber over 20,000 ticks: {peak}");
    let kib: u64 = peak
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(kib > 0 && kib < 512 * 1024, "{peak}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_are_compressed_when_the_client_asks() {
    let mut m = mesh().await;
    m.ingest
        .ingest_candles(IngestCandlesRequest {
            candles: candles("ZIP", 0..500),
            source: "t".into(),
        })
        .await
        .unwrap();
    for encoding in [CompressionEncoding::Gzip, CompressionEncoding::Zstd] {
        let mut query = QueryServiceClient::new(channel(m.process.addr("query")).await)
            .accept_compressed(encoding)
            .send_compressed(encoding);
        let response = query
            .get_candles(GetCandlesRequest {
                symbol: "ZIP".into(),
                interval: Interval::Interval1d as i32,
                page_size: 500,
                ..Default::default()
            })
            .await
            .unwrap();
        let header = response
            .metadata()
            .get("grpc-encoding")
            .map(|v| v.to_str().unwrap().to_owned());
        let name = match encoding {
            CompressionEncoding::Gzip => "gzip",
            _ => "zstd",
        };
        assert_eq!(header.as_deref(), Some(name));
        assert_eq!(response.into_inner().candles.len(), 500);
    }
}

/// The description of the first field violation of a refusal, checking it is INVALID_ARGUMENT
/// about `field`.
fn violation(status: &tonic::Status, field: &str) -> String {
    use tonic_types::StatusExt;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let details = status.get_error_details();
    let bad = details
        .bad_request()
        .unwrap_or_else(|| panic!("no BadRequest in {status:?}"));
    let v = &bad.field_violations[0];
    assert!(v.field.contains(field), "{v:?} is not about {field}");
    v.description.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symbol_ingestion_refuses_gets_the_same_invalid_argument_from_every_read_rpc() {
    use tickmesh_proto::v1::computation_service_client::ComputationServiceClient;
    use tickmesh_proto::v1::{
        BatchSignalsRequest, ComputeIndicatorsRequest, GenerateSignalsRequest, GetIndicatorsRequest,
    };
    let mut m = mesh().await;
    let mut computation =
        ComputationServiceClient::new(channel(m.process.addr("computation")).await);
    for bad in ["BTC USD", "ÄPL", "EUR$USD"] {
        let mut tick = ticks("X", 0..1).remove(0);
        tick.symbol = bad.into();
        let refused = m
            .ingest
            .ingest_tick_batch(IngestTickBatchRequest {
                ticks: vec![tick],
                source: "t".into(),
            })
            .await
            .unwrap_err();
        let reason = violation(&refused, "symbol");
        assert!(reason.contains("must use only"), "{reason}");
        let interval = Interval::Interval1d as i32;
        let answers = [
            (
                "GetCandles",
                m.query
                    .get_candles(GetCandlesRequest {
                        symbol: bad.into(),
                        interval,
                        ..Default::default()
                    })
                    .await
                    .map(|_| ()),
            ),
            (
                "GetLatestPrices",
                m.query
                    .get_latest_prices(GetLatestPricesRequest {
                        symbols: vec![bad.into()],
                    })
                    .await
                    .map(|_| ()),
            ),
            (
                "GetSignals",
                m.query
                    .get_signals(GetSignalsRequest {
                        symbols: vec![bad.into()],
                        ..Default::default()
                    })
                    .await
                    .map(|_| ()),
            ),
            (
                "GetIndicators",
                m.query
                    .get_indicators(GetIndicatorsRequest {
                        symbol: bad.into(),
                        interval,
                        ..Default::default()
                    })
                    .await
                    .map(|_| ()),
            ),
            (
                "StreamMarketData",
                m.query
                    .stream_market_data(StreamMarketDataRequest {
                        symbols: vec![bad.into()],
                        ..Default::default()
                    })
                    .await
                    .map(|_| ()),
            ),
            (
                "ComputeIndicators",
                computation
                    .compute_indicators(ComputeIndicatorsRequest {
                        symbols: vec![bad.into()],
                        interval,
                        ..Default::default()
                    })
                    .await
                    .map(|_| ()),
            ),
            (
                "GenerateSignals",
                computation
                    .generate_signals(GenerateSignalsRequest {
                        symbol: bad.into(),
                        interval,
                        ..Default::default()
                    })
                    .await
                    .map(|_| ()),
            ),
            (
                "BatchSignals",
                computation
                    .batch_signals(BatchSignalsRequest {
                        symbols: vec![bad.into()],
                        interval,
                        ..Default::default()
                    })
                    .await
                    .map(|_| ()),
            ),
        ];
        for (rpc, answer) in answers {
            let status = answer.expect_err(rpc);
            assert_eq!(
                violation(&status, "symbol"),
                reason,
                "{rpc} refuses {bad:?} differently from ingestion"
            );
        }
    }
}
