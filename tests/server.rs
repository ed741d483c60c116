//! Client connections: how long chatd waits for a client, and how it shuts down.

mod support;

use std::time::Duration;

use chatd::config::Config;
use chatd::gateway::Gateway;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bounds every wait below so a regression fails instead of hanging the suite; far above
/// the 1 s client timeout the tests configure.
const GUARD: Duration = Duration::from_secs(20);

/// A gateway on an ephemeral port with the given client timeout and shutdown grace; the
/// returned sender shuts it down, and the handle finishes when `serve` returns.
async fn start(
    client_timeout_secs: u64,
    grace_secs: u64,
) -> (
    String,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
    tempfile::TempDir,
) {
    start_with_upstream(client_timeout_secs, grace_secs, "http://127.0.0.1:9", "").await
}

/// Like [`start`], with the `ollama` provider at `upstream` and `extra` lines in `[chatd]`.
async fn start_with_upstream(
    client_timeout_secs: u64,
    grace_secs: u64,
    upstream: &str,
    extra: &str,
) -> (
    String,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lakehouse.toml");
    std::fs::write(
        &path,
        format!(
            "[chatd]\nclient_timeout_secs = {client_timeout_secs}\n\
             shutdown_grace_secs = {grace_secs}\n{extra}\n\
             adapters_dir = \"\"\n\
             [chatd.providers.ollama]\nadapter = \"ollama\"\nbase_url = \"{upstream}\"\n"
        ),
    )
    .unwrap();
    let config = Config::load(&path).unwrap();
    let (runtime, adapters) = support::shared_runtime();
    let gateway = Gateway::from_parts(config, runtime.clone(), adapters.clone())
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(chatd::api::serve(listener, gateway, async {
        let _ = stopped.await;
    }));
    (addr, stop, server, dir)
}

/// An Ollama upstream whose `/api/chat` answers `content` after `delay`.
async fn slow_ollama(delay: Duration, content: &str) -> wiremock::MockServer {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/chat"))
        .respond_with(ResponseTemplate::new(200).set_delay(delay).set_body_json(
            serde_json::json!({
                "model": "m", "message": {"role": "assistant", "content": content},
                "done": true, "done_reason": "stop"
            }),
        ))
        .mount(&upstream)
        .await;
    upstream
}

/// Reads until the server closes the connection; returns what it sent.
async fn read_to_close(conn: &mut TcpStream) -> String {
    let mut out = Vec::new();
    tokio::time::timeout(GUARD, conn.read_to_end(&mut out))
        .await
        .expect("the server never closed the connection")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn a_client_that_sends_half_a_request_head_is_disconnected() {
    let (addr, _stop, _server, _dir) = start(1, 30).await;
    let mut conn = TcpStream::connect(&addr).await.unwrap();
    conn.write_all(b"POST /v1/chat HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    read_to_close(&mut conn).await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let (addr, _stop, _server, _dir) = start(1, 30).await;
    let mut conn = TcpStream::connect(&addr).await.unwrap();
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = read_to_close(&mut conn).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"ok\""), "{answer}");
}

#[tokio::test]
async fn a_body_that_stops_halfway_gets_a_408() {
    let (addr, _stop, _server, _dir) = start(1, 30).await;
    let mut conn = TcpStream::connect(&addr).await.unwrap();
    conn.write_all(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n\
          content-length: 100\r\n\r\n{\"model\":",
    )
    .await
    .unwrap();
    let answer = read_to_close(&mut conn).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let body: Value =
        serde_json::from_str(&answer[answer.find("\r\n\r\n").unwrap() + 4..]).unwrap();
    assert_eq!(body["error"]["code"], "request_timeout", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("request body not received within 1s"),
        "{body}"
    );
}

#[tokio::test]
async fn shutdown_cuts_a_request_that_outlasts_the_grace() {
    // A client timeout of an hour: only the grace can end the stalled request.
    let (addr, stop, server, _dir) = start(3600, 1).await;
    let mut stalled = TcpStream::connect(&addr).await.unwrap();
    stalled
        .write_all(
            b"POST /v1/chat HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n\
              content-length: 100\r\n\r\n{",
        )
        .await
        .unwrap();
    // Let the server start on the request before shutting down.
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.send(()).unwrap();
    tokio::time::timeout(GUARD, server)
        .await
        .expect("serve kept waiting for a request that would never finish")
        .unwrap()
        .unwrap();
    assert!(
        TcpStream::connect(&addr).await.is_err(),
        "still accepting after shutdown"
    );
}

#[tokio::test]
async fn an_answer_may_take_longer_than_the_client_timeout() {
    // The client timeout bounds the client sending its request, not chatd (or the upstream)
    // preparing the answer: a model thinking for minutes must not be cut.
    let upstream = slow_ollama(Duration::from_millis(2500), "slow").await;
    let (addr, _stop, _server, _dir) = start_with_upstream(1, 30, &upstream.uri(), "").await;
    let resp = reqwest::Client::new()
        .post(format!("http://{addr}/v1/chat"))
        .json(&serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["content"], "slow", "{body}");
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish_on_every_thread() {
    let upstream = slow_ollama(Duration::from_millis(3000), "done").await;
    let (addr, stop, server, _dir) =
        start_with_upstream(30, 30, &upstream.uri(), "threads = 3").await;
    // One connection per request, so the requests spread over the threads that accept them.
    let requests: Vec<_> = (0..6)
        .map(|_| {
            let url = format!("http://{addr}/v1/chat");
            tokio::spawn(async move {
                let client = reqwest::Client::builder()
                    .pool_max_idle_per_host(0)
                    .build()
                    .unwrap();
                let resp = client
                    .post(url)
                    .json(&serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
                    .send()
                    .await
                    .unwrap();
                (resp.status(), resp.json::<Value>().await.unwrap())
            })
        })
        .collect();
    // Every request reaches the (slow) upstream before the shutdown starts.
    let deadline = tokio::time::Instant::now() + GUARD;
    while upstream.received_requests().await.unwrap().len() < 6 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "requests never arrived"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.send(()).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !server.is_finished(),
        "serve returned while requests were in flight"
    );
    for request in requests {
        let (status, body) = tokio::time::timeout(GUARD, request).await.unwrap().unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["content"], "done", "{body}");
    }
    tokio::time::timeout(GUARD, server)
        .await
        .expect("serve did not return after its requests finished")
        .unwrap()
        .unwrap();
    assert!(
        TcpStream::connect(&addr).await.is_err(),
        "still accepting after shutdown"
    );
}

#[tokio::test]
async fn a_request_still_running_when_the_grace_ends_is_answered_503() {
    let upstream = slow_ollama(Duration::from_secs(60), "too late").await;
    let (addr, stop, server, _dir) = start_with_upstream(30, 1, &upstream.uri(), "").await;
    let request = tokio::spawn(async move {
        reqwest::Client::new()
            .post(format!("http://{addr}/v1/chat/completions"))
            .json(
                &serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
            )
            .send()
            .await
    });
    support::eventually("the upstream to get the request", GUARD, || {
        futures_util::FutureExt::now_or_never(upstream.received_requests())
            .flatten()
            .is_some_and(|r| !r.is_empty())
    })
    .await;
    stop.send(()).unwrap();
    let resp = tokio::time::timeout(GUARD, request)
        .await
        .expect("the request was never answered")
        .unwrap()
        .expect("the connection was cut instead of answered");
    assert_eq!(resp.status(), 503);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "shutting_down", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("shutdown grace period ended"),
        "{body}"
    );
    tokio::time::timeout(GUARD, server)
        .await
        .expect("serve did not return after the grace")
        .unwrap()
        .unwrap();
}

/// Streams one Ollama token, then nothing more for a minute.
async fn stalled_ollama_stream() -> support::ScriptedUpstream {
    use support::{ScriptedUpstream, Step};
    let first = b"{\"model\":\"m\",\"message\":{\"role\":\"assistant\",\"content\":\"Hel\"},\"done\":false}\n";
    ScriptedUpstream::start(
        "application/x-ndjson",
        vec![
            Step::Chunk(first.to_vec()),
            Step::Sleep(Duration::from_secs(60)),
        ],
    )
    .await
}

#[tokio::test]
async fn streams_still_running_when_the_grace_ends_end_with_an_error_event() {
    let upstream = stalled_ollama_stream().await;
    let (addr, stop, server, _dir) = start_with_upstream(30, 1, &upstream.url(), "").await;
    let client = reqwest::Client::new();
    let body = serde_json::json!({
        "model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]
    });
    let mut sse = client
        .post(format!("http://{addr}/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let mut ndjson = client
        .post(format!("http://{addr}/v1/chat"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), 200);
    assert_eq!(ndjson.status(), 200);
    // Both streams have started before the shutdown does.
    let first = sse.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("Hel"));
    let first = ndjson.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("Hel"));
    stop.send(()).unwrap();

    // Each body ends properly (a cut connection would fail `bytes`) with an error event.
    let rest = tokio::time::timeout(GUARD, sse.bytes())
        .await
        .expect("the SSE stream never ended")
        .expect("the SSE stream was cut instead of ended");
    let rest = String::from_utf8_lossy(&rest);
    let last = rest.trim_end().lines().last().unwrap();
    let event: Value = serde_json::from_str(last.strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(event["error"]["code"], "shutting_down", "{rest}");
    let rest = tokio::time::timeout(GUARD, ndjson.bytes())
        .await
        .expect("the NDJSON stream never ended")
        .expect("the NDJSON stream was cut instead of ended");
    let rest = String::from_utf8_lossy(&rest);
    let event: Value = serde_json::from_str(rest.trim_end().lines().last().unwrap()).unwrap();
    assert_eq!(event["type"], "error", "{rest}");
    assert_eq!(event["error"]["code"], "shutting_down", "{rest}");
    tokio::time::timeout(GUARD, server)
        .await
        .expect("serve did not return after the grace")
        .unwrap()
        .unwrap();
}
