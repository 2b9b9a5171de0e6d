//! Write to the proxy's log (the host import `tessera.log`).
//!
//! Messages go to the proxy's log at the given level, tagged by the host with the plugin.
//! On the host (plugin unit tests) they go to standard error. Logging costs a call into the
//! host: keep it off the per-command path except for real events.

/// Log levels of the `tessera.log` import.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum Level {
    /// Level 0.
    Error = 0,
    /// Level 1.
    Warn = 1,
    /// Level 2.
    Info = 2,
    /// Level 3.
    Debug = 3,
}

/// Logs `msg` at `level`.
pub fn log(level: Level, msg: &str) {
    crate::abi::host_log(level as i32, msg);
}

/// Logs `msg` as an error.
pub fn error(msg: &str) {
    log(Level::Error, msg);
}

/// Logs `msg` as a warning.
pub fn warn(msg: &str) {
    log(Level::Warn, msg);
}

/// Logs `msg` as information.
pub fn info(msg: &str) {
    log(Level::Info, msg);
}

/// Logs `msg` for debugging.
pub fn debug(msg: &str) {
    log(Level::Debug, msg);
}
