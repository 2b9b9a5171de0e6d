//! `key-prefix`: tenant namespaces on one Redis cluster.
//!
//! Configuration (JSON):
//!
//! ```json
//! { "tenants": { "alice": "t1:", "bob": "t2:" }, "default": null }
//! ```
//!
//! Each connection's user (the `user` attribute, e.g. set by `acl-auth`) maps to a prefix;
//! `default` is the prefix of users not listed (`null`: none). For every command that
//! touches keys:
//!
//! - every key argument (as marked by the proxy) gets the prefix: `GET k` → `GET t1:k`;
//! - `KEYS pattern` → `KEYS t1:pattern`; `SCAN cursor [MATCH p]` → `SCAN cursor MATCH t1:p`
//!   (`MATCH t1:*` added when absent); glob characters in the prefix are escaped;
//! - the replies of `KEYS`, `SCAN` and `RANDOMKEY` have the prefix stripped again (a
//!   `RANDOMKEY` that lands on another tenant's key answers null, a reply of another form
//!   an error: no key outside the namespace reaches the tenant).
//!
//! A user with no tenant and no default gets `-NOPERM no tenant for this user` for any
//! command with keys; commands without keys (`PING`, `AUTH`, ...) pass, so the plugin can
//! sit before an auth plugin in the chain.
//!
//! - the `BY` and `GET` patterns of `SORT` and `SORT_RO` get the prefix too (`GET #` and a
//!   `BY` without `*`, which name no key, are left alone), so a sort reads the tenant's keys
//!   only; with a prefix that contains `*` (which SORT would substitute) such a SORT is refused;
//! - `DBSIZE`, `FLUSHDB` and `FLUSHALL`, which act on every tenant's keys and cannot be
//!   confined to one namespace, are refused for a tenant (`-NOPERM ...`);
//! - the commands that reach what every tenant shares ([`SHARED`]: `CONFIG SET` and
//!   `RESETSTAT`, `SCRIPT FLUSH` and `KILL`, `FUNCTION FLUSH`, `DELETE`, `RESTORE`, `KILL`
//!   and `LOAD REPLACE`, `CLIENT LIST` and `KILL`) are refused for a tenant and for a user
//!   without one;
//! - `INFO`'s reply loses its keyspace section (every tenant's key counts), for every user.
//!
//! Not rewritten: keys a Lua script builds itself.
//!
//! For a user with a prefix, every command but `KEYS` and `SCAN` goes on as a *PrefixKeys*
//! verdict (the prefix alone, not the rewritten command) that the proxy is asked to
//! remember: it prefixes the connection's later commands of that id itself, without a call,
//! until the connection's context changes. `KEYS` and `SCAN` (whose patterns are rewritten)
//! are rewrites, called every time; `SORT` and `FUNCTION LOAD` (refused with `REPLACE`) and
//! the refusals that depend on a subcommand are not remembered either. Without a prefix
//! only the `NO_TENANT` reject of `KEYS`, `SCAN` and `RANDOMKEY` is remembered: whether
//! another command has keys can depend on its arguments (`EVAL` with `numkeys` 0 or 2).

use std::collections::BTreeMap;

use serde::Deserialize;
use tessera_sdk::{ByName, Command, Context, Plugin, Verdict, export_plugin, prepend, reply};

pub mod resp;

/// The error for a user without a tenant.
pub const NO_TENANT: &str = "NOPERM no tenant for this user";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    tenants: BTreeMap<String, String>,
    #[serde(default)]
    default: Option<String>,
}

/// The plugin: users' prefixes.
#[derive(Debug)]
pub struct KeyPrefix {
    tenants: ByName<String>,
    default: Option<String>,
}

impl KeyPrefix {
    /// Parses the JSON configuration.
    pub fn from_json(config: &[u8]) -> Result<Self, String> {
        let c: Config =
            serde_json::from_slice(config).map_err(|e| format!("key-prefix: bad config: {e}"))?;
        if let Some((user, _)) = c.tenants.iter().find(|(_, p)| p.is_empty()) {
            return Err(format!(
                "key-prefix: bad config: empty prefix for user '{user}'"
            ));
        }
        Ok(KeyPrefix {
            tenants: c.tenants.into_iter().collect(),
            default: c.default.filter(|p| !p.is_empty()),
        })
    }

    /// The prefix of the connection's user, if any (one comparison for the user of the last
    /// call: [`ByName::of_user`]).
    pub fn prefix_of(&self, ctx: &Context) -> Option<&str> {
        self.tenants
            .of_user(ctx)
            .or(self.default.as_ref())
            .map(String::as_str)
    }
}

/// The commands whose replies carry keys, which [`strip_reply`] strips; a tenant is needed
/// by their name alone.
pub const LISTS_KEYS: [&str; 3] = ["keys", "scan", "randomkey"];

/// The replies `on_reply` sees: those of [`LISTS_KEYS`], and `INFO`'s, whose keyspace
/// section (every tenant's key counts) [`strip_keyspace`] removes.
pub const REPLY_SUBSCRIPTIONS: [&str; 4] = ["keys", "scan", "randomkey", "info"];

/// Commands that act on the keys of every tenant at once: refused for a tenant, and, like
/// any command with keys, for a user without one.
pub const KEYSPACE_WIDE: [&str; 3] = ["dbsize", "flushdb", "flushall"];

const SERVERS: &str = "changes the servers every tenant shares";
const SCRIPTS: &str = "acts on the scripts every tenant shares";
const LIBRARIES: &str = "acts on the function libraries every tenant shares";
const SESSIONS: &str = "reaches every tenant's sessions";

/// Commands that reach what every tenant shares (the servers' settings and statistics, the
/// scripts and function libraries, the proxy's client sessions), with what they reach:
/// refused for a tenant and for a user without one.
pub const SHARED: [(&str, &str); 10] = [
    ("config|set", SERVERS),
    ("config|resetstat", SERVERS),
    ("script|flush", SCRIPTS),
    ("script|kill", SCRIPTS),
    ("function|flush", LIBRARIES),
    ("function|delete", LIBRARIES),
    ("function|restore", LIBRARIES),
    ("function|kill", LIBRARIES),
    ("client|list", SESSIONS),
    ("client|kill", SESSIONS),
];

/// The refusal of a command that reaches what every tenant shares ([`SHARED`], and
/// `FUNCTION LOAD REPLACE`, which can replace another tenant's library), if it is one.
pub fn shared_refusal(cmd: &Command) -> Option<String> {
    if let Some((name, what)) = SHARED.into_iter().find(|(n, _)| cmd.is_named(n)) {
        return Some(format!("NOPERM '{name}' {what}"));
    }
    // FUNCTION LOAD [REPLACE] code
    let replace = cmd.len() == 4
        && cmd
            .arg(2)
            .is_some_and(|a| a.eq_ignore_ascii_case(b"replace"));
    (replace && cmd.is_named("function|load"))
        .then(|| format!("NOPERM 'function|load' REPLACE {LIBRARIES}"))
}

/// Whether the command needs a tenant: it has keys, lists keys, or acts on all of them.
fn touches_keys(cmd: &Command) -> bool {
    cmd.keys().next().is_some() || lists_keys(cmd) || KEYSPACE_WIDE.contains(&cmd.name())
}

/// The positions of the `BY` and `GET` patterns of a `SORT` or `SORT_RO` that name keys,
/// found as Redis's `sortCommandGeneric` reads the options: `ASC`, `DESC`, `ALPHA` alone,
/// `LIMIT` with two arguments, `STORE`, `BY` and `GET` with one. `GET #` and a `BY` without
/// `*` name no key. Reading stops at an option Redis would refuse (it runs nothing then).
pub fn sort_patterns(cmd: &Command) -> Vec<usize> {
    let mut out = Vec::new();
    if !matches!(cmd.name(), "sort" | "sort_ro") {
        return out;
    }
    let argc = cmd.len();
    let mut j = 2;
    while j < argc {
        let opt = cmd.arg(j).unwrap_or_default();
        let left = argc - j - 1;
        let is = |name: &str| opt.eq_ignore_ascii_case(name.as_bytes());
        if is("asc") || is("desc") || is("alpha") {
            j += 1;
        } else if is("limit") && left >= 2 {
            j += 3;
        } else if is("store") && left >= 1 {
            j += 2;
        } else if (is("by") || is("get")) && left >= 1 {
            let pattern = cmd.arg(j + 1).unwrap_or_default();
            let names_keys = if is("by") {
                pattern.contains(&b'*')
            } else {
                pattern != b"#"
            };
            if names_keys {
                out.push(j + 1);
            }
            j += 2;
        } else {
            break;
        }
    }
    out
}

/// Whether the command lists keys ([`LISTS_KEYS`]): a tenant is needed by its name alone.
fn lists_keys(cmd: &Command) -> bool {
    LISTS_KEYS.contains(&cmd.name())
}

/// Whether [`prefix_command`] rewrites more than the keys of the command (a pattern).
pub fn rewrites_patterns(cmd: &Command) -> bool {
    matches!(cmd.name(), "keys" | "scan") || !sort_patterns(cmd).is_empty()
}

/// `prefix` with the glob characters of Redis's pattern syntax escaped.
pub fn escape_glob(prefix: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(prefix.len() + 2);
    for b in prefix.bytes() {
        if matches!(b, b'*' | b'?' | b'[' | b']' | b'\\') {
            out.push(b'\\');
        }
        out.push(b);
    }
    out
}

/// Rewrites `cmd` into the namespace `prefix`. Keys are prefixed in place with
/// [`Command::prefix_keys`], so for a command with only keys to prefix (GET, SET, ...) the
/// SDK sends the proxy the prefix alone, and this allocates nothing once the SDK's buffers
/// have grown. The patterns of `KEYS` and `SCAN` (which have no key arguments) are
/// rewritten instead ([`rewrites_patterns`]).
pub fn prefix_command(cmd: &mut Command, prefix: &str) {
    if !rewrites_patterns(cmd) {
        cmd.prefix_keys(prefix.as_bytes());
        return;
    }
    match cmd.name() {
        "sort" | "sort_ro" => {
            for i in sort_patterns(cmd) {
                let _ = cmd.edit_arg(i, |pattern| prepend(pattern, prefix.as_bytes()));
            }
            cmd.prefix_keys(prefix.as_bytes());
        }
        "keys" => {
            let _ = cmd.edit_arg(1, |pattern| prepend(pattern, &escape_glob(prefix)));
        }
        "scan" => {
            // SCAN cursor [MATCH pattern] [COUNT count] [TYPE type]: options come in pairs.
            let mut i = 2;
            let mut found = false;
            while i + 1 < cmd.len() {
                if cmd.arg(i).is_some_and(|a| a.eq_ignore_ascii_case(b"match")) {
                    let _ = cmd.edit_arg(i + 1, |pattern| prepend(pattern, &escape_glob(prefix)));
                    found = true;
                }
                i += 2;
            }
            if !found {
                cmd.push_arg("MATCH");
                cmd.push_arg([escape_glob(prefix).as_slice(), b"*"].concat());
            }
        }
        _ => {}
    }
}

/// The reply to `name` (one of [`LISTS_KEYS`]) with `prefix` stripped from the keys it
/// carries, or `None` to send it unchanged (an error or null). A reply of another form,
/// which could carry a key out of the namespace, becomes an error.
pub fn strip_reply(name: &str, reply: &[u8], prefix: &str) -> Option<Vec<u8>> {
    use resp::Value;
    let p = prefix.as_bytes();
    // Keeps the keys in the namespace, stripped; drops any other (cannot happen with the
    // prefixed pattern, but a tenant must never see another tenant's key).
    let strip_all = |items: Vec<Value>| -> Vec<u8> {
        let keys: Vec<Vec<u8>> = items
            .into_iter()
            .filter_map(|v| match v {
                Value::Bulk(k) => k.strip_prefix(p).map(reply::bulk),
                _ => None,
            })
            .collect();
        reply::array(keys)
    };
    let unexpected =
        || Some(format!("-ERR key-prefix: unexpected reply to '{name}'\r\n").into_bytes());
    let Some(parsed) = resp::parse(reply) else {
        return unexpected();
    };
    match (name, parsed) {
        (_, Value::Null) => None,
        (_, Value::Other(v)) if v.first() == Some(&b'-') => None,
        ("keys", Value::Array(items)) => Some(strip_all(items)),
        ("scan", Value::Array(mut items)) if items.len() == 2 => {
            let (Some(Value::Array(keys)), Some(Value::Bulk(cursor))) = (items.pop(), items.pop())
            else {
                return unexpected();
            };
            Some(reply::array([reply::bulk(cursor), strip_all(keys)]))
        }
        ("randomkey", Value::Bulk(k)) => Some(match k.strip_prefix(p) {
            Some(k) => reply::bulk(k),
            None => reply::null(),
        }),
        _ => unexpected(),
    }
}

/// `INFO`'s reply (a bulk string, or RESP3's verbatim string) without the lines of its
/// `# Keyspace` section, which count every tenant's keys; `None` when it has none.
pub fn strip_keyspace(reply: &[u8]) -> Option<Vec<u8>> {
    let (head, rest) = reply.split_at(reply.windows(2).position(|w| w == b"\r\n")? + 2);
    let verbatim = match head.first() {
        Some(b'$') => false,
        Some(b'=') => true,
        _ => return None,
    };
    let text = rest.strip_suffix(b"\r\n")?;
    let (format, text) = if verbatim {
        text.split_at_checked(4)?
    } else {
        (&b""[..], text)
    };
    let mut out = Vec::with_capacity(text.len());
    let mut in_keyspace = false;
    let mut dropped = false;
    for line in text.split_inclusive(|&b| b == b'\n') {
        let bare = line.strip_suffix(b"\r\n").unwrap_or(line);
        if bare.starts_with(b"#") || bare.is_empty() {
            in_keyspace = bare.eq_ignore_ascii_case(b"# keyspace");
        } else if in_keyspace {
            dropped = true;
            continue;
        }
        out.extend_from_slice(line);
    }
    if !dropped {
        return None;
    }
    let body = [format, &out].concat();
    let kind = if verbatim { "=" } else { "$" };
    Some(
        [
            format!("{kind}{}\r\n", body.len()).as_bytes(),
            &body,
            b"\r\n",
        ]
        .concat(),
    )
}

impl Plugin for KeyPrefix {
    /// Gates access (it keeps tenants apart): never `fail = "open"`.
    const GATES_ACCESS: bool = true;

    fn configure(config: &[u8]) -> Result<Self, String> {
        Self::from_json(config)
    }

    /// `on_reply` only for the replies that carry keys (`on_command` sees every command).
    fn reply_subscriptions() -> &'static [&'static str] {
        &REPLY_SUBSCRIPTIONS
    }

    fn on_command(&mut self, ctx: &Context, cmd: &mut Command) -> Verdict {
        // Not remembered: the verdict depends on the arguments (CONFIG GET goes on).
        if let Some(refusal) = shared_refusal(cmd) {
            return match self.prefix_of(ctx) {
                Some(_) => Verdict::reject(refusal),
                None => Verdict::reject(NO_TENANT),
            };
        }
        match self.prefix_of(ctx) {
            Some(_) if KEYSPACE_WIDE.contains(&cmd.name()) => {
                cmd.remember();
                Verdict::reject(format!(
                    "NOPERM '{}' acts on every tenant's keys",
                    cmd.name()
                ))
            }
            Some(prefix) if prefix.contains('*') && !sort_patterns(cmd).is_empty() => {
                Verdict::reject(
                    "NOPERM SORT patterns cannot be confined to a tenant whose prefix contains '*'",
                )
            }
            Some(prefix) => {
                prefix_command(cmd, prefix);
                // A PrefixKeys verdict is a function of the user and the command id, even
                // for a command without keys this time (EVAL with numkeys 0); not for SORT,
                // whose patterns depend on its arguments, nor for FUNCTION LOAD, refused
                // with REPLACE.
                if !rewrites_patterns(cmd)
                    && !matches!(cmd.name(), "sort" | "sort_ro")
                    && !cmd.is_named("function|load")
                {
                    cmd.remember();
                }
                Verdict::Continue
            }
            None if lists_keys(cmd) => {
                cmd.remember();
                Verdict::reject(NO_TENANT)
            }
            None if touches_keys(cmd) => Verdict::reject(NO_TENANT),
            None => Verdict::Continue,
        }
    }

    fn on_reply(&mut self, ctx: &Context, cmd: &Command, reply: &[u8]) -> Option<Vec<u8>> {
        match cmd.name() {
            // Every user: a user without a tenant reads no key either.
            "info" => strip_keyspace(reply),
            name if LISTS_KEYS.contains(&name) => strip_reply(name, reply, self.prefix_of(ctx)?),
            _ => None,
        }
    }
}

export_plugin!(KeyPrefix, hooks = [on_command, on_reply]);

#[cfg(test)]
#[global_allocator]
static ALLOC: tessera_sdk::testing::CountingAllocator = tessera_sdk::testing::CountingAllocator;

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_sdk::dispatch::Runtime;
    use tessera_sdk::testing::{
        Decision, command_input, commands_input, count_allocations, decide, reply_input,
    };
    use tessera_sdk::wire::{self, WireAction};

    fn plugin() -> KeyPrefix {
        KeyPrefix::from_json(br#"{"tenants": {"alice": "t1:", "eve": "a*b:"}}"#).unwrap()
    }

    fn alice() -> Context {
        Context::default().with_user("alice")
    }

    fn args(cmd: &Command) -> Vec<String> {
        cmd.args()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect()
    }

    fn decided(p: &mut KeyPrefix, user: &str, args: &[&str], keys: &[usize]) -> Decision {
        let mut cmd = Command::new(args.iter().copied());
        for &k in keys {
            cmd = cmd.with_key(k);
        }
        decide(p, &Context::default().with_user(user), cmd)
    }

    #[test]
    fn the_example_config_parses() {
        KeyPrefix::from_json(include_bytes!("../config.example.json")).unwrap();
    }

    #[test]
    fn keys_get_the_tenant_prefix() {
        let mut p = plugin();
        let mut cmd = Command::new(["MSET", "a", "1", "b", "2"])
            .with_key(1)
            .with_key(3);
        assert_eq!(p.on_command(&alice(), &mut cmd), Verdict::Continue);
        assert_eq!(args(&cmd), ["MSET", "t1:a", "1", "t1:b", "2"]);
        assert!(cmd.is_modified());
    }

    #[test]
    fn keyless_commands_pass_untouched_even_without_tenant() {
        let mut p = plugin();
        let mut cmd = Command::new(["PING"]);
        assert_eq!(
            p.on_command(&Context::default(), &mut cmd),
            Verdict::Continue
        );
        assert!(!cmd.is_modified());
    }

    #[test]
    fn no_tenant_no_default_is_refused() {
        let mut p = plugin();
        let mut cmd = Command::new(["GET", "k"]).with_key(1);
        let bob = Context::default().with_user("bob");
        assert_eq!(p.on_command(&bob, &mut cmd), Verdict::reject(NO_TENANT));
        let mut p = KeyPrefix::from_json(br#"{"tenants": {}, "default": "shared:"}"#).unwrap();
        assert_eq!(p.on_command(&bob, &mut cmd), Verdict::Continue);
        assert_eq!(args(&cmd), ["GET", "shared:k"]);
    }

    #[test]
    fn keys_and_scan_patterns_are_namespaced() {
        let mut p = plugin();
        let mut keys = Command::new(["KEYS", "user:*"]);
        p.on_command(&alice(), &mut keys);
        assert_eq!(args(&keys), ["KEYS", "t1:user:*"]);

        let mut scan = Command::new(["SCAN", "0", "COUNT", "10"]);
        p.on_command(&alice(), &mut scan);
        assert_eq!(args(&scan), ["SCAN", "0", "COUNT", "10", "MATCH", "t1:*"]);

        let mut scan = Command::new(["scan", "0", "match", "u*", "type", "string"]);
        p.on_command(&alice(), &mut scan);
        assert_eq!(
            args(&scan),
            ["scan", "0", "match", "t1:u*", "type", "string"]
        );

        let eve = Context::default().with_user("eve");
        let mut keys = Command::new(["KEYS", "*"]);
        p.on_command(&eve, &mut keys);
        assert_eq!(args(&keys), ["KEYS", "a\\*b:*"]);
    }

    #[test]
    fn replies_carrying_keys_are_stripped() {
        let mut p = plugin();
        let keys = Command::new(["KEYS", "t1:*"]);
        let reply = b"*3\r\n$4\r\nt1:a\r\n$5\r\nt1:bc\r\n$4\r\nt2:x\r\n";
        assert_eq!(
            p.on_reply(&alice(), &keys, reply).unwrap(),
            b"*2\r\n$1\r\na\r\n$2\r\nbc\r\n"
        );

        let scan = Command::new(["SCAN", "0"]);
        let reply = b"*2\r\n$2\r\n17\r\n*1\r\n$4\r\nt1:k\r\n";
        assert_eq!(
            p.on_reply(&alice(), &scan, reply).unwrap(),
            b"*2\r\n$2\r\n17\r\n*1\r\n$1\r\nk\r\n"
        );

        let rk = Command::new(["RANDOMKEY"]);
        assert_eq!(
            p.on_reply(&alice(), &rk, b"$4\r\nt1:k\r\n").unwrap(),
            b"$1\r\nk\r\n"
        );
        assert_eq!(
            p.on_reply(&alice(), &rk, b"$4\r\nt2:k\r\n").unwrap(),
            b"$-1\r\n"
        );
        assert_eq!(p.on_reply(&alice(), &rk, b"$-1\r\n"), None);
        assert_eq!(p.on_reply(&alice(), &rk, b"_\r\n"), None);
        assert_eq!(p.on_reply(&alice(), &keys, b"-ERR x\r\n"), None);

        let get = Command::new(["GET", "t1:k"]).with_key(1);
        assert_eq!(p.on_reply(&alice(), &get, b"$4\r\nt1:v\r\n"), None);
    }

    #[test]
    fn bad_configs_are_refused() {
        assert!(KeyPrefix::from_json(br#"{"tenants": {"a": ""}}"#).is_err());
        assert!(KeyPrefix::from_json(br#"{"default": "x"}"#).is_err());
    }

    #[test]
    fn prefixing_a_key_costs_no_allocation() {
        let mut rt = Runtime::<KeyPrefix>::new();
        rt.on_configure(include_bytes!("../config.example.json"));
        let get = Command::new(["GET", "key:000000000001"]).with_key(1);
        let set = Command::new(["SET", "key:000000000002", "xxx"]).with_key(1);
        let inputs = [command_input(&alice(), &get), command_input(&alice(), &set)];
        for input in &inputs {
            rt.on_command(input);
        }
        for input in &inputs {
            let (_, n) = count_allocations(|| rt.on_command(input).is_some());
            assert_eq!(n, 0);
        }
        let v = wire::decode_verdict(rt.on_command(&inputs[1]).unwrap()).unwrap();
        assert_eq!(v.action, WireAction::PrefixKeys(b"t1:".to_vec()));
        assert_eq!(v.remember, Some(vec![]));
        let batch = commands_input(&alice(), &[get, set]);
        rt.on_commands(&batch);
        let (out, n) = count_allocations(|| rt.on_commands(&batch).map(|b| b.len()));
        assert_eq!(n, 0);
        assert_eq!(
            out,
            Some(4 + 2 * (4 + 1 + 4 + 4 + 3 + 4)),
            "two remembered PrefixKeys"
        );
    }

    #[test]
    fn a_tenant_gets_remembered_prefix_keys_but_for_keys_and_scan() {
        let mut p = plugin();
        let prefix = Some(WireAction::PrefixKeys(b"t1:".to_vec()));
        let cases: [(&[&str], &[usize], &[&str]); 6] = [
            (&["GET", "k"], &[1], &["GET", "t1:k"]),
            (
                &["SET", "k", "v", "EX", "1"],
                &[1],
                &["SET", "t1:k", "v", "EX", "1"],
            ),
            (
                &["MSET", "a", "1", "b", "2"],
                &[1, 3],
                &["MSET", "t1:a", "1", "t1:b", "2"],
            ),
            // Nothing to prefix, still the verdict of every command of this id.
            (&["PING"], &[], &["PING"]),
            (&["EVAL", "s", "0"], &[], &["EVAL", "s", "0"]),
            (
                &["EVAL", "s", "2", "a", "b"],
                &[3, 4],
                &["EVAL", "s", "2", "t1:a", "t1:b"],
            ),
        ];
        for (args, keys, want) in cases {
            let d = decided(&mut p, "alice", args, keys);
            assert_eq!(d.verdict, Verdict::Continue);
            assert_eq!(Some(d.wire.action.clone()), prefix, "{args:?}");
            assert_eq!(d.remembered(), Some(vec![]), "{args:?}");
            assert_eq!(d.args().unwrap(), want);
            // What the plugin saw afterwards is what the proxy passes on.
            assert_eq!(d.command.args().count(), want.len());
            assert!(d.command.args().zip(want).all(|(a, w)| a == w.as_bytes()));
        }

        // KEYS and SCAN rewrite their pattern: a full rewrite, asked every time.
        let d = decided(&mut p, "alice", &["KEYS", "u*"], &[]);
        let want = ["KEYS", "t1:u*"].map(|a| a.as_bytes().to_vec()).to_vec();
        assert_eq!(
            (d.remembered(), d.wire.action),
            (None, WireAction::Rewrite(want))
        );
        let d = decided(&mut p, "alice", &["SCAN", "0"], &[]);
        assert_eq!(d.wire.action.kind(), 1);
        assert_eq!(d.remembered(), None);
        assert_eq!(d.args().unwrap(), ["SCAN", "0", "MATCH", "t1:*"]);
        // RANDOMKEY has no pattern: its reply is stripped, the command goes as it is.
        let d = decided(&mut p, "alice", &["RANDOMKEY"], &[]);
        assert_eq!(
            (Some(d.wire.action.clone()), d.remembered()),
            (prefix, Some(vec![]))
        );

        let mut shared = KeyPrefix::from_json(br#"{"tenants": {}, "default": "s:"}"#).unwrap();
        let d = decided(&mut shared, "bob", &["GET", "k"], &[1]);
        assert_eq!(d.wire.action, WireAction::PrefixKeys(b"s:".to_vec()));
        assert_eq!(d.remembered(), Some(vec![]));
    }

    #[test]
    fn without_a_tenant_only_what_the_name_decides_is_remembered() {
        let mut p = plugin();
        let reject = Verdict::reject(NO_TENANT);
        // (command, keys, rejected, remembered)
        let cases: [(&[&str], &[usize], bool, bool); 7] = [
            (&["GET", "k"], &[1], true, false),
            (&["EVAL", "s", "1", "k"], &[3], true, false),
            (&["EVAL", "s", "0"], &[], false, false),
            (&["PING"], &[], false, false),
            (&["KEYS", "*"], &[], true, true),
            (&["SCAN", "0"], &[], true, true),
            (&["RANDOMKEY"], &[], true, true),
        ];
        for user in ["", "bob"] {
            for (args, keys, rejected, remembered) in cases {
                let d = decided(&mut p, user, args, keys);
                assert_eq!(d.verdict == reject, rejected, "{user} {args:?}");
                assert_eq!(d.remembered(), remembered.then(Vec::new), "{user} {args:?}");
                if !rejected {
                    assert!(d.wire.is_plain_continue(), "{user} {args:?}");
                }
            }
        }
    }

    #[test]
    fn on_reply_is_subscribed_only_for_replies_with_keys() {
        assert_eq!(
            KeyPrefix::reply_subscriptions(),
            ["keys", "scan", "randomkey", "info"]
        );
        assert!(
            KeyPrefix::subscriptions().is_empty(),
            "on_command sees every command"
        );
        // Called anyway (an older proxy ignores the list), a GET reply goes out unchanged.
        let mut rt = Runtime::<KeyPrefix>::new();
        rt.on_configure(include_bytes!("../config.example.json"));
        let get = Command::new(["GET", "t1:k"]).with_key(1);
        assert_eq!(
            rt.on_reply(&reply_input(&alice(), &get, b"$4\r\nt1:v\r\n")),
            None
        );
        let keys = Command::new(["KEYS", "t1:*"]);
        let out = rt.on_reply(&reply_input(&alice(), &keys, b"*1\r\n$4\r\nt1:a\r\n"));
        let v = wire::decode_verdict(out.unwrap()).unwrap();
        assert_eq!(v.action, WireAction::Reply(b"*1\r\n$1\r\na\r\n".to_vec()));
    }

    #[test]
    fn sort_patterns_are_prefixed_and_keyspace_wide_commands_refused() {
        let mut p = plugin();
        let sort = |p: &mut KeyPrefix, user: &str, line: &[&str], keys: &[usize]| {
            let mut cmd = Command::new(line.iter().copied());
            for &k in keys {
                cmd = cmd.with_key(k);
            }
            let ctx = Context::default().with_user(user);
            let v = p.on_command(&ctx, &mut cmd);
            (v, args(&cmd), cmd.remembered().is_some())
        };
        let (v, out, remembered) = sort(
            &mut p,
            "alice",
            &[
                "SORT",
                "{x}k",
                "BY",
                "{x}w_*",
                "GET",
                "#",
                "GET",
                "{x}o_*->f",
                "LIMIT",
                "0",
                "5",
                "STORE",
                "{x}d",
            ],
            &[1, 12],
        );
        assert_eq!(v, Verdict::Continue);
        assert_eq!(
            out,
            [
                "SORT",
                "t1:{x}k",
                "BY",
                "t1:{x}w_*",
                "GET",
                "#",
                "GET",
                "t1:{x}o_*->f",
                "LIMIT",
                "0",
                "5",
                "STORE",
                "t1:{x}d"
            ]
        );
        assert!(!remembered, "SORT's patterns depend on its arguments");
        // BY without `*` names no key; `by` as LIMIT's argument is no option.
        let (_, out, _) = sort(
            &mut p,
            "alice",
            &["sort_ro", "k", "by", "nosort", "ALPHA"],
            &[1],
        );
        assert_eq!(out, ["sort_ro", "t1:k", "by", "nosort", "ALPHA"]);
        let (v, _, _) = sort(&mut p, "eve", &["SORT", "k", "GET", "o_*"], &[1]);
        assert!(
            matches!(v, Verdict::Reject(ref m) if m.starts_with("NOPERM")),
            "{v:?}"
        );
        for name in KEYSPACE_WIDE {
            let (v, _, remembered) = sort(&mut p, "alice", &[name], &[]);
            assert_eq!(
                v,
                Verdict::reject(format!("NOPERM '{name}' acts on every tenant's keys"))
            );
            assert!(remembered);
            let (v, _, _) = sort(&mut p, "nobody", &[name], &[]);
            assert_eq!(v, Verdict::reject(NO_TENANT));
        }
        for line in [&["CONFIG", "set", "hz", "20"][..], &["config", "RESETSTAT"]] {
            let name = format!("config|{}", line[1].to_ascii_lowercase());
            let (v, _, remembered) = sort(&mut p, "alice", line, &[]);
            assert_eq!(
                v,
                Verdict::reject(format!(
                    "NOPERM '{name}' changes the servers every tenant shares"
                ))
            );
            assert!(!remembered);
            let (v, _, _) = sort(&mut p, "nobody", line, &[]);
            assert_eq!(v, Verdict::reject(NO_TENANT));
        }
        let (v, out, _) = sort(&mut p, "alice", &["CONFIG", "GET", "hz"], &[]);
        assert_eq!(v, Verdict::Continue);
        assert_eq!(out, ["CONFIG", "GET", "hz"]);
    }

    #[test]
    fn commands_reaching_what_tenants_share_are_refused() {
        let mut p = plugin();
        let refused = [
            (&["SCRIPT", "flush", "ASYNC"][..], "script|flush", SCRIPTS),
            (&["script", "KILL"], "script|kill", SCRIPTS),
            (&["FUNCTION", "FLUSH"], "function|flush", LIBRARIES),
            (&["FUNCTION", "DELETE", "lib"], "function|delete", LIBRARIES),
            (&["FUNCTION", "RESTORE", "x"], "function|restore", LIBRARIES),
            (&["FUNCTION", "KILL"], "function|kill", LIBRARIES),
            (&["CLIENT", "LIST"], "client|list", SESSIONS),
            (&["CLIENT", "KILL", "ID", "7"], "client|kill", SESSIONS),
        ];
        for (line, name, what) in refused {
            let d = decided(&mut p, "alice", line, &[]);
            assert_eq!(
                d.verdict,
                Verdict::reject(format!("NOPERM '{name}' {what}"))
            );
            assert_eq!(d.remembered(), None, "{line:?}");
            let d = decided(&mut p, "nobody", line, &[]);
            assert_eq!(d.verdict, Verdict::reject(NO_TENANT), "{line:?}");
        }
        let d = decided(
            &mut p,
            "alice",
            &["FUNCTION", "LOAD", "replace", "#!lua"],
            &[],
        );
        assert_eq!(
            d.verdict,
            Verdict::reject(format!("NOPERM 'function|load' REPLACE {LIBRARIES}"))
        );
        let d = decided(&mut p, "alice", &["FUNCTION", "LOAD", "#!lua name=l"], &[]);
        assert_eq!(d.verdict, Verdict::Continue);
        assert_eq!(d.remembered(), None, "the next one may say REPLACE");
        for line in [
            &["FUNCTION", "LOAD", "#!lua name=l"][..],
            &["FUNCTION", "LIST"],
            &["SCRIPT", "LOAD", "return 1"],
            &["CLIENT", "INFO"],
            &["CLIENT", "SETNAME", "x"],
            &["INFO", "keyspace"],
            &["WAIT", "0", "10"],
        ] {
            let d = decided(&mut p, "alice", line, &[]);
            assert_eq!(d.verdict, Verdict::Continue, "{line:?}");
        }
    }

    #[test]
    fn info_loses_its_keyspace_lines_for_every_user() {
        let mut p = plugin();
        let info = Command::new(["INFO"]);
        let text = "# Server\r\nredis_version:7.2.4\r\n\r\n# Keyspace\r\ndb0:keys=3,expires=0,avg_ttl=0\r\ndb2:keys=1,expires=0,avg_ttl=0\r\n\r\n# Other\r\nx:1\r\n";
        let want = "# Server\r\nredis_version:7.2.4\r\n\r\n# Keyspace\r\n\r\n# Other\r\nx:1\r\n";
        let bulk = |t: &str| format!("${}\r\n{t}\r\n", t.len()).into_bytes();
        for ctx in [alice(), Context::default()] {
            assert_eq!(p.on_reply(&ctx, &info, &bulk(text)), Some(bulk(want)));
        }
        let verbatim = |t: &str| format!("={}\r\ntxt:{t}\r\n", t.len() + 4).into_bytes();
        assert_eq!(
            p.on_reply(&alice(), &info, &verbatim(text)),
            Some(verbatim(want))
        );
        // Nothing to remove (no keys, or another section asked for): sent as it is.
        assert_eq!(p.on_reply(&alice(), &info, &bulk(want)), None);
        assert_eq!(p.on_reply(&alice(), &info, b"-ERR x\r\n"), None);
    }

    #[test]
    fn a_reply_of_unexpected_form_never_reaches_the_tenant() {
        let mut p = plugin();
        let unexpected = |name: &str| {
            Some(format!("-ERR key-prefix: unexpected reply to '{name}'\r\n").into_bytes())
        };
        let rk = Command::new(["RANDOMKEY"]);
        assert_eq!(
            p.on_reply(&alice(), &rk, b"+t2:k\r\n"),
            unexpected("randomkey")
        );
        assert_eq!(
            p.on_reply(&alice(), &rk, b"=7\r\ntxt:t2:\r\n"),
            unexpected("randomkey")
        );
        let keys = Command::new(["KEYS", "*"]);
        assert_eq!(
            p.on_reply(&alice(), &keys, b"~1\r\n$4\r\nt2:k\r\n"),
            unexpected("keys")
        );
        let scan = Command::new(["SCAN", "0"]);
        assert_eq!(
            p.on_reply(&alice(), &scan, b"*1\r\n$4\r\nt2:k\r\n"),
            unexpected("scan")
        );
    }

    /// A RESP3 session gets the same arrays for KEYS and SCAN, and `_` for no key: the
    /// stripping is the same, and a RESP2 null the plugin writes reaches a RESP3 client as
    /// `_` (the proxy converts it).
    #[test]
    fn replies_of_a_resp3_session_are_stripped_too() {
        let mut rt = Runtime::<KeyPrefix>::new();
        rt.on_configure(include_bytes!("../config.example.json"));
        let alice = alice().with_protocol(3);
        let reply = |rt: &mut Runtime<KeyPrefix>, line: &[&str], reply: &[u8]| {
            let cmd = Command::new(line.iter().copied());
            rt.on_reply(&reply_input(&alice, &cmd, reply))
                .map(|out| wire::decode_verdict(out).unwrap().action)
        };
        assert_eq!(
            reply(
                &mut rt,
                &["KEYS", "t1:*"],
                b"*2\r\n$4\r\nt1:a\r\n$4\r\nt1:b\r\n"
            ),
            Some(WireAction::Reply(b"*2\r\n$1\r\na\r\n$1\r\nb\r\n".to_vec()))
        );
        assert_eq!(
            reply(
                &mut rt,
                &["SCAN", "0"],
                b"*2\r\n$1\r\n0\r\n*1\r\n$4\r\nt1:a\r\n"
            ),
            Some(WireAction::Reply(
                b"*2\r\n$1\r\n0\r\n*1\r\n$1\r\na\r\n".to_vec()
            ))
        );
        assert_eq!(reply(&mut rt, &["RANDOMKEY"], b"_\r\n"), None);
        assert_eq!(
            reply(&mut rt, &["RANDOMKEY"], b"$4\r\nt1:a\r\n"),
            Some(WireAction::Reply(b"$1\r\na\r\n".to_vec()))
        );
    }
}
