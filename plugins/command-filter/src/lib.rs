//! `command-filter`: deny or allow commands by name, for everyone and per user.
//!
//! Configuration (JSON):
//!
//! ```json
//! {
//!   "deny": ["flushall", "keys"],
//!   "allow": null,
//!   "users": { "alice": { "allow": ["get", "set"] } },
//!   "message": "NOPERM command not allowed by policy"
//! }
//! ```
//!
//! A *rule set* is an `allow` list (optional) and a `deny` list. With an `allow` list only
//! the commands in it pass (the `deny` list is then ignored); without one every command
//! passes except those in `deny`. The top-level rule set applies to every connection and,
//! for a connection whose user has an entry in `users`, that entry's rule set applies too:
//! a command must pass both. Names are lowercase; `"object|encoding"` names one subcommand
//! and `"object"` all of them.
//!
//! A refused command gets `-<message>: '<name>'`, or `message` with `{command}` replaced by
//! the name if it contains `{command}`; refused by a subcommand entry, the name is that
//! entry (`config|set`).
//!
//! Every verdict depends only on the user and the command id (the name, with the subcommand
//! for container commands such as `CONFIG`), so the plugin asks the proxy to remember each
//! one: a connection is asked about each of its commands once, until its context changes.
//! The exception: a subcommand entry for a command that has no subcommands in Redis
//! (`"get|secret"` looks at GET's key): such a command's verdicts are not remembered.

use std::collections::BTreeMap;

use serde::Deserialize;
use tessera_sdk::wire::same_bytes;
use tessera_sdk::{ByName, Command, Context, Plugin, Verdict, export_plugin, is_container_command};

/// The default reject message.
pub const DEFAULT_MESSAGE: &str = "NOPERM command not allowed by policy";

/// An allow list and a deny list.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Rules {
    #[serde(default)]
    allow: Option<Vec<String>>,
    #[serde(default)]
    deny: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    allow: Option<Vec<String>>,
    #[serde(default)]
    deny: Vec<String>,
    #[serde(default)]
    users: BTreeMap<String, Rules>,
    #[serde(default)]
    message: Option<String>,
}

/// The plugin: the parsed policy.
#[derive(Debug)]
pub struct CommandFilter {
    global: Rules,
    users: ByName<Rules>,
    message: String,
    /// The names that have subcommand entries anywhere (`config` for `config|set`): whether
    /// such a command passes depends on its argument 1, not on its name only.
    sub_entry_names: Vec<String>,
    /// Those of `sub_entry_names` that are not container commands: for these argument 1 is
    /// not part of the proxy's command id, so their verdicts cannot be remembered.
    arg_entry_names: Vec<String>,
    memo: Memo,
}

/// The last `(user, command name)` that passed and whose answer depends on nothing else:
/// connections send the same command over and over.
#[derive(Debug, Default)]
struct Memo {
    valid: bool,
    /// The user's [`Context::user_id`].
    user_id: u64,
    name: String,
}

impl Memo {
    #[inline]
    fn passes(&self, ctx: &Context, name: &str) -> bool {
        self.valid
            && self.user_id == ctx.user_id()
            && same_bytes(self.name.as_bytes(), name.as_bytes())
    }

    fn set(&mut self, ctx: &Context, name: &str) {
        self.valid = true;
        self.user_id = ctx.user_id();
        self.name.clear();
        self.name.push_str(name);
    }
}

impl Rules {
    fn normalize(&mut self) {
        let lower = |v: &mut Vec<String>| v.iter_mut().for_each(|s| *s = s.to_ascii_lowercase());
        if let Some(a) = self.allow.as_mut() {
            lower(a);
        }
        lower(&mut self.deny);
    }

    /// `Ok` if the rules let `cmd` through; else `Err` with the deny-list entry that
    /// refused it (`None`: it is not on the allow list).
    fn allows(&self, cmd: &Command) -> Result<(), Option<&str>> {
        match &self.allow {
            Some(allow) if allow.iter().any(|e| cmd.is_named(e)) => Ok(()),
            Some(_) => Err(None),
            None => match self.deny.iter().find(|e| cmd.is_named(e)) {
                Some(entry) => Err(Some(entry)),
                None => Ok(()),
            },
        }
    }
}

impl CommandFilter {
    /// Parses the JSON configuration.
    pub fn from_json(config: &[u8]) -> Result<Self, String> {
        let mut c: Config = serde_json::from_slice(config)
            .map_err(|e| format!("command-filter: bad config: {e}"))?;
        let mut global = Rules {
            allow: c.allow,
            deny: c.deny,
        };
        global.normalize();
        c.users.values_mut().for_each(Rules::normalize);
        let mut sub_entry_names: Vec<String> = std::iter::once(&global)
            .chain(c.users.values())
            .flat_map(|r| r.allow.iter().flatten().chain(&r.deny))
            .filter_map(|e| Some(e.split_once('|')?.0.to_owned()))
            .collect();
        sub_entry_names.sort();
        sub_entry_names.dedup();
        let arg_entry_names = sub_entry_names
            .iter()
            .filter(|n| !is_container_command(n))
            .cloned()
            .collect();
        Ok(CommandFilter {
            global,
            users: c.users.into_iter().collect(),
            message: c.message.unwrap_or_else(|| DEFAULT_MESSAGE.to_owned()),
            sub_entry_names,
            arg_entry_names,
            memo: Memo::default(),
        })
    }

    /// `None` if `user` may run `cmd`, else the error message. Allocates only for the
    /// message.
    pub fn check(&self, user: &str, cmd: &Command) -> Option<String> {
        let verdict = self
            .global
            .allows(cmd)
            .and_then(|()| match self.users.get(user) {
                Some(rules) => rules.allows(cmd),
                None => Ok(()),
            });
        let Err(entry) = verdict else {
            return None;
        };
        // A subcommand entry (`config|set`) names what was refused better than the name.
        let name = match entry {
            Some(entry) if entry.contains('|') => entry,
            _ => cmd.name(),
        };
        Some(if self.message.contains("{command}") {
            self.message.replace("{command}", name)
        } else {
            format!("{}: '{name}'", self.message)
        })
    }
}

impl Plugin for CommandFilter {
    fn configure(config: &[u8]) -> Result<Self, String> {
        Self::from_json(config)
    }

    fn on_command(&mut self, ctx: &Context, cmd: &mut Command) -> Verdict {
        if self.memo.passes(ctx, cmd.name()) {
            cmd.remember();
            return Verdict::Continue;
        }
        if !self.arg_entry_names.iter().any(|n| n == cmd.name()) {
            cmd.remember();
        }
        match self.check(ctx.user(), cmd) {
            None => {
                if !self.sub_entry_names.iter().any(|n| n == cmd.name()) {
                    self.memo.set(ctx, cmd.name());
                }
                Verdict::Continue
            }
            Some(msg) => Verdict::Reject(msg),
        }
    }
}

export_plugin!(CommandFilter, hooks = [on_command]);

#[cfg(test)]
#[global_allocator]
static ALLOC: tessera_sdk::testing::CountingAllocator = tessera_sdk::testing::CountingAllocator;

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_sdk::dispatch::Runtime;
    use tessera_sdk::testing::{Decision, command_input, count_allocations, decide};
    use tessera_sdk::wire::{self, WireAction, WireVerdict};

    fn filter(json: &str) -> CommandFilter {
        CommandFilter::from_json(json.as_bytes()).unwrap()
    }

    fn decided(f: &mut CommandFilter, user: &str, args: &[&str]) -> Decision {
        let ctx = Context::default().with_user(user);
        decide(f, &ctx, Command::new(args.iter().copied()))
    }

    /// A `Continue` the proxy is asked to remember, with no condition.
    fn remembered_continue() -> WireVerdict {
        WireVerdict {
            action: WireAction::Continue,
            attrs: vec![],
            remember: Some(vec![]),
        }
    }

    fn run(f: &mut CommandFilter, user: &str, args: &[&str]) -> Verdict {
        let ctx = Context::default().with_user(user);
        f.on_command(&ctx, &mut Command::new(args.iter().copied()))
    }

    #[test]
    fn the_example_config_parses() {
        CommandFilter::from_json(include_bytes!("../config.example.json")).unwrap();
    }

    #[test]
    fn deny_list_names_the_command() {
        let mut f = filter(r#"{"deny": ["flushall", "KEYS"]}"#);
        assert_eq!(run(&mut f, "", &["GET", "k"]), Verdict::Continue);
        assert_eq!(
            run(&mut f, "", &["FlushAll"]),
            Verdict::Reject("NOPERM command not allowed by policy: 'flushall'".into())
        );
        assert!(matches!(
            run(&mut f, "bob", &["keys", "*"]),
            Verdict::Reject(_)
        ));
    }

    #[test]
    fn allow_list_wins_over_deny() {
        let mut f = filter(
            r#"{"allow": ["get", "ping"], "deny": ["get"], "message": "ERR no {command} here"}"#,
        );
        assert_eq!(run(&mut f, "", &["get", "k"]), Verdict::Continue);
        assert_eq!(
            run(&mut f, "", &["set", "k", "v"]),
            Verdict::Reject("ERR no set here".into())
        );
    }

    #[test]
    fn user_rules_apply_on_top_of_global_ones() {
        let mut f = filter(
            r#"{"deny": ["flushall"], "users": {"alice": {"allow": ["get", "set", "flushall"]}, "bob": {"deny": ["set"]}}}"#,
        );
        assert_eq!(run(&mut f, "alice", &["get", "k"]), Verdict::Continue);
        assert!(matches!(
            run(&mut f, "alice", &["del", "k"]),
            Verdict::Reject(_)
        ));
        assert!(matches!(
            run(&mut f, "alice", &["flushall"]),
            Verdict::Reject(_)
        ));
        assert!(matches!(
            run(&mut f, "bob", &["set", "k", "v"]),
            Verdict::Reject(_)
        ));
        assert_eq!(run(&mut f, "bob", &["del", "k"]), Verdict::Continue);
        assert_eq!(run(&mut f, "", &["set", "k", "v"]), Verdict::Continue);
    }

    #[test]
    fn subcommands() {
        let mut f = filter(r#"{"deny": ["config|set", "debug"]}"#);
        assert_eq!(run(&mut f, "", &["CONFIG", "GET", "x"]), Verdict::Continue);
        assert_eq!(
            run(&mut f, "", &["config", "SET", "x", "y"]),
            Verdict::Reject("NOPERM command not allowed by policy: 'config|set'".into())
        );
        assert!(matches!(
            run(&mut f, "", &["debug", "sleep", "0"]),
            Verdict::Reject(_)
        ));
        let mut f = filter(r#"{"allow": ["object|encoding"]}"#);
        assert_eq!(
            run(&mut f, "", &["OBJECT", "ENCODING", "k"]),
            Verdict::Continue
        );
        assert!(matches!(
            run(&mut f, "", &["object", "freq", "k"]),
            Verdict::Reject(_)
        ));
    }

    #[test]
    fn remembered_decisions_follow_the_user_the_command_and_its_subcommand() {
        let json = r#"{"deny": ["flushall", "config|set"], "users": {"alice": {"allow": ["get", "config", "object|encoding"]}, "bob": {"deny": ["get"]}}}"#;
        let mut f = filter(json);
        let cases: [(&str, &[&str]); 14] = [
            ("alice", &["GET", "k"]),
            ("bob", &["GET", "k"]),
            ("alice", &["get", "k"]),
            ("", &["GET", "k"]),
            ("bob", &["SET", "k", "v"]),
            ("alice", &["SET", "k", "v"]),
            ("alice", &["CONFIG", "GET", "x"]),
            ("alice", &["CONFIG", "SET", "x", "y"]),
            ("alice", &["CONFIG", "GET", "x"]),
            ("alice", &["OBJECT", "ENCODING", "k"]),
            ("alice", &["OBJECT", "FREQ", "k"]),
            ("alice", &["OBJECT", "ENCODING", "k"]),
            ("carol", &["FLUSHALL"]),
            ("carol", &["PING"]),
        ];
        for _ in 0..3 {
            for (user, args) in cases {
                let want = run(&mut filter(json), user, args);
                assert_eq!(run(&mut f, user, args), want, "{user} {args:?}");
            }
        }
    }

    #[test]
    fn verdicts_are_remembered_unless_they_look_past_the_command_id() {
        let json = r#"{"deny": ["flushall", "config|set", "get|secret"], "users": {"alice": {"allow": ["get", "config", "object|encoding", "set"]}, "bob": {"deny": ["set|k"]}}}"#;
        let mut f = filter(json);
        let cases: [(&str, &[&str], bool, bool); 14] = [
            // user, command, passes, remembered
            ("", &["PING"], true, true),
            ("", &["FLUSHALL"], false, true),
            ("alice", &["DEL", "k"], false, true),
            // CONFIG and OBJECT are containers: the subcommand is part of the command id.
            ("alice", &["CONFIG", "GET", "x"], true, true),
            ("alice", &["CONFIG", "SET", "x", "y"], false, true),
            ("alice", &["OBJECT", "ENCODING", "k"], true, true),
            ("alice", &["OBJECT", "FREQ", "k"], false, true),
            // GET|secret and SET|k look at a key: never remembered, for anyone.
            ("alice", &["GET", "k"], true, false),
            ("alice", &["SET", "k", "v"], true, false),
            ("", &["GET", "secret"], false, false),
            ("", &["GET", "other"], true, false),
            ("bob", &["SET", "k", "v"], false, false),
            ("bob", &["SET", "j", "v"], true, false),
            ("carol", &["SET", "k", "v"], true, false),
        ];
        for _ in 0..2 {
            for (user, args, passes, remembered) in cases {
                let d = decided(&mut f, user, args);
                let what = format!("{user} {args:?}");
                assert_eq!(d.verdict == Verdict::Continue, passes, "{what}");
                assert_eq!(d.remembered(), remembered.then(Vec::new), "{what}");
                assert!(d.wire.attrs.is_empty(), "{what}");
                assert!(!d.command.is_modified(), "{what}");
            }
        }
    }

    #[test]
    fn a_batch_remembers_each_verdict() {
        let mut rt = Runtime::<CommandFilter>::new();
        rt.on_configure(include_bytes!("../config.example.json"));
        let alice = Context::default().with_user("alice");
        let cmds = [
            Command::new(["GET", "k"]).with_key(1),
            Command::new(["FLUSHALL"]),
            Command::new(["INCR", "k"]).with_key(1),
            Command::new(["PING"]),
        ];
        let input = tessera_sdk::testing::commands_input(&alice, &cmds);
        let v = wire::decode_verdict_list(rt.on_commands(&input).unwrap()).unwrap();
        let kinds: Vec<_> = v
            .iter()
            .map(|v| (v.action.kind(), v.remember.clone()))
            .collect();
        assert_eq!(
            kinds,
            [
                (0, Some(vec![])),
                (3, Some(vec![])),
                (3, Some(vec![])),
                (0, Some(vec![]))
            ]
        );
    }

    #[test]
    fn alternating_users_and_commands_cost_no_allocation() {
        let mut rt = Runtime::<CommandFilter>::new();
        rt.on_configure(include_bytes!("../config.example.json"));
        let alice = Context::default().with_user("alice");
        let bob = Context::default().with_user("bob");
        let inputs = [
            command_input(&alice, &Command::new(["GET", "key:1"]).with_key(1)),
            command_input(&bob, &Command::new(["GET", "key:1"]).with_key(1)),
            command_input(&alice, &Command::new(["SET", "key:1", "v"]).with_key(1)),
            command_input(&bob, &Command::new(["CONFIG", "GET", "x"])),
            command_input(&Context::default(), &Command::new(["SELECT", "1"])),
        ];
        for input in &inputs {
            let v = wire::decode_verdict(rt.on_command(input).unwrap()).unwrap();
            assert_eq!(v, remembered_continue(), "allowed: a remembered Continue");
        }
        for _ in 0..3 {
            for input in &inputs {
                let (out, n) = count_allocations(|| rt.on_command(input).map(|b| b[0]));
                assert_eq!(out, Some(0x80));
                assert_eq!(n, 0);
            }
        }
    }

    #[test]
    fn bad_configs_are_refused_with_a_reason() {
        let e = CommandFilter::from_json(br#"{"deny": "flushall"}"#).unwrap_err();
        assert!(e.starts_with("command-filter: bad config:"), "{e}");
        assert!(CommandFilter::from_json(br#"{"denny": []}"#).is_err());
        assert!(CommandFilter::from_json(b"").is_err());
    }

    #[test]
    fn allowed_commands_cost_no_allocation() {
        let mut rt = Runtime::<CommandFilter>::new();
        rt.on_configure(include_bytes!("../config.example.json"));
        let alice = Context::default().with_user("alice");
        let inputs = [
            command_input(&alice, &Command::new(["GET", "key:1"]).with_key(1)),
            command_input(&alice, &Command::new(["SET", "key:1", "v"]).with_key(1)),
            command_input(&Context::default(), &Command::new(["CONFIG", "GET", "x"])),
        ];
        for input in &inputs {
            let v = wire::decode_verdict(rt.on_command(input).unwrap()).unwrap();
            assert_eq!(v, remembered_continue(), "allowed: a remembered Continue");
        }
        for input in &inputs {
            let (out, n) = count_allocations(|| rt.on_command(input).map(|b| b.len()));
            assert_eq!(out, Some(9), "0x80, no prefix, no attribute");
            assert_eq!(n, 0);
        }
    }
}
