//! A fake LLM upstream (Ollama and OpenAI-compatible endpoints) that answers from
//! pre-rendered templates, so a gateway benchmark measures the gateway and not the mock.

use std::borrow::Cow;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::buf::Chain;
use bytes::{Buf, Bytes};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::time::{Instant, Sleep};

/// Behaviour knobs shared by every connection of one server.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// Fixed wait before any response head is sent.
    pub delay: Duration,
    /// Number of content chunks in a streamed answer.
    pub chunks: usize,
    /// Wait between successive frames of a streamed answer.
    pub chunk_delay: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            delay: Duration::ZERO,
            chunks: 8,
            chunk_delay: Duration::ZERO,
        }
    }
}

const CREATED_AT: &str = "2026-01-01T00:00:00Z";
const CREATED: u64 = 1_767_225_600;
const PROMPT_TOKENS: usize = 12;
const FULL_TEXT: &str = "Hello from mock.";
const FULL_TOKENS: usize = 4;
const DEFAULT_MODEL: &[u8] = b"\"mock\"";

const TAGS: Part = Part::fixed(
    br#"{"models":[{"name":"qwen3:8b","model":"qwen3:8b"},{"name":"llama3.2:1b","model":"llama3.2:1b"}]}"#,
);
const MODELS: Part = Part::fixed(
    br#"{"object":"list","data":[{"id":"mock/model-a","object":"model","owned_by":"mock","created":1767225600}]}"#,
);
const NOT_FOUND: Part = Part::fixed(br#"{"error":"not found"}"#);
const BAD_JSON: Part = Part::fixed(br#"{"error":"request body is not valid JSON"}"#);
const BAD_BODY: Part = Part::fixed(br#"{"error":"could not read request body"}"#);

const APPLICATION_JSON: &str = "application/json";
const NDJSON: &str = "application/x-ndjson";
const EVENT_STREAM: &str = "text/event-stream";
/// Ends one NDJSON line.
const LF: &str = "\n";
/// Ends one SSE event.
const SSE_END: &str = "\n\n";

/// One body frame: `prefix`, then the request's model as a JSON string if `model`, then `suffix`.
///
/// Splitting around the model lets every frame be sent without copying or formatting.
#[derive(Clone, Copy, Debug)]
struct Part {
    prefix: &'static [u8],
    model: bool,
    suffix: &'static [u8],
}

impl Part {
    const fn fixed(body: &'static [u8]) -> Self {
        Self {
            prefix: body,
            model: false,
            suffix: b"",
        }
    }

    fn len(&self, model: &Bytes) -> usize {
        self.prefix.len() + self.suffix.len() + if self.model { model.len() } else { 0 }
    }

    fn render(&self, model: &Bytes) -> Chunk {
        let model = if self.model {
            model.clone()
        } else {
            Bytes::new()
        };
        Bytes::from_static(self.prefix)
            .chain(model)
            .chain(Bytes::from_static(self.suffix))
    }
}

/// The pieces of one frame, handed to hyper as a vectored buffer.
pub type Chunk = Chain<Chain<Bytes, Bytes>, Bytes>;

/// The non-streamed and streamed renderings of one endpoint.
struct Answer {
    full: &'static [Part],
    stream: &'static [Part],
}

/// Everything pre-rendered for one server; leaked because it lives as long as the server.
struct State {
    delay: Duration,
    chunk_delay: Duration,
    ollama_chat: Answer,
    ollama_generate: Answer,
    openai: Answer,
    openai_stream_usage: &'static [Part],
}

fn leak(s: String) -> &'static [u8] {
    Box::leak(s.into_boxed_str()).as_bytes()
}

fn with_model(prefix: &'static [u8], suffix: String) -> Part {
    Part {
        prefix,
        model: true,
        suffix: leak(suffix),
    }
}

impl State {
    fn new(config: Config) -> Self {
        let n = config.chunks;
        let ollama_prefix: &'static [u8] = b"{\"model\":";

        let ollama = |field: &dyn Fn(&str) -> String| -> Answer {
            let full = with_model(
                ollama_prefix,
                format!(
                    r#","created_at":"{CREATED_AT}",{},"done":true,"done_reason":"stop","prompt_eval_count":{PROMPT_TOKENS},"eval_count":{FULL_TOKENS},"total_duration":1000}}"#,
                    field(FULL_TEXT)
                ),
            );
            let mut stream: Vec<Part> = (0..n)
                .map(|i| {
                    with_model(
                        ollama_prefix,
                        format!(
                            r#","created_at":"{CREATED_AT}",{},"done":false}}{LF}"#,
                            field(&format!("tok{i} ")),
                        ),
                    )
                })
                .collect();
            stream.push(with_model(
                ollama_prefix,
                format!(
                    r#","created_at":"{CREATED_AT}",{},"done":true,"done_reason":"stop","prompt_eval_count":{PROMPT_TOKENS},"eval_count":{n},"total_duration":1000}}{LF}"#,
                    field(""),
                ),
            ));
            Answer {
                full: vec![full].leak(),
                stream: stream.leak(),
            }
        };
        let ollama_chat =
            ollama(&|text| format!(r#""message":{{"role":"assistant","content":"{text}"}}"#));
        let ollama_generate = ollama(&|text| format!(r#""response":"{text}""#));

        let openai_full = with_model(
            leak(format!(
                r#"{{"id":"chatcmpl-mock","object":"chat.completion","created":{CREATED},"model":"#
            )),
            format!(
                r#","choices":[{{"index":0,"message":{{"role":"assistant","content":"{FULL_TEXT}"}},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":{PROMPT_TOKENS},"completion_tokens":{FULL_TOKENS},"total_tokens":{}}}}}"#,
                PROMPT_TOKENS + FULL_TOKENS
            ),
        );
        let sse_prefix = leak(format!(
            r#"data: {{"id":"chatcmpl-mock","object":"chat.completion.chunk","created":{CREATED},"model":"#
        ));
        let choice = |delta: &str, finish: &str| {
            with_model(
                sse_prefix,
                format!(
                    r#","choices":[{{"index":0,"delta":{delta},"finish_reason":{finish}}}]}}{SSE_END}"#
                ),
            )
        };
        let mut stream = vec![choice(r#"{"role":"assistant","content":""}"#, "null")];
        stream.extend((0..n).map(|i| choice(&format!(r#"{{"content":"tok{i} "}}"#), "null")));
        stream.push(choice("{}", r#""stop""#));
        let usage = with_model(
            sse_prefix,
            format!(
                r#","choices":[],"usage":{{"prompt_tokens":{PROMPT_TOKENS},"completion_tokens":{n},"total_tokens":{}}}}}{SSE_END}"#,
                PROMPT_TOKENS + n,
            ),
        );
        let done = Part::fixed(b"data: [DONE]\n\n");
        let mut stream_usage = stream.clone();
        stream_usage.push(usage);
        stream_usage.push(done);
        stream.push(done);

        Self {
            delay: config.delay,
            chunk_delay: config.chunk_delay,
            ollama_chat,
            ollama_generate,
            openai: Answer {
                full: vec![openai_full].leak(),
                stream: stream.leak(),
            },
            openai_stream_usage: stream_usage.leak(),
        }
    }

    fn answer(&'static self, route: Route, body: &[u8]) -> Response<MockBody> {
        let (answer, stream_default) = match route {
            Route::Tags => return self.fixed(StatusCode::OK, &TAGS),
            Route::Models => return self.fixed(StatusCode::OK, &MODELS),
            Route::NotFound => return self.fixed(StatusCode::NOT_FOUND, &NOT_FOUND),
            // Ollama streams unless told not to; OpenAI only when asked.
            Route::OllamaChat => (&self.ollama_chat, true),
            Route::OllamaGenerate => (&self.ollama_generate, true),
            Route::OpenAi => (&self.openai, false),
        };
        let request = if body.trim_ascii().is_empty() {
            ChatRequest::default()
        } else {
            match serde_json::from_slice::<ChatRequest>(body) {
                Ok(request) => request,
                Err(_) => return self.fixed(StatusCode::BAD_REQUEST, &BAD_JSON),
            }
        };
        let model = match &request.model {
            Some(model) => {
                Bytes::from(serde_json::to_vec(model.as_ref()).expect("a str always serialises"))
            }
            None => Bytes::from_static(DEFAULT_MODEL),
        };
        if !request.stream.unwrap_or(stream_default) {
            return self.respond(StatusCode::OK, APPLICATION_JSON, answer.full, model, true);
        }
        let include_usage = request
            .stream_options
            .and_then(|options| options.include_usage)
            .unwrap_or(false);
        let (content_type, parts) = match route {
            Route::OpenAi if include_usage => (EVENT_STREAM, self.openai_stream_usage),
            Route::OpenAi => (EVENT_STREAM, answer.stream),
            _ => (NDJSON, answer.stream),
        };
        self.respond(StatusCode::OK, content_type, parts, model, false)
    }

    fn fixed(&self, status: StatusCode, part: &'static Part) -> Response<MockBody> {
        self.respond(
            status,
            APPLICATION_JSON,
            std::slice::from_ref(part),
            Bytes::new(),
            true,
        )
    }

    fn respond(
        &self,
        status: StatusCode,
        content_type: &'static str,
        parts: &'static [Part],
        model: Bytes,
        sized: bool,
    ) -> Response<MockBody> {
        let body = MockBody {
            parts,
            model,
            next: 0,
            sized,
            chunk_delay: self.chunk_delay,
            sleep: None,
            armed: false,
        };
        let mut response = Response::new(body);
        *response.status_mut() = status;
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        response
    }
}

/// Only the request fields the mock reacts to; everything else is skipped unparsed.
#[derive(Default, Deserialize)]
struct ChatRequest<'a> {
    #[serde(borrow)]
    model: Option<Cow<'a, str>>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
}

#[derive(Deserialize)]
struct StreamOptions {
    include_usage: Option<bool>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    OllamaChat,
    OllamaGenerate,
    OpenAi,
    Tags,
    Models,
    NotFound,
}

impl Route {
    fn of(method: &Method, path: &str) -> Self {
        match (method, path) {
            (&Method::POST, "/api/chat") => Self::OllamaChat,
            (&Method::POST, "/api/generate") => Self::OllamaGenerate,
            (&Method::POST, "/v1/chat/completions" | "/chat/completions") => Self::OpenAi,
            (&Method::GET, "/api/tags") => Self::Tags,
            (&Method::GET, "/models" | "/v1/models") => Self::Models,
            _ => Self::NotFound,
        }
    }
}

/// A response body that yields each template part as its own frame, optionally paced.
pub struct MockBody {
    parts: &'static [Part],
    model: Bytes,
    next: usize,
    /// Announce an exact length (Content-Length) instead of chunked transfer encoding.
    sized: bool,
    chunk_delay: Duration,
    // Allocated once per paced response and reset for each gap.
    sleep: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl Body for MockBody {
    type Data = Chunk;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let Some(part) = this.parts.get(this.next) else {
            return Poll::Ready(None);
        };
        if this.next > 0 && !this.chunk_delay.is_zero() {
            let delay = this.chunk_delay;
            let sleep = this
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(delay)));
            if !this.armed {
                sleep.as_mut().reset(Instant::now() + delay);
                this.armed = true;
            }
            ready!(sleep.as_mut().poll(cx));
            this.armed = false;
        }
        this.next += 1;
        Poll::Ready(Some(Ok(Frame::data(part.render(&this.model)))))
    }

    fn is_end_stream(&self) -> bool {
        self.next >= self.parts.len()
    }

    fn size_hint(&self) -> SizeHint {
        if !self.sized {
            return SizeHint::default();
        }
        let len: usize = self.parts[self.next..]
            .iter()
            .map(|part| part.len(&self.model))
            .sum();
        SizeHint::with_exact(len as u64)
    }
}

async fn handle(
    state: &'static State,
    request: Request<Incoming>,
) -> Result<Response<MockBody>, Infallible> {
    let route = Route::of(request.method(), request.uri().path());
    // Read the body even for routes that ignore it, so the connection stays reusable.
    let body = match request.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return Ok(state.fixed(StatusCode::BAD_REQUEST, &BAD_BODY)),
    };
    if !state.delay.is_zero() {
        tokio::time::sleep(state.delay).await;
    }
    Ok(state.answer(route, &body))
}

/// Serves HTTP/1.1 with keep-alive on `listener` until the runtime shuts down.
pub async fn serve(listener: TcpListener, config: Config) {
    let state: &'static State = Box::leak(Box::new(State::new(config)));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                // Usually fd exhaustion under a connection storm: back off rather than spin or die.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        // Stream frames are small; Nagle would hold them back and distort chunk timing.
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = service_fn(move |request| handle(state, request));
            let _ = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
