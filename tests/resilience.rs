//! Staying up when a provider does not: fallback chains, retries, the circuit breaker,
//! concurrency limits, request ids and OpenTelemetry traces, through the real router and
//! adapters against loopback mocks that count every request they get.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use support::{ChatdProcess, ScriptedUpstream, Step, TestGateway, sse_data};

/// What a mock answers to its n-th request (counting from 0).
type Behaviour = dyn Fn(usize) -> Reply + Send + Sync;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Reply {
    Ok,
    Status(u16, Option<&'static str>),
    /// Waits until the mock is released, then answers.
    Hold,
}

/// An Ollama-style upstream (`/api/chat`, JSON or NDJSON as asked) that records the marker
/// of every request it gets and what it answered.
struct Mock {
    name: &'static str,
    url: String,
    hits: AtomicUsize,
    /// Marker (the user message) → (requests, answered with 200).
    seen: Mutex<HashMap<String, (usize, usize)>>,
    behaviour: Box<Behaviour>,
    release: tokio::sync::Semaphore,
}

impl Mock {
    async fn start(
        name: &'static str,
        behaviour: impl Fn(usize) -> Reply + Send + Sync + 'static,
    ) -> Arc<Mock> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mock = Arc::new(Mock {
            name,
            url: format!("http://{}", listener.local_addr().unwrap()),
            hits: AtomicUsize::new(0),
            seen: Mutex::default(),
            behaviour: Box::new(behaviour),
            release: tokio::sync::Semaphore::new(0),
        });
        let app = axum::Router::new()
            .route("/api/chat", axum::routing::post(answer))
            .with_state(mock.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        mock
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    fn seen(&self) -> HashMap<String, (usize, usize)> {
        self.seen.lock().unwrap().clone()
    }
}

async fn answer(State(mock): State<Arc<Mock>>, body: Bytes) -> Response {
    let n = mock.hits.fetch_add(1, Ordering::SeqCst);
    let request: Value = serde_json::from_slice(&body).unwrap();
    let marker = request["messages"][0]["content"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    let stream = request["stream"] == true;
    let mut reply = (mock.behaviour)(n);
    if reply == Reply::Hold {
        mock.release.acquire().await.unwrap().forget();
        reply = Reply::Ok;
    }
    {
        let mut seen = mock.seen.lock().unwrap();
        let entry = seen.entry(marker).or_default();
        entry.0 += 1;
        entry.1 += usize::from(reply == Reply::Ok);
    }
    let text = format!("from {}", mock.name);
    match reply {
        Reply::Status(status, retry_after) => {
            let mut response = (
                axum::http::StatusCode::from_u16(status).unwrap(),
                axum::Json(json!({"error": format!("{} says {status}", mock.name)})),
            )
                .into_response();
            if let Some(secs) = retry_after {
                response
                    .headers_mut()
                    .insert("retry-after", secs.parse().unwrap());
            }
            response
        }
        _ if stream => {
            let lines = [
                json!({"model": "m", "message": {"role": "assistant", "content": text}, "done": false}),
                json!({"model": "m", "message": {"role": "assistant", "content": ""}, "done": true, "done_reason": "stop", "prompt_eval_count": 3, "eval_count": 2}),
            ];
            let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
            ([("content-type", "application/x-ndjson")], Body::from(body)).into_response()
        }
        _ => axum::Json(json!({
            "model": "m", "message": {"role": "assistant", "content": text},
            "done": true, "done_reason": "stop", "prompt_eval_count": 3, "eval_count": 2
        }))
        .into_response(),
    }
}

/// A gateway with a runtime of its own whose adapter calls have a generous time budget:
/// these tests are about the exchange, and on a machine loaded many times over an adapter
/// call can overrun the default 100 ms of CPU (an `adapter_timeout` is final, not retried).
async fn gateway(config: &str) -> TestGateway {
    let config = config.replacen(
        "[chatd]\n",
        "[chatd]\nadapters_dir = \"{dir}/adapters\"\n",
        1,
    ) + "\n[chatd.sandbox]\ncpu_ms = 10000\n";
    TestGateway::start_with_files(&config, &[("adapters/README", b"none")]).await
}

/// A loopback address nothing listens on.
fn refused_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", listener.local_addr().unwrap())
}

/// A provider table with fast retries and a short cooldown.
fn provider(name: &str, url: &str, extra: &str) -> String {
    let mut table =
        format!("[chatd.providers.{name}]\nadapter = \"ollama\"\nbase_url = \"{url}\"\n{extra}\n");
    for (key, value) in [
        ("retry_backoff_ms", "1"),
        ("eject_after_failures", "2"),
        ("eject_cooldown_ms", "50"),
    ] {
        if !extra.contains(key) {
            table.push_str(&format!("{key} = {value}\n"));
        }
    }
    table
}

/// One request in one of the four shapes (native or OpenAI, whole or streamed); returns the
/// status, the provider header, and the answer's text (or the stream's error code).
async fn ask(
    client: &reqwest::Client,
    base: &str,
    model: &str,
    marker: &str,
    shape: usize,
) -> (u16, String, Result<String, String>) {
    let openai = shape % 2 == 1;
    let stream = shape / 2 == 1;
    let path = if openai {
        "/v1/chat/completions"
    } else {
        "/v1/chat"
    };
    let response = client
        .post(format!("{base}{path}"))
        .json(&json!({"model": model, "stream": stream,
            "messages": [{"role": "user", "content": marker}]}))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let served = response
        .headers()
        .get("x-chatd-provider")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    assert!(response.headers().contains_key("x-request-id"));
    let text = response.text().await.unwrap();
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let content = match (openai, stream) {
        _ if status != 200 => Err(text),
        (false, false) => Ok(serde_json::from_str::<Value>(&text).unwrap()["content"]
            .as_str()
            .unwrap()
            .to_owned()),
        (true, false) => Ok(
            serde_json::from_str::<Value>(&text).unwrap()["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .to_owned(),
        ),
        (false, true) => {
            let events: Vec<Value> = lines
                .iter()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            match events.iter().find(|e| e["type"] == "error") {
                Some(e) => Err(e["error"]["code"].as_str().unwrap().to_owned()),
                None => Ok(events
                    .iter()
                    .filter_map(|e| e["content"].as_str())
                    .collect()),
            }
        }
        (true, true) => {
            let events = sse_data(&lines);
            match events.iter().find(|e| e.get("error").is_some()) {
                Some(e) => Err(e["error"]["code"].as_str().unwrap().to_owned()),
                None => Ok(events
                    .iter()
                    .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
                    .collect()),
            }
        }
    };
    (status, served, content)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// A provider's entry in `GET /v1/chat/providers`.
async fn listed(gw: &TestGateway, name: &str) -> Value {
    let (_, body) = gw.get("/v1/chat/providers").await;
    body["providers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap()
        .clone()
}

/// The chain of the Done-when: the first provider refuses connections, the second answers
/// 429 then 503 for a while and recovers, the third works. Thousands of requests in every
/// wire format, streamed and not: none fails, none is sent to a provider more often than its
/// retries allow, each is answered once, and the breaker ejects and brings back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_rides_out_a_refusing_and_a_flapping_provider() {
    const LIMITED: usize = 10; // 429s with Retry-After first
    const FAILING: usize = 40; // then 503s
    let second = Mock::start("second", |n| match n {
        n if n < LIMITED => Reply::Status(429, Some("1")),
        n if n < LIMITED + FAILING => Reply::Status(503, None),
        _ => Reply::Ok,
    })
    .await;
    let third = Mock::start("third", |_| Reply::Ok).await;
    let config = format!(
        "[models]\nchain = [\"first/m\", \"second/m\", \"third/m\"]\n[chatd]\ndefault_provider = \"third\"\n{}{}{}",
        provider("first", &refused_url(), ""),
        provider("second", &second.url, "retries = 1"),
        provider("third", &third.url, "retries = 1"),
    );
    let gw = gateway(&config).await;
    let client = client();
    const REQUESTS: usize = 2000;
    const CONCURRENCY: usize = 16;
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (client, url, next) = (client.clone(), gw.url.clone(), next.clone());
            tokio::spawn(async move {
                let mut out = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= REQUESTS {
                        return out;
                    }
                    let marker = format!("req-{i}");
                    let (status, served, content) =
                        ask(&client, &url, "chain", &marker, i % 4).await;
                    out.push((marker, status, served, content));
                }
            })
        })
        .collect();
    let mut results = Vec::new();
    for w in workers {
        results.extend(w.await.unwrap());
    }
    assert_eq!(results.len(), REQUESTS);
    for (marker, status, served, content) in &results {
        assert_eq!(*status, 200, "{marker}: {content:?}");
        let text = content.as_ref().unwrap_or_else(|e| panic!("{marker}: {e}"));
        assert_eq!(text, &format!("from {served}"), "{marker}");
    }
    // Recovery needs a probe after the 503s are spent: keep asking until it came (bounded).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut extra = 0;
    while listed(&gw, "second").await["endpoints"][0]["health"]["recoveries"] == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "second never recovered"
        );
        let (status, _, content) =
            ask(&client, &gw.url, "chain", &format!("late-{extra}"), 0).await;
        assert_eq!(status, 200, "{content:?}");
        extra += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // No request was sent to a provider more often than 1 + retries, and each was answered
    // (200) exactly once over all providers.
    let (second_seen, third_seen) = (second.seen(), third.seen());
    for (marker, _, _, _) in &results {
        let (s_sent, s_ok) = second_seen.get(marker).copied().unwrap_or_default();
        let (t_sent, t_ok) = third_seen.get(marker).copied().unwrap_or_default();
        assert!(
            s_sent <= 2 && t_sent <= 2,
            "{marker}: second {s_sent}, third {t_sent}"
        );
        assert_eq!(
            s_ok + t_ok,
            1,
            "{marker}: answered by second {s_ok}, third {t_ok}"
        );
    }
    assert!(
        second.hits() > LIMITED + FAILING,
        "second recovered and served"
    );
    assert!(third.hits() > 0);

    // Ejections and the recovery show in the listing and in /metrics.
    let first = listed(&gw, "first").await;
    assert!(
        first["endpoints"][0]["health"]["ejections"]
            .as_u64()
            .unwrap()
            >= 1,
        "{first}"
    );
    let second_listed = listed(&gw, "second").await;
    let health = &second_listed["endpoints"][0]["health"];
    assert!(
        health["ejections"].as_u64().unwrap() >= 1,
        "{second_listed}"
    );
    assert!(
        health["recoveries"].as_u64().unwrap() >= 1,
        "{second_listed}"
    );
    let metrics = gw.client_get_text("/metrics").await;
    for wanted in [
        "chatd_fallbacks_total{from=\"first\",to=\"second\"}",
        "chatd_fallbacks_total{from=\"second\",to=\"third\"}",
        "chatd_endpoint_ejections_total{provider=\"second\"",
        "chatd_endpoint_recoveries_total{provider=\"second\"",
        "chatd_upstream_attempts_total{provider=\"second\",outcome=\"5xx\"}",
        "chatd_upstream_attempts_total{provider=\"first\",outcome=\"unreachable\"}",
        "chatd_retries_total{provider=\"second\"}",
        "chatd_tokens_total{provider=\"third\",model=\"m\",direction=\"input\"}",
        "chatd_adapter_seconds_total{provider=\"third\"}",
        "chatd_upstream_seconds_total{provider=\"third\"}",
    ] {
        assert!(
            metrics.contains(wanted),
            "{wanted} missing from:\n{metrics}"
        );
    }
}

/// A stream that dies after its first chunk went out ends with the documented error event;
/// the next candidate never sees the request (nothing is answered twice).
#[tokio::test]
async fn a_stream_that_breaks_after_its_first_chunk_is_not_retried() {
    let dies = ScriptedUpstream::start(
        "application/x-ndjson",
        vec![
            Step::Chunk(
                format!(
                    "{}\n",
                    json!({"model": "m", "message": {"role": "assistant", "content": "half"}, "done": false})
                )
                .into_bytes(),
            ),
            Step::Abort,
        ],
    )
    .await;
    let spare = Mock::start("spare", |_| Reply::Ok).await;
    let config = format!(
        "[models]\nchain = [\"dies/m\", \"spare/m\"]\n[chatd]\ndefault_provider = \"spare\"\n{}{}",
        provider("dies", &dies.url(), "retries = 3"),
        provider("spare", &spare.url, ""),
    );
    let gw = gateway(&config).await;
    let client = client();
    for shape in [2, 3] {
        let (status, served, content) = ask(&client, &gw.url, "chain", "once", shape).await;
        assert_eq!((status, served.as_str()), (200, "dies"));
        assert_eq!(
            content,
            Err("upstream_stream_error".to_owned()),
            "shape {shape}"
        );
    }
    assert_eq!(dies.observed.lock().unwrap().requests.len(), 2);
    assert_eq!(spare.hits(), 0);
}

/// Retries stay within `retries`, a 4xx that is the request's own fault is never retried
/// nor passed on, and a lone provider whose endpoint is ejected answers 503 with Retry-After.
#[tokio::test]
async fn retries_are_bounded_and_client_errors_are_final() {
    let flaky = Mock::start("flaky", |n| match n {
        0 | 1 => Reply::Status(502, None),
        2 => Reply::Status(400, None),
        _ => Reply::Status(500, None),
    })
    .await;
    let spare = Mock::start("spare", |_| Reply::Ok).await;
    let config = format!(
        "[models]\nchain = [\"flaky/m\", \"spare/m\"]\n[chatd]\ndefault_provider = \"flaky\"\n{}{}",
        provider(
            "flaky",
            &flaky.url,
            "retries = 2\neject_after_failures = 3\neject_cooldown_ms = 600000",
        ),
        provider("spare", &spare.url, ""),
    );
    let gw = gateway(&config).await;
    // 502, 502, then a 400: the request's own fault ends it, unpassed.
    let (status, _, body) = gw.post("/v1/chat", TestGateway::chat("chain")).await;
    assert_ne!(status, 200, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("HTTP 400"),
        "{body}"
    );
    assert_eq!((flaky.hits(), spare.hits()), (3, 0));
    assert!(body["request_id"].is_string(), "{body}");
    // 500 three times (1 + 2 retries), then the next candidate.
    let (status, headers, body) = gw.post("/v1/chat", TestGateway::chat("chain")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["provider"], "spare");
    assert_eq!(headers["x-chatd-provider"], "spare");
    assert_eq!(headers["x-chatd-model"], "m");
    assert_eq!((flaky.hits(), spare.hits()), (6, 1));
    // Three failures in a row ejected flaky's endpoint: a chain skips it while another
    // candidate can serve...
    let (status, _, body) = gw.post("/v1/chat", TestGateway::chat("chain")).await;
    assert_eq!(
        (status, body["provider"].as_str()),
        (200, Some("spare")),
        "{body}"
    );
    assert_eq!(flaky.hits(), 6, "an ejected endpoint gets no request");
    // ... but a request with nowhere else to go is sent there all the same (500 again).
    let (status, _, body) = gw.post("/v1/chat", TestGateway::chat("flaky/m")).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["code"], "upstream_error");
    assert_eq!(flaky.hits(), 9);
    let stats = listed(&gw, "flaky").await;
    assert_eq!(stats["attempts"]["retries"], 6, "{stats}");
    assert_eq!(
        stats["endpoints"][0]["health"]["state"], "ejected",
        "{stats}"
    );
}

/// Beyond `max_concurrency` a request waits its queue timeout, then is `provider_busy` —
/// or, in a chain, goes to the next candidate.
#[tokio::test]
async fn a_full_provider_is_busy_or_passes_the_request_on() {
    let slow = Mock::start("slow", |_| Reply::Hold).await;
    let spare = Mock::start("spare", |_| Reply::Ok).await;
    let config = format!(
        "[models]\nchain = [\"slow/m\", \"spare/m\"]\n[chatd]\ndefault_provider = \"slow\"\n{}{}",
        provider(
            "slow",
            &slow.url,
            "max_concurrency = 1\nqueue_timeout_ms = 0"
        ),
        provider("spare", &spare.url, ""),
    );
    let gw = Arc::new(gateway(&config).await);
    let holder = tokio::spawn({
        let gw = gw.clone();
        async move { gw.post("/v1/chat", TestGateway::chat("slow/m")).await }
    });
    support::eventually(
        "the first request to reach slow",
        Duration::from_secs(20),
        || slow.hits() == 1,
    )
    .await;
    let (status, headers, body) = gw.post("/v1/chat", TestGateway::chat("slow/m")).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "provider_busy");
    assert_eq!(headers["retry-after"], "1");
    let (status, _, body) = gw.post("/v1/chat", TestGateway::chat("chain")).await;
    assert_eq!(
        (status, body["provider"].as_str()),
        (200, Some("spare")),
        "{body}"
    );
    slow.release.add_permits(1);
    assert_eq!(holder.await.unwrap().0, 200);
    assert_eq!(slow.hits(), 1);
    assert_eq!(listed(&gw, "slow").await["attempts"]["busy"], 2);
}

/// Request ids: a valid client id is kept, anything else replaced by a UUID; every answer
/// carries it, error bodies name it.
#[tokio::test]
async fn every_answer_carries_a_request_id() {
    let ok = Mock::start("ok", |_| Reply::Ok).await;
    let config = format!(
        "[chatd]\ndefault_provider = \"ok\"\n{}",
        provider("ok", &ok.url, "")
    );
    let gw = gateway(&config).await;
    let client = client();
    let send = |id: Option<&'static str>, path: &'static str| {
        let mut request = client
            .post(format!("{}{path}", gw.url))
            .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}));
        if let Some(id) = id {
            request = request.header("x-request-id", id);
        }
        request.send()
    };
    let kept = send(Some("client-id_1.2"), "/v1/chat").await.unwrap();
    assert_eq!(kept.headers()["x-request-id"], "client-id_1.2");
    let replaced = send(Some("bad id with spaces"), "/v1/chat").await.unwrap();
    let id = replaced.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_ne!(id, "bad id with spaces");
    assert_eq!(id.len(), 36, "{id}");
    let missing = send(None, "/nowhere").await.unwrap();
    assert_eq!(missing.status(), 404);
    let id = missing.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = missing.json().await.unwrap();
    assert_eq!(body["request_id"], id.as_str(), "{body}");
    assert_eq!(body["error"]["code"], "not_found");
    // OpenAI's error shape keeps `error` as it was; the id sits beside it.
    let bad = client
        .post(format!("{}/v1/chat/completions", gw.url))
        .header("x-request-id", "abc")
        .json(&json!({"model": "m"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let body: Value = bad.json().await.unwrap();
    assert_eq!(body["request_id"], "abc");
    assert_eq!(body["error"]["type"], "invalid_request_error");
}

/// The real binary exporting to a real OTLP/HTTP receiver (decoded with the protocol's own
/// protobuf types): the request's span continues the incoming trace, has a child per attempt
/// (a fallback shows as two), and carries the GenAI attributes; every log line of the
/// request names its id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_reach_an_otlp_collector_and_logs_name_the_request() {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
    use prost::Message;

    let spans: Arc<Mutex<Vec<opentelemetry_proto::tonic::trace::v1::Span>>> = Arc::default();
    let collector = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector_url = format!("http://{}/v1/traces", collector.local_addr().unwrap());
    let received = spans.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: Bytes| {
            let received = received.clone();
            async move {
                let export = ExportTraceServiceRequest::decode(body).unwrap();
                for resource in export.resource_spans {
                    for scope in resource.scope_spans {
                        received.lock().unwrap().extend(scope.spans);
                    }
                }
                axum::http::StatusCode::OK
            }
        }),
    );
    tokio::spawn(async move { axum::serve(collector, app).await.unwrap() });
    let good = Mock::start("good", |_| Reply::Ok).await;
    let config = format!(
        "[models]\nchain = [\"down/m\", \"good/m\"]\n[chatd]\ndefault_provider = \"good\"\n\
         [chatd.otel]\nenabled = true\nendpoint = \"{collector_url}\"\n{}{}",
        provider("down", &refused_url(), "retries = 0"),
        provider("good", &good.url, ""),
    );
    let mut chatd = ChatdProcess::start(&config, &[]);
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = "00f067aa0ba902b7";
    let client = client();
    for stream in [false, true] {
        let response = client
            .post(format!("{}/v1/chat", chatd.url))
            .header("traceparent", format!("00-{trace_id}-{parent}-01"))
            .header("x-request-id", format!("trace-test-{stream}"))
            .json(&json!({"model": "chain", "stream": stream,
                "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-chatd-provider"], "good");
        response.text().await.unwrap();
    }
    // Stopping flushes the spans not yet exported.
    let log = chatd.stop();
    for (id, wanted) in [
        ("trace-test-false", "endpoint=\"/v1/chat\""),
        ("trace-test-true", "stream finished"),
    ] {
        let line = log
            .lines()
            .find(|l| l.contains(wanted) && l.contains(&format!("request_id={id}")));
        assert!(line.is_some(), "no {wanted:?} line naming {id}:\n{log}");
    }
    let fallback = log
        .lines()
        .find(|l| l.contains("falling back"))
        .unwrap_or_else(|| panic!("no fallback line:\n{log}"));
    assert!(
        fallback.contains("request_id=trace-test-false"),
        "{fallback}"
    );
    assert!(
        fallback.contains("from=down/m") && fallback.contains("to=good/m"),
        "{fallback}"
    );

    let spans = spans.lock().unwrap().clone();
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let attr = |span: &opentelemetry_proto::tonic::trace::v1::Span, key: &str| {
        span.attributes
            .iter()
            .find(|a| a.key == key)
            .and_then(|a| a.value.as_ref()?.value.clone())
    };
    let servers: Vec<_> = spans.iter().filter(|s| s.name == "POST /v1/chat").collect();
    assert_eq!(
        servers.len(),
        2,
        "{:?}",
        spans.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    for server in &servers {
        assert_eq!(hex(&server.trace_id), trace_id);
        assert_eq!(hex(&server.parent_span_id), parent);
        assert_eq!(
            attr(server, "gen_ai.provider.name"),
            Some(Any::StringValue("good".into()))
        );
        assert_eq!(
            attr(server, "gen_ai.response.model"),
            Some(Any::StringValue("m".into()))
        );
        assert_eq!(
            attr(server, "gen_ai.usage.input_tokens"),
            Some(Any::IntValue(3))
        );
        assert_eq!(
            attr(server, "gen_ai.usage.output_tokens"),
            Some(Any::IntValue(2))
        );
        assert_eq!(
            attr(server, "http.response.status_code"),
            Some(Any::IntValue(200))
        );
        let attempts: Vec<_> = spans
            .iter()
            .filter(|s| s.parent_span_id == server.span_id && s.name == "chat m")
            .collect();
        let providers: Vec<_> = attempts
            .iter()
            .map(|s| attr(s, "gen_ai.provider.name"))
            .collect();
        assert_eq!(
            providers,
            [
                Some(Any::StringValue("down".into())),
                Some(Any::StringValue("good".into()))
            ],
            "one attempt span per candidate"
        );
        for a in &attempts {
            assert_eq!(
                attr(a, "gen_ai.operation.name"),
                Some(Any::StringValue("chat".into()))
            );
            assert_eq!(
                attr(a, "gen_ai.request.model"),
                Some(Any::StringValue("m".into()))
            );
        }
        let good_attempt = attempts[1];
        let children: Vec<&str> = spans
            .iter()
            .filter(|s| s.parent_span_id == good_attempt.span_id)
            .map(|s| s.name.as_str())
            .collect();
        assert!(
            children.contains(&"adapter.build") && children.contains(&"upstream"),
            "{children:?}"
        );
    }
    assert!(
        spans.iter().any(|s| s.name == "stream"),
        "the stream has a span"
    );
    assert!(
        spans.iter().any(|s| s.name == "route"),
        "routing has a span"
    );
    assert!(
        spans.iter().any(|s| s.name == "adapter.parse"),
        "the whole answer was parsed"
    );
}
