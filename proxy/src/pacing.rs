//! When a backend connection writes the commands sessions hand it: once per turn of the
//! worker, and not while Redis has yet to read what the connection wrote before.

use std::time::Duration;

/// The most polls of `epoll` a busy turn's write waits for (see [`Pacing::poll_again`]).
pub(crate) const MAX_POLLS: u32 = 16;

/// The count of a backend connection's commands, and whether to write them now.
///
/// A turn's commands are written at its end unless `hold_at` or more commands written before
/// are unanswered and none of the latest write is: Redis has not got to that write yet, so
/// the new commands wait for its first reply and then go at the end of that turn, with
/// whatever else came meanwhile, for Redis to read in one go instead of being woken for
/// each few (docs/benchmarks.md: with 50 clients, about half of Redis's CPU per command). Commands wait only
/// while the batches queued average under 2 commands: pipelining clients already bring
/// Redis enough to read, and holding theirs left Redis idle a round trip per write. Below `hold_at`
/// commands in flight (a client or two) nothing waits, and a long pipeline keeps streaming
/// because any reply to the latest write lets the next one go.
#[derive(Debug)]
pub(crate) struct Pacing {
    hold_at: u64,
    /// Commands queued and not yet written, and the batches they came in.
    queued: u64,
    queued_batches: u64,
    /// Commands written, ever.
    written: u64,
    /// `written` before the latest write.
    latest_from: u64,
    /// Replies read, ever.
    replied: u64,
    held: bool,
    /// How long single commands on a busy worker wait for more (`batch_wait_us`), and for
    /// how long without a new batch (`batch_gap_us`).
    batch_wait: Duration,
    batch_gap: Duration,
}

/// How long a turn's write has waited (see [`Pacing::poll_again`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Waited {
    /// Polls of `epoll` so far.
    pub(crate) polls: u32,
    /// Batches queued when the latest poll began.
    pub(crate) before: u64,
    /// Since the first poll.
    pub(crate) total: Duration,
    /// Since the latest poll that brought a batch (or the first poll).
    pub(crate) quiet: Duration,
}

/// What a turn's write needs to know of its worker.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WorkerState {
    /// Its reads come microseconds apart ([`crate::busy_poll::Activity::busy`]).
    pub(crate) busy: bool,
    /// Some session answered lately has yet to send again
    /// ([`crate::busy_poll::Activity::expects_more`]).
    pub(crate) expects_more: bool,
}

impl Pacing {
    /// `hold_in_flight`, `batch_wait` and `batch_gap` as configured: a `hold_in_flight` of 0
    /// never holds nor waits.
    pub(crate) fn new(hold_in_flight: usize, batch_wait: Duration, batch_gap: Duration) -> Pacing {
        Pacing {
            hold_at: match hold_in_flight {
                0 => u64::MAX,
                n => n as u64,
            },
            queued: 0,
            queued_batches: 0,
            written: 0,
            latest_from: 0,
            replied: 0,
            held: false,
            batch_wait,
            batch_gap,
        }
    }

    /// A batch of `n` commands was queued; `true` if it is due at the end of the turn
    /// (`false`: it joins the held ones, which wait for a reply).
    pub(crate) fn queue(&mut self, n: usize) -> bool {
        self.queued += n as u64;
        self.queued_batches += 1;
        !self.held || self.may_write()
    }

    /// At the end of a turn with commands queued: `true` if they are to be written now (and
    /// counts them written), `false` if they are held until a reply comes.
    pub(crate) fn write_now(&mut self) -> bool {
        if !self.may_write() {
            self.held = true;
            return false;
        }
        self.held = false;
        self.latest_from = self.written;
        self.written += std::mem::take(&mut self.queued);
        self.queued_batches = 0;
        true
    }

    /// `n` replies were read; `true` if held commands are now due.
    pub(crate) fn replied(&mut self, n: usize) -> bool {
        self.replied += n as u64;
        self.held && self.may_write()
    }

    /// Whether the turn's write also waits for the worker's next poll of `epoll`: when the
    /// turn brought commands of 2 or more sessions (whose clients will have sent more by
    /// then), or one session's on a `busy` worker (whose reads come microseconds apart:
    /// more are due soon; see [`Pacing::poll_again`]). A lone command of a worker that is
    /// not busy goes at once, and `hold_in_flight = 0` or `batch_wait_us = 0` turn this off
    /// for a busy worker's.
    pub(crate) fn one_more_poll(&self, busy: bool) -> bool {
        self.hold_at != u64::MAX
            && (self.queued_batches >= 2 || (busy && !self.batch_wait.is_zero()))
    }

    /// Batches queued since the last write.
    pub(crate) fn batches(&self) -> u64 {
        self.queued_batches
    }

    /// Whether a turn's write that has `waited` waits for one more poll of `epoll`. On a
    /// busy worker, single commands (not [`Pacing::pipelined`]: clients that wait for each
    /// reply) wait for more while some session of the worker answered lately has yet to
    /// send again, until no batch has come for `batch_gap` or `batch_wait` has passed: each
    /// write Redis then reads takes in the commands of clients that send one after another,
    /// instead of waking Redis for each few. Otherwise 2 or more batches wait as long as
    /// each poll brings more, up to [`MAX_POLLS`], and a lone one goes.
    pub(crate) fn poll_again(&self, waited: Waited, worker: WorkerState) -> bool {
        if worker.busy && !self.pipelined() {
            return worker.expects_more
                && waited.total < self.batch_wait
                && waited.quiet < self.batch_gap;
        }
        self.queued_batches >= 2 && waited.polls < MAX_POLLS && self.queued_batches > waited.before
    }

    fn may_write(&self) -> bool {
        self.written - self.replied < self.hold_at
            || self.replied > self.latest_from
            || self.pipelined()
    }

    /// Whether the batches queued average 2 commands or more: pipelining clients, whose
    /// commands are neither held nor wait for time.
    fn pipelined(&self) -> bool {
        self.queued >= 2 * self.queued_batches
    }

    /// Whether commands are held (the stream must not write them on its own either).
    pub(crate) fn holding(&self) -> bool {
        self.held
    }
}

#[cfg(test)]
mod tests {
    use super::{Pacing, Waited, WorkerState};
    use std::time::Duration;

    const WAIT: Duration = Duration::from_micros(200);
    const GAP: Duration = Duration::from_micros(60);
    const US: Duration = Duration::from_micros(1);

    fn pacing(hold_in_flight: usize) -> Pacing {
        Pacing::new(hold_in_flight, WAIT, GAP)
    }

    fn waited(polls: u32, before: u64, total: Duration, quiet: Duration) -> Waited {
        Waited {
            polls,
            before,
            total,
            quiet,
        }
    }

    const IDLE: WorkerState = WorkerState {
        busy: false,
        expects_more: true,
    };
    const BUSY: WorkerState = WorkerState {
        busy: true,
        expects_more: true,
    };

    #[test]
    fn below_the_threshold_nothing_waits() {
        let mut p = pacing(2);
        assert!(p.queue(1));
        assert!(p.write_now());
        assert!(p.queue(1));
        assert!(
            p.write_now(),
            "one command in flight does not hold the next"
        );
    }

    #[test]
    fn commands_wait_for_the_first_reply_to_the_latest_write() {
        let mut p = pacing(2);
        for _ in 0..3 {
            p.queue(1);
        }
        assert!(p.write_now());
        assert!(p.queue(1));
        assert!(!p.write_now(), "3 unanswered, none of the latest write");
        assert!(!p.queue(1), "joins the held command");
        assert!(p.holding());
        assert!(p.replied(1), "a reply to the latest write lets them go");
        assert!(p.write_now());
        assert!(!p.holding());
        // Unanswered: 2 of the first write, the 2 of the latest.
        p.queue(1);
        assert!(!p.write_now());
        assert!(!p.replied(2), "replies to an earlier write do not");
        assert!(p.holding());
        assert!(p.replied(1), "one of the latest write answered");
        assert!(p.write_now());
        p.queue(1);
        assert!(
            !p.write_now(),
            "2 unanswered (1 + 1), none of the latest write"
        );
        assert!(p.replied(1), "1 unanswered: below the threshold");
    }

    #[test]
    fn pipelined_batches_are_not_held() {
        let mut p = pacing(2);
        p.queue(1);
        p.queue(1);
        assert!(p.write_now());
        p.queue(16);
        assert!(
            p.write_now(),
            "a batch of a pipelining session brings enough to read"
        );
        p.queue(1);
        assert!(!p.write_now(), "single commands wait");
        assert!(
            p.queue(16),
            "a pipelined batch joining held commands is due at the end of the turn"
        );
        assert!(p.write_now());
    }

    #[test]
    fn zero_never_holds() {
        let mut p = pacing(0);
        for _ in 0..10 {
            assert!(p.queue(100));
            assert!(p.queue(1));
            assert!(!p.one_more_poll(true));
            assert!(p.write_now());
        }
    }

    #[test]
    fn a_turns_write_waits_for_polls_while_they_bring_more() {
        let mut p = pacing(2);
        p.queue(1);
        p.queue(1);
        assert!(p.one_more_poll(false));
        let before = p.batches();
        assert!(
            !p.poll_again(waited(1, before, US, US), IDLE),
            "the poll brought nothing: write"
        );
        p.queue(1);
        assert!(
            p.poll_again(waited(1, before, US, US), IDLE),
            "it brought a batch: one more"
        );
        let before = p.batches();
        p.queue(1);
        assert!(
            !p.poll_again(waited(super::MAX_POLLS, before, US, US), IDLE),
            "never more than MAX_POLLS"
        );
        assert!(p.write_now());
        assert_eq!(p.batches(), 0, "counted afresh after a write");
    }

    #[test]
    fn a_busy_turn_waits_for_one_more_poll() {
        let mut p = pacing(2);
        p.queue(1);
        assert!(
            !p.one_more_poll(false),
            "one session's command on a worker that is not busy goes at once"
        );
        p.queue(1);
        assert!(
            p.one_more_poll(false),
            "two sessions' commands: a busy turn"
        );
        assert!(p.write_now());
        p.queue(16);
        assert!(!p.one_more_poll(false), "counted afresh after a write");
    }

    #[test]
    fn single_commands_on_a_busy_worker_wait_while_more_may_come() {
        let mut p = pacing(2);
        p.queue(1);
        assert!(
            p.one_more_poll(true),
            "a busy worker: another session's command is due"
        );
        let before = p.batches();
        assert!(p.poll_again(waited(1, before, 5 * US, 5 * US), BUSY));
        p.queue(1);
        p.queue(1);
        assert!(
            p.poll_again(waited(30, before, 150 * US, US), BUSY),
            "polls that bring nothing do not end the wait"
        );
        assert!(
            !p.poll_again(waited(40, before, WAIT, US), BUSY),
            "no longer than batch_wait in all"
        );
        assert!(
            !p.poll_again(waited(40, before, 100 * US, GAP), BUSY),
            "nor once batch_gap has passed without a batch"
        );
        assert!(
            !p.poll_again(
                waited(2, before, 5 * US, US),
                WorkerState {
                    busy: true,
                    expects_more: false
                }
            ),
            "nor once every session answered lately has sent again: none is due"
        );
        assert!(
            !p.poll_again(waited(2, p.batches(), 5 * US, US), IDLE),
            "nor once the worker is no longer busy (and the last poll brought nothing)"
        );
        p.queue(32);
        assert!(
            !p.poll_again(waited(2, p.batches(), 5 * US, US), BUSY),
            "pipelined batches do not wait for time, only while polls bring more"
        );
        for (mut p, why) in [
            (
                Pacing::new(2, Duration::ZERO, GAP),
                "a zero batch_wait: no wait",
            ),
            (pacing(0), "hold_in_flight = 0: no wait"),
        ] {
            p.queue(1);
            assert!(!p.one_more_poll(true), "{why}");
        }
    }
}
