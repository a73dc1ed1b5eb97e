//! OAuth 2.0 authorization-code + PKCE and refresh, as the Microsoft identity platform
//! (`/{tenant}/oauth2/v2.0/{authorize,token}`) and Google (`/o/oauth2/v2/auth`, `/token`) expose them.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{Method, StatusCode};
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::server::{
    CodeGrant, Flavor, RefreshGrant, Reply, ReplyBody, Req, Shared, lock, random_token,
};

/// Answers the identity endpoints; `None` when the request is for the API.
pub(crate) fn handle(app: &Arc<Shared>, req: &Req) -> Option<Reply> {
    let segments: Vec<&str> = req.path.split('/').filter(|s| !s.is_empty()).collect();
    let endpoint = match (app.flavor, segments.as_slice()) {
        (Flavor::Microsoft, [_tenant, "oauth2", "v2.0", "authorize"]) => Endpoint::Authorize,
        (Flavor::Microsoft, [_tenant, "oauth2", "v2.0", "token"]) => Endpoint::Token,
        (Flavor::Google, ["o", "oauth2", "v2", "auth"]) => Endpoint::Authorize,
        (Flavor::Google, ["token"]) => Endpoint::Token,
        _ => return None,
    };
    Some(match (endpoint, &req.method) {
        (Endpoint::Authorize, &Method::GET) => authorize(app, req),
        (Endpoint::Token, &Method::POST) => token(app, req),
        _ => Reply::empty(StatusCode::METHOD_NOT_ALLOWED),
    })
}

#[derive(Debug, Clone, Copy)]
enum Endpoint {
    Authorize,
    Token,
}

/// PKCE S256: BASE64URL-NOPAD(SHA256(verifier)) (RFC 7636 §4.6).
pub fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

fn authorize(app: &Arc<Shared>, req: &Req) -> Reply {
    let (Some(client_id), Some(redirect_uri)) = (req.q("client_id"), req.q("redirect_uri")) else {
        return Reply {
            status: StatusCode::BAD_REQUEST,
            headers: Vec::new(),
            body: ReplyBody::Text("client_id and redirect_uri are required".into()),
        };
    };
    let Ok(mut target) = url::Url::parse(redirect_uri) else {
        return Reply {
            status: StatusCode::BAD_REQUEST,
            headers: Vec::new(),
            body: ReplyBody::Text("redirect_uri is not an absolute URL".into()),
        };
    };
    let state = req.q("state").map(str::to_string);
    let redirect_error = |mut target: url::Url, error: &str, description: &str| {
        {
            let mut pairs = target.query_pairs_mut();
            pairs
                .append_pair("error", error)
                .append_pair("error_description", description);
            if let Some(s) = &state {
                pairs.append_pair("state", s);
            }
        }
        Reply::empty(StatusCode::FOUND).header("Location", target.to_string())
    };
    if req.q("response_type") != Some("code") {
        return redirect_error(
            target,
            "unsupported_response_type",
            "Only response_type=code is supported.",
        );
    }
    let method = req
        .q("code_challenge_method")
        .unwrap_or("plain")
        .to_string();
    if req.q("code_challenge").is_some() && method != "S256" && method != "plain" {
        return redirect_error(
            target,
            "invalid_request",
            "Unsupported code_challenge_method.",
        );
    }
    let mailbox = {
        let store = app.read();
        match req.q("login_hint") {
            Some(hint) => match store.mailbox_index(hint) {
                Some(m) => m,
                None => return redirect_error(target, "access_denied", "The user does not exist."),
            },
            None => 0,
        }
    };
    let scope = req.q("scope").unwrap_or_default().to_string();
    let offline = match app.flavor {
        Flavor::Microsoft => scope.split(' ').any(|s| s == "offline_access"),
        Flavor::Google => req.q("access_type") == Some("offline"),
    };
    let code = random_token(24);
    lock(&app.auth).codes.insert(
        code.clone(),
        CodeGrant {
            mailbox,
            client_id: client_id.to_string(),
            redirect_uri: redirect_uri.to_string(),
            challenge: req.q("code_challenge").map(str::to_string),
            challenge_method: method,
            scope,
            offline,
            expires: Timestamp::now()
                .checked_add(SignedDuration::from_secs(600))
                .unwrap_or(Timestamp::MAX),
        },
    );
    {
        let mut pairs = target.query_pairs_mut();
        pairs.append_pair("code", &code);
        if let Some(s) = &state {
            pairs.append_pair("state", s);
        }
    }
    Reply::empty(StatusCode::FOUND).header("Location", target.to_string())
}

fn token(app: &Arc<Shared>, req: &Req) -> Reply {
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&req.body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim().to_string())
    };
    let flavor = app.flavor;
    match field("grant_type").as_deref() {
        Some("authorization_code") => {
            let Some(code) = field("code") else {
                return token_error(
                    flavor,
                    "invalid_request",
                    900144,
                    "The request body must contain the following parameter: 'code'.",
                );
            };
            let grant = lock(&app.auth).codes.remove(&code);
            let Some(grant) = grant else {
                return token_error(
                    flavor,
                    "invalid_grant",
                    54005,
                    "OAuth2 Authorization code was already redeemed or is not valid.",
                );
            };
            if grant.expires <= Timestamp::now() {
                return token_error(
                    flavor,
                    "invalid_grant",
                    70008,
                    "The provided authorization code or refresh token has expired.",
                );
            }
            if field("client_id").as_deref() != Some(grant.client_id.as_str()) {
                return token_error(
                    flavor,
                    "invalid_grant",
                    700005,
                    "Provided Authorization Code is intended to use against other client.",
                );
            }
            if field("redirect_uri").as_deref() != Some(grant.redirect_uri.as_str()) {
                return token_error(
                    flavor,
                    "invalid_grant",
                    500112,
                    "The reply address does not match the reply address provided when requesting the authorization code.",
                );
            }
            if let Some(challenge) = &grant.challenge {
                let Some(verifier) = field("code_verifier") else {
                    return token_error(
                        flavor,
                        "invalid_grant",
                        501481,
                        "The Code_Verifier does not match the code_challenge supplied in the authorization request.",
                    );
                };
                let computed = if grant.challenge_method == "S256" {
                    pkce_challenge(&verifier)
                } else {
                    verifier
                };
                if &computed != challenge {
                    return token_error(
                        flavor,
                        "invalid_grant",
                        501481,
                        "The Code_Verifier does not match the code_challenge supplied in the authorization request.",
                    );
                }
            }
            issue(
                app,
                grant.mailbox,
                &grant.client_id,
                &grant.scope,
                grant.offline,
            )
        }
        Some("refresh_token") => {
            let Some(refresh) = field("refresh_token") else {
                return token_error(
                    flavor,
                    "invalid_request",
                    900144,
                    "The request body must contain the following parameter: 'refresh_token'.",
                );
            };
            let grant = {
                let mut auth = lock(&app.auth);
                if app.config.refresh_rotation_invalidates_old {
                    auth.refresh.remove(&refresh)
                } else {
                    auth.refresh.get(&refresh).cloned()
                }
            };
            let Some(grant) = grant else {
                return token_error(
                    flavor,
                    "invalid_grant",
                    70000,
                    "The provided grant has expired due to it being revoked, a fresh auth token is needed.",
                );
            };
            if field("client_id").is_some_and(|c| c != grant.client_id) {
                return token_error(
                    flavor,
                    "invalid_grant",
                    700005,
                    "Provided grant is intended to use against other client.",
                );
            }
            let scope = field("scope").unwrap_or(grant.scope.clone());
            issue(app, grant.mailbox, &grant.client_id, &scope, true)
        }
        _ => token_error(
            flavor,
            "unsupported_grant_type",
            70003,
            "The app requested an unsupported grant type.",
        ),
    }
}

fn issue(app: &Arc<Shared>, mailbox: usize, client_id: &str, scope: &str, offline: bool) -> Reply {
    let access = app.mint_token(mailbox);
    let lifetime = app.config.access_token_lifetime_secs;
    let mut body = json!({
        "token_type": "Bearer",
        "scope": scope,
        "expires_in": lifetime,
        "access_token": access,
    });
    if app.flavor == Flavor::Microsoft {
        body["ext_expires_in"] = json!(lifetime);
    }
    if offline {
        let refresh = random_token(48);
        lock(&app.auth).refresh.insert(
            refresh.clone(),
            RefreshGrant {
                mailbox,
                client_id: client_id.to_string(),
                scope: scope.to_string(),
            },
        );
        body["refresh_token"] = Value::String(refresh);
    }
    Reply::json(StatusCode::OK, body)
        .header("Cache-Control", "no-store")
        .header("Pragma", "no-cache")
}

fn token_error(flavor: Flavor, error: &str, code: u32, description: &str) -> Reply {
    let status = if error == "invalid_client" {
        StatusCode::UNAUTHORIZED
    } else {
        StatusCode::BAD_REQUEST
    };
    match flavor {
        Flavor::Microsoft => {
            let trace = uuid::Uuid::new_v4().to_string();
            let correlation = uuid::Uuid::new_v4().to_string();
            let now = Timestamp::now();
            let stamp = now.strftime("%Y-%m-%d %H:%M:%SZ").to_string();
            Reply::json(
                status,
                json!({
                    "error": error,
                    "error_description": format!("AADSTS{code}: {description}\r\nTrace ID: {trace}\r\nCorrelation ID: {correlation}\r\nTimestamp: {stamp}"),
                    "error_codes": [code],
                    "timestamp": stamp,
                    "trace_id": trace,
                    "correlation_id": correlation,
                }),
            )
        }
        Flavor::Google => Reply::json(
            status,
            json!({"error": error, "error_description": description}),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s256_matches_rfc7636_appendix_b() {
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }
}
