//! Provider push channels: the secrets we hand to Graph (`clientState`) and Google (channel `token`) are
//! stored only as SHA-256 digests and compared in constant time, and a verified notification becomes a
//! coalescing `sync.link` job for its link.

use calbridge_store::{LinkId, NewJob, NewPushChannel, PushChannel, Store, StoreError, TenantId};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Job kind a verified notification enqueues: the scheduler's per-link job, keyed by link id, so a burst
/// leaves one pending job and a notification only brings that link's next run forward.
pub const SYNC_LINK_JOB: &str = crate::scheduler::JOB_KIND;
/// Job kind of a link's channel lifecycle (open, renew, replace, stop): see [`super::channels`].
pub const CHANNEL_JOB: &str = "push.channel";

/// The stored form of a clientState / channel token.
pub fn secret_digest(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Does `presented` match the channel's secret? Constant time in the secret's content.
pub fn secret_matches(channel: &PushChannel, presented: &str) -> bool {
    let digest = secret_digest(presented);
    digest
        .as_bytes()
        .ct_eq(channel.secret_hash.as_bytes())
        .into()
}

/// Enqueue (or re-arm: the store keys jobs by kind and key) an incremental sync of one link.
pub async fn enqueue_link_sync(
    store: &dyn Store,
    tenant: TenantId,
    link: LinkId,
    reason: &str,
) -> Result<(), StoreError> {
    store
        .enqueue_job(NewJob {
            tenant_id: Some(tenant),
            kind: SYNC_LINK_JOB.to_owned(),
            key: link.to_string(),
            // The scheduler's payload shape (`tenant`, `link`); `reason` is for the log.
            payload_json: serde_json::json!({
                "tenant": tenant, "link": link, "reason": reason,
            })
            .to_string(),
            run_at: jiff::Timestamp::now(),
        })
        .await
        .map(|_| ())
}

/// Lifecycle work on a channel: `renew` marks it due (Graph's PATCH also reauthorizes it), `recreate`
/// forgets it (the provider already removed it); either way the link's `push.channel` job runs now.
pub async fn enqueue_channel_work(
    store: &dyn Store,
    channel: &PushChannel,
    action: &str,
) -> Result<(), StoreError> {
    let now = jiff::Timestamp::now();
    match action {
        "recreate" => {
            store
                .delete_push_channel(channel.tenant_id, &channel.provider, &channel.id)
                .await?
        }
        _ => store
            .put_push_channel(
                channel.tenant_id,
                NewPushChannel {
                    provider: channel.provider.clone(),
                    id: channel.id.clone(),
                    link_id: channel.link_id,
                    secret_hash: channel.secret_hash.clone(),
                    resource_id: channel.resource_id.clone(),
                    expires_at: now.min(channel.expires_at),
                },
            )
            .await
            .map(|_| ())?,
    }
    super::channels::enqueue(store, channel.tenant_id, channel.link_id, now).await
}
