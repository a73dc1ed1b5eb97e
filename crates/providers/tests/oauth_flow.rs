#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! OAuth 2.0 against the emulators' identity endpoints: PKCE checked by the server, `state`, code
//! exchange, refresh before expiry with rotation, `invalid_grant` → needs re-authorization.

use std::sync::Arc;
use std::time::Duration;

use calbridge_emulators::{Emulator, EmulatorConfig, Flavor};
use calbridge_providers::graph::{GraphConfig, GraphProvider};
use calbridge_providers::http::{
    AddressPolicy, Budget, BudgetConfig, Credentials, Endpoint, HttpClient, HttpConfig, Secret,
};
use calbridge_providers::oauth::{
    Access, OAuthConfig, OAuthSession, TokenSet, TokenSource, state_matches,
};
use calbridge_providers::{CalendarProvider, DiagnosisKind, ProviderError};
use url::Url;

fn client() -> HttpClient {
    HttpClient::new(HttpConfig {
        address_policy: AddressPolicy::with_loopback(),
        ..HttpConfig::default()
    })
    .unwrap()
}

fn token_endpoint(http: &HttpClient) -> Endpoint {
    http.endpoint(
        "oauth",
        Credentials::None,
        Budget::new(BudgetConfig::default()),
    )
}

fn redirect() -> Url {
    Url::parse("https://app.example.org/v1/calendar/oauth/microsoft/callback").unwrap()
}

async fn start(config: EmulatorConfig) -> (Emulator, OAuthConfig) {
    let emu = Emulator::start(Flavor::Microsoft, config).await.unwrap();
    let oauth = OAuthConfig::microsoft(
        &Url::parse(emu.base_url()).unwrap(),
        "common",
        "client-1",
        None,
        redirect(),
        Access::ReadWrite,
    )
    .unwrap();
    (emu, oauth)
}

/// Follows the authorize URL like a browser whose user consents; returns the callback's query.
async fn consent(url: &Url) -> Vec<(String, String)> {
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = browser.get(url.clone()).send().await.unwrap();
    assert_eq!(response.status(), 302);
    let location = Url::parse(response.headers()["location"].to_str().unwrap()).unwrap();
    assert!(location.as_str().starts_with(redirect().as_str()));
    location.query_pairs().into_owned().collect()
}

fn get<'a>(pairs: &'a [(String, String)], key: &str) -> &'a str {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap()
}

#[tokio::test]
async fn code_flow_with_pkce_and_state_then_graph_works_with_the_tokens() {
    let (emu, oauth) = start(EmulatorConfig::default()).await;
    let http = client();
    let endpoint = token_endpoint(&http);
    let request = oauth.authorization_request(None);
    let callback = consent(&request.url).await;
    assert!(state_matches(&request.state, get(&callback, "state")));
    let code = get(&callback, "code").to_owned();

    // The emulator checks the verifier against the challenge: a wrong one is refused as a grant error.
    let wrong = oauth
        .exchange_code(&endpoint, &code, &Secret::new("x".repeat(50)))
        .await;
    assert!(
        matches!(wrong, Err(ProviderError::NeedsReauthorization { .. })),
        "{wrong:?}"
    );

    let request = oauth.authorization_request(None);
    let callback = consent(&request.url).await;
    let tokens = oauth
        .exchange_code(&endpoint, get(&callback, "code"), &request.pkce_verifier)
        .await
        .unwrap();
    assert!(
        tokens.refresh_token.is_some(),
        "offline_access gives a refresh token"
    );
    assert!(tokens.expires_at > jiff::Timestamp::now());
    // A code is single-use.
    let replay = oauth
        .exchange_code(&endpoint, get(&callback, "code"), &request.pkce_verifier)
        .await;
    assert!(matches!(
        replay,
        Err(ProviderError::NeedsReauthorization { .. })
    ));

    let session = Arc::new(OAuthSession::new(oauth, endpoint, tokens));
    let base = Url::parse(&format!("{}/v1.0/", emu.base_url())).unwrap();
    let graph = GraphProvider::new(
        &http,
        GraphConfig::new(base, Access::ReadWrite),
        session.clone(),
    );
    assert_eq!(graph.test_connection().await.kind, DiagnosisKind::Ok);
    assert!(session.take_updated().is_none(), "no refresh needed yet");
}

#[tokio::test]
async fn refresh_before_expiry_rotates_and_a_revoked_grant_needs_reauthorization() {
    // Tokens live 60 s; the session refreshes 5 minutes ahead, so every use refreshes.
    let (emu, oauth) = start(EmulatorConfig {
        access_token_lifetime_secs: 60,
        ..EmulatorConfig::default()
    })
    .await;
    let http = client();
    let endpoint = token_endpoint(&http);
    let request = oauth.authorization_request(None);
    let callback = consent(&request.url).await;
    let tokens = oauth
        .exchange_code(&endpoint, get(&callback, "code"), &request.pkce_verifier)
        .await
        .unwrap();
    let original_refresh = tokens.refresh_token.clone().unwrap();
    let session = Arc::new(OAuthSession::new(oauth.clone(), endpoint.clone(), tokens));
    let before = session.bearer().await.unwrap();
    let updated: TokenSet = session.take_updated().expect("refreshed ahead of expiry");
    assert!(updated.refresh_token_rotated);
    assert_ne!(updated.refresh_token.as_ref().unwrap(), &original_refresh);
    assert_eq!(&updated.access_token, &before);
    assert!(session.take_updated().is_none(), "handed over once");

    // The emulator invalidates a rotated refresh token: using the old one is invalid_grant.
    let old = oauth.refresh(&endpoint, &original_refresh).await;
    assert!(
        matches!(old, Err(ProviderError::NeedsReauthorization { .. })),
        "{old:?}"
    );

    // A connection whose grant is gone reports it as such in Test Connection.
    let dead = Arc::new(OAuthSession::new(
        oauth,
        endpoint,
        TokenSet {
            access_token: Secret::new("expired"),
            refresh_token: Some(original_refresh),
            expires_at: jiff::Timestamp::now(),
            scope: Vec::new(),
            refresh_token_rotated: false,
        },
    ));
    let base = Url::parse(&format!("{}/v1.0/", emu.base_url())).unwrap();
    let graph = GraphProvider::new(
        &http,
        GraphConfig::new(base, Access::ReadWrite),
        dead.clone(),
    );
    let err = graph.list_calendars().await.unwrap_err();
    assert!(
        matches!(err, ProviderError::NeedsReauthorization { .. }),
        "{err:?}"
    );
    assert_eq!(err.class(), "needs_reauth");
    let diagnosis = graph.test_connection().await;
    assert_eq!(diagnosis.kind, DiagnosisKind::InvalidCredentials);
    assert!(
        diagnosis.message.contains("Sign in again"),
        "{}",
        diagnosis.message
    );
}

#[tokio::test]
async fn an_access_token_refused_early_is_refreshed_once() {
    let (emu, oauth) = start(EmulatorConfig::default()).await;
    let http = client();
    let endpoint = token_endpoint(&http);
    let request = oauth.authorization_request(None);
    let callback = consent(&request.url).await;
    let tokens = oauth
        .exchange_code(&endpoint, get(&callback, "code"), &request.pkce_verifier)
        .await
        .unwrap();
    let session =
        Arc::new(OAuthSession::new(oauth, endpoint, tokens).with_margin(Duration::from_secs(1)));
    let base = Url::parse(&format!("{}/v1.0/", emu.base_url())).unwrap();
    let graph = GraphProvider::new(
        &http,
        GraphConfig::new(base, Access::ReadWrite),
        session.clone(),
    );
    graph.list_calendars().await.unwrap();
    emu.expire_tokens();
    graph.list_calendars().await.unwrap();
    assert!(session.take_updated().is_some(), "the 401 led to a refresh");
    assert_eq!(emu.counters().with_status(401), 1);
}

#[tokio::test]
async fn google_code_flow_with_offline_access_and_refresh() {
    let emu = Emulator::start(Flavor::Google, EmulatorConfig::default())
        .await
        .unwrap();
    let base = Url::parse(emu.base_url()).unwrap();
    let oauth = OAuthConfig::google(
        &base,
        &base,
        "client-g",
        Some(Secret::new("s3cret")),
        redirect(),
        Access::ReadOnly,
    )
    .unwrap();
    let http = client();
    let endpoint = token_endpoint(&http);
    let request = oauth.authorization_request(Some("adele@contoso.example"));
    let callback = consent(&request.url).await;
    assert!(state_matches(&request.state, get(&callback, "state")));
    let tokens = oauth
        .exchange_code(&endpoint, get(&callback, "code"), &request.pkce_verifier)
        .await
        .unwrap();
    let refresh = tokens
        .refresh_token
        .clone()
        .expect("access_type=offline gives a refresh token");
    let renewed = oauth.refresh(&endpoint, &refresh).await.unwrap();
    assert_ne!(renewed.access_token, tokens.access_token);
    assert!(matches!(
        oauth.refresh(&endpoint, &refresh).await,
        Err(ProviderError::NeedsReauthorization { .. })
    ));
}
