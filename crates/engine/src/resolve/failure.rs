//! Why a resolution was not applied, and the store's and the provider's errors as such answers.

use calbridge_providers::ProviderError;
use calbridge_store::StoreError;
use calbridge_sync::resolve::ResolveError;
use jiff::Timestamp;

use crate::EngineError;

/// Why a resolution was not applied. Nothing was written unless the variant says so.
#[derive(Debug, thiserror::Error)]
pub enum ResolveFailure {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("this conflict is already resolved")]
    AlreadyResolved,
    /// The option does not apply (or is not an option at all), or `merged` is missing or invalid.
    #[error("{0}")]
    Refused(#[from] ResolveError),
    /// A side changed again after the conflict was recorded (or refused a conditional write).
    #[error(
        "the {0} version changed again after this conflict was recorded; nothing was overwritten. Sync again and resolve the conflict it records"
    )]
    Changed(&'static str),
    /// The provider could not be reached or refused the request.
    #[error("the provider could not be reached: {0}")]
    Provider(ProviderError),
    /// Written, but reading back did not show what was written (the conflict stays open).
    #[error("read-back after the write differs: {0}")]
    ReadBack(String),
    #[error("{0}")]
    Engine(#[from] EngineError),
    /// The conflict's connection (or its link) was deleted: the remote side can no longer be read or
    /// written, so an option that needs it cannot be applied. Nothing was written.
    #[error(
        "the conflict's {what} was deleted, so its remote side can no longer be read or written and `{option}` cannot be applied; {still}"
    )]
    RemoteGone {
        what: &'static str,
        option: String,
        /// What can still be done.
        still: String,
    },
    /// Stopped by the test-only crash knob (`EngineConfig::crash_after_resolution_writes`).
    #[error("interrupted after {0} write(s)")]
    Interrupted(usize),
    /// Another decision (option, or `merged` body) than the resolution in progress on the conflict,
    /// which may still be running or is left for a sync to finish (see
    /// [`refuse_another_decision`](super::decision::refuse_another_decision)).
    /// Nothing was written.
    #[error(
        "a `{option}` resolution of this conflict, decided by {decided_by}, is in progress since {since}; send the same decision again to finish it, or wait: {then}"
    )]
    InProgress {
        option: String,
        decided_by: String,
        since: Timestamp,
        /// What happens to it, and when another decision is accepted.
        then: String,
    },
}

impl ResolveFailure {
    /// The stable code an API answers with.
    pub fn code(&self) -> &'static str {
        match self {
            ResolveFailure::Refused(ResolveError::NotApplicable { .. }) => "option_not_applicable",
            ResolveFailure::Refused(ResolveError::MergedMissing(_)) => "merged_required",
            ResolveFailure::Refused(ResolveError::MergedInvalid(_)) => "invalid_merged",
            ResolveFailure::Changed(_) => "conflict_changed",
            ResolveFailure::AlreadyResolved => "already_resolved",
            ResolveFailure::Provider(_) => "provider_unavailable",
            ResolveFailure::ReadBack(_) => "read_back_failed",
            ResolveFailure::RemoteGone { .. } => "connection_deleted",
            ResolveFailure::Interrupted(_) => "interrupted",
            ResolveFailure::InProgress { .. } => "resolution_in_progress",
            ResolveFailure::Store(StoreError::NotFound { .. }) => "not_found",
            ResolveFailure::Store(_) | ResolveFailure::Engine(_) => "internal",
        }
    }
}

pub(super) fn provider_error(e: ProviderError) -> ResolveFailure {
    match e {
        ProviderError::PreconditionFailed => ResolveFailure::Changed("remote"),
        other => ResolveFailure::Provider(other),
    }
}

pub(super) fn local_error(e: StoreError) -> ResolveFailure {
    match e {
        StoreError::PreconditionFailed { .. } => ResolveFailure::Changed("local"),
        other => ResolveFailure::Store(other),
    }
}

pub(super) fn content_error(e: impl std::fmt::Display) -> ResolveFailure {
    ResolveFailure::Refused(ResolveError::MergedInvalid(e.to_string()))
}

/// A conflict closed meanwhile (two admins, or a sync finishing an interrupted resolution).
pub(super) fn closed(e: StoreError) -> ResolveFailure {
    match e {
        StoreError::Conflict(_) => ResolveFailure::AlreadyResolved,
        other => ResolveFailure::Store(other),
    }
}
