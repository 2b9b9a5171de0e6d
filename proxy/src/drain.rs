//! Which slot-table revisions a worker still has commands in flight for, so that the proxy
//! acknowledges a revision only once nothing routed under an earlier table can still run.
//!
//! Every batch a session sends carries an [`Routed`] guard of the revision it was routed
//! under; the guard goes when the batch is answered (or failed). A worker's batches are
//! counted per revision on its own thread: one count per batch, no atomic, no lock.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use tokio::sync::Notify;

/// One worker's batches in flight, counted by the revision they were routed under.
#[derive(Debug, Default)]
pub struct Drain {
    /// (revision, batches in flight), oldest revision first, no zero counts.
    counts: RefCell<VecDeque<(u64, usize)>>,
    /// Woken when the oldest revision in flight changes.
    changed: Notify,
}

impl Drain {
    /// Counts a batch routed under `revision` until the guard is dropped.
    pub fn sent(self: &Rc<Drain>, revision: u64) -> Routed {
        let mut counts = self.counts.borrow_mut();
        match counts.iter().rposition(|&(r, _)| r <= revision) {
            Some(i) if counts[i].0 == revision => counts[i].1 += 1,
            Some(i) => counts.insert(i + 1, (revision, 1)),
            None => counts.push_front((revision, 1)),
        }
        Routed {
            drain: self.clone(),
            revision,
        }
    }

    /// Whether no batch routed under a revision older than `revision` is in flight.
    pub fn drained(&self, revision: u64) -> bool {
        self.counts
            .borrow()
            .front()
            .is_none_or(|&(r, _)| r >= revision)
    }

    /// Waits until [`Drain::drained`] holds for `revision`.
    pub async fn wait(&self, revision: u64) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.drained(revision) {
                return;
            }
            changed.await;
        }
    }

    fn answered(&self, revision: u64) {
        let mut counts = self.counts.borrow_mut();
        let Some(i) = counts.iter().position(|&(r, _)| r == revision) else {
            return;
        };
        counts[i].1 -= 1;
        if counts[i].1 == 0 {
            counts.remove(i);
            if i == 0 {
                self.changed.notify_waiters();
            }
        }
    }
}

/// A batch in flight, counted in its worker's [`Drain`] until dropped.
#[derive(Debug)]
pub struct Routed {
    drain: Rc<Drain>,
    revision: u64,
}

impl Drop for Routed {
    fn drop(&mut self) {
        self.drain.answered(self.revision);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revision_is_drained_once_every_older_batch_is_answered() {
        let d = Rc::new(Drain::default());
        let a = d.sent(3);
        let b = d.sent(5);
        let c = d.sent(3);
        assert!(d.drained(3));
        assert!(!d.drained(4));
        drop(a);
        assert!(!d.drained(4), "one batch of revision 3 is still in flight");
        drop(c);
        assert!(d.drained(5));
        assert!(!d.drained(6));
        let older = d.sent(4);
        assert!(
            !d.drained(5),
            "a batch of an older table counts wherever it comes"
        );
        drop(older);
        drop(b);
        assert!(d.drained(u64::MAX));
    }
}
