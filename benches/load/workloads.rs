//! The workloads: what redis-benchmark runs against each system, and the target Tessera
//! must reach on each.

/// What Tessera must reach on a workload.
#[derive(Clone, Copy)]
pub(crate) struct Target {
    /// Tessera's ops/s at least this fraction of direct Redis's.
    pub(crate) min_ratio: f64,
    /// Tessera's CPU per operation at most this many µs.
    pub(crate) max_cpu_us: Option<f64>,
}

pub(crate) struct Workload {
    pub(crate) name: &'static str,
    pub(crate) pipeline: u32,
    /// Requests of a run = base requests * num / den.
    pub(crate) share: (u64, u64),
    /// What follows the common options: `-t set`, or a command line with `__rand_int__`.
    pub(crate) args: Vec<String>,
    /// Fill `big:<n>` with 1 KiB values on every system first.
    pub(crate) needs_big_keys: bool,
    /// Fill `hash:<n>` with hashes of [`HASH_FIELDS`](super::HASH_FIELDS) fields on every system first.
    pub(crate) needs_hashes: bool,
    /// redis-benchmark's connections speak RESP3 (`-3`: `HELLO 3` first).
    pub(crate) resp3: bool,
    pub(crate) target: Target,
}

pub(crate) fn workloads() -> Vec<Workload> {
    let p1 = Target {
        min_ratio: 0.85,
        max_cpu_us: None,
    };
    let p16 = Target {
        min_ratio: 0.6,
        max_cpu_us: None,
    };
    let words = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
    let mset: Vec<String> = std::iter::once("MSET".to_string())
        .chain((0..10).flat_map(|_| ["key:__rand_int__".to_string(), "xxx".to_string()]))
        .collect();
    let mget: Vec<String> = std::iter::once("MGET".to_string())
        .chain((0..10).map(|_| "key:__rand_int__".to_string()))
        .collect();
    // The same keys and values the 1 KiB GETs read (`fill_big_keys`).
    let big_set = vec![
        "SET".to_string(),
        "big:__rand_int__".to_string(),
        "v".repeat(super::BIG_VALUE),
    ];
    vec![
        Workload {
            name: "SET -P1",
            pipeline: 1,
            share: (1, 5),
            args: words("-t set"),
            needs_big_keys: false,
            needs_hashes: false,
            resp3: false,
            target: p1,
        },
        Workload {
            name: "GET -P1",
            pipeline: 1,
            share: (1, 5),
            args: words("-t get"),
            needs_big_keys: false,
            needs_hashes: false,
            resp3: false,
            target: p1,
        },
        Workload {
            name: "SET 1 KiB -P1",
            pipeline: 1,
            share: (1, 10),
            args: big_set,
            needs_big_keys: false,
            needs_hashes: false,
            resp3: false,
            target: p1,
        },
        Workload {
            name: "GET 1 KiB -P1",
            pipeline: 1,
            share: (1, 10),
            args: words("GET big:__rand_int__"),
            needs_big_keys: true,
            needs_hashes: false,
            resp3: false,
            target: p1,
        },
        Workload {
            name: "MGET 10 keys -P1",
            pipeline: 1,
            share: (1, 10),
            args: mget.clone(),
            needs_big_keys: false,
            needs_hashes: false,
            resp3: false,
            target: p1,
        },
        Workload {
            name: "SET -P16",
            pipeline: 16,
            share: (1, 1),
            args: words("-t set"),
            needs_big_keys: false,
            needs_hashes: false,
            resp3: false,
            target: p16,
        },
        Workload {
            name: "GET -P16",
            pipeline: 16,
            share: (1, 1),
            args: words("-t get"),
            needs_big_keys: false,
            needs_hashes: false,
            resp3: false,
            target: Target {
                min_ratio: 0.6,
                max_cpu_us: Some(1.3),
            },
        },
        Workload {
            name: "MSET 10 keys -P16",
            pipeline: 16,
            share: (1, 4),
            args: mset,
            needs_big_keys: false,
            needs_hashes: false,
            resp3: false,
            target: p16,
        },
        Workload {
            name: "MGET 10 keys -P16",
            pipeline: 16,
            share: (1, 4),
            args: mget,
            needs_big_keys: false,
            needs_hashes: false,
            resp3: false,
            target: p16,
        },
        Workload {
            name: "GET 1 KiB -P16",
            pipeline: 16,
            share: (1, 2),
            args: words("GET big:__rand_int__"),
            needs_big_keys: true,
            needs_hashes: false,
            resp3: false,
            target: p16,
        },
        Workload {
            name: "GET -P16 RESP3",
            pipeline: 16,
            share: (1, 1),
            args: words("-t get"),
            needs_big_keys: false,
            needs_hashes: false,
            resp3: true,
            target: p16,
        },
        Workload {
            name: "HGETALL -P16",
            pipeline: 16,
            share: (1, 2),
            args: words("HGETALL hash:__rand_int__"),
            needs_big_keys: false,
            needs_hashes: true,
            resp3: false,
            target: p16,
        },
        Workload {
            name: "HGETALL -P16 RESP3",
            pipeline: 16,
            share: (1, 2),
            args: words("HGETALL hash:__rand_int__"),
            needs_big_keys: false,
            needs_hashes: true,
            resp3: true,
            target: p16,
        },
    ]
}

/// The workloads on which Tessera's ratio to direct Redis must be at least twemproxy's, and
/// behind which Redis must spend no more CPU per command than behind twemproxy.
pub(crate) const AHEAD_OF_TWEMPROXY: &[&str] = &[
    "SET -P1",
    "GET -P1",
    "SET 1 KiB -P1",
    "GET 1 KiB -P1",
    "MGET 10 keys -P1",
    "SET -P16",
    "GET -P16",
    "MSET 10 keys -P16",
    "MGET 10 keys -P16",
    "GET 1 KiB -P16",
];

/// Memory targets of each Tessera: KiB of RSS per idle client connection, RSS with
/// [`TARGET_CONNECTIONS`] idle connections, RSS after the load runs over RSS with them.
pub(crate) const MAX_KIB_PER_CONNECTION: f64 = 3.0;
pub(crate) const TARGET_CONNECTIONS: usize = 10_000;
pub(crate) const MAX_IDLE_KIB: u64 = 40 * 1024;
pub(crate) const MAX_AFTER_LOAD_RATIO: f64 = 2.0;

/// The pairs of workloads whose RESP3 / RESP2 throughput ratio is reported, and the target.
pub(crate) const RESP3_PAIRS: &[(&str, &str)] = &[
    ("GET -P16", "GET -P16 RESP3"),
    ("HGETALL -P16", "HGETALL -P16 RESP3"),
];
pub(crate) const RESP3_MIN_RATIO: f64 = 0.95;
