//! OAuth 2.0 for Microsoft (identity platform v2.0) and Google: authorization code with PKCE (S256)
//! and `state`, code exchange, refresh before expiry, rotated refresh tokens handed back to the caller
//! to persist, and `invalid_grant` as [`ProviderError::NeedsReauthorization`].
//!
//! The server owns the HTTP endpoints (`/v1/calendar/oauth/{provider}/authorize` and its callback) and
//! the storage (tokens sealed at rest); this module builds the authorize URL with a fresh `state` and
//! PKCE verifier for it to persist, and turns the callback's code into tokens.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::Method;
use http::header::{ACCEPT, CONTENT_TYPE};
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;
use url::Url;

use crate::error::ProviderError;
use crate::http::{Endpoint, Request, Secret};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OAuthProvider {
    Microsoft,
    Google,
}

/// Least privilege: read-only connections never ask for write scopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    ReadOnly,
    ReadWrite,
}

/// The scopes asked for. Microsoft: `offline_access` (refresh tokens) plus `Calendars.Read` or
/// `Calendars.ReadWrite`. Google: `calendar.readonly` (calendar list, events, free/busy) or
/// `calendar.events` plus `calendar.readonly` (writing events still needs the calendar list);
/// refresh tokens come from `access_type=offline`, not a scope.
pub fn scopes(provider: OAuthProvider, access: Access) -> Vec<&'static str> {
    match (provider, access) {
        (OAuthProvider::Microsoft, Access::ReadOnly) => vec!["offline_access", "Calendars.Read"],
        (OAuthProvider::Microsoft, Access::ReadWrite) => {
            vec!["offline_access", "Calendars.ReadWrite"]
        }
        (OAuthProvider::Google, Access::ReadOnly) => {
            vec!["https://www.googleapis.com/auth/calendar.readonly"]
        }
        (OAuthProvider::Google, Access::ReadWrite) => vec![
            "https://www.googleapis.com/auth/calendar.readonly",
            "https://www.googleapis.com/auth/calendar.events",
        ],
    }
}

/// One OAuth client registration and where its identity provider lives (configurable for national
/// clouds and the emulators).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthConfig {
    pub provider: OAuthProvider,
    pub client_id: String,
    /// Confidential web apps only; public clients rely on PKCE alone.
    pub client_secret: Option<Secret>,
    pub redirect_uri: Url,
    pub authorize_url: Url,
    pub token_url: Url,
    pub access: Access,
}

impl OAuthConfig {
    /// Microsoft identity platform: `{authority}/{tenant}/oauth2/v2.0/{authorize,token}`.
    /// `authority` is `https://login.microsoftonline.com` (or a national cloud, or an emulator).
    pub fn microsoft(
        authority: &Url,
        tenant: &str,
        client_id: impl Into<String>,
        client_secret: Option<Secret>,
        redirect_uri: Url,
        access: Access,
    ) -> Result<Self, ProviderError> {
        if tenant.is_empty()
            || !tenant
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
        {
            return Err(ProviderError::invalid(
                "tenant must be a name, domain or GUID",
            ));
        }
        let base = with_trailing_slash(authority);
        let join = |tail: &str| {
            base.join(&format!("{tenant}/oauth2/v2.0/{tail}"))
                .map_err(|e| ProviderError::invalid(format!("authority URL: {e}")))
        };
        Ok(Self {
            provider: OAuthProvider::Microsoft,
            client_id: client_id.into(),
            client_secret,
            redirect_uri,
            authorize_url: join("authorize")?,
            token_url: join("token")?,
            access,
        })
    }

    /// Google: authorize `{accounts}/o/oauth2/v2/auth`, token `{token_base}/token`
    /// (`https://accounts.google.com` and `https://oauth2.googleapis.com` in production).
    pub fn google(
        accounts: &Url,
        token_base: &Url,
        client_id: impl Into<String>,
        client_secret: Option<Secret>,
        redirect_uri: Url,
        access: Access,
    ) -> Result<Self, ProviderError> {
        let bad = |e: url::ParseError| ProviderError::invalid(format!("Google OAuth URL: {e}"));
        Ok(Self {
            provider: OAuthProvider::Google,
            client_id: client_id.into(),
            client_secret,
            redirect_uri,
            authorize_url: with_trailing_slash(accounts)
                .join("o/oauth2/v2/auth")
                .map_err(bad)?,
            token_url: with_trailing_slash(token_base).join("token").map_err(bad)?,
            access,
        })
    }

    pub fn scopes(&self) -> Vec<&'static str> {
        scopes(self.provider, self.access)
    }

    /// A fresh authorization request: the URL to send the person to, and the `state` and PKCE
    /// verifier the caller must keep (sealed) until the callback.
    pub fn authorization_request(&self, login_hint: Option<&str>) -> AuthorizationRequest {
        let state = random_urlsafe(32);
        let verifier = random_urlsafe(48);
        let challenge = pkce_s256(&verifier);
        let mut url = self.authorize_url.clone();
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("client_id", &self.client_id)
                .append_pair("response_type", "code")
                .append_pair("redirect_uri", self.redirect_uri.as_str())
                .append_pair("scope", &self.scopes().join(" "))
                .append_pair("state", &state)
                .append_pair("code_challenge", &challenge)
                .append_pair("code_challenge_method", "S256");
            match self.provider {
                OAuthProvider::Microsoft => {
                    q.append_pair("response_mode", "query");
                }
                OAuthProvider::Google => {
                    // A refresh token only comes with offline access, and only on consent.
                    q.append_pair("access_type", "offline")
                        .append_pair("prompt", "consent")
                        .append_pair("include_granted_scopes", "true");
                }
            }
            if let Some(hint) = login_hint {
                q.append_pair("login_hint", hint);
            }
        }
        AuthorizationRequest {
            url,
            state,
            pkce_verifier: Secret::new(verifier),
        }
    }

    fn form(&self, pairs: &[(&str, &str)]) -> Vec<u8> {
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        form.append_pair("client_id", &self.client_id);
        for (k, v) in pairs {
            form.append_pair(k, v);
        }
        if let Some(secret) = &self.client_secret {
            form.append_pair("client_secret", secret.expose());
        }
        form.finish().into_bytes()
    }

    /// Exchanges the callback's `code` (after the caller checked `state` with [`state_matches`]).
    pub async fn exchange_code(
        &self,
        http: &Endpoint,
        code: &str,
        pkce_verifier: &Secret,
    ) -> Result<TokenSet, ProviderError> {
        let scope = self.scopes().join(" ");
        let body = self.form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", self.redirect_uri.as_str()),
            ("code_verifier", pkce_verifier.expose()),
            ("scope", &scope),
        ]);
        self.token_request(http, body, None).await
    }

    /// Uses a refresh token. The answer may carry a new refresh token (rotation); if not, the old
    /// one stays valid and is kept in the returned set.
    pub async fn refresh(
        &self,
        http: &Endpoint,
        refresh_token: &Secret,
    ) -> Result<TokenSet, ProviderError> {
        let scope = self.scopes().join(" ");
        let mut pairs = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token.expose()),
        ];
        if self.provider == OAuthProvider::Microsoft {
            pairs.push(("scope", &scope));
        }
        let body = self.form(&pairs);
        self.token_request(http, body, Some(refresh_token)).await
    }

    async fn token_request(
        &self,
        http: &Endpoint,
        body: Vec<u8>,
        previous_refresh: Option<&Secret>,
    ) -> Result<TokenSet, ProviderError> {
        let request = Request::new(Method::POST, self.token_url.clone())
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")?
            .header(ACCEPT, "application/json")?
            .body(body);
        let response = http.send(request).await?;
        if !response.status.is_success() {
            let error: TokenError = serde_json::from_slice(&response.body).unwrap_or_default();
            return Err(match error.error.as_str() {
                // The grant is gone: revoked, expired, rotated away, or a bad code/verifier.
                "invalid_grant" | "interaction_required" | "consent_required" => {
                    ProviderError::NeedsReauthorization {
                        detail: first_line(&error.error_description, &error.error),
                    }
                }
                "invalid_client" | "unauthorized_client" => ProviderError::Auth {
                    status: response.status.as_u16(),
                },
                "temporarily_unavailable" => response.error(),
                "" => response.error(),
                other => ProviderError::Rejected {
                    status: response.status.as_u16(),
                    detail: format!("{other}: {}", first_line(&error.error_description, "")),
                },
            });
        }
        let answer: TokenAnswer = serde_json::from_slice(&response.body)
            .map_err(|e| ProviderError::protocol(format!("token response: {e}")))?;
        if !answer.token_type.eq_ignore_ascii_case("bearer") {
            return Err(ProviderError::protocol(format!(
                "token type {} is not Bearer",
                answer.token_type
            )));
        }
        let lifetime = answer.expires_in.unwrap_or(3600).clamp(0, 366 * 86_400);
        let expires_at = Timestamp::now()
            .checked_add(SignedDuration::from_secs(lifetime))
            .unwrap_or(Timestamp::MAX);
        let rotated = answer.refresh_token.is_some();
        Ok(TokenSet {
            access_token: Secret::new(answer.access_token),
            refresh_token: answer
                .refresh_token
                .map(Secret::new)
                .or_else(|| previous_refresh.cloned()),
            expires_at,
            scope: answer
                .scope
                .unwrap_or_default()
                .split(' ')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            refresh_token_rotated: rotated && previous_refresh.is_some(),
        })
    }
}

fn first_line(text: &str, fallback: &str) -> String {
    let line = text.lines().next().unwrap_or("").trim();
    if line.is_empty() {
        fallback.to_owned()
    } else {
        line.chars().take(300).collect()
    }
}

fn with_trailing_slash(url: &Url) -> Url {
    let mut url = url.clone();
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    url
}

#[derive(Debug, Default, Deserialize)]
struct TokenError {
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: String,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    token_type: String,
    expires_in: Option<i64>,
    refresh_token: Option<String>,
    scope: Option<String>,
}

/// What the authorize endpoint needs and what the callback must check.
#[derive(Debug, Clone)]
pub struct AuthorizationRequest {
    pub url: Url,
    /// Compare with the callback's `state` using [`state_matches`].
    pub state: String,
    pub pkce_verifier: Secret,
}

/// Constant-time comparison of the callback's `state` with the one stored.
pub fn state_matches(expected: &str, received: &str) -> bool {
    let (a, b) = (expected.as_bytes(), received.as_bytes());
    if a.len() != b.len() || a.is_empty() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// PKCE S256 challenge: BASE64URL-NOPAD(SHA-256(verifier)) (RFC 7636 §4.2).
pub fn pkce_s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

fn random_urlsafe(bytes: usize) -> String {
    let raw: Vec<u8> = (0..bytes).map(|_| rand::random::<u8>()).collect();
    URL_SAFE_NO_PAD.encode(raw)
}

/// Tokens of one connection. The caller stores them sealed.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenSet {
    pub access_token: Secret,
    pub refresh_token: Option<Secret>,
    pub expires_at: Timestamp,
    pub scope: Vec<String>,
    /// The provider issued a new refresh token on this refresh; the old one may stop working.
    pub refresh_token_rotated: bool,
}

impl fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSet")
            .field("expires_at", &self.expires_at)
            .field("scope", &self.scope)
            .field("has_refresh_token", &self.refresh_token.is_some())
            .field("refresh_token_rotated", &self.refresh_token_rotated)
            .finish()
    }
}

/// Where a provider gets its bearer token from.
#[async_trait]
pub trait TokenSource: Send + Sync + fmt::Debug {
    /// A token valid for at least the next request.
    async fn bearer(&self) -> Result<Secret, ProviderError>;
    /// The provider refused the token (401): get a new one before the next request.
    async fn invalidate(&self);
}

/// A fixed token (tests, or an application that manages tokens itself).
#[derive(Debug, Clone)]
pub struct StaticToken(pub Secret);

#[async_trait]
impl TokenSource for StaticToken {
    async fn bearer(&self) -> Result<Secret, ProviderError> {
        Ok(self.0.clone())
    }
    async fn invalidate(&self) {}
}

/// Where a session's tokens live between runs (the server: the connection's sealed credentials).
/// The session calls it under its refresh lock, so calls never overlap within one session.
#[async_trait]
pub trait TokenStore: Send + Sync + fmt::Debug {
    /// Keep a freshly refreshed set; a rotated refresh token is only valid from now on.
    async fn save(&self, tokens: &TokenSet) -> Result<(), ProviderError>;
    /// The set stored now (another process may have refreshed and rotated meanwhile).
    async fn load(&self) -> Result<Option<TokenSet>, ProviderError>;
    /// The grant is gone (`invalid_grant`): the person must sign in again.
    async fn revoked(&self, detail: &str);
}

/// A connection's tokens, refreshed `margin` before they expire. Refreshed (and rotated) token sets
/// go to the [`TokenStore`] when there is one, and are also kept for [`OAuthSession::take_updated`].
#[derive(Debug)]
pub struct OAuthSession {
    config: OAuthConfig,
    http: Endpoint,
    tokens: Mutex<TokenSet>,
    updated: std::sync::Mutex<Option<TokenSet>>,
    margin: Duration,
    store: Option<std::sync::Arc<dyn TokenStore>>,
    /// Set once the grant was found revoked: later requests fail at once, without a token request.
    revoked: std::sync::Mutex<Option<String>>,
}

impl OAuthSession {
    /// `http` is the endpoint the token requests go through (no credentials of its own).
    pub fn new(config: OAuthConfig, http: Endpoint, tokens: TokenSet) -> Self {
        Self {
            config,
            http,
            tokens: Mutex::new(tokens),
            updated: std::sync::Mutex::new(None),
            margin: Duration::from_secs(300),
            store: None,
            revoked: std::sync::Mutex::new(None),
        }
    }

    /// Persist every refresh through `store`, and consult it before declaring the grant revoked.
    pub fn with_store(mut self, store: std::sync::Arc<dyn TokenStore>) -> Self {
        self.store = Some(store);
        self
    }

    pub fn with_margin(mut self, margin: Duration) -> Self {
        self.margin = margin;
        self
    }

    pub fn config(&self) -> &OAuthConfig {
        &self.config
    }

    /// The token set last obtained by a refresh, once; persist it (its refresh token replaces the
    /// stored one when `refresh_token_rotated`).
    pub fn take_updated(&self) -> Option<TokenSet> {
        self.updated.lock().ok().and_then(|mut u| u.take())
    }

    async fn refresh_locked(&self, tokens: &mut TokenSet) -> Result<(), ProviderError> {
        if let Some(detail) = self.revoked.lock().ok().and_then(|r| r.clone()) {
            return Err(ProviderError::NeedsReauthorization { detail });
        }
        let Some(refresh) = tokens.refresh_token.clone() else {
            let detail = "the access token expired and no refresh token was granted".to_owned();
            self.mark_revoked(&detail).await;
            return Err(ProviderError::NeedsReauthorization { detail });
        };
        let fresh = match self.config.refresh(&self.http, &refresh).await {
            Ok(fresh) => fresh,
            Err(ProviderError::NeedsReauthorization { detail }) => {
                // Another session (the scheduler, another node) may have refreshed first and rotated
                // the token we hold away: adopt the stored set rather than calling the grant revoked.
                if let Some(stored) = self.stored_if_newer(&refresh).await {
                    let margin =
                        SignedDuration::try_from(self.margin).unwrap_or(SignedDuration::ZERO);
                    let due = stored
                        .expires_at
                        .checked_sub(margin)
                        .unwrap_or(Timestamp::MIN);
                    *tokens = stored;
                    if Timestamp::now() < due {
                        return Ok(());
                    }
                    return Box::pin(self.refresh_locked(tokens)).await;
                }
                self.mark_revoked(&detail).await;
                return Err(ProviderError::NeedsReauthorization { detail });
            }
            Err(e) => return Err(e),
        };
        if let Some(store) = &self.store {
            // A rotated refresh token exists only here until it is saved: try twice, then carry on
            // with the fresh access token (the next run will need a new sign-in if both failed).
            let mut saved = store.save(&fresh).await;
            if saved.is_err() {
                saved = store.save(&fresh).await;
            }
            if let Err(e) = saved {
                tracing::error!(error = %e, "refreshed OAuth tokens could not be persisted");
            }
        }
        *tokens = fresh.clone();
        if let Ok(mut updated) = self.updated.lock() {
            *updated = Some(fresh);
        }
        Ok(())
    }

    async fn stored_if_newer(&self, used: &Secret) -> Option<TokenSet> {
        let store = self.store.as_ref()?;
        let stored = store.load().await.ok()??;
        match &stored.refresh_token {
            Some(r) if r != used => Some(stored),
            _ => None,
        }
    }

    async fn mark_revoked(&self, detail: &str) {
        if let Ok(mut revoked) = self.revoked.lock() {
            *revoked = Some(detail.to_owned());
        }
        if let Some(store) = &self.store {
            store.revoked(detail).await;
        }
    }
}

#[async_trait]
impl TokenSource for OAuthSession {
    async fn bearer(&self) -> Result<Secret, ProviderError> {
        // One lock across the refresh: concurrent requests wait for one refresh instead of racing
        // (a rotated refresh token can be used only once).
        let mut tokens = self.tokens.lock().await;
        let margin = SignedDuration::try_from(self.margin).unwrap_or(SignedDuration::ZERO);
        let due = tokens
            .expires_at
            .checked_sub(margin)
            .unwrap_or(Timestamp::MIN);
        if Timestamp::now() >= due {
            self.refresh_locked(&mut tokens).await?;
        }
        Ok(tokens.access_token.clone())
    }

    async fn invalidate(&self) {
        let mut tokens = self.tokens.lock().await;
        tokens.expires_at = Timestamp::MIN;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_matches_rfc7636_appendix_b() {
        assert_eq!(
            pkce_s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn authorize_url_carries_state_pkce_and_least_privilege() {
        let config = OAuthConfig::microsoft(
            &Url::parse("https://login.example.org").unwrap(),
            "common",
            "client",
            None,
            Url::parse("https://app.example.org/cb").unwrap(),
            Access::ReadOnly,
        )
        .unwrap();
        let request = config.authorization_request(Some("a@b.example"));
        let pairs: std::collections::HashMap<_, _> =
            request.url.query_pairs().into_owned().collect();
        assert_eq!(request.url.path(), "/common/oauth2/v2.0/authorize");
        assert_eq!(pairs["state"], request.state);
        assert_eq!(
            pairs["code_challenge"],
            pkce_s256(request.pkce_verifier.expose())
        );
        assert_eq!(pairs["code_challenge_method"], "S256");
        assert_eq!(pairs["scope"], "offline_access Calendars.Read");
        assert!(request.pkce_verifier.expose().len() >= 43);
        let again = config.authorization_request(None);
        assert_ne!(again.state, request.state);
        assert!(state_matches(&request.state, &request.state));
        assert!(!state_matches(&request.state, &again.state));
        assert!(!state_matches("", ""));
        assert!(
            OAuthConfig::microsoft(
                &Url::parse("https://login.example.org").unwrap(),
                "../x",
                "c",
                None,
                Url::parse("https://a/cb").unwrap(),
                Access::ReadOnly
            )
            .is_err()
        );
    }

    #[test]
    fn google_scopes_and_offline_access() {
        let config = OAuthConfig::google(
            &Url::parse("https://accounts.example.org").unwrap(),
            &Url::parse("https://oauth2.example.org/").unwrap(),
            "client",
            None,
            Url::parse("https://app.example.org/cb").unwrap(),
            Access::ReadWrite,
        )
        .unwrap();
        assert_eq!(
            config.token_url.as_str(),
            "https://oauth2.example.org/token"
        );
        let url = config.authorization_request(None).url;
        let pairs: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
        assert_eq!(pairs["access_type"], "offline");
        assert!(pairs["scope"].contains("calendar.events"));
        assert!(
            !scopes(OAuthProvider::Google, Access::ReadOnly)
                .iter()
                .any(|s| s.ends_with("calendar.events"))
        );
    }
}
