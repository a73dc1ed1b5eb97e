//! The sync algorithm: pure, no I/O.
//!
//! - [`snapshot`]: a series reduced to field paths, the unit of comparison and merge.
//! - [`merge`]: field-level three-way merge.
//! - [`plan`]: from both sides' changes, the stored bases and the link's policy to actions and conflicts.
//! - [`series`]: model series → snapshot, and the merged series composed from two versions.
//! - [`overlap`]: time conflicts between busy occurrences of one owner.
//! - [`resolve`]: a recorded conflict and the option an admin chose → the writes on each side.

pub mod ids;
pub mod merge;
pub mod overlap;
pub mod plan;
pub mod resolve;
pub mod series;
pub mod snapshot;

pub use ids::{LocalId, RemoteId, RemoteVersion, Uid};
pub use merge::{Merge, three_way};
pub use plan::{
    Action, Conflict, ConflictKind, ConflictPolicy, Content, DeletionGuard, Direction, Listing,
    LocalChange, LocalSeries, Mapping, Plan, PlanInput, Policy, RemoteChange, RemoteChanges,
    ResolutionOption, Side, Suspect, plan,
};
pub use snapshot::{FieldPath, ItemState, Snapshot, Span, Window};
