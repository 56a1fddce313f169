//! The services started in-process with `App::build`, as other crates' tests will.

use std::net::SocketAddr;
use std::time::Duration;

use tickmesh::{App, Deps, Target};
use tickmesh_mesh::{ConfigHandle, Shutdown};
use tickmesh_proto::v1::caching_service_client::CachingServiceClient;
use tickmesh_proto::v1::config_service_client::ConfigServiceClient;
use tickmesh_proto::v1::{
    CacheTier, GetRequest, GetStatsRequest, InvalidateRequest, SetRequest, WatchConfigRequest,
};
use tokio_stream::StreamExt;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

use crate::support::channel;

struct Started {
    app: App,
    shutdown: Shutdown,
    config: ConfigHandle,
}

impl Started {
    fn addr(&self, target: Target) -> String {
        self.app.addrs()[&target].to_string()
    }
}

async fn start() -> Started {
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
    Started {
        app,
        shutdown,
        config,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_caching_service_serves_the_cache_and_refuses_bad_input() {
    let s = start().await;
    let mut caching = CachingServiceClient::new(channel(&s.addr(Target::Caching)).await);
    let set = |namespace: &str, key: &str, value: Vec<u8>| SetRequest {
        namespace: namespace.into(),
        key: key.into(),
        value,
        ttl: None,
        typed: None,
    };
    let get = |namespace: &str, key: &str| GetRequest {
        namespace: namespace.into(),
        key: key.into(),
    };
    let applied = caching
        .set(set("indicators", "BTC-USD/2/abc", b"series".to_vec()))
        .await
        .unwrap()
        .into_inner();
    assert!(applied.ttl.unwrap().seconds > 0);
    let hit = caching
        .get(get("indicators", "BTC-USD/2/abc"))
        .await
        .unwrap()
        .into_inner();
    assert!(hit.found);
    assert_eq!(hit.value, b"series");
    assert_eq!(hit.tier, CacheTier::L1 as i32);

    // Bad input: clear statuses.
    let err = caching.get(get("indicators", "")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    let err = caching
        .get(get("indicators", &"k".repeat(300)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    let err = caching
        .get(get("no_such_namespace", "k"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    let err = caching
        .set(set("indicators", "big", vec![0; 2 * 1024 * 1024]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");

    // A namespace with a loader goes to the store on a miss: no price stored, not found.
    let missing = caching
        .get(get("latest_prices", "NOPE"))
        .await
        .unwrap()
        .into_inner();
    assert!(!missing.found);

    // Invalidation by namespace drops the entry.
    let dropped = caching
        .invalidate(InvalidateRequest {
            namespace: "indicators".into(),
            target: Some(tickmesh_proto::v1::invalidate_request::Target::All(true)),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(dropped.invalidated >= 1);
    let gone = caching
        .get(get("indicators", "BTC-USD/2/abc"))
        .await
        .unwrap()
        .into_inner();
    assert!(!gone.found);

    let stats = caching
        .get_stats(GetStatsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let indicators = stats
        .namespaces
        .iter()
        .find(|n| n.namespace == "indicators")
        .unwrap();
    assert!(indicators.l1.unwrap().hits >= 1, "{stats:?}");
    assert!(!stats.l2_available, "no Redis in the embedded setup");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_v1_lists_exactly_what_a_port_serves() {
    let s = start().await;
    for target in Target::ALL {
        let mut client = ServerReflectionClient::new(channel(&s.addr(target)).await);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut responses = client
            .server_reflection_info(tokio_stream::once(request))
            .await
            .unwrap()
            .into_inner();
        let response = responses.next().await.unwrap().unwrap();
        let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
            panic!("unexpected reflection answer {response:?}");
        };
        let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        names.sort();
        let mut expected = vec![
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
            "tickmesh.v1.ConfigService",
            target.service_name(),
        ];
        expected.sort();
        assert_eq!(names, expected, "{target}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_watchers_see_accepted_changes_and_never_invalid_ones() {
    let s = start().await;
    let mut client = ConfigServiceClient::new(channel(&s.addr(Target::Computation)).await);
    let mut watch = client
        .watch_config(WatchConfigRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(watch.next().await.unwrap().unwrap().version, 1);

    let mut invalid = (*s.config.current().config).clone();
    invalid.retry.as_mut().unwrap().max_attempts = 0;
    let err = s.config.replace(invalid, "test").unwrap_err();
    assert_eq!(err.field(), Some("retry.max_attempts"));
    assert_eq!(s.config.current().version, 1);

    let mut valid = (*s.config.current().config).clone();
    valid.retry.as_mut().unwrap().max_attempts = 5;
    s.config.replace(valid, "test").unwrap();
    let change = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(change.version, 2);
    assert_eq!(change.source, "test");
    assert_eq!(change.config.unwrap().retry.unwrap().max_attempts, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_every_service_and_returns() {
    let s = start().await;
    let addr = s.addr(Target::Ingestion);
    assert_eq!(
        crate::support::health(&addr, "").await,
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
    s.shutdown.trigger();
    tokio::time::timeout(Duration::from_secs(15), s.app.wait())
        .await
        .expect("drained within the grace period")
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(&addr).await.is_err(),
        "the listener is closed after shutdown"
    );
}
