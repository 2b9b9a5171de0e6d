//! `tessera admin`: a blocking HTTP client for the dashboard's API, one subcommand per call;
//! aligned tables for people by default, the API's JSON with `--json` for scripts.
//!
//! Here: the command line and [`execute`], which makes one call and picks how its answer
//! prints. [`client`]: the HTTP client and [`AdminError`]; [`print`]: the tables;
//! [`plugins`]: the `plugins` subcommands; [`password`]: `hash-password`. The migration
//! subcommands are `crate::migrate::cli`.

mod client;
mod password;
mod plugins;
mod print;

use serde_json::{Value, json};

pub use client::{AdminError, Client};
pub use password::{HASH_ITERATIONS, HASH_MEMORY_KIB, hash_password};
pub use plugins::PluginsCommand;
pub use print::table;
pub(crate) use print::{done, items, text};

use crate::migrate::cli::{MigrationsCommand, QueueArgs, migrate_slots, migrations, rebalance};
use client::encode_segment;
use password::read_password;
use plugins::plugins_call;
use print::{groups, health, product, proxies, slots, topology};

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
        AdminCommand::Plugins { cmd } => plugins_call(&client, cmd.as_ref())?,
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
