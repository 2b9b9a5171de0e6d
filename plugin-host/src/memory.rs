//! Verdicts the host remembers for one connection (docs/plugin-abi.md, "Remembered
//! verdicts"): per plugin and command id, applied without calling the plugin again.

use bytes::Bytes;

use super::CallContext;

/// The most command ids remembered per plugin and connection.
pub const MAX_ENTRIES: usize = 64;
/// The most bytes of key prefixes one remembered verdict's condition may hold.
pub const MAX_CONDITION_BYTES: usize = 4096;
/// The most key prefixes of one condition (each key of a command is checked against them).
pub const MAX_CONDITION_PREFIXES: usize = 64;

/// What a remembered verdict does to a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remembered {
    Continue,
    PrefixKeys(Bytes),
    /// Answer with this RESP value.
    Reply(Bytes),
    /// Answer with this RESP error.
    Reject(Bytes),
}

struct Entry {
    cmd: u16,
    /// The key prefixes of the condition; empty: none.
    prefixes: Vec<Bytes>,
    verdict: Remembered,
}

/// One connection's remembered verdicts, valid for the context and chain they were given
/// under.
#[derive(Default)]
pub struct Memory {
    chain_version: u64,
    db: u32,
    protocol: u8,
    attrs: Vec<(String, String)>,
    /// By link of the chain.
    links: Vec<Vec<Entry>>,
}

impl Memory {
    /// Forgets everything unless the chain and the connection's context are the ones the
    /// verdicts were remembered under; afterwards they are.
    pub fn validate(&mut self, chain_version: u64, links: usize, ctx: &CallContext) {
        let same = self.chain_version == chain_version
            && self.links.len() == links
            && self.db == ctx.db
            && self.protocol == ctx.protocol
            && self.attrs == ctx.attrs;
        if same {
            return;
        }
        self.chain_version = chain_version;
        self.db = ctx.db;
        self.protocol = ctx.protocol;
        self.attrs.clear();
        self.attrs.extend_from_slice(ctx.attrs);
        self.links.iter_mut().for_each(Vec::clear);
        self.links.resize_with(links, Vec::new);
    }

    /// The verdict link `link` gave to command `cmd` and asked to be remembered, if the
    /// command's keys (`args` at positions `keys`) meet its condition.
    pub fn recall(
        &self,
        link: usize,
        cmd: u16,
        args: &[Bytes],
        keys: &[usize],
    ) -> Option<&Remembered> {
        let entry = self.links.get(link)?.iter().find(|e| e.cmd == cmd)?;
        let met = entry.prefixes.is_empty()
            || keys
                .iter()
                .all(|&k| entry.prefixes.iter().any(|p| args[k].starts_with(p)));
        met.then_some(&entry.verdict)
    }

    /// Remembers link `link`'s verdict for command `cmd`, replacing an earlier one; `false`
    /// if past the limits (the verdict is then not remembered).
    pub fn remember(
        &mut self,
        link: usize,
        cmd: u16,
        prefixes: Vec<Bytes>,
        verdict: Remembered,
    ) -> bool {
        if prefixes.len() > MAX_CONDITION_PREFIXES
            || prefixes.iter().map(Bytes::len).sum::<usize>() > MAX_CONDITION_BYTES
        {
            return false;
        }
        let Some(entries) = self.links.get_mut(link) else {
            return false;
        };
        let entry = Entry {
            cmd,
            prefixes,
            verdict,
        };
        if let Some(e) = entries.iter_mut().find(|e| e.cmd == cmd) {
            *e = entry;
        } else if entries.len() < MAX_ENTRIES {
            entries.push(entry);
        } else {
            return false;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx<'a>(db: u32, attrs: &'a [(String, String)]) -> CallContext<'a> {
        CallContext {
            conn_id: 1,
            db,
            peer: "127.0.0.1:1",
            attrs,
            protocol: 2,
        }
    }

    fn args(line: &[&str]) -> Vec<Bytes> {
        line.iter().map(|a| Bytes::from(a.to_string())).collect()
    }

    #[test]
    fn recalls_by_link_and_command_under_its_condition() {
        let mut m = Memory::default();
        m.validate(1, 2, &ctx(0, &[]));
        assert!(m.remember(
            0,
            7,
            vec![Bytes::from("app:"), Bytes::from("tmp:")],
            Remembered::Continue
        ));
        let get = |key: &str| args(&["GET", key]);
        assert_eq!(
            m.recall(0, 7, &get("app:1"), &[1]),
            Some(&Remembered::Continue)
        );
        assert_eq!(
            m.recall(0, 7, &get("tmp:1"), &[1]),
            Some(&Remembered::Continue)
        );
        assert_eq!(
            m.recall(0, 7, &get("other"), &[1]),
            None,
            "key outside the condition"
        );
        assert_eq!(m.recall(0, 8, &get("app:1"), &[1]), None, "another command");
        assert_eq!(m.recall(1, 7, &get("app:1"), &[1]), None, "another plugin");
        let mset = args(&["MSET", "app:1", "v", "other", "v"]);
        assert_eq!(
            m.recall(0, 7, &mset, &[1, 3]),
            None,
            "every key must meet it"
        );
        assert_eq!(
            m.recall(0, 7, &args(&["PING"]), &[]),
            Some(&Remembered::Continue)
        );

        // No condition: any arguments; a later verdict for the command replaces it.
        let no = Remembered::Reject(Bytes::from("-NOPERM no\r\n"));
        assert!(m.remember(0, 7, vec![], no.clone()));
        assert_eq!(m.recall(0, 7, &get("other"), &[1]), Some(&no));
    }

    #[test]
    fn forgets_when_the_context_or_the_chain_changes() {
        let alice = vec![("user".to_string(), "alice".to_string())];
        let bob = vec![("user".to_string(), "bob".to_string())];
        let get = args(&["GET", "k"]);
        let mut m = Memory::default();
        let filled = |m: &mut Memory, version, c: &CallContext| {
            m.validate(version, 1, c);
            m.remember(0, 7, vec![], Remembered::Continue);
        };
        filled(&mut m, 1, &ctx(0, &alice));
        m.validate(1, 1, &ctx(0, &alice));
        assert!(m.recall(0, 7, &get, &[1]).is_some(), "same context");
        for (version, c) in [(1, ctx(0, &bob)), (1, ctx(1, &alice)), (2, ctx(0, &alice))] {
            filled(&mut m, 1, &ctx(0, &alice));
            m.validate(version, 1, &c);
            assert!(m.recall(0, 7, &get, &[1]).is_none());
        }
    }

    #[test]
    fn remembers_within_its_limits() {
        let mut m = Memory::default();
        m.validate(1, 1, &ctx(0, &[]));
        for cmd in 0..MAX_ENTRIES as u16 {
            assert!(m.remember(0, cmd, vec![], Remembered::Continue));
        }
        assert!(
            !m.remember(0, 1000, vec![], Remembered::Continue),
            "too many commands"
        );
        assert!(
            m.remember(0, 3, vec![], Remembered::Continue),
            "a replacement still fits"
        );
        let big = vec![Bytes::from(vec![b'a'; MAX_CONDITION_BYTES + 1])];
        assert!(
            !m.remember(0, 3, big, Remembered::Continue),
            "too large a condition"
        );
        let many = vec![Bytes::new(); MAX_CONDITION_PREFIXES + 1];
        assert!(
            !m.remember(0, 3, many, Remembered::Continue),
            "too many prefixes"
        );
        assert!(
            !m.remember(5, 3, vec![], Remembered::Continue),
            "no such plugin"
        );
    }
}
