//! In-process emulators of Microsoft Graph (Outlook calendar, v1.0 + the identity platform's OAuth
//! endpoints) and Google Calendar API v3 (+ OAuth), faithful to the documented protocols, with a control API
//! for seeding, acting as a user, fault injection and counters.
//!
//! ```no_run
//! # async fn demo() -> Result<(), calbridge_emulators::EmulatorError> {
//! use calbridge_emulators::{Emulator, EmulatorConfig, Flavor, SeedSpec};
//! let graph = Emulator::start(Flavor::Microsoft, EmulatorConfig::default()).await?;
//! graph.seed(&SeedSpec { events_per_calendar: 100, ..SeedSpec::default() }).await?;
//! let token = graph.token(None)?;
//! println!("{}/v1.0/me/calendars with Bearer {token}", graph.base_url());
//! # Ok(()) }
//! ```

mod control;
mod cursor;
mod google;
mod graph;
mod notify;
mod oauth;
mod series;
mod server;
mod store;
mod zones;

pub use control::{Action, Counters, SeedSpec};
pub use oauth::pkce_challenge;
pub use server::{
    Emulator, EmulatorConfig, EmulatorError, Fault, FaultRule, FaultScope, Flavor, UserSpec,
};
