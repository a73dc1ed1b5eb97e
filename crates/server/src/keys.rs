//! API key material and scopes. A key is `cbk_<id>_<secret>`: the id is public (it names the key in
//! listings, logs and the audit log), the secret is 256 random bits of which only the SHA-256 is stored.
//! A plain hash is enough for secrets this random (no dictionary to attack), and it keeps checking a key
//! to one indexed lookup plus a constant-time comparison.

use std::collections::BTreeSet;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

const PREFIX: &str = "cbk_";
const ID_BYTES: usize = 8;
const SECRET_BYTES: usize = 32;

/// What a key may do. Scopes are independent: `admin` manages keys and reads the audit log, it does not
/// imply the others, so that an operator's key can be made without access to calendar data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, utoipa::ToSchema)]
pub enum Scope {
    EventsRead,
    EventsWrite,
    ConnectionsManage,
    ConflictsResolve,
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 5] = [
        Scope::EventsRead,
        Scope::EventsWrite,
        Scope::ConnectionsManage,
        Scope::ConflictsResolve,
        Scope::Admin,
    ];

    pub fn parse(text: &str) -> Result<Self, ScopeError> {
        Ok(match text.trim() {
            "events:read" => Scope::EventsRead,
            "events:write" => Scope::EventsWrite,
            "connections:manage" => Scope::ConnectionsManage,
            "conflicts:resolve" => Scope::ConflictsResolve,
            "admin" => Scope::Admin,
            other => return Err(ScopeError(other.to_owned())),
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::EventsRead => "events:read",
            Scope::EventsWrite => "events:write",
            Scope::ConnectionsManage => "connections:manage",
            Scope::ConflictsResolve => "conflicts:resolve",
            Scope::Admin => "admin",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown scope `{0}`; scopes are events:read, events:write, connections:manage, conflicts:resolve, admin"
)]
pub struct ScopeError(pub String);

impl Serialize for Scope {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Scope {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Scope::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Parse a comma- or space-separated list of scopes (`events:read,events:write`).
pub fn parse_scopes(text: &str) -> Result<BTreeSet<Scope>, ScopeError> {
    text.split([',', ' '])
        .filter(|s| !s.trim().is_empty())
        .map(Scope::parse)
        .collect()
}

/// The public id of a key, e.g. `k3x9...`; safe to log.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KeyId(String);

impl KeyId {
    pub fn parse(text: &str) -> Result<Self, KeyFormatError> {
        let ok = text.len() == 16
            && text
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
        if ok {
            Ok(Self(text.to_owned()))
        } else {
            Err(KeyFormatError)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed API key; a key looks like `cbk_<16 hex>_<43 base64url>`")]
pub struct KeyFormatError;

/// A freshly made key: the full token is shown once and then forgotten.
pub struct NewKey {
    pub id: KeyId,
    pub token: String,
    pub secret_hash: String,
}

impl fmt::Debug for NewKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl NewKey {
    pub fn generate() -> Self {
        let mut rng = rand::rng();
        let mut id = [0u8; ID_BYTES];
        let mut secret = [0u8; SECRET_BYTES];
        rng.fill_bytes(&mut id);
        rng.fill_bytes(&mut secret);
        let id = KeyId(hex::encode(id));
        let secret = URL_SAFE_NO_PAD.encode(secret);
        let token = format!("{PREFIX}{id}_{secret}");
        let secret_hash = hash_secret(&secret);
        Self {
            id,
            token,
            secret_hash,
        }
    }
}

/// A key as presented by a client, split into its public id and its secret.
pub struct PresentedKey {
    pub id: KeyId,
    secret: String,
}

impl fmt::Debug for PresentedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PresentedKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl PresentedKey {
    pub fn parse(token: &str) -> Result<Self, KeyFormatError> {
        let rest = token.strip_prefix(PREFIX).ok_or(KeyFormatError)?;
        let (id, secret) = rest.split_once('_').ok_or(KeyFormatError)?;
        let id = KeyId::parse(id)?;
        if secret.len() != 43
            || !secret
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(KeyFormatError);
        }
        Ok(Self {
            id,
            secret: secret.to_owned(),
        })
    }

    /// Whether this key's secret hashes to `stored_hash`, compared in constant time.
    pub fn matches(&self, stored_hash: &str) -> bool {
        let presented = hash_secret(&self.secret);
        presented.as_bytes().ct_eq(stored_hash.as_bytes()).into()
    }
}

fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_and_match_only_their_hash() {
        let a = NewKey::generate();
        let b = NewKey::generate();
        assert_ne!(a.token, b.token);
        let presented = PresentedKey::parse(&a.token).unwrap();
        assert_eq!(presented.id, a.id);
        assert!(presented.matches(&a.secret_hash));
        assert!(!presented.matches(&b.secret_hash));
        assert!(!a.secret_hash.contains(&a.token[21..]));
        assert!(!format!("{a:?}").contains(&a.token[21..]));
    }

    #[test]
    fn malformed_keys_are_refused() {
        let good = NewKey::generate().token;
        for bad in [
            "",
            "cbk_",
            "Bearer x",
            &good[..good.len() - 1],
            &good.replace("cbk_", "xyz_"),
            &format!("{good}x"),
            "cbk_0123456789abcdef_!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!",
        ] {
            assert!(PresentedKey::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn scopes_round_trip_and_reject_unknown() {
        for scope in Scope::ALL {
            assert_eq!(Scope::parse(scope.as_str()).unwrap(), scope);
        }
        assert_eq!(
            parse_scopes("events:read, admin")
                .unwrap()
                .into_iter()
                .collect::<Vec<_>>(),
            vec![Scope::EventsRead, Scope::Admin]
        );
        let err = Scope::parse("events:delete").unwrap_err().to_string();
        assert!(err.contains("events:delete") && err.contains("events:write"));
    }
}
