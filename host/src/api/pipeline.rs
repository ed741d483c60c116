//! The one chat pipeline every wire format goes through: request body → the format's parse →
//! the gateway → the format's rendering, with one streaming loop (early head and keep-alives
//! while the first token is slow, the failure after the head as the format's error event).
//!
//! A client that goes away drops the response body, which drops the [`ChatStream`] and with it
//! the upstream connection; the shutdown's cut reaches the loop as a `shutting_down` error
//! from the stream.

use std::pin::Pin;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderName, HeaderValue};
use axum::response::Response;
use bytes::Bytes;
use futures_util::Stream;
use serde::Serialize;

use super::formats::{Framing, RequestBody, Shape, StreamRender, WireFormat};
use super::{
    AppState, JsonBody, checked, log_failure, log_request, served_by, streaming_response,
    with_retry_after,
};
use crate::contract::ChatRequest;
use crate::error::GatewayError;
use crate::gateway::{ChatStream, Gateway};
use crate::memory::BodyBytes;

/// A format's chat endpoint: `POST` of its request body.
pub async fn chat<F: WireFormat>(
    State(state): State<AppState>,
    body: Result<JsonBody<F::Request>, GatewayError>,
) -> Response {
    let started = Instant::now();
    let ((request, mut shape), held) =
        match checked(body, F::Request::model, F::Request::into_contract) {
            Ok(parsed) => parsed,
            Err((e, named)) => {
                log_failure(F::ENDPOINT, &named, &e, ms(started.elapsed()));
                return failed::<F>(&e);
            }
        };
    let model = request.model.clone();
    if request.stream {
        return stream::<F>(&state.gateway, request, held, shape, model, started).await;
    }
    // The body's bytes count until the answer is here: a fallback may send the request again.
    let answered = state.gateway.chat(request).await;
    drop(held);
    match answered {
        Ok(outcome) => {
            log_request(
                F::ENDPOINT,
                &outcome.route.provider,
                &model,
                ms(outcome.latency),
            );
            let (provider, served) = (outcome.route.provider.clone(), outcome.route.model.clone());
            F::served(&mut shape, &outcome.route);
            served_by(F::answer(shape, outcome), &provider, &served)
        }
        Err(e) => {
            log_failure(F::ENDPOINT, &model, &e, ms(started.elapsed()));
            failed::<F>(&e)
        }
    }
}

const PROVIDER_HEADER: HeaderName = HeaderName::from_static(super::SERVED_PROVIDER);

/// A failure in the format's shape, with the headers every format's failures carry:
/// `Retry-After` when there is one, `x-should-retry: false` when a retry cannot help, and the
/// provider it concerns.
pub(crate) fn failed<F: WireFormat>(err: &GatewayError) -> Response {
    let mut response = with_retry_after(err, F::error(err));
    let headers = response.headers_mut();
    if !err.worth_retrying() {
        headers.insert(
            HeaderName::from_static("x-should-retry"),
            HeaderValue::from_static("false"),
        );
    }
    if let Some(value) = err
        .provider()
        .and_then(|p| HeaderValue::from_bytes(p.as_bytes()).ok())
    {
        headers.insert(PROVIDER_HEADER, value);
    }
    response
}

/// A stream being opened (until its first chunk has arrived, see `Gateway::chat_stream`).
type Opening = Pin<Box<dyn Future<Output = Result<ChatStream, GatewayError>> + Send>>;

/// A response body.
type BodyStream = Pin<Box<dyn Stream<Item = Result<Bytes, std::convert::Infallible>> + Send>>;

/// How long a stream's answer waits for the upstream's first event before chatd sends the
/// response head anyway (formats with a keep-alive form only). Until then a failure is a
/// normal HTTP error (clients raise their typed errors); after it, a client or a proxy with a
/// read timeout (nginx: 60 s) needs to see the connection alive while a model queues or
/// thinks.
const HEAD_PATIENCE: Duration = Duration::from_secs(5);

/// How often a stream whose head went out early sends its keep-alive while the first event
/// is still awaited.
const KEEP_ALIVE_EVERY: Duration = Duration::from_secs(10);

async fn stream<F: WireFormat>(
    gateway: &std::sync::Arc<Gateway>,
    request: ChatRequest,
    held: BodyBytes,
    shape: Shape<F>,
    model: String,
    started: Instant,
) -> Response {
    // The body's bytes count until the stream opens (its first chunk), even once the head
    // went out early; a client that goes away drops them with the opening.
    let opened = if !F::KEEPS_ALIVE {
        let opened = gateway.chat_stream(request).await;
        drop(held);
        opened
    } else {
        let gateway = gateway.clone();
        let mut opening: Opening = Box::pin(async move {
            let opened = gateway.chat_stream(request).await;
            drop(held);
            opened
        });
        match tokio::time::timeout(HEAD_PATIENCE, &mut opening).await {
            Ok(opened) => opened,
            Err(_) => {
                let body = once_open::<F>(opening, F::stream(shape), model, started);
                return streaming_response(F::FRAMING.content_type(), Body::from_stream(body));
            }
        }
    };
    match opened {
        Ok(stream) => {
            let mut shape = shape;
            F::served(&mut shape, &stream.route);
            log_request(
                F::ENDPOINT,
                stream.provider(),
                &model,
                ms(started.elapsed()),
            );
            let provider = stream.provider().to_owned();
            let served = stream.route.model.clone();
            let body = render(stream, F::stream(shape), F::FRAMING);
            let response = streaming_response(F::FRAMING.content_type(), Body::from_stream(body));
            served_by(response, &provider, &served)
        }
        Err(e) => {
            log_failure(F::ENDPOINT, &model, &e, ms(started.elapsed()));
            failed::<F>(&e)
        }
    }
}

/// The body of an open stream: the renderer's opening with the first chunk, then one write
/// per chunk that renders anything, then its end — or its error event, after which the
/// stream ends.
fn render<R: StreamRender>(
    stream: ChatStream,
    renderer: R,
    framing: Framing,
) -> impl Stream<Item = Result<Bytes, std::convert::Infallible>> {
    struct S<R> {
        stream: ChatStream,
        renderer: R,
        framing: Framing,
        opened: bool,
        over: bool,
    }
    let state = S {
        stream,
        renderer,
        framing,
        opened: false,
        over: false,
    };
    futures_util::stream::unfold(state, |mut s| async move {
        if s.over {
            return None;
        }
        let mut out = Events::new(s.framing);
        if !s.opened {
            // Goes out with the first chunk's events: one write instead of two.
            s.opened = true;
            s.renderer.open(&mut out);
        }
        loop {
            match s.stream.next().await {
                Some(Ok(chunk)) => {
                    let before = out.len();
                    s.renderer.chunk(chunk, &mut out);
                    if out.len() > before {
                        return Some((Ok(out.into_bytes()), s));
                    }
                }
                Some(Err(e)) => {
                    s.over = true;
                    s.renderer.error(&e, &mut out);
                    return Some((Ok(out.into_bytes()), s));
                }
                None => {
                    s.over = true;
                    s.renderer.end(&s.stream, &mut out);
                    return Some((Ok(out.into_bytes()), s));
                }
            }
        }
    })
}

/// The body of a stream answered before it opened: keep-alives until the first chunk, then
/// [`render`], or the failure as the stream's error event. The request's log line is written
/// when the first chunk (or the failure) arrives, as for any stream.
fn once_open<F: WireFormat>(
    opening: Opening,
    renderer: F::Stream,
    model: String,
    started: Instant,
) -> impl Stream<Item = Result<Bytes, std::convert::Infallible>> {
    /// A stream not open yet, and what its log line and rendering need.
    struct Waiting<R> {
        opening: Opening,
        renderer: R,
        model: String,
    }
    enum Phase<R> {
        /// The keep-alive that makes the head go out now.
        Head(Waiting<R>),
        Opening(Waiting<R>),
        Streaming(BodyStream),
        Over,
    }
    let waiting = Waiting {
        opening,
        renderer,
        model,
    };
    futures_util::stream::unfold(Phase::Head(waiting), move |phase| async move {
        use futures_util::StreamExt;
        match phase {
            Phase::Head(mut waiting) => {
                let mut out = Events::new(F::FRAMING);
                waiting.renderer.keep_alive(&mut out);
                Some((Ok(out.into_bytes()), Phase::Opening(waiting)))
            }
            Phase::Opening(mut waiting) => {
                match tokio::time::timeout(KEEP_ALIVE_EVERY, &mut waiting.opening).await {
                    Err(_) => {
                        let mut out = Events::new(F::FRAMING);
                        waiting.renderer.keep_alive(&mut out);
                        Some((Ok(out.into_bytes()), Phase::Opening(waiting)))
                    }
                    Ok(Ok(stream)) => {
                        let latency = ms(started.elapsed());
                        log_request(F::ENDPOINT, stream.provider(), &waiting.model, latency);
                        let mut body: BodyStream =
                            Box::pin(render(stream, waiting.renderer, F::FRAMING));
                        let first = body.next().await?;
                        Some((first, Phase::Streaming(body)))
                    }
                    Ok(Err(e)) => {
                        log_failure(F::ENDPOINT, &waiting.model, &e, ms(started.elapsed()));
                        let mut out = Events::new(F::FRAMING);
                        waiting.renderer.error(&e, &mut out);
                        Some((Ok(out.into_bytes()), Phase::Over))
                    }
                }
            }
            Phase::Streaming(mut body) => {
                let item = body.next().await?;
                Some((item, Phase::Streaming(body)))
            }
            Phase::Over => None,
        }
    })
}

/// The events one write of a stream carries, framed as the format frames them.
pub struct Events {
    framing: Framing,
    buf: Vec<u8>,
}

impl Events {
    pub(crate) fn new(framing: Framing) -> Events {
        Events {
            framing,
            buf: Vec::new(),
        }
    }

    /// One event without a name (SSE `data:` only; an NDJSON line).
    pub fn push(&mut self, data: &impl Serialize) {
        self.write(None, data);
    }

    /// One event named `name` (SSE `event: NAME`; NDJSON has no names: a line).
    pub fn named(&mut self, name: &str, data: &impl Serialize) {
        self.write(Some(name), data);
    }

    /// An SSE comment (clients skip it), SSE only.
    pub fn comment(&mut self, text: &str) {
        debug_assert_eq!(self.framing, Framing::Sse);
        self.buf.extend_from_slice(b": ");
        self.buf.extend_from_slice(text.as_bytes());
        self.buf.extend_from_slice(b"\n\n");
    }

    /// A data field that is not JSON (OpenAI's `data: [DONE]`), SSE only.
    pub fn raw_data(&mut self, data: &str) {
        debug_assert_eq!(self.framing, Framing::Sse);
        self.buf.extend_from_slice(b"data: ");
        self.buf.extend_from_slice(data.as_bytes());
        self.buf.extend_from_slice(b"\n\n");
    }

    fn write(&mut self, name: Option<&str>, data: &impl Serialize) {
        match self.framing {
            Framing::Sse => {
                if let Some(name) = name {
                    self.buf.extend_from_slice(b"event: ");
                    self.buf.extend_from_slice(name.as_bytes());
                    self.buf.push(b'\n');
                }
                self.buf.extend_from_slice(b"data: ");
                // Serializing a `Value` or a derived struct into a Vec cannot fail.
                let _ = serde_json::to_writer(&mut self.buf, data);
                self.buf.extend_from_slice(b"\n\n");
            }
            Framing::Ndjson => {
                let _ = serde_json::to_writer(&mut self.buf, data);
                self.buf.push(b'\n');
            }
        }
    }

    fn len(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn into_bytes(self) -> Bytes {
        Bytes::from(self.buf)
    }
}

/// Milliseconds with microsecond precision.
pub(crate) fn ms(d: Duration) -> f64 {
    (d.as_micros() as f64) / 1000.0
}
