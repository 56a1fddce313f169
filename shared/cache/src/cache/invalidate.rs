//! Invalidation: by key, glob pattern or namespace on this process's tiers, and through Redis
//! pub/sub on every other process's L1.

use std::sync::Weak;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use redis::{Client, RedisError, Value};
use tokio::sync::{oneshot, watch};
use tracing::{debug, info, warn};

use crate::error::CacheError;
use crate::key;
use crate::l1::L1;
use crate::l2::{L2, L2Error};
use crate::pubsub::{self, Target};

use super::namespace::Namespace;
use super::{Cache, Inner};

/// How often the subscriber pings its connection to notice a silent drop.
const SUBSCRIBER_PING: Duration = Duration::from_secs(1);
/// First and longest pause between subscriber reconnection attempts.
const RECONNECT_MIN: Duration = Duration::from_millis(50);
const RECONNECT_MAX: Duration = Duration::from_secs(1);

/// Entries dropped by an invalidation on this process's tiers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Invalidated {
    /// From L1.
    pub l1: u64,
    /// From L2.
    pub l2: u64,
}

impl Invalidated {
    /// Both tiers together.
    pub fn total(&self) -> u64 {
        self.l1 + self.l2
    }
}

impl Cache {
    /// Deletes a key from every tier (and other processes' L1); whether it existed here.
    pub async fn delete(&self, namespace: &str, key: &str) -> Result<bool, CacheError> {
        let dropped = self.invalidate_key(namespace, key).await?;
        Ok(dropped.total() > 0)
    }

    /// Drops one key from every tier and every process's L1.
    pub async fn invalidate_key(
        &self,
        namespace: &str,
        key: &str,
    ) -> Result<Invalidated, CacheError> {
        key::validate_key(key)?;
        let ns = self.inner.namespace(namespace)?;
        Ok(self.inner.invalidate(ns, Target::Key(key.to_owned())).await)
    }

    /// Drops the keys matching a glob (`*`, `?`, `[...]`, as Redis) from every tier and every
    /// process's L1; Redis is walked with `SCAN`, never `KEYS`.
    pub async fn invalidate_pattern(
        &self,
        namespace: &str,
        pattern: &str,
    ) -> Result<Invalidated, CacheError> {
        key::validate_pattern(pattern)?;
        let ns = self.inner.namespace(namespace)?;
        Ok(self
            .inner
            .invalidate(ns, Target::Pattern(pattern.to_owned()))
            .await)
    }

    /// Drops a whole namespace from every tier and every process's L1.
    pub async fn invalidate_namespace(&self, namespace: &str) -> Result<Invalidated, CacheError> {
        let ns = self.inner.namespace(namespace)?;
        Ok(self.inner.invalidate(ns, Target::Namespace).await)
    }
}

impl Inner {
    pub(super) async fn invalidate(&self, ns: &Namespace, target: Target) -> Invalidated {
        ns.epoch.fetch_add(1, Ordering::AcqRel);
        let mut dropped = Invalidated::default();
        if let Some(l1) = &self.l1 {
            dropped.l1 = self.drop_l1(l1, ns, &target).await;
        }
        if let Some(l2) = &self.l2 {
            match self.invalidate_l2(l2, ns, &target).await {
                Ok(n) => dropped.l2 = n,
                Err(err) => {
                    debug!(error = %err, "L2 invalidation skipped; sent again when redis is back");
                    self.missed.record(&ns.name, target);
                }
            }
        }
        dropped
    }

    /// Deletes the target from L2 and, when processes have an L1, tells them to drop it.
    async fn invalidate_l2(
        &self,
        l2: &L2,
        ns: &Namespace,
        target: &Target,
    ) -> Result<u64, L2Error> {
        let message = pubsub::encode(&self.origin, &ns.name, target);
        let publish = self
            .l1
            .is_some()
            .then_some((pubsub::CHANNEL, message.as_str()));
        match target {
            Target::Key(key) => l2
                .delete(&key::data_key(&ns.name, key), publish)
                .await
                .map(u64::from),
            Target::Pattern(pattern) => {
                self.delete_and_publish(l2, &key::data_pattern(&ns.name, pattern), publish)
                    .await
            }
            Target::Namespace => {
                self.delete_and_publish(l2, &key::data_pattern(&ns.name, "*"), publish)
                    .await
            }
        }
    }

    /// Sends the invalidations Redis missed while it was away (see [`super::missed`]); those
    /// that fail again wait for the next try.
    pub(super) async fn replay_missed(&self, l2: &L2) {
        let (mut sent, mut failed) = (0u64, 0u64);
        for (name, targets) in self.missed.take() {
            // Namespaces are never removed; one that is not there was never made here.
            let Some(ns) = self.find_namespace(&name) else {
                continue;
            };
            for target in targets {
                match self.invalidate_l2(l2, ns, &target).await {
                    Ok(_) => sent += 1,
                    Err(err) => {
                        debug!(error = %err, namespace = name, "missed invalidation not sent yet");
                        self.missed.record(&name, target);
                        failed += 1;
                    }
                }
            }
        }
        if failed == 0 {
            info!(
                invalidations = sent,
                "sent the invalidations redis missed while away"
            );
        } else {
            warn!(
                invalidations = sent,
                failed, "some invalidations redis missed are not sent yet; retrying"
            );
        }
    }

    async fn delete_and_publish(
        &self,
        l2: &L2,
        pattern: &str,
        publish: Option<(&str, &str)>,
    ) -> Result<u64, L2Error> {
        let deleted = l2.delete_matching(pattern).await?;
        if let Some((channel, message)) = publish {
            l2.publish(channel, message).await?;
        }
        Ok(deleted)
    }

    async fn drop_l1(&self, l1: &L1, ns: &Namespace, target: &Target) -> u64 {
        let id = ns.id;
        match target {
            Target::Key(key) => u64::from(l1.remove(ns.segment, ns.key_ref(key)).await),
            Target::Pattern(pattern) => {
                l1.remove_where(ns.segment, |k| {
                    k.ns() == id && key::glob_match(pattern, k.key())
                })
                .await
            }
            Target::Namespace => l1.remove_where(ns.segment, |k| k.ns() == id).await,
        }
    }

    /// An invalidation from another process: drop the L1 copies.
    async fn on_invalidation(&self, payload: &[u8]) {
        let Some(message) = pubsub::decode(payload) else {
            debug!("ignoring a malformed invalidation message");
            return;
        };
        if message.origin == self.origin {
            return;
        }
        let (Some(l1), Some(ns)) = (&self.l1, self.find_namespace(&message.namespace)) else {
            return;
        };
        ns.epoch.fetch_add(1, Ordering::AcqRel);
        self.drop_l1(l1, ns, &message.target).await;
    }

    /// Drops every L1 entry: invalidations may have been missed while unsubscribed.
    fn forget_l1(&self) {
        if let Some(l1) = &self.l1 {
            for ns in self.namespaces.all() {
                ns.epoch.fetch_add(1, Ordering::AcqRel);
            }
            l1.clear();
        }
    }
}

/// Listens on the invalidation channel on a connection of its own, reconnecting with backoff;
/// after a reconnection L1 is dropped, since messages may have been missed meanwhile.
pub(super) async fn subscriber_loop(
    inner: Weak<Inner>,
    client: Client,
    mut shutdown: watch::Receiver<bool>,
    ready: oneshot::Sender<()>,
) {
    let mut ready = Some(ready);
    let mut first_attempt = true;
    let mut pause = RECONNECT_MIN;
    loop {
        let connect = tokio::time::timeout(SUBSCRIBER_PING, async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(pubsub::CHANNEL).await?;
            Ok::<_, RedisError>(pubsub.split())
        });
        let connected = tokio::select! {
            result = connect => result,
            _ = shutdown.changed() => return,
        };
        match connected {
            Ok(Ok((mut sink, mut messages))) => {
                pause = RECONNECT_MIN;
                if !first_attempt {
                    let Some(inner) = inner.upgrade() else { return };
                    inner.forget_l1();
                }
                if let Some(ready) = ready.take() {
                    let _ = ready.send(());
                }
                info!(
                    channel = pubsub::CHANNEL,
                    "subscribed to cache invalidations"
                );
                let mut ping = tokio::time::interval(SUBSCRIBER_PING);
                ping.tick().await;
                loop {
                    tokio::select! {
                        message = messages.next() => {
                            let Some(message) = message else { break };
                            let Some(inner) = inner.upgrade() else { return };
                            inner.on_invalidation(message.get_payload_bytes()).await;
                        }
                        _ = ping.tick() => {
                            let alive = tokio::time::timeout(SUBSCRIBER_PING, sink.ping::<Value>()).await;
                            if !matches!(alive, Ok(Ok(_))) {
                                break;
                            }
                        }
                        _ = shutdown.changed() => return,
                    }
                }
                warn!("lost the cache invalidation subscription; reconnecting");
            }
            Ok(Err(err)) => debug!(error = %err, "subscribing to cache invalidations failed"),
            Err(_) => debug!("subscribing to cache invalidations timed out"),
        }
        first_attempt = false;
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = shutdown.changed() => return,
        }
        pause = (pause * 2).min(RECONNECT_MAX);
    }
}
