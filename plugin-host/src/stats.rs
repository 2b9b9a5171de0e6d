//! Counters of each plugin: shared over the workers, and each worker's counts not yet
//! added to them (flushed once per batch, so the shared cache lines are not written on every
//! call).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::abi::Decision;

/// Counters of one plugin, over all workers.
#[derive(Debug, Default)]
pub struct PluginStats {
    /// Commands, connections and replies a hook decided.
    pub calls: AtomicU64,
    /// Calls into the module (a batch of commands is one).
    pub invocations: AtomicU64,
    /// Of `calls`, those of `on_connect` and of `on_reply` (the rest are commands).
    pub connect_calls: AtomicU64,
    pub reply_calls: AtomicU64,
    /// Commands decided from a remembered verdict, without a call (not in `calls`).
    pub remembered: AtomicU64,
    /// Verdicts, given by a call or remembered (PrefixKeys counts as a rewrite).
    pub continues: AtomicU64,
    pub rewrites: AtomicU64,
    pub replies: AtomicU64,
    pub rejects: AtomicU64,
    pub failures: AtomicU64,
    pub nanos: AtomicU64,
}

/// Counts of one link not yet added to the plugin's shared counters.
#[derive(Default)]
pub(crate) struct Counts {
    pub(crate) calls: u64,
    pub(crate) invocations: u64,
    pub(crate) connect_calls: u64,
    pub(crate) reply_calls: u64,
    pub(crate) remembered: u64,
    pub(crate) continues: u64,
    pub(crate) rewrites: u64,
    pub(crate) replies: u64,
    pub(crate) rejects: u64,
    pub(crate) failures: u64,
    pub(crate) nanos: u64,
}

impl Counts {
    /// Adds the counts to `s`, and resets them.
    pub(crate) fn flush_into(&mut self, s: &PluginStats) {
        let c = std::mem::take(self);
        for (shared, n) in [
            (&s.calls, c.calls),
            (&s.invocations, c.invocations),
            (&s.connect_calls, c.connect_calls),
            (&s.reply_calls, c.reply_calls),
            (&s.remembered, c.remembered),
            (&s.continues, c.continues),
            (&s.rewrites, c.rewrites),
            (&s.replies, c.replies),
            (&s.rejects, c.rejects),
            (&s.failures, c.failures),
            (&s.nanos, c.nanos),
        ] {
            if n > 0 {
                shared.fetch_add(n, Relaxed);
            }
        }
    }
}

pub(crate) fn count_verdict(counts: &mut Counts, d: &Decision) {
    match d {
        Decision::Continue => counts.continues += 1,
        Decision::Rewrite(_) | Decision::PrefixKeys(_) => counts.rewrites += 1,
        Decision::Reply(_) => counts.replies += 1,
        Decision::Reject(_) => counts.rejects += 1,
    }
}
