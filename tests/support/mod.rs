//! Shared test support: an in-process gateway over the real adapters, the real `chatd`
//! binary as a child process, fixture components, and a scripted raw-TCP upstream for
//! stream edge cases that an HTTP mock cannot express.
#![allow(dead_code)] // each test binary uses a different subset

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use chatd::config::Config;
use chatd::gateway::Gateway;
use chatd::runtime::library::AdapterSet;
use chatd::runtime::{Runtime, RuntimeConfig};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// One runtime with the built-in adapters compiled, shared by every in-process test of a
/// test binary (compiling components per test would dominate the suite's time).
pub fn shared_runtime() -> &'static (Runtime, AdapterSet) {
    static SHARED: OnceLock<(Runtime, AdapterSet)> = OnceLock::new();
    SHARED.get_or_init(|| {
        std::thread::spawn(|| {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async {
                let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
                let set = AdapterSet::load(&runtime, None, &AdapterSet::default()).await;
                (runtime, set)
            })
        })
        .join()
        .unwrap()
    })
}

/// A gateway serving the real router on an ephemeral loopback port, in this process.
pub struct TestGateway {
    pub url: String,
    pub gateway: Arc<Gateway>,
    pub dir: tempfile::TempDir,
    client: reqwest::Client,
}

impl TestGateway {
    /// Starts a gateway from config text. `{dir}` in the text is replaced by a fresh temp
    /// directory (for key files and adapter directories). Unless `adapters_dir` exists, the
    /// shared built-in adapters are reused.
    pub async fn start(config_text: &str) -> TestGateway {
        Self::start_with_files(config_text, &[]).await
    }

    /// Like [`TestGateway::start`], first writing `files` (name, contents) into the temp dir.
    pub async fn start_with_files(config_text: &str, files: &[(&str, &[u8])]) -> TestGateway {
        let dir = tempfile::tempdir().unwrap();
        for (name, contents) in files {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, contents).unwrap();
        }
        let text = config_text.replace("{dir}", dir.path().to_str().unwrap());
        let path = dir.path().join("lakehouse.toml");
        std::fs::write(&path, &text).unwrap();
        let config = Config::load(&path).unwrap();
        let gateway = if config
            .chatd
            .adapters_dir
            .as_ref()
            .is_some_and(|d| d.exists())
        {
            Gateway::start(config).await.unwrap()
        } else {
            let (runtime, adapters) = shared_runtime();
            Gateway::from_parts(config, runtime.clone(), adapters.clone())
                .await
                .unwrap()
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(chatd::api::serve(
            listener,
            gateway.clone(),
            std::future::pending(),
        ));
        TestGateway {
            url: format!("http://{addr}"),
            gateway,
            dir,
            client: loopback_client(),
        }
    }

    /// POSTs JSON; returns status, headers and the body parsed as JSON.
    pub async fn post(&self, path: &str, body: Value) -> (u16, reqwest::header::HeaderMap, Value) {
        post_json(&self.client, &format!("{}{path}", self.url), body).await
    }

    /// POSTs raw bytes with a content type.
    pub async fn post_raw(&self, path: &str, body: Vec<u8>) -> (u16, Value) {
        let resp = self
            .client
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap())
    }

    /// GETs JSON.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let resp = self
            .client
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap())
    }

    /// GETs text (e.g. `/metrics`).
    pub async fn client_get_text(&self, path: &str) -> String {
        let resp = self
            .client
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap();
        resp.text().await.unwrap()
    }

    /// POSTs and returns the raw streamed body split into lines, plus the status and
    /// content type.
    /// Sends `POST path` with a JSON body and returns the response unread (for tests that read
    /// a stream chunk by chunk or look at headers first).
    pub async fn send(&self, path: &str, body: Value) -> reqwest::Response {
        self.client
            .post(format!("{}{path}", self.url))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub async fn post_stream(&self, path: &str, body: Value) -> (u16, String, Vec<String>) {
        let resp = self.send(path, body).await;
        let status = resp.status().as_u16();
        let ct = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let text = resp.text().await.unwrap();
        (status, ct, text.lines().map(str::to_owned).collect())
    }

    /// A chat request body for `/v1/chat`.
    pub fn chat(model: &str) -> Value {
        serde_json::json!({"model": model, "messages": [{"role": "user", "content": "hello"}]})
    }

    /// Writes a file into the gateway's temp dir and returns its path.
    pub fn write(&self, name: &str, contents: &[u8]) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, contents).unwrap();
        p
    }
}

/// The JSON payloads of an SSE body (`data:` lines), `[DONE]` included as a string.
pub fn sse_data(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap_or(Value::String(d.to_owned())))
        .collect()
}

/// Builds wasm test fixture components (and non-built-in plugins) once per test binary
/// and returns the path of `<crate>`'s component. Uses the same target directory as the
/// built-in adapters, so shared dependencies are compiled once.
pub fn component(package: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    let target = workspace().join("target").join("adapters");
    BUILT.get_or_init(|| {
        let packages = fixture_packages();
        let mut cmd = Command::new(env!("CARGO"));
        cmd.current_dir(workspace())
            .args([
                "build",
                "--quiet",
                "--target",
                "wasm32-wasip2",
                "--profile",
                "adapter",
                "--target-dir",
            ])
            .arg(&target);
        for p in &packages {
            cmd.args(["-p", p]);
        }
        let status = cmd.status().expect("running cargo to build fixtures");
        assert!(status.success(), "building fixture components failed");
    });
    let path = target
        .join("wasm32-wasip2/adapter")
        .join(format!("{}.wasm", package.replace('-', "_")));
    assert!(path.exists(), "no component at {}", path.display());
    path
}

fn fixture_packages() -> Vec<String> {
    let mut packages = vec!["chatd-adapter-anthropic".to_owned()];
    let dir = workspace().join("tests/fixtures");
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        let manifest = entry.path().join("Cargo.toml");
        if let Ok(text) = std::fs::read_to_string(&manifest) {
            let name = text
                .lines()
                .find_map(|l| l.strip_prefix("name = \""))
                .and_then(|l| l.strip_suffix('"'))
                .unwrap()
                .to_owned();
            packages.push(name);
        }
    }
    packages.sort();
    packages
}

/// The real `chatd` binary, serving a config on an ephemeral port. Killed on drop.
pub struct ChatdProcess {
    pub url: String,
    pub addr: SocketAddr,
    pub child: Child,
    pub dir: tempfile::TempDir,
    log: PathBuf,
}

impl ChatdProcess {
    /// Starts `chatd serve` with config text (`{dir}` → a temp dir) and extra environment.
    pub fn start(config_text: &str, env: &[(&str, &str)]) -> ChatdProcess {
        let dir = tempfile::tempdir().unwrap();
        let text = config_text.replace("{dir}", dir.path().to_str().unwrap());
        let config = dir.path().join("lakehouse.toml");
        std::fs::write(&config, text).unwrap();
        Self::start_with(dir, &config, env)
    }

    /// Starts `chatd serve` on an existing config file.
    pub fn start_with(dir: tempfile::TempDir, config: &Path, env: &[(&str, &str)]) -> ChatdProcess {
        let log = dir.path().join("chatd.log");
        let log_file = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_chatd"));
        cmd.args(["serve", "--bind", "127.0.0.1:0", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log_file);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawning chatd");
        let addr = wait_for_listen(&log, Duration::from_secs(60));
        ChatdProcess {
            url: format!("http://{addr}"),
            addr,
            child,
            dir,
            log,
        }
    }

    /// POSTs JSON to the running binary; returns the status and the body parsed as JSON.
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let (status, _, json) =
            post_json(&loopback_client(), &format!("{}{path}", self.url), body).await;
        (status, json)
    }

    /// Everything chatd has written to its log so far. Info lines reach the file in batches
    /// (up to 50 ms late); to check what was *not* logged, use [`ChatdProcess::stop`].
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops chatd the way an operator does (SIGTERM), waits for it to exit and returns its
    /// complete log, every buffered line written out.
    pub fn stop(&mut self) -> String {
        self.signal("TERM");
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "chatd exited with {status}:\n{}",
                    self.logs()
                );
                return self.logs();
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "chatd did not stop:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends a signal to the process.
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits until the log contains `needle` (or panics after `timeout`).
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) {
        let start = Instant::now();
        while !self.logs().contains(needle) {
            assert!(
                start.elapsed() < timeout,
                "log never showed {needle:?}:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ChatdProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for_listen(log: &Path, timeout: Duration) -> SocketAddr {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains("chatd listening")) {
            let addr = line
                .split("addr=")
                .nth(1)
                .unwrap()
                .split_whitespace()
                .next()
                .unwrap();
            return addr.parse().unwrap();
        }
        assert!(start.elapsed() < timeout, "chatd did not start:\n{text}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A client for chatd on loopback: it ignores proxy variables, whatever a test sets.
fn loopback_client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// POSTs JSON; returns status, headers and the body parsed as JSON.
async fn post_json(
    client: &reqwest::Client,
    url: &str,
    body: Value,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let resp = client.post(url).json(&body).send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap();
    let json =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("non-JSON body ({e}): {text}"));
    (status, headers, json)
}

/// Runs `chatd <args>` to completion with extra environment (and `RUST_LOG=error`); returns
/// the exit code and stdout followed by stderr.
pub fn run_chatd(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_chatd"))
        .args(args)
        .env("RUST_LOG", "error")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// Blocking HTTP/1.1 request to the real binary; returns status and body.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let body = body.unwrap_or("");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nhost: chatd\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        req.push_str("content-type: application/json\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    stream.write_all(req.as_bytes()).unwrap();
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).unwrap();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let mut chunked = false;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if line
            .to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
        {
            chunked = true;
        }
    }
    let mut raw = Vec::new();
    reader.read_to_end(&mut raw).unwrap();
    let text = if chunked {
        dechunk(&raw)
    } else {
        String::from_utf8_lossy(&raw).into_owned()
    };
    (status, text)
}

fn dechunk(raw: &[u8]) -> String {
    let mut out = Vec::new();
    let mut rest = raw;
    while let Some(pos) = rest.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(std::str::from_utf8(&rest[..pos]).unwrap().trim(), 16)
            .unwrap_or(0);
        if size == 0 {
            break;
        }
        out.extend_from_slice(&rest[pos + 2..pos + 2 + size]);
        rest = &rest[pos + 2 + size + 2..];
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One step of a scripted upstream response.
#[derive(Debug, Clone)]
pub enum Step {
    /// Write these bytes as one chunk of a chunked body.
    Chunk(Vec<u8>),
    /// Wait.
    Sleep(Duration),
    /// Close the connection without finishing the chunked body (a truncated stream).
    Abort,
    /// Stop writing but keep the connection open (an upstream that never finishes).
    Hang,
}

/// What the scripted upstream observed.
#[derive(Debug, Default)]
pub struct Observed {
    /// The raw request head and body of each connection's first request.
    pub requests: Vec<String>,
    /// Set when a write failed because the client (chatd) closed the connection.
    pub client_closed: bool,
}

/// A raw TCP upstream that answers every request with `200` + a chunked body written step by
/// step, so tests control exactly where the body is split and when.
pub struct ScriptedUpstream {
    pub addr: SocketAddr,
    pub observed: Arc<std::sync::Mutex<Observed>>,
}

impl ScriptedUpstream {
    /// Starts serving `steps` with the given content type to every connection.
    pub async fn start(content_type: &'static str, steps: Vec<Step>) -> ScriptedUpstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let observed = Arc::new(std::sync::Mutex::new(Observed::default()));
        let obs = observed.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let steps = steps.clone();
                let obs = obs.clone();
                tokio::spawn(async move {
                    let request = read_request(&mut sock).await;
                    obs.lock().unwrap().requests.push(request);
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ntransfer-encoding: chunked\r\n\r\n"
                    );
                    if sock.write_all(head.as_bytes()).await.is_err() {
                        return;
                    }
                    for step in steps {
                        match step {
                            Step::Chunk(bytes) => {
                                let mut frame = format!("{:x}\r\n", bytes.len()).into_bytes();
                                frame.extend_from_slice(&bytes);
                                frame.extend_from_slice(b"\r\n");
                                if sock.write_all(&frame).await.is_err()
                                    || sock.flush().await.is_err()
                                {
                                    obs.lock().unwrap().client_closed = true;
                                    return;
                                }
                            }
                            Step::Sleep(d) => tokio::time::sleep(d).await,
                            Step::Abort => return,
                            Step::Hang => {
                                // Wait until the client hangs up; record that it did.
                                let mut buf = [0u8; 64];
                                loop {
                                    match sock.read(&mut buf).await {
                                        Ok(0) | Err(_) => {
                                            obs.lock().unwrap().client_closed = true;
                                            return;
                                        }
                                        Ok(_) => {}
                                    }
                                }
                            }
                        }
                    }
                    let _ = sock.write_all(b"0\r\n\r\n").await;
                });
            }
        });
        ScriptedUpstream { addr, observed }
    }

    /// Base URL of the upstream.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Reads one HTTP/1.1 request (head, and the body its content-length announces) as text.
pub async fn read_request<S: tokio::io::AsyncRead + Unpin>(sock: &mut S) -> String {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    while let Ok(n) = sock.read(&mut tmp).await {
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&tmp[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                break;
            }
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// Polls `cond` until true or panics after `timeout`.
pub async fn eventually(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
