//! The cache of a running process follows configuration changes (`UpdateConfig`), and the
//! computation service's `GetSignalStats` reports the signal skip rate its metrics count.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tickmesh::{App, Deps, Target};
use tickmesh_mesh::{ConfigHandle, Shutdown};
use tickmesh_proto::v1::caching_service_client::CachingServiceClient;
use tickmesh_proto::v1::computation_service_client::ComputationServiceClient;
use tickmesh_proto::v1::config_service_client::ConfigServiceClient;
use tickmesh_proto::v1::ingestion_service_client::IngestionServiceClient;
use tickmesh_proto::v1::{
    BatchSignalsRequest, Candle, GetConfigRequest, GetRequest, GetSignalStatsRequest,
    IngestCandlesRequest, Interval, SetRequest, UpdateConfigRequest,
};

use crate::support::{self, channel};

const DAY: i64 = 86_400_000_000;

/// Every service in this process (in-memory cache, SQLite store, in-process bus).
async fn start() -> (App, Deps, Shutdown) {
    let config = ConfigHandle::new(tickmesh_config::load(None, Vec::new()).unwrap());
    let shutdown = Shutdown::new();
    let localhost: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let targets: Vec<_> = Target::ALL.iter().map(|t| (*t, localhost)).collect();
    let store = crate::support::scratch_file("store.db");
    let store = tickmesh_store::StoreOptions::new(format!("sqlite:{}", store.display()));
    let deps = Deps::open(&store, None, &config).await.unwrap();
    let app = App::build(&targets, &config, &deps, &shutdown)
        .await
        .unwrap();
    (app, deps, shutdown)
}

fn addr(app: &App, target: Target) -> String {
    app.addrs()[&target].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ttl_changed_by_update_config_applies_to_the_next_write_without_a_restart() {
    let (app, _deps, shutdown) = start().await;
    let mut caching = CachingServiceClient::new(channel(&addr(&app, Target::Caching)).await);
    let mut config_client = ConfigServiceClient::new(channel(&addr(&app, Target::Caching)).await);
    let set = |key: &str| SetRequest {
        namespace: "indicators".into(),
        key: key.into(),
        value: b"series".to_vec(),
        typed: None,
        ttl: None,
    };
    let running = config_client
        .get_config(GetConfigRequest {})
        .await
        .unwrap()
        .into_inner();
    let mut config = running.config.unwrap();
    let configured = config.cache.as_ref().unwrap().namespaces["indicators"]
        .ttl
        .unwrap();
    let before = caching.set(set("BTC-USD/2/a")).await.unwrap().into_inner();
    assert_eq!(before.ttl.unwrap(), configured);

    // A TTL unlike the running one, and an L1 size change that needs a restart (logged; the
    // running L1 stays and keeps working).
    let changed = prost_types::Duration {
        seconds: configured.seconds / 2 + 1,
        nanos: 0,
    };
    assert_ne!(changed, configured);
    let cache = config.cache.as_mut().unwrap();
    cache.namespaces.get_mut("indicators").unwrap().ttl = Some(changed);
    cache.l1_max_entries += 1;
    let updated = config_client
        .update_config(UpdateConfigRequest {
            config: Some(config),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["cache.namespaces".into(), "cache.l1_max_entries".into()],
            }),
            expected_version: running.version,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.version, running.version + 1);

    // The cache applies the change as soon as it sees the new version.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut n = 0;
    loop {
        n += 1;
        let written = caching
            .set(set(&format!("BTC-USD/2/b{n}")))
            .await
            .unwrap()
            .into_inner();
        if written.ttl.unwrap() == changed {
            break;
        }
        assert_eq!(
            written.ttl.unwrap(),
            configured,
            "old or new TTL, nothing else"
        );
        assert!(Instant::now() < deadline, "the new TTL never applied");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let hit = caching
        .get(GetRequest {
            namespace: "indicators".into(),
            key: format!("BTC-USD/2/b{n}"),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(hit.found);
    let left = hit.ttl_remaining.unwrap();
    assert!(
        (left.seconds, left.nanos) <= (changed.seconds, changed.nanos),
        "{left:?}"
    );
    // The entry written before the change keeps its TTL.
    let old = caching
        .get(GetRequest {
            namespace: "indicators".into(),
            key: "BTC-USD/2/a".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        old.ttl_remaining.unwrap().seconds >= changed.seconds,
        "{old:?}"
    );
    shutdown.trigger();
    app.wait().await.unwrap();
}

/// The value of `tickmesh_signals_total{outcome=...}` in a metrics text.
fn outcome(text: &str, outcome: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(&format!("tickmesh_signals_total{{outcome=\"{outcome}\"}}")))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_signal_stats_reports_the_skip_rate_the_computation_service_counts() {
    let (app, deps, shutdown) = start().await;
    // Daily bars that swing by percents, then barely move (well under the 0.5 % skip threshold).
    let candles: Vec<Candle> = (0..400)
        .map(|i| {
            let t = i as f64;
            let swing = if i < 300 { 0.03 * (t * 0.7).sin() } else { 0.0 };
            let close = 50.0 * (swing + 0.0001 * (t * 0.3).sin()).exp();
            support::candle(
                "WOBBLE",
                Interval::Interval1d,
                (19_000 + i) * DAY,
                [close, close * 1.01, close * 0.99, close],
                1000.0,
            )
        })
        .collect();
    let mut ingest = IngestionServiceClient::new(channel(&addr(&app, Target::Ingestion)).await);
    ingest
        .ingest_candles(IngestCandlesRequest {
            candles: candles.clone(),
            source: "test".into(),
        })
        .await
        .unwrap();

    // The signal worker evaluates every bar after the strategies' warm-up once.
    let lookback = tickmesh_indicators::signals::SignalEngine::new(
        &tickmesh_indicators::signals::Params::default(),
    )
    .unwrap()
    .lookback();
    let expected = (candles.len() - lookback) as f64;
    let mut computation =
        ComputationServiceClient::new(channel(&addr(&app, Target::Computation)).await);
    let rate_now = |computation: &mut ComputationServiceClient<_>| {
        let mut computation = computation.clone();
        async move {
            computation
                .get_signal_stats(GetSignalStatsRequest::default())
                .await
                .unwrap()
                .into_inner()
                .total
                .unwrap()
                .skip_rate
        }
    };
    // GetSignalStats agrees with computation's own metric once the worker's batch is recorded.
    let agree = |computation: ComputationServiceClient<tonic::transport::Channel>,
                 expected: f64| {
        let metrics = deps.metrics.clone();
        async move {
            let mut computation = computation;
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let text = metrics.encode();
                let (computed, skipped) = (outcome(&text, "computed"), outcome(&text, "skipped"));
                let rate = rate_now(&mut computation).await;
                if computed + skipped >= expected && rate == skipped / (computed + skipped) {
                    return (computed, skipped, rate);
                }
                assert!(
                    Instant::now() < deadline,
                    "metric computed {computed} skipped {skipped}, GetSignalStats skip_rate {rate}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let (computed, skipped, rate) = agree(computation.clone(), expected).await;
    assert_eq!(computed + skipped, expected, "each bar evaluated once");
    assert!(computed > 0.0 && skipped > 0.0, "{computed} {skipped}");
    assert!(rate > 0.0 && rate < 1.0);

    // A batch over the unchanged price skips once more: the rate moves with it.
    let batch = computation
        .batch_signals(BatchSignalsRequest {
            symbols: vec!["WOBBLE".into()],
            interval: Interval::Interval1d as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(batch.skipped, 1);
    let (computed_after, skipped_after, rate_after) =
        agree(computation.clone(), expected + 1.0).await;
    assert_eq!((computed_after, skipped_after), (computed, skipped + 1.0));
    assert!(rate_after > rate);
    // The interval every evaluation was of reports the same rate.
    let daily = computation
        .get_signal_stats(GetSignalStatsRequest {
            interval: Interval::Interval1d as i32,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(daily.total.unwrap().skip_rate, rate_after);
    assert_eq!(daily.intervals.len(), 1);
    shutdown.trigger();
    app.wait().await.unwrap();
}
