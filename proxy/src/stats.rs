//! Counters and latency histograms. Each worker thread writes only its own block (plain
//! relaxed loads and stores, no locked instructions); readers add the blocks up.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::command;

/// Upper bounds of the latency histogram buckets, in microseconds (the last is +Inf).
pub const BUCKETS_US: [u64; 16] = [
    10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000,
    500_000, 1_000_000,
];

/// A counter with one writer: increments are a load and a store, which is all a single
/// writer needs, and readers on other threads see a recent value.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

#[derive(Debug, Default)]
struct CommandCounters {
    calls: Counter,
    usecs: Counter,
    errors: Counter,
}

/// The statistics one worker thread writes.
#[derive(Debug)]
pub struct WorkerStats {
    commands: Box<[CommandCounters]>,
    ops: Counter,
    errors: Counter,
    buckets: [Counter; BUCKETS_US.len() + 1],
    usecs_total: Counter,
    /// Spells of polling `epoll` on a busy worker, and the time they took ([`crate::busy_poll`]).
    poll_spells: Counter,
    poll_usecs: Counter,
}

impl Default for WorkerStats {
    fn default() -> Self {
        WorkerStats {
            commands: (0..command::count())
                .map(|_| CommandCounters::default())
                .collect(),
            ops: Counter::default(),
            errors: Counter::default(),
            buckets: Default::default(),
            usecs_total: Counter::default(),
            poll_spells: Counter::default(),
            poll_usecs: Counter::default(),
        }
    }
}

impl WorkerStats {
    /// Records one finished command: its table id (if it was known), time and outcome.
    #[inline]
    pub fn record(&self, cmd: Option<u16>, elapsed: Duration, error: bool) {
        let us = elapsed.as_micros() as u64;
        self.ops.add(1);
        self.usecs_total.add(us);
        let bucket = BUCKETS_US
            .iter()
            .position(|&b| us <= b)
            .unwrap_or(BUCKETS_US.len());
        self.buckets[bucket].add(1);
        if error {
            self.errors.add(1);
        }
        if let Some(id) = cmd {
            let c = &self.commands[id as usize];
            c.calls.add(1);
            c.usecs.add(us);
            if error {
                c.errors.add(1);
            }
        }
    }

    /// Records one spell of polling on a busy worker that lasted `spell`.
    pub fn polled(&self, spell: Duration) {
        self.poll_spells.add(1);
        self.poll_usecs.add(spell.as_micros() as u64);
    }
}

/// All statistics of one proxy process.
#[derive(Debug)]
pub struct Stats {
    pub started: Instant,
    workers: Vec<WorkerStats>,
    pub sessions_total: AtomicU64,
    pub sessions_alive: AtomicI64,
    pub clients_refused: AtomicU64,
}

impl Stats {
    pub fn new(workers: usize) -> Stats {
        Stats {
            started: Instant::now(),
            workers: (0..workers).map(|_| WorkerStats::default()).collect(),
            sessions_total: AtomicU64::new(0),
            sessions_alive: AtomicI64::new(0),
            clients_refused: AtomicU64::new(0),
        }
    }

    pub fn worker(&self, i: usize) -> &WorkerStats {
        &self.workers[i]
    }

    /// Commands answered so far, over all workers.
    pub fn ops_total(&self) -> u64 {
        self.workers.iter().map(|w| w.ops.get()).sum()
    }

    /// Commands answered with an error so far, over all workers.
    pub fn errors_total(&self) -> u64 {
        self.workers.iter().map(|w| w.errors.get()).sum()
    }

    /// A consistent-enough sum over all workers, for the admin API.
    pub fn snapshot(&self) -> Snapshot {
        let sum = |f: &dyn Fn(&WorkerStats) -> u64| self.workers.iter().map(f).sum::<u64>();
        let commands = command::all()
            .filter_map(|spec| {
                let id = spec.id as usize;
                let calls = sum(&|w| w.commands[id].calls.get());
                (calls > 0).then(|| {
                    let usecs = sum(&|w| w.commands[id].usecs.get());
                    CommandSnapshot {
                        name: spec.name.to_string(),
                        calls,
                        usecs,
                        usecs_per_call: usecs as f64 / calls as f64,
                        errors: sum(&|w| w.commands[id].errors.get()),
                    }
                })
            })
            .collect();
        Snapshot {
            uptime_secs: self.started.elapsed().as_secs(),
            ops: OpsSnapshot {
                total: sum(&|w| w.ops.get()),
                errors: sum(&|w| w.errors.get()),
            },
            sessions: SessionsSnapshot {
                total: self.sessions_total.load(Relaxed),
                alive: self.sessions_alive.load(Relaxed),
                refused: self.clients_refused.load(Relaxed),
            },
            commands,
            latency_buckets: (0..=BUCKETS_US.len())
                .map(|i| sum(&|w| w.buckets[i].get()))
                .collect(),
            latency_usecs_total: sum(&|w| w.usecs_total.get()),
            busy_poll: BusyPollSnapshot {
                spells: sum(&|w| w.poll_spells.get()),
                usecs: sum(&|w| w.poll_usecs.get()),
            },
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Snapshot {
    pub uptime_secs: u64,
    pub ops: OpsSnapshot,
    pub sessions: SessionsSnapshot,
    pub commands: Vec<CommandSnapshot>,
    /// Non-cumulative counts per bucket of [`BUCKETS_US`], the last one +Inf.
    #[serde(skip)]
    pub latency_buckets: Vec<u64>,
    #[serde(skip)]
    pub latency_usecs_total: u64,
    pub busy_poll: BusyPollSnapshot,
}

/// How often and how long busy workers polled `epoll` instead of sleeping.
#[derive(Debug, Serialize)]
pub struct BusyPollSnapshot {
    pub spells: u64,
    pub usecs: u64,
}

#[derive(Debug, Serialize)]
pub struct OpsSnapshot {
    pub total: u64,
    pub errors: u64,
}

#[derive(Debug, Serialize)]
pub struct SessionsSnapshot {
    pub total: u64,
    pub alive: i64,
    pub refused: u64,
}

#[derive(Debug, Serialize)]
pub struct CommandSnapshot {
    pub name: String,
    pub calls: u64,
    pub usecs: u64,
    pub usecs_per_call: f64,
    pub errors: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_add_up_across_workers() {
        let stats = Stats::new(2);
        let get = command::all().find(|s| s.name == "get").unwrap().id;
        stats
            .worker(0)
            .record(Some(get), Duration::from_micros(5), false);
        stats
            .worker(1)
            .record(Some(get), Duration::from_micros(300), true);
        stats.worker(1).record(None, Duration::from_secs(3), true);
        let s = stats.snapshot();
        assert_eq!(s.ops.total, 3);
        assert_eq!(s.ops.errors, 2);
        let g = s.commands.iter().find(|c| c.name == "get").unwrap();
        assert_eq!((g.calls, g.usecs, g.errors), (2, 305, 1));
        assert_eq!(s.latency_buckets[0], 1);
        assert_eq!(s.latency_buckets[5], 1);
        assert_eq!(s.latency_buckets[BUCKETS_US.len()], 1);
        stats.worker(0).polled(Duration::from_micros(40));
        stats.worker(1).polled(Duration::from_micros(2));
        let p = stats.snapshot().busy_poll;
        assert_eq!((p.spells, p.usecs), (2, 42));
    }
}
