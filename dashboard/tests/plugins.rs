//! The plugin chain through the dashboard, against a real embedded store (file://, a temp
//! dir) and real modules: the Rust plugins built by `./plugins/build.sh` and the WAT ones.

use std::sync::Arc;

use serde_json::{Value, json};
use tessera_dashboard::DashboardHandle;
use tessera_dashboard::admin::AdminError;
use tessera_dashboard::plugins::{MAX_MODULE, sha256_hex};
use tessera_topology::keys;
use tessera_topology::model::{Plugins, ProxyInfo};

mod common;

use common::{Body, Env, TOKEN, dashboard, env, http};
use tessera_testkit as harness;

/// A bundled module's bytes: `release/NAME.wasm` of the Rust plugins, or `wat/NAME`.
fn module(name: &str) -> Vec<u8> {
    if name.ends_with(".wat") {
        harness::module_bytes(&format!("plugins/wat/{name}"))
    } else {
        harness::module_bytes(&format!("{}/{name}.wasm", harness::BUILT_DIR))
    }
}

async fn upload(d: &DashboardHandle, bytes: Vec<u8>) -> (u16, Value) {
    let path = "/api/plugins/modules";
    http(d, "POST", path, Some(TOKEN), Body::Bytes(bytes)).await
}

async fn put_chain(d: &DashboardHandle, chain: Value) -> (u16, Value) {
    let body = Body::Json(json!({ "chain": chain }));
    http(d, "PUT", "/api/plugins", Some(TOKEN), body).await
}

async fn get_plugins(d: &DashboardHandle) -> Value {
    let (status, v) = http(d, "GET", "/api/plugins", None, Body::None).await;
    assert_eq!(status, 200, "{v}");
    v
}

/// The uploaded modules' sha256s, as the store has them.
async fn stored_modules(env: &Env, product: &str) -> Vec<String> {
    let prefix = keys::plugin_modules_prefix(product);
    let (kvs, _) = env.store.get_prefix(&prefix).await.unwrap();
    kvs.iter()
        .map(|kv| kv.key.strip_prefix(&prefix).unwrap().to_string())
        .collect()
}

/// The chain document and its revision, as the store has them.
async fn stored_chain(env: &Env, product: &str) -> Option<(Plugins, i64)> {
    let kv = env.store.get(&keys::plugins(product)).await.unwrap()?;
    Some((serde_json::from_slice(&kv.value).unwrap(), kv.mod_revision))
}

fn error(v: &Value) -> &str {
    v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error in {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modules_upload_validated_and_idempotent() {
    let env = env().await;
    let d = dashboard(&env, "mods").await;
    let filter = module("command_filter");
    let sha = sha256_hex(&filter);

    let (status, v) = upload(&d, filter.clone()).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["sha256"], sha);
    assert_eq!(v["size"], filter.len());
    assert_eq!(v["created"], true);
    let kv = env.store.get(&keys::plugin_module("mods", &sha)).await;
    assert_eq!(kv.unwrap().unwrap().value, filter);
    // The same bytes again: the same key, nothing written.
    let revision = env.store.get_prefix("/").await.unwrap().1;
    let (status, v) = upload(&d, filter.clone()).await;
    assert_eq!(
        (status, &v["sha256"], &v["created"]),
        (200, &json!(sha), &json!(false))
    );
    assert_eq!(env.store.get_prefix("/").await.unwrap().1, revision);

    // Not WebAssembly: refused, nothing stored.
    let (status, v) = upload(&d, b"\0asm garbage".to_vec()).await;
    assert_eq!(status, 400, "{v}");
    assert!(
        error(&v).starts_with("not a valid WebAssembly module"),
        "{v}"
    );
    let (status, v) = upload(&d, Vec::new()).await;
    assert_eq!(status, 400, "{v}");
    assert!(error(&v).contains("empty"), "{v}");
    // Too large: 413 before compiling anything.
    let (status, v) = upload(&d, vec![0u8; MAX_MODULE + 1]).await;
    assert_eq!(status, 413, "{v}");
    // No token: 401, nothing read or stored.
    let wat = module("deny-secret.wat");
    let (status, v) = http(
        &d,
        "POST",
        "/api/plugins/modules",
        None,
        Body::Bytes(wat.clone()),
    )
    .await;
    assert_eq!(status, 401, "{v}");
    assert_eq!(
        stored_modules(&env, "mods").await,
        std::slice::from_ref(&sha)
    );

    // WAT text is a module too.
    let (status, v) = upload(&d, wat.clone()).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["sha256"], sha256_hex(&wat));

    let v = get_plugins(&d).await;
    assert_eq!(v["chain"], json!([]));
    let mut sizes: Vec<(String, usize)> = vec![(sha.clone(), filter.len())];
    sizes.push((sha256_hex(&wat), wat.len()));
    sizes.sort();
    let expected: Vec<Value> = sizes
        .iter()
        .map(|(s, n)| json!({"sha256": s, "size": n, "used_by": []}))
        .collect();
    assert_eq!(v["modules"], json!(expected));

    // Unused modules can go; unknown ones are 404, bad ids 400.
    let path = format!("/api/plugins/modules/{}", sha256_hex(&wat));
    let (status, v) = http(&d, "DELETE", &path, Some(TOKEN), Body::None).await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = http(&d, "DELETE", &path, Some(TOKEN), Body::None).await;
    assert_eq!(status, 404, "{v}");
    let (status, v) = http(
        &d,
        "DELETE",
        "/api/plugins/modules/xyz",
        Some(TOKEN),
        Body::None,
    )
    .await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(stored_modules(&env, "mods").await, [sha]);
    d.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chains_are_loaded_before_they_are_written() {
    let env = env().await;
    let d = dashboard(&env, "chain").await;
    let filter = sha256_hex(&module("command_filter"));
    let secret = sha256_hex(&module("deny-secret.wat"));
    let bad_version = sha256_hex(&module("bad-version.wat"));
    for m in ["command_filter", "deny-secret.wat", "bad-version.wat"] {
        let (status, v) = upload(&d, module(m)).await;
        assert_eq!(status, 200, "{m}: {v}");
    }

    // A good chain of two: written as given, with the defaults filled in.
    let config = r#"{"deny": ["flushall"]}"#;
    let (status, v) = put_chain(
        &d,
        json!([
            {"name": "filter", "module": filter, "config": config, "fail": "open", "timeout_ms": 20,
             "remember": false},
            {"name": "secret", "module": secret},
        ]),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let revision = v["revision"].as_i64().unwrap();
    let expected = json!([
        {"name": "filter", "module": filter, "config": config, "fail": "open",
         "memory_limit_mb": 16, "timeout_ms": 20, "remember": false},
        {"name": "secret", "module": secret, "config": "", "fail": "closed",
         "memory_limit_mb": 16, "timeout_ms": 10, "remember": true},
    ]);
    // The answers show each config masked, with its size and sha256; the store has it all.
    let masked = json!([
        {"name": "filter", "module": filter, "config": "********", "config_bytes": config.len(),
         "config_sha256": sha256_hex(config.as_bytes()), "fail": "open",
         "memory_limit_mb": 16, "timeout_ms": 20, "remember": false},
        {"name": "secret", "module": secret, "config": "", "config_bytes": 0,
         "config_sha256": sha256_hex(b""), "fail": "closed",
         "memory_limit_mb": 16, "timeout_ms": 10, "remember": true},
    ]);
    assert_eq!(v["chain"], masked);
    let (stored, stored_revision) = stored_chain(&env, "chain").await.unwrap();
    assert_eq!(json!(stored.chain), expected);
    assert_eq!(stored_revision, revision);
    let v = get_plugins(&d).await;
    assert_eq!(v["chain"], masked);
    assert_eq!(v["revision"], revision);
    let used: Vec<(String, Value)> = v["modules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["sha256"].as_str().unwrap().to_string(),
                m["used_by"].clone(),
            )
        })
        .collect();
    assert!(used.contains(&(filter.clone(), json!(["filter"]))), "{v}");
    assert!(used.contains(&(bad_version.clone(), json!([]))), "{v}");
    // The chain counts in the topology revision.
    let (_, topo) = http(&d, "GET", "/api/topology", None, Body::None).await;
    assert_eq!(topo["revision"], revision);
    // The same chain again writes nothing.
    let (status, v) = put_chain(&d, expected.clone()).await;
    assert_eq!((status, v["revision"].as_i64()), (200, Some(revision)));

    // Each refusal: 400 naming the plugin, the old chain untouched.
    let refusals = [
        (
            json!([{"name": "filter", "module": filter, "config": "not json"}]),
            "plugin 'filter'",
        ),
        (
            json!([{"name": "old", "module": bad_version}]),
            "plugin 'old'",
        ),
        (
            json!([{"name": "ghost", "module": sha256_hex(b"never uploaded")}]),
            "plugin 'ghost': module",
        ),
        (
            json!([{"name": "x", "module": secret}, {"name": "x", "module": filter}]),
            "plugin 'x': two plugins",
        ),
        (
            json!([{"name": "f", "module": filter, "fail": "sometimes"}]),
            "plugin 'f': fail must be",
        ),
        (json!([{"name": "f", "module": "abc"}]), "bad module id"),
        (
            json!([{"name": "f", "module": filter, "path": "x.wasm"}]),
            "unknown field `path`",
        ),
    ];
    for (chain, wanted) in refusals {
        let (status, v) = put_chain(&d, chain.clone()).await;
        assert_eq!(status, 400, "{chain}: {v}");
        assert!(error(&v).contains(wanted), "{chain}: {v}");
        let (stored, stored_revision) = stored_chain(&env, "chain").await.unwrap();
        assert_eq!(json!(stored.chain), expected, "{chain}");
        assert_eq!(stored_revision, revision, "{chain}");
        assert_eq!(get_plugins(&d).await["revision"], revision);
    }
    // The messages say what is wrong.
    let (_, v) = put_chain(&d, json!([{"name": "old", "module": bad_version}])).await;
    assert!(error(&v).contains("version"), "{v}");
    let (_, v) = put_chain(&d, json!([{"name": "ghost", "module": sha256_hex(b"?")}])).await;
    assert!(error(&v).contains("not uploaded"), "{v}");

    // Changes need the token.
    let body = Body::Json(json!({"chain": []}));
    let (status, _) = http(&d, "PUT", "/api/plugins", None, body).await;
    assert_eq!(status, 401);
    let body = Body::Json(json!({"chain": []}));
    let (status, _) = http(&d, "PUT", "/api/plugins", Some("wrong"), body).await;
    assert_eq!(status, 401);
    let path = format!("/api/plugins/modules/{filter}");
    let (status, _) = http(&d, "DELETE", &path, None, Body::None).await;
    assert_eq!(status, 401);

    // A module the chain runs cannot go.
    let (status, v) = http(&d, "DELETE", &path, Some(TOKEN), Body::None).await;
    assert_eq!(status, 409, "{v}");
    assert!(error(&v).contains("used by plugin 'filter'"), "{v}");
    assert!(stored_modules(&env, "chain").await.contains(&filter));

    // Cleared, it can.
    let (status, v) = put_chain(&d, json!([])).await;
    assert_eq!(status, 200, "{v}");
    assert!(v["revision"].as_i64().unwrap() > revision);
    assert_eq!(stored_chain(&env, "chain").await.unwrap().0.chain, []);
    let (status, v) = http(&d, "DELETE", &path, Some(TOKEN), Body::None).await;
    assert_eq!(status, 200, "{v}");
    assert!(!stored_modules(&env, "chain").await.contains(&filter));
    d.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_report_their_plugin_errors() {
    let env = env().await;
    let d = dashboard(&env, "perr").await;
    let reports = [
        ("a", "127.0.0.1:19001", None),
        ("b", "127.0.0.1:19002", Some("plugin 'f' (store:ab): boom")),
    ];
    for (token, addr, plugin_error) in reports {
        let info = ProxyInfo {
            token: token.to_string(),
            addr: addr.to_string(),
            admin_addr: None,
            version: "0.1.0".to_string(),
            pid: 42,
            start_time: 1_700_000_000,
            applied_revision: 1,
            ops_per_sec: 0.0,
            sessions: None,
            errors: None,
            plugin_error: plugin_error.map(String::from),
            topology_error: None,
            holding: None,
        };
        let value = serde_json::to_vec(&info).unwrap();
        env.store
            .put(&keys::proxy("perr", token), value, None)
            .await
            .unwrap();
    }
    let (_, v) = http(&d, "GET", "/api/proxies", None, Body::None).await;
    let proxies = v["proxies"].as_array().unwrap();
    let by_token = |t: &str| proxies.iter().find(|p| p["token"] == t).unwrap().clone();
    assert_eq!(by_token("a").get("plugin_error"), None);
    assert_eq!(by_token("b")["plugin_error"], "plugin 'f' (store:ab): boom");
    let v = get_plugins(&d).await;
    assert_eq!(
        v["proxy_errors"],
        json!([{"addr": "127.0.0.1:19002", "plugin_error": "plugin 'f' (store:ab): boom"}])
    );

    let d = Arc::new(d);
    let out = cli(&d, &["proxies"]).await.unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[1].ends_with("PLUGIN ERROR"), "{out}");
    assert!(lines[2].ends_with(" -"), "{out}");
    assert!(lines[3].ends_with("plugin 'f' (store:ab): boom"), "{out}");
    let out = cli(&d, &["plugins"]).await.unwrap();
    assert!(
        out.contains("proxy 127.0.0.1:19002 could not load the chain: plugin 'f'"),
        "{out}"
    );
}

/// `tessera admin --dashboard D --token T ARGV...`, as the binary would parse it.
async fn cli(d: &Arc<DashboardHandle>, argv: &[&str]) -> Result<String, AdminError> {
    let addr = d.addr().to_string();
    let mut full: Vec<String> = ["--dashboard", &addr, "--token", TOKEN]
        .iter()
        .map(|s| s.to_string())
        .collect();
    full.extend(argv.iter().map(|s| s.to_string()));
    tokio::task::spawn_blocking(move || common::admin_cli(&full))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_cli_sets_a_chain_from_a_file() {
    let env = env().await;
    let d = Arc::new(dashboard(&env, "clichain").await);
    let files = tempfile::tempdir().unwrap();
    std::fs::create_dir(files.path().join("modules")).unwrap();
    let filter_path = files.path().join("modules/filter.wasm");
    std::fs::write(&filter_path, module("command_filter")).unwrap();
    let filter = sha256_hex(&module("command_filter"));
    let wat_path = files.path().join("deny-secret.wat");
    std::fs::write(&wat_path, module("deny-secret.wat")).unwrap();
    let secret = sha256_hex(&module("deny-secret.wat"));

    let out = cli(&d, &["plugins"]).await.unwrap();
    assert!(out.contains("no plugins in the chain"), "{out}");
    assert!(out.contains("no modules uploaded"), "{out}");

    // `plugins upload` prints the sha256 first.
    let out = cli(&d, &["plugins", "upload", wat_path.to_str().unwrap()])
        .await
        .unwrap();
    assert!(out.starts_with(&format!("{secret}  ")), "{out}");

    // A chain file: one module by path (relative to the file), one by sha256; the config
    // may be inline JSON.
    let chain_file = files.path().join("chain.json");
    let chain = json!({"chain": [
        {"name": "filter", "path": "modules/filter.wasm",
         "config": {"deny": ["flushall", "keys"], "message": "NOPERM nope"}, "fail": "closed"},
        {"name": "secret", "module": secret, "timeout_ms": 5, "remember": false},
    ]});
    std::fs::write(&chain_file, chain.to_string()).unwrap();
    let out = cli(&d, &["plugins", "set", chain_file.to_str().unwrap()])
        .await
        .unwrap();
    assert!(
        out.starts_with("plugin chain set: filter, secret (revision "),
        "{out}"
    );
    let (stored, _) = stored_chain(&env, "clichain").await.unwrap();
    assert_eq!(stored.chain.len(), 2);
    assert_eq!(stored.chain[0].module, filter);
    assert_eq!(
        serde_json::from_str::<Value>(&stored.chain[0].settings.config).unwrap(),
        json!({"deny": ["flushall", "keys"], "message": "NOPERM nope"})
    );
    assert_eq!(stored.chain[1].module, secret);
    assert_eq!(stored.chain[1].settings.timeout_ms, 5);
    assert!(stored.chain[0].settings.remember && !stored.chain[1].settings.remember);

    let out = cli(&d, &["plugins"]).await.unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[1].starts_with("NAME    MODULE        FAIL    MEMORY  TIMEOUT  REMEMBER  CONFIG"),
        "{out}"
    );
    let stored_config = &stored.chain[0].settings.config;
    assert_eq!(
        lines[2],
        format!(
            "filter  {}  closed  16 MiB  10 ms    yes       ******** ({} bytes, sha256 {})",
            &filter[..12],
            stored_config.len(),
            &sha256_hex(stored_config.as_bytes())[..12]
        ),
        "{out}"
    );
    // With the token, `--full` shows the configs (one line, cut at 40 characters).
    let full = cli(&d, &["plugins", "show", "--full"]).await.unwrap();
    let full_line = full.lines().nth(2).unwrap();
    assert!(
        full_line.ends_with(r#"{"deny":["flushall","keys"],"message":"…"#),
        "{full}"
    );
    assert!(
        lines[3].starts_with(&format!(
            "secret  {}  closed  16 MiB  5 ms     no        -",
            &secret[..12]
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!("{filter}  {}", module("command_filter").len())),
        "{out}"
    );
    let json: Value =
        serde_json::from_str(&cli(&d, &["plugins", "--json"]).await.unwrap()).unwrap();
    assert_eq!(json["chain"][1]["name"], "secret");

    // A refused chain: the API's message, the old chain stays.
    let bad = files.path().join("bad.json");
    std::fs::write(
        &bad,
        json!({"chain": [{"name": "filter", "path": "modules/filter.wasm", "config": "not json"}]})
            .to_string(),
    )
    .unwrap();
    match cli(&d, &["plugins", "set", bad.to_str().unwrap()]).await {
        Err(AdminError::Api {
            status: 400,
            message,
        }) => assert!(message.contains("plugin 'filter'"), "{message}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(stored_chain(&env, "clichain").await.unwrap().0, stored);
    // Files the CLI refuses before calling.
    std::fs::write(&bad, r#"{"chain": [{"name": "f"}]}"#).unwrap();
    match cli(&d, &["plugins", "set", bad.to_str().unwrap()]).await {
        Err(AdminError::Usage(m)) => assert!(m.contains("plugin 'f': give `path`"), "{m}"),
        other => panic!("{other:?}"),
    }
    std::fs::write(
        &bad,
        r#"{"chain": [{"name": "f", "path": "missing.wasm"}]}"#,
    )
    .unwrap();
    match cli(&d, &["plugins", "set", bad.to_str().unwrap()]).await {
        Err(AdminError::Usage(m)) => assert!(m.contains("missing.wasm"), "{m}"),
        other => panic!("{other:?}"),
    }
    // A module that is not WebAssembly, named in the error.
    std::fs::write(files.path().join("junk.wasm"), b"junk").unwrap();
    std::fs::write(&bad, r#"{"chain": [{"name": "j", "path": "junk.wasm"}]}"#).unwrap();
    match cli(&d, &["plugins", "set", bad.to_str().unwrap()]).await {
        Err(AdminError::Api {
            status: 400,
            message,
        }) => {
            assert!(message.starts_with("plugin 'j' ("), "{message}");
            assert!(
                message.contains("not a valid WebAssembly module"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }

    // A used module cannot be deleted; cleared, it can.
    match cli(&d, &["plugins", "delete-module", &secret]).await {
        Err(AdminError::Api {
            status: 409,
            message,
        }) => assert!(message.contains("'secret'"), "{message}"),
        other => panic!("{other:?}"),
    }
    let out = cli(&d, &["plugins", "clear"]).await.unwrap();
    assert!(out.starts_with("plugin chain cleared (revision "), "{out}");
    let out = cli(&d, &["plugins", "delete-module", &secret])
        .await
        .unwrap();
    assert!(
        out.starts_with(&format!("module {secret} deleted")),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_configs_are_masked_in_read_views() {
    let env = env().await;
    let d = Arc::new(dashboard(&env, "masked").await);
    let acl = sha256_hex(&module("acl_auth"));
    let (status, v) = upload(&d, module("acl_auth")).await;
    assert_eq!(status, 200, "{v}");
    let hash = "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b";
    let config = format!(
        r#"{{"users": {{"alice": {{"password": "sha256:{hash}", "commands": ["get"], "keys": ["*"]}}}}}}"#
    );
    let (status, v) = put_chain(
        &d,
        json!([{"name": "acl", "module": acl, "config": config, "timeout_ms": 50}]),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert!(!v.to_string().contains(hash), "{v}");

    // Without a token: the chain, each config masked, with its size and fingerprint.
    let v = get_plugins(&d).await;
    assert!(!v.to_string().contains(hash), "{v}");
    assert_eq!(
        v["chain"],
        json!([{"name": "acl", "module": acl, "config": "********", "config_bytes": config.len(),
                "config_sha256": sha256_hex(config.as_bytes()), "fail": "closed",
                "memory_limit_mb": 16, "timeout_ms": 50, "remember": true}])
    );
    // The full configs need the token.
    let (status, v) = http(&d, "GET", "/api/plugins?full=1", None, Body::None).await;
    assert_eq!(status, 401, "{v}");
    assert!(error(&v).starts_with("missing or wrong admin token"), "{v}");
    let (status, v) = http(&d, "GET", "/api/plugins?full=1", Some(TOKEN), Body::None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["chain"][0]["config"], config);

    // `tessera admin plugins` shows the mask, even with the token.
    let out = cli(&d, &["plugins"]).await.unwrap();
    assert!(!out.contains(hash), "{out}");
    let fingerprint = &sha256_hex(config.as_bytes())[..12];
    let cell = format!("******** ({} bytes, sha256 {fingerprint})", config.len());
    assert!(out.contains(&cell), "{out}");
    // `plugins show --full` asks for them (with the token).
    let out = cli(&d, &["plugins", "show", "--full", "--json"])
        .await
        .unwrap();
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["chain"][0]["config"], config);
}
