//! `acl-auth`: users, hashed passwords, and per-user commands and key patterns, answered
//! with Redis's own ACL errors.
//!
//! Configuration (JSON):
//!
//! ```json
//! {
//!   "users": {
//!     "alice": {
//!       "password": "$argon2id$v=19$m=2048,t=2,p=1$<salt>$<hash>",
//!       "commands": ["get", "set", "del"],
//!       "keys": ["app:*"]
//!     }
//!   }
//! }
//! ```
//!
//! - `password`: an Argon2 PHC string, salted and slow to guess, as
//!   `printf %s 'secret' | tessera admin hash-password` prints it; or, deprecated (unsalted
//!   and fast to guess, logged as such at configure time), `sha256:` and the hex SHA-256 of
//!   the password (`printf %s 'secret' | sha256sum`). A verified Argon2 password is
//!   remembered by the instance (as a salted SHA-256 of it, per user), so connections that
//!   authenticate again with it do not pay the slow hash; a wrong one always does.
//! - `commands`: rules applied in order, the last one that matches a command decides (as in
//!   Redis's ACL): `"get"` or `"+get"` allows, `"-get"` denies, `"config|get"` names one
//!   subcommand, `"*"`, `"+@all"` or `"allcommands"` allow everything, `"-@all"` or
//!   `"nocommands"` deny everything. Other categories are refused at configure time.
//! - `keys`: glob patterns (`*`, `?`, `\` escapes; a leading `~` is allowed) every key of a
//!   command must match one of; `"*"` (or `"allkeys"`) is any key. `[]`: no key at all.
//!
//! Behaviour:
//!
//! - `AUTH user pass` (or `AUTH pass`, user `default`) answers `+OK` and sets the
//!   connection's `user` attribute, or `-WRONGPASS invalid username-password pair or user
//!   is disabled.`
//! - `HELLO protover AUTH user pass [SETNAME name]` authenticates the same way, then goes on
//!   to the proxy as `HELLO protover [SETNAME name]`.
//! - Before authentication every command but `AUTH`, `HELLO ... AUTH` and `QUIT` gets
//!   `-NOAUTH Authentication required.` (`HELLO` without `AUTH` gets Redis's `-NOAUTH HELLO
//!   must be called ...`).
//! - After it, a command the user may not run gets `-NOPERM this user has no permissions to
//!   run the '<name>' command`, a key outside its patterns `-NOPERM this user has no
//!   permissions to access one of the keys used as arguments`. A connection whose user is
//!   not in `users` (e.g. `default`, set by the proxy's own password) may run nothing.
//!
//! Remembered verdicts (the proxy applies them itself to the connection's later commands of
//! the same command id until its context changes, e.g. on `AUTH`):
//!
//! - `NOAUTH` before authentication, and `NOPERM` for a command the user may not run;
//! - a permitted command whose keys pass, on the condition that every key starts with the
//!   literal part of one of the user's patterns of the form `literal*` (no condition if one
//!   of them is `*`); a user without such a pattern has these verdicts not remembered.
//!
//! Never remembered: `AUTH`, `HELLO` and `QUIT`, a key refused, and any command the user's
//! rules name with a subcommand when the command has no subcommands in Redis (`"get|k"`
//! looks at an argument).

use std::cell::Cell;
use std::collections::BTreeMap;

use argon2::password_hash::{PasswordHash, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tessera_sdk::wire::same_bytes;
use tessera_sdk::{
    ByName, Command, Context, KeyPrefixes, Plugin, Verdict, export_plugin, is_container_command,
    reply,
};

pub mod glob;

/// Redis's answer to a wrong user or password.
pub const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";
/// Redis's answer to a command before authentication.
pub const NOAUTH: &str = "NOAUTH Authentication required.";
/// Redis's answer to `HELLO` without `AUTH` before authentication.
pub const NOAUTH_HELLO: &str = "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time";
/// Redis's answer to a key outside the user's patterns.
pub const NOPERM_KEY: &str =
    "NOPERM this user has no permissions to access one of the keys used as arguments";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    users: BTreeMap<String, UserConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserConfig {
    password: String,
    commands: Vec<String>,
    keys: Vec<String>,
}

/// One command rule.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Rule {
    AllowAll,
    DenyAll,
    Allow(String),
    Deny(String),
}

impl Rule {
    fn parse(s: &str) -> Result<Rule, String> {
        let s = s.to_ascii_lowercase();
        Ok(match s.as_str() {
            "*" | "+@all" | "allcommands" => Rule::AllowAll,
            "-@all" | "nocommands" => Rule::DenyAll,
            _ if s.contains('@') => {
                return Err(format!(
                    "command rule '{s}': categories other than @all are not supported"
                ));
            }
            _ => match s.strip_prefix('-') {
                Some(name) => Rule::Deny(name.to_owned()),
                None => Rule::Allow(s.strip_prefix('+').unwrap_or(&s).to_owned()),
            },
        })
    }
}

/// A key pattern, with the shapes a configuration usually has recognized up front.
#[derive(Debug)]
enum KeyPattern {
    /// `*`: any key.
    Any,
    /// `literal*`, no other glob character: the keys that start with it.
    Prefix(Vec<u8>),
    /// Anything else, matched with [`glob::matches`].
    Glob(Vec<u8>),
}

impl KeyPattern {
    fn new(pattern: Vec<u8>) -> KeyPattern {
        let is_glob = |c: &u8| matches!(c, b'*' | b'?' | b'\\');
        match pattern.split_last() {
            Some((b'*', [])) => KeyPattern::Any,
            Some((b'*', lit)) if !lit.iter().any(is_glob) => KeyPattern::Prefix(lit.to_vec()),
            _ => KeyPattern::Glob(pattern),
        }
    }

    fn matches(&self, key: &[u8]) -> bool {
        match self {
            KeyPattern::Any => true,
            KeyPattern::Prefix(p) => key.len() >= p.len() && same_bytes(&key[..p.len()], p),
            KeyPattern::Glob(p) => glob::matches(p, key),
        }
    }
}

/// How a user's password is stored.
#[derive(Debug)]
enum Password {
    /// `sha256:<hex>`: unsalted, deprecated.
    Sha256([u8; 32]),
    /// An Argon2 PHC string (checked at configure time), and the salted SHA-256 of the
    /// password it was last verified with.
    Argon2 {
        phc: String,
        verified: Cell<Option<[u8; 32]>>,
    },
}

impl Password {
    fn parse(text: &str) -> Result<Password, String> {
        if let Some(hex) = text.strip_prefix("sha256:") {
            let sha = parse_hex32(hex)
                .ok_or("the sha256 of the password must be 64 hex digits".to_string())?;
            return Ok(Password::Sha256(sha));
        }
        if text.starts_with("$argon2") {
            let bad = |e: &dyn std::fmt::Display| format!("password: bad Argon2 PHC string: {e}");
            let hash = PasswordHash::new(text).map_err(|e| bad(&e))?;
            Algorithm::try_from(hash.algorithm).map_err(|e| bad(&e))?;
            Params::try_from(&hash).map_err(|e| bad(&e))?;
            if hash.salt.is_none() || hash.hash.is_none() {
                return Err(bad(&"it has no salt or no hash"));
            }
            return Ok(Password::Argon2 {
                phc: text.to_owned(),
                verified: Cell::new(None),
            });
        }
        Err("password must be an Argon2 PHC string (\"$argon2id$v=19$m=...\", from `tessera admin hash-password`) or \"sha256:<64 hex digits>\" (deprecated)".to_string())
    }

    fn matches(&self, password: &[u8]) -> bool {
        match self {
            Password::Sha256(want) => same_digest(&Sha256::digest(password).into(), want),
            Password::Argon2 { phc, verified } => {
                // The PHC string ends with the salt and the hash: a digest of it and the
                // password differs per user and per salt.
                let digest: [u8; 32] = Sha256::new()
                    .chain_update(phc.as_bytes())
                    .chain_update(password)
                    .finalize()
                    .into();
                if verified.get().is_some_and(|v| same_digest(&digest, &v)) {
                    return true;
                }
                let ok = PasswordHash::new(phc)
                    .is_ok_and(|h| Argon2::default().verify_password(password, &h).is_ok());
                if ok {
                    verified.set(Some(digest));
                }
                ok
            }
        }
    }
}

/// Compares every byte, whatever the first difference.
fn same_digest(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A configured user.
#[derive(Debug)]
struct User {
    /// Unique among the users, for [`Memo`].
    id: usize,
    password: Password,
    rules: Vec<Rule>,
    /// The names that have subcommand rules (`config` for `config|get`): whether such a
    /// command may run depends on its argument 1, not on its name only.
    sub_rule_names: Vec<String>,
    /// Those of `sub_rule_names` that are not container commands: for these argument 1 is
    /// not part of the proxy's command id, so whether they may run cannot be remembered.
    arg_rule_names: Vec<String>,
    keys: Vec<KeyPattern>,
    /// On what condition a permitted command whose keys pass is remembered.
    remember_keys: KeyCondition,
    /// The prefixes of `remember_keys` (if `Prefixes`), encoded once for the SDK.
    remember_prefixes: KeyPrefixes,
}

/// The keys for which a permitted command's verdict holds: the keys that start with the
/// literal part of one of the user's patterns of the form `literal*`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum KeyCondition {
    /// No such pattern: not remembered.
    Never,
    /// The pattern `*`: any key.
    Always,
    /// These literal prefixes (none a prefix of another).
    Prefixes(Vec<Vec<u8>>),
}

impl KeyCondition {
    /// From the user's key patterns (as configured, after `~` and `allkeys`).
    fn of(patterns: &[Vec<u8>]) -> KeyCondition {
        let is_glob = |c: &u8| matches!(c, b'*' | b'?' | b'[' | b']' | b'\\');
        let mut prefixes: Vec<&[u8]> = patterns
            .iter()
            .filter_map(|p| match p.split_last() {
                Some((b'*', lit)) if !lit.iter().any(is_glob) => Some(lit),
                _ => None,
            })
            .collect();
        // Sorted, a prefix comes before the prefixes it covers.
        prefixes.sort();
        let mut kept: Vec<Vec<u8>> = Vec::new();
        for p in prefixes {
            if !kept.iter().any(|k| p.starts_with(k)) {
                kept.push(p.to_vec());
            }
        }
        match &kept[..] {
            [] => KeyCondition::Never,
            [only] if only.is_empty() => KeyCondition::Always,
            _ => KeyCondition::Prefixes(kept),
        }
    }
}

/// The last `(user, command name)` whose [`User::may_run`] answer depends on nothing else,
/// and that answer: connections send the same command over and over.
#[derive(Debug, Default)]
struct Memo {
    /// `None`: nothing remembered.
    user: Option<usize>,
    name: String,
    may_run: bool,
}

impl Memo {
    #[inline]
    fn get(&self, user: &User, name: &str) -> Option<bool> {
        (self.user == Some(user.id) && same_bytes(self.name.as_bytes(), name.as_bytes()))
            .then_some(self.may_run)
    }

    fn set(&mut self, user: &User, name: &str, may_run: bool) {
        if user.sub_rule_names.iter().any(|n| n == name) {
            self.user = None;
            return;
        }
        self.user = Some(user.id);
        self.name.clear();
        self.name.push_str(name);
        self.may_run = may_run;
    }
}

impl User {
    fn from_config(id: usize, name: &str, c: UserConfig) -> Result<User, String> {
        let password = Password::parse(&c.password).map_err(|e| format!("user '{name}': {e}"))?;
        if matches!(password, Password::Sha256(_)) {
            tessera_sdk::log::warn(&format!(
                "acl-auth: user '{name}' has a sha256: password, which is deprecated (unsalted and fast to guess): replace it with the output of `tessera admin hash-password`"
            ));
        }
        let rules: Vec<Rule> = c
            .commands
            .iter()
            .map(|r| Rule::parse(r).map_err(|e| format!("user '{name}': {e}")))
            .collect::<Result<_, _>>()?;
        let sub_rule_names: Vec<String> = rules
            .iter()
            .filter_map(|r| match r {
                Rule::Allow(n) | Rule::Deny(n) => Some(n.split_once('|')?.0.to_owned()),
                _ => None,
            })
            .collect();
        let arg_rule_names = sub_rule_names
            .iter()
            .filter(|n| !is_container_command(n))
            .cloned()
            .collect();
        let patterns: Vec<Vec<u8>> = c
            .keys
            .into_iter()
            .map(|k| match k.as_str() {
                "allkeys" => b"*".to_vec(),
                _ => k.strip_prefix('~').unwrap_or(&k).as_bytes().to_vec(),
            })
            .collect();
        let remember_keys = KeyCondition::of(&patterns);
        let remember_prefixes = match &remember_keys {
            KeyCondition::Prefixes(prefixes) => KeyPrefixes::new(prefixes),
            _ => KeyPrefixes::default(),
        };
        Ok(User {
            id,
            password,
            rules,
            sub_rule_names,
            arg_rule_names,
            keys: patterns.into_iter().map(KeyPattern::new).collect(),
            remember_keys,
            remember_prefixes,
        })
    }

    fn password_is(&self, password: &[u8]) -> bool {
        self.password.matches(password)
    }

    /// The last rule that matches the command decides; none: denied.
    fn may_run(&self, cmd: &Command) -> bool {
        self.rules
            .iter()
            .rev()
            .find_map(|rule| match rule {
                Rule::AllowAll => Some(true),
                Rule::DenyAll => Some(false),
                Rule::Allow(n) if cmd.is_named(n) => Some(true),
                Rule::Deny(n) if cmd.is_named(n) => Some(false),
                _ => None,
            })
            .unwrap_or(false)
    }

    fn may_access(&self, key: &[u8]) -> bool {
        self.keys.iter().any(|p| p.matches(key))
    }

    /// Whether [`may_run`](User::may_run) looks at more of `cmd` than its command id.
    fn run_depends_on_args(&self, cmd: &Command) -> bool {
        self.arg_rule_names.iter().any(|n| n == cmd.name())
    }
}

fn parse_hex32(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; 32];
    for (i, pair) in hex.chunks(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

/// The plugin: the configured users.
#[derive(Debug)]
pub struct AclAuth {
    users: ByName<User>,
    memo: Memo,
}

impl AclAuth {
    /// Parses the JSON configuration.
    pub fn from_json(config: &[u8]) -> Result<Self, String> {
        let c: Config =
            serde_json::from_slice(config).map_err(|e| format!("acl-auth: bad config: {e}"))?;
        let users = c
            .users
            .into_iter()
            .enumerate()
            .map(|(id, (name, u))| {
                let user = User::from_config(id, &name, u).map_err(|e| format!("acl-auth: {e}"))?;
                Ok((name, user))
            })
            .collect::<Result<_, String>>()?;
        Ok(AclAuth {
            users,
            memo: Memo::default(),
        })
    }

    /// Whether `user` exists and `password` is theirs.
    pub fn check_password(&self, user: &[u8], password: &[u8]) -> bool {
        std::str::from_utf8(user)
            .ok()
            .and_then(|u| self.users.get(u))
            .is_some_and(|u| u.password_is(password))
    }

    fn auth(&self, ctx: &Context, cmd: &Command) -> Verdict {
        let (user, pass) = match (cmd.len(), cmd.arg(1), cmd.arg(2)) {
            (2, Some(pass), _) => (&b"default"[..], pass),
            (3, Some(user), Some(pass)) => (user, pass),
            _ => return Verdict::reject("ERR wrong number of arguments for 'auth' command"),
        };
        if !self.check_password(user, pass) {
            return Verdict::reject(WRONGPASS);
        }
        ctx.set_attr("user", String::from_utf8_lossy(user));
        Verdict::Reply(reply::ok())
    }

    fn hello(&self, ctx: &Context, cmd: &mut Command) -> Verdict {
        // HELLO [protover [AUTH username password] [SETNAME clientname]]
        let auth_at = (2..cmd.len()).find(|&i| {
            cmd.arg(i)
                .is_some_and(|a| a.eq_ignore_ascii_case(b"auth"))
                // SETNAME's argument may itself be the word "auth".
                && !cmd
                    .arg(i - 1)
                    .is_some_and(|a| a.eq_ignore_ascii_case(b"setname"))
        });
        let Some(i) = auth_at else {
            return if ctx.is_authenticated() {
                Verdict::Continue
            } else {
                Verdict::reject(NOAUTH_HELLO)
            };
        };
        let (Some(user), Some(pass)) = (cmd.arg(i + 1), cmd.arg(i + 2)) else {
            return Verdict::reject("ERR Syntax error in HELLO option 'auth'");
        };
        if !self.check_password(user, pass) {
            return Verdict::reject(WRONGPASS);
        }
        ctx.set_attr("user", String::from_utf8_lossy(user));
        for _ in 0..3 {
            let _ = cmd.remove_arg(i);
        }
        Verdict::Continue
    }
}

impl Plugin for AclAuth {
    /// Gates access (it authenticates connections): never `fail = "open"`.
    const GATES_ACCESS: bool = true;

    fn configure(config: &[u8]) -> Result<Self, String> {
        Self::from_json(config)
    }

    fn on_command(&mut self, ctx: &Context, cmd: &mut Command) -> Verdict {
        match cmd.name() {
            "auth" => return self.auth(ctx, cmd),
            "hello" => return self.hello(ctx, cmd),
            "quit" => return Verdict::Continue,
            _ => {}
        }
        // Authenticating changes the context: the proxy forgets what it remembered then.
        if !ctx.is_authenticated() {
            cmd.remember();
            return Verdict::reject(NOAUTH);
        }
        let may_run = |user: &User, memo: &mut Memo| match memo.get(user, cmd.name()) {
            Some(may) => may,
            None => {
                let may = user.may_run(cmd);
                memo.set(user, cmd.name(), may);
                may
            }
        };
        let user = match self.users.of_user(ctx) {
            Some(user) if may_run(user, &mut self.memo) => user,
            user => {
                if !user.is_some_and(|u| u.run_depends_on_args(cmd)) {
                    cmd.remember();
                }
                return Verdict::Reject(format!(
                    "NOPERM this user has no permissions to run the '{}' command",
                    cmd.name()
                ));
            }
        };
        if !cmd.keys().all(|(_, k)| user.may_access(k)) {
            return Verdict::reject(NOPERM_KEY);
        }
        if !user.run_depends_on_args(cmd) {
            match &user.remember_keys {
                KeyCondition::Never => {}
                KeyCondition::Always => cmd.remember(),
                KeyCondition::Prefixes(_) => {
                    cmd.remember_if_keys_start_with_any(&user.remember_prefixes);
                }
            }
        }
        Verdict::Continue
    }
}

export_plugin!(AclAuth, hooks = [on_command]);

#[cfg(test)]
#[global_allocator]
static ALLOC: tessera_sdk::testing::CountingAllocator = tessera_sdk::testing::CountingAllocator;

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_sdk::dispatch::Runtime;
    use tessera_sdk::testing::{
        Decision, command_input, commands_input, count_allocations, decide,
    };
    use tessera_sdk::wire::{self, WireAction, WireVerdict};

    /// sha256("secret")
    const SECRET: &str = "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b";

    fn plugin() -> AclAuth {
        let json = format!(
            r#"{{"users": {{
                "alice": {{"password": "sha256:{SECRET}", "commands": ["get", "set", "config|get"], "keys": ["app:*", "~x?"]}},
                "root": {{"password": "sha256:{SECRET}", "commands": ["+@all", "-flushall"], "keys": ["*"]}},
                "default": {{"password": "sha256:{SECRET}", "commands": ["*"], "keys": ["allkeys"]}}
            }}}}"#
        );
        AclAuth::from_json(json.as_bytes()).unwrap()
    }

    fn run(p: &mut AclAuth, ctx: &Context, args: &[&str], keys: &[usize]) -> (Verdict, Command) {
        let mut cmd = Command::new(args.iter().copied());
        for &k in keys {
            cmd = cmd.with_key(k);
        }
        (p.on_command(ctx, &mut cmd), cmd)
    }

    fn decided(p: &mut AclAuth, ctx: &Context, args: &[&str], keys: &[usize]) -> Decision {
        let mut cmd = Command::new(args.iter().copied());
        for &k in keys {
            cmd = cmd.with_key(k);
        }
        decide(p, ctx, cmd)
    }

    /// A `Continue` the proxy is asked to remember on these key prefixes.
    fn remembered_continue(prefixes: &[&str]) -> WireVerdict {
        WireVerdict {
            action: WireAction::Continue,
            attrs: vec![],
            remember: Some(prefixes.iter().map(|p| p.as_bytes().to_vec()).collect()),
        }
    }

    /// The verdicts of a batch call, which must not be all plain `Continue`s.
    fn verdicts(out: Option<&[u8]>) -> Vec<WireVerdict> {
        wire::decode_verdict_list(out.expect("not all plain Continues")).unwrap()
    }

    /// `printf %s secret | tessera admin hash-password --memory-kib 4096 --iterations 1`.
    const SECRET_ARGON2: &str = "$argon2id$v=19$m=4096,t=1,p=1$MDEyMzQ1Njc4OWFiY2RlZg$BnOHU0YDNJJVGAmPZbnliZ/dtQxhBHwxPBOFCjkAjW0";

    fn argon2_user(p: &AclAuth, name: &str) -> Option<[u8; 32]> {
        match &p.users.get(name).unwrap().password {
            Password::Argon2 { verified, .. } => verified.get(),
            Password::Sha256(_) => panic!("{name} has a sha256 password"),
        }
    }

    #[test]
    fn argon2_passwords_are_verified_then_remembered_per_user() {
        let json = format!(
            r#"{{"users": {{
                "carol": {{"password": "{SECRET_ARGON2}", "commands": ["*"], "keys": ["*"]}},
                "dave": {{"password": "{SECRET_ARGON2}", "commands": ["*"], "keys": ["*"]}},
                "bob": {{"password": "sha256:{SECRET}", "commands": ["*"], "keys": ["*"]}}
            }}}}"#
        );
        let p = AclAuth::from_json(json.as_bytes()).unwrap();
        assert!(!p.check_password(b"carol", b"Secret"));
        assert!(!p.check_password(b"carol", b""));
        assert_eq!(
            argon2_user(&p, "carol"),
            None,
            "a wrong password is not remembered"
        );
        assert!(p.check_password(b"carol", b"secret"));
        let remembered = argon2_user(&p, "carol").expect("a verified password is remembered");
        assert_eq!(argon2_user(&p, "dave"), None, "per user");
        // Remembered: the same password again, and still no other one.
        for _ in 0..3 {
            assert!(p.check_password(b"carol", b"secret"));
            assert!(!p.check_password(b"carol", b"secret2"));
        }
        assert_eq!(argon2_user(&p, "carol"), Some(remembered));
        assert!(p.check_password(b"dave", b"secret"));
        assert!(p.check_password(b"bob", b"secret") && !p.check_password(b"bob", b"x"));

        let mut p = p;
        let ctx = Context::default();
        let (v, _) = run(&mut p, &ctx, &["AUTH", "carol", "secret"], &[]);
        assert_eq!(v, Verdict::Reply(b"+OK\r\n".to_vec()));
        assert_eq!(
            ctx.attr_changes(),
            [("user".to_owned(), "carol".to_owned())]
        );
    }

    #[test]
    fn bad_argon2_strings_are_refused_at_configure_time() {
        let user = |password: &str| {
            let json = format!(
                r#"{{"users": {{"a": {{"password": "{password}", "commands": [], "keys": []}}}}}}"#
            );
            AclAuth::from_json(json.as_bytes()).map(drop)
        };
        assert!(user(SECRET_ARGON2).is_ok());
        for (password, want) in [
            (
                "$argon2id$v=19$m=4096",
                "user 'a': password: bad Argon2 PHC string",
            ),
            (
                "$argon2id$v=19$m=1,t=1,p=1$MDEyMzQ1Njc4OWFiY2RlZg$BnOHU0YDNJJVGAmPZbnliZ/dtQxhBHwxPBOFCjkAjW0",
                "bad Argon2",
            ),
            (
                "$argon2x$v=19$m=4096,t=1,p=1$MDEyMzQ1Njc4OWFiY2RlZg$BnOHU0YDNJJVGAmPZbnliZ/dtQxhBHwxPBOFCjkAjW0",
                "bad Argon2",
            ),
            (
                "$argon2id$v=19$m=4096,t=1,p=1$MDEyMzQ1Njc4OWFiY2RlZg",
                "no salt or no hash",
            ),
            (
                "$2b$12$abcdefghijklmnopqrstuu",
                "tessera admin hash-password",
            ),
        ] {
            let e = user(password).unwrap_err();
            assert!(e.contains(want), "{password}: {e}");
        }
    }

    #[test]
    fn the_example_config_parses() {
        AclAuth::from_json(include_bytes!("../config.example.json")).unwrap();
    }

    #[test]
    fn auth_sets_the_user() {
        let mut p = plugin();
        let ctx = Context::default();
        let (v, _) = run(&mut p, &ctx, &["AUTH", "alice", "secret"], &[]);
        assert_eq!(v, Verdict::Reply(b"+OK\r\n".to_vec()));
        assert_eq!(
            ctx.attr_changes(),
            [("user".to_owned(), "alice".to_owned())]
        );

        let ctx = Context::default();
        let (v, _) = run(&mut p, &ctx, &["auth", "secret"], &[]);
        assert_eq!(v, Verdict::Reply(b"+OK\r\n".to_vec()));
        assert_eq!(
            ctx.attr_changes(),
            [("user".to_owned(), "default".to_owned())]
        );
    }

    #[test]
    fn wrong_passwords_and_users() {
        let mut p = plugin();
        for args in [
            &["AUTH", "alice", "nope"][..],
            &["AUTH", "mallory", "secret"],
            &["AUTH", "nope"],
        ] {
            let ctx = Context::default();
            assert_eq!(run(&mut p, &ctx, args, &[]).0, Verdict::reject(WRONGPASS));
            assert!(ctx.attr_changes().is_empty());
        }
        assert!(matches!(
            run(&mut p, &Context::default(), &["AUTH"], &[]).0,
            Verdict::Reject(m) if m.starts_with("ERR wrong number")
        ));
    }

    #[test]
    fn hello_auth_is_rewritten_away() {
        let mut p = plugin();
        let ctx = Context::default();
        let (v, cmd) = run(
            &mut p,
            &ctx,
            &["HELLO", "3", "AUTH", "alice", "secret", "SETNAME", "app"],
            &[],
        );
        assert_eq!(v, Verdict::Continue);
        assert!(cmd.is_modified());
        assert_eq!(
            cmd.args().collect::<Vec<_>>(),
            [&b"HELLO"[..], b"3", b"SETNAME", b"app"]
        );
        assert_eq!(
            ctx.attr_changes(),
            [("user".to_owned(), "alice".to_owned())]
        );

        let ctx = Context::default();
        let (v, _) = run(&mut p, &ctx, &["HELLO", "2", "AUTH", "alice", "bad"], &[]);
        assert_eq!(v, Verdict::reject(WRONGPASS));
        let (v, _) = run(&mut p, &ctx, &["HELLO", "2", "AUTH", "alice"], &[]);
        assert!(matches!(v, Verdict::Reject(m) if m.contains("Syntax error")));

        // SETNAME auth is a name, not the AUTH option.
        let (v, _) = run(&mut p, &ctx, &["HELLO", "2", "SETNAME", "auth"], &[]);
        assert_eq!(v, Verdict::reject(NOAUTH_HELLO));
        let alice = Context::default().with_user("alice");
        let (v, cmd) = run(&mut p, &alice, &["HELLO", "3"], &[]);
        assert_eq!(v, Verdict::Continue);
        assert!(!cmd.is_modified());
    }

    #[test]
    fn unauthenticated_connections_get_noauth() {
        let mut p = plugin();
        let ctx = Context::default();
        assert_eq!(
            run(&mut p, &ctx, &["GET", "app:1"], &[1]).0,
            Verdict::reject(NOAUTH)
        );
        assert_eq!(run(&mut p, &ctx, &["PING"], &[]).0, Verdict::reject(NOAUTH));
        assert_eq!(run(&mut p, &ctx, &["QUIT"], &[]).0, Verdict::Continue);
    }

    #[test]
    fn commands_follow_the_rules_in_order() {
        let mut p = plugin();
        let alice = Context::default().with_user("alice");
        assert_eq!(
            run(&mut p, &alice, &["GET", "app:1"], &[1]).0,
            Verdict::Continue
        );
        assert_eq!(
            run(&mut p, &alice, &["DEL", "app:1"], &[1]).0,
            Verdict::reject("NOPERM this user has no permissions to run the 'del' command")
        );
        assert_eq!(
            run(&mut p, &alice, &["CONFIG", "GET", "x"], &[]).0,
            Verdict::Continue
        );
        assert!(matches!(
            run(&mut p, &alice, &["CONFIG", "SET", "x", "y"], &[]).0,
            Verdict::Reject(_)
        ));

        let root = Context::default().with_user("root");
        assert_eq!(
            run(&mut p, &root, &["DEL", "anything"], &[1]).0,
            Verdict::Continue
        );
        assert!(
            matches!(run(&mut p, &root, &["FLUSHALL"], &[]).0, Verdict::Reject(m) if m.contains("'flushall'"))
        );

        let stranger = Context::default().with_user("stranger");
        assert!(
            matches!(run(&mut p, &stranger, &["PING"], &[]).0, Verdict::Reject(m) if m.starts_with("NOPERM"))
        );
    }

    #[test]
    fn keys_must_match_a_pattern() {
        let mut p = plugin();
        let alice = Context::default().with_user("alice");
        assert_eq!(
            run(&mut p, &alice, &["SET", "xy", "v"], &[1]).0,
            Verdict::Continue
        );
        assert_eq!(
            run(&mut p, &alice, &["SET", "other", "v"], &[1]).0,
            Verdict::reject(NOPERM_KEY)
        );
        let root = Context::default().with_user("root");
        assert_eq!(
            run(&mut p, &root, &["GET", "other"], &[1]).0,
            Verdict::Continue
        );
    }

    #[test]
    fn bad_configs_name_the_user_and_the_problem() {
        let cases = [
            (
                r#"{"users": {"a": {"password": "secret", "commands": [], "keys": []}}}"#,
                "user 'a': password",
            ),
            (
                r#"{"users": {"a": {"password": "sha256:12", "commands": [], "keys": []}}}"#,
                "64 hex",
            ),
            (
                &*format!(
                    r#"{{"users": {{"a": {{"password": "sha256:{SECRET}", "commands": ["+@read"], "keys": []}}}}}}"#
                ),
                "categories",
            ),
            (
                r#"{"users": {"a": {"password": "sha256:00"}}}"#,
                "bad config",
            ),
        ];
        for (json, want) in cases {
            let e = AclAuth::from_json(json.as_bytes()).unwrap_err();
            assert!(e.contains(want), "{e}");
        }
    }

    #[test]
    fn permitted_commands_cost_no_allocation() {
        let mut rt = Runtime::<AclAuth>::new();
        rt.on_configure(include_bytes!("../config.example.json"));
        let alice = Context::default().with_user("alice");
        let admin = Context::default().with_user("admin");
        let inputs = [
            command_input(&alice, &Command::new(["GET", "app:1"]).with_key(1)),
            command_input(&alice, &Command::new(["SET", "app:2", "v"]).with_key(1)),
            command_input(&admin, &Command::new(["CONFIG", "GET", "x"])),
            command_input(&alice, &Command::new(["QUIT"])),
        ];
        let want = [
            Some(remembered_continue(&["app:"])),
            Some(remembered_continue(&["app:"])),
            Some(remembered_continue(&[])),
            None,
        ];
        for (input, want) in inputs.iter().zip(&want) {
            let got = rt
                .on_command(input)
                .map(|b| wire::decode_verdict(b).unwrap());
            assert_eq!(&got, want, "permitted: a remembered Continue (QUIT: plain)");
        }
        for (input, want) in inputs.iter().zip(&want) {
            let (out, n) = count_allocations(|| rt.on_command(input).is_some());
            assert_eq!(out, want.is_some());
            assert_eq!(n, 0);
        }
    }

    #[test]
    fn remembered_decisions_follow_the_user_the_command_and_its_subcommand() {
        let mut p = plugin();
        let cases: [(&str, &[&str], &[usize]); 14] = [
            ("alice", &["GET", "app:1"], &[1]),
            ("root", &["GET", "other"], &[1]),
            ("alice", &["GET", "other"], &[1]),
            ("alice", &["get", "app:1"], &[1]),
            ("alice", &["DEL", "app:1"], &[1]),
            ("root", &["DEL", "app:1"], &[1]),
            ("alice", &["DEL", "app:1"], &[1]),
            ("alice", &["CONFIG", "GET", "x"], &[]),
            ("alice", &["CONFIG", "SET", "x", "y"], &[]),
            ("alice", &["CONFIG", "GET", "x"], &[]),
            ("root", &["FLUSHALL"], &[]),
            ("stranger", &["GET", "app:1"], &[1]),
            ("root", &["FLUSHALL"], &[]),
            ("alice", &["SET", "xy", "v"], &[1]),
        ];
        for _ in 0..3 {
            for (user, args, keys) in cases {
                let ctx = Context::default().with_user(user);
                let want = run(&mut plugin(), &ctx, args, keys).0;
                assert_eq!(run(&mut p, &ctx, args, keys).0, want, "{user} {args:?}");
            }
        }
    }

    #[test]
    fn what_is_remembered_and_on_which_condition() {
        let json = format!(
            r#"{{"users": {{
                "alice": {{"password": "sha256:{SECRET}", "commands": ["get", "set", "config|get"], "keys": ["app:*", "~x?", "app:x:*", "~b*"]}},
                "root": {{"password": "sha256:{SECRET}", "commands": ["+@all", "-flushall"], "keys": ["app:*", "*"]}},
                "globs": {{"password": "sha256:{SECRET}", "commands": ["*"], "keys": ["x?", "a[b]*", "c\\*", "**"]}},
                "picky": {{"password": "sha256:{SECRET}", "commands": ["*", "-get|secret"], "keys": ["*"]}}
            }}}}"#
        );
        let mut p = AclAuth::from_json(json.as_bytes()).unwrap();
        let anon = Context::default();
        let user = |u: &str| Context::default().with_user(u);
        let no = None;
        let always = Some(vec![]);
        let alices = Some(vec!["app:".to_owned(), "b".to_owned()]);
        /// Context, command, keys, verdict kind, remembered.
        type Case = (
            Context,
            &'static [&'static str],
            &'static [usize],
            u8,
            Option<Vec<String>>,
        );
        let cases: Vec<Case> = vec![
            // Before authentication: NOAUTH, remembered until the context changes.
            (anon.clone(), &["GET", "app:1"], &[1], 3, always.clone()),
            (anon.clone(), &["PING"], &[], 3, always.clone()),
            (anon.clone(), &["HELLO", "3"], &[], 3, no.clone()),
            (anon.clone(), &["AUTH", "alice", "nope"], &[], 3, no.clone()),
            (anon.clone(), &["QUIT"], &[], 0, no.clone()),
            // Commands the user may not run: NOPERM, remembered.
            (user("alice"), &["DEL", "app:1"], &[1], 3, always.clone()),
            (
                user("alice"),
                &["CONFIG", "SET", "x", "y"],
                &[],
                3,
                always.clone(),
            ),
            (user("stranger"), &["GET", "app:1"], &[1], 3, always.clone()),
            (user("root"), &["FLUSHALL"], &[], 3, always.clone()),
            // Permitted, keys pass: remembered for keys under the literal prefixes.
            (user("alice"), &["GET", "app:1"], &[1], 0, alices.clone()),
            (user("alice"), &["SET", "xy", "v"], &[1], 0, alices.clone()),
            (
                user("alice"),
                &["CONFIG", "GET", "x"],
                &[],
                0,
                alices.clone(),
            ),
            (
                user("root"),
                &["DEL", "any", "app:1"],
                &[1, 2],
                0,
                always.clone(),
            ),
            // A key refused: asked again next time.
            (user("alice"), &["GET", "other"], &[1], 3, no.clone()),
            // No `literal*` pattern: nothing to make a condition of.
            (user("globs"), &["GET", "xy"], &[1], 0, no.clone()),
            (user("globs"), &["PING"], &[], 0, no.clone()),
            // `get|secret` looks at GET's key: GET is never remembered for picky.
            (user("picky"), &["GET", "secret"], &[1], 3, no.clone()),
            (user("picky"), &["GET", "other"], &[1], 0, no.clone()),
            (
                user("picky"),
                &["SET", "secret", "v"],
                &[1],
                0,
                always.clone(),
            ),
        ];
        for _ in 0..2 {
            for (ctx, args, keys, kind, remembered) in &cases {
                let d = decided(&mut p, ctx, args, keys);
                let what = format!("{:?} {args:?}", ctx.user());
                assert_eq!(d.wire.action.kind(), *kind, "{what}: {d:?}");
                assert_eq!(&d.remembered(), remembered, "{what}");
            }
        }
        // AUTH and HELLO ... AUTH set the user: never remembered.
        let d = decided(&mut p, &anon, &["AUTH", "alice", "secret"], &[]);
        assert_eq!((d.wire.attrs.len(), d.remembered()), (1, None));
        let d = decided(
            &mut p,
            &anon,
            &["HELLO", "3", "AUTH", "alice", "secret"],
            &[],
        );
        assert_eq!((d.wire.action.kind(), d.remembered()), (1, None));
    }

    #[test]
    fn remember_conditions_are_the_literal_prefixes() {
        let of = |patterns: &[&str]| {
            let patterns: Vec<Vec<u8>> = patterns.iter().map(|p| p.as_bytes().to_vec()).collect();
            KeyCondition::of(&patterns)
        };
        let prefixes =
            |p: &[&str]| KeyCondition::Prefixes(p.iter().map(|p| p.as_bytes().to_vec()).collect());
        assert_eq!(of(&[]), KeyCondition::Never);
        assert_eq!(
            of(&["x?", "a[b]*", "c\\*", "d?*", "**", "lit", "*x"]),
            KeyCondition::Never
        );
        assert_eq!(of(&["app:*", "x?"]), prefixes(&["app:"]));
        assert_eq!(
            of(&["b:*", "app:x:*", "app:*", "b:*", "ab*"]),
            prefixes(&["ab", "app:", "b:"])
        );
        assert_eq!(of(&["app:*", "*", "x?"]), KeyCondition::Always);
    }

    #[test]
    fn key_patterns_of_every_shape() {
        let cases = [
            ("*", "", true),
            ("app:*", "app:", true),
            ("app:*", "app:1", true),
            ("app:*", "ap", false),
            ("app:*", "xapp:1", false),
            ("a\\*", "a*", true),
            ("a\\*", "ab", false),
            ("a?*", "ab", true),
            ("a?*", "a", false),
            ("**", "x", true),
            ("x", "x", true),
            ("", "", true),
            ("", "x", false),
        ];
        for (pattern, key, want) in cases {
            let p = KeyPattern::new(pattern.as_bytes().to_vec());
            assert_eq!(p.matches(key.as_bytes()), want, "{pattern} ~ {key} ({p:?})");
            assert_eq!(glob::matches(pattern.as_bytes(), key.as_bytes()), want);
        }
        assert!(matches!(
            KeyPattern::new(b"app:*".to_vec()),
            KeyPattern::Prefix(_)
        ));
        assert!(matches!(KeyPattern::new(b"*".to_vec()), KeyPattern::Any));
    }

    #[test]
    fn alternating_users_and_commands_cost_no_allocation() {
        let mut rt = Runtime::<AclAuth>::new();
        rt.on_configure(include_bytes!("../config.example.json"));
        let alice = Context::default().with_user("alice");
        let admin = Context::default().with_user("admin");
        let inputs = [
            commands_input(&alice, &[Command::new(["GET", "app:1"]).with_key(1)]),
            commands_input(&admin, &[Command::new(["GET", "other"]).with_key(1)]),
            commands_input(
                &alice,
                &[
                    Command::new(["SET", "app:2", "v"]).with_key(1),
                    Command::new(["GET", "app:1"]).with_key(1),
                ],
            ),
            commands_input(&admin, &[Command::new(["CONFIG", "GET", "x"])]),
            commands_input(&admin, &[Command::new(["SELECT", "1"])]),
        ];
        for input in &inputs {
            for v in verdicts(rt.on_commands(input)) {
                let prefixes = v
                    .remember
                    .as_ref()
                    .expect("permitted: a remembered Continue");
                assert_eq!(v.action, WireAction::Continue);
                assert!(
                    prefixes.is_empty() || prefixes == &[b"app:".to_vec()],
                    "{v:?}"
                );
            }
        }
        for _ in 0..3 {
            for input in &inputs {
                let (out, n) = count_allocations(|| rt.on_commands(input).is_some());
                assert!(out);
                assert_eq!(n, 0);
            }
        }
    }

    #[test]
    fn a_batch_stops_at_auth_and_goes_on_as_the_user() {
        let mut rt = Runtime::<AclAuth>::new();
        rt.on_configure(include_bytes!("../config.example.json"));
        let get = Command::new(["GET", "app:1"]).with_key(1);
        let auth = Command::new(["AUTH", "alice", "secret"]);
        let batch = [get.clone(), auth, get.clone(), get];
        let out = rt.on_commands(&commands_input(&Context::default(), &batch));
        let v = wire::decode_verdict_list(out.unwrap()).unwrap();
        assert_eq!(v.len(), 2, "{v:?}");
        assert_eq!(
            v[0].action,
            WireAction::Reject("NOAUTH Authentication required.".into())
        );
        assert_eq!(v[1].action, WireAction::Reply(b"+OK\r\n".to_vec()));
        assert_eq!(v[1].attrs, [("user".to_owned(), "alice".to_owned())]);
        // NOAUTH is remembered (AUTH changes the context: the proxy forgets it), AUTH not.
        assert_eq!(
            (v[0].remember.clone(), v[1].remember.clone()),
            (Some(vec![]), None)
        );
        // The proxy sends the rest with the new user: permitted, remembered Continues.
        let alice = Context::default().with_user("alice");
        let v = verdicts(rt.on_commands(&commands_input(&alice, &batch[2..])));
        assert_eq!(
            v,
            [
                remembered_continue(&["app:"]),
                remembered_continue(&["app:"])
            ]
        );
    }

    #[test]
    fn a_batch_of_permitted_commands_costs_no_allocation() {
        let mut rt = Runtime::<AclAuth>::new();
        rt.on_configure(include_bytes!("../config.example.json"));
        let alice = Context::default().with_user("alice");
        let cmds = [
            Command::new(["GET", "app:1"]).with_key(1),
            Command::new(["SET", "app:2", "v"]).with_key(1),
            Command::new(["MGET", "app:1", "app:2"])
                .with_key(1)
                .with_key(2),
            Command::new(["PING"]),
        ];
        let input = commands_input(&alice, &cmds);
        assert_eq!(
            verdicts(rt.on_commands(&input)),
            vec![remembered_continue(&["app:"]); 4],
            "permitted: all remembered Continues"
        );
        let (_, n) = count_allocations(|| rt.on_commands(&input).is_some());
        assert_eq!(n, 0);
    }
}
