//! Loading the configuration from files and the environment, as `tickmesh` does.

#![allow(clippy::unwrap_used)] // helpers unwrap too: a panic is a failed test

use std::path::PathBuf;

use tickmesh_config::{ConfigError, Format, load, parse_over_defaults, to_yaml};
use tickmesh_proto::v1::{CachingStrategy, DependencyManagementApproach};

fn no_env() -> Vec<(String, String)> {
    Vec::new()
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn invalid_field(err: ConfigError) -> String {
    err.field()
        .unwrap_or_else(|| panic!("expected an error naming a field, got: {err}"))
        .to_owned()
}

#[test]
fn the_defaults_carry_the_documented_breaker_and_skip_settings() {
    let loaded = load(None, no_env()).unwrap();
    let breaker = loaded.config.circuit_breaker.unwrap();
    // The product spec's defaults: failure threshold 5, success threshold 2, open 60 s.
    assert_eq!(breaker.failure_threshold, 5);
    assert_eq!(breaker.success_threshold, 2);
    assert_eq!(breaker.open_duration.unwrap().seconds, 60);
    let processing = loaded.config.processing.unwrap();
    assert_eq!(processing.skip_unchanged_threshold_percent, 0.5);
    assert!(processing.prioritize_by_volatility);
    assert_eq!(loaded.source, "defaults");
}

#[test]
fn yaml_toml_and_json_files_mean_the_same_thing() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = write(
        &dir,
        "c.yaml",
        "circuit_breaker:\n  failure_threshold: 9\n  open_duration: 1.5s\ncaching_strategy: CACHING_STRATEGY_IN_MEMORY\n",
    );
    let toml = write(
        &dir,
        "c.toml",
        "caching_strategy = \"CACHING_STRATEGY_IN_MEMORY\"\n[circuit_breaker]\nfailure_threshold = 9\nopen_duration = \"1.5s\"\n",
    );
    let json = write(
        &dir,
        "c.json",
        r#"{"circuitBreaker": {"failureThreshold": 9, "openDuration": "1.5s"}, "cachingStrategy": "CACHING_STRATEGY_IN_MEMORY"}"#,
    );
    let from_yaml = load(Some(&yaml), no_env()).unwrap().config;
    let from_toml = load(Some(&toml), no_env()).unwrap().config;
    let from_json = load(Some(&json), no_env()).unwrap().config;
    assert_eq!(from_yaml, from_toml);
    assert_eq!(from_yaml, from_json);
    let breaker = from_yaml.circuit_breaker.unwrap();
    assert_eq!(breaker.failure_threshold, 9);
    // Unset fields of a partly given message keep their defaults.
    assert_eq!(breaker.success_threshold, 2);
    let open = breaker.open_duration.unwrap();
    assert_eq!((open.seconds, open.nanos), (1, 500_000_000));
}

#[test]
fn an_unknown_field_is_named_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "c.yaml", "cache:\n  l1_max_entires: 10\n");
    let err = load(Some(&path), no_env()).unwrap_err();
    assert_eq!(invalid_field(err), "cache.l1_max_entires");
}

#[test]
fn a_value_of_the_wrong_type_names_its_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "c.yaml", "retry:\n  max_attempts: lots\n");
    let err = load(Some(&path), no_env()).unwrap_err();
    assert_eq!(invalid_field(err), "retry.max_attempts");

    let path = write(
        &dir,
        "d.yaml",
        "caching_strategy: CACHING_STRATEGY_ON_DISK\n",
    );
    let err = load(Some(&path), no_env()).unwrap_err();
    assert_eq!(invalid_field(err), "caching_strategy");
}

#[test]
fn an_out_of_range_value_names_its_field() {
    let cases = [
        (
            "circuit_breaker:\n  failure_threshold: 0\n",
            "circuit_breaker.failure_threshold",
        ),
        (
            "processing:\n  skip_unchanged_threshold_percent: 120\n",
            "processing.skip_unchanged_threshold_percent",
        ),
        (
            "server:\n  shutdown_grace_period: 0s\n",
            "server.shutdown_grace_period",
        ),
        (
            "cache:\n  namespaces:\n    candles:\n      refresh_ahead_fraction: 1.0\n",
            "cache.namespaces.candles.refresh_ahead_fraction",
        ),
        (
            "adaptive_ttl:\n  sessions:\n    - {name: X, time_zone: America/New_York, open_time: \"16:00\", close_time: \"09:30\", symbols: [A]}\n",
            "adaptive_ttl.sessions[0].close_time",
        ),
        (
            "rate_limits:\n  sources:\n    binance: {rate_per_second: -1, burst: 5}\n",
            "rate_limits.sources.binance.rate_per_second",
        ),
        (
            "retry:\n  initial_backoff: 5s\n  max_backoff: 1s\n",
            "retry.max_backoff",
        ),
    ];
    for (text, field) in cases {
        let err = parse_over_defaults(text, Format::Yaml).unwrap_err();
        assert_eq!(invalid_field(err), field, "for {text:?}");
    }
}

#[test]
fn a_shared_cache_without_outside_dependencies_is_rejected() {
    let err = parse_over_defaults(
        "caching_strategy: CACHING_STRATEGY_MULTI_LAYER\n",
        Format::Yaml,
    )
    .unwrap_err();
    assert_eq!(invalid_field(err), "caching_strategy");

    let ok = parse_over_defaults(
        "caching_strategy: CACHING_STRATEGY_MULTI_LAYER\ndependency_management: DEPENDENCY_MANAGEMENT_APPROACH_DYNAMIC_LOADING\n",
        Format::Yaml,
    )
    .unwrap();
    assert_eq!(ok.caching_strategy(), CachingStrategy::MultiLayer);
    assert_eq!(
        ok.dependency_management(),
        DependencyManagementApproach::DynamicLoading
    );
}

#[test]
fn environment_variables_override_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "c.yaml", "circuit_breaker:\n  failure_threshold: 9\n");
    let loaded = load(
        Some(&path),
        env(&[
            ("TICKMESH_CIRCUIT_BREAKER__FAILURE_THRESHOLD", "7"),
            ("TICKMESH_CACHE__NAMESPACES__CANDLES__TTL", "5s"),
            ("TICKMESH_PROCESSING__PRIORITIZE_BY_VOLATILITY", "false"),
            ("TICKMESH_CONFIG", "ignored: this one names the file"),
            ("UNRELATED", "ignored"),
        ]),
    )
    .unwrap();
    assert_eq!(loaded.config.circuit_breaker.unwrap().failure_threshold, 7);
    let cache = loaded.config.cache.unwrap();
    assert_eq!(cache.namespaces["candles"].ttl.unwrap().seconds, 5);
    // The rest of the candles policy keeps its default.
    assert!(cache.namespaces["candles"].write_through);
    assert!(!loaded.config.processing.unwrap().prioritize_by_volatility);
    assert!(loaded.source.ends_with("+ env"), "{}", loaded.source);
}

#[test]
fn a_misspelt_environment_variable_stops_loading() {
    let err = load(
        None,
        env(&[("TICKMESH_CIRCUT_BREAKER__FAILURE_THRESHOLD", "7")]),
    )
    .unwrap_err();
    assert_eq!(
        invalid_field(err),
        "TICKMESH_CIRCUT_BREAKER__FAILURE_THRESHOLD"
    );
}

#[test]
fn a_bad_environment_value_names_the_field() {
    let err = load(None, env(&[("TICKMESH_SERVER__MAX_MESSAGE_BYTES", "12")])).unwrap_err();
    assert_eq!(invalid_field(err), "server.max_message_bytes");
}

#[test]
fn printed_yaml_loads_back_to_the_same_configuration() {
    let original = parse_over_defaults(
        "retry:\n  max_attempts: 4\nadaptive_ttl:\n  volatility_threshold: 0.02\n",
        Format::Yaml,
    )
    .unwrap();
    let printed = to_yaml(&original);
    let reloaded = parse_over_defaults(&printed, Format::Yaml).unwrap();
    assert_eq!(original, reloaded);
}

#[test]
fn a_file_with_an_unknown_extension_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "c.ini", "x=1\n");
    assert!(matches!(
        load(Some(&path), no_env()),
        Err(ConfigError::UnknownFormat { .. })
    ));
}

#[test]
fn a_syntax_error_says_which_format() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "c.json", "{\"retry\": ");
    match load(Some(&path), no_env()) {
        Err(ConfigError::Syntax { format, .. }) => assert_eq!(format, "JSON"),
        other => panic!("expected a syntax error, got {other:?}"),
    }
}

#[test]
fn the_redis_timeout_defaults_to_250_ms_and_is_bounded() {
    // 250 ms is the value the proto comment of `cache.redis_timeout` documents.
    let loaded = load(None, no_env()).unwrap();
    let timeout = loaded.config.cache.unwrap().redis_timeout.unwrap();
    assert_eq!((timeout.seconds, timeout.nanos), (0, 250_000_000));

    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "ok.yaml", "cache:\n  redis_timeout: 1.5s\n");
    let timeout = load(Some(&path), no_env())
        .unwrap()
        .config
        .cache
        .unwrap()
        .redis_timeout
        .unwrap();
    assert_eq!((timeout.seconds, timeout.nanos), (1, 500_000_000));
    for bad in ["0s", "11s", "-1s"] {
        let path = write(
            &dir,
            "bad.yaml",
            &format!("cache:\n  redis_timeout: {bad}\n"),
        );
        let err = load(Some(&path), no_env()).unwrap_err();
        assert_eq!(invalid_field(err), "cache.redis_timeout", "{bad}");
    }
}

#[test]
fn a_configuration_written_before_redis_timeout_still_validates() {
    let mut config = load(None, no_env()).unwrap().config;
    config.cache.as_mut().unwrap().redis_timeout = None;
    tickmesh_config::validate(&config).unwrap();
}

#[test]
fn the_reliability_bounds_have_their_defaults_and_are_checked() {
    let config = load(None, no_env()).unwrap().config;
    let secs = |d: Option<prost_types::Duration>| {
        let d = d.unwrap();
        d.seconds as f64 + f64::from(d.nanos) / 1e9
    };
    assert_eq!(secs(config.store.unwrap().connect_timeout), 3.0);
    assert_eq!(config.store.unwrap().pool_size, 8);
    assert_eq!(secs(config.bus.unwrap().claim_idle), 3.0);
    assert_eq!(secs(config.bus.unwrap().consumer_idle_limit), 600.0);
    assert_eq!(secs(config.circuit_breaker.unwrap().probe_interval), 0.5);
    assert_eq!(secs(config.server.unwrap().stream_send_timeout), 5.0);

    // The environment reaches them like any other field.
    let over = load(None, env(&[("TICKMESH_BUS__CLAIM_IDLE", "1.5s")])).unwrap();
    assert_eq!(secs(over.config.bus.unwrap().claim_idle), 1.5);

    let dir = tempfile::tempdir().unwrap();
    for (yaml, field) in [
        ("store:\n  connect_timeout: 0s\n", "store.connect_timeout"),
        ("store:\n  connect_timeout: 61s\n", "store.connect_timeout"),
        ("store:\n  pool_size: 0\n", "store.pool_size"),
        ("store:\n  pool_size: 1025\n", "store.pool_size"),
        ("bus:\n  claim_idle: 0s\n", "bus.claim_idle"),
        (
            "bus:\n  claim_idle: 10s\n  consumer_idle_limit: 5s\n",
            "bus.consumer_idle_limit",
        ),
        (
            "circuit_breaker:\n  probe_interval: 0s\n",
            "circuit_breaker.probe_interval",
        ),
        ("server:\n  max_timeout: 1s\n", "server.max_timeout"),
        (
            "server:\n  caller_concurrency_share: 1.5\n",
            "server.caller_concurrency_share",
        ),
        (
            "server:\n  stream_send_timeout: 0s\n",
            "server.stream_send_timeout",
        ),
    ] {
        let path = write(&dir, "bad.yaml", yaml);
        let err = load(Some(&path), no_env()).unwrap_err();
        assert_eq!(invalid_field(err), field, "{yaml}");
    }
}

#[test]
fn the_query_near_cache_defaults_to_64_mib_and_is_bounded() {
    let loaded = load(None, no_env()).unwrap();
    assert_eq!(loaded.config.query.unwrap().indicator_cache_bytes, 64 << 20);
    let off = load(None, env(&[("TICKMESH_QUERY__INDICATOR_CACHE_BYTES", "0")])).unwrap();
    assert_eq!(off.config.query.unwrap().indicator_cache_bytes, 0);
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        &dir,
        "big.yaml",
        "query:\n  indicator_cache_bytes: 17179869185\n",
    );
    let err = load(Some(&path), no_env()).unwrap_err();
    assert_eq!(invalid_field(err), "query.indicator_cache_bytes");
}

#[test]
fn the_held_candle_history_defaults_to_256_mib_and_is_bounded() {
    let q = load(None, no_env()).unwrap().config.query.unwrap();
    assert_eq!(
        (q.candle_cache_bytes, q.candle_history_bars),
        (256 << 20, 100_000)
    );
    let set = load(None, env(&[("TICKMESH_QUERY__CANDLE_HISTORY_BARS", "500")])).unwrap();
    assert_eq!(set.config.query.unwrap().candle_history_bars, 500);
    let dir = tempfile::tempdir().unwrap();
    for (yaml, field) in [
        (
            "query:\n  candle_cache_bytes: 17179869185\n",
            "query.candle_cache_bytes",
        ),
        (
            "query:\n  candle_history_bars: 0\n",
            "query.candle_history_bars",
        ),
    ] {
        let path = write(&dir, "q.yaml", yaml);
        let err = load(Some(&path), no_env()).unwrap_err();
        assert_eq!(invalid_field(err), field, "{yaml}");
    }
}
