//! Windows ↔ IANA zone names for Graph, from `calbridge-model`'s CLDR table.

pub(crate) fn windows_to_iana(windows: &str) -> Option<&'static str> {
    calbridge_model::tz::windows_to_iana(windows)
}

pub(crate) fn iana_to_windows(iana: &str) -> Option<&'static str> {
    calbridge_model::tz::iana_to_windows(iana)
}
