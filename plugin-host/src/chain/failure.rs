//! The failure rule, stated once: a plugin that traps, times out, exceeds its memory or
//! returns a malformed verdict fails that call. Fail-closed (default): the command is answered
//! `-ERR plugin '<name>' failed: <what>`. Fail-open: the command goes on as if the plugin had
//! said `Continue`. The instance is thrown away and re-created (at most once a second). A
//! plugin that gates access is never fail-open: such verdicts of a fail-open plugin are
//! refused. The error replies of a failure, a refusal or an input too large are built here.

use std::sync::atomic::Ordering::Relaxed;

use bytes::Bytes;

use super::WorkerChain;
use super::batch::Item;
use crate::abi::Decision;
use crate::error::CallError;
use crate::link::{FailMode, max_input};
use crate::load::LoadedPlugin;

impl WorkerChain {
    /// The answer to an input of `size` bytes too large for link `i`: no call, no failure.
    pub(super) fn too_large(&self, i: usize, what: &str, size: usize) -> Bytes {
        let c = &self.links[i].plugin.config;
        tracing::debug!(plugin = %c.name, size, "input too large for the plugin");
        error_reply(&format!(
            "ERR plugin '{}' cannot take a {what} of {size} bytes: at most {} bytes (a quarter \
             of its memory limit)",
            c.name,
            max_input(c)
        ))
    }

    /// What a verdict of link `i` does that a fail-open plugin may not, if anything.
    pub(super) fn gates_open(
        &self,
        i: usize,
        decision: &Decision,
        attrs: &[(String, String)],
        item: Option<&Item>,
    ) -> Option<&'static str> {
        let plugin = &self.links[i].plugin;
        (plugin.config.settings.fail == FailMode::Open)
            .then(|| gating(decision, attrs, item))
            .flatten()
    }

    pub(super) fn refuse_gating(&self, i: usize, what: &str) -> Bytes {
        refuse_gating(&self.links[i].plugin, what)
    }

    /// The failure rule for a call of link `i` that failed: a failure of the plugin
    /// ([`CallError::counted`]) is counted and logged, and its instance thrown away.
    /// Fail-open, the command goes on (`Ok`); fail-closed, `Err` is its error reply.
    pub(super) fn fail(&mut self, i: usize, failure: CallError) -> Result<(), Bytes> {
        let link = &mut self.links[i];
        if failure.counted() {
            link.instance = None;
            link.counts.failures += 1;
            self.dirty = true;
            tracing::warn!(plugin = %link.plugin.config.name, "plugin failed: {failure}");
        }
        let c = &link.plugin.config;
        match c.settings.fail {
            FailMode::Open => Ok(()),
            FailMode::Closed => Err(error_reply(&format!(
                "ERR plugin '{}' failed: {failure}",
                c.name
            ))),
        }
    }
}

/// What a verdict does that gates access, if anything: it sets or removes the `user`
/// attribute (authentication), or changes the keys of the command `item` (a namespace).
pub(super) fn gating(
    decision: &Decision,
    attrs: &[(String, String)],
    item: Option<&Item>,
) -> Option<&'static str> {
    if attrs.iter().any(|(k, _)| k == "user") {
        return Some("set the user attribute");
    }
    match (decision, item) {
        (Decision::PrefixKeys(_), _) => Some("prefixed keys"),
        (Decision::Rewrite(args), Some(item))
            if item
                .keys
                .iter()
                .any(|&k| args.get(k) != Some(&item.args[k])) =>
        {
            Some("rewrote keys")
        }
        _ => None,
    }
}

/// The answer to a verdict of a fail-open plugin that gates access; logged once.
pub(super) fn refuse_gating(plugin: &LoadedPlugin, what: &str) -> Bytes {
    let msg = format!(
        "ERR plugin '{}' is fail = \"open\" and {what}: a plugin that gates access must be \
         fail = \"closed\"",
        plugin.config.name
    );
    if !plugin.refusal_logged.swap(true, Relaxed) {
        tracing::error!(
            plugin = %plugin.config.name,
            "refusing the plugin's verdicts: it is fail = \"open\" and {what}; a plugin that \
             gates access must be fail = \"closed\""
        );
    }
    error_reply(&msg)
}

pub(super) fn error_reply(msg: &str) -> Bytes {
    let mut out = bytes::BytesMut::with_capacity(msg.len() + 3);
    tessera_protocol::resp::encode::error(&mut out, msg);
    out.freeze()
}
