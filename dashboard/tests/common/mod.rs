//! What the dashboard's integration tests share: an embedded store in a temp dir, a
//! dashboard on it (in process, on a free port), HTTP calls, and `tessera admin` in process.

#![allow(dead_code)] // each test file uses its own part

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use serde_json::Value;
use tessera_dashboard::admin::{AdminArgs, AdminError, execute};
use tessera_dashboard::{DashboardArgs, DashboardHandle, start_with_store};
use tessera_topology::Store;

pub const TOKEN: &str = "test-token";

pub struct Env {
    _dir: tempfile::TempDir,
    pub store: Arc<dyn Store>,
    pub url: String,
}

pub async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
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

pub enum Body {
    None,
    Json(Value),
    /// A module upload (`application/wasm`).
    Bytes(Vec<u8>),
}

/// One HTTP call: status and JSON body.
pub async fn http(
    d: &DashboardHandle,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Body,
) -> (u16, Value) {
    let url = format!("http://{}{path}", d.addr());
    let token = token.map(String::from);
    let method = method.to_string();
    tokio::task::spawn_blocking(move || {
        let mut req = ureq::request(&method, &url).timeout(Duration::from_secs(30));
        if let Some(t) = token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        let result = match body {
            Body::None => req.call(),
            Body::Json(b) => req.send_json(b),
            Body::Bytes(b) => req.set("Content-Type", "application/wasm").send_bytes(&b),
        };
        let resp = match result {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{method} {url}: {e}"),
        };
        let status = resp.status();
        (status, resp.into_json::<Value>().unwrap())
    })
    .await
    .unwrap()
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
