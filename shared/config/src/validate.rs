//! Range and consistency checks of a configuration; each failure names its field.

use prost_types::Duration;
use tickmesh_proto::v1::{
    CachePolicy, CachingStrategy, DependencyManagementApproach, EvictionPolicy, MarketSession,
    PerformanceOptimizationConfig, ProcessingStrategy, SerializationMethod, TokenBucket,
};

use crate::error::ConfigError;

type Check = Result<(), ConfigError>;

/// Longest `cache.redis_timeout`: past this, a Redis that hangs stalls callers instead of the
/// cache degrading to L1 and the source.
pub const MAX_REDIS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Longest `store.connect_timeout`: past this, every write during an outage hangs its caller.
pub const MAX_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Largest `store.pool_size` (PostgreSQL's own default `max_connections` is 100).
pub const MAX_POOL_SIZE: u32 = 1024;

/// Largest `query.indicator_cache_bytes` and `query.candle_cache_bytes`.
pub const MAX_INDICATOR_CACHE_BYTES: u64 = 16 << 30;

fn fail(field: &str, reason: impl Into<String>) -> Check {
    Err(ConfigError::invalid(field, reason))
}

fn positive_duration(field: &str, value: Option<&Duration>) -> Check {
    match value {
        Some(d) if d.seconds > 0 || (d.seconds == 0 && d.nanos > 0) => {
            if d.seconds < 0 || d.nanos < 0 {
                fail(field, "must not be negative")
            } else {
                Ok(())
            }
        }
        Some(_) => fail(field, "must be longer than zero"),
        None => fail(field, "must be set"),
    }
}

fn non_negative_duration(field: &str, value: Option<&Duration>) -> Check {
    match value {
        Some(d) if d.seconds < 0 || d.nanos < 0 => fail(field, "must not be negative"),
        _ => Ok(()),
    }
}

fn at_least(field: &str, value: u64, min: u64) -> Check {
    if value < min {
        fail(field, format!("must be at least {min} (got {value})"))
    } else {
        Ok(())
    }
}

fn within(field: &str, value: f64, min: f64, max: f64) -> Check {
    if value.is_finite() && (min..=max).contains(&value) {
        Ok(())
    } else {
        fail(
            field,
            format!("must be between {min} and {max} (got {value})"),
        )
    }
}

fn set_enum<E: TryFrom<i32>>(field: &str, value: i32) -> Check {
    if value == 0 {
        return fail(field, "must be set (the UNSPECIFIED value is not a choice)");
    }
    match E::try_from(value) {
        Ok(_) => Ok(()),
        Err(_) => fail(field, format!("unknown value {value}")),
    }
}

/// Checks every field of `config`; the first problem found is returned.
pub fn validate(config: &PerformanceOptimizationConfig) -> Check {
    if !config.log_filter.is_empty()
        && let Err(e) = tracing_subscriber::EnvFilter::try_new(&config.log_filter)
    {
        return fail("log_filter", format!("not a log filter: {e}"));
    }
    set_enum::<CachingStrategy>("caching_strategy", config.caching_strategy)?;
    set_enum::<ProcessingStrategy>("processing_strategy", config.processing_strategy)?;
    set_enum::<SerializationMethod>("serialization_method", config.serialization_method)?;
    set_enum::<DependencyManagementApproach>(
        "dependency_management",
        config.dependency_management,
    )?;
    if config.dependency_management() == DependencyManagementApproach::MinimalExternal
        && config.caching_strategy() != CachingStrategy::InMemory
    {
        return fail(
            "caching_strategy",
            "DISTRIBUTED and MULTI_LAYER need Redis, which dependency_management \
             MINIMAL_EXTERNAL excludes; use CACHING_STRATEGY_IN_MEMORY or another approach",
        );
    }

    let cache = config.cache.clone().unwrap_or_default();
    at_least("cache.l1_max_entries", cache.l1_max_entries, 1)?;
    at_least("cache.l1_max_bytes", cache.l1_max_bytes, 1024)?;
    at_least("cache.max_value_bytes", cache.max_value_bytes, 1)?;
    if cache.max_value_bytes > cache.l1_max_bytes {
        return fail(
            "cache.max_value_bytes",
            "must not exceed cache.l1_max_bytes",
        );
    }
    positive_duration("cache.lock_ttl", cache.lock_ttl.as_ref())?;
    // Unset keeps the built-in 250 ms, so configurations written before the field still load.
    if let Some(timeout) = cache.redis_timeout.as_ref() {
        positive_duration("cache.redis_timeout", Some(timeout))?;
        if crate::std_duration(Some(timeout)) > MAX_REDIS_TIMEOUT {
            return fail(
                "cache.redis_timeout",
                format!("must be at most {MAX_REDIS_TIMEOUT:?}"),
            );
        }
    }
    policy(
        "cache.default_policy",
        &cache.default_policy.unwrap_or_default(),
    )?;
    for (name, p) in &cache.namespaces {
        if name.is_empty() || name.len() > 64 {
            return fail("cache.namespaces", "namespace names are 1-64 characters");
        }
        policy(&format!("cache.namespaces.{name}"), p)?;
    }

    let ttl = config.adaptive_ttl.clone().unwrap_or_default();
    for (i, s) in ttl.sessions.iter().enumerate() {
        session(&format!("adaptive_ttl.sessions[{i}]"), s)?;
    }
    positive_duration(
        "adaptive_ttl.session_open_ttl",
        ttl.session_open_ttl.as_ref(),
    )?;
    positive_duration(
        "adaptive_ttl.session_closed_ttl",
        ttl.session_closed_ttl.as_ref(),
    )?;
    positive_duration("adaptive_ttl.volatile_ttl", ttl.volatile_ttl.as_ref())?;
    positive_duration("adaptive_ttl.calm_ttl", ttl.calm_ttl.as_ref())?;
    within(
        "adaptive_ttl.volatility_threshold",
        ttl.volatility_threshold,
        0.0,
        10.0,
    )?;
    at_least(
        "adaptive_ttl.volatility_window_bars",
        ttl.volatility_window_bars.into(),
        2,
    )?;

    let limits = config.rate_limits.clone().unwrap_or_default();
    bucket("rate_limits.default_caller", limits.default_caller.as_ref())?;
    bucket("rate_limits.default_source", limits.default_source.as_ref())?;
    for (name, b) in &limits.callers {
        bucket(&format!("rate_limits.callers.{name}"), Some(b))?;
    }
    for (name, b) in &limits.sources {
        bucket(&format!("rate_limits.sources.{name}"), Some(b))?;
    }

    let breaker = config.circuit_breaker.unwrap_or_default();
    at_least(
        "circuit_breaker.failure_threshold",
        breaker.failure_threshold.into(),
        1,
    )?;
    at_least(
        "circuit_breaker.success_threshold",
        breaker.success_threshold.into(),
        1,
    )?;
    positive_duration(
        "circuit_breaker.open_duration",
        breaker.open_duration.as_ref(),
    )?;
    // Unset keeps a fixed wait of open_duration (configurations written before the field); a
    // longer one than open_duration is cut to it.
    if let Some(interval) = breaker.probe_interval.as_ref() {
        positive_duration("circuit_breaker.probe_interval", Some(interval))?;
    }

    let retry = config.retry.unwrap_or_default();
    at_least("retry.max_attempts", retry.max_attempts.into(), 1)?;
    if retry.max_attempts > 10 {
        return fail("retry.max_attempts", "must be at most 10");
    }
    positive_duration("retry.initial_backoff", retry.initial_backoff.as_ref())?;
    positive_duration("retry.max_backoff", retry.max_backoff.as_ref())?;
    if crate::std_duration(retry.initial_backoff.as_ref())
        > crate::std_duration(retry.max_backoff.as_ref())
    {
        return fail(
            "retry.max_backoff",
            "must not be shorter than retry.initial_backoff",
        );
    }
    within(
        "retry.backoff_multiplier",
        retry.backoff_multiplier,
        1.0,
        10.0,
    )?;
    within("retry.budget_ratio", retry.budget_ratio, 0.0, 1.0)?;

    let processing = config.processing.unwrap_or_default();
    within(
        "processing.skip_unchanged_threshold_percent",
        processing.skip_unchanged_threshold_percent,
        0.0,
        100.0,
    )?;
    if processing.worker_threads > 1024 {
        return fail("processing.worker_threads", "must be at most 1024");
    }
    at_least("processing.batch_size", processing.batch_size.into(), 1)?;
    positive_duration("processing.batch_linger", processing.batch_linger.as_ref())?;
    at_least(
        "processing.queue_capacity",
        processing.queue_capacity.into(),
        1,
    )?;

    let server = config.server.unwrap_or_default();
    at_least(
        "server.concurrency_limit",
        server.concurrency_limit.into(),
        1,
    )?;
    positive_duration("server.default_timeout", server.default_timeout.as_ref())?;
    at_least(
        "server.max_message_bytes",
        server.max_message_bytes.into(),
        1024,
    )?;
    if server.max_message_bytes > 256 * 1024 * 1024 {
        return fail("server.max_message_bytes", "must be at most 256 MiB");
    }
    positive_duration(
        "server.max_connection_age",
        server.max_connection_age.as_ref(),
    )?;
    positive_duration(
        "server.shutdown_grace_period",
        server.shutdown_grace_period.as_ref(),
    )?;

    // Unset keeps the built-in bound, so configurations written before the field still load.
    for (field, value) in [
        ("server.stream_send_timeout", &server.stream_send_timeout),
        ("server.max_timeout", &server.max_timeout),
        ("server.request_body_timeout", &server.request_body_timeout),
        ("server.handshake_timeout", &server.handshake_timeout),
        ("server.keepalive_interval", &server.keepalive_interval),
        ("server.keepalive_timeout", &server.keepalive_timeout),
    ] {
        if let Some(duration) = value.as_ref() {
            positive_duration(field, Some(duration))?;
        }
    }
    if server.max_timeout.is_some()
        && crate::std_duration(server.max_timeout.as_ref())
            < crate::std_duration(server.default_timeout.as_ref())
    {
        return fail(
            "server.max_timeout",
            "must not be shorter than server.default_timeout",
        );
    }
    within(
        "server.caller_concurrency_share",
        server.caller_concurrency_share,
        0.0,
        1.0,
    )?;
    if server.max_connections_per_peer > server.max_connections && server.max_connections > 0 {
        return fail(
            "server.max_connections_per_peer",
            "must not exceed server.max_connections",
        );
    }

    let store = config.store.unwrap_or_default();
    if let Some(timeout) = store.connect_timeout.as_ref() {
        positive_duration("store.connect_timeout", Some(timeout))?;
        if crate::std_duration(Some(timeout)) > MAX_CONNECT_TIMEOUT {
            return fail(
                "store.connect_timeout",
                format!("must be at most {MAX_CONNECT_TIMEOUT:?}"),
            );
        }
    }
    if !(1..=MAX_POOL_SIZE).contains(&store.pool_size) {
        return fail(
            "store.pool_size",
            format!("must be between 1 and {MAX_POOL_SIZE}"),
        );
    }
    let bus = config.bus.unwrap_or_default();
    if let Some(idle) = bus.claim_idle.as_ref() {
        positive_duration("bus.claim_idle", Some(idle))?;
    }
    if let Some(limit) = bus.consumer_idle_limit.as_ref() {
        positive_duration("bus.consumer_idle_limit", Some(limit))?;
        if crate::std_duration(Some(limit)) < crate::std_duration(bus.claim_idle.as_ref()) {
            return fail(
                "bus.consumer_idle_limit",
                "must not be shorter than bus.claim_idle",
            );
        }
    }

    let ingestion = config.ingestion.unwrap_or_default();
    at_least(
        "ingestion.max_batch_rows",
        ingestion.max_batch_rows.into(),
        1,
    )?;
    at_least(
        "ingestion.write_batch_rows",
        ingestion.write_batch_rows.into(),
        1,
    )?;

    // The near cache lives in the query process's memory: more than that is a typo.
    let near_bytes = config.query.as_ref().map_or(0, |q| q.indicator_cache_bytes);
    if near_bytes > MAX_INDICATOR_CACHE_BYTES {
        return fail(
            "query.indicator_cache_bytes",
            format!("must be at most {MAX_INDICATOR_CACHE_BYTES} (16 GiB; got {near_bytes})"),
        );
    }
    let query = config.query.unwrap_or_default();
    if query.candle_cache_bytes > MAX_INDICATOR_CACHE_BYTES {
        return fail(
            "query.candle_cache_bytes",
            format!(
                "must be at most {MAX_INDICATOR_CACHE_BYTES} (16 GiB; got {})",
                query.candle_cache_bytes
            ),
        );
    }
    if query.candle_cache_bytes > 0 {
        at_least(
            "query.candle_history_bars",
            query.candle_history_bars.into(),
            1,
        )?;
    }
    web(&config.web.clone().unwrap_or_default())
}

fn web(web: &tickmesh_proto::v1::WebConfig) -> Check {
    if !(web.addr.is_empty() || web.addr == "off")
        && web.addr.parse::<std::net::SocketAddr>().is_err()
    {
        return fail(
            "web.addr",
            format!(
                "must be host:port with an IP address, like 127.0.0.1:7400, or \"off\" (got {:?})",
                web.addr
            ),
        );
    }
    for (i, origin) in web.cors_allowed_origins.iter().enumerate() {
        let rest = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"));
        let ok = origin == "*"
            || rest.is_some_and(|host| {
                !host.is_empty() && !host.contains('/') && !host.contains(char::is_whitespace)
            });
        if !ok {
            return fail(
                &format!("web.cors_allowed_origins[{i}]"),
                format!(
                    "must be an origin like https://example.com:8443 (no path) or \"*\" (got {origin:?})"
                ),
            );
        }
    }
    Ok(())
}

fn policy(path: &str, p: &CachePolicy) -> Check {
    set_enum::<EvictionPolicy>(&format!("{path}.eviction"), p.eviction)?;
    if !p.adaptive_ttl {
        positive_duration(&format!("{path}.ttl"), p.ttl.as_ref())?;
    }
    non_negative_duration(&format!("{path}.tti"), p.tti.as_ref())?;
    if !(p.refresh_ahead_fraction.is_finite() && (0.0..1.0).contains(&p.refresh_ahead_fraction)) {
        return fail(
            &format!("{path}.refresh_ahead_fraction"),
            format!(
                "must be at least 0 and below 1 (got {})",
                p.refresh_ahead_fraction
            ),
        );
    }
    Ok(())
}

fn bucket(path: &str, b: Option<&TokenBucket>) -> Check {
    let Some(b) = b else {
        return fail(path, "must be set");
    };
    if !(b.rate_per_second.is_finite() && b.rate_per_second > 0.0) {
        return fail(
            &format!("{path}.rate_per_second"),
            format!("must be a number above 0 (got {})", b.rate_per_second),
        );
    }
    at_least(&format!("{path}.burst"), b.burst.into(), 1)
}

/// Minutes after midnight of an "HH:MM" time.
fn clock(field: &str, text: &str) -> Result<u32, ConfigError> {
    let parsed = text.split_once(':').and_then(|(h, m)| {
        let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
        (h < 24 && m < 60 && text.len() == 5).then_some(h * 60 + m)
    });
    parsed.ok_or_else(|| ConfigError::invalid(field, format!("must be HH:MM (got {text:?})")))
}

fn session(path: &str, s: &MarketSession) -> Check {
    if s.name.is_empty() {
        return fail(&format!("{path}.name"), "must not be empty");
    }
    let zone = &s.time_zone;
    let well_formed = matches!(zone.as_str(), "UTC" | "GMT")
        || (zone.contains('/') && !zone.starts_with('/') && !zone.contains(".."));
    if !well_formed {
        return fail(
            &format!("{path}.time_zone"),
            format!("must be an IANA zone like America/New_York (got {zone:?})"),
        );
    }
    let open = clock(&format!("{path}.open_time"), &s.open_time)?;
    let close = clock(&format!("{path}.close_time"), &s.close_time)?;
    if open >= close {
        return fail(&format!("{path}.close_time"), "must be after open_time");
    }
    if s.symbols.is_empty() {
        return fail(
            &format!("{path}.symbols"),
            "must list at least one symbol or prefix*",
        );
    }
    Ok(())
}
