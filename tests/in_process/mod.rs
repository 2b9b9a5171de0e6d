//! A dashboard started in the test's own process, on a runtime the test keeps: for tests
//! that drive its HTTP API (and pages) without a `tessera dashboard` process.

use tessera_dashboard::{DashboardArgs, DashboardHandle};
use tessera_testkit::free_addr;

/// A dashboard over the store at `coordinator` for `product`, writes allowed with `token`,
/// listening on a free port; the runtime it runs on comes with it (keep both).
pub fn dashboard(
    coordinator: &str,
    product: &str,
    token: &str,
) -> (tokio::runtime::Runtime, DashboardHandle) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime for the dashboard");
    let dashboard = rt
        .block_on(tessera_dashboard::start(DashboardArgs {
            coordinator: coordinator.to_string(),
            product: product.to_string(),
            listen: free_addr(),
            admin_token: Some(token.to_string()),
            lock_ttl: 10,
        }))
        .expect("the dashboard starts");
    (rt, dashboard)
}
