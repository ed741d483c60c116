//! Hot reload against the real binary: adapters swapped by dropping files (watched),
//! config re-read on SIGHUP and on the admin endpoint, bad files and configs rejected with
//! the previous version still serving, and a reload storm under load with zero failures.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{ChatdProcess, component};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

const ADMIN_TOKEN: &str = "admin-token-for-tests-5521";

fn config(upstream: &str, extra: &str) -> String {
    format!(
        r#"
        [chatd]
        default_provider = "echo"
        timeout_secs = 5
        adapters_dir = "{{dir}}/adapters"
        [chatd.admin]
        enabled = true
        token_env = "CHATD_TEST_ADMIN_TOKEN"
        [chatd.providers.echo]
        adapter = "echo"
        base_url = "{upstream}"
        {extra}
        "#
    )
}

async fn upstream() -> MockServer {
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_string("{}"))
        .mount(&upstream)
        .await;
    upstream
}

/// Deploys a component the way operators should: write a temp file, rename it into place.
fn deploy(dir: &Path, name: &str, bytes: &[u8]) {
    let tmp = dir.join(format!(".{name}.wasm.tmp"));
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, dir.join(format!("{name}.wasm"))).unwrap();
}

/// Deploys the echo fixture of `version` ("v1" or "v2") as `echo.wasm`.
fn deploy_echo(dir: &Path, version: &str) {
    let fixture = component(&format!("chatd-fixture-echo_{version}"));
    deploy(dir, "echo", &std::fs::read(fixture).unwrap());
}

fn start(upstream: &MockServer, extra: &str) -> (ChatdProcess, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let adapters = dir.path().join("adapters");
    std::fs::create_dir(&adapters).unwrap();
    std::fs::copy(
        component("chatd-fixture-echo_v1"),
        adapters.join("echo.wasm"),
    )
    .unwrap();
    let text = config(&upstream.uri(), extra).replace("{dir}", dir.path().to_str().unwrap());
    let config_path = dir.path().join("lakehouse.toml");
    std::fs::write(&config_path, text).unwrap();
    let chatd = ChatdProcess::start_with(
        dir,
        &config_path,
        &[("CHATD_TEST_ADMIN_TOKEN", ADMIN_TOKEN)],
    );
    chatd.wait_for_log("watching adapters_dir", Duration::from_secs(30));
    (chatd, adapters)
}

async fn content(client: &reqwest::Client, chatd: &ChatdProcess) -> (u16, String) {
    let resp = client
        .post(format!("{}/v1/chat", chatd.url))
        .json(&json!({"model": "echo/m", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap();
    // A failure says what it was (its error), so a failed assertion names the cause.
    let text = body["content"]
        .as_str()
        .map_or_else(|| body["error"].to_string(), str::to_owned);
    (status, text)
}

async fn wait_for_content(client: &reqwest::Client, chatd: &ChatdProcess, want: &str) -> Duration {
    let start = Instant::now();
    loop {
        let (status, got) = content(client, chatd).await;
        assert_eq!(status, 200);
        if got == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "never switched to {want:?}; logs:\n{}",
            chatd.logs()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn admin(
    chatd: &ChatdProcess,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new().request(method, format!("{}{path}", chatd.url));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn dropping_a_new_file_swaps_the_adapter_and_a_bad_file_is_rejected() {
    let upstream = upstream().await;
    let (chatd, adapters) = start(&upstream, "");
    let client = reqwest::Client::new();
    assert_eq!(content(&client, &chatd).await, (200, "echo v1".to_owned()));

    deploy_echo(&adapters, "v2");
    let took = wait_for_content(&client, &chatd, "echo v2").await;
    eprintln!("file renamed into place -> new version serving: {took:?}");
    chatd.wait_for_log(
        r#"swapped=["echo 1.0.0 -> 2.0.0"]"#,
        Duration::from_secs(30),
    );
    let (_, providers) = admin(&chatd, reqwest::Method::GET, "/v1/chat/providers", None).await;
    let adapter = &providers["providers"][0]["adapter"];
    assert_eq!(adapter["version"], "2.0.0");
    assert!(adapter["last_error"].is_null());
    let v2_hash = adapter["sha256"].as_str().unwrap().to_owned();

    // A garbage file is rejected; v2 keeps serving and the error is visible in the API.
    deploy(&adapters, "echo", b"definitely not wasm");
    chatd.wait_for_log("adapter rejected", Duration::from_secs(30));
    assert_eq!(content(&client, &chatd).await, (200, "echo v2".to_owned()));
    let (_, providers) = admin(&chatd, reqwest::Method::GET, "/v1/chat/providers", None).await;
    let adapter = &providers["providers"][0]["adapter"];
    assert_eq!(adapter["sha256"], v2_hash.as_str());
    assert!(
        adapter["last_error"]["message"]
            .as_str()
            .unwrap()
            .contains("not a valid WebAssembly component"),
        "{adapter}"
    );

    // A wrong contract version is rejected the same way.
    deploy(
        &adapters,
        "echo",
        &std::fs::read(component("chatd-fixture-future_contract")).unwrap(),
    );
    support::eventually(
        "the 9.0.0 file to be rejected",
        Duration::from_secs(30),
        || chatd.logs().contains("unsupported contract version 9.0.0"),
    )
    .await;
    assert_eq!(content(&client, &chatd).await, (200, "echo v2".to_owned()));

    // Back to a valid file: serving v1, error cleared.
    deploy_echo(&adapters, "v1");
    wait_for_content(&client, &chatd, "echo v1").await;
    let (_, providers) = admin(&chatd, reqwest::Method::GET, "/v1/chat/providers", None).await;
    assert!(providers["providers"][0]["adapter"]["last_error"].is_null());
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_rereads_the_config_and_rejects_a_broken_one() {
    let upstream = upstream().await;
    let (chatd, _adapters) = start(&upstream, "");
    let config_path = chatd.dir.path().join("lakehouse.toml");
    let client = reqwest::Client::new();

    // Add a provider and re-point the default tier: no restart.
    let extra = format!(
        "[chatd.providers.second]\nadapter = \"ollama\"\nbase_url = \"{}\"\n",
        upstream.uri()
    );
    std::fs::write(
        &config_path,
        config(&upstream.uri(), &extra).replace("{dir}", chatd.dir.path().to_str().unwrap()),
    )
    .unwrap();
    chatd.signal("HUP");
    support::eventually(
        "the new provider to register",
        Duration::from_secs(30),
        || chatd.logs().contains("trigger=\"SIGHUP\""),
    )
    .await;
    let resp: Value = client
        .get(format!("{}/v1/chat/providers", chatd.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = resp["providers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["echo", "second"]);

    // A broken config is rejected whole; the running one stays.
    std::fs::write(&config_path, "[chatd]\ntimeout_secs = \"never\"\n").unwrap();
    chatd.signal("HUP");
    support::eventually(
        "the broken config to be rejected",
        Duration::from_secs(30),
        || chatd.logs().contains("reload rejected"),
    )
    .await;
    assert_eq!(content(&client, &chatd).await, (200, "echo v1".to_owned()));
    let (status, body) = admin(
        &chatd,
        reqwest::Method::GET,
        "/v1/admin/adapters",
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["last_reload"]["ok"], false);
    // Out of the default 1000 slots, at most the instance of the request just answered is
    // still alive (it is released just after its response is written).
    assert_eq!(body["instances"]["max"], 1000, "{body}");
    assert!(
        body["instances"]["in_use"].as_u64().is_some_and(|n| n <= 1),
        "{body}"
    );
    assert!(
        body["last_reload"]["error"]
            .as_str()
            .unwrap()
            .contains("timeout_secs"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_only_setting_is_compared_with_what_runs() {
    let upstream = upstream().await;
    // `threads` sits in [chatd]: the extra lines go after the provider table, so the
    // setting is given by rewriting the file's head.
    let with_threads = |n: u32| {
        config(&upstream.uri(), "").replacen("[chatd]\n", &format!("[chatd]\nthreads = {n}\n"), 1)
    };
    let (chatd, _adapters) = start(&upstream, "");
    let config_path = chatd.dir.path().join("lakehouse.toml");
    let dir = chatd.dir.path().to_str().unwrap().to_owned();
    let reload = |n: u32, count: usize| {
        std::fs::write(&config_path, with_threads(n).replace("{dir}", &dir)).unwrap();
        chatd.signal("HUP");
        let chatd = &chatd;
        async move {
            support::eventually("the reload", Duration::from_secs(30), || {
                chatd.logs().matches("trigger=\"SIGHUP\"").count() == count
            })
            .await
        }
    };
    let running = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    let other = running + 1;
    reload(other, 1).await;
    let warned = |logs: &str| logs.matches("chatd.threads changed").count();
    assert_eq!(warned(&chatd.logs()), 1, "{}", chatd.logs());
    assert!(
        chatd
            .logs()
            .contains(&format!("running={running} new={other}")),
        "{}",
        chatd.logs()
    );
    // Back to what runs: nothing to warn about, though the last file said otherwise.
    reload(running, 2).await;
    assert_eq!(warned(&chatd.logs()), 1, "{}", chatd.logs());
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_endpoints_need_the_bearer_token() {
    let upstream = upstream().await;
    let (mut chatd, _adapters) = start(&upstream, "");
    let post = reqwest::Method::POST;
    let (status, body) = admin(&chatd, post.clone(), "/v1/admin/reload", None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    let (status, body) = admin(&chatd, post.clone(), "/v1/admin/reload", Some("wrong")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );
    let (status, body) = admin(&chatd, post, "/v1/admin/reload", Some(ADMIN_TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ok"], true);
    assert_eq!(body["providers"], json!(["echo"]));

    // Every loaded adapter is listed, used or not, with where it came from.
    let (status, body) = admin(
        &chatd,
        reqwest::Method::GET,
        "/v1/admin/adapters",
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(status, 200);
    let adapters = body["adapters"].as_array().unwrap();
    let names: Vec<&str> = adapters
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["echo", "ollama", "ollama_cloud", "openai_compat"]);
    assert_eq!(adapters[0]["used_by"], json!(["echo"]));
    assert_eq!(adapters[1]["used_by"], json!([]));
    assert!(
        adapters[0]["source"]
            .as_str()
            .unwrap()
            .ends_with("echo.wasm")
    );
    let logs = chatd.stop();
    assert!(
        logs.contains("reloaded") && !logs.contains(ADMIN_TOKEN),
        "{logs}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_endpoints_are_off_unless_enabled() {
    let upstream = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[chatd]\n[chatd.providers.ollama]\nadapter = \"ollama\"\nbase_url = \"{}\"\n",
        upstream.uri()
    );
    let path = dir.path().join("lakehouse.toml");
    std::fs::write(&path, text).unwrap();
    let chatd = ChatdProcess::start_with(dir, &path, &[("CHATD_ADMIN_TOKEN", ADMIN_TOKEN)]);
    let (status, body) = admin(
        &chatd,
        reqwest::Method::POST,
        "/v1/admin/reload",
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(status, 404);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("disabled")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn reload_storm_under_load_loses_no_request() {
    let upstream = upstream().await;
    let (chatd, adapters) = start(&upstream, "");
    let chatd = Arc::new(chatd);
    let v1 = std::fs::read(component("chatd-fixture-echo_v1")).unwrap();
    let v2 = std::fs::read(component("chatd-fixture-echo_v2")).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let seen_v1 = Arc::new(AtomicUsize::new(0));
    let seen_v2 = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..32 {
        let (chatd, stop, seen_v1, seen_v2) = (
            chatd.clone(),
            stop.clone(),
            seen_v1.clone(),
            seen_v2.clone(),
        );
        workers.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let (status, got) = content(&client, &chatd).await;
                match (status, got.as_str()) {
                    (200, "echo v1") => seen_v1.fetch_add(1, Ordering::Relaxed),
                    (200, "echo v2") => seen_v2.fetch_add(1, Ordering::Relaxed),
                    _ => {
                        failures.push(format!("{status} {got}"));
                        0
                    }
                };
            }
            failures
        }));
    }

    // Twenty swaps between two valid versions, with an invalid file (garbage, or a
    // truncated component as a half-finished copy would leave) between each pair.
    for round in 0..20 {
        let valid = if round % 2 == 0 { &v2 } else { &v1 };
        let invalid: Vec<u8> = if round % 2 == 0 {
            b"garbage".to_vec()
        } else {
            valid[..valid.len() / 2].to_vec()
        };
        deploy(&adapters, "echo", &invalid);
        tokio::time::sleep(Duration::from_millis(400)).await;
        deploy(&adapters, "echo", valid);
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    // The last valid deploy was v1; wait until it serves before stopping the load.
    let client = reqwest::Client::new();
    wait_for_content(&client, &chatd, "echo v1").await;
    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    for w in workers {
        failures.extend(w.await.unwrap());
    }
    let (v1n, v2n) = (
        seen_v1.load(Ordering::Relaxed),
        seen_v2.load(Ordering::Relaxed),
    );
    eprintln!(
        "reload storm: {} requests ({v1n} v1, {v2n} v2), {} failed",
        v1n + v2n + failures.len(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "failed requests during reloads: {:?}",
        &failures[..failures.len().min(10)]
    );
    assert!(
        v1n + v2n >= 2000,
        "too little load to prove anything: {}",
        v1n + v2n
    );
    assert!(v1n > 0 && v2n > 0, "responses switched between versions");
    let mut chatd = Arc::into_inner(chatd).expect("the workers are done with chatd");
    let reloads = chatd.stop().matches("reloaded").count();
    assert!(reloads >= 20, "expected a reload per deploy, saw {reloads}");
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_an_adapter_file_unregisters_its_provider_without_blocking_reloads() {
    let upstream = upstream().await;
    let (chatd, adapters) = start(&upstream, "");
    let client = reqwest::Client::new();
    assert_eq!(content(&client, &chatd).await.0, 200);

    std::fs::remove_file(adapters.join("echo.wasm")).unwrap();
    support::eventually(
        "the provider to be unregistered",
        Duration::from_secs(30),
        || {
            chatd
                .logs()
                .contains("unknown adapter \"echo\": no built-in of that name and no echo.wasm")
        },
    )
    .await;
    let (status, _) = content(&client, &chatd).await;
    assert_eq!(status, 404);
    chatd.wait_for_log(r#"removed=["echo"]"#, Duration::from_secs(30));

    // Later deploys still take effect.
    deploy_echo(&adapters, "v2");
    let start = Instant::now();
    while content(&client, &chatd).await != (200, "echo v2".to_owned()) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "redeploy never served:\n{}",
            chatd.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    chatd.wait_for_log(r#"swapped=["echo 2.0.0 (new)"]"#, Duration::from_secs(30));
}

#[tokio::test(flavor = "multi_thread")]
async fn replacing_adapters_dir_is_followed_without_a_signal() {
    // Release-style deploys swap the whole directory (rename a new one over it, or switch
    // a symlink): the watch on the old directory sees nothing of it.
    let upstream = upstream().await;
    let (chatd, adapters) = start(&upstream, "");
    let client = reqwest::Client::new();
    wait_for_content(&client, &chatd, "echo v1").await;

    let release = adapters.with_file_name("release-2");
    std::fs::create_dir(&release).unwrap();
    deploy_echo(&release, "v2");
    std::fs::rename(&adapters, adapters.with_file_name("release-1")).unwrap();
    std::fs::rename(&release, &adapters).unwrap();
    wait_for_content(&client, &chatd, "echo v2").await;

    // The new directory is the one watched now.
    deploy_echo(&adapters, "v1");
    wait_for_content(&client, &chatd, "echo v1").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_adapters_dir_created_after_start_is_loaded_and_watched() {
    let upstream = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let adapters = dir.path().join("adapters");
    let text = config(&upstream.uri(), "").replace("{dir}", dir.path().to_str().unwrap());
    let config_path = dir.path().join("lakehouse.toml");
    std::fs::write(&config_path, text).unwrap();
    // Without its adapter file the default provider is unregistered, but chatd serves.
    let chatd = ChatdProcess::start_with(dir, &config_path, &[]);
    chatd.wait_for_log("adapters_dir does not exist (yet)", Duration::from_secs(30));
    let client = reqwest::Client::new();
    assert_eq!(content(&client, &chatd).await.0, 404);

    let staging = adapters.with_file_name("staging");
    std::fs::create_dir(&staging).unwrap();
    deploy_echo(&staging, "v1");
    std::fs::rename(&staging, &adapters).unwrap();
    support::eventually("echo to register", Duration::from_secs(30), || {
        chatd.logs().contains("adapters_dir replaced")
    })
    .await;
    wait_for_content(&client, &chatd, "echo v1").await;
    deploy_echo(&adapters, "v2");
    wait_for_content(&client, &chatd, "echo v2").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rebuild_with_the_same_version_is_told_apart_by_its_hash() {
    let upstream = upstream().await;
    let (chatd, adapters) = start(&upstream, "");
    // The same component with a custom section appended: another file, the same version.
    let mut rebuilt = std::fs::read(component("chatd-fixture-echo_v1")).unwrap();
    rebuilt.extend_from_slice(&[0, 6, 5, b'b', b'u', b'i', b'l', b'd']);
    deploy(&adapters, "echo", &rebuilt);
    chatd.wait_for_log(r#"swapped=["echo 1.0.0 (sha256 "#, Duration::from_secs(30));
    let line = chatd
        .logs()
        .lines()
        .find(|l| l.contains("echo 1.0.0 (sha256 "))
        .unwrap()
        .to_owned();
    assert!(line.contains(" -> "), "{line}");
    assert_eq!(content(&reqwest::Client::new(), &chatd).await.0, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rejected_file_is_not_validated_again_until_it_changes() {
    let upstream = upstream().await;
    let (chatd, adapters) = start(&upstream, "");
    deploy(&adapters, "echo", b"\0asm not a component");
    chatd.wait_for_log("adapter rejected", Duration::from_secs(30));
    for _ in 0..3 {
        let (status, body) = admin(
            &chatd,
            reqwest::Method::POST,
            "/v1/admin/reload",
            Some(ADMIN_TOKEN),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body["rejected"][0]["adapter"], "echo",
            "still reported: {body}"
        );
    }
    assert_eq!(chatd.logs().matches("adapter rejected").count(), 1);
    // The previous version still serves; a changed file is validated again.
    assert_eq!(content(&reqwest::Client::new(), &chatd).await.0, 200);
    deploy(&adapters, "echo", b"\0asm another broken build");
    support::eventually(
        "the new file to be rejected",
        Duration::from_secs(30),
        || chatd.logs().matches("adapter rejected").count() == 2,
    )
    .await;
}
