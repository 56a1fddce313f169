//! `GetIndicators` is never stale: the first call after an acknowledged ingest (a new bar, or a
//! correction of an old one) returns the series that ends at / includes that candle, from
//! either of two query processes, each with its own caching process, on one PostgreSQL and one
//! Redis. Before the fix, both answered `cache_hit: true` with the old series for the
//! namespace's TTL (60 s).

use std::ffi::OsString;

use tickmesh_proto::v1::computation_service_client::ComputationServiceClient;
use tickmesh_proto::v1::ingestion_service_client::IngestionServiceClient;
use tickmesh_proto::v1::query_service_client::QueryServiceClient;
use tickmesh_proto::v1::{
    Candle, ComputeIndicatorsRequest, GetIndicatorsRequest, IndicatorKind, IndicatorSeries,
    IndicatorSpec, IngestCandlesRequest, Interval,
};
use tonic::transport::Channel;

use crate::support::{Process, channel};

const DAY_US: i64 = 86_400_000_000;

/// Day `i` of a made-up daily series (the freshness of the answer is under test, not the
/// indicator's arithmetic, which `computation::` checks against TA-Lib).
fn bar(i: i64, close: f64) -> Candle {
    crate::support::candle(
        "FRSH",
        Interval::Interval1d,
        19_000 * DAY_US + i * DAY_US,
        [close - 0.5, close + 1.0, close - 1.0, close],
        1_000.0 + i as f64,
    )
}

fn close(i: i64) -> f64 {
    100.0 + (i as f64 * 0.7).sin() * 5.0 + i as f64 * 0.05
}

fn rsi() -> IndicatorSpec {
    IndicatorSpec {
        kind: IndicatorKind::Rsi as i32,
        period: 14,
        ..IndicatorSpec::default()
    }
}

async fn get(query: &mut QueryServiceClient<Channel>) -> (Vec<IndicatorSeries>, bool) {
    let answer = query
        .get_indicators(GetIndicatorsRequest {
            symbol: "FRSH".into(),
            interval: Interval::Interval1d as i32,
            indicators: vec![rsi()],
            limit: 50,
            ..GetIndicatorsRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    (answer.series, answer.cache_hit)
}

/// What the computation service computes from the store now: current by definition.
async fn computed(computation: &mut ComputationServiceClient<Channel>) -> Vec<IndicatorSeries> {
    computation
        .compute_indicators(ComputeIndicatorsRequest {
            symbols: vec!["FRSH".into()],
            interval: Interval::Interval1d as i32,
            indicators: vec![rsi()],
            limit: 50,
            ..ComputeIndicatorsRequest::default()
        })
        .await
        .unwrap()
        .into_inner()
        .series
}

async fn ingest(ingestion: &mut IngestionServiceClient<Channel>, candles: Vec<Candle>) {
    let summary = ingestion
        .ingest_candles(IngestCandlesRequest {
            candles,
            source: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .summary
        .unwrap();
    assert!(summary.rejected.is_empty(), "{summary:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_indicators_is_current_right_after_an_acknowledged_ingest_in_every_process() {
    let pg = tickmesh_testkit::Postgres::start().expect("a throwaway PostgreSQL");
    let redis = tickmesh_testkit::Redis::start().expect("a throwaway Redis");
    let env: Vec<(&str, OsString)> = vec![
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
    let serve = |target: &str, extra: Vec<(&str, OsString)>| {
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
    let caching = [serve("caching", vec![]), serve("caching", vec![])];
    let queries: Vec<Process> = caching
        .iter()
        .map(|caching| {
            serve(
                "query",
                vec![
                    (
                        "TICKMESH_COMPUTATION_ADDR",
                        computation.addr("computation").into(),
                    ),
                    ("TICKMESH_CACHING_ADDR", caching.addr("caching").into()),
                ],
            )
        })
        .collect();
    let mut ingest_client = IngestionServiceClient::new(channel(ingestion.addr("ingestion")).await);
    let mut compute_client =
        ComputationServiceClient::new(channel(computation.addr("computation")).await);
    let mut query_clients = Vec::new();
    for query in &queries {
        query_clients.push(QueryServiceClient::new(channel(query.addr("query")).await));
    }

    ingest(
        &mut ingest_client,
        (0..120).map(|i| bar(i, close(i))).collect(),
    )
    .await;
    // Warm: the second call of each process is a cache hit (the near cache or the caching
    // service), so what follows is about a cached series going stale.
    for query in &mut query_clients {
        get(query).await;
        let (_, hit) = get(query).await;
        assert!(hit, "a repeat is served from the cache");
    }

    for i in 120..140 {
        // A new bar, acknowledged; then at once, both processes.
        ingest(&mut ingest_client, vec![bar(i, close(i))]).await;
        let expected = computed(&mut compute_client).await;
        assert_eq!(
            expected[0].time_us.last(),
            Some(&(19_000 * DAY_US + i * DAY_US))
        );
        for (n, query) in query_clients.iter_mut().enumerate() {
            let (series, _) = get(query).await;
            assert_eq!(
                series, expected,
                "query process {n}, right after bar {i} was acknowledged"
            );
            // And the repeat is a hit again, with the same series.
            let (again, hit) = get(query).await;
            assert!(
                hit && again == expected,
                "query process {n}, repeat after bar {i}"
            );
        }
    }

    // A correction of a bar inside the window changes the values, not the times.
    let before = get(&mut query_clients[0]).await.0;
    ingest(&mut ingest_client, vec![bar(130, close(130) + 7.5)]).await;
    let expected = computed(&mut compute_client).await;
    assert_ne!(expected, before, "the correction moves RSI");
    assert_eq!(expected[0].time_us, before[0].time_us);
    for (n, query) in query_clients.iter_mut().enumerate() {
        assert_eq!(
            get(query).await.0,
            expected,
            "query process {n}, right after the correction"
        );
    }
}
