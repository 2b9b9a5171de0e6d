//! Tessera's dashboard: the single writer of one product's topology in the store (etcd or
//! the embedded file store), its REST API, and the `tessera admin` CLI that calls it.
//!
//! - [`server`]: start and stop ([`run_dashboard`], [`start`], [`DashboardHandle`]).
//! - [`lock`]: the lease-backed single-writer lock; a dead dashboard's lock expires by itself.
//! - [`service`]: consistent snapshots of the topology, and every change as one transaction
//!   guarded by the revisions of what it read (and by the lock).
//! - [`migrate`]: online slot migration: the queue of steps in the store, the barrier every
//!   proxy passes, the key mover (SCAN + `MIGRATE ... KEYS`).
//! - [`plugins`]: the WebAssembly plugin chain and its modules, each change checked by
//!   loading it as a proxy would.
//! - [`api`]: the warp REST API (routes in `docs/dashboard.md`); [`view`]: its JSON shapes;
//!   [`probe`]: each server asked directly (`GET /api/servers`); [`plugin_stats`]: each
//!   proxy asked for its plugin counters, summed (`GET /api/plugins/stats`).
//! - [`ui`]: the web admin at `/` (HTML, CSS and JavaScript built into the binary).
//! - [`error`]: the one error type, turned into `{"error": ...}` responses in one place.
//! - [`admin`]: `tessera admin`, a blocking HTTP client printing tables or JSON.

#![forbid(unsafe_code)]

pub mod admin;
pub mod api;
pub mod error;
pub mod lock;
pub mod migrate;
pub mod plugin_stats;
pub mod plugins;
pub mod probe;
pub mod server;
pub mod service;
pub mod ui;
pub mod view;

pub use admin::{AdminArgs, run_admin};
pub use error::DashboardError;
pub use server::{DashboardArgs, DashboardHandle, run_dashboard, start, start_with_store};

/// `n` random bytes as hex (tokens).
pub(crate) fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes).expect("the OS random source works");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Unix seconds as `YYYY-MM-DDTHH:MM:SSZ` (UTC).
pub fn fmt_unix_time(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn unix_time() {
        assert_eq!(super::fmt_unix_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::fmt_unix_time(1_709_251_199), "2024-02-29T23:59:59Z");
        assert_eq!(super::fmt_unix_time(951_782_400), "2000-02-29T00:00:00Z");
    }
}
