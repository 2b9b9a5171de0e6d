//! Wall-clock time (the host import `tessera.now_ms`).

/// Milliseconds since the Unix epoch, from the proxy's clock (on the host, plugin unit
/// tests read the system clock).
pub fn now_ms() -> i64 {
    crate::abi::host_now_ms()
}
