//! Limit counters in Redis (or Valkey), shared by every replica that names the same store.
//!
//! A check is one Lua script (one round trip): it reads every limit that applies to the
//! request and, only when all admit it, charges the request buckets, atomically. Tokens are
//! debited by a second script after the answer, off the request's path. Every key of a client
//! carries the client's name as a hash tag (`{alice}`), so one script's keys share a slot on a
//! Redis Cluster too.
//!
//! Each call is bounded by `chatd.limits.timeout_ms`. A call that fails or times out marks the
//! store down: requests are then checked against the in-process store (`fail_open = true`)
//! or refused with 503 (`fail_open = false`) without waiting on Redis, while one background
//! task pings Redis until it answers again. The connection manager reconnects by itself.
//!
//! Each server thread has a connection of its own (as it has its own upstream pool): a check
//! then runs on the thread that serves the request, instead of hopping to another thread's
//! connection task and back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::memory::MemoryStore;
use crate::clients::limits::{Kind, Limit, Micros, Reading, State, keep_for, read};

/// How often an unreachable store is tried again.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// Reads every limit; charges the request buckets when all admit. Returns `ok` and the
/// state read for each key (`-1` when absent). ARGV: now (µs), then per key: kind (`r`
/// request bucket, `t` token bucket, `b` budget) and its parameter (a bucket's µs per unit,
/// a budget's limit). Mirrors `limits::read`.
const CHECK: &str = r#"
local now = tonumber(ARGV[1])
local minute = 60000000
local ok = 1
local states = {}
local writes = {}
for i = 1, #KEYS do
  local kind = ARGV[2 * i]
  local a = tonumber(ARGV[2 * i + 1])
  local s = tonumber(redis.call('GET', KEYS[i]))
  states[i] = s or -1
  if kind == 'b' then
    if (s or 0) >= a then ok = 0 end
  else
    local tat = math.max(s or now, now)
    if tat + a - now > minute + 0.5 then
      ok = 0
    elseif kind == 'r' then
      writes[i] = tat + a
    end
  end
end
if ok == 1 then
  for i, w in pairs(writes) do
    redis.call('SET', KEYS[i], string.format('%.0f', w), 'PX', math.ceil((w - now) / 1000) + 1000)
  end
end
local out = { tostring(ok) }
for i = 1, #KEYS do out[i + 1] = string.format('%.0f', states[i]) end
return out
"#;

/// Debits tokens. ARGV: now (µs), tokens, then per key: kind (`t` or `b`), a token bucket's
/// µs per token (`t`) or how long to keep a budget, in ms (`b`). Mirrors `limits::debit`.
const DEBIT: &str = r#"
local now = tonumber(ARGV[1])
local tokens = tonumber(ARGV[2])
for i = 1, #KEYS do
  local kind = ARGV[2 * i + 1]
  local a = tonumber(ARGV[2 * i + 2])
  if kind == 'b' then
    redis.call('INCRBY', KEYS[i], tokens)
    redis.call('PEXPIRE', KEYS[i], a)
  else
    local s = tonumber(redis.call('GET', KEYS[i]))
    local tat = math.max(s or now, now) + tokens * a
    redis.call('SET', KEYS[i], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1000)
  end
end
return 1
"#;

/// The Redis store and its in-process stand-in.
pub struct RedisStore {
    client: redis::Client,
    config: ConnectionManagerConfig,
    /// One connection per thread that uses the store, made on its first call there.
    connections: thread_local::ThreadLocal<ConnectionManager>,
    check: redis::Script,
    debit: redis::Script,
    prefix: String,
    /// Whether the last call succeeded; requests skip Redis while it is false.
    up: AtomicBool,
    /// Counters while Redis is down (with `fail_open`).
    pub(crate) fallback: MemoryStore,
    /// Where the store is, password hidden, for log lines.
    display: String,
}

/// Why a call to Redis produced no answer.
#[derive(Debug)]
pub struct Down;

impl RedisStore {
    /// A store for `url`; connects in the background (chatd serves meanwhile, per
    /// `fail_open`), and keeps trying while Redis is unreachable.
    pub fn start(url: &str, prefix: &str, display: String) -> Result<Arc<RedisStore>, String> {
        let client = redis::Client::open(url).map_err(|e| format!("chatd.limits.store: {e}"))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            // Calls are bounded by `timeout_ms` around them; reconnecting is the manager's.
            .set_response_timeout(None)
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let store = Arc::new(RedisStore {
            client,
            config,
            connections: thread_local::ThreadLocal::new(),
            check: redis::Script::new(CHECK),
            debit: redis::Script::new(DEBIT),
            prefix: prefix.to_owned(),
            up: AtomicBool::new(false),
            fallback: MemoryStore::default(),
            display,
        });
        tokio::spawn(probe(Arc::downgrade(&store)));
        Ok(store)
    }

    /// This thread's connection.
    fn connection(&self) -> Result<ConnectionManager, Down> {
        self.connections
            .get_or_try(|| {
                ConnectionManager::new_lazy_with_config(self.client.clone(), self.config.clone())
            })
            .cloned()
            .map_err(|e| {
                self.mark_down(&e.to_string());
                Down
            })
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// The key of a limit's counter at `now`.
    pub fn key(&self, limit: &Limit, now: Micros) -> String {
        let mut key = format!("{}:{{{}}}:{}", self.prefix, limit.client, limit.kind.tag());
        if let Some(pattern) = &limit.pattern {
            key.push_str(":m:");
            key.push_str(pattern);
        }
        if matches!(limit.kind, Kind::TokensPerDay | Kind::TokensPerMonth) {
            key.push(':');
            key.push_str(&limit.window(now).0.to_string());
        }
        key
    }

    /// One check: the readings of `limits`, the request charged when all admit it.
    pub async fn check(
        &self,
        limits: &[Limit],
        now: Micros,
        timeout: Duration,
    ) -> Result<Vec<Reading>, Down> {
        let mut call = self.check.prepare_invoke();
        call.arg(now);
        for limit in limits {
            call.key(self.key(limit, now));
            match limit.kind {
                Kind::RequestsPerMinute => call.arg("r").arg(interval(limit)),
                Kind::TokensPerMinute => call.arg("t").arg(interval(limit)),
                _ => call.arg("b").arg(limit.limit),
            };
        }
        let mut connection = self.connection()?;
        let reply: Vec<String> = self
            .call(timeout, call.invoke_async(&mut connection))
            .await?;
        let states = parse_states(&reply, limits.len()).ok_or_else(|| {
            tracing::error!(
                ?reply,
                "the limits store answered the check script unexpectedly"
            );
            Down
        })?;
        Ok(limits
            .iter()
            .zip(states)
            .map(|(l, s)| read(l, s, now))
            .collect())
    }

    /// Reads the counters of `limits` without charging anything.
    pub async fn peek(
        &self,
        limits: &[Limit],
        now: Micros,
        timeout: Duration,
    ) -> Result<Vec<State>, Down> {
        if limits.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = limits.iter().map(|l| self.key(l, now)).collect();
        let mut connection = self.connection()?;
        let mut command = redis::cmd("MGET");
        command.arg(&keys);
        let values: Vec<Option<String>> = self
            .call(timeout, command.query_async(&mut connection))
            .await?;
        Ok(values
            .into_iter()
            .map(|v| v.and_then(|v| v.parse::<f64>().ok()).map(|v| v as u64))
            .collect())
    }

    /// Debits `tokens` from the token limits among `limits`.
    pub async fn debit(
        &self,
        limits: &[Limit],
        now: Micros,
        tokens: u64,
        timeout: Duration,
    ) -> Result<(), Down> {
        let mut call = self.debit.prepare_invoke();
        call.arg(now).arg(tokens);
        let mut any = false;
        for limit in limits.iter().filter(|l| l.kind.counts_tokens()) {
            any = true;
            call.key(self.key(limit, now));
            if limit.kind == Kind::TokensPerMinute {
                call.arg("t").arg(interval(limit));
            } else {
                let keep = keep_for(limit, 0, now).as_millis() as u64;
                call.arg("b").arg(keep);
            }
        }
        if !any {
            return Ok(());
        }
        let mut connection = self.connection()?;
        let _: i64 = self
            .call(timeout, call.invoke_async(&mut connection))
            .await?;
        Ok(())
    }

    async fn call<T>(
        &self,
        timeout: Duration,
        work: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, Down> {
        match tokio::time::timeout(timeout, work).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => {
                self.mark_down(&e.to_string());
                Err(Down)
            }
            Err(_) => {
                self.mark_down(&format!("no answer within {} ms", timeout.as_millis()));
                Err(Down)
            }
        }
    }

    fn mark_down(&self, why: &str) {
        if self.up.swap(false, Ordering::Relaxed) {
            tracing::warn!(
                store = %self.display,
                error = why,
                "limits store unreachable: limits are enforced by each replica alone \
                 (fail_open) or limited requests are refused (fail_open = false) until it is back"
            );
        }
    }
}

/// Pings Redis while it is down (from the start until it first answers, and after a failed
/// call), until the store is dropped.
async fn probe(store: Weak<RedisStore>) {
    let mut first = true;
    loop {
        let Some(s) = store.upgrade() else { return };
        if s.is_up() {
            // Requests find out when it goes down; look again in a while.
            drop(s);
            tokio::time::sleep(PROBE_EVERY).await;
            continue;
        }
        match s.ping_all().await {
            Ok(()) => {
                s.up.store(true, Ordering::Relaxed);
                if first {
                    tracing::info!(store = %s.display, "limits store connected");
                } else {
                    tracing::warn!(store = %s.display, "limits store reachable again: limits are shared again");
                }
                first = false;
                continue;
            }
            Err(e) if first => {
                tracing::warn!(store = %s.display, error = %e, "limits store unreachable at start; trying again every second");
            }
            Err(_) => {}
        }
        first = false;
        drop(s);
        tokio::time::sleep(PROBE_EVERY).await;
    }
}

impl RedisStore {
    /// Pings Redis through this task's connection and every server thread's: a thread's
    /// connection broken by the outage fails its first command (and reconnects), which must
    /// be this ping, not a request's check.
    async fn ping_all(&self) -> Result<(), String> {
        let mut connections: Vec<ConnectionManager> = self.connections.iter().cloned().collect();
        connections.push(self.connection().map_err(|_| "no connection".to_owned())?);
        for mut connection in connections {
            let command = redis::cmd("PING");
            let ping = command.query_async::<String>(&mut connection);
            match tokio::time::timeout(Duration::from_secs(2), ping).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e.to_string()),
                Err(_) => return Err("no answer within 2 s".into()),
            }
        }
        Ok(())
    }
}

fn interval(limit: &Limit) -> f64 {
    60_000_000.0 / limit.limit as f64
}

/// `["1", state...]` → the states (absent as `None`).
fn parse_states(reply: &[String], n: usize) -> Option<Vec<State>> {
    if reply.len() != n + 1 {
        return None;
    }
    reply[1..]
        .iter()
        .map(|s| {
            let v: f64 = s.parse().ok()?;
            Some((v >= 0.0).then_some(v as u64))
        })
        .collect()
}
