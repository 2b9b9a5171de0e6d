//! The dashboard's web UI in a real headless Chromium, driven over WebDriver (chromedriver):
//! against real redis-servers, a dashboard and a coordinator-mode proxy, an operator creates
//! groups, adds servers, assigns slots and uploads a plugin chain through the page, and the
//! page shows what the API holds (the plugins' counters too). Screenshots of each view go to `target/ui-screenshots/`.

use tessera_testkit as harness;

mod in_process;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fantoccini::actions::{
    InputSource, KeyAction, KeyActions, MOUSE_BUTTON_LEFT, MouseActions, PointerAction,
};
use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use harness::{ChildGuard, HttpResponse, Proxy, RedisServer, TempDir, free_addr, http_request};
use serde_json::{Value, json};

const TOKEN: &str = "web-ui-test-token";
/// How long the page may take to show a change (it polls every 2 s).
const UI_BOUND: Duration = Duration::from_secs(20);
/// The longest the test's traffic runs.
const TRAFFIC_BOUND: Duration = Duration::from_secs(120);

/// A `chromedriver` on a free 127.0.0.1 port, stopped by pid on drop with the browsers it
/// started (a test that fails leaves its session open).
struct ChromeDriver {
    child: ChildGuard,
    addr: SocketAddr,
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let mut seen = Vec::new();
        let mut frontier = vec![self.child.pid()];
        // Chromium's process tree is a few levels deep (browser, zygote, renderers).
        for _ in 0..6 {
            frontier = frontier
                .into_iter()
                .flat_map(harness::children_of)
                .collect();
            seen.extend(&frontier);
        }
        for pid in seen {
            harness::signal(pid, libc::SIGKILL);
        }
        self.child.kill();
    }
}

impl ChromeDriver {
    fn start() -> ChromeDriver {
        let program = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
        let addr = free_addr();
        let child = Command::new(&program)
            .arg(format!("--port={}", addr.port()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {program} ({e}): the web UI test needs Chromium and its \
                     WebDriver, Debian's chromium and chromium-driver: run scripts/install-deps.sh"
                )
            });
        let driver = ChromeDriver {
            child: ChildGuard::new(child),
            addr,
        };
        assert!(
            harness::wait_until(harness::START_BOUND, || harness::accepts(addr)),
            "chromedriver did not listen on {addr} within {:?}",
            harness::START_BOUND
        );
        driver
    }
}

/// A headless Chromium session (its profile in `profile`).
async fn browser(driver: &ChromeDriver, profile: &Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({ "args": [
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--window-size=1280,1100", format!("--user-data-dir={}", profile.display()),
        ]}),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://{}", driver.addr))
        .await
        .unwrap_or_else(|e| panic!("chromedriver could not start Chromium: {e}"))
}

/// The page's text of the first element matching `css`, or "" when there is none.
async fn text(c: &Client, css: &str) -> String {
    match c.find(Locator::Css(css)).await {
        Ok(e) => e.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Waits (bounded) until the text of `css` satisfies `ok`; answers it.
async fn wait_text(c: &Client, css: &str, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + UI_BOUND;
    loop {
        let t = text(c, css).await;
        if ok(&t) {
            return t;
        }
        if Instant::now() > deadline {
            let shot = screenshot(c, "failed").await;
            panic!(
                "{css} still shows {t:?} after {UI_BOUND:?}; the message box shows {:?} \
                 (screenshot: {})",
                text(c, "#message").await,
                shot.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits (bounded) until the view `name` has drawn data from the API.
async fn open_view(c: &Client, base: &str, name: &str) {
    c.goto(&format!("{base}/#{name}")).await.unwrap();
    let css = format!("body[data-loaded=\"{name}\"]");
    c.wait()
        .at_most(UI_BOUND)
        .for_element(Locator::Css(&css))
        .await
        .unwrap_or_else(|e| panic!("the {name} view did not load: {e}"));
}

async fn click(c: &Client, css: &str) {
    c.wait()
        .at_most(UI_BOUND)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("click {css}: {e}"));
}

/// Answers the open confirmation or token dialog with its button `button`.
async fn answer_dialog(c: &Client, dialog: &str, button: &str) {
    c.wait()
        .at_most(UI_BOUND)
        .for_element(Locator::Css(&format!("#{dialog}[open]")))
        .await
        .unwrap_or_else(|e| panic!("the {dialog} did not open: {e}"));
    click(c, &format!("#{button}")).await;
}

/// The message box's text once it shows one of `kind` (`ok` or `error`).
async fn message(c: &Client, kind: &str) -> String {
    wait_text(c, &format!("#message.{kind}:not([hidden])"), |t| {
        !t.is_empty()
    })
    .await
}

async fn clear_message(c: &Client) {
    c.execute("document.getElementById('message').hidden = true; document.getElementById('message').className = '';", vec![])
        .await
        .unwrap();
}

async fn screenshot(c: &Client, name: &str) -> PathBuf {
    let dir = harness::repo_root().join("target/ui-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.png"));
    std::fs::write(&path, c.screenshot().await.unwrap()).unwrap();
    path
}

fn api(addr: SocketAddr, method: &str, path: &str, body: &str) -> HttpResponse {
    let auth = format!("Bearer {TOKEN}");
    http_request(
        addr,
        method,
        path,
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        body,
    )
}

fn api_json(addr: SocketAddr, path: &str) -> Value {
    let r = harness::http_get(addr, path);
    assert_eq!(r.status, 200, "GET {path}: {}", r.body);
    serde_json::from_str(&r.body).unwrap()
}

/// The group each slot's commands go to, as the API's slot table says (None: offline).
fn api_slot_groups(addr: SocketAddr) -> Vec<Option<u64>> {
    api_json(addr, "/api/slots?full=1")["slots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["group"].as_u64().or(s["from"].as_u64()))
        .collect()
}

/// The `data-group` of every cell of the slot map, in slot order.
async fn page_slot_groups(c: &Client) -> Vec<Option<u64>> {
    let cells = c
        .execute(
            "return [...document.querySelectorAll('#slot-grid .cell')]\
               .map(e => [Number(e.dataset.slot), e.dataset.group]);",
            vec![],
        )
        .await
        .unwrap();
    let cells = cells.as_array().unwrap();
    assert_eq!(cells.len(), 1024, "the slot map has one cell per slot");
    cells
        .iter()
        .enumerate()
        .map(|(i, c)| {
            assert_eq!(c[0].as_u64(), Some(i as u64), "cells are in slot order");
            c[1].as_str().unwrap().parse().ok()
        })
        .collect()
}

/// Clicks slot `lo`, shift-clicks slot `hi` (real pointer and key input).
async fn select_slots(c: &Client, lo: u32, hi: u32) {
    click(c, &format!("#slot-grid .cell[data-slot=\"{lo}\"]")).await;
    let end = c
        .find(Locator::Css(&format!(
            "#slot-grid .cell[data-slot=\"{hi}\"]"
        )))
        .await
        .unwrap();
    let shift: char = Key::Shift.into();
    let keys = KeyActions::new("keyboard".into())
        .then(KeyAction::Down { value: shift })
        .then(KeyAction::Pause {
            duration: Duration::ZERO,
        })
        .then(KeyAction::Pause {
            duration: Duration::ZERO,
        })
        .then(KeyAction::Up { value: shift });
    let mouse = MouseActions::new("mouse".into())
        .then(PointerAction::MoveToElement {
            element: end,
            duration: None,
            x: 0.0,
            y: 0.0,
        })
        .then(PointerAction::Down {
            button: MOUSE_BUTTON_LEFT,
        })
        .then(PointerAction::Up {
            button: MOUSE_BUTTON_LEFT,
        })
        .then(PointerAction::Pause {
            duration: Duration::ZERO,
        });
    c.perform_actions(fantoccini::actions::Actions::from(keys).and(mouse))
        .await
        .unwrap();
    c.release_actions().await.unwrap();
    let want = format!("slots {lo}-{hi} selected");
    wait_text(c, "#slot-selection", |t| t.starts_with(&want)).await;
}

/// Commands through the proxy from one connection (so one session) until `stop`, at most
/// `TRAFFIC_BOUND`: 300 keys of slots below `served` set over and over, in pipelines of 20
/// every 20 ms.
fn traffic(proxy: &Proxy, served: usize, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    let keys: Vec<String> = (0..)
        .map(|i| format!("key:{i}"))
        .filter(|k| harness::slot(k.as_bytes()) < served)
        .take(300)
        .collect();
    let mut conn = proxy.conn();
    std::thread::spawn(move || {
        let started = Instant::now();
        let mut sent = 0u64;
        while !stop.load(Ordering::Relaxed) && started.elapsed() < TRAFFIC_BOUND {
            let mut pipe = redis::pipe();
            for _ in 0..20 {
                pipe.set(&keys[sent as usize % keys.len()], sent).ignore();
                sent += 1;
            }
            pipe.query::<()>(&mut conn)
                .expect("the proxy serves the traffic");
            std::thread::sleep(Duration::from_millis(20));
        }
        sent
    })
}

/// Waits (bounded) until `page` and `api` read the same value and `ok` holds for it (both
/// move: the proxies refresh their registration, the page polls); answers it.
async fn wait_same<T: PartialEq + std::fmt::Debug>(
    what: &str,
    mut page: impl AsyncFnMut() -> T,
    mut api: impl FnMut() -> T,
    ok: impl Fn(&T) -> bool,
) -> T {
    let deadline = Instant::now() + UI_BOUND;
    loop {
        let (p, a) = (page().await, api());
        if p == a && ok(&a) {
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: the page shows {p:?}, the API {a:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn web_ui_drives_the_cluster_and_shows_what_the_api_holds() {
    let r1 = RedisServer::start();
    let r2 = RedisServer::start();
    let store = TempDir::new("web-ui-store");
    let coordinator = format!("file://{}", store.path().display());
    let product = "webui";
    let (rt, dashboard) = in_process::dashboard(&coordinator, product, TOKEN);
    let d = dashboard.addr();
    let base = format!("http://{d}");
    let proxy = Proxy::start_coordinator(&coordinator, product, 10)
        .unwrap_or_else(|e| panic!("proxy did not start: {e}"));
    let driver = ChromeDriver::start();
    let profile = TempDir::new("web-ui-chromium");
    let module = harness::built("command_filter");

    rt.block_on(async {
        let c = browser(&driver, profile.path()).await;

        // The page and its files come from the dashboard itself.
        open_view(&c, &base, "overview").await;
        assert_eq!(c.title().await.unwrap(), "Tessera dashboard");
        wait_text(&c, "#ov-product", |t| t == product).await;

        // A write without the token fails, and the page shows the API's own refusal.
        open_view(&c, &base, "groups").await;
        c.find(Locator::Id("new-group-id"))
            .await
            .unwrap()
            .send_keys("1")
            .await
            .unwrap();
        click(&c, "#add-group-button").await;
        answer_dialog(&c, "token-dialog", "token-cancel").await;
        let refused = http_request(d, "POST", "/api/groups", &[], "{\"id\": 1}");
        assert_eq!(refused.status, 401);
        let api_text = serde_json::from_str::<Value>(&refused.body).unwrap()["error"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(message(&c, "error").await, api_text);
        assert_eq!(api_json(d, "/api/groups")["groups"], json!([]));

        // With the token (asked once), groups 1 and 2.
        clear_message(&c).await;
        click(&c, "#add-group-button").await;
        c.wait()
            .at_most(UI_BOUND)
            .for_element(Locator::Css("#token-dialog[open] #token-input"))
            .await
            .unwrap()
            .send_keys(TOKEN)
            .await
            .unwrap();
        answer_dialog(&c, "token-dialog", "token-ok").await;
        let ok = message(&c, "ok").await;
        assert!(ok.starts_with("group 1 created"), "{ok}");
        wait_text(&c, ".group[data-group=\"1\"] h2", |t| {
            t.starts_with("Group 1")
        })
        .await;
        let field = c.find(Locator::Id("new-group-id")).await.unwrap();
        field.clear().await.unwrap();
        field.send_keys("2").await.unwrap();
        clear_message(&c).await;
        click(&c, "#add-group-button").await;
        let ok = message(&c, "ok").await;
        assert!(
            ok.starts_with("group 2 created"),
            "no second token prompt: {ok}"
        );

        // A server per group.
        for (id, redis) in [(1, &r1), (2, &r2)] {
            let input = format!("input.new-server[data-group=\"{id}\"]");
            c.wait()
                .at_most(UI_BOUND)
                .for_element(Locator::Css(&input))
                .await
                .unwrap()
                .send_keys(&redis.addr())
                .await
                .unwrap();
            clear_message(&c).await;
            click(&c, &format!(".group[data-group=\"{id}\"] .add-server")).await;
            let ok = message(&c, "ok").await;
            assert!(ok.starts_with(&format!("server {}", redis.addr())), "{ok}");
            let row = format!(
                ".group[data-group=\"{id}\"] tr[data-addr=\"{}\"]",
                redis.addr()
            );
            wait_text(&c, &row, |t| t.contains("master")).await;
        }
        let groups = api_json(d, "/api/groups");
        assert_eq!(groups["groups"][0]["servers"], json!([r1.addr()]));
        assert_eq!(groups["groups"][1]["servers"], json!([r2.addr()]));

        // Slots: 0-511 to group 1, 512-1023 to group 2, each after a confirmation.
        open_view(&c, &base, "slots").await;
        for (lo, hi, group) in [(0, 511, "1"), (512, 1023, "2")] {
            select_slots(&c, lo, hi).await;
            c.find(Locator::Id("assign-group"))
                .await
                .unwrap()
                .select_by_value(group)
                .await
                .unwrap();
            clear_message(&c).await;
            click(&c, "#assign-button").await;
            answer_dialog(&c, "confirm-dialog", "confirm-ok").await;
            let ok = message(&c, "ok").await;
            assert!(ok.starts_with("512 slots changed"), "{ok}");
        }
        let want: Vec<Option<u64>> = (0..1024)
            .map(|s| Some(if s < 512 { 1 } else { 2 }))
            .collect();
        assert_eq!(api_slot_groups(d), want);
        wait_slot_map(&c, d, |g| g == want).await;
        // Taking a range offline asks first; cancelled, nothing changes.
        select_slots(&c, 1000, 1023).await;
        click(&c, "#offline-button").await;
        answer_dialog(&c, "confirm-dialog", "confirm-cancel").await;
        assert_eq!(api_slot_groups(d), want);
        // Confirmed, the range goes offline, and the map shows it.
        clear_message(&c).await;
        click(&c, "#offline-button").await;
        answer_dialog(&c, "confirm-dialog", "confirm-ok").await;
        let ok = message(&c, "ok").await;
        assert!(ok.starts_with("24 slots changed"), "{ok}");
        let mut want = want;
        want[1000..].iter_mut().for_each(|g| *g = None);
        wait_slot_map(&c, d, |g| g == want).await;
        let hover = c
            .find(Locator::Css("#slot-grid .cell[data-slot=\"700\"]"))
            .await
            .unwrap()
            .attr("title")
            .await
            .unwrap();
        assert_eq!(hover.as_deref(), Some("slot 700: group 2, owned"));
        let shot = screenshot(&c, "slot-map").await;
        assert!(std::fs::metadata(&shot).unwrap().len() > 1000);
        // A migrating slot (the state slot migration writes) is drawn apart, with both groups.
        let drawn = c
            .execute(
                "drawSlots({product: {name: 'webui'}, groups: [{id: 1, slots: 0}, {id: 2, slots: 1014}], \
                   slots: [{range: '0-9', state: 'migrating', from: 1, to: 2}, \
                           {range: '10-1023', state: 'owned', group: 2}]});\
                 const cell = document.querySelector('#slot-grid .cell[data-slot=\"5\"]');\
                 return [cell.classList.contains('migrating'), cell.dataset.group, cell.title];",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(
            drawn,
            json!([true, "1", "slot 5: migrating from group 1 to group 2"])
        );

        // Traffic through the proxy: the overview's ops/s, sessions and keys per group are
        // the API's.
        let stop = Arc::new(AtomicBool::new(false));
        let sender = traffic(&proxy, 1000, stop.clone());
        open_view(&c, &base, "overview").await;
        let ops = wait_same(
            "total ops/s",
            async || {
                let e = c.find(Locator::Id("ov-ops")).await.unwrap();
                e.attr("data-value").await.unwrap().unwrap_or_default()
            },
            || {
                let proxies = api_json(d, "/api/proxies")["proxies"].clone();
                let sum: f64 = proxies
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p["ops_per_sec"].as_f64().unwrap())
                    .sum();
                if sum > 0.0 {
                    sum.to_string()
                } else {
                    "no traffic yet".into()
                }
            },
            |_| true,
        )
        .await;
        assert!(ops.parse::<f64>().unwrap() > 0.0);
        wait_same(
            "sessions",
            async || text(&c, "#ov-sessions").await,
            || api_json(d, "/api/proxies")["proxies"][0]["sessions"].to_string(),
            |_| true,
        )
        .await;
        for group in [1, 2] {
            wait_same(
                "keys",
                async || {
                    text(
                        &c,
                        &format!("#ov-groups tr[data-group=\"{group}\"] td.keys"),
                    )
                    .await
                },
                || {
                    let servers = api_json(d, "/api/servers")["servers"].clone();
                    let master = servers
                        .as_array()
                        .unwrap()
                        .iter()
                        .find(|s| s["group"] == group && s["position"] == "master")
                        .cloned()
                        .unwrap();
                    let keys = master["keys"].as_u64().unwrap();
                    if keys > 0 {
                        keys.to_string()
                    } else {
                        "no keys yet".into()
                    }
                },
                |_| true,
            )
            .await;
        }

        // A server that does not answer: the groups view and the overview's alerts say so;
        // removing it asks first.
        let dead = free_addr().to_string();
        open_view(&c, &base, "groups").await;
        c.find(Locator::Css("input.new-server[data-group=\"1\"]"))
            .await
            .unwrap()
            .send_keys(&dead)
            .await
            .unwrap();
        click(&c, ".group[data-group=\"1\"] .add-server").await;
        let row = format!(".group[data-group=\"1\"] tr[data-addr=\"{dead}\"]");
        let shown = wait_text(&c, &row, |t| t.contains("replica") && t.contains("no:")).await;
        assert!(shown.contains("refused"), "{shown}");
        screenshot(&c, "groups").await;
        open_view(&c, &base, "overview").await;
        let alert = format!("server {dead} (group 1) does not answer");
        wait_text(&c, "#ov-alerts", |t| t.contains(&alert)).await;
        screenshot(&c, "overview-alert").await;
        open_view(&c, &base, "groups").await;
        click(&c, &format!("{row} .remove-server")).await;
        answer_dialog(&c, "confirm-dialog", "confirm-ok").await;
        let ok = message(&c, "ok").await;
        assert!(ok.starts_with(&format!("server {dead} removed")), "{ok}");
        assert_eq!(
            api_json(d, "/api/groups")["groups"][0]["servers"],
            json!([r1.addr()])
        );

        // A group that owns slots cannot be removed: the API's refusal is shown.
        clear_message(&c).await;
        click(&c, ".group[data-group=\"2\"] .remove-group").await;
        answer_dialog(&c, "confirm-dialog", "confirm-ok").await;
        let refusal = api(d, "DELETE", "/api/groups/2", "");
        assert_eq!(refusal.status, 409);
        let refusal: Value = serde_json::from_str(&refusal.body).unwrap();
        assert_eq!(
            message(&c, "error").await,
            refusal["error"].as_str().unwrap()
        );
        assert_eq!(
            api_json(d, "/api/groups")["groups"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
        // An empty group is removed once confirmed.
        let field = c.find(Locator::Id("new-group-id")).await.unwrap();
        field.clear().await.unwrap();
        field.send_keys("3").await.unwrap();
        clear_message(&c).await;
        click(&c, "#add-group-button").await;
        let ok = message(&c, "ok").await;
        assert!(ok.starts_with("group 3 created"), "{ok}");
        clear_message(&c).await;
        click(&c, ".group[data-group=\"3\"] .remove-group").await;
        answer_dialog(&c, "confirm-dialog", "confirm-ok").await;
        let ok = message(&c, "ok").await;
        assert!(ok.starts_with("group 3 removed"), "{ok}");
        let ids: Vec<Value> = api_json(d, "/api/groups")["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["id"].clone())
            .collect();
        assert_eq!(ids, [json!(1), json!(2)]);
        wait_text(&c, "#group-list", |t| !t.contains("Group 3")).await;

        // Proxies: the registered proxy, its revision and its admin link.
        open_view(&c, &base, "proxies").await;
        let row = format!("#proxy-table tr[data-addr=\"{}\"]", proxy.addr);
        wait_text(&c, &row, |t| t.contains(env!("CARGO_PKG_VERSION"))).await;
        // Read in one script: the row is drawn again when the proxy's figures change.
        let link = c
            .execute(
                "return document.querySelector(arguments[0]).getAttribute('href');",
                vec![json!(format!("{row} a"))],
            )
            .await
            .unwrap();
        assert_eq!(link, json!(format!("http://{}/api/stats", proxy.admin)));
        screenshot(&c, "proxies").await;

        // Migrations: none.
        open_view(&c, &base, "migrations").await;
        wait_text(&c, "#migration-list", |t| t == "no migrations").await;

        // Plugins: upload a built module; the chain with an empty config is refused with the
        // plugin's own text, the same the API answers; a good config is applied.
        open_view(&c, &base, "plugins").await;
        clear_message(&c).await;
        c.find(Locator::Id("module-file"))
            .await
            .unwrap()
            .send_keys(module.to_str().unwrap())
            .await
            .unwrap();
        let ok = message(&c, "ok").await;
        let sha = api_json(d, "/api/plugins")["modules"][0]["sha256"]
            .as_str()
            .expect("the module is uploaded")
            .to_string();
        assert!(ok.contains(&sha), "{ok}");
        let editor: Value = serde_json::from_str(
            &c.find(Locator::Id("chain-editor"))
                .await
                .unwrap()
                .prop("value")
                .await
                .unwrap()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(editor["chain"][0]["module"], json!(sha));
        clear_message(&c).await;
        click(&c, "#apply-chain-button").await;
        answer_dialog(&c, "confirm-dialog", "confirm-ok").await;
        let refusal = api(d, "PUT", "/api/plugins", &editor.to_string());
        assert_eq!(refusal.status, 400, "{}", refusal.body);
        let refusal: Value = serde_json::from_str(&refusal.body).unwrap();
        assert_eq!(
            message(&c, "error").await,
            refusal["error"].as_str().unwrap()
        );
        assert_eq!(api_json(d, "/api/plugins")["chain"], json!([]));

        let mut good = editor.clone();
        good["chain"][0]["config"] = json!("{\"deny\": [\"flushall\"]}");
        let area = c.find(Locator::Id("chain-editor")).await.unwrap();
        area.clear().await.unwrap();
        area.send_keys(&good.to_string()).await.unwrap();
        clear_message(&c).await;
        click(&c, "#apply-chain-button").await;
        answer_dialog(&c, "confirm-dialog", "confirm-ok").await;
        let ok = message(&c, "ok").await;
        assert!(ok.starts_with("plugin chain set: command_filter"), "{ok}");
        let chain = api_json(d, "/api/plugins")["chain"].clone();
        assert_eq!(chain[0]["name"], json!("command_filter"));
        let row = wait_text(&c, "#chain-table tr[data-plugin=\"command_filter\"]", |t| {
            t.contains("********")
        })
        .await;
        assert!(
            !row.contains("flushall"),
            "the config is shown masked: {row}"
        );
        // Editing the current chain reads the configs themselves, with the token.
        area.clear().await.unwrap();
        clear_message(&c).await;
        click(&c, "#load-chain-button").await;
        let ok = message(&c, "ok").await;
        assert!(ok.starts_with("the current chain"), "{ok}");
        let loaded: Value = serde_json::from_str(
            &area.prop("value").await.unwrap().unwrap_or_default(),
        )
        .unwrap();
        assert_eq!(loaded["chain"][0]["config"], good["chain"][0]["config"]);
        assert_eq!(loaded["chain"][0]["module"], json!(sha));

        // Once the proxy runs the chain, FLUSHALLs through it are refused; the Plugins view
        // shows the calls and rejects `GET /api/plugins/stats` sums, and the proxy's row.
        let deadline = Instant::now() + UI_BOUND;
        while api_json(d, "/api/plugins/stats")["counted"] != 1 {
            assert!(
                Instant::now() < deadline,
                "the proxy does not run the chain: {}",
                api_json(d, "/api/plugins/stats")
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut conn = proxy.conn();
        for _ in 0..3 {
            let e = redis::cmd("FLUSHALL")
                .query::<()>(&mut conn)
                .expect_err("the filter refuses FLUSHALL");
            assert!(e.to_string().contains("flushall"), "{e}");
        }
        let sums = "#plugin-stats-table tr[data-plugin=\"command_filter\"]";
        let counters = wait_same(
            "plugin counters",
            async || {
                let read = c
                    .execute(
                        "const row = document.querySelector(arguments[0]);\
                         return row ? ['calls', 'rejects'].map(f => \
                           Number(row.querySelector('td.' + f).dataset.value)) : [];",
                        vec![json!(sums)],
                    )
                    .await
                    .unwrap();
                serde_json::from_value::<Vec<u64>>(read).unwrap()
            },
            || {
                let sum = &api_json(d, "/api/plugins/stats")["plugins"][0];
                vec![sum["calls"].as_u64().unwrap(), sum["rejects"].as_u64().unwrap()]
            },
            |c| c[1] == 3,
        )
        .await;
        assert!(counters[0] > 0, "{counters:?}");
        let time = text(&c, &format!("{sums} td.per-call")).await;
        assert!(time.ends_with('s'), "the time per call: {time:?}");
        let row = format!(
            "#plugin-proxy-table tr[data-proxy=\"{}\"][data-state=\"counted\"]",
            proxy.addr
        );
        let shown = wait_text(&c, &row, |t| t.contains("command_filter")).await;
        let hash = api_json(d, "/api/plugins/stats")["chain_hash"].clone();
        assert!(shown.contains(&hash.as_str().unwrap()[..12]), "{shown}");
        wait_text(&c, "#plugin-stats-summary", |t| {
            t.starts_with("summed over 1 of 1 proxies")
        })
        .await;
        screenshot(&c, "plugins").await;

        // A proxy that reports it cannot load the chain or apply the topology: alerts.
        let store = tessera_topology::connect(&coordinator).await.unwrap();
        let troubled = json!({
            "token": "troubled", "addr": "127.0.0.1:1", "version": "0.1.0", "pid": 1,
            "start_time": 1_700_000_000, "applied_revision": 1, "ops_per_sec": 0.0,
            "plugin_error": "plugin 'command_filter' (store:18be...): boom",
            "topology_error": "/tessera/webui/slots (revision 9) does not decode",
        });
        store
            .put(
                &tessera_topology::keys::proxy(product, "troubled"),
                serde_json::to_vec(&troubled).unwrap(),
                None,
            )
            .await
            .unwrap();

        // Overview: the revision the API reports, both groups, the alerts.
        open_view(&c, &base, "overview").await;
        let revision = api_json(d, "/api/topology")["revision"].to_string();
        wait_text(&c, "#ov-revision", |t| t == revision).await;
        wait_text(&c, "#ov-slots", |t| t == "1000 / 1024").await;
        wait_text(&c, "#ov-groups tbody", |t| {
            t.contains(&r1.addr()) && t.contains(&r2.addr())
        })
        .await;
        let alerts = wait_text(&c, "#ov-alerts", |t| t.contains("127.0.0.1:1 ")).await;
        for alert in [
            "proxy 127.0.0.1:1 could not load the plugin chain: plugin 'command_filter' (store:18be...): boom",
            "proxy 127.0.0.1:1 cannot apply the topology: /tessera/webui/slots (revision 9) does not decode",
            "proxy 127.0.0.1:1 has applied revision 1, not the latest",
        ] {
            assert!(alerts.contains(alert), "{alerts}");
        }
        screenshot(&c, "overview").await;

        c.close().await.unwrap();
        stop.store(true, Ordering::Relaxed);
        assert!(sender.join().unwrap() > 0);
    });
    drop(proxy);
    rt.block_on(dashboard.shutdown()).unwrap();
}

/// A success status, or the answer's body in the panic.
fn api_ok(addr: SocketAddr, method: &str, path: &str, body: &str) -> Value {
    let r = api(addr, method, path, body);
    assert!(r.status < 300, "{method} {path}: {} {}", r.status, r.body);
    serde_json::from_str(&r.body).unwrap()
}

/// Every (slots, state) of `GET /api/migrations`'s steps.
fn api_steps(addr: SocketAddr) -> Vec<(String, String)> {
    api_json(addr, "/api/migrations")["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let state = s["state"].as_str().unwrap().to_string();
            (s["slots"].as_str().unwrap().to_string(), state)
        })
        .collect()
}

/// Every (slots, state) of the Migrations view's rows.
async fn page_steps(c: &Client) -> Vec<(String, String)> {
    let rows = c
        .execute(
            "return [...document.querySelectorAll('#migration-list tr[data-step]')]\
               .map(r => [r.dataset.slots, r.dataset.state]);",
            vec![],
        )
        .await
        .unwrap();
    serde_json::from_value(rows).unwrap()
}

/// Waits (bounded) until the slot map shows the API's slot table, and `ok` holds for it.
async fn wait_slot_map(c: &Client, d: SocketAddr, ok: impl Fn(&[Option<u64>]) -> bool) {
    let page = async || page_slot_groups(c).await;
    wait_same("the slot map", page, || api_slot_groups(d), |g| ok(g)).await;
}

/// Slot migration from the page, on a cluster without proxies: a stand-in proxy
/// registration that has applied no revision holds the first step at its barrier while the
/// page shows and cancels steps; once it goes, the dashboard's migrator moves the keys to
/// the end. Then a rebalance, previewed with the API's own dry run before it is queued.
#[test]
fn web_ui_migrates_slots_cancels_and_rebalances() {
    let r1 = RedisServer::start();
    let r2 = RedisServer::start();
    let store_dir = TempDir::new("web-ui-migrate-store");
    let coordinator = format!("file://{}", store_dir.path().display());
    let product = "webmig";
    let (rt, dashboard) = in_process::dashboard(&coordinator, product, TOKEN);
    let d = dashboard.addr();
    let base = format!("http://{d}");
    for (id, redis) in [(1, &r1), (2, &r2)] {
        api_ok(d, "POST", "/api/groups", &format!("{{\"id\": {id}}}"));
        api_ok(
            d,
            "POST",
            &format!("/api/groups/{id}/servers"),
            &json!({ "addr": redis.addr() }).to_string(),
        );
    }
    api_ok(
        d,
        "POST",
        "/api/slots/assign",
        "{\"range\": \"0-1023\", \"group\": 1}",
    );
    // Two default steps' worth of slots, 0-(2 × step - 1), with 300 keys on group 1's master.
    let step = tessera_dashboard::migrate::DEFAULT_STEP_SLOTS;
    let (first, second) = (
        format!("0-{}", step - 1),
        format!("{step}-{}", 2 * step - 1),
    );
    let keys: Vec<String> = (0..)
        .map(|i| format!("mig:{i}"))
        .filter(|k| harness::slot(k.as_bytes()) < 2 * step)
        .take(300)
        .collect();
    let mut r1c = r1.client().get_connection().unwrap();
    let mut r2c = r2.client().get_connection().unwrap();
    for k in &keys {
        redis::cmd("SET")
            .arg(k)
            .arg(k)
            .query::<()>(&mut r1c)
            .unwrap();
    }
    let holder_key = tessera_topology::keys::proxy(product, "holder");
    let store = rt
        .block_on(tessera_topology::connect(&coordinator))
        .unwrap();
    let holder = json!({
        "token": "holder", "addr": "127.0.0.1:2", "version": "0.1.0", "pid": 2,
        "start_time": 1_700_000_000, "applied_revision": 0, "ops_per_sec": 0.0,
    });
    rt.block_on(store.put(&holder_key, serde_json::to_vec(&holder).unwrap(), None))
        .unwrap();
    let driver = ChromeDriver::start();
    let profile = TempDir::new("web-ui-migrate-chromium");

    rt.block_on(async {
        let c = browser(&driver, profile.path()).await;
        open_view(&c, &base, "overview").await;
        c.execute(
            "sessionStorage.setItem('tessera-admin-token', arguments[0]);",
            vec![json!(TOKEN)],
        )
        .await
        .unwrap();

        // Slot map: the two steps' slots to group 2, after a confirmation.
        open_view(&c, &base, "slots").await;
        select_slots(&c, 0, 2 * step as u32 - 1).await;
        c.find(Locator::Id("assign-group"))
            .await
            .unwrap()
            .select_by_value("2")
            .await
            .unwrap();
        clear_message(&c).await;
        click(&c, "#migrate-button").await;
        answer_dialog(&c, "confirm-dialog", "confirm-cancel").await;
        assert_eq!(api_steps(d), []);
        click(&c, "#migrate-button").await;
        answer_dialog(&c, "confirm-dialog", "confirm-ok").await;
        let ok = message(&c, "ok").await;
        assert!(
            ok.starts_with(&format!(
                "slots 0-{} queued to move to group 2 in 2 steps",
                2 * step - 1
            )),
            "{ok}"
        );
        // The first step waits at its barrier for the stand-in proxy: its slots are drawn
        // migrating, with the step's progress in the hover text.
        let cell5 = "#slot-grid .cell[data-slot=\"5\"][data-state=\"migrating\"]";
        c.wait()
            .at_most(UI_BOUND)
            .for_element(Locator::Css(cell5))
            .await
            .expect("slot 5 is drawn migrating");
        let title = c
            .execute(
                "return document.querySelector(arguments[0]).title;",
                vec![json!(cell5)],
            )
            .await
            .unwrap();
        let title = title.as_str().unwrap();
        assert!(
            title.starts_with("slot 5: migrating from group 1 to group 2 (step ")
                && title.ends_with(": 0 keys moved)"),
            "{title}"
        );
        screenshot(&c, "slot-map-migrating").await;

        // The Migrations view shows both steps as the API does.
        open_view(&c, &base, "migrations").await;
        let steps = wait_same(
            "steps",
            async || page_steps(&c).await,
            || api_steps(d),
            |_| true,
        )
        .await;
        assert_eq!(
            steps,
            [
                (first.clone(), "barrier".to_string()),
                (second.clone(), "queued".to_string())
            ]
        );
        let row = text(&c, &format!("#migration-list tr[data-slots=\"{first}\"]")).await;
        assert!(row.contains("barrier") && row.contains("1 2"), "{row}");
        screenshot(&c, "migrations").await;
        // Cancelling asks first; declined, nothing changes.
        click(&c, "#cancel-all-button").await;
        answer_dialog(&c, "confirm-dialog", "confirm-cancel").await;
        assert_eq!(api_steps(d).len(), 2);
        // Confirmed, the queued range is dropped.
        c.find(Locator::Id("cancel-range"))
            .await
            .unwrap()
            .send_keys(&second)
            .await
            .unwrap();
        clear_message(&c).await;
        click(&c, "#cancel-range-button").await;
        answer_dialog(&c, "confirm-dialog", "confirm-ok").await;
        let ok = message(&c, "ok").await;
        assert!(
            ok.starts_with(&format!("queued slots {second} dropped")),
            "{ok}"
        );
        assert_eq!(api_steps(d), [(first.clone(), "barrier".to_string())]);

        // The stand-in proxy goes: nothing holds the step, the keys move to group 2.
        store
            .txn(
                vec![],
                vec![tessera_topology::store::Op::Delete(holder_key.clone())],
            )
            .await
            .unwrap();
        wait_text(&c, "#migration-list", |t| t == "no migrations").await;
        open_view(&c, &base, "slots").await;
        wait_slot_map(&c, d, |g| {
            g[..step].iter().all(|g| *g == Some(2)) && g[step..].iter().all(|g| *g == Some(1))
        })
        .await;
        for k in &keys {
            let on2: bool = redis::cmd("EXISTS").arg(k).query(&mut r2c).unwrap();
            let on1: bool = redis::cmd("EXISTS").arg(k).query(&mut r1c).unwrap();
            assert_eq!(
                (on1, on2),
                (
                    harness::slot(k.as_bytes()) >= step,
                    harness::slot(k.as_bytes()) < step
                ),
                "{k}"
            );
        }

        // Rebalance: the page shows the plan the API's dry run answers before it asks.
        open_view(&c, &base, "migrations").await;
        let dry = api_ok(d, "POST", "/api/rebalance", "{\"dry_run\": true}");
        let want: Vec<Vec<String>> = dry["plan"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                ["range", "from", "to", "slots"]
                    .map(|f| json_text(&m[f]))
                    .to_vec()
            })
            .collect();
        assert!(!want.is_empty(), "{dry}");
        click(&c, "#rebalance-button").await;
        c.wait()
            .at_most(UI_BOUND)
            .for_element(Locator::Css("#confirm-dialog[open]"))
            .await
            .expect("the rebalance asks for confirmation");
        let shown = c
            .execute(
                "return [...document.querySelectorAll('#rebalance-table tbody tr')]\
                   .map(r => [...r.cells].map(c => c.textContent));",
                vec![],
            )
            .await
            .unwrap();
        let shown: Vec<Vec<String>> = serde_json::from_value(shown).unwrap();
        assert_eq!(shown, want);
        screenshot(&c, "rebalance").await;
        answer_dialog(&c, "confirm-dialog", "confirm-cancel").await;
        assert_eq!(api_steps(d), []);
        // Confirmed, it is queued and runs to the end: 512 slots each.
        clear_message(&c).await;
        click(&c, "#rebalance-button").await;
        answer_dialog(&c, "confirm-dialog", "confirm-ok").await;
        let ok = message(&c, "ok").await;
        assert!(ok.starts_with("rebalance queued"), "{ok}");
        // The rest of 512 slots in steps: the API first, then the page. Each step takes a few migrator ticks and
        // store writes: on a busy 2-core machine 60 s was not always enough for all of them.
        let deadline = Instant::now() + Duration::from_secs(120);
        while !api_steps(d).is_empty() {
            assert!(
                Instant::now() < deadline,
                "the rebalance did not finish: {:?}",
                api_steps(d)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        open_view(&c, &base, "slots").await;
        wait_slot_map(&c, d, |g| {
            g.iter().filter(|g| **g == Some(2)).count() == 512
                && g.iter().filter(|g| **g == Some(1)).count() == 512
        })
        .await;
        assert_eq!(api_steps(d), []);
        c.close().await.unwrap();
    });
    rt.block_on(dashboard.shutdown()).unwrap();
}

/// A JSON value as the page prints it (strings bare).
fn json_text(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_string)
}
