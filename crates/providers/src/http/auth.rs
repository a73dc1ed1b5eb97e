//! Credentials and how they go on a request: Basic, Bearer, and Digest (RFC 7616, MD5 and SHA-256,
//! `qop=auth`), with the last challenge remembered so later requests authenticate up front.

use std::fmt;
use std::sync::{Arc, Mutex};

use base64::Engine;
use md5::Md5;

use crate::error::ProviderError;
use sha2::{Digest as _, Sha256};

/// A secret that never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Where OAuth access tokens come from (Microsoft and Google connections): the store-backed source
/// refreshes before expiry and persists rotated refresh tokens; the HTTP layer only asks and reports.
#[async_trait::async_trait]
pub trait TokenSource: Send + Sync + fmt::Debug {
    /// A token valid for at least the next request.
    async fn access_token(&self) -> Result<Secret, ProviderError>;
    /// The provider answered 401 to `token`: refresh before handing out another.
    async fn refused(&self, token: &Secret);
}

#[derive(Debug, Clone)]
pub enum Credentials {
    None,
    /// User name and password; sent as Basic, or as Digest when the server challenges with Digest.
    Password {
        username: String,
        password: Secret,
    },
    /// A fixed bearer token.
    Bearer(Secret),
    /// Bearer tokens from a refreshing source; one 401 triggers one refresh and one retry.
    OAuth(Arc<dyn TokenSource>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DigestAlgorithm {
    Md5,
    Md5Sess,
    Sha256,
    Sha256Sess,
}

impl DigestAlgorithm {
    fn parse(value: Option<&str>) -> Option<Self> {
        match value.map(str::to_ascii_uppercase).as_deref() {
            None | Some("MD5") => Some(Self::Md5),
            Some("MD5-SESS") => Some(Self::Md5Sess),
            Some("SHA-256") => Some(Self::Sha256),
            Some("SHA-256-SESS") => Some(Self::Sha256Sess),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Md5 => "MD5",
            Self::Md5Sess => "MD5-sess",
            Self::Sha256 => "SHA-256",
            Self::Sha256Sess => "SHA-256-sess",
        }
    }

    fn hash(self, data: &str) -> String {
        match self {
            Self::Md5 | Self::Md5Sess => hex::encode(Md5::digest(data.as_bytes())),
            Self::Sha256 | Self::Sha256Sess => hex::encode(Sha256::digest(data.as_bytes())),
        }
    }

    fn strength(self) -> u8 {
        match self {
            Self::Md5 | Self::Md5Sess => 1,
            Self::Sha256 | Self::Sha256Sess => 2,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DigestChallenge {
    realm: String,
    nonce: String,
    opaque: Option<String>,
    algorithm: DigestAlgorithm,
    qop_auth: bool,
    pub(crate) stale: bool,
}

/// Splits `k=v, k="quoted, v"` auth-params.
fn auth_params(input: &str) -> Vec<(String, String)> {
    let mut params = Vec::new();
    let mut rest = input.trim();
    while !rest.is_empty() {
        let Some(eq) = rest.find('=') else { break };
        let key = rest[..eq]
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        rest = rest[eq + 1..].trim_start();
        let value;
        if let Some(quoted) = rest.strip_prefix('"') {
            let mut out = String::new();
            let mut escaped = false;
            let mut end = quoted.len();
            for (i, c) in quoted.char_indices() {
                if escaped {
                    out.push(c);
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == '"' {
                    end = i + 1;
                    break;
                } else {
                    out.push(c);
                }
            }
            value = out;
            rest = quoted.get(end..).unwrap_or("");
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            value = rest[..end].trim().to_owned();
            rest = &rest[end..];
        }
        rest = rest.trim_start().trim_start_matches(',').trim_start();
        params.push((key, value));
    }
    params
}

impl DigestChallenge {
    /// Picks the strongest usable Digest challenge among `WWW-Authenticate` header values.
    pub(crate) fn from_headers<'a>(values: impl Iterator<Item = &'a str>) -> Option<Self> {
        let mut best: Option<Self> = None;
        for value in values {
            // One header may carry several challenges; each Digest one starts with the scheme.
            let lower = value.to_ascii_lowercase();
            let mut starts: Vec<usize> = lower.match_indices("digest ").map(|(i, _)| i).collect();
            starts.retain(|&i| i == 0 || lower[..i].trim_end().ends_with(','));
            for start in starts {
                let body = &value[start + "digest ".len()..];
                // Stop at the next scheme (a token followed by a space and no '=' before it).
                let params = auth_params(body);
                let get = |k: &str| {
                    params
                        .iter()
                        .find(|(key, _)| key == k)
                        .map(|(_, v)| v.as_str())
                };
                let (Some(realm), Some(nonce)) = (get("realm"), get("nonce")) else {
                    continue;
                };
                let Some(algorithm) = DigestAlgorithm::parse(get("algorithm")) else {
                    continue;
                };
                let qop = get("qop");
                let qop_auth = qop
                    .is_some_and(|q| q.split(',').any(|v| v.trim().eq_ignore_ascii_case("auth")));
                if qop.is_some() && !qop_auth {
                    continue; // auth-int only: we do not hash bodies
                }
                let candidate = Self {
                    realm: realm.to_owned(),
                    nonce: nonce.to_owned(),
                    opaque: get("opaque").map(str::to_owned),
                    algorithm,
                    qop_auth,
                    stale: get("stale").is_some_and(|s| s.eq_ignore_ascii_case("true")),
                };
                if best
                    .as_ref()
                    .is_none_or(|b| candidate.algorithm.strength() > b.algorithm.strength())
                {
                    best = Some(candidate);
                }
            }
        }
        best
    }

    fn authorization(
        &self,
        username: &str,
        password: &str,
        method: &str,
        uri: &str,
        nc: u32,
        cnonce: &str,
    ) -> String {
        let alg = self.algorithm;
        let mut ha1 = alg.hash(&format!("{username}:{}:{password}", self.realm));
        if matches!(alg, DigestAlgorithm::Md5Sess | DigestAlgorithm::Sha256Sess) {
            ha1 = alg.hash(&format!("{ha1}:{}:{cnonce}", self.nonce));
        }
        let ha2 = alg.hash(&format!("{method}:{uri}"));
        let nc = format!("{nc:08x}");
        let response = if self.qop_auth {
            alg.hash(&format!("{ha1}:{}:{nc}:{cnonce}:auth:{ha2}", self.nonce))
        } else {
            alg.hash(&format!("{ha1}:{}:{ha2}", self.nonce))
        };
        let quote = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
        let mut header = format!(
            "Digest username=\"{}\", realm=\"{}\", nonce=\"{}\", uri=\"{}\", algorithm={}, response=\"{response}\"",
            quote(username),
            quote(&self.realm),
            quote(&self.nonce),
            quote(uri),
            alg.name()
        );
        if self.qop_auth {
            header.push_str(&format!(", qop=auth, nc={nc}, cnonce=\"{cnonce}\""));
        }
        if let Some(opaque) = &self.opaque {
            header.push_str(&format!(", opaque=\"{}\"", quote(opaque)));
        }
        header
    }
}

/// Credentials plus what the server told us about how it wants them.
#[derive(Debug)]
pub(crate) struct Authenticator {
    credentials: Credentials,
    digest: Mutex<Option<(DigestChallenge, u32)>>,
    last_token: Mutex<Option<Secret>>,
}

impl Authenticator {
    pub(crate) fn new(credentials: Credentials) -> Self {
        Self {
            credentials,
            digest: Mutex::new(None),
            last_token: Mutex::new(None),
        }
    }

    /// Who these credentials are, as a digest (for cache keys): `None` when it cannot be told
    /// (a refreshing token source).
    pub(crate) fn fingerprint(&self) -> Option<[u8; 32]> {
        use sha2::{Digest, Sha256};
        let mut hash = Sha256::new();
        match &self.credentials {
            Credentials::None => hash.update(b"none"),
            Credentials::Password { username, password } => {
                hash.update(b"password\0");
                hash.update(username.as_bytes());
                hash.update(b"\0");
                hash.update(password.expose().as_bytes());
            }
            Credentials::Bearer(token) => {
                hash.update(b"bearer\0");
                hash.update(token.expose().as_bytes());
            }
            Credentials::OAuth(_) => return None,
        }
        Some(hash.finalize().into())
    }

    pub(crate) fn has_password(&self) -> bool {
        matches!(self.credentials, Credentials::Password { .. })
    }

    /// The `Authorization` value for a request, if any.
    pub(crate) async fn authorization(
        &self,
        method: &str,
        uri: &str,
    ) -> Result<Option<String>, ProviderError> {
        if let Credentials::OAuth(source) = &self.credentials {
            let token = source.access_token().await?;
            let value = format!("Bearer {}", token.expose());
            if let Ok(mut last) = self.last_token.lock() {
                *last = Some(token);
            }
            return Ok(Some(value));
        }
        Ok(self.header(method, uri))
    }

    /// Learns from a 401; returns whether one more attempt with fresh credentials makes sense.
    pub(crate) async fn unauthorized(&self, challenge: Option<DigestChallenge>) -> bool {
        if let Credentials::OAuth(source) = &self.credentials {
            let token = self.last_token.lock().ok().and_then(|mut t| t.take());
            if let Some(token) = token {
                source.refused(&token).await;
                return true;
            }
            return false;
        }
        self.learn(challenge)
    }

    fn header(&self, method: &str, uri: &str) -> Option<String> {
        match &self.credentials {
            Credentials::None | Credentials::OAuth(_) => None,
            Credentials::Bearer(token) => Some(format!("Bearer {}", token.expose())),
            Credentials::Password { username, password } => {
                let mut digest = self.digest.lock().ok()?;
                if let Some((challenge, nc)) = digest.as_mut() {
                    *nc += 1;
                    let cnonce = hex::encode(rand::random::<[u8; 12]>());
                    return Some(challenge.authorization(
                        username,
                        password.expose(),
                        method,
                        uri,
                        *nc,
                        &cnonce,
                    ));
                }
                let pair = format!("{username}:{}", password.expose());
                Some(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                ))
            }
        }
    }

    /// Learns from a 401. Returns whether retrying with new credentials makes sense: a first
    /// Digest challenge, or a stale nonce. A second refusal of the same nonce is a wrong password.
    fn learn(&self, challenge: Option<DigestChallenge>) -> bool {
        let Some(challenge) = challenge else {
            return false;
        };
        if !self.has_password() {
            return false;
        }
        let Ok(mut digest) = self.digest.lock() else {
            return false;
        };
        let retry = match digest.as_ref() {
            None => true,
            Some((current, _)) => challenge.stale || current.nonce != challenge.nonce,
        };
        *digest = Some((challenge, 0));
        retry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc2617_md5_example() {
        let challenge = DigestChallenge::from_headers(
            ["Digest realm=\"testrealm@host.com\", qop=\"auth,auth-int\", nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", opaque=\"5ccc069c403ebaf9f0171e9517f40e41\""].into_iter(),
        )
        .unwrap();
        let header = challenge.authorization(
            "Mufasa",
            "Circle Of Life",
            "GET",
            "/dir/index.html",
            1,
            "0a4f113b",
        );
        assert!(
            header.contains("response=\"6629fae49393a05397450978507c4ef1\""),
            "{header}"
        );
        assert!(header.contains("opaque=\"5ccc069c403ebaf9f0171e9517f40e41\""));
        assert!(header.contains("nc=00000001"));
    }

    #[test]
    fn rfc7616_prefers_sha256_over_md5() {
        let headers = [
            "Digest realm=\"http-auth@example.org\", qop=\"auth, auth-int\", algorithm=MD5, nonce=\"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v\", opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\"",
            "Digest realm=\"http-auth@example.org\", qop=\"auth, auth-int\", algorithm=SHA-256, nonce=\"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v\", opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\"",
        ];
        let challenge = DigestChallenge::from_headers(headers.into_iter()).unwrap();
        let cnonce = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
        let header = challenge.authorization(
            "Mufasa",
            "Circle of Life",
            "GET",
            "/dir/index.html",
            1,
            cnonce,
        );
        assert!(
            header.contains("753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
            "{header}"
        );
        let md5 = DigestChallenge::from_headers(headers[..1].iter().copied()).unwrap();
        let header = md5.authorization(
            "Mufasa",
            "Circle of Life",
            "GET",
            "/dir/index.html",
            1,
            cnonce,
        );
        assert!(
            header.contains("8ca523f5e9506fed4657c9700eebdbec"),
            "{header}"
        );
    }

    #[test]
    fn basic_challenge_alone_is_not_digest_and_secrets_do_not_print() {
        assert!(DigestChallenge::from_headers(["Basic realm=\"x\""].into_iter()).is_none());
        let both = DigestChallenge::from_headers(
            ["Basic realm=\"x\", Digest realm=\"y\", nonce=\"n\""].into_iter(),
        );
        assert_eq!(both.map(|c| c.realm), Some("y".to_owned()));
        let creds = Credentials::Password {
            username: "u".into(),
            password: Secret::new("hunter2"),
        };
        assert!(!format!("{creds:?}").contains("hunter2"));
    }
}
