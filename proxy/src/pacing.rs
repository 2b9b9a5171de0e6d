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
    /// How long a lone batch on a busy worker waits for a second (`batch_wait_us`).
    batch_wait: Duration,
}

impl Pacing {
    /// `hold_in_flight` and `batch_wait` as configured: a `hold_in_flight` of 0 never holds
    /// nor waits.
    pub(crate) fn new(hold_in_flight: usize, batch_wait: Duration) -> Pacing {
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
    /// then), or one session's on a `busy` worker (whose reads come microseconds apart: a
    /// second batch is due soon; see [`Pacing::poll_again`]). A lone command of a worker
    /// that is not busy goes at once, and `hold_in_flight = 0` turns this off too.
    pub(crate) fn one_more_poll(&self, busy: bool) -> bool {
        self.hold_at != u64::MAX
            && (self.queued_batches >= 2 || (busy && !self.batch_wait.is_zero()))
    }

    /// Batches queued since the last write.
    pub(crate) fn batches(&self) -> u64 {
        self.queued_batches
    }

    /// After `polls` polls of `epoll` for a turn's write, `waited` since the first, the
    /// last of which began with `before` batches queued: whether to wait for one more. A
    /// lone batch waits while the worker is `busy`, for at most `batch_wait`, for a second
    /// one; 2 or more wait as long as each poll brings more (clients answered together send
    /// again one after another), up to [`MAX_POLLS`].
    pub(crate) fn poll_again(&self, polls: u32, before: u64, waited: Duration, busy: bool) -> bool {
        if self.queued_batches < 2 {
            return busy && waited < self.batch_wait;
        }
        polls < MAX_POLLS && self.queued_batches > before
    }

    fn may_write(&self) -> bool {
        self.written - self.replied < self.hold_at
            || self.replied > self.latest_from
            || self.queued >= 2 * self.queued_batches
    }

    /// Whether commands are held (the stream must not write them on its own either).
    pub(crate) fn holding(&self) -> bool {
        self.held
    }
}

#[cfg(test)]
mod tests {
    use super::Pacing;
    use std::time::Duration;

    const WAIT: Duration = Duration::from_micros(25);

    #[test]
    fn below_the_threshold_nothing_waits() {
        let mut p = Pacing::new(2, WAIT);
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
        let mut p = Pacing::new(2, WAIT);
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
        let mut p = Pacing::new(2, WAIT);
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
        let mut p = Pacing::new(0, WAIT);
        for _ in 0..10 {
            assert!(p.queue(100));
            assert!(p.queue(1));
            assert!(!p.one_more_poll(true));
            assert!(p.write_now());
        }
    }

    #[test]
    fn a_busy_turns_write_waits_for_polls_while_they_bring_more() {
        let mut p = Pacing::new(2, WAIT);
        p.queue(1);
        p.queue(1);
        assert!(p.one_more_poll(false));
        let before = p.batches();
        assert!(
            !p.poll_again(1, before, Duration::ZERO, true),
            "the poll brought nothing: write"
        );
        p.queue(1);
        assert!(
            p.poll_again(1, before, Duration::ZERO, false),
            "it brought a batch: one more"
        );
        let before = p.batches();
        p.queue(1);
        assert!(
            !p.poll_again(super::MAX_POLLS, before, Duration::ZERO, true),
            "never more than MAX_POLLS"
        );
        assert!(p.write_now());
        assert_eq!(p.batches(), 0, "counted afresh after a write");
    }

    #[test]
    fn a_busy_turn_waits_for_one_more_poll() {
        let mut p = Pacing::new(2, WAIT);
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
    fn a_lone_batch_on_a_busy_worker_waits_a_bounded_time_for_a_second() {
        let mut p = Pacing::new(2, WAIT);
        p.queue(1);
        assert!(
            p.one_more_poll(true),
            "a busy worker: a second batch is due"
        );
        let before = p.batches();
        assert!(p.poll_again(1, before, Duration::from_micros(5), true));
        assert!(
            !p.poll_again(40, before, WAIT, true),
            "no longer than the bound"
        );
        assert!(
            !p.poll_again(2, before, Duration::from_micros(5), false),
            "nor once the worker is no longer busy"
        );
        p.queue(1);
        assert!(
            !p.poll_again(2, p.batches(), Duration::from_micros(5), true),
            "a second batch came: from here on, polls go on only while they bring more"
        );
        for (mut p, why) in [
            (Pacing::new(2, Duration::ZERO), "a zero bound: no wait"),
            (Pacing::new(0, WAIT), "hold_in_flight = 0: no wait"),
        ] {
            p.queue(1);
            assert!(!p.one_more_poll(true), "{why}");
        }
    }
}
