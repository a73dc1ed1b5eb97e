//! Secrets at rest: a 32-byte master key and XChaCha20-Poly1305 (192-bit random nonces, so random nonces are
//! safe for any realistic number of messages under one key).
//!
//! A sealed value is `version (1) ‖ key id (8) ‖ nonce (24) ‖ ciphertext+tag`. The key id names the master
//! key that sealed it (so a wrong key is reported as such, and a rotation can tell old from new), and the
//! header plus the [`Purpose`] are authenticated as associated data, so a value cannot be moved to another
//! column or have its header altered without failing to open.

use std::fmt;
use std::io::Write;
use std::path::Path;

use base64::Engine;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};

const FORMAT_VERSION: u8 = 1;
const KEY_ID_LEN: usize = 8;
const NONCE_LEN: usize = 24;
const HEADER_LEN: usize = 1 + KEY_ID_LEN + NONCE_LEN;
const TAG_LEN: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("invalid master key: {0}")]
    InvalidKey(String),
    #[error("secret was sealed with master key {sealed_with}, but the loaded key is {loaded}")]
    WrongKey { sealed_with: String, loaded: String },
    #[error("sealed secret failed authentication (tampered, truncated or moved between columns)")]
    Tampered,
    #[error("sealed secret is malformed: {0}")]
    Malformed(&'static str),
    #[error("master key file {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// What a sealed value is for; authenticated with it so values cannot be swapped between columns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// `connections.credentials`: provider passwords, OAuth tokens.
    ConnectionCredentials,
    /// `webhook_subscriptions.secret`: HMAC signing secrets.
    WebhookSecret,
    /// `oauth_states.verifier`: the PKCE verifier of a pending OAuth sign-in.
    OAuthVerifier,
}

impl Purpose {
    fn label(self) -> &'static [u8] {
        match self {
            Purpose::ConnectionCredentials => b"calbridge/connection-credentials",
            Purpose::WebhookSecret => b"calbridge/webhook-secret",
            Purpose::OAuthVerifier => b"calbridge/oauth-verifier",
        }
    }
}

/// The key that seals every secret at rest. `Debug` shows only its id.
#[derive(Clone)]
pub struct MasterKey {
    bytes: [u8; 32],
    id: [u8; KEY_ID_LEN],
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKey")
            .field("id", &self.key_id())
            .field("bytes", &"<redacted>")
            .finish()
    }
}

impl PartialEq for MasterKey {
    fn eq(&self, other: &Self) -> bool {
        use subtle_eq::ct_eq;
        ct_eq(&self.bytes, &other.bytes)
    }
}

mod subtle_eq {
    /// Constant-time comparison, so key equality checks do not leak through timing.
    pub fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
        a.iter()
            .zip(b.iter())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
    }
}

impl MasterKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        let digest = Sha256::new()
            .chain_update(b"calbridge master key id\0")
            .chain_update(bytes)
            .finalize();
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&digest[..KEY_ID_LEN]);
        Self { bytes, id }
    }

    /// A fresh random key from the operating system's generator.
    pub fn generate() -> Self {
        let key = XChaCha20Poly1305::generate_key(&mut OsRng);
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(&key);
        Self::from_bytes(bytes)
    }

    /// Accepts 64 hex digits or base64 (standard or URL-safe, padded or not) of exactly 32 bytes.
    pub fn parse(text: &str) -> Result<Self, CryptoError> {
        let text = text.trim();
        let decoded = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(text).ok()
        } else {
            let engines = [
                &base64::engine::general_purpose::STANDARD,
                &base64::engine::general_purpose::STANDARD_NO_PAD,
                &base64::engine::general_purpose::URL_SAFE,
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            ];
            engines.iter().find_map(|engine| engine.decode(text).ok())
        };
        let decoded = decoded.ok_or_else(|| {
            CryptoError::InvalidKey("expected 64 hex digits or base64 of 32 bytes".into())
        })?;
        let bytes: [u8; 32] = decoded.try_into().map_err(|v: Vec<u8>| {
            CryptoError::InvalidKey(format!("expected 32 bytes, got {}", v.len()))
        })?;
        Ok(Self::from_bytes(bytes))
    }

    /// Reads a key file written by [`MasterKey::create_file`] (or any file holding the hex/base64 text).
    pub fn load_file(path: &Path) -> Result<Self, CryptoError> {
        let text = std::fs::read_to_string(path).map_err(|source| io_error(path, source))?;
        Self::parse(&text)
    }

    /// Generates a key and writes it as hex to a new file readable by its owner only (mode 0600).
    /// Refuses to overwrite an existing file: losing a master key loses every secret sealed with it.
    pub fn create_file(path: &Path) -> Result<Self, CryptoError> {
        let key = Self::generate();
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options
            .open(path)
            .map_err(|source| io_error(path, source))?;
        file.write_all(format!("{}\n", hex::encode(key.bytes)).as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|source| io_error(path, source))?;
        Ok(key)
    }

    /// The embedded default's first start: load the key file, or create it when absent.
    /// Returns the key and whether it was created now.
    pub fn load_or_create_file(path: &Path) -> Result<(Self, bool), CryptoError> {
        match Self::create_file(path) {
            Ok(key) => Ok((key, true)),
            Err(CryptoError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::AlreadyExists =>
            {
                Ok((Self::load_file(path)?, false))
            }
            Err(err) => Err(err),
        }
    }

    /// A short public fingerprint of the key (hex of 8 bytes), fit for logs.
    pub fn key_id(&self) -> String {
        hex::encode(self.id)
    }

    pub fn seal(&self, purpose: Purpose, plaintext: &[u8]) -> Result<Sealed, CryptoError> {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let mut out = Vec::with_capacity(HEADER_LEN + plaintext.len() + TAG_LEN);
        out.push(FORMAT_VERSION);
        out.extend_from_slice(&self.id);
        out.extend_from_slice(&nonce);
        let aad = associated_data(purpose, &out);
        let ciphertext = self
            .cipher()
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .map_err(|_| CryptoError::Malformed("encryption failed"))?;
        out.extend_from_slice(&ciphertext);
        Ok(Sealed(out))
    }

    pub fn open(&self, purpose: Purpose, sealed: &Sealed) -> Result<Vec<u8>, CryptoError> {
        let bytes = &sealed.0;
        if bytes.len() < HEADER_LEN + TAG_LEN {
            return Err(CryptoError::Malformed("too short"));
        }
        if bytes[0] != FORMAT_VERSION {
            return Err(CryptoError::Malformed("unknown format version"));
        }
        let key_id = &bytes[1..1 + KEY_ID_LEN];
        if key_id != self.id {
            return Err(CryptoError::WrongKey {
                sealed_with: hex::encode(key_id),
                loaded: self.key_id(),
            });
        }
        let nonce = XNonce::from_slice(&bytes[1 + KEY_ID_LEN..HEADER_LEN]);
        let aad = associated_data(purpose, &bytes[..HEADER_LEN]);
        self.cipher()
            .decrypt(
                nonce,
                Payload {
                    msg: &bytes[HEADER_LEN..],
                    aad: &aad,
                },
            )
            .map_err(|_| CryptoError::Tampered)
    }

    /// Whether `sealed` carries this key's id (it may still fail to open if tampered).
    pub fn sealed_this(&self, sealed: &Sealed) -> bool {
        sealed.key_id_bytes() == Some(&self.id[..])
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new((&self.bytes).into())
    }
}

fn associated_data(purpose: Purpose, header: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(purpose.label().len() + 1 + header.len());
    aad.extend_from_slice(purpose.label());
    aad.push(0);
    aad.extend_from_slice(header);
    aad
}

fn io_error(path: &Path, source: std::io::Error) -> CryptoError {
    CryptoError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Ciphertext as stored. `Debug` shows its size and key id, never the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed(Vec<u8>);

impl Sealed {
    /// Wraps bytes read from storage; they are checked when opened.
    pub fn from_stored(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    fn key_id_bytes(&self) -> Option<&[u8]> {
        self.0.get(1..1 + KEY_ID_LEN)
    }

    /// The id of the master key this was sealed with, if the header is present.
    pub fn key_id(&self) -> Option<String> {
        self.key_id_bytes().map(hex::encode)
    }
}

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealed")
            .field("key_id", &self.key_id())
            .field("len", &self.0.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_purpose_binding() {
        let key = MasterKey::generate();
        let sealed = key
            .seal(Purpose::ConnectionCredentials, b"hunter2")
            .unwrap();
        assert_eq!(
            key.open(Purpose::ConnectionCredentials, &sealed).unwrap(),
            b"hunter2"
        );
        assert!(matches!(
            key.open(Purpose::WebhookSecret, &sealed),
            Err(CryptoError::Tampered)
        ));
        let again = key
            .seal(Purpose::ConnectionCredentials, b"hunter2")
            .unwrap();
        assert_ne!(sealed, again, "nonces must differ");
    }

    #[test]
    fn tampering_and_wrong_key_are_refused() {
        let key = MasterKey::generate();
        let mut bytes = key
            .seal(Purpose::WebhookSecret, b"s3cret")
            .unwrap()
            .as_bytes()
            .to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(matches!(
            key.open(Purpose::WebhookSecret, &Sealed::from_stored(bytes)),
            Err(CryptoError::Tampered)
        ));
        let sealed = key.seal(Purpose::WebhookSecret, b"s3cret").unwrap();
        let other = MasterKey::generate();
        assert!(matches!(
            other.open(Purpose::WebhookSecret, &sealed),
            Err(CryptoError::WrongKey { .. })
        ));
        assert!(matches!(
            key.open(Purpose::WebhookSecret, &Sealed::from_stored(vec![1, 2, 3])),
            Err(CryptoError::Malformed(_))
        ));
    }

    #[test]
    fn parse_hex_and_base64_and_reject_bad_lengths() {
        let bytes = [7u8; 32];
        let from_hex = MasterKey::parse(&hex::encode(bytes)).unwrap();
        let from_b64 =
            MasterKey::parse(&base64::engine::general_purpose::STANDARD.encode(bytes)).unwrap();
        assert_eq!(from_hex, from_b64);
        assert_eq!(from_hex.key_id(), from_b64.key_id());
        assert!(MasterKey::parse("abcd").is_err());
        assert!(MasterKey::parse(&hex::encode([1u8; 31])).is_err());
    }

    #[test]
    fn debug_is_redacted() {
        let key = MasterKey::from_bytes([0xAB; 32]);
        let shown = format!("{key:?}");
        assert!(!shown.contains("abab"), "{shown}");
        assert!(!shown.contains("171"), "{shown}");
        let sealed = key
            .seal(Purpose::ConnectionCredentials, b"password")
            .unwrap();
        assert!(!format!("{sealed:?}").contains("password"));
    }

    #[test]
    fn key_file_is_created_0600_and_never_overwritten() {
        let dir = std::env::temp_dir().join(format!("calbridge-key-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("master.key");
        let (created, fresh) = MasterKey::load_or_create_file(&path).unwrap();
        assert!(fresh);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let (loaded, fresh) = MasterKey::load_or_create_file(&path).unwrap();
        assert!(!fresh);
        assert_eq!(created, loaded);
        assert!(MasterKey::create_file(&path).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
