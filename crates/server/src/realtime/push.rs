//! Provider push channels: the secrets we hand to Graph (`clientState`) and Google (channel `token`) are
//! stored only as SHA-256 digests and compared in constant time, and a verified notification becomes a
//! coalescing `sync.link` job for its link.

use calbridge_store::{LinkId, NewJob, PushChannel, Store, StoreError, TenantId};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Job kind a verified notification enqueues: the scheduler's per-link job, keyed by link id, so a burst
/// leaves one pending job and a notification only brings that link's next run forward.
pub const SYNC_LINK_JOB: &str = crate::scheduler::JOB_KIND;
/// Job kind for lifecycle work on a channel (`reauthorizationRequired`, `subscriptionRemoved`).
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

/// Enqueue lifecycle work on a channel (`renew`, `recreate`).
pub async fn enqueue_channel_work(
    store: &dyn Store,
    channel: &PushChannel,
    action: &str,
) -> Result<(), StoreError> {
    store
        .enqueue_job(NewJob {
            tenant_id: Some(channel.tenant_id),
            kind: CHANNEL_JOB.to_owned(),
            key: format!("{}:{}", channel.provider, channel.id),
            payload_json: serde_json::json!({
                "tenant_id": channel.tenant_id, "link_id": channel.link_id,
                "provider": channel.provider, "channel_id": channel.id, "action": action,
            })
            .to_string(),
            run_at: jiff::Timestamp::now(),
        })
        .await
        .map(|_| ())
}
