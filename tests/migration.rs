//! Online slot migration, the dashboard's side, with real redis-servers, the embedded store
//! and the `tessera` binary: the migrator moves every key of the migrating slots (dbs 0 and
//! 3, a backend password) and no other; a proxy that does not acknowledge (stopped) holds the
//! migration before any key moves and is named by `tessera admin migrations`; a proxy that
//! follows moves a key before it serves it, and answers TRYAGAIN when it cannot; cancelling and
//! restarting the dashboard mid-migration leave no key behind; `slots assign` of an owned
//! slot is refused; `rebalance --dry-run` prints the plan; a group gets the function
//! libraries before its first slots.

use tessera_testkit as harness;

use std::time::Duration;

use harness::{Proxy, RedisServer, TempDir, free_addr, wait_until};

const TOKEN: &str = "migration-test-token";
/// How long a migration of a few thousand keys may take on a crowded machine.
const MIGRATION_BOUND: Duration = Duration::from_secs(60);

/// A `tessera dashboard` process on the embedded store in `store` (the test kit's, with
/// this file's token and a 2 s lock TTL).
struct Dashboard(harness::Dashboard);

impl Dashboard {
    fn start(store: &str, product: &str) -> Dashboard {
        Dashboard::try_start(store, product)
            .unwrap_or_else(|log| panic!("dashboard did not start:\n{log}"))
    }

    /// Starts a dashboard; `Err(log)` if it exits or does not serve within the bound.
    fn try_start(store: &str, product: &str) -> Result<Dashboard, String> {
        harness::Dashboard::start(store, product, free_addr(), TOKEN, 2)
            .map(Dashboard)
            .map_err(|e| e.log)
    }

    /// `tessera admin ARGS`, bounded: (success, stdout, stderr).
    fn admin(&self, args: &[&str]) -> (bool, String, String) {
        self.0.admin(args, MIGRATION_BOUND)
    }

    fn admin_ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.admin(args);
        assert!(ok, "tessera admin {args:?} failed:\n{out}{err}");
        out
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.admin_ok(&all);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
    }

    /// Two groups (one server each), every slot on group 1.
    fn two_groups(&self, r1: &RedisServer, r2: &RedisServer) {
        self.admin_ok(&["group", "add", "1"]);
        self.admin_ok(&["group", "add-server", "1", &r1.addr()]);
        self.admin_ok(&["group", "add", "2"]);
        self.admin_ok(&["group", "add-server", "2", &r2.addr()]);
        self.admin_ok(&["slots", "assign", "0-1023", "1"]);
    }

    /// The group owning `slot` (`None`: not owned).
    fn owner(&self, slot: usize) -> Option<u64> {
        let v = self.json(&["slots", "--full"]);
        let s = &v["slots"][slot];
        (s["state"] == "owned").then(|| s["group"].as_u64().unwrap())
    }

    fn migrations_empty(&self) -> bool {
        self.json(&["migrations"])["steps"]
            .as_array()
            .is_some_and(|s| s.is_empty())
    }
}

fn store_url(dir: &TempDir) -> String {
    format!("file://{}", dir.path().display())
}

/// A connection to `db` of `r`, with `password` ("" = none).
fn conn(r: &RedisServer, db: u32, password: &str) -> redis::Connection {
    let auth = if password.is_empty() {
        String::new()
    } else {
        format!(":{password}@")
    };
    redis::Client::open(format!("redis://{auth}{}/{db}", r.addr()))
        .unwrap()
        .get_connection_with_timeout(Duration::from_secs(5))
        .unwrap()
}

/// Fills `db` of `r` with `n` string keys `{prefix}:0..n` (value `value:i`).
fn populate(r: &RedisServer, db: u32, password: &str, n: usize, prefix: &str) {
    let _: () = redis::cmd("DEBUG")
        .arg("POPULATE")
        .arg(n)
        .arg(prefix)
        .query(&mut conn(r, db, password))
        .unwrap();
}

/// For each of `keys`, its value on `r` (`None`: absent), in one pipeline.
fn values(r: &RedisServer, db: u32, password: &str, keys: &[String]) -> Vec<Option<String>> {
    let mut pipe = redis::pipe();
    for k in keys {
        pipe.cmd("GET").arg(k);
    }
    pipe.query(&mut conn(r, db, password)).unwrap()
}

fn key_names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}:{i}")).collect()
}

#[test]
fn the_migrator_moves_every_key_of_the_migrating_slots_and_no_other() {
    let pw = "backend-secret";
    let r1 = RedisServer::start_with_args(&["--requirepass", pw]);
    let r2 = RedisServer::start_with_args(&["--requirepass", pw]);
    let store = TempDir::new("store");
    let d = Dashboard::start(&store_url(&store), "mv");
    d.admin_ok(&["product", "set", "--backend-password", pw]);
    d.two_groups(&r1, &r2);
    let n = 4000;
    populate(&r1, 0, pw, n, "a");
    populate(&r1, 3, pw, n, "b");
    // A key of another type, in a migrating slot.
    let list = harness::find_key("list", |k| harness::slot(k) < 100);
    let _: () = redis::cmd("RPUSH")
        .arg(&list)
        .arg(&["x", "y", "z"])
        .query(&mut conn(&r1, 3, pw))
        .unwrap();

    let out = d.admin_ok(&[
        "slots",
        "migrate",
        "0-99",
        "--to",
        "2",
        "--wait",
        "--step-slots",
        "40",
        "--concurrency",
        "2",
        "--batch-keys",
        "50",
    ]);
    assert!(
        out.contains("slots 0-99 moved to group 2 (3 steps)"),
        "{out}"
    );

    for slot in [0, 57, 99] {
        assert_eq!(d.owner(slot), Some(2), "slot {slot}");
    }
    assert_eq!(d.owner(100), Some(1));
    assert!(d.migrations_empty());
    for (db, prefix) in [(0, "a"), (3, "b")] {
        let names = key_names(prefix, n);
        let (on1, on2) = (values(&r1, db, pw, &names), values(&r2, db, pw, &names));
        let mut moved = 0;
        for (i, k) in names.iter().enumerate() {
            let want = Some(format!("value:{i}"));
            if harness::slot(k.as_bytes()) < 100 {
                moved += 1;
                assert_eq!(
                    (&on1[i], &on2[i]),
                    (&None, &want),
                    "db {db} key {k} (moved)"
                );
            } else {
                assert_eq!(
                    (&on1[i], &on2[i]),
                    (&want, &None),
                    "db {db} key {k} (stays)"
                );
            }
        }
        assert!(moved > 300, "db {db}: only {moved} keys in slots 0-99");
    }
    let moved_list: Vec<String> = redis::cmd("LRANGE")
        .arg(&list)
        .arg(0)
        .arg(-1)
        .query(&mut conn(&r2, 3, pw))
        .unwrap();
    assert_eq!(moved_list, ["x", "y", "z"]);
}

#[test]
fn a_stopped_proxy_holds_the_migration_before_any_key_moves() {
    let (r1, r2) = (RedisServer::start(), RedisServer::start());
    // etcd, not the embedded store: a process stopped while it holds the embedded store's
    // file lock would stop the dashboard too.
    let etcd = harness::etcd::Etcd::start();
    let url = etcd.url();
    let d = Dashboard::start(&url, "held");
    d.two_groups(&r1, &r2);
    populate(&r1, 0, "", 2000, "k");
    let proxy = Proxy::start_coordinator(&url, "held", 10)
        .unwrap_or_else(|e| panic!("proxy did not start: {e}"));
    let in_slot_3 = harness::find_key("k:", |k| harness::slot(k) == 3);
    let mut c = proxy.raw();
    assert_eq!(c.cmd(&["SET", &in_slot_3, "before"]), harness::Resp::ok());

    // A proxy that does not acknowledge the migrating revision (stopped here) holds it.
    let paused = harness::Paused::new(proxy.pid());
    d.admin_ok(&[
        "slots",
        "migrate",
        "0-9",
        "--to",
        "2",
        "--barrier-timeout-ms",
        "200",
    ]);
    let mut table = String::new();
    let held = wait_until(Duration::from_secs(10), || {
        table = d.admin_ok(&["migrations"]);
        table.contains("held")
    });
    assert!(held, "the migration is not held:\n{table}");
    let proxy_addr = proxy.addr.to_string();
    assert!(
        table.contains(&proxy_addr),
        "the holding proxy is not named:\n{table}"
    );
    let dbsize: i64 = redis::cmd("DBSIZE").query(&mut r2.conn()).unwrap();
    assert_eq!(
        dbsize, 0,
        "a key moved before every proxy applied the revision"
    );
    let step = &d.json(&["migrations"])["steps"][0];
    assert_eq!(step["keys_moved"], 0, "{step}");

    // No proxy routes by the migrating revision: cancelling rolls the slots back to group 1.
    let out = d.admin_ok(&["migrations", "cancel"]);
    assert!(
        out.contains("steps 1 in flight finish or roll back"),
        "{out}"
    );
    assert!(
        wait_until(Duration::from_secs(10), || d.migrations_empty()),
        "the step did not end"
    );
    assert_eq!(d.owner(3), Some(1));
    paused.resume();
    let served = wait_until(Duration::from_secs(10), || {
        c.cmd(&["GET", &in_slot_3]) == harness::Resp::bulk("before")
    });
    assert!(
        served,
        "the proxy does not serve slot 3 again: {:?}",
        c.cmd(&["GET", &in_slot_3])
    );
    let dbsize: i64 = redis::cmd("DBSIZE").query(&mut r2.conn()).unwrap();
    assert_eq!(dbsize, 0);
}

#[test]
fn a_following_proxy_acknowledges_and_moves_each_key_before_it_serves_it() {
    let (r1, r2) = (RedisServer::start(), RedisServer::start());
    let store = TempDir::new("store");
    let url = store_url(&store);
    let d = Dashboard::start(&url, "follow");
    d.two_groups(&r1, &r2);
    let proxy = Proxy::start_coordinator(&url, "follow", 10)
        .unwrap_or_else(|e| panic!("proxy did not start: {e}"));
    let key = harness::find_key("k:", |k| harness::slot(k) == 3);
    let mut c = proxy.raw();
    assert_eq!(c.cmd(&["RPUSH", &key, "1"]), harness::Resp::Int(1));
    // Block r2 from taking keys: the migrator's and the proxy's MIGRATEs fail.
    let paused = r2.pause();
    d.admin_ok(&["slots", "migrate", "3", "--to", "2"]);
    let moving = wait_until(Duration::from_secs(10), || {
        d.admin_ok(&["migrations"]).contains("moving")
    });
    assert!(
        moving,
        "the proxy did not acknowledge the migrating revision"
    );
    // The destination is down: the command fails with TRYAGAIN and is not run.
    let reply = c.cmd(&["RPUSH", &key, "2"]);
    assert!(
        reply
            .error_text()
            .starts_with("TRYAGAIN slot 3 is migrating"),
        "{reply:?}"
    );
    paused.resume();
    // TRYAGAIN says the command may be sent again: the connection that carries MIGRATEs may
    // still wait out its backoff after the timeout.
    let mut reply = c.cmd(&["RPUSH", &key, "3"]);
    for _ in 0..50 {
        if !reply.error_text().starts_with("TRYAGAIN") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        reply = c.cmd(&["RPUSH", &key, "3"]);
    }
    assert_eq!(reply, harness::Resp::Int(2));
    assert!(
        wait_until(MIGRATION_BOUND, || d.migrations_empty()),
        "the migration did not end"
    );
    let list: Vec<String> = redis::cmd("LRANGE")
        .arg(&key)
        .arg(0)
        .arg(-1)
        .query(&mut r2.conn())
        .unwrap();
    assert_eq!(list, ["1", "3"]);
    let on_r1: i64 = redis::cmd("EXISTS")
        .arg(&key)
        .query(&mut r1.conn())
        .unwrap();
    assert_eq!(on_r1, 0);
}

#[test]
fn cancel_and_a_restarted_dashboard_leave_no_key_behind() {
    let (r1, r2) = (RedisServer::start(), RedisServer::start());
    let store = TempDir::new("store");
    let url = store_url(&store);
    let d = Dashboard::start(&url, "resume");
    d.two_groups(&r1, &r2);
    let n = 20_000;
    populate(&r1, 0, "", n, "k");
    // Slow on purpose: 10 keys per MIGRATE, 100 ms between them; one step at a time.
    d.admin_ok(&[
        "slots",
        "migrate",
        "0-63",
        "--to",
        "2",
        "--step-slots",
        "16",
        "--batch-keys",
        "10",
        "--pipeline",
        "1",
        "--pause-ms",
        "100",
    ]);
    let mid_step = wait_until(Duration::from_secs(20), || {
        let v = d.json(&["migrations"]);
        let first = &v["steps"][0];
        first["state"] == "moving" && first["keys_moved"].as_u64().unwrap_or(0) > 0
    });
    assert!(mid_step, "{}", d.admin_ok(&["migrations"]));
    drop(d);

    // The killed dashboard's lock expires within its TTL (2 s); until then a new one exits.
    let (mut restarted, mut last) = (None, String::new());
    wait_until(Duration::from_secs(15), || {
        match Dashboard::try_start(&url, "resume") {
            Ok(d) => restarted = Some(d),
            Err(log) => last = log,
        }
        restarted.is_some()
    });
    let d = restarted.unwrap_or_else(|| panic!("no dashboard took over:\n{last}"));
    // The step in flight (0-15) is finished, the queued ones dropped.
    let out = d.admin_ok(&["migrations", "cancel"]);
    assert!(
        out.contains("steps 1 in flight finish or roll back"),
        "{out}"
    );
    assert!(
        ["queued slots 16-63 dropped", "queued slots 32-63 dropped"]
            .iter()
            .any(|d| out.contains(d)),
        "{out}"
    );
    assert!(
        wait_until(MIGRATION_BOUND, || d.migrations_empty()),
        "{}",
        d.admin_ok(&["migrations"])
    );
    for slot in [0, 15] {
        assert_eq!(d.owner(slot), Some(2), "slot {slot}");
    }
    for slot in [32, 63, 64] {
        assert_eq!(d.owner(slot), Some(1), "slot {slot}");
    }
    // Every slot is owned by one group, which holds every one of its keys.
    let table = d.json(&["slots", "--full"]);
    let names = key_names("k", n);
    let (on1, on2) = (values(&r1, 0, "", &names), values(&r2, 0, "", &names));
    for (i, k) in names.iter().enumerate() {
        let slot = harness::slot(k.as_bytes());
        let want = Some(format!("value:{i}"));
        let owner = &table["slots"][slot];
        assert_eq!(owner["state"], "owned", "slot {slot}");
        let (owner_copy, other_copy) = if owner["group"] == 2 {
            (&on2[i], &on1[i])
        } else {
            (&on1[i], &on2[i])
        };
        assert_eq!(
            (owner_copy, other_copy),
            (&want, &None),
            "key {k} of slot {slot}, owned by group {}",
            owner["group"]
        );
    }
}

#[test]
fn slots_assign_refuses_a_slot_owned_by_another_group() {
    let (r1, r2) = (RedisServer::start(), RedisServer::start());
    let store = TempDir::new("store");
    let d = Dashboard::start(&store_url(&store), "assign");
    d.two_groups(&r1, &r2);
    let (ok, out, err) = d.admin(&["slots", "assign", "5-9", "2"]);
    assert!(!ok, "{out}");
    assert!(
        err.contains("slot 5 is owned by group 1: move it with its keys with `tessera admin slots migrate 5 --to 2`"),
        "{err}"
    );
    assert_eq!(d.owner(5), Some(1));
    let out = d.admin_ok(&["slots", "assign", "5-9", "2", "--force"]);
    assert!(out.contains("5 slots changed"), "{out}");
    assert_eq!(d.owner(5), Some(2));
}

#[test]
fn rebalance_prints_the_plan_and_dry_run_only_prints_it() {
    let (r1, r2, r3) = (
        RedisServer::start(),
        RedisServer::start(),
        RedisServer::start(),
    );
    let store = TempDir::new("store");
    let d = Dashboard::start(&store_url(&store), "rebalance");
    d.two_groups(&r1, &r2);
    d.admin_ok(&["group", "add", "3"]);
    d.admin_ok(&["group", "add-server", "3", &r3.addr()]);
    let plan = "SLOTS     FROM  TO  COUNT\n342-682   1     2   341\n683-1023  1     3   341\n";
    let out = d.admin_ok(&["rebalance", "--dry-run"]);
    assert_eq!(
        out,
        format!("plan (2 moves):\n{plan}dry run: nothing queued\n")
    );
    assert!(d.migrations_empty());
    assert_eq!(d.owner(1023), Some(1));

    let out = d.admin_ok(&["rebalance", "--step-slots", "1024", "--concurrency", "2"]);
    assert!(
        out.starts_with(&format!("plan (2 moves):\n{plan}queued in 2 steps")),
        "{out}"
    );
    assert!(
        wait_until(MIGRATION_BOUND, || d.migrations_empty()),
        "{}",
        d.admin_ok(&["migrations"])
    );
    let groups = d.json(&["group", "list"]);
    let counts: Vec<u64> = groups["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["slots"].as_u64().unwrap())
        .collect();
    assert_eq!(counts, [342, 341, 341]);
    let out = d.admin_ok(&["rebalance", "--dry-run"]);
    assert_eq!(out, "balanced already: nothing to move\n");
}

#[test]
fn migrate_refuses_what_it_cannot_move_and_shows_redis_errors() {
    let r1 = RedisServer::start();
    let store = TempDir::new("store");
    let d = Dashboard::start(&store_url(&store), "refuse");
    // Group 2's server does not answer: moving keys to it fails.
    let dead = free_addr().to_string();
    d.admin_ok(&["group", "add", "1"]);
    d.admin_ok(&["group", "add-server", "1", &r1.addr()]);
    d.admin_ok(&["group", "add", "2"]);
    d.admin_ok(&["group", "add-server", "2", &dead]);
    d.admin_ok(&["slots", "assign", "0-511", "1"]);
    populate(&r1, 0, "", 1000, "k");
    let refused = |args: &[&str], message: &str| {
        let (ok, out, err) = d.admin(args);
        assert!(!ok && err.contains(message), "{args:?}: {out}{err}");
    };
    refused(
        &["slots", "migrate", "600", "--to", "2"],
        "slot 600 is offline: it has no keys to move",
    );
    refused(
        &["slots", "migrate", "0", "--to", "7"],
        "group 7 does not exist",
    );
    refused(
        &["slots", "migrate", "0", "--to", "2", "--batch-keys", "0"],
        "batch_keys must be 1..=10000",
    );
    d.admin_ok(&[
        "slots",
        "migrate",
        "0-511",
        "--to",
        "2",
        "--step-slots",
        "512",
    ]);
    refused(
        &["slots", "migrate", "5", "--to", "2"],
        "slot 5 is queued or migrating already",
    );
    refused(&["group", "remove", "2"], "group 2 still owns slots 0-511");
    refused(&["rebalance"], "migrations are queued or running");
    let mut table = String::new();
    let shown = wait_until(Duration::from_secs(20), || {
        table = d.admin_ok(&["migrations"]);
        table.contains(&format!("MIGRATE to {dead}"))
    });
    assert!(shown, "the Redis error is not shown:\n{table}");
    let dbsize: i64 = redis::cmd("DBSIZE").query(&mut r1.conn()).unwrap();
    assert_eq!(dbsize, 1000, "a key left group 1 although group 2 is down");
}

/// What one client thread saw of its writes: acknowledged, and unknown (no reply: the
/// connection broke), per key.
#[derive(Default)]
struct Seen {
    /// INCRs per counter.
    incr: std::collections::HashMap<String, (i64, i64)>,
    /// Pushed sequence numbers per list: acknowledged, unknown.
    pushed: std::collections::HashMap<String, (Vec<i64>, Vec<i64>)>,
    /// Per versioned key: the last acknowledged version and the unknown ones.
    versions: std::collections::HashMap<String, (i64, Vec<i64>)>,
    /// What a read right after an acknowledged write did not show.
    violations: Vec<String>,
}

/// How a reply failed: `TRYAGAIN` (not run) or anything else (may have run).
fn not_run(e: &redis::RedisError) -> bool {
    e.code() == Some("TRYAGAIN")
}

/// One client thread: INCR of shared counters, RPUSH of its own sequence numbers, SET then
/// GET of its own versioned keys, hash-tagged MSET then MGET, through the proxy `proxies`
/// names (it follows a restarted proxy), until `stop`.
fn churn_client(
    me: usize,
    proxy: usize,
    proxies: std::sync::Arc<std::sync::Mutex<Vec<std::net::SocketAddr>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Seen {
    use std::sync::atomic::Ordering::Relaxed;
    let mut seen = Seen::default();
    let mut conn: Option<redis::Connection> = None;
    let mut seq = 0i64;
    let started = std::time::Instant::now();
    while !stop.load(Relaxed) && started.elapsed() < MIGRATION_BOUND {
        let Some(c) = conn.as_mut() else {
            let addr = proxies.lock().unwrap()[proxy];
            conn = redis::Client::open(format!("redis://{addr}"))
                .unwrap()
                .get_connection_with_timeout(Duration::from_secs(2))
                .ok();
            if let Some(c) = &conn {
                c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            } else {
                std::thread::sleep(Duration::from_millis(50));
            }
            continue;
        };
        seq += 1;
        let i = seq % 4;
        let counter = format!("c:{}", seq % 8);
        let list = format!("l:{me}:{i}");
        let version = format!("v:{me}:{i}");
        let (ta, tb) = (format!("{{m:{me}:{i}}}a"), format!("{{m:{me}:{i}}}b"));
        let mut broke = false;
        let incr: redis::RedisResult<i64> = redis::cmd("INCR").arg(&counter).query(c);
        let e = seen.incr.entry(counter).or_default();
        match incr {
            Ok(_) => e.0 += 1,
            Err(err) if not_run(&err) => {}
            Err(_) => {
                e.1 += 1;
                broke = true;
            }
        }
        let push: redis::RedisResult<i64> = redis::cmd("RPUSH").arg(&list).arg(seq).query(c);
        let e = seen.pushed.entry(list).or_default();
        match push {
            Ok(_) => e.0.push(seq),
            Err(err) if not_run(&err) => {}
            Err(_) => {
                e.1.push(seq);
                broke = true;
            }
        }
        let set: redis::RedisResult<()> = redis::cmd("SET").arg(&version).arg(seq).query(c);
        let e = seen.versions.entry(version.clone()).or_default();
        match set {
            Ok(()) => {
                e.0 = seq;
                let got: redis::RedisResult<Option<i64>> = redis::cmd("GET").arg(&version).query(c);
                match got {
                    Ok(v) if v != Some(seq) => seen
                        .violations
                        .push(format!("GET {version} after SET {seq} read {v:?}")),
                    Ok(_) | Err(_) => {}
                }
            }
            Err(err) if not_run(&err) => {}
            Err(_) => {
                e.1.push(seq);
                broke = true;
            }
        }
        let mset: redis::RedisResult<()> = redis::cmd("MSET")
            .arg(&ta)
            .arg(seq)
            .arg(&tb)
            .arg(seq)
            .query(c);
        if mset.is_ok() {
            let got: redis::RedisResult<Vec<Option<i64>>> =
                redis::cmd("MGET").arg(&ta).arg(&tb).query(c);
            if let Ok(v) = got
                && v != [Some(seq), Some(seq)]
            {
                seen.violations
                    .push(format!("MGET {ta} {tb} after MSET {seq} read {v:?}"));
            }
        } else if !mset.as_ref().is_err_and(not_run) {
            broke = true;
        }
        if broke {
            conn = None;
        }
    }
    seen
}

/// The consistency test: four clients through two proxies while 24 slot moves go back and
/// forth between three groups, one proxy and the dashboard killed and restarted mid-way;
/// at the end, on the backends: every counter holds its acknowledged INCRs (plus at most
/// the unknown ones), every list its acknowledged pushes once each in order, every
/// versioned key its last acknowledged SET, and every key is on its slot's group only.
#[test]
fn clients_through_two_proxies_lose_nothing_while_slots_move_back_and_forth() {
    use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
    use std::sync::{Arc, Mutex};
    let started = std::time::Instant::now();
    let redis = [
        RedisServer::start(),
        RedisServer::start(),
        RedisServer::start(),
    ];
    let etcd = harness::etcd::Etcd::start();
    let url = etcd.url();
    let mut d = Dashboard::start(&url, "churn");
    for (g, r) in redis.iter().enumerate() {
        let g = (g + 1).to_string();
        d.admin_ok(&["group", "add", &g]);
        d.admin_ok(&["group", "add-server", &g, &r.addr()]);
    }
    d.admin_ok(&["slots", "assign", "0-1023", "1"]);
    let start_proxy = || {
        Proxy::start_coordinator(&url, "churn", 3)
            .unwrap_or_else(|e| panic!("proxy did not start: {e}"))
    };
    let mut proxies = [start_proxy(), start_proxy()];
    let addrs = Arc::new(Mutex::new(vec![proxies[0].addr, proxies[1].addr]));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|me| {
            let (addrs, stop) = (addrs.clone(), stop.clone());
            std::thread::spawn(move || churn_client(me, me % 2, addrs, stop))
        })
        .collect();

    // The slots of the clients' keys, each moved on to the next group in turn.
    let mut keys: Vec<String> = (0..8).map(|i| format!("c:{i}")).collect();
    for me in 0..4 {
        for i in 0..4 {
            keys.push(format!("l:{me}:{i}"));
            keys.push(format!("v:{me}:{i}"));
            keys.push(format!("{{m:{me}:{i}}}a"));
            keys.push(format!("{{m:{me}:{i}}}b"));
        }
    }
    let mut slots: Vec<usize> = keys.iter().map(|k| harness::slot(k.as_bytes())).collect();
    slots.sort_unstable();
    slots.dedup();
    let mut owner = vec![1usize; 1024];
    for n in 0..24 {
        let s = slots[(n * 7) % slots.len()];
        owner[s] = owner[s] % 3 + 1;
        d.admin_ok(&[
            "slots",
            "migrate",
            &s.to_string(),
            "--to",
            &owner[s].to_string(),
        ]);
        if n == 8 {
            proxies[1].kill();
            proxies[1] = start_proxy();
            addrs.lock().unwrap()[1] = proxies[1].addr;
        }
        if n == 14 {
            // Mid-step: the restarted dashboard resumes it.
            drop(d);
            let mut next = None;
            // Its lock expires 2 s after it dies.
            wait_until(Duration::from_secs(10), || {
                next = Dashboard::try_start(&url, "churn").ok();
                next.is_some()
            });
            d = next.expect("the dashboard did not start again");
        }
        let left = MIGRATION_BOUND.saturating_sub(started.elapsed());
        assert!(
            wait_until(left, || d.migrations_empty()),
            "move {n} (slot {s} to group {}) did not end within the test's bound:\n{}",
            owner[s],
            d.admin_ok(&["migrations"])
        );
    }
    stop.store(true, Relaxed);
    let seen: Vec<Seen> = clients.into_iter().map(|c| c.join().unwrap()).collect();

    // Checked on the backends themselves.
    let mut conns: Vec<redis::Connection> = redis.iter().map(|r| r.conn()).collect();
    let mut group_of: std::collections::HashMap<&str, usize> = Default::default();
    for key in &keys {
        for (g, c) in conns.iter_mut().enumerate() {
            let exists: i64 = redis::cmd("EXISTS").arg(key).query(c).unwrap();
            if exists == 1 {
                assert!(
                    !group_of.contains_key(key.as_str()),
                    "{key} is on two groups"
                );
                group_of.insert(key, g + 1);
            }
        }
        let slot = harness::slot(key.as_bytes());
        if let Some(&g) = group_of.get(key.as_str()) {
            assert_eq!(
                g, owner[slot],
                "{key} (slot {slot}) is not on its slot's group"
            );
        }
    }
    let get = |key: &str| -> Option<String> {
        let g = *group_of.get(key)?;
        redis::cmd("GET")
            .arg(key)
            .query(&mut redis[g - 1].conn())
            .unwrap()
    };
    let mut counters: std::collections::HashMap<String, (i64, i64)> = Default::default();
    for s in &seen {
        for (k, (acked, unknown)) in &s.incr {
            let e = counters.entry(k.clone()).or_default();
            e.0 += acked;
            e.1 += unknown;
        }
    }
    for (k, (acked, unknown)) in &counters {
        let v: i64 = get(k).map_or(0, |v| v.parse().unwrap());
        assert!(
            *acked <= v && v <= acked + unknown,
            "{k} = {v}: {acked} INCRs acknowledged, {unknown} unknown"
        );
    }
    for s in &seen {
        assert!(s.violations.is_empty(), "{:?}", s.violations);
        for (k, (last, unknown)) in &s.versions {
            let v: i64 = get(k).map_or(0, |v| v.parse().unwrap());
            assert!(
                v == *last || (v > *last && unknown.contains(&v)),
                "{k} = {v}: last acknowledged SET {last}, unknown {unknown:?}"
            );
        }
        for (k, (acked, unknown)) in &s.pushed {
            let Some(&g) = group_of.get(k.as_str()) else {
                assert!(acked.is_empty(), "{k} lost every push");
                continue;
            };
            let list: Vec<i64> = redis::cmd("LRANGE")
                .arg(k)
                .arg(0)
                .arg(-1)
                .query(&mut redis[g - 1].conn())
                .unwrap();
            assert!(list.windows(2).all(|w| w[0] < w[1]), "{k}: {list:?}");
            assert!(
                acked.iter().all(|a| list.contains(a))
                    && list
                        .iter()
                        .all(|x| acked.contains(x) || unknown.contains(x)),
                "{k}: {list:?}, acknowledged {acked:?}, unknown {unknown:?}"
            );
        }
    }
    let acked: i64 = counters.values().map(|c| c.0).sum();
    assert!(
        acked > 100,
        "the clients got too few INCRs through: {acked}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(90),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn a_group_gets_the_function_libraries_before_its_first_slots() {
    let (r1, r2, r3) = (
        RedisServer::start(),
        RedisServer::start(),
        RedisServer::start(),
    );
    let store = TempDir::new("store");
    let url = store_url(&store);
    let d = Dashboard::start(&url, "libs");
    d.admin_ok(&["group", "add", "1"]);
    d.admin_ok(&["group", "add-server", "1", &r1.addr()]);
    d.admin_ok(&["group", "add", "2"]);
    d.admin_ok(&["group", "add-server", "2", &r2.addr()]);
    d.admin_ok(&["slots", "assign", "0-499", "1"]);
    d.admin_ok(&["slots", "assign", "500-999", "2"]);
    let proxy = Proxy::start_coordinator(&url, "libs", 10)
        .unwrap_or_else(|e| panic!("proxy did not start: {e}"));
    let mut c = proxy.raw();
    let lib = "#!lua name=lib\nredis.register_function('echo_get', function(keys) return redis.call('GET', keys[1]) end)";
    assert_eq!(
        c.cmd(&["FUNCTION", "LOAD", lib]),
        harness::Resp::bulk("lib")
    );

    // Group 3 joins after the library was loaded, and gets slots 1000-1023.
    d.admin_ok(&["group", "add", "3"]);
    d.admin_ok(&["group", "add-server", "3", &r3.addr()]);
    let out = d.admin_ok(&["slots", "assign", "1000-1023", "3"]);
    assert!(out.contains("24 slots changed"), "{out}");
    let key = harness::find_key("f", |k| harness::slot(k) >= 1000);
    let mut reply = harness::Resp::nil();
    let served = wait_until(Duration::from_secs(10), || {
        c.cmd(&["SET", &key, "v"]) == harness::Resp::ok()
    });
    assert!(
        served,
        "the proxy does not route slot {}",
        harness::slot(key.as_bytes())
    );
    assert!(
        wait_until(Duration::from_secs(5), || {
            reply = c.cmd(&["FCALL", "echo_get", "1", &key]);
            reply == harness::Resp::bulk("v")
        }),
        "FCALL on group 3: {reply:?}"
    );
    let on3: Option<String> = redis::cmd("GET")
        .arg(&key)
        .query(&mut conn(&r3, 0, ""))
        .unwrap();
    assert_eq!(on3.as_deref(), Some("v"));

    // Group 1's master dies: the next group with slots gives the libraries.
    let mut r1 = r1;
    r1.kill();
    let r5 = RedisServer::start();
    d.admin_ok(&["slots", "assign", "990-999", "0"]);
    d.admin_ok(&["group", "add", "5"]);
    d.admin_ok(&["group", "add-server", "5", &r5.addr()]);
    d.admin_ok(&["slots", "assign", "990-999", "5"]);
    let key = harness::find_key("f", |k| (990..=999).contains(&harness::slot(k)));
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg("w")
        .query(&mut conn(&r5, 0, ""))
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || {
            reply = c.cmd(&["FCALL", "echo_get", "1", &key]);
            reply == harness::Resp::bulk("w")
        }),
        "FCALL on group 5: {reply:?}"
    );

    // A group whose master refuses the restore gets no slots, and says why.
    let r4 = RedisServer::start_with_args(&["--requirepass", "other"]);
    d.admin_ok(&["slots", "assign", "980-989", "0"]);
    d.admin_ok(&["group", "add", "4"]);
    d.admin_ok(&["group", "add-server", "4", &r4.addr()]);
    let (ok, out, err) = d.admin(&["slots", "assign", "980-989", "4"]);
    assert!(!ok, "{out}");
    assert!(
        err.contains("group 4 gets no slots before it has the function libraries, and copying them from group 2 failed: "),
        "{err}"
    );
    assert!(err.contains("NOAUTH"), "{err}");
    assert_eq!(d.owner(985), None);
    // A migration to it does not start either: its step stays queued, showing why.
    d.admin_ok(&["slots", "migrate", "500-509", "--to", "4"]);
    let mut table = String::new();
    let shown = wait_until(Duration::from_secs(10), || {
        table = d.admin_ok(&["migrations"]);
        table.contains("copying them from group 2 failed")
    });
    assert!(shown, "the failed copy is not shown:\n{table}");
    assert!(table.contains("queued"), "{table}");
    assert_eq!(d.owner(505), Some(2));
}
