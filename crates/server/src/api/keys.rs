//! The admin API for API keys. An admin key manages the keys of its own tenant only; new tenants are
//! made with `calbridge keys create --tenant NAME` on the server's machine.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use calbridge_store::{ApiKey, ApiKeyId, NewApiKey, TenantId};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{CommonErrors, audit, parse_id, store_error};
use crate::AppState;
use crate::auth::{Admin, Authorized};
use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::keys::{NewKey, Scope};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_keys, create_key))
        .routes(routes!(revoke_key))
}

/// An API key as listed: never its secret.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct KeyView {
    pub id: String,
    /// The public part of the token (`cbk_<prefix>_…`); appears in the audit log as `key:<prefix>`.
    pub prefix: String,
    pub name: String,
    pub tenant_id: String,
    #[schema(value_type = Vec<String>, example = json!(["events:read"]))]
    pub scopes: Vec<String>,
    pub created_at: String,
    pub last_used_at: Option<String>,
    pub revoked_at: Option<String>,
}

impl From<ApiKey> for KeyView {
    fn from(k: ApiKey) -> Self {
        Self {
            id: k.id.to_string(),
            prefix: k.prefix,
            name: k.name,
            tenant_id: k.tenant_id.to_string(),
            scopes: k.scopes,
            created_at: k.created_at.to_string(),
            last_used_at: k.last_used_at.map(|t| t.to_string()),
            revoked_at: k.revoked_at.map(|t| t.to_string()),
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct KeyList {
    pub items: Vec<KeyView>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyInput {
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    /// Any of `events:read`, `events:write`, `connections:manage`, `conflicts:resolve`, `admin`.
    #[schema(value_type = Vec<String>, min_items = 1, example = json!(["events:read", "events:write"]))]
    pub scopes: Vec<Scope>,
}

/// A key just made: `token` is shown this once and cannot be read again.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreatedKey {
    #[serde(flatten)]
    pub key: KeyView,
    pub token: String,
}

/// Make a key in `tenant`; shared by the admin API, the CLI and the bootstrap.
pub async fn make_key(
    store: &dyn calbridge_store::Store,
    tenant: TenantId,
    name: &str,
    scopes: &[Scope],
) -> Result<(ApiKey, String), calbridge_store::StoreError> {
    let material = NewKey::generate();
    let mut scopes: Vec<Scope> = scopes.to_vec();
    scopes.sort();
    scopes.dedup();
    let key = store
        .create_api_key(
            tenant,
            NewApiKey {
                name: name.to_owned(),
                prefix: material.id.as_str().to_owned(),
                secret_hash: material.secret_hash.clone(),
                scopes: scopes.iter().map(|s| s.as_str().to_owned()).collect(),
            },
        )
        .await?;
    Ok((key, material.token))
}

/// List the keys of this tenant.
#[utoipa::path(get, path = "/v1/calendar/keys", tag = "keys",
    security(("api_key" = [])),
    responses((status = 200, body = KeyList), CommonErrors))]
pub async fn list_keys(
    auth: Authorized<Admin>,
    State(state): State<AppState>,
) -> Result<Json<KeyList>, ApiError> {
    let keys = state
        .store
        .list_api_keys(auth.principal().tenant)
        .await
        .map_err(|e| store_error("key", e))?;
    Ok(Json(KeyList {
        items: keys.into_iter().map(KeyView::from).collect(),
    }))
}

/// Make a key in this tenant. The answer carries the secret token once.
#[utoipa::path(post, path = "/v1/calendar/keys", tag = "keys",
    security(("api_key" = [])),
    request_body = KeyInput,
    responses((status = 201, body = CreatedKey), CommonErrors))]
pub async fn create_key(
    auth: Authorized<Admin>,
    State(state): State<AppState>,
    JsonBody(input): JsonBody<KeyInput>,
) -> Result<(StatusCode, Json<CreatedKey>), ApiError> {
    let principal = auth.principal();
    let name = input.name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(ApiError::unprocessable(
            "invalid_name",
            "name must be 1 to 200 characters",
        ));
    }
    if input.scopes.is_empty() {
        return Err(ApiError::unprocessable(
            "invalid_scopes",
            "give at least one scope: events:read, events:write, connections:manage, conflicts:resolve, admin",
        ));
    }
    let (key, token) = make_key(state.store.as_ref(), principal.tenant, name, &input.scopes)
        .await
        .map_err(|e| store_error("key", e))?;
    audit(
        &state,
        principal,
        "key.created",
        key.id,
        serde_json::json!({"prefix": key.prefix, "name": key.name, "scopes": key.scopes}),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedKey {
            key: KeyView::from(key),
            token,
        }),
    ))
}

/// Revoke a key of this tenant; it stops working at once on this node (on other nodes sharing the
/// database within `server.api_key_cache_ttl`).
#[utoipa::path(delete, path = "/v1/calendar/keys/{id}", tag = "keys",
    security(("api_key" = [])),
    params(("id" = String, Path, description = "Key id")),
    responses((status = 200, body = KeyView), CommonErrors))]
pub async fn revoke_key(
    auth: Authorized<Admin>,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<KeyView>, ApiError> {
    let principal = auth.principal();
    let id: ApiKeyId = parse_id(&id, "key")?;
    let key = state
        .store
        .revoke_api_key(principal.tenant, id)
        .await
        .map_err(|e| store_error("key", e))?;
    state.keys.forget(&key.prefix);
    audit(
        &state,
        principal,
        "key.revoked",
        key.id,
        serde_json::json!({"prefix": key.prefix}),
    )
    .await?;
    Ok(Json(KeyView::from(key)))
}
