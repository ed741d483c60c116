//! `loadgen`: a closed-loop HTTP/1.1 load driver with exact latency percentiles and
//! optional streaming (time-to-first-token, inter-token gap) measurement.

mod stats;
mod stream;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{CONTENT_TYPE, HOST, HeaderName, HeaderValue};
use hyper::{HeaderMap, Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use stats::{Summary, ms};
use stream::{ContentClock, ContentScanner};

const DEFAULT_DURATION: Duration = Duration::from_secs(10);

/// Closed-loop HTTP/1.1 load driver: each of -c workers owns one keep-alive connection and
/// sends its next request as soon as the previous response body has been read to the end.
///
/// Latency is the time from sending a request (connection set-up excluded) to the end of
/// its response body, for 2xx responses only; req/s is 2xx responses per second of the
/// measured phase (warm-up excluded, measured until the last in-flight request finished).
/// Non-2xx responses, connection errors and timeouts are counted separately and never
/// dropped; a connection the server closed between requests is re-opened and counted as a
/// reconnect. Percentiles are exact (nearest rank over all samples, held in memory).
/// Exits non-zero when no request succeeded.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Target URL; plain http only (e.g. http://127.0.0.1:8080/v1/chat/completions).
    #[arg(long)]
    url: Uri,
    /// HTTP method.
    #[arg(long, default_value = "POST")]
    method: Method,
    /// Request body read from this file.
    #[arg(long, conflicts_with = "body")]
    body_file: Option<PathBuf>,
    /// Request body given inline.
    #[arg(long)]
    body: Option<String>,
    /// Extra request header 'name: value' (repeatable); content-type defaults to application/json.
    #[arg(long = "header", short = 'H', value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// Concurrent workers, each with its own persistent connection.
    #[arg(short, long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    concurrency: u32,
    /// Stop after this many measured requests (all outcomes count).
    #[arg(short = 'n', long, conflicts_with = "duration")]
    requests: Option<u64>,
    /// Stop starting requests after this many measured seconds [default: 10 unless -n is given].
    #[arg(short, long, value_parser = parse_secs)]
    duration: Option<Duration>,
    /// Seconds of load before measuring; their results are discarded.
    #[arg(long, default_value = "1", value_parser = parse_secs)]
    warmup: Duration,
    /// Measure streamed responses: time to first token and gaps between tokens.
    ///
    /// The body is split into lines across frames (a frame may end mid-line; a line counts
    /// when its terminating newline arrives, or at end of body). A line is a content event
    /// when its JSON (after an optional SSE "data:" prefix) has a non-empty string at
    /// choices[0].delta.content (OpenAI SSE), message.content (Ollama chat NDJSON),
    /// response (Ollama generate NDJSON), top-level content (chatd native stream),
    /// delta.text (Anthropic Messages) or the delta of a response.output_text.delta event
    /// (OpenAI Responses).
    /// "[DONE]", role-only or empty deltas, usage chunks, event:/id: lines and comments are
    /// not content events.
    ///
    /// TTFT = time from sending the request to receiving the body frame that completes the
    /// first content event. Inter-chunk gap = time between the frames that complete
    /// successive content events of one response (0 when two events arrive in one frame).
    /// Only 2xx responses are timed; a 2xx response without any content event is counted
    /// as "without content", and JSON-looking lines that fail to parse are counted too.
    #[arg(long, verbatim_doc_comment)]
    stream: bool,
    /// Print one JSON object instead of a human-readable table.
    #[arg(long)]
    json: bool,
    /// Tokio worker threads driving the connections.
    #[arg(long, alias = "threads", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    workers: u16,
    /// Per-request limit in seconds (send to end of body); a timed-out connection is replaced.
    #[arg(long, default_value = "30", value_parser = parse_secs)]
    timeout: Duration,
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    let secs: f64 = s.parse().map_err(|e| format!("{e}"))?;
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{e}"))
}

#[derive(Clone, Copy, Debug)]
enum Stop {
    Requests(u64),
    Duration(Duration),
}

/// Everything a worker needs, resolved once before the run.
#[derive(Debug)]
struct Plan {
    addr: SocketAddr,
    method: Method,
    /// Origin-form target (path and query) as sent on the wire.
    target: Uri,
    headers: HeaderMap,
    body: Bytes,
    concurrency: u32,
    stop: Stop,
    warmup: Duration,
    timeout: Duration,
    stream: bool,
}

impl Plan {
    async fn from_args(args: &Args) -> Result<Self, String> {
        let url = &args.url;
        match url.scheme_str() {
            Some("http") => {}
            other => return Err(format!("only http:// URLs are supported, got {other:?}")),
        }
        let authority = url.authority().ok_or("URL has no host")?;
        let port = authority.port_u16().unwrap_or(80);
        let addr = tokio::net::lookup_host((authority.host(), port))
            .await
            .map_err(|e| format!("cannot resolve {authority}: {e}"))?
            .next()
            .ok_or_else(|| format!("{authority} resolved to no address"))?;
        let target: Uri = url
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .parse()
            .map_err(|e| format!("bad path: {e}"))?;

        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let host = HeaderValue::from_str(authority.as_str()).map_err(|e| format!("{e}"))?;
        headers.insert(HOST, host);
        for raw in &args.headers {
            let (name, value) = raw
                .split_once(':')
                .ok_or_else(|| format!("header {raw:?} is not 'name: value'"))?;
            let name = HeaderName::from_bytes(name.trim().as_bytes())
                .map_err(|e| format!("header {raw:?}: {e}"))?;
            let value =
                HeaderValue::from_str(value.trim()).map_err(|e| format!("header {raw:?}: {e}"))?;
            // A repeated --header replaces the default rather than sending two values.
            headers.insert(name, value);
        }

        let body = match (&args.body, &args.body_file) {
            (Some(body), _) => Bytes::from(body.clone()),
            (None, Some(path)) => Bytes::from(
                std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?,
            ),
            (None, None) => Bytes::new(),
        };
        let stop = match (args.requests, args.duration) {
            (Some(n), _) => Stop::Requests(n),
            (None, Some(d)) => Stop::Duration(d),
            (None, None) => Stop::Duration(DEFAULT_DURATION),
        };
        Ok(Self {
            addr,
            method: args.method.clone(),
            target,
            headers,
            body,
            concurrency: args.concurrency,
            stop,
            warmup: args.warmup,
            timeout: args.timeout,
            stream: args.stream,
        })
    }

    fn request(&self) -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::new(self.body.clone()));
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.target.clone();
        *request.headers_mut() = self.headers.clone();
        request
    }
}

/// Outcomes and samples of one worker (or, after merging, of the whole run).
#[derive(Debug, Default)]
struct Tally {
    ok: u64,
    non_2xx: u64,
    statuses: BTreeMap<u16, u64>,
    errors: u64,
    timeouts: u64,
    reconnects: u64,
    first_error: Option<String>,
    latency: Vec<u64>,
    ttft: Vec<u64>,
    gaps: Vec<u64>,
    without_content: u64,
    parse_errors: u64,
}

impl Tally {
    fn error(&mut self, error: impl std::fmt::Display) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(error.to_string());
        }
    }

    fn merge(&mut self, other: Tally) {
        self.ok += other.ok;
        self.non_2xx += other.non_2xx;
        for (status, count) in other.statuses {
            *self.statuses.entry(status).or_default() += count;
        }
        self.errors += other.errors;
        self.timeouts += other.timeouts;
        self.reconnects += other.reconnects;
        self.first_error = self.first_error.take().or(other.first_error);
        self.latency.extend(other.latency);
        self.ttft.extend(other.ttft);
        self.gaps.extend(other.gaps);
        self.without_content += other.without_content;
        self.parse_errors += other.parse_errors;
    }
}

/// Per-request stream state, reused so the hot loop does not allocate.
#[derive(Default)]
struct StreamScratch {
    scanner: ContentScanner,
    clock: ContentClock,
    ttft: Vec<u64>,
    gaps: Vec<u64>,
}

impl StreamScratch {
    fn reset(&mut self) {
        self.scanner = ContentScanner::default();
        self.clock = ContentClock::default();
        self.ttft.clear();
        self.gaps.clear();
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

async fn connect(addr: SocketAddr) -> Result<SendRequest<Full<Bytes>>, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    // Requests are small; Nagle would add delay that is not the server's.
    let _ = stream.set_nodelay(true);
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    // A connection failure surfaces through the sender, so the driver's result is not needed.
    tokio::spawn(connection);
    Ok(sender)
}

/// Sends one request and reads the body to the end, feeding 2xx bodies to the stream timer.
async fn exchange(
    sender: &mut SendRequest<Full<Bytes>>,
    request: Request<Full<Bytes>>,
    sent: Instant,
    scratch: Option<&mut StreamScratch>,
) -> Result<StatusCode, hyper::Error> {
    let response = sender.send_request(request).await?;
    let status = response.status();
    let mut body = response.into_body();
    let mut scratch = scratch.filter(|_| status.is_success());
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        if let (Some(s), Some(data)) = (scratch.as_deref_mut(), frame.data_ref()) {
            // Stamp before parsing so TTFT is arrival time, not arrival plus our JSON work.
            let at = sent.elapsed();
            let events = s.scanner.feed(data);
            s.clock.observe(events, at, &mut s.ttft, &mut s.gaps);
        }
    }
    if let Some(s) = scratch {
        let events = s.scanner.finish();
        s.clock
            .observe(events, sent.elapsed(), &mut s.ttft, &mut s.gaps);
    }
    Ok(status)
}

async fn worker(
    plan: Arc<Plan>,
    issued: Arc<AtomicU64>,
    measure_from: Instant,
) -> (Tally, Instant) {
    let mut measured = Tally::default();
    // Warm-up outcomes land here and are thrown away.
    let mut warmup = Tally::default();
    let mut scratch = StreamScratch::default();
    let mut sender: Option<SendRequest<Full<Bytes>>> = None;
    let deadline = match plan.stop {
        Stop::Duration(d) => Some(measure_from + d),
        Stop::Requests(_) => None,
    };
    loop {
        let now = Instant::now();
        let tally = if now >= measure_from {
            if deadline.is_some_and(|deadline| now >= deadline) {
                break;
            }
            if let Stop::Requests(n) = plan.stop
                && issued.fetch_add(1, Ordering::Relaxed) >= n
            {
                break;
            }
            &mut measured
        } else {
            &mut warmup
        };

        // The server may close an idle or `Connection: close` connection between requests;
        // that is not a failed request, so reconnect without counting an error.
        if let Some(s) = &mut sender
            && s.ready().await.is_err()
        {
            sender = None;
            tally.reconnects += 1;
        }
        if sender.is_none() {
            match connect(plan.addr).await {
                Ok(s) => sender = Some(s),
                Err(error) => {
                    tally.error(error);
                    // A refused connect returns at once; pause so a dead target is not hammered.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let Some(s) = sender.as_mut() else { continue };

        scratch.reset();
        let timed = plan.stream.then_some(&mut scratch);
        let sent = Instant::now();
        let result =
            tokio::time::timeout(plan.timeout, exchange(s, plan.request(), sent, timed)).await;
        let latency = sent.elapsed();
        match result {
            Ok(Ok(status)) if status.is_success() => {
                tally.ok += 1;
                tally.latency.push(nanos(latency));
                if plan.stream {
                    if scratch.clock.saw_content() {
                        tally.ttft.extend_from_slice(&scratch.ttft);
                        tally.gaps.extend_from_slice(&scratch.gaps);
                    } else {
                        tally.without_content += 1;
                    }
                    tally.parse_errors += scratch.scanner.parse_errors;
                }
            }
            Ok(Ok(status)) => {
                tally.non_2xx += 1;
                *tally.statuses.entry(status.as_u16()).or_default() += 1;
            }
            Ok(Err(error)) => {
                tally.error(error);
                sender = None;
            }
            Err(_) => {
                tally.timeouts += 1;
                if tally.first_error.is_none() {
                    tally.first_error = Some(format!("timed out after {:?}", plan.timeout));
                }
                sender = None;
            }
        }
    }
    (measured, Instant::now())
}

struct Outcome {
    tally: Tally,
    elapsed: Duration,
}

async fn run(plan: Arc<Plan>) -> Outcome {
    let issued = Arc::new(AtomicU64::new(0));
    let measure_from = Instant::now() + plan.warmup;
    let handles: Vec<_> = (0..plan.concurrency)
        .map(|_| tokio::spawn(worker(plan.clone(), issued.clone(), measure_from)))
        .collect();
    let mut tally = Tally::default();
    let mut end = measure_from;
    for handle in handles {
        match handle.await {
            Ok((worker_tally, worker_end)) => {
                tally.merge(worker_tally);
                end = end.max(worker_end);
            }
            Err(error) => tally.error(format!("worker task failed: {error}")),
        }
    }
    Outcome {
        tally,
        elapsed: end.saturating_duration_since(measure_from),
    }
}

/// Selected percentiles in milliseconds (null without samples) plus the sample count.
fn summary_json(s: &Summary, fields: &[(&str, u64)]) -> serde_json::Value {
    let mut map: serde_json::Map<String, serde_json::Value> = fields
        .iter()
        .map(|&(name, nanos)| {
            let value = if s.count == 0 {
                serde_json::Value::Null
            } else {
                ms(nanos).into()
            };
            (name.to_owned(), value)
        })
        .collect();
    map.insert("samples".to_owned(), s.count.into());
    map.into()
}

/// One table row of percentiles in milliseconds, saying so when there were no samples.
fn summary_row(label: &str, s: &Summary, fields: &[(&str, u64)]) -> String {
    if s.count == 0 {
        return format!("  {label:<17}no samples");
    }
    let cells: Vec<String> = fields
        .iter()
        .map(|&(name, nanos)| format!("{name} {:.3}", ms(nanos)))
        .collect();
    format!("  {label:<17}{}", cells.join("  "))
}

fn report(args: &Args, plan: &Plan, mut outcome: Outcome) -> ExitCode {
    let t = &mut outcome.tally;
    let secs = outcome.elapsed.as_secs_f64();
    let rps = if secs > 0.0 { t.ok as f64 / secs } else { 0.0 };
    let latency = Summary::of(&mut t.latency);
    let ttft = Summary::of(&mut t.ttft);
    let gaps = Summary::of(&mut t.gaps);
    let content_events = ttft.count + gaps.count;
    let latency_fields = [
        ("p50", latency.p50),
        ("p90", latency.p90),
        ("p99", latency.p99),
        ("max", latency.max),
    ];
    let ttft_fields = [("p50", ttft.p50), ("p99", ttft.p99)];
    let gap_fields = [("p50", gaps.p50), ("p99", gaps.p99), ("max", gaps.max)];

    if args.json {
        let mut with_mean = latency_fields.to_vec();
        with_mean.push(("mean", latency.mean));
        let mut out = serde_json::json!({
            "url": args.url.to_string(),
            "method": plan.method.as_str(),
            "concurrency": plan.concurrency,
            "measured_secs": (secs * 1000.0).round() / 1000.0,
            "requests_ok": t.ok,
            "non_2xx": t.non_2xx,
            "non_2xx_by_status": t.statuses.iter().map(|(k, v)| (k.to_string(), *v)).collect::<BTreeMap<_, _>>(),
            "connection_errors": t.errors,
            "timeouts": t.timeouts,
            "reconnects": t.reconnects,
            "first_error": t.first_error,
            "req_per_sec": (rps * 10.0).round() / 10.0,
            "latency_ms": summary_json(&latency, &with_mean),
        });
        if plan.stream {
            out["stream"] = serde_json::json!({
                "ttft_ms": summary_json(&ttft, &ttft_fields),
                "inter_chunk_ms": summary_json(&gaps, &gap_fields),
                "content_events": content_events,
                "responses_without_content": t.without_content,
                "unparsable_lines": t.parse_errors,
            });
        }
        println!("{out}");
    } else {
        let warmup = plan.warmup.as_secs_f64();
        println!(
            "{} {}  c={}  measured {secs:.3} s (after {warmup} s warm-up)",
            plan.method, args.url, plan.concurrency
        );
        println!("  requests ok      {}", t.ok);
        let statuses: Vec<String> = t
            .statuses
            .iter()
            .map(|(status, count)| format!("{status}: {count}"))
            .collect();
        if statuses.is_empty() {
            println!("  non-2xx          {}", t.non_2xx);
        } else {
            println!("  non-2xx          {} ({})", t.non_2xx, statuses.join(", "));
        }
        println!("  conn errors      {}", t.errors);
        println!("  timeouts         {}", t.timeouts);
        println!("  reconnects       {}", t.reconnects);
        println!("  req/s            {rps:.1}");
        println!("{}", summary_row("latency ms", &latency, &latency_fields));
        if plan.stream {
            println!("{}", summary_row("ttft ms", &ttft, &ttft_fields));
            println!("{}", summary_row("inter-chunk ms", &gaps, &gap_fields));
            println!(
                "  stream           {content_events} content events, {} responses without content, {} unparsable lines",
                t.without_content, t.parse_errors
            );
        }
        if let Some(error) = &t.first_error {
            println!("  first error      {error}");
        }
    }
    if t.ok == 0 {
        eprintln!("loadgen: no request succeeded");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let args = Args::parse();
    // One thread: a current-thread runtime avoids cross-thread wake-ups and work stealing,
    // which would otherwise cost the driver more CPU than the requests themselves.
    let runtime = if args.workers == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(usize::from(args.workers))
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("loadgen: cannot start runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let plan = match Plan::from_args(&args).await {
            Ok(plan) => plan,
            Err(error) => {
                eprintln!("loadgen: {error}");
                return ExitCode::from(2);
            }
        };
        let plan = Arc::new(plan);
        let outcome = run(plan.clone()).await;
        report(&args, &plan, outcome)
    })
}
