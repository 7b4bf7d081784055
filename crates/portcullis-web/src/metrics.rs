//! Prometheus metrics, in the text exposition format, at `/metrics` behind a bearer token
//! (`metrics.token`): requests by route and status, latency histograms by route, tokens issued
//! by grant, sign-in failures, rate-limit refusals, the database pool, signing-key ages and the
//! process's memory.
//!
//! Counting costs a clock reading, a read lock and a few atomic additions per request; the
//! labels are route patterns (`/admin/api/users/{id}`), never raw paths, so their number is
//! bounded by the routes.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock};
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{HttpRequest, HttpResponse, web};
use subtle::ConstantTimeEq;

use crate::state::AppState;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5,
];

#[derive(Default)]
struct Route {
    statuses: RwLock<HashMap<u16, AtomicU64>>,
    /// One count per bucket, then the overflow.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    micros: AtomicU64,
}

impl Route {
    fn observe(&self, status: u16, seconds: f64) {
        bump(&self.statuses, &status);
        let slot = BUCKETS
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(BUCKETS.len());
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        // Whole microseconds: the sum stays exact in an integer.
        self.micros
            .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }
}

/// What is counted. One per process, shared by the workers.
#[derive(Default)]
pub struct Metrics {
    routes: RwLock<HashMap<String, Route>>,
    tokens: RwLock<HashMap<String, AtomicU64>>,
    login_failures: RwLock<HashMap<String, AtomicU64>>,
    rate_limited: RwLock<HashMap<String, AtomicU64>>,
    /// Requests that waited because their connection kept getting client errors.
    slowed: AtomicU64,
}

/// Adds one to the counter of `label`: under the read lock, but for a label's first count.
fn bump<K, Q>(map: &RwLock<HashMap<K, AtomicU64>>, label: &Q)
where
    K: std::borrow::Borrow<Q> + Eq + std::hash::Hash,
    Q: ?Sized + Eq + std::hash::Hash + ToOwned<Owned = K>,
{
    if let Some(c) = map
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .get(label)
    {
        c.fetch_add(1, Ordering::Relaxed);
        return;
    }
    map.write()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(label.to_owned())
        .or_default()
        .fetch_add(1, Ordering::Relaxed);
}

impl Metrics {
    /// Counts an answer to `path`, under its route `pattern`. A route without parameters
    /// has its path as its pattern, so once it has been seen it is found by the path, without
    /// building the pattern (the token endpoint's case).
    fn observe(&self, path: &str, pattern: impl FnOnce() -> String, status: u16, seconds: f64) {
        let routes = self.routes.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(r) = routes.get(path) {
            if status == 429 {
                bump(&self.rate_limited, path);
            }
            r.observe(status, seconds);
            return;
        }
        let route = pattern();
        if status == 429 {
            bump(&self.rate_limited, route.as_str());
        }
        // A route with parameters (or an unmatched path) is found by its pattern; the write
        // lock only for a pattern seen for the first time.
        if let Some(r) = routes.get(route.as_str()) {
            r.observe(status, seconds);
            return;
        }
        drop(routes);
        self.routes
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(route)
            .or_default()
            .observe(status, seconds);
    }

    /// A token issued, by grant type.
    pub fn token_issued(&self, grant_type: &'static str) {
        bump(&self.tokens, grant_type);
    }

    /// A request made to wait: its connection kept getting client errors.
    pub fn slowed(&self) {
        self.slowed.fetch_add(1, Ordering::Relaxed);
    }

    /// A sign-in step that failed: `password` or `second_factor`.
    pub fn login_failed(&self, step: &'static str) {
        bump(&self.login_failures, step);
    }

    /// The exposition: the counters, then what is read at scrape time.
    fn render(&self, pool: portcullis_core::store::PoolUse, keys: &[KeyAge]) -> String {
        let mut out = String::with_capacity(4096);
        let _ = writeln!(
            out,
            "# HELP portcullis_http_requests_total Requests answered, by route pattern and status.\n# TYPE portcullis_http_requests_total counter"
        );
        let routes = self.routes.read().unwrap_or_else(PoisonError::into_inner);
        let mut names: Vec<&String> = routes.keys().collect();
        names.sort();
        for name in &names {
            let statuses = routes[*name]
                .statuses
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            let mut codes: Vec<_> = statuses.iter().collect();
            codes.sort_by_key(|(code, _)| **code);
            for (code, count) in codes {
                let _ = writeln!(
                    out,
                    "portcullis_http_requests_total{{route=\"{}\",status=\"{code}\"}} {}",
                    escape(name),
                    count.load(Ordering::Relaxed)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP portcullis_http_request_duration_seconds Time to answer, by route pattern.\n# TYPE portcullis_http_request_duration_seconds histogram"
        );
        for name in &names {
            let route = &routes[*name];
            let label = escape(name);
            let mut cumulative = 0;
            for (i, bound) in BUCKETS.iter().enumerate() {
                cumulative += route.buckets[i].load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "portcullis_http_request_duration_seconds_bucket{{route=\"{label}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            cumulative += route.buckets[BUCKETS.len()].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "portcullis_http_request_duration_seconds_bucket{{route=\"{label}\",le=\"+Inf\"}} {cumulative}\nportcullis_http_request_duration_seconds_sum{{route=\"{label}\"}} {}\nportcullis_http_request_duration_seconds_count{{route=\"{label}\"}} {cumulative}",
                route.micros.load(Ordering::Relaxed) as f64 / 1e6
            );
        }
        drop(routes);
        for (name, help, label, map) in [
            (
                "portcullis_tokens_issued_total",
                "Tokens issued at the token endpoint, by grant type.",
                "grant_type",
                &self.tokens,
            ),
            (
                "portcullis_login_failures_total",
                "Sign-in steps that failed, by step.",
                "step",
                &self.login_failures,
            ),
            (
                "portcullis_rate_limited_total",
                "Requests refused by a rate limit (429), by route pattern.",
                "route",
                &self.rate_limited,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            let map = map.read().unwrap_or_else(PoisonError::into_inner);
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            for (value, count) in entries {
                let _ = writeln!(
                    out,
                    "{name}{{{label}=\"{}\"}} {}",
                    escape(value),
                    count.load(Ordering::Relaxed)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP portcullis_slowed_requests_total Requests made to wait because their connection kept getting client errors.\n# TYPE portcullis_slowed_requests_total counter\nportcullis_slowed_requests_total {}",
            self.slowed.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP portcullis_db_pool_connections Database connections of this node, by state.\n# TYPE portcullis_db_pool_connections gauge\nportcullis_db_pool_connections{{state=\"in_use\"}} {}\nportcullis_db_pool_connections{{state=\"idle\"}} {}\n# HELP portcullis_db_pool_max_connections The most connections the pool opens.\n# TYPE portcullis_db_pool_max_connections gauge\nportcullis_db_pool_max_connections {}",
            pool.open.saturating_sub(pool.idle),
            pool.idle,
            pool.max
        );
        let _ = writeln!(
            out,
            "# HELP portcullis_signing_key_age_seconds Age of each signing key, by key id, algorithm and state.\n# TYPE portcullis_signing_key_age_seconds gauge"
        );
        for k in keys {
            let _ = writeln!(
                out,
                "portcullis_signing_key_age_seconds{{kid=\"{}\",alg=\"{}\",state=\"{}\"}} {}",
                escape(&k.kid),
                k.alg,
                k.state,
                k.age_seconds
            );
        }
        if let Some(rss) = resident_bytes() {
            let _ = writeln!(
                out,
                "# HELP process_resident_memory_bytes Resident memory of this process.\n# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes {rss}"
            );
        }
        out
    }
}

struct KeyAge {
    kid: String,
    alg: &'static str,
    state: &'static str,
    age_seconds: i64,
}

/// A label value as the exposition format writes it.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Resident memory from `/proc/self/statm` (Linux), in bytes.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Counts every request by its route pattern and status, and times it.
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let metrics = req
        .app_data::<web::Data<AppState>>()
        .map(|s| s.metrics.clone());
    let res = next.call(req).await?;
    if let Some(metrics) = metrics {
        let req = res.request();
        metrics.observe(
            req.path(),
            || {
                req.match_pattern()
                    .unwrap_or_else(|| "unmatched".to_owned())
            },
            res.status().as_u16(),
            started.elapsed().as_secs_f64(),
        );
    }
    Ok(res)
}

/// `GET /metrics`: for a scraper that sends `Authorization: Bearer <metrics.token>`; 404
/// when no token is configured (the endpoint does not exist then).
pub async fn scrape(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, crate::errors::InternalError> {
    let Some(expected) = &state.metrics_token else {
        return Ok(crate::errors::error_response(
            &req,
            actix_web::http::StatusCode::NOT_FOUND,
        ));
    };
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(crate::admin::bearer_of)
        .unwrap_or_default();
    let ok: bool = portcullis_core::secret::TokenHash::of(&presented)
        .as_str()
        .as_bytes()
        .ct_eq(expected.as_str().as_bytes())
        .into();
    if !ok {
        return Ok(HttpResponse::Unauthorized()
            .insert_header((header::WWW_AUTHENTICATE, r#"Bearer realm="metrics""#))
            .finish());
    }
    let st = state.clone();
    let (pool, keys) = web::block(move || -> anyhow::Result<_> {
        let now = st.clock.now();
        let keys = st
            .key_maintenance
            .store
            .signing_keys()?
            .into_iter()
            .map(|k| KeyAge {
                alg: k.alg.as_str(),
                state: k.state.as_str(),
                age_seconds: now.as_secs() - k.created_at.as_secs(),
                kid: k.kid,
            })
            .collect::<Vec<_>>();
        Ok((st.health.pool_use(), keys))
    })
    .await??;
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/plain; version=0.0.4"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(state.metrics.render(pool, &keys)))
}
