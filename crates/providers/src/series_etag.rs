//! The version of a Graph or Google series (see docs/architecture/providers.md, "Graph and Google
//! connectors"): the master's etag, then ` ~x:` and a digest of its exceptions' versions, so an
//! edited occurrence changes the version of the series while `If-Match` still sends only the
//! master's part.

use sha2::{Digest, Sha256};

use crate::types::Etag;

const SEPARATOR: &str = " ~x:";

/// The master's part of a series version: what `If-Match` sends.
pub(crate) fn master(version: &Etag) -> &str {
    version
        .as_str()
        .split(SEPARATOR)
        .next()
        .unwrap_or(version.as_str())
}

/// The version of a series whose master has `master_etag` and whose exceptions' versions were fed
/// to `exceptions`.
pub(crate) fn with_exceptions(master_etag: &str, exceptions: Sha256) -> String {
    format!(
        "{master_etag}{SEPARATOR}{}",
        &hex::encode(exceptions.finalize())[..16]
    )
}

/// Whether a version is a series' (carries the exceptions' digest).
pub(crate) fn is_series(version: &Etag) -> bool {
    version.as_str().contains(SEPARATOR)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_series_version_sends_its_master_part_and_changes_with_its_exceptions() {
        let digest = |exception: &str| {
            let mut h = Sha256::new();
            h.update(exception.as_bytes());
            h
        };
        let one = Etag::parse(with_exceptions("W/\"m1\"", digest("a"))).unwrap();
        let other = Etag::parse(with_exceptions("W/\"m1\"", digest("b"))).unwrap();
        assert_ne!(one, other);
        assert!(is_series(&one));
        assert_eq!(master(&one), "W/\"m1\"");
        let single = Etag::parse("W/\"s1\"").unwrap();
        assert!(!is_series(&single));
        assert_eq!(master(&single), "W/\"s1\"");
    }
}
