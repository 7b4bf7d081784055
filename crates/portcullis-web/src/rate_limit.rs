//! Rate limits: fixed-window counters, in memory on one node or in Redis shared by several.
//! If Redis cannot be reached the server keeps serving with its local counters, says so in
//! its log and in `/readyz`, and goes back to Redis once it answers again.
//!
//! A counter is named by a policy and a key (an IP address, a username, a client id); the key
//! is hashed, so that neither memory nor Redis holds what an attacker typed, at any length.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use portcullis_core::Clock;
use sha2::{Digest, Sha256};

/// At most `requests` in each `window`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    pub requests: u32,
    pub window: Duration,
}

impl Quota {
    fn window_secs(self) -> i64 {
        i64::try_from(self.window.as_secs().max(1)).unwrap_or(i64::MAX)
    }
}

/// One counter after a request: whether it may go on, and what the headers say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub policy: &'static str,
    pub allowed: bool,
    pub quota: Quota,
    /// Requests left in this window.
    pub remaining: u32,
    /// Seconds until the window ends (and, when refused, until a retry can succeed).
    pub reset: u64,
}

impl Decision {
    /// The stricter of two decisions: a refusal, else the one with fewer requests left.
    pub fn stricter(self, other: Decision) -> Decision {
        match (self.allowed, other.allowed) {
            (false, true) => self,
            (true, false) => other,
            _ if other.remaining < self.remaining => other,
            _ => self,
        }
    }

    /// `RateLimit-Policy` and `RateLimit` (draft-ietf-httpapi-ratelimit-headers), and the
    /// widely used `X-RateLimit-*`; `Retry-After` when refused.
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        let mut set = |name: &'static str, value: String| {
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(HeaderName::from_static(name), v);
            }
        };
        let (limit, window) = (self.quota.requests, self.quota.window.as_secs());
        set(
            "ratelimit-policy",
            format!("\"{}\";q={limit};w={window}", self.policy),
        );
        set(
            "ratelimit",
            format!("\"{}\";r={};t={}", self.policy, self.remaining, self.reset),
        );
        let mut number = |name: &'static str, value: HeaderValue| {
            headers.insert(HeaderName::from_static(name), value);
        };
        number("x-ratelimit-limit", limit.into());
        number("x-ratelimit-remaining", self.remaining.into());
        number("x-ratelimit-reset", self.reset.into());
        if !self.allowed {
            number("retry-after", self.reset.max(1).into());
        }
    }
}

/// Counters kept in this process: for each key, when its window ends and its count.
#[derive(Default)]
struct LocalCounters {
    counts: Mutex<HashMap<[u8; 16], (i64, u32)>>,
    /// When ended windows were last dropped (Unix seconds).
    pruned_at: AtomicI64,
}

impl LocalCounters {
    /// Adds `by` to the counter for `key` in the window ending at `end`; returns the count.
    fn add(&self, key: [u8; 16], end: i64, by: u32, now: i64) -> u32 {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        // Ended windows are of no use: drop them rather than grow without bound, at most
        // once a second. (Each entry knows its own end, whatever its window's length.)
        if counts.len() > 100_000 && self.pruned_at.swap(now, Ordering::Relaxed) != now {
            counts.retain(|_, (ends, _)| *ends > now);
        }
        let entry = counts.entry(key).or_insert((end, 0));
        if entry.0 != end {
            *entry = (end, 0);
        }
        entry.1 = entry.1.saturating_add(by);
        entry.1
    }

    /// The count for `key` in the window ending at `end`, without touching it.
    fn get(&self, key: [u8; 16], end: i64) -> u32 {
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            .filter(|(ends, _)| *ends == end)
            .map_or(0, |(_, count)| *count)
    }

    fn clear(&self, key: [u8; 16]) {
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&key);
    }
}

/// Counters in Redis: `INCRBY` and `EXPIRE` in one transaction, a key per window.
struct RedisCounters {
    client: redis::Client,
    /// The connection once made; read without waiting by every request.
    connection: std::sync::RwLock<Option<redis::aio::ConnectionManager>>,
    /// Held while one request connects; the others use local counters meanwhile.
    connecting: tokio::sync::Mutex<()>,
    /// Whether the last call failed: the log says so once per change.
    down: AtomicBool,
    /// When to try Redis again (Unix seconds) after a failure: until then every request
    /// counts locally at once, rather than each waiting out a timeout.
    retry_at: AtomicI64,
}

/// How long a Redis call may take before the local counters are used instead.
const REDIS_TIMEOUT: Duration = Duration::from_millis(250);

/// How long to count locally after Redis failed before trying it again.
const REDIS_RETRY_SECS: i64 = 2;

impl RedisCounters {
    async fn connection(&self, now: i64) -> Option<redis::aio::ConnectionManager> {
        if now < self.retry_at.load(Ordering::Relaxed) {
            return None;
        }
        if let Some(c) = self
            .connection
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
        {
            return Some(c.clone());
        }
        let Ok(_connecting) = self.connecting.try_lock() else {
            return None;
        };
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(REDIS_TIMEOUT)
            .set_response_timeout(REDIS_TIMEOUT)
            .set_number_of_retries(1);
        match tokio::time::timeout(
            REDIS_TIMEOUT * 4,
            self.client.get_connection_manager_with_config(config),
        )
        .await
        {
            Ok(Ok(c)) => {
                *self
                    .connection
                    .write()
                    .unwrap_or_else(PoisonError::into_inner) = Some(c.clone());
                Some(c)
            }
            _ => {
                self.failed("cannot connect", now);
                None
            }
        }
    }

    fn failed(&self, what: &str, now: i64) {
        self.retry_at
            .store(now + REDIS_RETRY_SECS, Ordering::Relaxed);
        if !self.down.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                problem = what,
                "Redis is unavailable: rate limits are counted on this node only until it answers"
            );
        }
    }

    fn answered(&self) {
        if self.down.swap(false, Ordering::Relaxed) {
            tracing::info!("Redis answers again: rate limits are shared between nodes");
        }
    }

    async fn add(&self, key: &str, window: i64, by: u32, now: i64) -> Option<u32> {
        let mut conn = self.connection(now).await?;
        let mut pipe = redis::pipe();
        pipe.atomic().incr(key, by).expire(key, window + 1).ignore();
        self.answer(now, pipe.query_async::<(u32,)>(&mut conn))
            .await
            .map(|(count,)| count)
    }

    async fn get(&self, key: &str, now: i64) -> Option<u32> {
        let mut conn = self.connection(now).await?;
        self.answer(
            now,
            redis::cmd("GET")
                .arg(key)
                .query_async::<Option<u32>>(&mut conn),
        )
        .await
        .map(Option::unwrap_or_default)
    }

    /// The answer of a call, or `None` (and the log told once) when Redis fails or is slow.
    async fn answer<T>(
        &self,
        now: i64,
        call: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Option<T> {
        match tokio::time::timeout(REDIS_TIMEOUT, call).await {
            Ok(Ok(value)) => {
                self.answered();
                Some(value)
            }
            Ok(Err(e)) => {
                self.failed(&e.to_string(), now);
                None
            }
            Err(_) => {
                self.failed("timed out", now);
                None
            }
        }
    }

    async fn clear(&self, key: &str, now: i64) {
        if let Some(mut conn) = self.connection(now).await {
            let deleted = tokio::time::timeout(
                REDIS_TIMEOUT,
                redis::cmd("DEL").arg(key).query_async::<i64>(&mut conn),
            )
            .await;
            if !matches!(deleted, Ok(Ok(_))) {
                self.failed("DEL failed", now);
            }
        }
    }
}

/// The server's rate limiter.
pub struct RateLimiter {
    local: LocalCounters,
    redis: Option<RedisCounters>,
    clock: Arc<dyn Clock>,
}

impl RateLimiter {
    /// Counters in memory, or in Redis at `redis_url` (with memory as the fallback).
    pub fn new(redis_url: Option<&str>, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        let redis = match redis_url {
            Some(url) => Some(RedisCounters {
                client: redis::Client::open(url)?,
                connection: std::sync::RwLock::new(None),
                connecting: tokio::sync::Mutex::new(()),
                down: AtomicBool::new(false),
                retry_at: AtomicI64::new(0),
            }),
            None => None,
        };
        Ok(Self {
            local: LocalCounters::default(),
            redis,
            clock,
        })
    }

    /// Where the counters are, for `/readyz`.
    pub fn status(&self) -> &'static str {
        match &self.redis {
            None => "memory",
            Some(r) if r.down.load(Ordering::Relaxed) => "memory (redis unavailable)",
            Some(_) => "redis",
        }
    }

    fn key(policy: &str, key: &str) -> [u8; 16] {
        let digest = Sha256::new()
            .chain_update(policy.as_bytes())
            .chain_update([0])
            .chain_update(key.as_bytes())
            .finalize();
        let mut out = [0u8; 16];
        out.copy_from_slice(&digest[..16]);
        out
    }

    fn redis_key(hashed: [u8; 16], index: i64) -> String {
        format!(
            "portcullis:rl:{}:{index}",
            portcullis_core::secret::hex(&hashed)
        )
    }

    /// Counts one request against `policy` for `key`.
    pub async fn hit(&self, policy: &'static str, key: &str, quota: Quota) -> Decision {
        self.add(policy, key, quota, 1).await
    }

    /// The counter as it stands, without counting a request.
    pub async fn peek(&self, policy: &'static str, key: &str, quota: Quota) -> Decision {
        self.add(policy, key, quota, 0).await
    }

    async fn add(&self, policy: &'static str, key: &str, quota: Quota, by: u32) -> Decision {
        let now = self.clock.now().as_secs();
        let window = quota.window_secs();
        let index = now.div_euclid(window);
        let end = (index + 1) * window;
        let hashed = Self::key(policy, key);
        let shared = match &self.redis {
            Some(r) if by == 0 => r.get(&Self::redis_key(hashed, index), now).await,
            Some(r) => {
                r.add(&Self::redis_key(hashed, index), window, by, now)
                    .await
            }
            None => None,
        };
        let count = match shared {
            Some(count) => count,
            None if by == 0 => self.local.get(hashed, end),
            None => self.local.add(hashed, end, by, now),
        };
        // A peek asks whether one more request would be allowed.
        let used = if by == 0 { count + 1 } else { count };
        Decision {
            policy,
            allowed: used <= quota.requests,
            quota,
            remaining: quota.requests.saturating_sub(used),
            reset: u64::try_from(end - now).unwrap_or(0),
        }
    }

    /// Forgets the counter (a successful sign-in clears the account's failures).
    pub async fn clear(&self, policy: &'static str, key: &str, quota: Quota) {
        let now = self.clock.now().as_secs();
        let index = now.div_euclid(quota.window_secs());
        let hashed = Self::key(policy, key);
        self.local.clear(hashed);
        if let Some(r) = &self.redis {
            r.clear(&Self::redis_key(hashed, index), now).await;
        }
    }
}

/// The endpoint groups a client address is limited on, each with its own counter.
fn group_of(path: &str) -> Option<&'static str> {
    use crate::paths;
    match path {
        paths::TOKEN | paths::INTROSPECT | paths::REVOKE => Some("oauth"),
        // Registration, and each client's registration below it.
        _ if path.starts_with(paths::REGISTER) => Some("oauth"),
        paths::USERINFO => Some("userinfo"),
        paths::AUTHORIZE
        | paths::CONSENT
        | paths::LOGIN
        | paths::CHANGE_PASSWORD
        | paths::SECOND_FACTOR
        | paths::END_SESSION => Some("browser"),
        // A person's own pages: the account page and everything below it.
        _ if path == paths::ACCOUNT || path.starts_with(paths::ACCOUNT_PREFIX) => Some("browser"),
        // Everything an operator reaches (the admin UI and API) is limited as one group.
        _ if path == paths::ADMIN || path.starts_with(paths::ADMIN_PREFIX) => Some("admin"),
        _ => None,
    }
}

/// A 429 for `decision`: the OAuth error JSON on the back-channel endpoints (and for clients
/// that ask for JSON), the error page for a browser.
pub fn refusal(
    req: &actix_web::HttpRequest,
    json: bool,
    decision: &Decision,
) -> actix_web::HttpResponse {
    if json {
        return json_refusal(decision);
    }
    let mut res =
        crate::errors::error_response(req, actix_web::http::StatusCode::TOO_MANY_REQUESTS);
    decision.write_headers(res.headers_mut());
    res
}

/// The 429 of the OAuth endpoints: their error JSON, not cached, with the rate-limit headers.
pub fn json_refusal(decision: &Decision) -> actix_web::HttpResponse {
    let mut res = actix_web::HttpResponse::TooManyRequests()
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .insert_header((actix_web::http::header::PRAGMA, "no-cache"))
        .json(serde_json::json!({
            "error": "too_many_requests",
            "error_description": format!(
                "too many requests; try again in {} seconds",
                decision.reset.max(1)
            ),
        }));
    decision.write_headers(res.headers_mut());
    res
}

/// Client errors in a row on one connection (kept with the connection).
#[derive(Clone, Default)]
pub struct Strikes(std::rc::Rc<std::cell::Cell<u32>>);

/// How long a request on a connection with `strikes` client errors in a row waits, when
/// slowing starts `after` of them: nothing before, then 10 ms doubling up to a second.
pub fn failure_delay(strikes: u32, after: u32) -> Option<Duration> {
    let over = strikes.checked_sub(after)?;
    Some(Duration::from_millis(10u64 << over.min(7)).min(Duration::from_secs(1)))
}

/// Slows a connection that keeps getting client errors (`rate_limit.slow_failing_connections_after`).
/// The wait is a timer, not work: a stream of bad requests on keep-alive connections then gets
/// few answers and little CPU, and the valid requests beside it keep their speed. A client
/// that opens a new connection per request pays a TCP handshake each time instead.
pub async fn slow_failing_connections(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody + 'static>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    let Some(state) = req.app_data::<actix_web::web::Data<crate::state::AppState>>() else {
        return next.call(req).await;
    };
    let (Some(after), Some(strikes)) = (
        state.limits.slow_failing_connections_after,
        req.conn_data::<Strikes>().cloned(),
    ) else {
        return next.call(req).await;
    };
    if let Some(delay) = failure_delay(strikes.0.get(), after) {
        state.metrics.slowed();
        tokio::time::sleep(delay).await;
    }
    let res = next.call(req).await?;
    if res.status().is_client_error() {
        strikes.0.set(strikes.0.get().saturating_add(1));
    } else {
        strikes.0.set(0);
    }
    Ok(res)
}

/// Counts each request to a limited endpoint against its client address.
pub async fn per_ip(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody + 'static>,
) -> Result<actix_web::dev::ServiceResponse<actix_web::body::BoxBody>, actix_web::Error> {
    let group = group_of(req.path());
    let state = req
        .app_data::<actix_web::web::Data<crate::state::AppState>>()
        .cloned();
    let (Some(group), Some(state)) = (group, state) else {
        return Ok(next.call(req).await?.map_into_boxed_body());
    };
    let ip = state
        .limits
        .trusted_proxies
        .of(req.request())
        .map(|ip| ip.to_string())
        .unwrap_or_default();
    let decision = state.limiter.hit(group, &ip, state.limits.per_ip).await;
    if !decision.allowed {
        tracing::debug!(group, "refused: too many requests from one address");
        let res = refusal(req.request(), group != "browser", &decision);
        return Ok(req.into_response(res));
    }
    let mut res = next.call(req).await?.map_into_boxed_body();
    // A stricter limit met on the way (a client's, an account's) has set its own headers.
    if !res.headers().contains_key("ratelimit") {
        decision.write_headers(res.headers_mut());
    }
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicI64;

    struct TestClock(AtomicI64);
    impl Clock for TestClock {
        fn now(&self) -> portcullis_core::UnixTime {
            portcullis_core::UnixTime::from_secs(self.0.load(Ordering::SeqCst))
        }
    }

    fn quota() -> Quota {
        Quota {
            requests: 3,
            window: Duration::from_secs(60),
        }
    }

    #[test]
    fn failing_connections_wait_longer_up_to_a_second() {
        assert_eq!(failure_delay(9, 10), None);
        assert_eq!(failure_delay(10, 10), Some(Duration::from_millis(10)));
        assert_eq!(failure_delay(11, 10), Some(Duration::from_millis(20)));
        assert_eq!(failure_delay(16, 10), Some(Duration::from_millis(640)));
        assert_eq!(failure_delay(17, 10), Some(Duration::from_secs(1)));
        assert_eq!(failure_delay(u32::MAX, 10), Some(Duration::from_secs(1)));
    }

    #[actix_web::test]
    async fn counts_per_key_and_window_and_says_when_to_retry() {
        let clock = Arc::new(TestClock(AtomicI64::new(6_000)));
        let limiter = RateLimiter::new(None, clock.clone()).unwrap();
        for left in [2, 1, 0] {
            let d = limiter.hit("login", "alice", quota()).await;
            assert!(d.allowed);
            assert_eq!(d.remaining, left);
        }
        assert!(!limiter.peek("login", "alice", quota()).await.allowed);
        clock.0.store(6_050, Ordering::SeqCst);
        let refused = limiter.hit("login", "alice", quota()).await;
        assert!(!refused.allowed);
        assert_eq!(refused.reset, 10, "until the window ends");
        let mut headers = HeaderMap::new();
        refused.write_headers(&mut headers);
        assert_eq!(headers.get("retry-after").unwrap(), "10");
        assert_eq!(headers.get("ratelimit").unwrap(), "\"login\";r=0;t=10");
        assert_eq!(
            headers.get("ratelimit-policy").unwrap(),
            "\"login\";q=3;w=60"
        );
        assert!(
            limiter.hit("login", "bob", quota()).await.allowed,
            "per key"
        );
        assert!(
            limiter.hit("token", "alice", quota()).await.allowed,
            "per policy"
        );
        clock.0.store(6_060, Ordering::SeqCst);
        assert!(
            limiter.hit("login", "alice", quota()).await.allowed,
            "a new window"
        );
        limiter.clear("login", "bob", quota()).await;
        assert_eq!(limiter.peek("login", "bob", quota()).await.remaining, 2);
    }

    #[test]
    fn dropping_ended_windows_keeps_longer_ones() {
        let counters = LocalCounters::default();
        // A 15-minute window still running, among many one-minute windows that have ended.
        counters.add([1; 16], 6_900, 1, 6_000);
        for i in 0..100_001u32 {
            let mut key = [0; 16];
            key[..4].copy_from_slice(&i.to_be_bytes());
            key[15] = 2;
            counters.add(key, 6_060, 1, 6_000);
        }
        counters.add([3; 16], 6_180, 1, 6_120);
        assert_eq!(counters.get([1; 16], 6_900), 1, "the long window survives");
        assert!(
            counters.counts.lock().unwrap().len() < 10,
            "the ended ones are gone"
        );
    }

    #[actix_web::test]
    async fn an_unreachable_redis_falls_back_to_local_counters() {
        let clock = Arc::new(TestClock(AtomicI64::new(6_000)));
        // Nothing listens on port 1.
        let limiter = RateLimiter::new(Some("redis://127.0.0.1:1"), clock).unwrap();
        assert_eq!(limiter.status(), "redis");
        for _ in 0..3 {
            assert!(limiter.hit("login", "alice", quota()).await.allowed);
        }
        assert!(!limiter.hit("login", "alice", quota()).await.allowed);
        assert_eq!(limiter.status(), "memory (redis unavailable)");
    }
}

#[cfg(test)]
mod group_tests {
    use super::group_of;

    #[test]
    fn every_public_endpoint_is_in_a_limited_group() {
        for (path, group) in [
            ("/oauth2/token", Some("oauth")),
            ("/oauth2/introspect", Some("oauth")),
            ("/oauth2/revoke", Some("oauth")),
            ("/oauth2/userinfo", Some("userinfo")),
            ("/oauth2/authorize", Some("browser")),
            ("/login", Some("browser")),
            ("/login/totp", Some("browser")),
            ("/consent", Some("browser")),
            ("/admin", Some("admin")),
            ("/admin/api/users", Some("admin")),
            ("/administrator", None),
            ("/.well-known/jwks.json", None),
            ("/healthz", None),
        ] {
            assert_eq!(group_of(path), group, "{path}");
        }
    }
}
