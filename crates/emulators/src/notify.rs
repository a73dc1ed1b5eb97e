//! Webhook delivery: Graph subscriptions (validation handshake, change and lifecycle notifications) and
//! Google watch channels (`sync` then `exists` messages carrying the `X-Goog-*` headers).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use serde_json::{Value, json};

use crate::server::{Flavor, Shared, lock};
use crate::store::ChangeType;

#[derive(Debug, Clone)]
pub(crate) struct Subscription {
    pub id: String,
    pub mailbox: usize,
    pub resource: String,
    /// Some(calendar id) when the resource is one calendar's events, None for all the mailbox's events.
    pub calendar: Option<String>,
    pub change_types: Vec<String>,
    pub notification_url: String,
    pub lifecycle_url: Option<String>,
    pub client_state: Option<String>,
    pub expiration: Timestamp,
    pub application_id: String,
    pub creator_id: String,
    pub tls: String,
}

#[derive(Debug, Clone)]
pub(crate) struct Channel {
    pub id: String,
    pub resource_id: String,
    pub resource_uri: String,
    pub mailbox: usize,
    pub calendar: String,
    pub address: String,
    pub token: Option<String>,
    /// unix milliseconds
    pub expiration: i64,
    pub message_number: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Registry {
    pub subscriptions: BTreeMap<String, Subscription>,
    pub channels: BTreeMap<String, Channel>,
    /// Deliveries attempted, by receiver answer (0 = no answer), for the counters.
    pub delivered: BTreeMap<u16, u64>,
}

pub(crate) fn tenant_id() -> &'static str {
    "84bd8158-6d4d-4958-8b9f-9d6445542f95"
}

/// Hands the changes of the last request to every matching subscription / channel.
pub(crate) fn flush(app: &Arc<Shared>) {
    let changes = std::mem::take(&mut app.write().pending);
    if changes.is_empty() {
        return;
    }
    let now = Timestamp::now();
    let mut registry = lock(&app.subscriptions);
    match app.flavor {
        Flavor::Microsoft => {
            registry.subscriptions.retain(|_, s| s.expiration > now);
            let mut batches: BTreeMap<String, (String, Vec<Value>)> = BTreeMap::new();
            let users: Vec<String> = app
                .read()
                .mailboxes
                .iter()
                .map(|m| m.user_id.clone())
                .collect();
            for change in &changes {
                for sub in registry.subscriptions.values() {
                    let matches = sub.mailbox == change.mailbox
                        && sub.calendar.as_ref().is_none_or(|c| c == &change.calendar)
                        && sub
                            .change_types
                            .iter()
                            .any(|t| t == change.change_type.as_str());
                    if !matches {
                        continue;
                    }
                    let user = users.get(change.mailbox).cloned().unwrap_or_default();
                    let resource = format!("Users/{user}/Events/{}", change.event_id);
                    let mut item = json!({
                        "subscriptionId": sub.id,
                        "subscriptionExpirationDateTime": crate::graph::format_instant(sub.expiration),
                        "changeType": change.change_type.as_str(),
                        "resource": resource,
                        "tenantId": tenant_id(),
                        "resourceData": {
                            "@odata.type": "#Microsoft.Graph.Event",
                            "@odata.id": resource,
                            "id": change.event_id,
                        },
                    });
                    if change.change_type != ChangeType::Deleted {
                        let etag = crate::graph::etag_of(
                            app,
                            change.mailbox,
                            &change.calendar,
                            &change.event_id,
                        );
                        if let Some(etag) = etag {
                            item["resourceData"]["@odata.etag"] = Value::String(etag);
                        }
                    }
                    if let Some(cs) = &sub.client_state {
                        item["clientState"] = Value::String(cs.clone());
                    }
                    batches
                        .entry(sub.id.clone())
                        .or_insert_with(|| (sub.notification_url.clone(), Vec::new()))
                        .1
                        .push(item);
                }
            }
            drop(registry);
            for (_, (url, items)) in batches {
                let app = Arc::clone(app);
                tokio::spawn(async move {
                    let status = post_json(&app, &url, &json!({"value": items})).await;
                    *lock(&app.subscriptions)
                        .delivered
                        .entry(status)
                        .or_default() += 1;
                });
            }
        }
        Flavor::Google => {
            let now_ms = now.as_millisecond();
            registry.channels.retain(|_, c| c.expiration > now_ms);
            let mut sends = Vec::new();
            for channel in registry.channels.values_mut() {
                if changes
                    .iter()
                    .any(|c| c.mailbox == channel.mailbox && c.calendar == channel.calendar)
                {
                    // Message numbers increase but are not sequential, as documented.
                    channel.message_number += 1 + channel.message_number % 3;
                    sends.push((channel.clone(), "exists"));
                }
            }
            drop(registry);
            for (channel, state) in sends {
                let app = Arc::clone(app);
                tokio::spawn(async move { google_message(&app, &channel, state).await });
            }
        }
    }
}

async fn post_json(app: &Arc<Shared>, url: &str, body: &Value) -> u16 {
    let result = app
        .http
        .post(url)
        .header("Content-Type", "application/json")
        .json(body)
        .timeout(Duration::from_secs(10))
        .send()
        .await;
    result.map(|r| r.status().as_u16()).unwrap_or(0)
}

/// Sends one Google push message (no body) and records the receiver's answer.
pub(crate) async fn google_message(app: &Arc<Shared>, channel: &Channel, state: &str) {
    let mut request = app
        .http
        .post(&channel.address)
        .header("Content-Type", "application/json; utf-8")
        .header(
            "User-Agent",
            "APIs-Google; (+https://developers.google.com/webmasters/APIs-Google.html)",
        )
        .header("X-Goog-Channel-ID", &channel.id)
        .header("X-Goog-Resource-ID", &channel.resource_id)
        .header("X-Goog-Resource-URI", &channel.resource_uri)
        .header("X-Goog-Resource-State", state)
        .header("X-Goog-Message-Number", channel.message_number.to_string())
        .header("Content-Length", "0")
        .timeout(Duration::from_secs(10));
    if let Some(token) = &channel.token {
        request = request.header("X-Goog-Channel-Token", token);
    }
    if let Ok(ts) = Timestamp::from_millisecond(channel.expiration) {
        request = request.header(
            "X-Goog-Channel-Expiration",
            ts.strftime("%a, %d %b %Y %H:%M:%S GMT").to_string(),
        );
    }
    let status = request
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0);
    *lock(&app.subscriptions)
        .delivered
        .entry(status)
        .or_default() += 1;
}

/// Graph's validation handshake: POST `{url}?validationToken=...` as text/plain; the receiver must answer
/// 200 with the decoded token as a text/plain body within the timeout.
pub(crate) async fn validate(app: &Arc<Shared>, url: &str) -> Result<(), String> {
    let token = format!(
        "Validation: Testing client application reachability for subscription Request-Id: {}",
        uuid::Uuid::new_v4()
    );
    let mut target = url::Url::parse(url).map_err(|e| format!("invalid notification URL: {e}"))?;
    target
        .query_pairs_mut()
        .append_pair("validationToken", &token);
    let response = app
        .http
        .post(target)
        .header("Content-Type", "text/plain; charset=utf-8")
        .timeout(Duration::from_millis(app.config.validation_timeout_ms))
        .send()
        .await
        .map_err(|e| format!("Subscription validation request failed. Notification endpoint must respond with 200 OK to validation request. ({e})"))?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    if status.as_u16() != 200 {
        return Err(format!(
            "Subscription validation request failed. Notification endpoint must respond with 200 OK to validation request. (answered {status})"
        ));
    }
    if body != token {
        return Err("Subscription validation request failed. Response must exactly match validationToken query parameter.".into());
    }
    Ok(())
}

/// Sends a lifecycle event for a subscription (control API): `reauthorizationRequired`, `missed` or
/// `subscriptionRemoved` (which also removes the subscription).
pub(crate) async fn lifecycle(
    app: &Arc<Shared>,
    subscription_id: &str,
    event: &str,
) -> Result<u16, String> {
    let sub = {
        let mut registry = lock(&app.subscriptions);
        let sub = registry
            .subscriptions
            .get(subscription_id)
            .cloned()
            .ok_or_else(|| format!("no subscription {subscription_id}"))?;
        if event == "subscriptionRemoved" {
            registry.subscriptions.remove(subscription_id);
        }
        sub
    };
    if !matches!(
        event,
        "reauthorizationRequired" | "missed" | "subscriptionRemoved"
    ) {
        return Err(format!("unknown lifecycle event {event}"));
    }
    let url = sub
        .lifecycle_url
        .clone()
        .ok_or("the subscription has no lifecycleNotificationUrl")?;
    let mut item = json!({
        "subscriptionId": sub.id,
        "subscriptionExpirationDateTime": crate::graph::format_instant(sub.expiration),
        "tenantId": tenant_id(),
        "lifecycleEvent": event,
    });
    if let Some(cs) = &sub.client_state {
        item["clientState"] = Value::String(cs.clone());
    }
    let status = post_json(app, &url, &json!({"value": [item]})).await;
    *lock(&app.subscriptions)
        .delivered
        .entry(status)
        .or_default() += 1;
    Ok(status)
}
