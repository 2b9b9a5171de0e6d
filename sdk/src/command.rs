//! [`Command`]: the command a client sent, with its keys marked by the host.

use std::fmt;

/// Why a [`Command`] could not be changed as asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandError {
    /// There is no argument at this index.
    NoSuchArg(usize),
    /// The argument at this index is not a key (for [`Command::set_key`]).
    NotAKey(usize),
    /// The command name (argument 0) cannot be removed.
    RemoveName,
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandError::NoSuchArg(i) => write!(f, "the command has no argument {i}"),
            CommandError::NotAKey(i) => write!(f, "argument {i} is not a key"),
            CommandError::RemoveName => f.write_str("the command name cannot be removed"),
        }
    }
}

impl std::error::Error for CommandError {}

/// One command as the client sent it: `args[0]` is the name, the host marked which
/// arguments are keys (from Redis's key specs), so a plugin needs no command table.
///
/// Changing a command in [`Plugin::on_command`](crate::Plugin::on_command) and returning
/// [`Verdict::Continue`](crate::Verdict::Continue) sends the host a *rewrite*: the host
/// then routes the new arguments (and re-reads the command table for them, so key
/// positions follow the rewritten command). Arguments added with
/// [`push_arg`](Command::push_arg) are not marked as keys here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    args: Vec<Vec<u8>>,
    keys: Vec<bool>,
    name: String,
    modified: bool,
}

impl Command {
    /// A command with these arguments (`args[0]` is the name) and no key marked; mark keys
    /// with [`with_key`](Command::with_key). For tests: in a plugin the SDK builds it.
    ///
    /// # Panics
    /// If `args` is empty: a command has at least its name.
    pub fn new<I, A>(args: I) -> Self
    where
        I: IntoIterator<Item = A>,
        A: Into<Vec<u8>>,
    {
        Self::from_parts(args.into_iter().map(|a| (a.into(), false)).collect())
    }

    /// This command with argument `i` marked as a key, for tests.
    ///
    /// # Panics
    /// If there is no argument `i`.
    pub fn with_key(mut self, i: usize) -> Self {
        self.keys[i] = true;
        self
    }

    /// A command from `(argument, is_key)` pairs.
    ///
    /// # Panics
    /// If `parts` is empty.
    pub fn from_parts(parts: Vec<(Vec<u8>, bool)>) -> Self {
        assert!(!parts.is_empty(), "a command has at least its name");
        let (args, keys): (Vec<_>, Vec<_>) = parts.into_iter().unzip();
        let name = lowercase(&args[0]);
        Command {
            args,
            keys,
            name,
            modified: false,
        }
    }

    /// The command name, ASCII-lowercased (`"get"` for `GET` or `Get`). Bytes that are
    /// not UTF-8 become U+FFFD.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `"<name>|<subcommand>"` (both lowercased, e.g. `"object|encoding"`) when the command
    /// has a second argument, else `None`. Whether the command really has subcommands is
    /// the plugin's business: for `GET k` this is `Some("get|k")`.
    pub fn name_with_subcommand(&self) -> Option<String> {
        let sub = self.args.get(1)?;
        Some(format!("{}|{}", self.name, lowercase(sub)))
    }

    /// The number of arguments, the name included (always at least 1).
    pub fn len(&self) -> usize {
        self.args.len()
    }

    /// Always `false`: a command has at least its name. (Here for clippy's sake.)
    pub fn is_empty(&self) -> bool {
        self.args.is_empty()
    }

    /// All arguments, the name first, as sent (not lowercased).
    pub fn args(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        self.args.iter().map(Vec::as_slice)
    }

    /// Argument `i` (0 is the name as sent), or `None` past the end.
    pub fn arg(&self, i: usize) -> Option<&[u8]> {
        self.args.get(i).map(Vec::as_slice)
    }

    /// Argument `i` as UTF-8 text, or `None` past the end or if it is not UTF-8.
    pub fn arg_str(&self, i: usize) -> Option<&str> {
        std::str::from_utf8(self.arg(i)?).ok()
    }

    /// Whether the host marked argument `i` as a key (`false` past the end).
    pub fn is_key(&self, i: usize) -> bool {
        self.keys.get(i).copied().unwrap_or(false)
    }

    /// The keys, as `(argument index, key)` pairs in argument order.
    pub fn keys(&self) -> impl Iterator<Item = (usize, &[u8])> + '_ {
        self.args
            .iter()
            .enumerate()
            .filter(|(i, _)| self.keys[*i])
            .map(|(i, a)| (i, a.as_slice()))
    }

    /// Replaces argument `i` (replacing 0 renames the command).
    pub fn set_arg(&mut self, i: usize, value: impl Into<Vec<u8>>) -> Result<(), CommandError> {
        let slot = self.args.get_mut(i).ok_or(CommandError::NoSuchArg(i))?;
        *slot = value.into();
        if i == 0 {
            self.name = lowercase(&self.args[0]);
        }
        self.modified = true;
        Ok(())
    }

    /// Replaces argument `i`, which must be a key.
    pub fn set_key(&mut self, i: usize, key: impl Into<Vec<u8>>) -> Result<(), CommandError> {
        if i >= self.args.len() {
            return Err(CommandError::NoSuchArg(i));
        }
        if !self.keys[i] {
            return Err(CommandError::NotAKey(i));
        }
        self.set_arg(i, key)
    }

    /// Replaces every key by `f(key)`, e.g. to add a prefix.
    pub fn map_keys(&mut self, mut f: impl FnMut(&[u8]) -> Vec<u8>) {
        for i in 0..self.args.len() {
            if self.keys[i] {
                self.args[i] = f(&self.args[i]);
                self.modified = true;
            }
        }
    }

    /// Appends an argument (not marked as a key).
    pub fn push_arg(&mut self, value: impl Into<Vec<u8>>) {
        self.args.push(value.into());
        self.keys.push(false);
        self.modified = true;
    }

    /// Removes argument `i` (not the name) and returns it.
    pub fn remove_arg(&mut self, i: usize) -> Result<Vec<u8>, CommandError> {
        if i == 0 {
            return Err(CommandError::RemoveName);
        }
        if i >= self.args.len() {
            return Err(CommandError::NoSuchArg(i));
        }
        self.keys.remove(i);
        self.modified = true;
        Ok(self.args.remove(i))
    }

    /// Whether the command was changed since the SDK decoded it (then `Continue` becomes a
    /// rewrite).
    pub fn is_modified(&self) -> bool {
        self.modified
    }

    pub(crate) fn into_args(self) -> Vec<Vec<u8>> {
        self.args
    }
}

fn lowercase(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_is_lowercased_and_follows_renames() {
        let mut c = Command::new(["GeT", "k"]).with_key(1);
        assert_eq!(c.name(), "get");
        assert!(!c.is_modified());
        c.set_arg(0, "STRLEN").unwrap();
        assert_eq!(c.name(), "strlen");
        assert!(c.is_modified());
        assert_eq!(
            Command::new(["OBJECT", "Encoding", "k"])
                .name_with_subcommand()
                .as_deref(),
            Some("object|encoding")
        );
    }

    #[test]
    fn keys_and_edits() {
        let mut c = Command::new(["MSET", "a", "1", "b", "2"])
            .with_key(1)
            .with_key(3);
        assert_eq!(c.keys().map(|(i, _)| i).collect::<Vec<_>>(), vec![1, 3]);
        assert_eq!(c.set_key(2, "x"), Err(CommandError::NotAKey(2)));
        assert_eq!(c.set_key(9, "x"), Err(CommandError::NoSuchArg(9)));
        assert!(!c.is_modified());
        c.map_keys(|k| [b"t:", k].concat());
        assert_eq!(c.arg(1), Some(&b"t:a"[..]));
        assert_eq!(c.arg(3), Some(&b"t:b"[..]));
        assert_eq!(c.arg(2), Some(&b"1"[..]));
        c.push_arg("x");
        assert!(!c.is_key(5));
        assert_eq!(c.remove_arg(0), Err(CommandError::RemoveName));
        assert_eq!(c.remove_arg(1).unwrap(), b"t:a");
        assert_eq!(c.keys().map(|(i, _)| i).collect::<Vec<_>>(), vec![2]);
        assert_eq!(c.len(), 5);
    }
}
