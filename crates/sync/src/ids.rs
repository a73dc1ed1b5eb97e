//! Identifiers the plan passes between the two sides. They are opaque here: the store and the providers
//! give them meaning.

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! opaque_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn new(value: impl Into<String>) -> Self {
                Self(value.into())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

opaque_id!(
    /// A local series id (the store's).
    LocalId
);
opaque_id!(
    /// The provider's id of an item (Graph event id, Google event id, CalDAV href).
    RemoteId
);
opaque_id!(
    /// The provider's version of an item (changeKey, etag, getetag), sent back as `If-Match`.
    RemoteVersion
);
opaque_id!(
    /// The iCalendar UID shared by every part of one series.
    Uid
);
