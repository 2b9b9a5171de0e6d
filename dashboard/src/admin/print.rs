//! How `tessera admin` prints the dashboard's answers for people: aligned tables of
//! groups, slots, proxies and the product, and the helpers every subcommand's printing uses.

use serde_json::Value;

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

pub(crate) fn health(v: &Value) -> String {
    format!(
        "ok: product {}, store {}, revision {}\n",
        text(&v["product"]),
        text(&v["store"]),
        text(&v["revision"])
    )
}

pub(crate) fn password(v: &Value) -> String {
    match v.as_str() {
        None | Some("") => "(none)".to_string(),
        Some(s) => s.to_string(),
    }
}

pub(crate) fn product(v: &Value) -> String {
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

pub(crate) fn group_rows(v: &Value) -> String {
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

pub(crate) fn groups(v: &Value) -> String {
    group_rows(&v["groups"])
}

pub(crate) fn slot_rows(v: &Value) -> String {
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

pub(crate) fn slots(v: &Value) -> String {
    slot_rows(&v["slots"])
}

/// The proxies' table; a `HOLDING` column (why a proxy does not acknowledge the latest
/// revision, holding a migration) when a proxy has a reason.
pub(crate) fn proxy_rows(v: &Value) -> String {
    let holding = items(v).iter().any(|p| !p["holding"].is_null());
    let rows: Vec<Vec<String>> = items(v)
        .iter()
        .map(|p| {
            let mut row = vec![
                text(&p["addr"]),
                text(&p["admin_addr"]),
                text(&p["version"]),
                text(&p["pid"]),
                p["start_time"]
                    .as_u64()
                    .map_or_else(|| "-".to_string(), crate::fmt_unix_time),
                text(&p["applied_revision"]),
                format!("{:.1}", p["ops_per_sec"].as_f64().unwrap_or(0.0)),
                text(&p["sessions"]),
                text(&p["errors"]),
                (if p["behind"].as_bool() == Some(true) {
                    "behind"
                } else {
                    "current"
                })
                .to_string(),
                text(&p["topology_error"]),
                text(&p["plugin_error"]),
            ];
            if holding {
                row.push(text(&p["holding"]));
            }
            row
        })
        .collect();
    if rows.is_empty() {
        return "no proxies registered\n".to_string();
    }
    let mut headers = vec![
        "ADDR",
        "ADMIN",
        "VERSION",
        "PID",
        "STARTED",
        "APPLIED",
        "OPS/S",
        "SESSIONS",
        "ERRORS",
        "TABLE",
        "TOPOLOGY ERROR",
        "PLUGIN ERROR",
    ];
    if holding {
        headers.push("HOLDING");
    }
    table(&headers, &rows)
}

pub(crate) fn proxies(v: &Value) -> String {
    format!(
        "revision {}\n{}",
        text(&v["revision"]),
        proxy_rows(&v["proxies"])
    )
}

pub(crate) fn topology(v: &Value) -> String {
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
    fn the_proxy_table_shows_sessions_errors_and_why_a_proxy_holds_a_migration() {
        let why = "draining: 3 batches routed by revision 40 in flight";
        let proxies = serde_json::json!([
            {"addr": "127.0.0.1:19000", "applied_revision": 40, "behind": false,
             "ops_per_sec": 2.5, "sessions": 12, "errors": 3, "holding": why},
            {"addr": "127.0.0.1:19001", "applied_revision": 41, "behind": false},
        ]);
        let t = proxy_rows(&proxies);
        let lines: Vec<&str> = t.lines().collect();
        assert!(
            lines[0].contains("OPS/S  SESSIONS  ERRORS  TABLE") && lines[0].ends_with("HOLDING"),
            "{t}"
        );
        let cells: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(cells[6..10], ["2.5", "12", "3", "current"], "{t}");
        assert!(lines[1].ends_with(why), "{t}");
        let cells: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(
            cells[cells.len() - 6..],
            ["-", "-", "current", "-", "-", "-"],
            "{t}"
        );

        // Without a holding proxy, no HOLDING column.
        let t = proxy_rows(&serde_json::json!([{"addr": "127.0.0.1:19001", "sessions": 0}]));
        assert!(t.lines().next().unwrap().ends_with("PLUGIN ERROR"), "{t}");
    }
}
