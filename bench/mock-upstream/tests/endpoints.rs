//! End-to-end checks of every mock endpoint over a real socket with a plain hyper client.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use chatd_bench_mock_upstream::{Config, serve};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST, TRANSFER_ENCODING};
use hyper::{HeaderMap, Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};

async fn start(config: Config) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(listener, config));
    addr
}

async fn connect(addr: SocketAddr) -> SendRequest<Full<Bytes>> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, connection) = http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);
    sender
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    /// Each body frame with the time it arrived.
    frames: Vec<(Instant, Bytes)>,
}

impl Reply {
    fn body(&self) -> String {
        let bytes: Vec<u8> = self.frames.iter().flat_map(|(_, b)| b.to_vec()).collect();
        String::from_utf8(bytes).unwrap()
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body()).unwrap()
    }

    fn content_type(&self) -> &str {
        self.headers[CONTENT_TYPE].to_str().unwrap()
    }

    fn lines(&self) -> Vec<Value> {
        self.body()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    /// SSE `data:` payloads, `[DONE]` included verbatim.
    fn events(&self) -> Vec<String> {
        let body = self.body();
        assert!(body.ends_with("\n\n"), "unterminated SSE body: {body:?}");
        body.split_terminator("\n\n")
            .map(|event| event.strip_prefix("data: ").unwrap().to_owned())
            .collect()
    }
}

async fn send(
    sender: &mut SendRequest<Full<Bytes>>,
    method: Method,
    path: &str,
    body: &str,
) -> Reply {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header(HOST, "mock")
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::copy_from_slice(body.as_bytes())))
        .unwrap();
    sender.ready().await.unwrap();
    let response = sender.send_request(request).await.unwrap();
    let (parts, mut body) = response.into_parts();
    let mut frames = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(mut data) = frame.unwrap().into_data() {
            frames.push((Instant::now(), data.copy_to_bytes(data.remaining())));
        }
    }
    Reply {
        status: parts.status,
        headers: parts.headers,
        frames,
    }
}

async fn once(addr: SocketAddr, method: Method, path: &str, body: &str) -> Reply {
    send(&mut connect(addr).await, method, path, body).await
}

#[tokio::test]
async fn ollama_chat_streams_by_default() {
    let addr = start(Config::default()).await;
    let reply = once(addr, Method::POST, "/api/chat", r#"{"model":"qwen3:8b"}"#).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.content_type(), "application/x-ndjson");
    assert_eq!(reply.headers[TRANSFER_ENCODING], "chunked");
    let lines = reply.lines();
    assert_eq!(lines.len(), 9);
    // One frame per line, so a client can observe the pacing of each chunk.
    assert_eq!(reply.frames.len(), 9);
    for (i, line) in lines[..8].iter().enumerate() {
        assert_eq!(line["model"], "qwen3:8b");
        assert_eq!(line["message"]["role"], "assistant");
        assert_eq!(line["message"]["content"], format!("tok{i} "));
        assert_eq!(line["done"], false);
    }
    let last = &lines[8];
    assert_eq!(last["done"], true);
    assert_eq!(last["done_reason"], "stop");
    assert_eq!(last["message"]["content"], "");
    assert_eq!(last["prompt_eval_count"], 12);
    assert_eq!(last["eval_count"], 8);
}

#[tokio::test]
async fn ollama_non_stream_and_generate() {
    let addr = start(Config {
        chunks: 3,
        ..Config::default()
    })
    .await;
    let mut sender = connect(addr).await;

    let chat = send(
        &mut sender,
        Method::POST,
        "/api/chat",
        r#"{"stream":false}"#,
    )
    .await;
    assert_eq!(chat.content_type(), "application/json");
    assert_eq!(
        chat.headers[CONTENT_LENGTH].to_str().unwrap(),
        chat.body().len().to_string()
    );
    assert_eq!(
        chat.json(),
        serde_json::json!({"model":"mock","created_at":"2026-01-01T00:00:00Z",
            "message":{"role":"assistant","content":"Hello from mock."},"done":true,
            "done_reason":"stop","prompt_eval_count":12,"eval_count":4,"total_duration":1000})
    );

    // Same connection: keep-alive must survive both kinds of body.
    let generate = send(
        &mut sender,
        Method::POST,
        "/api/generate",
        r#"{"model":"m","prompt":"hi"}"#,
    )
    .await;
    let lines = generate.lines();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[2]["response"], "tok2 ");
    assert!(lines[2].get("message").is_none());
    assert_eq!(lines[3]["done"], true);
    assert_eq!(lines[3]["eval_count"], 3);

    let full = send(
        &mut sender,
        Method::POST,
        "/api/generate",
        r#"{"model":"m","stream":false}"#,
    )
    .await;
    assert_eq!(full.json()["response"], "Hello from mock.");
    assert_eq!(full.json()["model"], "m");
}

#[tokio::test]
async fn openai_chat_completions() {
    let addr = start(Config {
        chunks: 2,
        ..Config::default()
    })
    .await;
    let mut sender = connect(addr).await;

    for path in ["/v1/chat/completions", "/chat/completions"] {
        let reply = send(&mut sender, Method::POST, path, r#"{"model":"gpt-x"}"#).await;
        assert_eq!(reply.content_type(), "application/json");
        assert_eq!(
            reply.json(),
            serde_json::json!({"id":"chatcmpl-mock","object":"chat.completion",
                "created":1767225600,"model":"gpt-x","choices":[{"index":0,
                "message":{"role":"assistant","content":"Hello from mock."},
                "finish_reason":"stop"}],
                "usage":{"prompt_tokens":12,"completion_tokens":4,"total_tokens":16}})
        );
    }

    let plain = send(
        &mut sender,
        Method::POST,
        "/v1/chat/completions",
        r#"{"model":"gpt-x","stream":true}"#,
    )
    .await;
    assert_eq!(plain.content_type(), "text/event-stream");
    let events = plain.events();
    assert_eq!(plain.frames.len(), events.len());
    // role, 2 content, finish, [DONE]
    assert_eq!(events.len(), 5);
    assert_eq!(events[4], "[DONE]");
    let chunks: Vec<Value> = events[..4]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        serde_json::json!({"role":"assistant","content":""})
    );
    assert_eq!(chunks[1]["choices"][0]["delta"]["content"], "tok0 ");
    assert_eq!(chunks[2]["choices"][0]["delta"]["content"], "tok1 ");
    assert_eq!(chunks[3]["choices"][0]["delta"], serde_json::json!({}));
    assert_eq!(chunks[3]["choices"][0]["finish_reason"], "stop");
    for chunk in &chunks {
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["model"], "gpt-x");
    }

    let usage = send(
        &mut sender,
        Method::POST,
        "/chat/completions",
        r#"{"stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"\"model\": 1"}]}"#,
    )
    .await;
    let events = usage.events();
    assert_eq!(events.len(), 6);
    let usage_chunk: Value = serde_json::from_str(&events[4]).unwrap();
    assert_eq!(usage_chunk["choices"], serde_json::json!([]));
    assert_eq!(
        usage_chunk["usage"],
        serde_json::json!({"prompt_tokens":12,"completion_tokens":2,"total_tokens":14})
    );
    assert_eq!(usage_chunk["model"], "mock");
    assert_eq!(events[5], "[DONE]");
}

#[tokio::test]
async fn listings_errors_and_escaping() {
    let addr = start(Config::default()).await;
    let mut sender = connect(addr).await;

    let tags = send(&mut sender, Method::GET, "/api/tags", "").await;
    assert_eq!(tags.status, StatusCode::OK);
    assert_eq!(tags.json()["models"][1]["name"], "llama3.2:1b");

    for path in ["/models", "/v1/models"] {
        let models = send(&mut sender, Method::GET, path, "").await;
        assert_eq!(models.json()["data"][0]["id"], "mock/model-a");
        assert_eq!(models.json()["object"], "list");
    }

    let missing = send(&mut sender, Method::GET, "/api/chat", "").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(missing.json()["error"].is_string());
    let missing = send(&mut sender, Method::POST, "/nope", "{}").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);

    let bad = send(&mut sender, Method::POST, "/api/chat", "{not json").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);

    let odd = r#"{"model":"a \"quoted\" \\ model\n","stream":false}"#;
    let echoed = send(&mut sender, Method::POST, "/v1/chat/completions", odd).await;
    assert_eq!(echoed.json()["model"], "a \"quoted\" \\ model\n");
}

#[tokio::test]
async fn delays_are_applied() {
    let addr = start(Config {
        delay: Duration::from_millis(40),
        chunks: 3,
        chunk_delay: Duration::from_millis(25),
    })
    .await;
    let mut sender = connect(addr).await;
    let started = Instant::now();
    let reply = send(&mut sender, Method::POST, "/api/chat", "{}").await;
    assert_eq!(reply.frames.len(), 4);
    // Lower bounds only: a loaded machine may be slower, never faster.
    assert!(reply.frames[0].0 - started >= Duration::from_millis(40));
    for pair in reply.frames.windows(2) {
        assert!(pair[1].0 - pair[0].0 >= Duration::from_millis(20));
    }
}

/// Kills the spawned server even when an assertion fails first.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn binary_prints_ready_line_and_serves() {
    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_mock-upstream"))
            .args(["--bind", "127.0.0.1:0", "--chunks", "3", "--workers", "1"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr: SocketAddr = line
        .trim_end()
        .strip_prefix("mock-upstream listening on ")
        .unwrap()
        .parse()
        .unwrap();
    let reply = once(addr, Method::POST, "/api/generate", r#"{"model":"x"}"#).await;
    assert_eq!(reply.lines().len(), 4);
}
