//! The sync engine: runs one sync of one link (a connection × remote calendar) end to end.
//!
//! 1. **Read** the local changes since the link's local change mark (the store's change stream) and the
//!    remote changes since its provider cursor, with the stored bases of every linked pair.
//! 2. **Plan** with [`calbridge_sync::plan`] (pure).
//! 3. **Execute** the plan series by series with conditional writes, recording each pair's new base and
//!    remote version only after that series' last action succeeded.
//! 4. **Commit** both cursors only when every action of the run committed.
//!
//! Every step is idempotent (creates use a key derived from the link and the series, bases are written
//! last), so a run killed at any point and started again converges without loss or duplicates.
//! The engine knows no HTTP server; the server's scheduler and API call [`sync_link`].

mod heartbeat;
mod held;
mod local;
mod options;
mod pairs;
mod resolve;
mod run;
mod time;

use calbridge_providers::ProviderError;
use calbridge_store::StoreError;

pub use heartbeat::{Heartbeat, beating};
/// For the API's conflict resolution, which reads and writes series the way the engine does.
pub use local::{Parsed, Storable, storable};
pub use options::{EngineConfig, SyncOptions};
pub use resolve::{Replaced, Resolve, ResolveFailure, Resolving, needs_provider, resolve_conflict};
pub use run::{LinkSync, RunError, RunReport, RunStatus, sync_link};

/// Why a run could not be carried out at all (a failing item is not an error: it is reported in
/// [`RunReport::errors`] and the rest of the run commits).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("provider: {0}")]
    Provider(#[from] ProviderError),
    /// The connection's sync options are unusable.
    #[error("sync options: {0}")]
    Options(String),
    /// A series (stored or received) cannot be read or written as an event.
    #[error("content: {0}")]
    Content(String),
}
