//! How close together a worker's reads come ([`Activity`]), and the task that keeps a busy
//! worker polling `epoll` for a short while after each read instead of going to sleep.

use std::cell::Cell;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

/// A worker is busy while its reads come, on average, less than this far apart (tens of
/// thousands a second: many clients, not one waiting for each reply).
pub const BUSY_GAP: Duration = Duration::from_micros(15);

/// A gap longer than this counts as this long in the average, so that one pause does not
/// take long to forget.
const LONGEST_GAP: Duration = Duration::from_millis(1);

/// The reads of one worker's sockets, clients' and Redis's: their count and how far apart
/// they come. Shared by the worker's sessions and backend connections.
pub struct Activity {
    /// How long a busy worker keeps polling after its last read; zero: it sleeps at once.
    window: Duration,
    reads: Cell<u64>,
    last: Cell<Option<Instant>>,
    /// The gap before the latest read.
    gap: Cell<Duration>,
    /// The average gap, weighted 1/8 to the latest.
    mean_gap: Cell<Duration>,
    /// The polling task, while it sleeps.
    sleeper: Cell<Option<Waker>>,
    /// Sessions answered lately that have not sent again, counted by the period of
    /// [`EXPECTED_FOR`] they were answered in (even and odd periods), and the current period
    /// with when it began: see [`Activity::expects_more`].
    expected: [Cell<u32>; 2],
    period: Cell<u64>,
    period_began: Cell<Instant>,
}

/// How long a session answered is expected to send again: between one and two of these.
pub const EXPECTED_FOR: Duration = Duration::from_millis(1);

impl Activity {
    /// A worker's activity; a busy worker polls for `window` after its last read.
    pub fn new(window: Duration) -> Activity {
        Activity {
            window,
            reads: Cell::new(0),
            last: Cell::new(None),
            gap: Cell::new(LONGEST_GAP),
            mean_gap: Cell::new(LONGEST_GAP),
            sleeper: Cell::new(None),
            expected: Default::default(),
            period: Cell::new(0),
            period_began: Cell::new(Instant::now()),
        }
    }

    /// A session's client got every reply it waited for: it is expected to send again soon.
    /// Returns the token to give [`Activity::sent_again`].
    pub fn answered(&self) -> u64 {
        self.answered_at(Instant::now())
    }

    fn answered_at(&self, now: Instant) -> u64 {
        let period = self.advance(now);
        let n = &self.expected[(period % 2) as usize];
        n.set(n.get() + 1);
        period
    }

    /// The session answered with `token` sent again (or ended): no longer expected.
    pub fn sent_again(&self, token: u64) {
        self.sent_again_at(token, Instant::now());
    }

    fn sent_again_at(&self, token: u64, now: Instant) {
        let period = self.advance(now);
        if token + 1 >= period {
            let n = &self.expected[(token % 2) as usize];
            n.set(n.get().saturating_sub(1));
        }
    }

    /// Whether some session answered in the last [`EXPECTED_FOR`] (up to twice that) has
    /// not sent again: one whose client waits for each reply will send soon. Sessions idle
    /// for longer (a pool's spare connections) are not waited for.
    pub fn expects_more(&self, now: Instant) -> bool {
        self.advance(now);
        self.expected[0].get() + self.expected[1].get() > 0
    }

    /// Moves to the period `now` is in, forgetting the sessions answered two periods or more
    /// before it; returns the period.
    fn advance(&self, now: Instant) -> u64 {
        let periods = (now
            .saturating_duration_since(self.period_began.get())
            .as_micros()
            / EXPECTED_FOR.as_micros()) as u64;
        let period = self.period.get();
        if periods == 0 {
            return period;
        }
        if periods >= 2 {
            self.expected[0].set(0);
            self.expected[1].set(0);
        } else {
            self.expected[((period + 1) % 2) as usize].set(0);
        }
        self.period.set(period + periods);
        self.period_began.set(now);
        period + periods
    }

    /// A socket of the worker was read.
    pub fn read(&self) {
        self.read_at(Instant::now());
    }

    fn read_at(&self, now: Instant) {
        let gap = self
            .last
            .replace(Some(now))
            .map_or(LONGEST_GAP, |last| now.saturating_duration_since(last))
            .min(LONGEST_GAP);
        let mean = self.mean_gap.get();
        self.mean_gap.set(mean - mean / 8 + gap / 8);
        self.gap.set(gap);
        self.reads.set(self.reads.get() + 1);
        if self.polls_now()
            && let Some(sleeper) = self.sleeper.take()
        {
            sleeper.wake();
        }
    }

    /// Whether reads come on average less than [`BUSY_GAP`] apart.
    pub fn busy(&self) -> bool {
        self.mean_gap.get() < BUSY_GAP
    }

    /// Whether the latest read starts a spell of polling: the worker is busy and the read
    /// came within the window of the one before.
    fn polls_now(&self) -> bool {
        !self.window.is_zero() && self.busy() && self.gap.get() < self.window
    }

    /// Runs for the worker's life: after a read that [`Activity::polls_now`], keeps the
    /// runtime polling `epoll` without blocking (`yield_now` wakes it after each poll) until
    /// a whole window passes without a read, giving the core to any other thread that wants
    /// it at each round (`sched_yield`). A worker that sleeps between reads that come a few
    /// microseconds apart is woken for each, and the waking costs the client or the Redis
    /// that writes to it more than the polling costs the proxy (docs/benchmarks.md).
    /// `spelled` is told how long each spell lasted.
    pub async fn poll_while_busy(self: Rc<Self>, spelled: impl Fn(Duration)) {
        if self.window.is_zero() {
            return;
        }
        loop {
            let reads = self.reads.get();
            std::future::poll_fn(|cx| {
                if self.reads.get() != reads && self.polls_now() {
                    return Poll::Ready(());
                }
                self.sleeper.set(Some(cx.waker().clone()));
                Poll::Pending
            })
            .await;
            let mut reads = self.reads.get();
            let began = Instant::now();
            let mut last = began;
            loop {
                tokio::task::yield_now().await;
                std::thread::yield_now();
                let now = Instant::now();
                if self.reads.get() != reads {
                    reads = self.reads.get();
                    last = now;
                } else if now.saturating_duration_since(last) >= self.window {
                    spelled(now.saturating_duration_since(began));
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_micros(20);

    fn reads_apart(a: &Activity, start: Instant, gap: Duration, n: u32) -> Instant {
        let mut t = start;
        for _ in 0..n {
            t += gap;
            a.read_at(t);
        }
        t
    }

    #[test]
    fn reads_close_together_make_a_worker_busy_and_spaced_ones_do_not() {
        let a = Activity::new(WINDOW);
        let t = Instant::now();
        assert!(!a.busy(), "a new worker is not busy");
        let t = reads_apart(&a, t, Duration::from_micros(5), 40);
        assert!(a.busy(), "reads 5 µs apart");
        assert!(a.polls_now());
        let t = reads_apart(&a, t, Duration::from_micros(35), 40);
        assert!(
            !a.busy(),
            "reads 35 µs apart (one client and its Redis on this machine)"
        );
        assert!(!a.polls_now());
        reads_apart(&a, t, Duration::from_micros(5), 40);
        assert!(a.busy(), "busy again");
    }

    #[test]
    fn a_read_after_a_pause_does_not_start_polling() {
        let a = Activity::new(WINDOW);
        let t = reads_apart(&a, Instant::now(), Duration::from_micros(5), 40);
        assert!(a.polls_now());
        a.read_at(t + Duration::from_micros(30));
        assert!(a.busy(), "one pause leaves the average low");
        assert!(
            !a.polls_now(),
            "but a read a whole window after the one before does not start polling"
        );
    }

    #[test]
    fn a_zero_window_never_polls() {
        let a = Activity::new(Duration::ZERO);
        reads_apart(&a, Instant::now(), Duration::from_micros(1), 40);
        assert!(a.busy());
        assert!(!a.polls_now());
    }

    #[test]
    fn sessions_answered_lately_are_expected_until_they_send_again() {
        let a = Activity::new(WINDOW);
        let t = Instant::now() + EXPECTED_FOR;
        assert!(!a.expects_more(t), "nobody answered yet");
        let one = a.answered_at(t);
        let two = a.answered_at(t);
        assert!(a.expects_more(t));
        a.sent_again_at(one, t + Duration::from_micros(10));
        assert!(a.expects_more(t + Duration::from_micros(10)), "one left");
        a.sent_again_at(two, t + EXPECTED_FOR + Duration::from_micros(10));
        assert!(
            !a.expects_more(t + EXPECTED_FOR + Duration::from_micros(10)),
            "both sent again, in the next period"
        );
        a.answered_at(t + 2 * EXPECTED_FOR);
        assert!(a.expects_more(t + 3 * EXPECTED_FOR - Duration::from_micros(1)));
        assert!(
            !a.expects_more(t + 4 * EXPECTED_FOR + Duration::from_micros(1)),
            "a session idle for two periods is no longer waited for"
        );
        let late = a.answered_at(t + 5 * EXPECTED_FOR);
        a.sent_again_at(late, t + 9 * EXPECTED_FOR);
        let again = a.answered_at(t + 9 * EXPECTED_FOR);
        assert!(
            a.expects_more(t + 9 * EXPECTED_FOR),
            "a session forgotten does not cancel another's expectation"
        );
        a.sent_again_at(again, t + 9 * EXPECTED_FOR);
        assert!(!a.expects_more(t + 9 * EXPECTED_FOR));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_poller_sleeps_until_busy_reads_and_again_a_window_after_the_last() {
        let a = Rc::new(Activity::new(WINDOW));
        let spells = Rc::new(std::cell::RefCell::new(Vec::new()));
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let told = spells.clone();
                let poller = tokio::task::spawn_local(
                    a.clone()
                        .poll_while_busy(move |spell| told.borrow_mut().push(spell)),
                );
                tokio::task::yield_now().await;
                assert!(a.asleep(), "no reads yet");
                let start = Instant::now();
                for _ in 0..40 {
                    a.read();
                }
                tokio::task::yield_now().await;
                assert!(!a.asleep(), "busy reads woke it");
                while !a.asleep() {
                    assert!(
                        start.elapsed() < Duration::from_secs(5),
                        "it never went back to sleep"
                    );
                    tokio::task::yield_now().await;
                }
                assert!(start.elapsed() >= WINDOW, "it polled for a window");
                let spells = spells.borrow().clone();
                assert_eq!(spells.len(), 1, "one spell");
                assert!(
                    spells[0] >= WINDOW && spells[0] <= start.elapsed(),
                    "the spell lasted at least a window: {spells:?}"
                );
                poller.abort();
            })
            .await;
    }

    impl Activity {
        fn asleep(&self) -> bool {
            let sleeper = self.sleeper.take();
            let asleep = sleeper.is_some();
            self.sleeper.set(sleeper);
            asleep
        }
    }
}
