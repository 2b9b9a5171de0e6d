//! `tessera admin`: a blocking HTTP client for the dashboard's API, one subcommand per call;
//! aligned tables for people by default, the API's JSON with `--json` for scripts.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::migrate::cli::{MigrationsCommand, QueueArgs, migrate_slots, migrations, rebalance};

/// `tessera admin`: calls a running dashboard.
#[derive(clap::Args, Debug, Clone)]
pub struct AdminArgs {
    /// The dashboard's address: `HOST:PORT` or `http://HOST:PORT`.
    #[arg(
        long,
        global = true,
        env = "TESSERA_DASHBOARD",
        default_value = "127.0.0.1:18080"
    )]
    pub dashboard: String,
    /// The admin token, for calls that change something.
    #[arg(
        long,
        global = true,
        env = "TESSERA_ADMIN_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub cmd: AdminCommand,
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum AdminCommand {
    /// Everything at once: product, groups, slots, proxies.
    Topology,
    /// Show the product settings (default) or change its passwords.
    Product {
        #[command(subcommand)]
        cmd: Option<ProductCommand>,
    },
    /// List, add and remove groups and their servers.
    Group {
        #[command(subcommand)]
        cmd: GroupCommand,
    },
    /// Show the slot table (as ranges; `--full` for every slot), or assign a range.
    Slots {
        /// One line per slot instead of ranges.
        #[arg(long)]
        full: bool,
        #[command(subcommand)]
        cmd: Option<SlotsCommand>,
    },
    /// The registered proxies and the topology revision each has applied.
    Proxies,
    /// Running and queued slot migrations (progress, proxies holding them), or cancel some.
    Migrations {
        #[command(subcommand)]
        cmd: Option<MigrationsCommand>,
    },
    /// Move slots so that every group owns its share by weight (equal by default). Prints
    /// the plan, then queues it.
    Rebalance {
        /// Only print the plan.
        #[arg(long)]
        dry_run: bool,
        /// A group's weight, `GROUP=WEIGHT` (repeatable; others weigh 1; 0 empties a group).
        #[arg(long = "weight", value_name = "GROUP=WEIGHT")]
        weights: Vec<String>,
        #[command(flatten)]
        queue: QueueArgs,
    },
    /// Show the WebAssembly plugin chain the proxies run (default), upload modules, set it.
    Plugins {
        #[command(subcommand)]
        cmd: Option<PluginsCommand>,
    },
    /// Whether the dashboard and its store answer.
    Health,
    /// Print the Argon2id hash (a PHC string) of the password read from standard input, for
    /// an acl-auth user's `password`: `printf %s 'secret' | tessera admin hash-password`.
    /// One trailing newline is not part of the password. Calls no dashboard.
    HashPassword {
        /// Memory cost in KiB. The plugin needs this much memory in its instance
        /// (`memory_limit_mb`), and each AUTH that is not remembered runs the whole hash
        /// within the plugin's `timeout_ms`.
        #[arg(long, default_value_t = HASH_MEMORY_KIB)]
        memory_kib: u32,
        /// Passes over the memory (time cost).
        #[arg(long, default_value_t = HASH_ITERATIONS)]
        iterations: u32,
    },
}

/// The default memory cost of `hash-password`: with [`HASH_ITERATIONS`], about 2 ms natively
/// and 5–8 ms in a plugin under wasmtime on a shared 2-core machine (docs/plugins.md).
pub const HASH_MEMORY_KIB: u32 = 2048;
/// The default time cost of `hash-password`.
pub const HASH_ITERATIONS: u32 = 2;

/// The Argon2id PHC string of `password` with a random 16-byte salt and the given costs
/// (one lane): what acl-auth takes as a user's `password`.
pub fn hash_password(
    password: &[u8],
    memory_kib: u32,
    iterations: u32,
) -> Result<String, AdminError> {
    use argon2::password_hash::{PasswordHasher, SaltString};
    if password.is_empty() {
        return Err(AdminError::Usage(
            "the password is empty: give it on standard input".to_string(),
        ));
    }
    let params = argon2::Params::new(memory_kib, iterations, 1, None)
        .map_err(|e| AdminError::Usage(format!("bad Argon2 costs: {e}")))?;
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).expect("the OS random source works");
    let salt = SaltString::encode_b64(&salt).expect("16 bytes make a valid salt");
    let argon2 = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    argon2
        .hash_password(password, &salt)
        .map(|h| h.to_string())
        .map_err(|e| AdminError::Usage(format!("cannot hash the password: {e}")))
}

/// Reads the password of `hash-password`: all of standard input, less one trailing newline.
fn read_password() -> Result<Vec<u8>, AdminError> {
    use std::io::Read;
    let mut input = Vec::new();
    std::io::stdin().read_to_end(&mut input).map_err(|e| {
        AdminError::Usage(format!("cannot read the password from standard input: {e}"))
    })?;
    if input.ends_with(b"\n") {
        input.pop();
        if input.ends_with(b"\r") {
            input.pop();
        }
    }
    Ok(input)
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum ProductCommand {
    /// Show the product settings (passwords masked).
    Show,
    /// Change the passwords given ("" clears one).
    Set {
        /// Password the proxies send to every Redis.
        #[arg(long)]
        backend_password: Option<String>,
        /// Password clients must give the proxies.
        #[arg(long)]
        session_password: Option<String>,
    },
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum GroupCommand {
    /// List the groups, their servers and slot counts.
    List,
    /// Create an empty group.
    Add { id: u32 },
    /// Remove a group that owns no slots.
    Remove { id: u32 },
    /// Add a server (`host:port`); a group's first server is its master.
    AddServer { id: u32, addr: String },
    /// Remove a server from a group.
    RemoveServer { id: u32, addr: String },
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum PluginsCommand {
    /// Show the chain (each config masked, with its size and sha256), the uploaded modules
    /// and the proxies that could not load the chain.
    Show {
        /// Show the configs themselves (needs the admin token).
        #[arg(long)]
        full: bool,
    },
    /// Upload a module (`.wasm`, or `.wat` text); prints its sha256.
    Upload { file: PathBuf },
    /// Replace the whole chain with FILE: `{"chain": [{"name": ..., "path": "f.wasm" or
    /// "module": SHA256, "config": ..., "fail": ..., ...}]}`. Each `path` (relative to FILE)
    /// is uploaded first.
    Set { file: PathBuf },
    /// Empty the chain (the proxies then run no plugin).
    Clear,
    /// Delete an uploaded module that no plugin of the chain runs.
    DeleteModule { sha256: String },
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum SlotsCommand {
    /// Assign RANGE (`LO-HI` or `N`) to GROUP without moving data (`offline` or 0: offline).
    /// A slot owned by another group is refused: move it with `slots migrate`.
    Assign {
        range: String,
        group: String,
        /// Assign slots owned by another group all the same, leaving their keys behind: only
        /// for slots that hold no keys.
        #[arg(long)]
        force: bool,
    },
    /// Move RANGE (`LO-HI` or `N`) with its keys to group `--to`, online.
    Migrate {
        range: String,
        /// The group that gets the slots.
        #[arg(long)]
        to: u32,
        /// Wait until every slot of RANGE is owned by the group.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        queue: QueueArgs,
    },
}

/// What can go wrong calling the dashboard.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("cannot reach the dashboard at {addr}: {message}")]
    Unreachable { addr: String, message: String },
    /// The API answered with an error status and this message.
    #[error("{message}")]
    Api { status: u16, message: String },
    #[error("unexpected answer from the dashboard at {addr}: {message}")]
    BadAnswer { addr: String, message: String },
    #[error("{0}")]
    Usage(String),
}

/// A blocking client for one dashboard.
pub struct Client {
    addr: String,
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl Client {
    pub fn new(addr: &str, token: Option<String>) -> Client {
        let base = if addr.starts_with("http://") || addr.starts_with("https://") {
            addr.trim_end_matches('/').to_string()
        } else {
            format!("http://{}", addr.trim_end_matches('/'))
        };
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(3))
            .timeout(Duration::from_secs(30))
            .build();
        Client {
            addr: addr.to_string(),
            base,
            token: token.filter(|t| !t.is_empty()),
            agent,
        }
    }

    /// One call: the JSON answer, or the API's error message.
    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, AdminError> {
        self.send(method, path, body.map_or(Payload::None, Payload::Json))
    }

    /// A call whose body is raw bytes (`application/octet-stream`): a plugin module.
    pub fn call_bytes(&self, method: &str, path: &str, bytes: &[u8]) -> Result<Value, AdminError> {
        self.send(method, path, Payload::Bytes(bytes))
    }

    fn send(&self, method: &str, path: &str, body: Payload<'_>) -> Result<Value, AdminError> {
        let mut request = self.agent.request(method, &format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.set("Authorization", &format!("Bearer {token}"));
        }
        let result = match body {
            Payload::Json(body) => request.send_json(body),
            Payload::Bytes(bytes) => request
                .set("Content-Type", "application/octet-stream")
                .send_bytes(bytes),
            Payload::None => request.call(),
        };
        let bad = |message: String| AdminError::BadAnswer {
            addr: self.addr.clone(),
            message,
        };
        match result {
            Ok(response) => response.into_json().map_err(|e| bad(e.to_string())),
            Err(ureq::Error::Status(status, response)) => {
                let text = response.into_string().unwrap_or_default();
                let mut message = serde_json::from_str::<Value>(&text)
                    .ok()
                    .and_then(|v| v["error"].as_str().map(String::from))
                    .unwrap_or_else(|| format!("HTTP {status}: {}", text.trim()));
                if status == 401 && self.token.is_none() {
                    message.push_str(" (give --token or set TESSERA_ADMIN_TOKEN)");
                }
                Err(AdminError::Api { status, message })
            }
            Err(ureq::Error::Transport(t)) => {
                // ureq's text starts with the URL; the address is in our message already.
                let text = t.to_string();
                let message = match t.url() {
                    Some(url) => text.strip_prefix(&format!("{url}: ")).unwrap_or(&text),
                    None => &text,
                };
                Err(AdminError::Unreachable {
                    addr: self.addr.clone(),
                    message: message.to_string(),
                })
            }
        }
    }
}

/// A request body.
enum Payload<'a> {
    None,
    Json(Value),
    Bytes(&'a [u8]),
}

/// `tessera admin`: runs one call and prints its answer; exits non-zero on any error.
pub fn run_admin(args: AdminArgs) -> anyhow::Result<()> {
    let out = execute(&args)?;
    print!("{out}");
    Ok(())
}

/// Turns an answer into what a person reads.
pub(crate) type Render = Box<dyn Fn(&Value) -> String>;

/// Runs one call and returns what `tessera admin` prints (a table, or the JSON).
pub fn execute(args: &AdminArgs) -> Result<String, AdminError> {
    if let AdminCommand::HashPassword {
        memory_kib,
        iterations,
    } = &args.cmd
    {
        let hash = hash_password(&read_password()?, *memory_kib, *iterations)?;
        return Ok(format!("{hash}\n"));
    }
    let client = Client::new(&args.dashboard, args.token.clone());
    let (value, render): (Value, Render) = match &args.cmd {
        AdminCommand::Topology => (
            client.call("GET", "/api/topology", None)?,
            Box::new(topology),
        ),
        AdminCommand::Health => (client.call("GET", "/api/health", None)?, Box::new(health)),
        AdminCommand::HashPassword { .. } => unreachable!("answered above, without a call"),
        AdminCommand::Proxies => (client.call("GET", "/api/proxies", None)?, Box::new(proxies)),
        AdminCommand::Migrations { cmd } => migrations(&client, cmd.as_ref())?,
        AdminCommand::Rebalance {
            dry_run,
            weights,
            queue,
        } => rebalance(&client, *dry_run, weights, queue)?,
        AdminCommand::Plugins { cmd } => match cmd {
            None => (client.call("GET", "/api/plugins", None)?, Box::new(plugins)),
            Some(PluginsCommand::Show { full }) => {
                let path = if *full {
                    "/api/plugins?full=1"
                } else {
                    "/api/plugins"
                };
                (client.call("GET", path, None)?, Box::new(plugins))
            }
            Some(PluginsCommand::Upload { file }) => {
                let v = upload(&client, file)?;
                let file = file.display().to_string();
                let render = move |v: &Value| {
                    let created = if v["created"] == false {
                        ", uploaded before"
                    } else {
                        ""
                    };
                    format!(
                        "{}  {file} ({} bytes{created})\n",
                        text(&v["sha256"]),
                        text(&v["size"])
                    )
                };
                (v, Box::new(render))
            }
            Some(PluginsCommand::Set { file }) => {
                let body = chain_file(&client, file)?;
                let v = client.call("PUT", "/api/plugins", Some(body))?;
                (v, Box::new(chain_set))
            }
            Some(PluginsCommand::Clear) => {
                let body = json!({ "chain": [] });
                let v = client.call("PUT", "/api/plugins", Some(body))?;
                (v, Box::new(chain_set))
            }
            Some(PluginsCommand::DeleteModule { sha256 }) => {
                let path = format!("/api/plugins/modules/{}", encode_segment(sha256));
                let v = client.call("DELETE", &path, None)?;
                let what = format!("module {sha256} deleted");
                (v, Box::new(move |v: &Value| done(&what, v)))
            }
        },
        AdminCommand::Product { cmd } => match cmd {
            None | Some(ProductCommand::Show) => {
                (client.call("GET", "/api/product", None)?, Box::new(product))
            }
            Some(ProductCommand::Set {
                backend_password,
                session_password,
            }) => {
                let mut body = json!({});
                if let Some(p) = backend_password {
                    body["backend_password"] = json!(p);
                }
                if let Some(p) = session_password {
                    body["session_password"] = json!(p);
                }
                let v = client.call("PUT", "/api/product", Some(body))?;
                (v, Box::new(|v: &Value| done("product updated", v)))
            }
        },
        AdminCommand::Group { cmd } => match cmd {
            GroupCommand::List => (client.call("GET", "/api/groups", None)?, Box::new(groups)),
            GroupCommand::Add { id } => {
                let v = client.call("POST", "/api/groups", Some(json!({ "id": id })))?;
                let what = format!("group {id} added");
                (v, Box::new(move |v: &Value| done(&what, v)))
            }
            GroupCommand::Remove { id } => {
                let v = client.call("DELETE", &format!("/api/groups/{id}"), None)?;
                let what = format!("group {id} removed");
                (v, Box::new(move |v: &Value| done(&what, v)))
            }
            GroupCommand::AddServer { id, addr } => {
                let path = format!("/api/groups/{id}/servers");
                let v = client.call("POST", &path, Some(json!({ "addr": addr })))?;
                let (id, addr) = (*id, addr.clone());
                let render = move |v: &Value| {
                    let servers = v["group"]["servers"].as_array().map_or(0, Vec::len);
                    let role = if servers <= 1 { "master" } else { "replica" };
                    done(&format!("server {addr} added to group {id} as {role}"), v)
                };
                (v, Box::new(render))
            }
            GroupCommand::RemoveServer { id, addr } => {
                let path = format!("/api/groups/{id}/servers/{}", encode_segment(addr));
                let v = client.call("DELETE", &path, None)?;
                let what = format!("server {addr} removed from group {id}");
                (v, Box::new(move |v: &Value| done(&what, v)))
            }
        },
        AdminCommand::Slots { full, cmd } => match cmd {
            None => {
                let path = if *full {
                    "/api/slots?full=1"
                } else {
                    "/api/slots"
                };
                (client.call("GET", path, None)?, Box::new(slots))
            }
            Some(SlotsCommand::Migrate {
                range,
                to,
                wait,
                queue,
            }) => migrate_slots(&client, range, *to, *wait, queue)?,
            Some(SlotsCommand::Assign {
                range,
                group,
                force,
            }) => {
                let group = match group.as_str() {
                    "offline" | "0" => Value::Null,
                    g => json!(g.parse::<u32>().map_err(|_| AdminError::Usage(format!(
                        "bad GROUP {g:?}: a group id, or `offline`"
                    )))?),
                };
                let body = json!({ "range": range, "group": group, "force": force });
                let v = client.call("POST", "/api/slots/assign", Some(body))?;
                let render = |v: &Value| {
                    let head = format!("{} slots changed", text(&v["changed"]));
                    format!("{}\n{}", done(&head, v).trim_end(), slots(v))
                };
                (v, Box::new(render))
            }
        },
    };
    if args.json {
        let mut out = serde_json::to_string_pretty(&value).unwrap_or_default();
        out.push('\n');
        Ok(out)
    } else {
        Ok(render(&value))
    }
}

/// A value as table text: strings bare, `null` as `-`.
pub(crate) fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => (if *b { "yes" } else { "no" }).to_string(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => format!("{f:.1}"),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

pub(crate) fn items(v: &Value) -> &[Value] {
    v.as_array().map_or(&[], Vec::as_slice)
}

/// Left-aligned columns, two spaces apart, headers first.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header_row: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header_row).chain(rows) {
        let mut line = String::new();
        for (cell, w) in row.iter().zip(&widths) {
            line.push_str(&format!("{cell:<w$}  "));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

pub(crate) fn done(what: &str, v: &Value) -> String {
    format!("{what} (revision {})\n", text(&v["revision"]))
}

fn health(v: &Value) -> String {
    format!(
        "ok: product {}, store {}, revision {}\n",
        text(&v["product"]),
        text(&v["store"]),
        text(&v["revision"])
    )
}

fn password(v: &Value) -> String {
    match v.as_str() {
        None | Some("") => "(none)".to_string(),
        Some(s) => s.to_string(),
    }
}

fn product(v: &Value) -> String {
    let p = &v["product"];
    let rows = [
        vec!["name".to_string(), text(&p["name"])],
        vec![
            "backend password".to_string(),
            password(&p["backend_password"]),
        ],
        vec![
            "session password".to_string(),
            password(&p["session_password"]),
        ],
        vec!["revision".to_string(), text(&v["revision"])],
    ];
    table(&["SETTING", "VALUE"], &rows)
}

fn group_rows(v: &Value) -> String {
    let rows: Vec<Vec<String>> = items(v)
        .iter()
        .map(|g| {
            let servers: Vec<String> = items(&g["servers"]).iter().map(text).collect();
            vec![
                text(&g["id"]),
                text(&g["slots"]),
                servers.first().cloned().unwrap_or_else(|| "-".to_string()),
                if servers.len() > 1 {
                    servers[1..].join(", ")
                } else {
                    "-".to_string()
                },
            ]
        })
        .collect();
    if rows.is_empty() {
        return "no groups\n".to_string();
    }
    table(&["GROUP", "SLOTS", "MASTER", "REPLICAS"], &rows)
}

fn groups(v: &Value) -> String {
    group_rows(&v["groups"])
}

fn slot_rows(v: &Value) -> String {
    let full = items(v).first().is_some_and(|s| s.get("range").is_none());
    let rows: Vec<Vec<String>> = items(v)
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let first = if full {
                i.to_string()
            } else {
                text(&s["range"])
            };
            let group = if s["state"] == "migrating" {
                format!("{} → {}", text(&s["from"]), text(&s["to"]))
            } else {
                text(&s["group"])
            };
            vec![first, text(&s["state"]), group]
        })
        .collect();
    table(
        &[if full { "SLOT" } else { "RANGE" }, "STATE", "GROUP"],
        &rows,
    )
}

fn slots(v: &Value) -> String {
    slot_rows(&v["slots"])
}

fn proxy_rows(v: &Value) -> String {
    let rows: Vec<Vec<String>> = items(v)
        .iter()
        .map(|p| {
            vec![
                text(&p["addr"]),
                text(&p["admin_addr"]),
                text(&p["version"]),
                text(&p["pid"]),
                p["start_time"]
                    .as_u64()
                    .map_or_else(|| "-".to_string(), crate::fmt_unix_time),
                text(&p["applied_revision"]),
                format!("{:.1}", p["ops_per_sec"].as_f64().unwrap_or(0.0)),
                (if p["behind"].as_bool() == Some(true) {
                    "behind"
                } else {
                    "current"
                })
                .to_string(),
                text(&p["topology_error"]),
                text(&p["plugin_error"]),
            ]
        })
        .collect();
    if rows.is_empty() {
        return "no proxies registered\n".to_string();
    }
    table(
        &[
            "ADDR",
            "ADMIN",
            "VERSION",
            "PID",
            "STARTED",
            "APPLIED",
            "OPS/S",
            "TABLE",
            "TOPOLOGY ERROR",
            "PLUGIN ERROR",
        ],
        &rows,
    )
}

fn proxies(v: &Value) -> String {
    format!(
        "revision {}\n{}",
        text(&v["revision"]),
        proxy_rows(&v["proxies"])
    )
}

fn topology(v: &Value) -> String {
    let p = &v["product"];
    let head = table(
        &[
            "PRODUCT",
            "REVISION",
            "BACKEND PASSWORD",
            "SESSION PASSWORD",
        ],
        &[vec![
            text(&p["name"]),
            text(&v["revision"]),
            password(&p["backend_password"]),
            password(&p["session_password"]),
        ]],
    );
    format!(
        "{head}\n{}\n{}\n{}",
        group_rows(&v["groups"]),
        slot_rows(&v["slots"]),
        proxy_rows(&v["proxies"])
    )
}

/// Uploads one module file; the API's answer (`sha256`, `size`, `created`).
fn upload(client: &Client, file: &Path) -> Result<Value, AdminError> {
    let bytes = std::fs::read(file).map_err(|e| {
        AdminError::Usage(format!("cannot read the module {}: {e}", file.display()))
    })?;
    client.call_bytes("POST", "/api/plugins/modules", &bytes)
}

/// Reads a chain file and uploads the modules it names by `path`: the body of
/// `PUT /api/plugins`, each link naming its module by sha256. A `config` that is not a
/// string (an inline JSON object) is sent as its JSON text.
fn chain_file(client: &Client, file: &Path) -> Result<Value, AdminError> {
    let usage = |why: String| AdminError::Usage(format!("{}: {why}", file.display()));
    let text = std::fs::read_to_string(file).map_err(|e| usage(format!("cannot read it: {e}")))?;
    let mut doc: Value =
        serde_json::from_str(&text).map_err(|e| usage(format!("bad JSON: {e}")))?;
    let Some(chain) = doc.get_mut("chain").and_then(Value::as_array_mut) else {
        return Err(usage(
            r#"expected {"chain": [{"name": ..., "path": ... or "module": ..., ...}, ...]}"#
                .to_string(),
        ));
    };
    let dir = file.parent().unwrap_or(Path::new(""));
    let mut uploaded = std::collections::HashMap::new();
    for (i, link) in chain.iter_mut().enumerate() {
        let Some(link) = link.as_object_mut() else {
            return Err(usage(format!("chain[{i}] is not an object")));
        };
        let name = link
            .get("name")
            .and_then(Value::as_str)
            .map_or_else(|| format!("chain[{i}]"), |n| format!("plugin '{n}'"));
        match (link.remove("path"), link.contains_key("module")) {
            (Some(_), true) => {
                return Err(usage(format!("{name}: give `path` or `module`, not both")));
            }
            (None, false) => {
                return Err(usage(format!(
                    "{name}: give `path` (a module file) or `module` (an uploaded module's sha256)"
                )));
            }
            (Some(path), false) => {
                let Some(path) = path.as_str() else {
                    return Err(usage(format!("{name}: `path` must be a string")));
                };
                let path = dir.join(path);
                let sha = match uploaded.get(&path) {
                    Some(sha) => Value::clone(sha),
                    None => {
                        let answer = upload(client, &path).map_err(|e| match e {
                            AdminError::Api { status, message } => AdminError::Api {
                                status,
                                message: format!("{name} ({}): {message}", path.display()),
                            },
                            other => other,
                        })?;
                        uploaded.insert(path, answer["sha256"].clone());
                        answer["sha256"].clone()
                    }
                };
                link.insert("module".to_string(), sha);
            }
            (None, true) => {}
        }
        if let Some(config) = link.get_mut("config")
            && !config.is_string()
        {
            *config = Value::String(config.to_string());
        }
    }
    Ok(doc)
}

/// A link's config in a table cell: masked, its size and the start of its sha256; or, shown
/// in full, one line of at most 40 characters.
fn short_config(link: &Value) -> String {
    let config = link["config"].as_str().unwrap_or_default();
    if config == tessera_topology::mask::MASK
        && let Some(bytes) = link["config_bytes"].as_u64()
    {
        let sha: String = text(&link["config_sha256"]).chars().take(12).collect();
        return format!("{config} ({bytes} bytes, sha256 {sha})");
    }
    let line = config.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.is_empty() {
        "-".to_string()
    } else if line.chars().count() > 40 {
        let head: String = line.chars().take(39).collect();
        format!("{head}…")
    } else {
        line
    }
}

fn chain_rows(chain: &Value) -> String {
    let rows: Vec<Vec<String>> = items(chain)
        .iter()
        .map(|p| {
            let module = text(&p["module"]);
            vec![
                text(&p["name"]),
                module.chars().take(12).collect(),
                text(&p["fail"]),
                format!("{} MiB", text(&p["memory_limit_mb"])),
                format!("{} ms", text(&p["timeout_ms"])),
                // Absent in a chain stored before the setting existed: remembered.
                match p["remember"].as_bool() {
                    Some(false) => "no".to_string(),
                    _ => "yes".to_string(),
                },
                short_config(p),
            ]
        })
        .collect();
    if rows.is_empty() {
        return "no plugins in the chain\n".to_string();
    }
    table(
        &[
            "NAME", "MODULE", "FAIL", "MEMORY", "TIMEOUT", "REMEMBER", "CONFIG",
        ],
        &rows,
    )
}

fn plugins(v: &Value) -> String {
    let mut out = format!(
        "revision {}\n{}",
        text(&v["revision"]),
        chain_rows(&v["chain"])
    );
    let modules: Vec<Vec<String>> = items(&v["modules"])
        .iter()
        .map(|m| {
            let users: Vec<String> = items(&m["used_by"]).iter().map(text).collect();
            vec![
                text(&m["sha256"]),
                text(&m["size"]),
                if users.is_empty() {
                    "-".to_string()
                } else {
                    users.join(", ")
                },
            ]
        })
        .collect();
    out.push('\n');
    if modules.is_empty() {
        out.push_str("no modules uploaded\n");
    } else {
        out.push_str(&table(&["MODULE", "SIZE", "USED BY"], &modules));
    }
    for p in items(&v["proxy_errors"]) {
        out.push_str(&format!(
            "\nproxy {} could not load the chain: {}\n",
            text(&p["addr"]),
            text(&p["plugin_error"])
        ));
    }
    out
}

fn chain_set(v: &Value) -> String {
    let names: Vec<String> = items(&v["chain"])
        .iter()
        .map(|p| text(&p["name"]))
        .collect();
    let head = if names.is_empty() {
        "plugin chain cleared".to_string()
    } else {
        format!("plugin chain set: {}", names.join(", "))
    };
    format!("{}{}", done(&head, v), chain_rows(&v["chain"]))
}

/// Percent-encodes a path segment (keeps letters, digits, `-._~:`).
fn encode_segment(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~:".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let t = table(
            &["A", "LONG HEADER"],
            &[
                vec!["wide cell".into(), "x".into()],
                vec!["y".into(), "z".into()],
            ],
        );
        assert_eq!(t, "A          LONG HEADER\nwide cell  x\ny          z\n");
    }

    #[test]
    fn the_chain_table_says_which_plugins_are_remembered() {
        let chain = serde_json::json!([
            {"name": "acl", "module": "3fa1c0d2e4b5aa", "fail": "closed", "memory_limit_mb": 16,
             "timeout_ms": 10, "remember": true, "config": "{}"},
            {"name": "audit", "module": "9b2e77a0c1d3bb", "fail": "open", "memory_limit_mb": 8,
             "timeout_ms": 5, "remember": false, "config": ""},
        ]);
        let t = chain_rows(&chain);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].contains("TIMEOUT  REMEMBER  CONFIG"), "{t}");
        let cells = |line: &str| {
            line.split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        assert_eq!(cells(lines[1])[7], "yes", "{t}");
        assert_eq!(cells(lines[2])[7], "no", "{t}");
    }

    #[test]
    fn the_proxy_table_shows_why_a_proxy_cannot_apply_the_topology() {
        let why = "bad document at /tessera/p/slots (revision 9): expected value";
        let proxies = serde_json::json!([
            {"addr": "127.0.0.1:19000", "applied_revision": 8, "behind": true,
             "topology_error": why},
            {"addr": "127.0.0.1:19001", "applied_revision": 9, "behind": false},
        ]);
        let t = proxy_rows(&proxies);
        let lines: Vec<&str> = t.lines().collect();
        assert!(
            lines[0].contains("TABLE    TOPOLOGY ERROR") && lines[0].ends_with("PLUGIN ERROR"),
            "{t}"
        );
        assert!(lines[1].contains(why) && lines[1].contains("behind"), "{t}");
        let cells: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(cells[cells.len() - 3..], ["current", "-", "-"], "{t}");
    }

    #[test]
    fn segments_encode() {
        assert_eq!(encode_segment("[::1]:6379"), "%5B::1%5D:6379");
        assert_eq!(encode_segment("host-1:6379"), "host-1:6379");
    }
}
