//! What a limit means, as pure functions over a clock reading, shared by both stores.
//!
//! - **Per-minute limits** (`requests_per_minute`, `tokens_per_minute`) are token buckets,
//!   kept as GCRA state: one number per limit, the *theoretical arrival time* (TAT) at which
//!   the bucket would be full again. A bucket holds one minute's allowance and refills
//!   continuously, so there is no burst at window edges and `reset` says when it is full.
//! - **Budgets** (`tokens_per_day`, `tokens_per_month`) are counters over UTC calendar days and
//!   months, reset at 00:00 UTC (of the 1st, for months).
//!
//! Tokens are known only when an answer ends. A request is therefore admitted while its
//! client's token allowance is not yet spent (the bucket holds at least one token, the budget
//! has at least one left), and its input + output tokens are debited when it ends, streams
//! included. The bucket may go into debt: a client over its allowance waits until the debt is
//! refilled. So a client overshoots a token limit by at most the answers it had in flight when
//! the allowance ran out; requests per minute are exact.

use std::sync::Arc;
use std::time::Duration;

/// Microseconds since the Unix epoch (UTC), as the stores and Redis keys count time.
pub type Micros = u64;

const MINUTE_US: f64 = 60_000_000.0;
const DAY_US: u64 = 86_400_000_000;

/// Where "now" comes from: the system clock, or a test's.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Micros;
}

/// The system's wall clock. Wall time (not a monotonic clock) because replicas share counters
/// through Redis and budgets follow the calendar; replicas should keep their clocks in sync
/// (NTP), a skew moves window edges by as much.
#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Micros {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64)
    }
}

/// A clock a test moves by hand.
#[derive(Debug, Default)]
pub struct ManualClock(std::sync::atomic::AtomicU64);

impl ManualClock {
    pub fn at(micros: Micros) -> Arc<ManualClock> {
        Arc::new(ManualClock(micros.into()))
    }
    pub fn advance(&self, by: Duration) {
        self.0
            .fetch_add(by.as_micros() as u64, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Micros {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The kinds of limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    RequestsPerMinute,
    TokensPerMinute,
    TokensPerDay,
    TokensPerMonth,
}

impl Kind {
    pub const ALL: [Kind; 4] = [
        Kind::RequestsPerMinute,
        Kind::TokensPerMinute,
        Kind::TokensPerDay,
        Kind::TokensPerMonth,
    ];

    /// The config key that sets it.
    pub fn name(self) -> &'static str {
        match self {
            Kind::RequestsPerMinute => "requests_per_minute",
            Kind::TokensPerMinute => "tokens_per_minute",
            Kind::TokensPerDay => "tokens_per_day",
            Kind::TokensPerMonth => "tokens_per_month",
        }
    }

    /// Short tag in store keys.
    pub fn tag(self) -> &'static str {
        match self {
            Kind::RequestsPerMinute => "rpm",
            Kind::TokensPerMinute => "tpm",
            Kind::TokensPerDay => "tpd",
            Kind::TokensPerMonth => "tpmo",
        }
    }

    pub fn counts_tokens(self) -> bool {
        !matches!(self, Kind::RequestsPerMinute)
    }

    fn is_bucket(self) -> bool {
        matches!(self, Kind::RequestsPerMinute | Kind::TokensPerMinute)
    }
}

/// One limit that applies to a request: the client's own, or one of its per-model ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    /// The client it belongs to.
    pub client: Arc<str>,
    /// Identifies the counter across requests and replicas: `<client>:<tag>` or
    /// `<client>:<tag>:<model pattern>`.
    pub id: Arc<str>,
    pub kind: Kind,
    pub limit: u64,
    /// The model pattern for a per-model limit.
    pub pattern: Option<Arc<str>>,
}

impl Limit {
    /// A client-wide limit, for tests of the limit logic and the stores.
    #[cfg(test)]
    pub(crate) fn of(client: &str, kind: Kind, limit: u64) -> Limit {
        Limit {
            client: client.into(),
            id: format!("{client}:{}", kind.tag()).into(),
            kind,
            limit,
            pattern: None,
        }
    }

    /// Microseconds of refill per unit (request or token) of a bucket.
    fn interval(&self) -> f64 {
        MINUTE_US / self.limit as f64
    }

    /// The calendar window `now` falls in, for a budget: its number (days or months since
    /// 1970) and its end.
    pub fn window(&self, now: Micros) -> (u64, Micros) {
        match self.kind {
            Kind::TokensPerMonth => month_window(now),
            _ => {
                let day = now / DAY_US;
                (day, (day + 1) * DAY_US)
            }
        }
    }
}

/// A counter's stored state: a bucket's TAT or a budget's tokens used in its window.
pub type State = Option<u64>;

/// What one limit says about a request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    pub allowed: bool,
    /// Left after this request (requests) / now (tokens).
    pub remaining: u64,
    /// Until the counter is back to its full allowance.
    pub reset: Duration,
    /// When refused: until a request would be admitted.
    pub retry_after: Duration,
    /// The state to store when the request is admitted (buckets of requests only).
    pub write: Option<u64>,
}

/// Reads `limit` for one request at `now`, given its stored state.
pub fn read(limit: &Limit, state: State, now: Micros) -> Reading {
    if limit.kind.is_bucket() {
        let interval = limit.interval();
        let tat = state.unwrap_or(now).max(now) as f64;
        let now_f = now as f64;
        let cost = if limit.kind == Kind::RequestsPerMinute {
            interval
        } else {
            0.0
        };
        // Admitted when the bucket still holds a unit after this request's cost: its
        // TAT (plus the cost, plus one unit for tokens) stays within one minute from now.
        let needed = if cost > 0.0 { cost } else { interval };
        let after = tat + cost;
        let allowed = tat + needed - now_f <= MINUTE_US + 0.5;
        let level = (MINUTE_US - (if allowed { after } else { tat } - now_f)) / interval;
        Reading {
            allowed,
            remaining: level.max(0.0).floor() as u64,
            reset: micros(if allowed { after } else { tat } - now_f),
            retry_after: micros(tat + needed - now_f - MINUTE_US),
            write: (allowed && cost > 0.0).then_some(after.round() as u64),
        }
    } else {
        let (_, end) = limit.window(now);
        let used = state.unwrap_or(0);
        let allowed = used < limit.limit;
        Reading {
            allowed,
            remaining: limit.limit.saturating_sub(used),
            reset: Duration::from_micros(end.saturating_sub(now)),
            retry_after: Duration::from_micros(end.saturating_sub(now)),
            write: None,
        }
    }
}

/// Reads `limit` without a request: what is left now (the admin listing).
pub fn peek(limit: &Limit, state: State, now: Micros) -> Reading {
    let mut r = read(limit, state, now);
    if r.write.is_some() {
        // `read` charged one request; a look charges nothing.
        r.remaining += 1;
        r.reset = r.reset.saturating_sub(micros(limit.interval()));
        r.write = None;
    }
    r.allowed = r.remaining > 0;
    r
}

/// The state after `tokens` are debited from a token limit.
pub fn debit(limit: &Limit, state: State, now: Micros, tokens: u64) -> u64 {
    if limit.kind.is_bucket() {
        let tat = state.unwrap_or(now).max(now) as f64;
        (tat + tokens as f64 * limit.interval()).round() as u64
    } else {
        state.unwrap_or(0).saturating_add(tokens)
    }
}

/// How long a counter must be kept: a bucket until it is full again (it then reads as
/// absent), a budget until its window ends.
pub fn keep_for(limit: &Limit, state: u64, now: Micros) -> Duration {
    if limit.kind.is_bucket() {
        Duration::from_micros(state.saturating_sub(now)) + Duration::from_secs(1)
    } else {
        Duration::from_micros(limit.window(now).1.saturating_sub(now)) + Duration::from_secs(60)
    }
}

fn micros(us: f64) -> Duration {
    Duration::from_micros(us.max(0.0).ceil() as u64)
}

/// What the limits said about one request, for its answer's headers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict {
    pub allowed: bool,
    /// The request limit with the least left, if any applies.
    pub requests: Option<Window>,
    /// The token limit with the least left, if any applies.
    pub tokens: Option<Window>,
    /// When refused: which limit, and how long until a request would be admitted.
    pub refused: Option<(Kind, Duration)>,
}

/// One limit's state as the `x-ratelimit-*` headers tell it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    pub limit: u64,
    pub remaining: u64,
    pub reset: Duration,
}

/// Combines the readings of every limit that applies to a request into one verdict.
pub fn verdict(limits: &[Limit], readings: &[Reading]) -> Verdict {
    let mut v = Verdict {
        allowed: readings.iter().all(|r| r.allowed),
        requests: None,
        tokens: None,
        refused: None,
    };
    for (limit, r) in limits.iter().zip(readings) {
        let window = Window {
            limit: limit.limit,
            remaining: r.remaining,
            reset: r.reset,
        };
        let slot = if limit.kind.counts_tokens() {
            &mut v.tokens
        } else {
            &mut v.requests
        };
        if slot.is_none_or(|s| window.remaining < s.remaining) {
            *slot = Some(window);
        }
        if !r.allowed {
            // The longest wait wins: every refusing limit must have room again.
            if v.refused.is_none_or(|(_, wait)| r.retry_after > wait) {
                v.refused = Some((limit.kind, r.retry_after.max(Duration::from_millis(1))));
            }
        }
    }
    v
}

/// The UTC month `now` falls in: months since January 1970, and the first microsecond of
/// the next month.
fn month_window(now: Micros) -> (u64, Micros) {
    let days = (now / DAY_US) as i64;
    let (y, m, _) = civil_from_days(days);
    let index = (y - 1970) as u64 * 12 + (m - 1) as u64;
    let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    let end = days_from_civil(ny, nm, 1) as u64 * DAY_US;
    (index, end)
}

// Calendar conversions for UTC budgets (H. Hinnant's public-domain algorithms): chatd has no
// date crate, and these two functions are all it needs of one.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A duration as OpenAI writes `x-ratelimit-reset-*`: `20ms`, `1s`, `1.5s`, `6m0s`, `1h2m3s`.
pub fn reset_text(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let frac = (ms % 1000) / 100;
    let s = if frac > 0 && h == 0 && m == 0 {
        format!("{s}.{frac}s")
    } else {
        format!("{s}s")
    };
    match (h, m) {
        (0, 0) => s,
        (0, m) => format!("{m}m{s}"),
        (h, m) => format!("{h}h{m}m{s}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Micros = 1_767_225_600_000_000; // 2026-01-01T00:00:00Z

    fn limit(kind: Kind, n: u64) -> Limit {
        Limit::of("c", kind, n)
    }

    #[test]
    fn requests_per_minute_allow_exactly_the_limit_then_refill_one_by_one() {
        let l = limit(Kind::RequestsPerMinute, 3);
        let mut state = None;
        let mut remaining = Vec::new();
        for _ in 0..3 {
            let r = read(&l, state, T0);
            assert!(r.allowed);
            remaining.push(r.remaining);
            state = r.write;
        }
        assert_eq!(remaining, [2, 1, 0]);
        let refused = read(&l, state, T0);
        assert!(!refused.allowed);
        assert_eq!(refused.write, None);
        assert_eq!(refused.retry_after, Duration::from_secs(20));
        assert_eq!(refused.reset, Duration::from_secs(60));
        // One request's worth refills every 20 s.
        assert!(!read(&l, state, T0 + 19_999_000).allowed);
        let later = read(&l, state, T0 + 20_000_000);
        assert!(later.allowed);
        assert_eq!(later.remaining, 0);
        // A full minute later the bucket is full again.
        assert_eq!(read(&l, state, T0 + 60_000_000).remaining, 2);
    }

    #[test]
    fn tokens_per_minute_admit_while_any_are_left_and_go_into_debt() {
        let l = limit(Kind::TokensPerMinute, 600);
        let r = read(&l, None, T0);
        assert!(r.allowed && r.write.is_none());
        assert_eq!(r.remaining, 600);
        let state = debit(&l, None, T0, 599);
        assert_eq!(read(&l, Some(state), T0).remaining, 1);
        assert!(read(&l, Some(state), T0).allowed);
        // An answer larger than what was left: the client is in debt for 1000 tokens.
        let state = debit(&l, Some(state), T0, 1001);
        let r = read(&l, Some(state), T0);
        assert!(!r.allowed);
        assert_eq!(r.remaining, 0);
        // 1000 tokens of debt + 1 token to spend, at 10 tokens per second.
        assert_eq!(r.retry_after, Duration::from_micros(100_100_000));
        assert!(!read(&l, Some(state), T0 + 100_000_000).allowed);
        assert!(read(&l, Some(state), T0 + 100_100_000).allowed);
        assert_eq!(keep_for(&l, state, T0), Duration::from_secs(161));
    }

    #[test]
    fn budgets_follow_utc_days_and_months() {
        let day = limit(Kind::TokensPerDay, 100);
        assert!(read(&day, Some(99), T0).allowed);
        let r = read(&day, Some(100), T0 + 3_600_000_000);
        assert!(!r.allowed);
        assert_eq!(r.retry_after, Duration::from_secs(23 * 3600));
        assert_eq!(debit(&day, Some(40), T0, 70), 110);
        assert_eq!(day.window(T0).0 + 1, day.window(T0 + DAY_US).0);

        let month = limit(Kind::TokensPerMonth, 10);
        let (jan, end) = month.window(T0 + 5 * DAY_US);
        assert_eq!(end, T0 + 31 * DAY_US);
        let (feb, feb_end) = month.window(end);
        assert_eq!(feb, jan + 1);
        // 2026 is not a leap year; 2028 is.
        assert_eq!(feb_end, end + 28 * DAY_US);
        let leap_feb = days_from_civil(2028, 2, 1) as u64 * DAY_US;
        assert_eq!(month.window(leap_feb).1 - leap_feb, 29 * DAY_US);
        let dec = days_from_civil(2026, 12, 31) as u64 * DAY_US;
        assert_eq!(
            month.window(dec).1,
            days_from_civil(2027, 1, 1) as u64 * DAY_US
        );
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(days_from_civil(2000, 2, 29)), (2000, 2, 29));
    }

    #[test]
    fn a_verdict_reports_the_tightest_limits_and_the_longest_wait() {
        let limits = [
            limit(Kind::RequestsPerMinute, 10),
            limit(Kind::TokensPerMinute, 100),
            limit(Kind::TokensPerDay, 50),
        ];
        let readings: Vec<Reading> = limits
            .iter()
            .zip([None, None, Some(20)])
            .map(|(l, s)| read(l, s, T0))
            .collect();
        let v = verdict(&limits, &readings);
        assert!(v.allowed && v.refused.is_none());
        assert_eq!(v.requests.unwrap().remaining, 9);
        assert_eq!(v.tokens.unwrap().remaining, 30);
        assert_eq!(v.tokens.unwrap().limit, 50);

        let readings: Vec<Reading> = limits
            .iter()
            .zip([None, Some(debit(&limits[1], None, T0, 150)), Some(50)])
            .map(|(l, s)| read(l, s, T0))
            .collect();
        let v = verdict(&limits, &readings);
        assert!(!v.allowed);
        // The day's budget waits longest.
        assert_eq!(v.refused.unwrap().0, Kind::TokensPerDay);
    }

    #[test]
    fn reset_times_read_like_openais() {
        for (ms, text) in [
            (20, "20ms"),
            (1000, "1s"),
            (1500, "1.5s"),
            (360_000, "6m0s"),
            (3_723_000, "1h2m3s"),
        ] {
            assert_eq!(reset_text(Duration::from_millis(ms)), text);
        }
    }
}
