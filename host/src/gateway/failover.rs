//! The failover loop: a request's candidates (a tier's chain, or its one route) tried in
//! order, each with its own retries, until one answers.
//!
//! Streamed and whole answers go through the same loop: an attempt ends when the answer can
//! start (a whole answer parsed; a stream's first chunk parsed — the client gets nothing
//! before that, see [`Gateway::chat_stream`]). So a failure is retried or passed on only
//! while nothing of the answer went out, and never after.
//!
//! Retryable (same provider, then the next candidate): the upstream unreachable, no answer
//! in time, a 429, a 5xx, a stream that broke before its first chunk. Passed on to the next
//! candidate without a retry on the same provider: a provider that is not registered, whose
//! endpoints are all ejected (unless it is the last candidate: see `endpoints.rs`), that is
//! busy past its queue timeout, that refused chatd's key (401/403), whose adapter failed, or
//! that answered something unparseable. Never retried: what is the request's own fault
//! (invalid, unsupported by the provider, an upstream 400/404/413/422 and other 4xx) and a
//! shutdown.
//!
//! Waits between attempts: exponential backoff with full jitter (a random wait up to
//! `retry_backoff_ms * 2^n`, at most `retry_max_wait_ms`), or the upstream's `Retry-After`
//! when it names one — unless that is longer than `retry_max_wait_ms`, or a later candidate
//! can take the request now. Everything stays within the request's deadline
//! (`request_timeout_secs`).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tracing::Instrument;
use tracing::field::Empty;

use super::admission::Slot;
use super::endpoints::{Health, Picked};
use super::in_flight::{InFlight, Kind};
use super::stream::Events;
use super::{Gateway, Provider};
use crate::contract::{ChatRequest, ChatResponse};
use crate::error::GatewayError;
use crate::routing::Route;

/// A provider's retry settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts after the first.
    pub retries: u32,
    pub backoff: Duration,
    pub max_wait: Duration,
}

/// What a failed attempt allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Retry this provider (when retries are left), then the next candidate.
    Retry,
    /// The next candidate, no retry here.
    Next,
    /// Answer the client with this failure.
    Stop,
}

/// How `e` may be handled; see the module notes.
pub fn verdict(e: &GatewayError) -> Verdict {
    use crate::error::AdapterFailure;
    match e {
        GatewayError::UpstreamUnreachable { .. }
        | GatewayError::UpstreamTimeout { .. }
        | GatewayError::RateLimited { .. }
        | GatewayError::UpstreamStream { .. } => Verdict::Retry,
        GatewayError::UpstreamStatus { status, .. } => match status {
            408 | 429 | 500..=599 => Verdict::Retry,
            401 | 403 => Verdict::Next,
            _ => Verdict::Stop,
        },
        GatewayError::UpstreamAuth { .. }
        | GatewayError::MalformedResponse { .. }
        | GatewayError::ProviderBusy { .. }
        | GatewayError::ProviderUnavailable { .. }
        | GatewayError::Route(_) => Verdict::Next,
        // A full sandbox is chatd's own overload: passing the request on would only add load.
        GatewayError::Adapter {
            failure: AdapterFailure::Capacity,
            ..
        } => Verdict::Stop,
        GatewayError::Adapter { .. } => Verdict::Next,
        _ => Verdict::Stop,
    }
}

/// What a failed attempt says about its endpoint.
pub fn health_of(e: &GatewayError) -> Health {
    match e {
        GatewayError::UpstreamUnreachable { .. }
        | GatewayError::UpstreamTimeout { .. }
        | GatewayError::UpstreamStream { .. } => Health::Failed,
        GatewayError::UpstreamStatus { status, .. } if *status >= 500 => Health::Failed,
        GatewayError::UpstreamStatus { .. }
        | GatewayError::UpstreamAuth { .. }
        | GatewayError::RateLimited { .. } => Health::Answered,
        _ => Health::Unknown,
    }
}

/// The outcome label of an attempt for `chatd_upstream_attempts_total`.
pub fn outcome_of(result: &Result<(), &GatewayError>) -> &'static str {
    match result {
        Ok(()) => "2xx",
        Err(GatewayError::UpstreamStatus { status, .. }) => match status {
            300..=399 => "3xx",
            400..=499 => "4xx",
            500..=599 => "5xx",
            _ => "other",
        },
        Err(GatewayError::RateLimited { .. }) => "4xx",
        Err(GatewayError::UpstreamTimeout { .. }) => "timeout",
        Err(GatewayError::UpstreamUnreachable { .. }) => "unreachable",
        Err(_) => "other",
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (0 for the first): a random duration up to
    /// `backoff * 2^retry` (full jitter), at most `max_wait`.
    pub fn backoff(&self, retry: u32) -> Duration {
        let ceiling = self
            .backoff
            .saturating_mul(1u32.checked_shl(retry.min(20)).unwrap_or(u32::MAX))
            .min(self.max_wait);
        let ceiling_us = u64::try_from(ceiling.as_micros()).unwrap_or(u64::MAX);
        if ceiling_us == 0 {
            return Duration::ZERO;
        }
        Duration::from_micros(rand::random_range(0..=ceiling_us))
    }

    /// The wait before retry number `retry` after `e`: the upstream's `Retry-After` if it
    /// named one (never less than the backoff), or the backoff. `None` when the upstream
    /// asks for longer than `max_wait`: not worth holding the request for.
    pub fn wait(&self, retry: u32, e: &GatewayError) -> Option<Duration> {
        let backoff = self.backoff(retry);
        match e
            .retry_after()
            .and_then(|v| parse_retry_after(v, SystemTime::now()))
        {
            Some(asked) if asked > self.max_wait => None,
            Some(asked) => Some(asked.max(backoff)),
            None => Some(backoff),
        }
    }
}

/// A `Retry-After` value: whole seconds, or an HTTP date (RFC 9110).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// An answer ready to go out.
// One per request, moved twice on its way out: boxing the stream would only add an
// allocation per streamed request.
#[allow(clippy::large_enum_variant)]
pub(super) enum Answer {
    Whole(ChatResponse),
    /// A stream whose first chunk (if any) is parsed.
    Stream(Events),
}

/// The attempt that answered, and what the answer holds on to until it ends.
pub(super) struct Served {
    pub route: Route,
    pub exchange: InFlight,
    pub answer: Answer,
    pub endpoint: Picked,
    pub slot: Slot,
}

/// A candidate that did not answer.
struct Failed {
    error: GatewayError,
    verdict: Verdict,
    /// Its bookkeeping, when it was attempted (a provider skipped without an attempt, its
    /// endpoints all ejected, counts no request).
    exchange: Option<InFlight>,
}

/// What a candidate's attempts need to know about the request.
struct Attempting<'a> {
    route: &'a Route,
    started: Instant,
    kind: Kind,
    cut: &'a super::cut::CutSignal,
    deadline: Instant,
    /// No candidate after this one.
    last: bool,
}

impl Gateway {
    /// Tries `request`'s candidates in order until one answers (see the module notes).
    /// `request.model` is the model as the client named it; `kind` says how to answer.
    pub(super) async fn failover(
        &self,
        request: &mut ChatRequest,
        kind: Kind,
    ) -> Result<Served, GatewayError> {
        let started = Instant::now();
        let snapshot = self.snapshot();
        let candidates = {
            let _routing = tracing::debug_span!("route", chatd.model = %request.model).entered();
            snapshot.candidates(&request.model)?
        };
        request.stream = matches!(kind, Kind::Stream);
        let deadline = started + snapshot.config.request_timeout();
        let requested = std::mem::take(&mut request.model);
        // The client's models and limits, checked once for the request (against the name it
        // asked for and its first candidate), whichever candidate then serves it.
        let meter = crate::clients::admit(&snapshot.config, &requested, candidates.first()).await?;
        let cut = self.cut_signal();
        let mut failure: Option<GatewayError> = None;
        let mut previous: Option<&Route> = None;
        let count = candidates.routes.len();
        for (position, route) in candidates.routes.iter().enumerate() {
            let Some(provider) = snapshot.providers.get(&route.provider) else {
                continue; // routing names only registered providers
            };
            if let Some(from) = previous {
                let error = failure.as_ref().map(|e| e.to_string()).unwrap_or_default();
                tracing::info!(
                    model = %requested,
                    from = %format_args!("{}/{}", from.provider, from.model),
                    to = %format_args!("{}/{}", route.provider, route.model),
                    %error,
                    "falling back to the next candidate"
                );
                self.stats.fell_back(&from.provider, &route.provider);
            }
            previous = Some(route);
            request.model.clone_from(&route.model);
            // What one candidate cannot carry another in the chain may: only the last one's
            // refusal is the answer. Anything else wrong with the request (an image URL that
            // cannot be fetched, say) is the request's own fault, whoever would serve it.
            if let Err(error) = self.ready(provider, request).await {
                let last = position + 1 == count;
                if last || error.code() != "unsupported_by_provider" {
                    return Err(error);
                }
                failure = Some(error);
                continue;
            }
            let attempting = Attempting {
                route,
                started,
                kind,
                cut: &cut,
                deadline,
                last: position + 1 == count,
            };
            match self.try_provider(provider, request, &attempting).await {
                Ok((answer, endpoint, slot, mut exchange)) => {
                    exchange.meter = meter;
                    return Ok(Served {
                        route: route.clone(),
                        exchange,
                        answer,
                        endpoint,
                        slot,
                    });
                }
                Err(Failed {
                    error,
                    verdict,
                    exchange,
                }) => {
                    if let Some(mut exchange) = exchange {
                        exchange.finish(false);
                    }
                    if verdict == Verdict::Stop || Instant::now() >= deadline {
                        return Err(error);
                    }
                    failure = Some(error);
                }
            }
        }
        Err(failure.unwrap_or_else(|| {
            GatewayError::Internal(format!("no candidate for model {requested:?}"))
        }))
    }

    /// Attempts on one provider: the first, then its retries.
    async fn try_provider(
        &self,
        provider: &Arc<Provider>,
        request: &ChatRequest,
        on: &Attempting<'_>,
    ) -> Result<(Answer, Picked, Slot, InFlight), Failed> {
        let failed = |error: GatewayError, exchange: Option<InFlight>| Failed {
            verdict: verdict(&error),
            error,
            exchange,
        };
        let mut exchange: Option<InFlight> = None;
        let mut tried: Vec<usize> = Vec::new();
        let mut retry = 0;
        loop {
            // Ejection says where to send a request first, never that it has nowhere to go:
            // the last candidate is tried even when all its endpoints are ejected.
            let mut picked = match provider.pick(&tried, on.last) {
                Ok(picked) => picked,
                Err(e) => return Err(failed(e, exchange)),
            };
            if provider.endpoints.len() > 1 {
                tried.push(picked.index);
            }
            let current = exchange.get_or_insert_with(|| {
                self.in_flight(provider.clone(), on.route, on.started, on.kind, on.cut)
            });
            let slot = match current.unless_cut(provider.admit()).await {
                Ok(slot) => slot,
                Err(e) => return Err(failed(e, exchange)),
            };
            let endpoint = &provider.endpoints[picked.index];
            let span = attempt_span(provider, &request.model, retry, endpoint.target.base_url());
            // Boxed: the attempt's state (adapter calls, the upstream exchange) is kilobytes, and
            // each wrapper below would move it by value and hold it twice (see bench/README.md).
            let work = Box::pin(self.attempt(on.kind, provider, &endpoint.target, request));
            let result = current
                .unless_cut(within(on.deadline, provider, work))
                .instrument(span.clone())
                .await;
            provider
                .stats
                .attempted(outcome_of(&result.as_ref().map(|_| ())));
            let error = match result {
                Ok(answer) => {
                    picked.report(
                        Health::Answered,
                        &provider.health,
                        &provider.name,
                        endpoint.target.base_url(),
                    );
                    let exchange = exchange.take().expect("created before the attempt");
                    return Ok((answer, picked, slot, exchange));
                }
                Err(error) => error,
            };
            drop(slot);
            if !span.is_disabled() {
                span.record("error.type", error.code());
            }
            picked.report(
                health_of(&error),
                &provider.health,
                &provider.name,
                endpoint.target.base_url(),
            );
            drop(picked);
            let verdict = verdict(&error);
            let give_up = |error| Failed {
                error,
                verdict,
                exchange: None,
            };
            if verdict != Verdict::Retry || retry >= provider.retry.retries {
                return Err(Failed {
                    exchange,
                    ..give_up(error)
                });
            }
            // A later candidate takes the request at once rather than waiting for this one.
            if !on.last && error.retry_after().is_some() {
                return Err(Failed {
                    exchange,
                    ..give_up(error)
                });
            }
            let Some(wait) = provider.retry.wait(retry, &error) else {
                return Err(Failed {
                    exchange,
                    ..give_up(error)
                });
            };
            if Instant::now() + wait >= on.deadline {
                return Err(Failed {
                    exchange,
                    ..give_up(error)
                });
            }
            retry += 1;
            provider.stats.retried();
            tracing::info!(
                provider = %provider.name,
                model = %request.model,
                retry,
                wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                code = error.code(),
                %error,
                "retrying"
            );
            let pause = async {
                tokio::time::sleep(wait).await;
                Ok(())
            };
            let current = exchange.as_ref().expect("created before the attempt");
            if let Err(e) = current.unless_cut(pause).await {
                return Err(failed(e, exchange));
            }
        }
    }

    /// One attempt: build, send, and parse until the answer can start.
    async fn attempt(
        &self,
        kind: Kind,
        provider: &Arc<Provider>,
        target: &crate::upstream::Target,
        request: &ChatRequest,
    ) -> Result<Answer, GatewayError> {
        match kind {
            Kind::Request => self
                .exchange(provider, target, request)
                .await
                .map(Answer::Whole),
            Kind::Stream => self
                .open_events(provider, target, request)
                .await
                .map(Answer::Stream),
        }
    }
}

/// `work` bounded by the request's deadline when that comes before the provider's own
/// timeout would (which bounds every attempt anyway).
async fn within<T>(
    deadline: Instant,
    provider: &Provider,
    work: impl std::future::Future<Output = Result<T, GatewayError>>,
) -> Result<T, GatewayError> {
    let now = Instant::now();
    if deadline >= now + provider.target.timeout {
        return work.await;
    }
    tokio::time::timeout_at(deadline.into(), work)
        .await
        .unwrap_or_else(|_| {
            Err(GatewayError::UpstreamTimeout {
                provider: provider.name.clone(),
                timeout: deadline.saturating_duration_since(now),
            })
        })
}

/// The span of one attempt (a child of the request's), with the GenAI semantic conventions'
/// attributes; disabled, it costs one check.
fn attempt_span(provider: &Provider, model: &str, retry: u32, url: &str) -> tracing::Span {
    let span = tracing::debug_span!(
        "attempt",
        otel.name = Empty,
        otel.kind = "client",
        gen_ai.operation.name = "chat",
        gen_ai.provider.name = %provider.name,
        gen_ai.request.model = %model,
        server.address = %url,
        chatd.retry = retry,
        error.type = Empty,
    );
    if !span.is_disabled() {
        span.record("otel.name", format!("chat {model}"));
    }
    span
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scrub::Scrubbed;

    fn status(status: u16, retry_after: Option<&'static str>) -> GatewayError {
        GatewayError::UpstreamStatus {
            provider: "p".into(),
            status,
            message: Scrubbed::fixed("m"),
            code: None,
            retry_after: retry_after.map(Scrubbed::fixed),
        }
    }

    #[test]
    fn only_what_is_not_the_requests_fault_is_retried() {
        for (e, wanted) in [
            (status(500, None), Verdict::Retry),
            (status(503, None), Verdict::Retry),
            (status(429, None), Verdict::Retry),
            (status(401, None), Verdict::Next),
            (status(400, None), Verdict::Stop),
            (status(404, None), Verdict::Stop),
            (status(413, None), Verdict::Stop),
            (status(422, None), Verdict::Stop),
            (
                GatewayError::UpstreamUnreachable {
                    provider: "p".into(),
                    message: Scrubbed::fixed("refused"),
                },
                Verdict::Retry,
            ),
            (
                GatewayError::UpstreamTimeout {
                    provider: "p".into(),
                    timeout: Duration::from_secs(1),
                },
                Verdict::Retry,
            ),
            (
                GatewayError::ProviderBusy {
                    provider: "p".into(),
                    limit: 1,
                    waited: Duration::ZERO,
                },
                Verdict::Next,
            ),
            (
                GatewayError::Unsupported {
                    provider: "p".into(),
                    message: Scrubbed::fixed("no tools"),
                },
                Verdict::Stop,
            ),
            (GatewayError::bad_request("bad"), Verdict::Stop),
            (
                GatewayError::ShuttingDown {
                    provider: "p".into(),
                },
                Verdict::Stop,
            ),
        ] {
            assert_eq!(verdict(&e), wanted, "{e}");
        }
        assert_eq!(health_of(&status(502, None)), Health::Failed);
        assert_eq!(health_of(&status(429, None)), Health::Answered);
        assert_eq!(health_of(&status(400, None)), Health::Answered);
        assert_eq!(health_of(&GatewayError::bad_request("x")), Health::Unknown);
        assert_eq!(outcome_of(&Ok(())), "2xx");
        assert_eq!(outcome_of(&Err(&status(503, None))), "5xx");
        assert_eq!(outcome_of(&Err(&status(404, None))), "4xx");
    }

    #[test]
    fn backoff_is_full_jitter_under_an_exponential_ceiling() {
        let policy = RetryPolicy {
            retries: 3,
            backoff: Duration::from_millis(100),
            max_wait: Duration::from_millis(350),
        };
        let mut below_half = false;
        for _ in 0..200 {
            let first = policy.backoff(0);
            assert!(first <= Duration::from_millis(100));
            below_half |= first < Duration::from_millis(50);
            assert!(policy.backoff(1) <= Duration::from_millis(200));
            // 400 ms capped at max_wait.
            assert!(policy.backoff(2) <= Duration::from_millis(350));
            assert!(policy.backoff(40) <= Duration::from_millis(350));
        }
        assert!(below_half, "waits are spread from zero, not fixed");
        let none = RetryPolicy {
            backoff: Duration::ZERO,
            ..policy
        };
        assert_eq!(none.backoff(3), Duration::ZERO);
    }

    #[test]
    fn retry_after_is_honoured_up_to_the_cap() {
        let policy = RetryPolicy {
            retries: 1,
            backoff: Duration::from_millis(10),
            max_wait: Duration::from_secs(5),
        };
        let wait = policy.wait(0, &status(503, Some("2"))).unwrap();
        assert_eq!(wait, Duration::from_secs(2));
        assert_eq!(policy.wait(0, &status(503, Some("9"))), None);
        assert!(policy.wait(0, &status(502, None)).unwrap() <= Duration::from_millis(10));
        let limited = GatewayError::RateLimited {
            provider: "p".into(),
            message: Scrubbed::fixed("slow"),
            retry_after: Some(Scrubbed::fixed("1")),
        };
        assert_eq!(policy.wait(0, &limited), Some(Duration::from_secs(1)));

        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:40 GMT", now),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after(" 7 ", now), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
