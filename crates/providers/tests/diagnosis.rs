//! "Test Connection" diagnoses that need a particular kind of broken server: one with a certificate
//! nobody trusts (real Xandikos with `--autocert`), one that accepts and never answers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use calbridge_providers::caldav::CaldavProvider;
use calbridge_providers::http::{AddressPolicy, Credentials, HttpClient, HttpConfig, RetryPolicy};
use calbridge_providers::ics::IcsProvider;
use calbridge_providers::{CalendarProvider, DiagnosisKind};
use support::{Xandikos, budget, caldav};

#[tokio::test]
async fn https_to_a_server_without_tls_is_a_tls_failure() {
    // Xandikos speaks plain HTTP here; a person who typed https:// gets a TLS diagnosis.
    let Some(xandikos) = Xandikos::start() else {
        return;
    };
    let url = format!("https://127.0.0.1:{}/", xandikos.port);
    let provider = caldav(&url, Credentials::None);
    let diagnosis = provider.test_connection().await;
    assert_eq!(
        diagnosis.kind,
        DiagnosisKind::TlsFailure,
        "{}",
        diagnosis.message
    );
    let plain = caldav(
        &format!("http://127.0.0.1:{}/", xandikos.port),
        Credentials::None,
    );
    assert!(plain.test_connection().await.is_ok());
}

#[tokio::test]
async fn a_server_that_never_answers_is_a_timeout() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket); // accepted, never answered
        }
    });
    let client = HttpClient::new(HttpConfig {
        request_timeout: Duration::from_millis(500),
        retry: RetryPolicy {
            max_attempts: 2,
            base_delay: Duration::from_millis(10),
            ..RetryPolicy::default()
        },
        address_policy: AddressPolicy::with_loopback(),
        ..HttpConfig::default()
    })
    .unwrap();
    let caldav = CaldavProvider::new(
        &client,
        &format!("http://{addr}/dav/"),
        Credentials::None,
        budget(),
    )
    .unwrap();
    let diagnosis = caldav.test_connection().await;
    assert_eq!(
        diagnosis.kind,
        DiagnosisKind::Timeout,
        "{}",
        diagnosis.message
    );
    let ics = IcsProvider::new(
        &client,
        &format!("http://{addr}/feed.ics"),
        Credentials::None,
        budget(),
    )
    .unwrap();
    assert_eq!(ics.test_connection().await.kind, DiagnosisKind::Timeout);
}
