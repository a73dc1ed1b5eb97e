//! The life of a link's push channel (a Graph subscription or a Google watch channel), run as the
//! leased `push.channel` job of that link (key = link id, payload `{tenant, link}`).
//!
//! One job body, "make it right", does everything: it opens a channel when the link has none, renews
//! the one it has when it is within `push.renew_before` of expiring (or when a lifecycle notification
//! marked it due), replaces one the provider forgot, and stops and forgets every channel of a link that
//! should have none (link or connection paused or gone, no public URL). It then re-arms itself for the
//! next renewal. Notification handlers only change the stored state and bring the job forward.

use std::time::Duration;

use calbridge_providers::{
    CalendarId, CalendarProvider, ProviderError, WatchChannel, WatchRequest,
};
use calbridge_store::{
    Connection, ConnectionStatus, Link, LinkId, LinkStatus, NewJob, NewPushChannel, Provider,
    PushChannel, Store, StoreError, TenantId,
};
use jiff::{SignedDuration, Timestamp};
use rand::RngCore as _;
use serde::{Deserialize, Serialize};

use super::push::{CHANNEL_JOB, secret_digest};
use crate::syncing::{self, SyncContext};

/// What channel work needs from the configuration.
#[derive(Debug, Clone)]
pub struct ChannelConfig {
    /// `server.public_url`, parsed; `None` turns push off (links are polled).
    pub public_url: Option<url::Url>,
    pub renew_before: SignedDuration,
    pub microsoft_lifetime: SignedDuration,
    pub google_lifetime: SignedDuration,
    pub retry: SignedDuration,
}

impl ChannelConfig {
    pub fn from_config(config: &crate::Config) -> Self {
        let public_url =
            config
                .server
                .public_url
                .as_deref()
                .and_then(|u| match url::Url::parse(u) {
                    Ok(url) if matches!(url.scheme(), "http" | "https") => Some(url),
                    _ => {
                        tracing::warn!(
                            url = u,
                            "server.public_url is not an http(s) URL; push is off"
                        );
                        None
                    }
                });
        Self {
            public_url,
            renew_before: config.push.renew_before.0,
            microsoft_lifetime: config.push.microsoft_lifetime.0,
            google_lifetime: config.push.google_lifetime.0,
            retry: config.push.retry.0,
        }
    }

    /// Where `provider` posts its notifications.
    pub fn notification_url(&self, provider: Provider) -> Option<url::Url> {
        let base = self.public_url.as_ref()?;
        let mut url = base.clone();
        let path = format!(
            "{}/v1/calendar/notifications/{}",
            base.path().trim_end_matches('/'),
            provider.as_str()
        );
        url.set_path(&path);
        url.set_query(None);
        Some(url)
    }
}

/// Does this provider take push channels at all?
pub fn pushes(provider: Provider) -> bool {
    matches!(provider, Provider::Microsoft | Provider::Google)
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ChannelPayload {
    pub tenant: TenantId,
    pub link: LinkId,
}

/// Brings the link's channel job forward (creating it when missing).
pub async fn enqueue(
    store: &dyn Store,
    tenant: TenantId,
    link: LinkId,
    at: Timestamp,
) -> Result<(), StoreError> {
    let payload = serde_json::to_string(&ChannelPayload { tenant, link })
        .map_err(|e| StoreError::Invalid(e.to_string()))?;
    store
        .enqueue_job(NewJob {
            tenant_id: Some(tenant),
            kind: CHANNEL_JOB.to_owned(),
            key: link.to_string(),
            payload_json: payload,
            run_at: at,
        })
        .await
        .map(|_| ())
}

fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

fn watch_of(channel: &PushChannel) -> WatchChannel {
    WatchChannel {
        id: channel.id.clone(),
        resource_id: channel.resource_id.clone(),
        expires_at: channel.expires_at,
    }
}

/// Outcome of one run of the job: when to run again (`None`: the job ends).
pub type Next = Option<Timestamp>;

/// Runs the channel job of one link.
pub async fn run(
    ctx: &SyncContext,
    config: &ChannelConfig,
    payload: &ChannelPayload,
    now: Timestamp,
) -> Result<Next, String> {
    let store = ctx.store.as_ref();
    let link = match store.get_link(payload.tenant, payload.link).await {
        Ok(link) => link,
        // A deleted link's channels were stopped by the deletion (and their rows cascaded).
        Err(StoreError::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let connection = match store
        .get_connection(payload.tenant, link.connection_id)
        .await
    {
        Ok(c) => c,
        Err(StoreError::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let channels = store
        .list_push_channels(payload.tenant, link.id)
        .await
        .map_err(|e| e.to_string())?;
    let url = config.notification_url(connection.provider);
    let wanted = pushes(connection.provider)
        && connection.status == ConnectionStatus::Active
        && link.status == LinkStatus::Active
        && url.is_some();
    if !wanted && channels.is_empty() {
        return Ok(None);
    }
    let provider = syncing::open_provider(ctx, &connection).await;
    let provider = match provider {
        Ok(p) => p,
        Err(e) if !wanted => {
            // Cannot reach the provider to stop them: forget them; they expire on their own.
            tracing::warn!(link = %link.id, error = %e, "channels forgotten without stopping");
            forget_all(store, &link, &channels).await?;
            return Ok(None);
        }
        Err(e) => return Err(e.to_string()),
    };
    let Some(url) = url.filter(|_| wanted) else {
        stop_all(store, provider.as_ref(), &link, &channels).await?;
        return Ok(None);
    };
    let calendar = CalendarId::parse(&link.remote_calendar_id).map_err(|e| e.to_string())?;
    let lifetime = match connection.provider {
        Provider::Google => config.google_lifetime,
        _ => config.microsoft_lifetime,
    };
    // Keep the newest channel; stop any other (left by an interrupted renewal).
    let mut channels = channels;
    channels.sort_by_key(|c| c.expires_at);
    let current = channels.pop();
    if !channels.is_empty() {
        stop_all(store, provider.as_ref(), &link, &channels).await?;
    }
    let request = || WatchRequest {
        id: uuid::Uuid::new_v4().to_string(),
        secret: random_token(32),
        notification_url: url.clone(),
        lifecycle_url: (connection.provider == Provider::Microsoft).then(|| url.clone()),
        expires_at: now + lifetime,
    };
    let expires = match current {
        None => {
            open(
                store,
                provider.as_ref(),
                &connection,
                &link,
                &calendar,
                request(),
            )
            .await?
        }
        Some(channel) if due(&channel, config.renew_before, now) => {
            let fresh = request();
            match provider
                .renew_watch(&calendar, &watch_of(&channel), &fresh)
                .await
            {
                Ok(renewed) => {
                    // Graph keeps the id and the clientState; Google hands out a new channel with the
                    // new token.
                    let secret_hash = if renewed.id == channel.id {
                        channel.secret_hash.clone()
                    } else {
                        secret_digest(&fresh.secret)
                    };
                    store
                        .put_push_channel(
                            link.tenant_id,
                            NewPushChannel {
                                provider: connection.provider.as_str().to_owned(),
                                id: renewed.id.clone(),
                                link_id: link.id,
                                secret_hash,
                                resource_id: renewed.resource_id.clone(),
                                expires_at: renewed.expires_at,
                            },
                        )
                        .await
                        .map_err(|e| e.to_string())?;
                    if renewed.id != channel.id {
                        store
                            .delete_push_channel(link.tenant_id, &channel.provider, &channel.id)
                            .await
                            .map_err(|e| e.to_string())?;
                    }
                    tracing::info!(link = %link.id, channel = %renewed.id, expires = %renewed.expires_at, "push channel renewed");
                    renewed.expires_at
                }
                Err(ProviderError::NotFound { .. }) => {
                    // The provider forgot it (removed, expired): open a new one, and resync what may
                    // have been missed meanwhile.
                    store
                        .delete_push_channel(link.tenant_id, &channel.provider, &channel.id)
                        .await
                        .map_err(|e| e.to_string())?;
                    super::push::enqueue_link_sync(store, link.tenant_id, link.id, "channel_lost")
                        .await
                        .map_err(|e| e.to_string())?;
                    open(
                        store,
                        provider.as_ref(),
                        &connection,
                        &link,
                        &calendar,
                        request(),
                    )
                    .await?
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        Some(channel) => channel.expires_at,
    };
    Ok(Some(next_run(expires, config.renew_before, now)))
}

fn due(channel: &PushChannel, renew_before: SignedDuration, now: Timestamp) -> bool {
    channel.expires_at - renew_before <= now
}

/// When to look again: `renew_before` ahead of expiry, but never less than half the time left (a
/// lifetime shorter than the margin must not renew in a loop), and at least a second from now.
fn next_run(expires: Timestamp, renew_before: SignedDuration, now: Timestamp) -> Timestamp {
    let left = expires.duration_since(now);
    let margin = renew_before.min(left / 2);
    let at = expires - margin;
    at.max(now + SignedDuration::from_secs(1))
}

async fn open(
    store: &dyn Store,
    provider: &dyn CalendarProvider,
    connection: &Connection,
    link: &Link,
    calendar: &CalendarId,
    request: WatchRequest,
) -> Result<Timestamp, String> {
    let channel = provider
        .watch(calendar, &request)
        .await
        .map_err(|e| format!("opening a push channel: {e}"))?;
    store
        .put_push_channel(
            link.tenant_id,
            NewPushChannel {
                provider: connection.provider.as_str().to_owned(),
                id: channel.id.clone(),
                link_id: link.id,
                secret_hash: secret_digest(&request.secret),
                resource_id: channel.resource_id.clone(),
                expires_at: channel.expires_at,
            },
        )
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!(link = %link.id, channel = %channel.id, expires = %channel.expires_at, "push channel opened");
    Ok(channel.expires_at)
}

async fn stop_all(
    store: &dyn Store,
    provider: &dyn CalendarProvider,
    link: &Link,
    channels: &[PushChannel],
) -> Result<(), String> {
    for channel in channels {
        match provider.stop_watch(&watch_of(channel)).await {
            Ok(()) => {
                tracing::info!(link = %link.id, channel = %channel.id, "push channel stopped")
            }
            Err(e) => {
                tracing::warn!(link = %link.id, channel = %channel.id, error = %e, "push channel not stopped; it expires on its own")
            }
        }
        store
            .delete_push_channel(link.tenant_id, &channel.provider, &channel.id)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

async fn forget_all(
    store: &dyn Store,
    link: &Link,
    channels: &[PushChannel],
) -> Result<(), String> {
    for channel in channels {
        store
            .delete_push_channel(link.tenant_id, &channel.provider, &channel.id)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Stops every channel of a connection's links, best effort and bounded in time: called before the
/// connection is deleted (its links, channel rows and credentials go with it, so no job could do it
/// later). A channel that cannot be stopped expires on its own (Graph within three days).
pub async fn stop_connection(ctx: &SyncContext, connection: &Connection) {
    let store = ctx.store.as_ref();
    let Ok(links) = store.list_links(connection.tenant_id, connection.id).await else {
        return;
    };
    let mut all = Vec::new();
    for link in &links {
        if let Ok(channels) = store
            .list_push_channels(connection.tenant_id, link.id)
            .await
        {
            all.extend(channels.into_iter().map(|c| (link.clone(), c)));
        }
    }
    if all.is_empty() {
        return;
    }
    let provider = match syncing::open_provider(ctx, connection).await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(connection = %connection.id, error = %e, "push channels not stopped");
            return;
        }
    };
    for (link, channel) in all {
        let watch = watch_of(&channel);
        let stop = provider.stop_watch(&watch);
        match tokio::time::timeout(Duration::from_secs(5), stop).await {
            Ok(Ok(())) => {
                tracing::info!(link = %link.id, channel = %channel.id, "push channel stopped")
            }
            Ok(Err(e)) => {
                tracing::warn!(channel = %channel.id, error = %e, "push channel not stopped")
            }
            Err(_) => tracing::warn!(channel = %channel.id, "push channel stop timed out"),
        }
        let _ = store
            .delete_push_channel(connection.tenant_id, &channel.provider, &channel.id)
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_run_keeps_the_margin_but_never_loops() {
        let now: Timestamp = "2026-11-21T00:00:00Z".parse().unwrap();
        let hour = SignedDuration::from_hours(1);
        // Three days left, one hour margin: an hour before expiry.
        let expires = now + SignedDuration::from_hours(72);
        assert_eq!(next_run(expires, hour, now), expires - hour);
        // Ten seconds left, one hour margin: half-way, not now.
        let soon = now + SignedDuration::from_secs(10);
        assert_eq!(
            next_run(soon, hour, now),
            now + SignedDuration::from_secs(5)
        );
        // Already expired: a second from now.
        assert_eq!(next_run(now, hour, now), now + SignedDuration::from_secs(1));
    }
}
