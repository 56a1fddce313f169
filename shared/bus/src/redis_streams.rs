//! The Redis bus: one stream, consumer groups, `XADD MAXLEN ~` to bound it.
//!
//! Publishers share a bb8 pool. Each subscription owns one connection of its own, because a
//! blocking `XREADGROUP` would otherwise hold a pooled connection the publishers need.

use std::fmt;
use std::time::Duration;

use bb8_redis::RedisConnectionManager;
use bb8_redis::bb8::Pool;
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};
use redis::{AsyncConnectionConfig, Client, Cmd, FromRedisValue, RedisError};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::Delivery;
use crate::error::{BusError, parse_id};

/// How long to wait for a connection, pooled or dedicated, before calling Redis unavailable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a non-blocking command (and a blocking one, beyond its own wait) may take to answer.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// Publisher connections in the pool.
const POOL_SIZE: u32 = 8;
/// The stream field holding an event's bytes.
const BODY_FIELD: &str = "body";
/// Removes the group's departed consumers: KEYS stream, ARGV group, own name, idle limit (ms).
const REMOVE_DEPARTED: &str = include_str!("redis_streams/remove_departed.lua");
/// Bounds of the time between two sweeps for departed consumers (half the idle limit).
const SWEEP_EVERY_MIN: Duration = Duration::from_millis(100);
const SWEEP_EVERY_MAX: Duration = Duration::from_secs(60);

/// The Redis Streams bus; cheap to clone, clones share the pool.
#[derive(Clone)]
pub struct RedisBus {
    client: Client,
    pool: Pool<RedisConnectionManager>,
    key: String,
    max_len: usize,
    stats: std::sync::Arc<crate::BusStats>,
}

impl RedisBus {
    pub(crate) fn stats(&self) -> std::sync::Arc<crate::BusStats> {
        self.stats.clone()
    }

    /// `XINFO GROUPS`: each group's lag (entries not yet delivered to it); a group whose lag
    /// Redis cannot tell (nil) is left out.
    pub(crate) async fn group_lags(&self) -> Result<Vec<(String, u64)>, BusError> {
        let mut conn = self.pool.get().await?;
        let groups: Vec<std::collections::HashMap<String, redis::Value>> = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(&self.key)
            .query_async(&mut *conn)
            .await?;
        let mut lags: Vec<(String, u64)> = groups
            .into_iter()
            .filter_map(|mut g| {
                let name = redis::from_redis_value::<String>(g.remove("name")?).ok()?;
                let lag = redis::from_redis_value::<Option<u64>>(g.remove("lag")?).ok()??;
                Some((name, lag))
            })
            .collect();
        lags.sort();
        Ok(lags)
    }

    /// Builds the pool and checks that Redis answers.
    pub(crate) async fn connect(url: &str, key: &str, max_len: usize) -> Result<Self, BusError> {
        let client = Client::open(url).map_err(|err| BusError::InvalidUrl(err.to_string()))?;
        let manager = RedisConnectionManager::new(client.get_connection_info().clone())
            .map_err(|err| BusError::InvalidUrl(err.to_string()))?;
        // bb8-redis never reports a connection broken, so a connection is PINGed on checkout
        // (bb8's default); that is how the pool gets rid of connections to a restarted server.
        let pool = Pool::builder()
            .max_size(POOL_SIZE)
            .connection_timeout(CONNECT_TIMEOUT)
            .test_on_check_out(true)
            .build(manager)
            .await?;
        {
            let mut conn = pool.get().await?;
            let () = redis::cmd("PING").query_async(&mut *conn).await?;
        }
        Ok(Self {
            client,
            pool,
            key: key.to_owned(),
            max_len: max_len.max(1),
            stats: Default::default(),
        })
    }

    /// `XADD key MAXLEN ~ max_len * body <bytes>` for each event, in one pipeline.
    pub(crate) async fn publish(&self, events: &[Vec<u8>]) -> Result<(), BusError> {
        if events.is_empty() {
            // redis 1.x refuses an empty pipeline.
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for body in events {
            pipe.cmd("XADD")
                .arg(&self.key)
                .arg("MAXLEN")
                .arg("~")
                .arg(self.max_len)
                .arg("*")
                .arg(BODY_FIELD)
                .arg(body.as_slice())
                .ignore();
        }
        let mut conn = self.pool.get().await?;
        // The default (500 ms) is short for a large batch on a busy server.
        conn.set_response_timeout(COMMAND_TIMEOUT);
        let () = pipe.query_async(&mut *conn).await?;
        Ok(())
    }

    /// Creates the group at the end of the stream if it is missing, on a connection of its own.
    pub(crate) async fn subscribe(
        &self,
        group: &str,
        consumer: &str,
    ) -> Result<RedisSubscription, BusError> {
        let mut sub = RedisSubscription {
            client: self.client.clone(),
            conn: None,
            key: self.key.clone(),
            group: group.to_owned(),
            consumer: consumer.to_owned(),
            claim_cursor: START.to_owned(),
            // The first read sweeps: a restarted process removes its predecessors at once.
            next_sweep: Instant::now(),
        };
        sub.create_group("$").await?;
        Ok(sub)
    }
}

impl fmt::Debug for RedisBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBus")
            .field("key", &self.key)
            .field("max_len", &self.max_len)
            .field("pool", &self.pool.state())
            .finish_non_exhaustive()
    }
}

/// The smallest stream id: `XAUTOCLAIM` scans the pending entries from here.
const START: &str = "0-0";

/// One consumer of one group, on its own connection (made again after a connection error).
pub(crate) struct RedisSubscription {
    client: Client,
    conn: Option<MultiplexedConnection>,
    key: String,
    group: String,
    consumer: String,
    /// Where the next `XAUTOCLAIM` continues its scan of the pending entries.
    claim_cursor: String,
    /// When [`RedisSubscription::sweep_departed`] looks at the group's consumers next.
    next_sweep: Instant,
}

impl RedisSubscription {
    pub(crate) fn group(&self) -> &str {
        &self.group
    }

    pub(crate) fn consumer(&self) -> &str {
        &self.consumer
    }

    /// `XAUTOCLAIM` entries idle for `claim_idle` (then `true`: claimed); if none,
    /// `XREADGROUP ... BLOCK wait ... >`.
    pub(crate) async fn next_batch(
        &mut self,
        max: usize,
        wait: Duration,
        claim_idle: Duration,
    ) -> Result<(Vec<Delivery>, bool), BusError> {
        let max = max.max(1);
        let claimed: StreamAutoClaimReply = {
            let mut cmd = redis::cmd("XAUTOCLAIM");
            cmd.arg(&self.key)
                .arg(&self.group)
                .arg(&self.consumer)
                .arg(millis(claim_idle))
                .arg(&self.claim_cursor)
                .arg("COUNT")
                .arg(max);
            self.query_in_group(&cmd, COMMAND_TIMEOUT).await?
        };
        // "0-0" once the scan went through all pending entries: the next one starts over.
        self.claim_cursor = claimed.next_stream_id;
        let batch = self.deliveries(claimed.claimed).await?;
        if !batch.is_empty() {
            return Ok((batch, true));
        }

        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&self.group)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(max);
        // BLOCK 0 would block forever: no wait means no BLOCK at all.
        if !wait.is_zero() {
            cmd.arg("BLOCK").arg(millis(wait).max(1));
        }
        cmd.arg("STREAMS").arg(&self.key).arg(">");
        let read: Option<StreamReadReply> = self
            .query_in_group(&cmd, wait.saturating_add(COMMAND_TIMEOUT))
            .await?;
        let ids = read
            .into_iter()
            .flat_map(|reply| reply.keys)
            .flat_map(|key| key.ids)
            .collect();
        Ok((self.deliveries(ids).await?, false))
    }

    /// Removes the other consumers of the group that have nothing pending and were idle for
    /// longer than `limit` (`XINFO CONSUMERS`, then `XGROUP DELCONSUMER`, atomically in one
    /// script), if half the limit (within 100 ms and 1 min) passed since the last sweep.
    ///
    /// Such a consumer belonged to a process that is gone: every live one asks at least once
    /// per blocking read, and one that holds entries is never removed (they stay claimable).
    /// Should a live consumer be removed after all (a read wait longer than the limit), its next
    /// read makes it again. A failure is logged; the next sweep tries again.
    pub(crate) async fn sweep_departed(&mut self, limit: Duration) {
        let now = Instant::now();
        if now < self.next_sweep {
            return;
        }
        self.next_sweep = now + (limit / 2).clamp(SWEEP_EVERY_MIN, SWEEP_EVERY_MAX);
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(REMOVE_DEPARTED)
            .arg(1)
            .arg(&self.key)
            .arg(&self.group)
            .arg(&self.consumer)
            .arg(millis(limit));
        match self.query::<Vec<String>>(&cmd, COMMAND_TIMEOUT).await {
            Ok(removed) => {
                for consumer in removed {
                    info!(
                        key = %self.key,
                        group = %self.group,
                        consumer,
                        idle_limit_ms = millis(limit),
                        "removed a departed consumer from the group"
                    );
                }
            }
            // No group or no stream (Redis lost them): the read that follows makes them again.
            Err(Failure::Redis(err))
                if err.code() == Some("NOGROUP") || err.to_string().contains("no such key") => {}
            Err(failure) => {
                warn!(
                    key = %self.key,
                    group = %self.group,
                    error = %BusError::from(failure),
                    "departed consumers not removed; trying again at the next sweep"
                );
            }
        }
    }

    /// `XACK key group ids...`; acking in a group Redis lost (it restarted) acks nothing.
    pub(crate) async fn ack(&mut self, ids: &[String]) -> Result<(), BusError> {
        for id in ids {
            parse_id(id)?;
        }
        if ids.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd("XACK");
        cmd.arg(&self.key).arg(&self.group).arg(ids);
        match self.query::<u64>(&cmd, COMMAND_TIMEOUT).await {
            Ok(_) => Ok(()),
            Err(Failure::Redis(err)) if err.code() == Some("NOGROUP") => Ok(()),
            Err(failure) => Err(failure.into()),
        }
    }

    /// `XGROUP DESTROY key group`: the group and its pending entries are gone.
    pub(crate) async fn destroy_group(&mut self) -> Result<(), BusError> {
        let mut cmd = redis::cmd("XGROUP");
        cmd.arg("DESTROY").arg(&self.key).arg(&self.group);
        self.query::<u64>(&cmd, COMMAND_TIMEOUT)
            .await
            .map(|_| ())
            .map_err(Into::into)
    }

    /// `XGROUP CREATE key group <start> MKSTREAM`, where the group exists already is fine.
    async fn create_group(&mut self, start: &str) -> Result<(), BusError> {
        let mut cmd = redis::cmd("XGROUP");
        cmd.arg("CREATE")
            .arg(&self.key)
            .arg(&self.group)
            .arg(start)
            .arg("MKSTREAM");
        match self.query::<()>(&cmd, COMMAND_TIMEOUT).await {
            Ok(()) => {
                debug!(key = %self.key, group = %self.group, start, "consumer group created");
                Ok(())
            }
            Err(Failure::Redis(err)) if err.code() == Some("BUSYGROUP") => Ok(()),
            Err(failure) => Err(failure.into()),
        }
    }

    /// Runs a group command; if the group is gone (Redis restarted without its data), creates
    /// it again and retries once. The new group starts at the beginning of the stream: all that
    /// is in it now came after the group was lost, and must not be skipped.
    async fn query_in_group<T: FromRedisValue>(
        &mut self,
        cmd: &Cmd,
        timeout: Duration,
    ) -> Result<T, BusError> {
        match self.query(cmd, timeout).await {
            Err(Failure::Redis(err)) if err.code() == Some("NOGROUP") => {
                warn!(key = %self.key, group = %self.group, "consumer group missing, creating it again");
                self.claim_cursor = START.to_owned();
                self.create_group("0").await?;
                Ok(self.query(cmd, timeout).await?)
            }
            result => Ok(result?),
        }
    }

    /// Runs one command on the subscription's connection, connecting first if needed. The
    /// connection is dropped after a connection error or a timeout, so the next call reconnects.
    async fn query<T: FromRedisValue>(
        &mut self,
        cmd: &Cmd,
        timeout: Duration,
    ) -> Result<T, Failure> {
        let mut conn = match self.conn.take() {
            Some(conn) => conn,
            None => {
                // No response timeout of the connection's own: blocking reads wait on purpose,
                // and every call here has its own deadline.
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(None);
                self.client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .map_err(Failure::Redis)?
            }
        };
        match tokio::time::timeout(timeout, cmd.query_async::<T>(&mut conn)).await {
            Ok(Ok(value)) => {
                self.conn = Some(conn);
                Ok(value)
            }
            Ok(Err(err)) => {
                if !(err.is_io_error() || err.is_unrecoverable_error()) {
                    self.conn = Some(conn);
                }
                Err(Failure::Redis(err))
            }
            Err(_) => Err(Failure::TimedOut(timeout)),
        }
    }

    /// Turns stream entries into deliveries; entries without our body field are not events
    /// (someone else wrote to the stream), so they are acked and skipped instead of blocking.
    async fn deliveries(&mut self, entries: Vec<StreamId>) -> Result<Vec<Delivery>, BusError> {
        let mut batch = Vec::with_capacity(entries.len());
        let mut foreign = Vec::new();
        for mut entry in entries {
            match entry
                .map
                .remove(BODY_FIELD)
                .and_then(|value| redis::from_redis_value::<Vec<u8>>(value).ok())
            {
                Some(body) => batch.push(Delivery { id: entry.id, body }),
                None => foreign.push(entry.id),
            }
        }
        if !foreign.is_empty() {
            warn!(key = %self.key, entries = foreign.len(), "skipping stream entries without a body");
            self.ack(&foreign).await?;
        }
        Ok(batch)
    }
}

/// Why a command on a subscription's connection failed, before it becomes a [`BusError`].
enum Failure {
    Redis(RedisError),
    TimedOut(Duration),
}

impl From<Failure> for BusError {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::Redis(err) => err.into(),
            Failure::TimedOut(after) => {
                BusError::Unavailable(format!("redis did not answer within {after:?}"))
            }
        }
    }
}

/// Whole milliseconds, saturating at the largest number Redis takes (a signed 64-bit one).
fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}
