//! `tessera admin plugins`: showing the chain, uploading modules, setting the chain from a
//! file (uploading the modules it names by path), and how the answers print.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::Render;
use super::client::{AdminError, Client, encode_segment};
use super::print::{done, items, table, text};

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
    /// Per-plugin calls, verdicts, failures and time of the chain, summed over the proxies
    /// that run it, then each proxy's own (and why a proxy is not counted).
    Stats,
}

/// Runs `tessera admin plugins [CMD]`: the answer and how it prints.
pub(crate) fn plugins_call(
    client: &Client,
    cmd: Option<&PluginsCommand>,
) -> Result<(Value, Render), AdminError> {
    Ok(match cmd {
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
            let v = upload(client, file)?;
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
            let body = chain_file(client, file)?;
            let v = client.call("PUT", "/api/plugins", Some(body))?;
            (v, Box::new(chain_set))
        }
        Some(PluginsCommand::Clear) => {
            let body = json!({ "chain": [] });
            let v = client.call("PUT", "/api/plugins", Some(body))?;
            (v, Box::new(chain_set))
        }
        Some(PluginsCommand::Stats) => (
            client.call("GET", "/api/plugins/stats", None)?,
            Box::new(stats),
        ),
        Some(PluginsCommand::DeleteModule { sha256 }) => {
            let path = format!("/api/plugins/modules/{}", encode_segment(sha256));
            let v = client.call("DELETE", &path, None)?;
            let what = format!("module {sha256} deleted");
            (v, Box::new(move |v: &Value| done(&what, v)))
        }
    })
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

/// Nanoseconds as people read them: `850 ns`, `12.5 µs`, `3.1 ms`, `2.0 s`.
fn duration(nanos: f64) -> String {
    match nanos {
        n if n < 1e3 => format!("{n:.0} ns"),
        n if n < 1e6 => format!("{:.1} µs", n / 1e3),
        n if n < 1e9 => format!("{:.1} ms", n / 1e6),
        n => format!("{:.1} s", n / 1e9),
    }
}

/// The counter cells of one plugin (`GET /api/plugins/stats`).
fn counter_cells(p: &Value) -> Vec<String> {
    let mut cells: Vec<String> = [
        "calls",
        "continues",
        "rewrites",
        "replies",
        "rejects",
        "remembered",
        "failures",
    ]
    .iter()
    .map(|f| text(&p[*f]))
    .collect();
    cells.push(duration(p["nanos"].as_f64().unwrap_or(0.0)));
    cells.push(duration(p["nanos_per_call"].as_f64().unwrap_or(0.0)));
    cells
}

const COUNTER_HEADERS: [&str; 9] = [
    "CALLS",
    "CONTINUE",
    "REWRITE",
    "REPLY",
    "REJECT",
    "REMEMBERED",
    "FAILURES",
    "TIME",
    "PER CALL",
];

/// `tessera admin plugins stats`: the sums per plugin, then a row per proxy and plugin.
fn stats(v: &Value) -> String {
    let short = |v: &Value| text(v).chars().take(12).collect::<String>();
    let proxies = items(&v["proxies"]);
    let mut out = format!(
        "revision {}, chain {}: summed over {} of {} proxies\n",
        text(&v["revision"]),
        short(&v["chain_hash"]),
        text(&v["counted"]),
        proxies.len()
    );
    let rows: Vec<Vec<String>> = items(&v["plugins"])
        .iter()
        .map(|p| {
            let mut row = vec![text(&p["name"])];
            row.extend(counter_cells(p));
            row
        })
        .collect();
    if rows.is_empty() {
        out.push_str("no plugins in the chain\n");
    } else {
        let headers: Vec<&str> = ["PLUGIN"].into_iter().chain(COUNTER_HEADERS).collect();
        out.push_str(&table(&headers, &rows));
    }
    if proxies.is_empty() {
        out.push_str("\nno proxy is registered\n");
        return out;
    }
    let mut rows = Vec::new();
    for p in proxies {
        let head = vec![text(&p["addr"]), text(&p["state"]), short(&p["chain_hash"])];
        let plugins = items(&p["plugins"]);
        if plugins.is_empty() {
            let mut row = head.clone();
            row.push("-".to_string());
            rows.push(row);
        }
        for plugin in plugins {
            let mut row = head.clone();
            row.push(text(&plugin["name"]));
            row.extend(counter_cells(plugin));
            rows.push(row);
        }
    }
    let headers: Vec<&str> = ["PROXY", "STATE", "CHAIN", "PLUGIN"]
        .into_iter()
        .chain(COUNTER_HEADERS)
        .collect();
    out.push('\n');
    out.push_str(&table(&headers, &rows));
    for p in proxies {
        if let Some(error) = p["error"].as_str() {
            out.push_str(&format!(
                "proxy {} is not counted: {error}\n",
                text(&p["addr"])
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn the_stats_table_sums_then_lists_each_proxy() {
        let v = serde_json::json!({
            "revision": 4, "chain_hash": "0123456789abcdef", "counted": 1,
            "plugins": [{"name": "acl", "calls": 10, "continues": 7, "rewrites": 0, "replies": 0,
                         "rejects": 3, "remembered": 5, "failures": 0, "nanos": 25000,
                         "nanos_per_call": 2500.0}],
            "proxies": [
                {"addr": "127.0.0.1:19000", "state": "counted", "chain_hash": "0123456789abcdef",
                 "plugins": [{"name": "acl", "calls": 10, "continues": 7, "rewrites": 0,
                              "replies": 0, "rejects": 3, "remembered": 5, "failures": 0,
                              "nanos": 25000, "nanos_per_call": 2500.0}]},
                {"addr": "127.0.0.1:19001", "state": "no_answer", "plugins": [],
                 "error": "no answer within 800 ms"},
            ],
        });
        let t = stats(&v);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "revision 4, chain 0123456789ab: summed over 1 of 2 proxies"
        );
        let cells: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(
            cells,
            [
                "acl", "10", "7", "0", "0", "3", "5", "0", "25.0", "µs", "2.5", "µs"
            ]
        );
        assert!(
            lines[5].starts_with("127.0.0.1:19000  counted    0123456789ab  acl"),
            "{t}"
        );
        assert!(
            lines[6].starts_with("127.0.0.1:19001  no_answer  -             -"),
            "{t}"
        );
        assert_eq!(
            lines[7],
            "proxy 127.0.0.1:19001 is not counted: no answer within 800 ms"
        );
    }
}
