//! Events: series stored as iCalendar, read and written as JSON or iCalendar, and the window query over
//! the occurrence index.

use utoipa_axum::router::OpenApiRouter;

use crate::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
}
