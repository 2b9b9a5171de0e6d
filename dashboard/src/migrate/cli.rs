//! `tessera admin` for migrations: `slots migrate`'s and `rebalance`'s options, `migrations
//! [cancel]`, and how their answers print.

use std::time::Duration;

use serde_json::{Value, json};
use tessera_topology::model::{SlotRange, SlotRangeError};

use crate::admin::{AdminError, Client, Render, done, items, table, text};

#[derive(clap::Subcommand, Debug, Clone)]
pub enum MigrationsCommand {
    /// Cancel the migration of RANGE (all when absent): queued slots are dropped; a step in
    /// flight is finished (its slots end owned by the destination with all their keys), or
    /// rolled back if no proxy routes by it yet.
    Cancel { range: Option<String> },
}

/// How `slots migrate` and `rebalance` move keys (defaults: the dashboard's).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct QueueArgs {
    /// The most slots one step moves (64).
    #[arg(long)]
    pub step_slots: Option<usize>,
    /// Steps run at once, for the whole queue (1; kept until changed).
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Keys per MIGRATE command (100).
    #[arg(long)]
    pub batch_keys: Option<usize>,
    /// MIGRATE commands in flight at once (1).
    #[arg(long)]
    pub pipeline: Option<usize>,
    /// Pause after each round of batches, milliseconds (0).
    #[arg(long)]
    pub pause_ms: Option<u64>,
    /// MIGRATE's timeout, milliseconds (5000).
    #[arg(long)]
    pub migrate_timeout_ms: Option<u64>,
    /// After this long, proxies that have not applied a step's revision are named as holding
    /// it, milliseconds (30000).
    #[arg(long)]
    pub barrier_timeout_ms: Option<u64>,
}

impl QueueArgs {
    /// The request fields these set.
    pub(crate) fn body(&self, mut body: Value) -> Value {
        if let Some(n) = self.step_slots {
            body["step_slots"] = json!(n);
        }
        if let Some(n) = self.concurrency {
            body["concurrency"] = json!(n);
        }
        let mut options = serde_json::Map::new();
        let fields = [
            ("batch_keys", self.batch_keys.map(|n| n as u64)),
            ("pipeline", self.pipeline.map(|n| n as u64)),
            ("pause_ms", self.pause_ms),
            ("migrate_timeout_ms", self.migrate_timeout_ms),
            ("barrier_timeout_ms", self.barrier_timeout_ms),
        ];
        for (name, value) in fields {
            if let Some(v) = value {
                options.insert(name.to_string(), json!(v));
            }
        }
        if !options.is_empty() {
            body["options"] = Value::Object(options);
        }
        body
    }
}

/// `slots migrate RANGE --to GROUP [--wait]`.
pub(crate) fn migrate_slots(
    client: &Client,
    range: &str,
    to: u32,
    wait: bool,
    queue: &QueueArgs,
) -> Result<(Value, Render), AdminError> {
    let body = queue.body(json!({ "range": range, "to": to }));
    let v = client.call("POST", "/api/slots/migrate", Some(body))?;
    if wait {
        wait_migrated(client, range)?;
    }
    let range = range.to_string();
    let render = move |v: &Value| {
        let steps = items(&v["queued"]).len();
        if wait {
            format!("slots {range} moved to group {to} ({steps} steps)\n")
        } else {
            done(
                &format!("slots {range} queued to move to group {to} in {steps} steps"),
                v,
            )
        }
    };
    Ok((v, Box::new(render)))
}

/// `migrations` and `migrations cancel [RANGE]`.
pub(crate) fn migrations(
    client: &Client,
    cmd: Option<&MigrationsCommand>,
) -> Result<(Value, Render), AdminError> {
    Ok(match cmd {
        None => (
            client.call("GET", "/api/migrations", None)?,
            Box::new(steps_table),
        ),
        Some(MigrationsCommand::Cancel { range }) => {
            let body = match range {
                Some(r) => json!({ "range": r }),
                None => json!({}),
            };
            let v = client.call("POST", "/api/migrations/cancel", Some(body))?;
            (v, Box::new(cancelled))
        }
    })
}

/// `rebalance [--dry-run] [--weight GROUP=WEIGHT ...]`.
pub(crate) fn rebalance(
    client: &Client,
    dry_run: bool,
    weights: &[String],
    queue: &QueueArgs,
) -> Result<(Value, Render), AdminError> {
    let mut w = serde_json::Map::new();
    for weight in weights {
        let parsed = weight.split_once('=').and_then(|(g, n)| {
            Some((g.trim().parse::<u32>().ok()?, n.trim().parse::<u32>().ok()?))
        });
        let Some((g, n)) = parsed else {
            return Err(AdminError::Usage(format!(
                "bad --weight {weight:?}: expected GROUP=WEIGHT, e.g. 2=3"
            )));
        };
        w.insert(g.to_string(), json!(n));
    }
    let body = queue.body(json!({ "dry_run": dry_run, "weights": w }));
    Ok((
        client.call("POST", "/api/rebalance", Some(body))?,
        Box::new(rebalanced),
    ))
}

/// Polls the migrations until no step holds a slot of `range` (every one is owned by its
/// destination, or was cancelled). Names the proxies holding a step, once.
fn wait_migrated(client: &Client, range: &str) -> Result<(), AdminError> {
    let SlotRange { lo, hi } = range
        .parse()
        .map_err(|e: SlotRangeError| AdminError::Usage(e.to_string()))?;
    let mut told = false;
    loop {
        let v = client.call("GET", "/api/migrations", None)?;
        let pending: Vec<&Value> = items(&v["steps"])
            .iter()
            .filter(|s| {
                text(&s["slots"]).split(", ").any(|r| {
                    r.parse::<SlotRange>()
                        .is_ok_and(|r| r.lo <= hi && lo <= r.hi)
                })
            })
            .collect();
        if pending.is_empty() {
            return Ok(());
        }
        if !told && let Some(step) = pending.iter().find(|s| s["state"] == "held") {
            eprint!("{}", holding_lines(step));
            told = true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn holding_lines(step: &Value) -> String {
    items(&step["holding"])
        .iter()
        .map(|h| {
            let why = match h["topology_error"].as_str() {
                Some(e) => format!(": {e}"),
                None => String::new(),
            };
            format!(
                "slots {} held by proxy {} (applied revision {}){why}\n",
                text(&step["slots"]),
                text(&h["addr"]),
                text(&h["applied_revision"]),
            )
        })
        .collect()
}

fn steps_table(v: &Value) -> String {
    let steps = items(&v["steps"]);
    if steps.is_empty() {
        return "no migrations\n".to_string();
    }
    let rows: Vec<Vec<String>> = steps
        .iter()
        .map(|s| {
            let holders: Vec<String> = items(&s["holding"])
                .iter()
                .map(|h| text(&h["addr"]))
                .collect();
            vec![
                text(&s["id"]),
                text(&s["slots"]),
                text(&s["from"]),
                text(&s["to"]),
                format!(
                    "{}{}",
                    text(&s["state"]),
                    if s["cancel"] == true {
                        " (cancelling)"
                    } else {
                        ""
                    }
                ),
                text(&s["keys_moved"]),
                format!("{:.1}", s["keys_per_sec"].as_f64().unwrap_or(0.0)),
                s["eta_secs"]
                    .as_u64()
                    .map_or_else(|| "-".to_string(), |n| format!("{n}s")),
                if holders.is_empty() {
                    "-".to_string()
                } else {
                    holders.join(", ")
                },
            ]
        })
        .collect();
    let mut out = table(
        &[
            "STEP",
            "SLOTS",
            "FROM",
            "TO",
            "STATE",
            "KEYS MOVED",
            "KEYS/S",
            "ETA",
            "HELD BY",
        ],
        &rows,
    );
    for s in steps {
        out.push_str(&holding_lines(s));
        if let Some(e) = s["error"].as_str() {
            out.push_str(&format!("step {}: {e}\n", text(&s["id"])));
        }
    }
    out
}

fn cancelled(v: &Value) -> String {
    let dropped = match v["dropped"].as_str() {
        Some("") | None => "no queued slots dropped".to_string(),
        Some(r) => format!("queued slots {r} dropped"),
    };
    let marked: Vec<String> = items(&v["cancelling"]).iter().map(text).collect();
    let marked = if marked.is_empty() {
        String::new()
    } else {
        format!(
            "; steps {} in flight finish or roll back",
            marked.join(", ")
        )
    };
    done(&format!("{dropped}{marked}"), v)
}

fn rebalanced(v: &Value) -> String {
    let plan = items(&v["plan"]);
    if plan.is_empty() {
        return "balanced already: nothing to move\n".to_string();
    }
    let rows: Vec<Vec<String>> = plan
        .iter()
        .map(|m| {
            vec![
                text(&m["range"]),
                text(&m["from"]),
                text(&m["to"]),
                text(&m["slots"]),
            ]
        })
        .collect();
    let mut out = format!("plan ({} moves):\n", plan.len());
    out.push_str(&table(&["SLOTS", "FROM", "TO", "COUNT"], &rows));
    if v["dry_run"] == true {
        out.push_str("dry run: nothing queued\n");
    } else {
        out.push_str(&format!(
            "queued in {} steps (revision {}): follow with `tessera admin migrations`\n",
            items(&v["queued"]).len(),
            text(&v["revision"])
        ));
    }
    out
}
