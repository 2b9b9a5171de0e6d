//! The dashboard tests' glue to the dashboard's own types: an embedded store in a temp dir,
//! a dashboard on it (in process, on a free port), calls to it, and `tessera admin` in process.

use std::sync::Arc;

use clap::Parser;
use serde_json::Value;
use tessera_dashboard::admin::{AdminArgs, AdminError, execute};
use tessera_dashboard::{DashboardArgs, DashboardHandle, start_with_store};
use tessera_testkit as harness;
use tessera_topology::Store;

pub use harness::{Body, seed::TOKEN};

pub struct Env {
    _dir: harness::TempDir,
    pub store: Arc<dyn Store>,
    pub url: String,
}

pub async fn env() -> Env {
    let dir = harness::TempDir::new("dashboard-store");
    let url = format!("file://{}", dir.path().display());
    let store = tessera_topology::connect(&url).await.unwrap();
    Env {
        _dir: dir,
        store,
        url,
    }
}

pub fn args(env: &Env, product: &str, ttl: u64) -> DashboardArgs {
    DashboardArgs {
        coordinator: env.url.clone(),
        product: product.to_string(),
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_token: Some(TOKEN.to_string()),
        lock_ttl: ttl,
    }
}

pub async fn dashboard(env: &Env, product: &str) -> DashboardHandle {
    start_with_store(args(env, product, 5), env.store.clone())
        .await
        .unwrap()
}

/// One HTTP call to `d`: status and JSON body.
pub async fn http(
    d: &DashboardHandle,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Body,
) -> (u16, Value) {
    harness::api_call(d.addr(), method, path, token, body).await
}

/// `tessera admin ARGV...` parsed as the binary would.
pub fn admin_cli<S: AsRef<str>>(argv: &[S]) -> Result<String, AdminError> {
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: AdminArgs,
    }
    let argv = std::iter::once("admin").chain(argv.iter().map(AsRef::as_ref));
    execute(&Cli::try_parse_from(argv).unwrap().args)
}
