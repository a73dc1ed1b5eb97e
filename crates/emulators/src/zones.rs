//! Windows ↔ IANA zone names for Graph. The CLDR mapping belongs to `calbridge-model`; until it lands there
//! the emulator knows no Windows names and reports IANA names, which Graph also accepts [doc].

pub(crate) fn windows_to_iana(_windows: &str) -> Option<&'static str> {
    None
}

pub(crate) fn iana_to_windows(_iana: &str) -> Option<&'static str> {
    None
}
