//! Seeding a topology through the dashboard's REST API: calls with the admin token and a
//! JSON or module body, answered with the status and the JSON body.
//!
//! Seeding through the topology store stays with the tests that do it: the kit does not link
//! `tessera-topology` (it is a dev-dependency of that crate), so it cannot name its model.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;

/// The admin token the dashboard tests start their dashboards with.
pub const TOKEN: &str = "test-token";

/// The body of an [`api_call`].
pub enum Body {
    None,
    Json(Value),
    /// A module upload (`application/wasm`).
    Bytes(Vec<u8>),
}

/// One call to the dashboard at `addr` (on a blocking thread, so a dashboard on the test's
/// own runtime keeps serving): status and JSON body. `token` goes in `Authorization: Bearer`.
pub async fn api_call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Body,
) -> (u16, Value) {
    let url = format!("http://{addr}{path}");
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
