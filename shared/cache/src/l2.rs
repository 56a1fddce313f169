//! L2: Redis through a bb8 pool, behind a circuit breaker and short timeouts
//! (`cache.redis_timeout`, changeable while running), so a Redis that is
//! gone costs callers a few hundred milliseconds once, then nothing until it is back.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bb8_redis::RedisConnectionManager;
use bb8_redis::bb8::{self, ManageConnection};
use bytes::Bytes;
use redis::aio::MultiplexedConnection;
use redis::{Client, Cmd, ErrorKind, FromRedisValue, Pipeline, RedisError, Value};
use tickmesh_config::MAX_REDIS_TIMEOUT;
use tickmesh_proto::v1::CircuitBreakerConfig;
use tickmesh_resilience::breaker::{BreakerState, CircuitBreaker};
use tracing::debug;

use crate::error::CacheError;

/// Slack of the whole-operation backstop over a connection wait plus a reply wait.
const OP_SLACK: Duration = Duration::from_millis(100);
/// Connections in the pool; each multiplexes many concurrent commands.
const POOL_SIZE: u32 = 8;
/// Keys per SCAN step (and per UNLINK) when invalidating by pattern.
const SCAN_COUNT: usize = 512;

/// Deletes the lock only if it still holds our token.
const UNLOCK_SCRIPT: &str = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end";

/// A pooled Redis connection that the pool drops after a connection-level error.
///
/// bb8-redis's manager never reports a connection broken, so a pool of its bare connections
/// must PING on every checkout to get rid of dead ones: a second round trip per command. This
/// wrapper instead remembers an I/O error and tells the pool, so checkouts need no PING.
pub struct RedisConn {
    conn: MultiplexedConnection,
    broken: bool,
}

impl RedisConn {
    /// Marks the connection unusable; the pool drops it when it comes back.
    pub fn mark_broken(&mut self) {
        self.broken = true;
    }

    /// Marks the connection broken if the error is not a reply from the server.
    pub fn note_error(&mut self, err: &RedisError) {
        if !matches!(err.kind(), ErrorKind::Server(_)) {
            self.broken = true;
        }
    }
}

impl Deref for RedisConn {
    type Target = MultiplexedConnection;

    fn deref(&self) -> &MultiplexedConnection {
        &self.conn
    }
}

impl DerefMut for RedisConn {
    fn deref_mut(&mut self) -> &mut MultiplexedConnection {
        &mut self.conn
    }
}

/// The L2 timeout (`cache.redis_timeout`), changeable while running; shared by the pool's
/// manager and every operation.
#[derive(Debug, Clone)]
pub(crate) struct Timeout(Arc<AtomicU64>);

impl Timeout {
    fn new(initial: Duration) -> Self {
        let timeout = Self(Arc::default());
        timeout.set(initial);
        timeout
    }

    /// The current timeout.
    pub fn get(&self) -> Duration {
        Duration::from_nanos(self.0.load(Ordering::Relaxed))
    }

    /// Applies to operations that start from now on.
    pub fn set(&self, timeout: Duration) {
        self.0.store(
            u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }
}

/// bb8-redis's connection manager with the reply timeout set and broken connections dropped.
#[derive(Clone, Debug)]
pub struct RedisManager {
    inner: RedisConnectionManager,
    timeout: Timeout,
}

impl ManageConnection for RedisManager {
    type Connection = RedisConn;
    type Error = RedisError;

    async fn connect(&self) -> Result<RedisConn, RedisError> {
        let mut conn = self.inner.connect().await?;
        conn.set_response_timeout(self.timeout.get());
        Ok(RedisConn {
            conn,
            broken: false,
        })
    }

    async fn is_valid(&self, conn: &mut RedisConn) -> Result<(), RedisError> {
        self.inner.is_valid(&mut conn.conn).await
    }

    fn has_broken(&self, conn: &mut RedisConn) -> bool {
        conn.broken
    }
}

/// The cache's Redis pool.
pub type RedisPool = bb8::Pool<RedisManager>;

/// Why an L2 operation did not happen; never shown to callers.
#[derive(Debug)]
pub(crate) enum L2Error {
    /// The circuit is open.
    Open,
    /// No connection within the timeout.
    Pool(String),
    /// Redis answered with an error or the connection failed.
    Redis(RedisError),
    /// The operation took too long.
    Timeout,
}

impl fmt::Display for L2Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Open => f.write_str("circuit open"),
            Self::Pool(err) => write!(f, "no connection: {err}"),
            Self::Redis(err) => write!(f, "{err}"),
            Self::Timeout => f.write_str("timed out"),
        }
    }
}

impl L2Error {
    /// Whether Redis itself answered (an error reply), which says nothing against its health.
    fn redis_answered(&self) -> bool {
        matches!(self, Self::Redis(err) if matches!(err.kind(), ErrorKind::Server(_)))
    }
}

/// One command or one pipeline.
#[derive(Clone, Copy)]
pub(crate) enum Req<'a> {
    Cmd(&'a Cmd),
    Pipe(&'a Pipeline),
}

/// A value as stored in Redis: a version byte, the TTL it was written with (for refresh-ahead),
/// then the value's bytes.
pub(crate) mod stored {
    use super::*;

    const VERSION: u8 = 1;
    const HEADER: usize = 9;

    pub fn encode(value: &[u8], ttl: Duration) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + value.len());
        out.push(VERSION);
        out.extend_from_slice(
            &u64::try_from(ttl.as_millis())
                .unwrap_or(u64::MAX)
                .to_le_bytes(),
        );
        out.extend_from_slice(value);
        out
    }

    /// The value and its full TTL; `None` for bytes we did not write.
    pub fn decode(raw: Bytes) -> Option<(Bytes, Duration)> {
        if raw.len() < HEADER || raw[0] != VERSION {
            return None;
        }
        let ttl = u64::from_le_bytes(raw[1..HEADER].try_into().ok()?);
        Some((raw.slice(HEADER..), Duration::from_millis(ttl)))
    }
}

/// A value read from L2.
#[derive(Debug)]
pub(crate) struct L2Value {
    pub value: Bytes,
    pub ttl: Duration,
    pub remaining: Duration,
}

/// The Redis tier.
pub(crate) struct L2 {
    client: Client,
    pool: RedisPool,
    breaker: Mutex<CircuitBreaker>,
    /// Whether the last call reached Redis (the circuit opens only after several failures).
    last_ok: AtomicBool,
    timeout: Timeout,
    /// Time of each GET / SET round trip (`tickmesh_cache_l2_duration_seconds{operation}`).
    pub(crate) durations: prometheus_client::metrics::family::Family<
        OperationLabels,
        prometheus_client::metrics::histogram::Histogram,
    >,
}

/// Labels of an L2 round trip.
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub(crate) struct OperationLabels {
    operation: &'static str,
}

/// L2 latency buckets in seconds, from 50 µs (a loopback Redis) to 2.5 s.
const L2_BUCKETS: [f64; 14] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5,
];

impl L2 {
    /// Records a round trip of `operation` that started at `started`.
    fn observe(&self, operation: &'static str, started: Instant) {
        self.durations
            .get_or_create(&OperationLabels { operation })
            .observe(started.elapsed().as_secs_f64());
    }

    /// Builds the pool without waiting for Redis: a Redis that is down at start is the same
    /// degraded state as one that goes away later.
    pub fn new(
        url: &str,
        breaker: &CircuitBreakerConfig,
        timeout: Duration,
    ) -> Result<Self, CacheError> {
        let bad_url = |err: RedisError| CacheError::config("redis url", err.to_string());
        let client = Client::open(url).map_err(bad_url)?;
        let timeout = Timeout::new(timeout);
        let manager = RedisManager {
            inner: RedisConnectionManager::new(client.get_connection_info().clone())
                .map_err(bad_url)?,
            timeout: timeout.clone(),
        };
        let pool = bb8::Pool::builder()
            .max_size(POOL_SIZE)
            // The pool's own wait is only a backstop: each checkout waits `timeout`, which can
            // change while the pool lives.
            .connection_timeout(MAX_REDIS_TIMEOUT)
            .test_on_check_out(false)
            .build_unchecked(manager);
        Ok(Self {
            client,
            pool,
            breaker: Mutex::new(CircuitBreaker::new("redis", breaker)),
            last_ok: AtomicBool::new(false),
            timeout,
            durations: prometheus_client::metrics::family::Family::new_with_constructor(|| {
                prometheus_client::metrics::histogram::Histogram::new(L2_BUCKETS.iter().copied())
            }),
        })
    }

    /// The timeout of each Redis wait (connection, reply).
    pub fn timeout(&self) -> &Timeout {
        &self.timeout
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn pool(&self) -> &RedisPool {
        &self.pool
    }

    fn breaker(&self) -> std::sync::MutexGuard<'_, CircuitBreaker> {
        self.breaker.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The circuit's state now.
    pub fn circuit(&self) -> BreakerState {
        self.breaker().state()
    }

    /// Whether the circuit is closed and the last call reached Redis.
    pub fn available(&self) -> bool {
        self.last_ok.load(Ordering::Relaxed) && self.breaker().state() == BreakerState::Closed
    }

    /// Runs one request through the breaker with the timeouts.
    pub async fn query<T: FromRedisValue>(&self, req: Req<'_>) -> Result<T, L2Error> {
        self.breaker()
            .admit(Instant::now())
            .map_err(|_| L2Error::Open)?;
        let mut permit = Permit {
            l2: self,
            done: false,
        };
        let timeout = self.timeout.get();
        let result =
            tokio::time::timeout(timeout * 2 + OP_SLACK, self.query_unguarded(req, timeout))
                .await
                .unwrap_or(Err(L2Error::Timeout));
        permit.done = true;
        let reached = match &result {
            Ok(_) => true,
            Err(err) => err.redis_answered(),
        };
        self.last_ok.store(reached, Ordering::Relaxed);
        if reached {
            self.breaker().success();
        } else {
            if let Err(err) = &result {
                debug!(error = %err, "redis call failed");
            }
            self.breaker().failure(Instant::now());
        }
        result
    }

    async fn query_unguarded<T: FromRedisValue>(
        &self,
        req: Req<'_>,
        timeout: Duration,
    ) -> Result<T, L2Error> {
        let mut conn = tokio::time::timeout(timeout, self.pool.get())
            .await
            .map_err(|_| L2Error::Pool("timed out waiting for a connection".to_owned()))?
            .map_err(|err| L2Error::Pool(err.to_string()))?;
        // Connections outlive a configuration change; the reply wait follows the current one.
        conn.conn.set_response_timeout(timeout);
        let result = match req {
            Req::Cmd(cmd) => cmd.query_async(&mut conn.conn).await,
            Req::Pipe(pipe) => pipe.query_async(&mut conn.conn).await,
        };
        result.map_err(|err| {
            conn.note_error(&err);
            L2Error::Redis(err)
        })
    }

    /// `GET` and `PTTL` in one round trip.
    pub async fn get(&self, key: &str) -> Result<Option<L2Value>, L2Error> {
        let mut pipe = redis::pipe();
        pipe.cmd("GET").arg(key).cmd("PTTL").arg(key);
        let started = Instant::now();
        let answer = self.query(Req::Pipe(&pipe)).await;
        self.observe("get", started);
        let (raw, pttl): (Option<Bytes>, i64) = answer?;
        // PTTL is -2 when the key expired between the two commands, -1 without a TTL.
        let Some(raw) = raw else { return Ok(None) };
        if pttl == -2 {
            return Ok(None);
        }
        let Some((value, ttl)) = stored::decode(raw) else {
            return Ok(None);
        };
        let remaining = Duration::from_millis(u64::try_from(pttl).unwrap_or(0));
        Ok(Some(L2Value {
            value,
            ttl,
            remaining: if pttl < 0 { ttl } else { remaining },
        }))
    }

    /// `SET key value PX ttl`, then optionally `PUBLISH channel message`, in one round trip.
    pub async fn set(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
        publish: Option<(&str, &str)>,
    ) -> Result<(), L2Error> {
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(key)
            .arg(stored::encode(value, ttl))
            .arg("PX")
            .arg(millis(ttl))
            .ignore();
        if let Some((channel, message)) = publish {
            pipe.cmd("PUBLISH").arg(channel).arg(message).ignore();
        }
        let started = Instant::now();
        let answer = self.query(Req::Pipe(&pipe)).await;
        self.observe("set", started);
        answer
    }

    /// `DEL key`, then optionally `PUBLISH`; whether the key existed.
    pub async fn delete(&self, key: &str, publish: Option<(&str, &str)>) -> Result<bool, L2Error> {
        let mut pipe = redis::pipe();
        pipe.cmd("DEL").arg(key);
        if let Some((channel, message)) = publish {
            pipe.cmd("PUBLISH").arg(channel).arg(message).ignore();
        }
        let (deleted,): (i64,) = self.query(Req::Pipe(&pipe)).await?;
        Ok(deleted > 0)
    }

    /// `PUBLISH channel message`.
    pub async fn publish(&self, channel: &str, message: &str) -> Result<(), L2Error> {
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(channel).arg(message);
        let _: i64 = self.query(Req::Cmd(&cmd)).await?;
        Ok(())
    }

    /// Deletes every key matching the glob with `SCAN ... MATCH` and `UNLINK` in batches
    /// (never `KEYS`, which blocks the server); how many were deleted.
    pub async fn delete_matching(&self, pattern: &str) -> Result<u64, L2Error> {
        let mut cursor: u64 = 0;
        let mut deleted: u64 = 0;
        loop {
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(SCAN_COUNT);
            let (next, keys): (u64, Vec<String>) = self.query(Req::Cmd(&scan)).await?;
            if !keys.is_empty() {
                let mut unlink = redis::cmd("UNLINK");
                unlink.arg(&keys);
                let n: u64 = self.query(Req::Cmd(&unlink)).await?;
                deleted += n;
            }
            if next == 0 {
                return Ok(deleted);
            }
            cursor = next;
        }
    }

    /// `SET lock token NX PX ttl`: whether we got the lock.
    pub async fn try_lock(&self, lock: &str, token: &str, ttl: Duration) -> Result<bool, L2Error> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(lock)
            .arg(token)
            .arg("NX")
            .arg("PX")
            .arg(millis(ttl));
        let reply: Value = self.query(Req::Cmd(&cmd)).await?;
        Ok(reply != Value::Nil)
    }

    /// Deletes the lock if it still holds our token (compare-and-delete in a Lua script).
    pub async fn unlock(&self, lock: &str, token: &str) -> Result<bool, L2Error> {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(UNLOCK_SCRIPT).arg(1).arg(lock).arg(token);
        let deleted: i64 = self.query(Req::Cmd(&cmd)).await?;
        Ok(deleted == 1)
    }

    /// `PING`, through the breaker: the half-open probe when nothing else calls Redis.
    pub async fn ping(&self) -> Result<(), L2Error> {
        let cmd = redis::cmd("PING");
        let _: Value = self.query(Req::Cmd(&cmd)).await?;
        Ok(())
    }
}

/// Records a cancelled call as a failure if it was the half-open probe, so the breaker does
/// not wait forever for a probe that will never report.
struct Permit<'a> {
    l2: &'a L2,
    done: bool,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.done {
            let mut breaker = self.l2.breaker();
            if matches!(breaker.state(), BreakerState::HalfOpen { probing: true }) {
                breaker.failure(Instant::now());
            }
        }
    }
}

/// Redis wants at least one millisecond.
fn millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}
