//! The REST API: one warp filter takes every request and [`dispatch`] routes it by method and
//! path; handlers answer JSON or a [`DashboardError`], turned into a response in one place.
//!
//! Mutating calls need `Authorization: Bearer <admin token>`; reads are open, with secrets
//! masked (the plugin configs in full need the token: `GET /api/plugins?full=1`). A request
//! whose `Host` is not the dashboard's address is refused first (421). The body is read only
//! after the route and the token are checked, and only up to the route's limit.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use futures_util::{Stream, StreamExt, TryStreamExt};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tessera_topology::model::slot_runs;
use warp::Filter;
use warp::http::{Method, StatusCode};

use crate::error::DashboardError;
use crate::migrate::QueueOptions;
use crate::plugins::{ChainUpdate, MAX_CHAIN_BODY, MAX_MODULE, masked_chain};
use crate::service::{ProductUpdate, Service};

/// JSON bodies larger than this are refused (413), except where a route says otherwise.
const MAX_BODY: usize = 64 * 1024;
/// Past its limit, a body is read on (and dropped) up to this much, so the client, which
/// sends it all before it reads the answer, gets the 413; beyond, the connection is closed.
const MAX_DRAIN: usize = 64 << 20;

/// What the handlers share.
pub struct AppState {
    pub service: Service,
    pub admin_token: String,
    /// The address the API is bound to (set before anything is served).
    pub listen: OnceLock<SocketAddr>,
    /// The slot migrator's progress and wake-up (its task is started with the server).
    pub migrator: crate::migrate::Migrator,
}

/// One request, as the router sees it.
struct Request {
    method: Method,
    path: String,
    query: HashMap<String, String>,
    host: Option<String>,
    authorization: Option<String>,
    body: Body,
}

/// The request body, not read yet.
type Body = Pin<Box<dyn Stream<Item = Result<Bytes, warp::Error>> + Send>>;
type Bytes = warp::hyper::body::Bytes;

fn boxed<S, B>(stream: S) -> Body
where
    S: Stream<Item = Result<B, warp::Error>> + Send + 'static,
    B: warp::hyper::body::Buf,
{
    Box::pin(stream.map_ok(|mut buf| buf.copy_to_bytes(buf.remaining())))
}

/// The filter serving the whole API; it never rejects: every answer is JSON.
pub fn routes(
    state: Arc<AppState>,
) -> impl Filter<Extract = (impl warp::Reply,), Error = Infallible> + Clone + Send + Sync + 'static
{
    // The web UI's own files (`GET /`, `/ui/...`); every other request is the API's.
    let ui = crate::ui::routes(state.clone());
    let query = warp::query::raw().or(warp::any().map(String::new)).unify();
    let api = warp::method()
        .and(warp::path::full())
        .and(query)
        // The `Host` header, or the authority of the request's target.
        .and(
            warp::host::optional().map(|a: Option<warp::host::Authority>| a.map(|a| a.to_string())),
        )
        .and(warp::header::optional::<String>("authorization"))
        .and(warp::body::stream())
        .then(
            move |method, path: warp::path::FullPath, query: String, host, authorization, body| {
                let state = state.clone();
                async move {
                    let body = boxed(body);
                    let request = Request {
                        method,
                        path: path.as_str().to_string(),
                        query: parse_query(&query),
                        host,
                        authorization,
                        body,
                    };
                    match dispatch(&state, request).await {
                        Ok((status, value)) => {
                            use warp::Reply;
                            warp::reply::with_status(warp::reply::json(&value), status)
                                .into_response()
                        }
                        Err(e) => e.into_response(),
                    }
                }
            },
        )
        .recover(|rejection: warp::Rejection| async move {
            // Only reading the body or a header can fail before `dispatch`.
            let message = format!("unreadable request: {rejection:?}");
            Ok::<_, Infallible>(DashboardError::BadRequest(message).into_response())
        });
    ui.or(api)
}

type Answer = Result<(StatusCode, Value), DashboardError>;

fn ok(value: impl serde::Serialize) -> Answer {
    Ok((StatusCode::OK, json!(value)))
}

/// Routes one request. Order of checks: host (421), route (404/405), token (401), body
/// (400), then the topology itself (404/409).
async fn dispatch(state: &AppState, mut req: Request) -> Answer {
    if let Some(&listen) = state.listen.get() {
        tessera_topology::http::check_host(req.host.as_deref(), listen)?;
    }
    let segments: Vec<String> = req
        .path
        .trim_matches('/')
        .split('/')
        .map(percent_decode)
        .collect::<Result<_, _>>()?;
    let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
    let svc = &state.service;
    let m = &req.method;
    let allowed: &[Method] = match segs.as_slice() {
        ["api", "health"] | ["api", "topology"] | ["api", "slots"] | ["api", "proxies"] => {
            &[Method::GET]
        }
        ["api", "servers"] => &[Method::GET],
        ["api", "product"] => &[Method::GET, Method::PUT],
        ["api", "groups"] => &[Method::GET, Method::POST],
        ["api", "groups", _] | ["api", "groups", _, "servers", _] => &[Method::DELETE],
        ["api", "groups", _, "servers"] | ["api", "slots", "assign"] => &[Method::POST],
        ["api", "plugins"] => &[Method::GET, Method::PUT],
        ["api", "plugins", "stats"] => &[Method::GET],
        ["api", "plugins", "modules"] => &[Method::POST],
        ["api", "plugins", "modules", _] => &[Method::DELETE],
        ["api", "migrations"] => &[Method::GET],
        ["api", "slots", "migrate"] | ["api", "migrations", "cancel"] | ["api", "rebalance"] => {
            &[Method::POST]
        }
        _ => {
            return Err(DashboardError::NotFound(format!(
                "no route {} {}",
                req.method, req.path
            )));
        }
    };
    if !allowed.contains(m) {
        return Err(DashboardError::MethodNotAllowed {
            method: m.to_string(),
            path: req.path.clone(),
        });
    }
    if *m != Method::GET {
        check_token(state, req.authorization.as_deref())?;
    }
    match segs.as_slice() {
        ["api", "health"] => {
            let snap = svc.snapshot().await?;
            if let Some(reason) = svc.lock_problem() {
                return Err(DashboardError::LockLost(reason));
            }
            ok(json!({
                "ok": true,
                "product": svc.product(),
                "store": svc.store().endpoint(),
                "revision": snap.revision(),
            }))
        }
        ["api", "topology"] => ok(svc.snapshot().await?.topology_view(svc.product())),
        ["api", "product"] if *m == Method::GET => {
            let snap = svc.snapshot().await?;
            ok(json!({ "revision": snap.revision(), "product": snap.product_view(svc.product()) }))
        }
        ["api", "product"] => {
            let update: ProductUpdate = body(&mut req.body, MAX_BODY).await?;
            let (revision, product) = svc.update_product(update).await?;
            let product = crate::view::ProductView::from(&product);
            ok(json!({ "revision": revision, "product": product }))
        }
        ["api", "groups"] if *m == Method::GET => {
            let snap = svc.snapshot().await?;
            ok(json!({ "revision": snap.revision(), "groups": snap.group_views() }))
        }
        ["api", "groups"] => {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct NewGroup {
                id: u32,
            }
            let NewGroup { id } = body(&mut req.body, MAX_BODY).await?;
            let (revision, group) = svc.add_group(id).await?;
            Ok((
                StatusCode::CREATED,
                json!({ "revision": revision, "group": group }),
            ))
        }
        ["api", "groups", id] => {
            let revision = svc.remove_group(group_id(id)?).await?;
            ok(json!({ "revision": revision }))
        }
        ["api", "groups", id, "servers"] => {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct NewServer {
                addr: String,
            }
            let id = group_id(id)?;
            let NewServer { addr } = body(&mut req.body, MAX_BODY).await?;
            let (revision, group) = svc.add_server(id, &addr).await?;
            Ok((
                StatusCode::CREATED,
                json!({ "revision": revision, "group": group }),
            ))
        }
        ["api", "groups", id, "servers", addr] => {
            let (revision, group) = svc.remove_server(group_id(id)?, addr).await?;
            ok(json!({ "revision": revision, "group": group }))
        }
        ["api", "slots"] => {
            let snap = svc.snapshot().await?;
            if flag(&req.query, "full") {
                ok(json!({ "revision": snap.revision(), "slots": snap.slot_states() }))
            } else {
                let ranges = slot_runs(&snap.slot_states());
                ok(json!({ "revision": snap.revision(), "slots": ranges }))
            }
        }
        ["api", "slots", "assign"] => {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Assign {
                range: String,
                #[serde(default, deserialize_with = "present")]
                group: Option<Option<u32>>,
                #[serde(default)]
                force: bool,
            }
            let Assign {
                range,
                group,
                force,
            } = body(&mut req.body, MAX_BODY).await?;
            let Some(group) = group else {
                return Err(DashboardError::BadRequest(
                    "missing field `group`: a group id, or null or 0 to set the range offline"
                        .to_string(),
                ));
            };
            let (revision, (changed, slots)) = svc.assign_slots(&range, group, force).await?;
            ok(json!({
                "revision": revision,
                "changed": changed,
                "slots": slot_runs(&slots),
            }))
        }
        ["api", "proxies"] => {
            let snap = svc.snapshot().await?;
            ok(json!({ "revision": snap.revision(), "proxies": snap.proxy_views() }))
        }
        ["api", "servers"] => {
            let snap = svc.snapshot().await?;
            let servers = crate::probe::probe_servers(&snap).await;
            ok(json!({ "revision": snap.revision(), "servers": servers }))
        }
        ["api", "plugins"] if *m == Method::GET => {
            let full = flag(&req.query, "full");
            if full {
                check_token(state, req.authorization.as_deref())?;
            }
            ok(svc.snapshot().await?.plugins_view(full))
        }
        ["api", "plugins"] => {
            let update: ChainUpdate = body(&mut req.body, MAX_CHAIN_BODY).await?;
            let (revision, chain) = svc.set_chain(update).await?;
            ok(json!({ "revision": revision, "chain": masked_chain(&chain) }))
        }
        ["api", "plugins", "stats"] => {
            let snap = svc.snapshot().await?;
            ok(crate::plugin_stats::plugin_stats(&snap).await)
        }
        ["api", "plugins", "modules"] => {
            let module = read_body(&mut req.body, MAX_MODULE).await?;
            let (revision, uploaded) = svc.upload_module(module).await?;
            ok(json!({
                "revision": revision,
                "sha256": uploaded.sha256,
                "size": uploaded.size,
                "created": uploaded.created,
            }))
        }
        ["api", "plugins", "modules", sha] => {
            let revision = svc.delete_module(sha).await?;
            ok(json!({ "revision": revision }))
        }
        ["api", "slots", "migrate"] => {
            let (Migrate { range, to }, queue) = queued(&mut req.body).await?;
            let (revision, steps) = svc.migrate_slots(&range, to, queue).await?;
            state.migrator.wake();
            ok(json!({ "revision": revision, "queued": steps }))
        }
        ["api", "migrations"] => {
            let snap = svc.snapshot().await?;
            ok(crate::migrate::view(&snap, &state.migrator))
        }
        ["api", "migrations", "cancel"] => {
            #[derive(Deserialize, Default)]
            #[serde(deny_unknown_fields)]
            struct Cancel {
                range: Option<String>,
            }
            let raw = read_body(&mut req.body, MAX_BODY).await?;
            let Cancel { range } = if raw.iter().all(u8::is_ascii_whitespace) {
                Cancel::default()
            } else {
                serde_json::from_slice(&raw).map_err(bad_json)?
            };
            let (revision, (dropped, marked)) = svc.cancel_migrations(range.as_deref()).await?;
            state.migrator.wake();
            ok(json!({
                "revision": revision,
                "dropped": crate::migrate::plan::ranges_text(&dropped),
                "dropped_slots": dropped.len(),
                "cancelling": marked,
            }))
        }
        ["api", "rebalance"] => {
            let (Rebalance { dry_run, weights }, queue) = queued(&mut req.body).await?;
            let weights = weights
                .into_iter()
                .map(|(g, w)| Ok((group_id(&g)?, w)))
                .collect::<Result<_, DashboardError>>()?;
            let (revision, (plan, steps)) = svc.rebalance(&weights, dry_run, queue).await?;
            state.migrator.wake();
            ok(json!({
                "revision": revision,
                "dry_run": dry_run,
                "plan": plan,
                "queued": steps,
            }))
        }
        _ => unreachable!("every route allowed above is handled"),
    }
}

/// Whether the query sets `name` (`?name`, `?name=1`, `true` or `yes`).
fn flag(query: &HashMap<String, String>, name: &str) -> bool {
    matches!(
        query.get(name).map(String::as_str),
        Some("1" | "true" | "yes" | "")
    )
}

/// Distinguishes a field given as `null` (`Some(None)`) from a missing one (`None`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<u32>>, D::Error> {
    Option::<u32>::deserialize(d).map(Some)
}

fn check_token(state: &AppState, header: Option<&str>) -> Result<(), DashboardError> {
    let given = header
        .and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        })
        .map(str::trim)
        .unwrap_or("");
    if !given.is_empty() && constant_time_eq(given.as_bytes(), state.admin_token.as_bytes()) {
        Ok(())
    } else {
        Err(DashboardError::Unauthorized)
    }
}

/// Compares without stopping at the first difference, so timing says nothing of the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Reads the whole body, refusing (413) one larger than `limit` bytes.
async fn read_body(body: &mut Body, limit: usize) -> Result<Vec<u8>, DashboardError> {
    let unreadable = |e: warp::Error| DashboardError::BadRequest(format!("unreadable body: {e}"));
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(unreadable)?;
        if out.len() + chunk.len() > limit {
            let mut seen = out.len() + chunk.len();
            drop(out);
            while seen <= MAX_DRAIN {
                match body.next().await {
                    Some(Ok(chunk)) => seen += chunk.len(),
                    _ => break,
                }
            }
            return Err(DashboardError::PayloadTooLarge(format!(
                "the body is larger than this call accepts ({limit} bytes)"
            )));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Reads a JSON body of at most `limit` bytes.
async fn body<T: DeserializeOwned>(body: &mut Body, limit: usize) -> Result<T, DashboardError> {
    let body = read_body(body, limit).await?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(DashboardError::BadRequest(
            "this call needs a JSON body".to_string(),
        ));
    }
    serde_json::from_slice(&body).map_err(bad_json)
}

fn bad_json(e: impl std::fmt::Display) -> DashboardError {
    DashboardError::BadRequest(format!("bad JSON body: {e}"))
}

/// The fields of `POST /api/slots/migrate` beside the queue's.
#[derive(Deserialize)]
struct Migrate {
    range: String,
    to: u32,
}

/// The fields of `POST /api/rebalance` beside the queue's.
#[derive(Deserialize)]
struct Rebalance {
    #[serde(default)]
    dry_run: bool,
    /// Group id (as text, JSON object keys are) → weight.
    #[serde(default)]
    weights: std::collections::BTreeMap<String, u32>,
}

/// The fields a body of a route that queues migration steps has beside [`QueueOptions`].
trait QueuedFields {
    const FIELDS: &'static [&'static str];
}

impl QueuedFields for Migrate {
    const FIELDS: &'static [&'static str] = &["range", "to"];
}

impl QueuedFields for Rebalance {
    const FIELDS: &'static [&'static str] = &["dry_run", "weights"];
}

/// A body of a route that queues migration steps: its own fields `T` and the queue's options.
/// serde's `deny_unknown_fields` does not combine with `flatten`, so the other fields are
/// collected here and refused with the text `deny_unknown_fields` gives.
#[derive(Deserialize)]
struct Queued<T> {
    #[serde(flatten)]
    fields: T,
    #[serde(flatten)]
    queue: QueueOptions,
    #[serde(flatten)]
    unknown: std::collections::BTreeMap<String, serde::de::IgnoredAny>,
}

impl<T: QueuedFields> Queued<T> {
    fn split(self) -> Result<(T, QueueOptions), DashboardError> {
        if let Some(name) = self.unknown.keys().next() {
            let expected: Vec<String> = T::FIELDS
                .iter()
                .chain(QueueOptions::FIELDS)
                .map(|f| format!("`{f}`"))
                .collect();
            return Err(bad_json(format!(
                "unknown field `{name}`, expected one of {}",
                expected.join(", ")
            )));
        }
        Ok((self.fields, self.queue))
    }
}

/// Reads the JSON body of a route that queues migration steps.
async fn queued<T>(raw: &mut Body) -> Result<(T, QueueOptions), DashboardError>
where
    T: QueuedFields + DeserializeOwned,
{
    body::<Queued<T>>(raw, MAX_BODY).await?.split()
}

fn group_id(text: &str) -> Result<u32, DashboardError> {
    text.parse().map_err(|_| {
        DashboardError::BadRequest(format!("bad group id {text:?}: expected a number"))
    })
}

fn parse_query(query: &str) -> HashMap<String, String> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (p.to_string(), String::new()),
        })
        .collect()
}

/// Decodes `%XX` escapes in a path segment (`[::1]:6379` arrives as `%5B%3A%3A1%5D:6379`).
fn percent_decode(segment: &str) -> Result<String, DashboardError> {
    let bad = || DashboardError::BadRequest(format!("bad percent-encoding in {segment:?}"));
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or_else(bad)?;
            let hex = std::str::from_utf8(hex).map_err(|_| bad())?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding() {
        assert_eq!(percent_decode("%5B%3A%3A1%5D:6379").unwrap(), "[::1]:6379");
        assert!(percent_decode("%zz").is_err());
        assert!(percent_decode("%4").is_err());
    }

    /// The body's fields beside the queue's are refused with what `deny_unknown_fields` on
    /// one struct of every field says (serde_json adds where; the position is left out).
    #[test]
    fn queued_bodies_refuse_unknown_fields_as_deny_unknown_fields_does() {
        #[derive(Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct AllFields {
            range: String,
            to: u32,
            step_slots: Option<usize>,
            concurrency: Option<usize>,
            options: Option<crate::migrate::plan::MoveOptions>,
        }
        let text = r#"{"range": "0-9", "to": 2, "step_slots": 4, "bogus": 1}"#;
        let denied = serde_json::from_str::<AllFields>(text)
            .unwrap_err()
            .to_string();
        let e = serde_json::from_str::<Queued<Migrate>>(text)
            .unwrap()
            .split()
            .err()
            .unwrap()
            .to_string();
        let position = denied.rfind(" at line ").unwrap();
        assert_eq!(e, format!("bad JSON body: {}", &denied[..position]));
        assert_eq!(
            e,
            "bad JSON body: unknown field `bogus`, expected one of `range`, `to`, \
             `step_slots`, `concurrency`, `options`"
        );

        // Every field named is taken; an unknown one inside `options` is refused too.
        let text = r#"{"range": "0-9", "to": 2, "step_slots": 4, "concurrency": 2,
                       "options": {"batch_keys": 10}}"#;
        let (m, q) = serde_json::from_str::<Queued<Migrate>>(text)
            .unwrap()
            .split()
            .unwrap();
        assert_eq!((m.range.as_str(), m.to), ("0-9", 2));
        assert_eq!((q.step_slots, q.concurrency), (Some(4), Some(2)));
        assert_eq!(q.options.unwrap().batch_keys, 10);
        let text = r#"{"dry_run": true, "weights": {"1": 2}, "options": {"batch": 1}}"#;
        let e = serde_json::from_str::<Queued<Rebalance>>(text)
            .err()
            .unwrap();
        assert!(e.to_string().starts_with("unknown field `batch`"), "{e}");
        let text = r#"{"dry_run": true, "weights": {"1": 2}, "range": "1"}"#;
        let e = serde_json::from_str::<Queued<Rebalance>>(text)
            .unwrap()
            .split()
            .err()
            .unwrap();
        assert_eq!(
            e.to_string(),
            "bad JSON body: unknown field `range`, expected one of `dry_run`, `weights`, \
             `step_slots`, `concurrency`, `options`"
        );
    }

    #[test]
    fn token_compare() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
