//! Bad input gets typed errors the service maps to status codes.

use bytes::Bytes;
use tickmesh_cache::{Cache, CacheError, ErrorClass, SetOptions, loader_fn};
use tickmesh_proto::v1::CachingStrategy;

use crate::helpers::*;

async fn cache() -> Cache {
    let mut config = config(CachingStrategy::InMemory);
    config.cache.as_mut().unwrap().max_value_bytes = 1024;
    Cache::new(&config, None).await.unwrap()
}

#[tokio::test]
async fn bad_keys_are_invalid_arguments() {
    let cache = cache().await;
    let long = "k".repeat(257);
    for key in ["", long.as_str(), "new\nline", "nul\0", "caf\u{e9}"] {
        let err = cache.get("test", key).await.unwrap_err();
        assert_eq!(err.class(), ErrorClass::InvalidArgument, "{key:?}: {err}");
        assert_eq!(err.field(), Some("key"));
        let err = cache
            .set("test", key, Bytes::from_static(b"v"), SetOptions::default())
            .await
            .unwrap_err();
        assert_eq!(err.class(), ErrorClass::InvalidArgument);
        assert!(cache.delete("test", key).await.is_err());
        assert!(cache.get_or_load("test", key).await.is_err());
    }
    assert_eq!(
        cache.get("test", "").await.unwrap_err().to_string(),
        "key must be 1-256 bytes (got 0)"
    );
    assert_eq!(
        cache.get("test", "a\tb").await.unwrap_err().to_string(),
        "key must be printable ascii (byte 0x09 at offset 1)"
    );
    assert!(cache.get("test", &"k".repeat(256)).await.is_ok());
}

#[tokio::test]
async fn bad_patterns_are_invalid_arguments() {
    let cache = cache().await;
    for pattern in ["", "tab\t*"] {
        let err = cache.invalidate_pattern("test", pattern).await.unwrap_err();
        assert_eq!(err.class(), ErrorClass::InvalidArgument);
        assert_eq!(err.field(), Some("pattern"));
    }
}

#[tokio::test]
async fn a_value_over_the_limit_is_resource_exhausted() {
    let cache = cache().await;
    let err = cache
        .set(
            "test",
            "k",
            Bytes::from(vec![0u8; 1025]),
            SetOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        CacheError::ValueTooLarge {
            len: 1025,
            max: 1024
        }
    ));
    assert_eq!(err.class(), ErrorClass::ResourceExhausted);
    assert_eq!(err.to_string(), "value is 1025 bytes, the limit is 1024");
    assert!(
        cache
            .set(
                "test",
                "k",
                Bytes::from(vec![0u8; 1024]),
                SetOptions::default()
            )
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn unknown_namespaces_are_not_found_until_a_loader_registers_them() {
    let cache = cache().await;
    let err = cache.get("nope", "k").await.unwrap_err();
    assert!(matches!(err, CacheError::UnknownNamespace(ref ns) if ns == "nope"));
    assert_eq!(err.class(), ErrorClass::NotFound);
    assert_eq!(err.to_string(), "unknown namespace \"nope\"");
    assert_eq!(
        cache
            .invalidate_namespace("nope")
            .await
            .unwrap_err()
            .class(),
        ErrorClass::NotFound
    );
    assert_eq!(
        cache
            .warm("nope", Vec::new(), |_, _| {})
            .await
            .unwrap_err()
            .class(),
        ErrorClass::NotFound
    );
    // Configured namespaces are known without a loader; warming one needs a loader.
    assert!(cache.get("candles", "k").await.unwrap().is_none());
    assert_eq!(
        cache
            .warm("candles", Vec::new(), |_, _| {})
            .await
            .unwrap_err()
            .class(),
        ErrorClass::FailedPrecondition
    );
    cache
        .register_loader(
            "nope",
            std::sync::Arc::new(loader_fn(|_| async { Ok(None) })),
        )
        .unwrap();
    assert!(cache.get("nope", "k").await.unwrap().is_none());
    let err = cache
        .register_loader(
            "a:b",
            std::sync::Arc::new(loader_fn(|_| async { Ok(None) })),
        )
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::InvalidArgument);
}

#[tokio::test]
async fn a_layered_strategy_without_redis_is_a_config_error() {
    let err = Cache::new(&config(CachingStrategy::MultiLayer), None)
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::FailedPrecondition);
    assert_eq!(
        err.to_string(),
        "caching_strategy: DISTRIBUTED and MULTI_LAYER need a redis url"
    );
    let err = Cache::new(&config(CachingStrategy::MultiLayer), Some("nonsense://x"))
        .await
        .unwrap_err();
    assert!(err.to_string().starts_with("redis url:"), "{err}");
}
