//! Load and fault scenarios (SECURITY-CASES.md §3), each bounded in time and on loopback
//! only: database connections terminated and the database link cut or slowed under load
//! (PostgreSQL), a write lock held past the busy timeout (SQLite), Redis lost and back, a node
//! killed with SIGKILL mid-traffic and restarted, and concurrent redemptions and refreshes
//! spread over two nodes. docs/FAULTS.md lists every scenario, what covers it and the figures.
//!
//! Load runs inside the test's single-threaded runtime: `join_all` polls the workers
//! together, so they share state through `Cell` and `RefCell`, never across an `await`.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use diesel::Connection;
use diesel::connection::SimpleConnection;
use portcullis_storage::DatabaseUrl;
use portcullis_storage::test_db::TestDatabase;
use serde_json::Value;

use crate::cluster::{redis_url, two_nodes};
use crate::flow::{
    REDIRECT, Rp, authorize_url, exchange, introspect_active, join_all, pkce, refresh_with,
    sign_in_and_allow, web_client,
};
use crate::helpers::{
    PASSWORD, Server, TestApp, add_user, command, query_param, run, spawn_app, spawn_with,
    test_settings,
};
use crate::limits::unique;

/// Words a 5xx body must not carry: the driver, the pool, the database or its SQL.
const NO_LEAK: &[&str] = &[
    "diesel",
    "postgres",
    "connection",
    "sql",
    "select ",
    "r2d2",
    "libpq",
    "terminat",
    "panicked",
    "backtrace",
];

const WORKERS: usize = 8;

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

/// Why an answer given during a fault is wrong, if it is: anything but a 200, a 503 that says
/// when to retry, or a 500 whose JSON body names nothing behind the server.
fn judge(status: u16, retry_after: bool, body: &str) -> Option<String> {
    match status {
        200 => None,
        500 | 503 => {
            if status == 503 && !retry_after {
                return Some(format!("503 without Retry-After: {body}"));
            }
            if serde_json::from_str::<Value>(body).is_err() {
                return Some(format!("{status} whose body is not JSON: {body}"));
            }
            let lower = body.to_lowercase();
            NO_LEAK
                .iter()
                .find(|w| lower.contains(*w))
                .map(|w| format!("{status} names {w:?}: {body}"))
        }
        0 => Some(format!("no answer: {body}")),
        _ => Some(format!("unexpected {status}: {body}")),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    Token,
    IntrospectLive,
    IntrospectRevoked,
    Revoke,
}

struct Sample {
    /// Seconds since the load started, when the answer was read.
    at: f64,
    op: Op,
    status: u16,
    took: f64,
}

#[derive(Default)]
struct Tally {
    samples: Vec<Sample>,
    violations: Vec<String>,
    /// Access tokens returned with a 200 and not revoked since.
    issued: Vec<String>,
    /// Tokens whose revocation answered 200.
    revoked: Vec<String>,
    /// Tokens whose revocation failed: RFC 7009 §2.2.1 says to assume they still exist, so
    /// nothing is claimed about them.
    unsure: usize,
}

/// A steady mix of client-credentials tokens, introspection of a live and a revoked token,
/// and revocation of tokens it got, from `WORKERS` concurrent clients.
struct Load<'a> {
    node: &'a TestApp,
    http: reqwest::Client,
    id: String,
    secret: String,
    live: String,
    revoked: String,
    start: Instant,
    stop: Cell<bool>,
    tally: RefCell<Tally>,
}

impl<'a> Load<'a> {
    /// Registers a service client on `node`, takes a token to keep and one to revoke.
    async fn new(node: &'a TestApp) -> Load<'a> {
        let (id, secret) = node.service_client(&unique("Service"));
        let live = node.token_for(&id, &secret).await;
        let revoked = node.token_for(&id, &secret).await;
        let res = node
            .post_basic("/oauth2/revoke", &id, &secret, &[("token", &revoked)])
            .await;
        assert_eq!(res.status(), 200);
        assert!(!node.is_active(&id, &secret, &revoked).await);
        Load {
            node,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap(),
            id,
            secret,
            live,
            revoked,
            start: Instant::now(),
            stop: Cell::new(false),
            tally: RefCell::new(Tally::default()),
        }
    }

    fn now(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    async fn sleep_until(&self, at: f64) {
        tokio::time::sleep_until((self.start + secs(at)).into()).await;
    }

    /// Status, whether Retry-After came, and the body (or the transport error).
    async fn call(&self, path: &str, form: &[(&str, &str)]) -> (u16, bool, String) {
        let sent = self
            .http
            .post(self.node.url(path))
            .basic_auth(&self.id, Some(&self.secret))
            .form(form)
            .send()
            .await;
        match sent {
            Ok(res) => {
                let status = res.status().as_u16();
                let retry = res.headers().contains_key("retry-after");
                match res.text().await {
                    Ok(body) => (status, retry, body),
                    Err(e) => (0, false, format!("{status}, then {e}")),
                }
            }
            Err(e) => (0, false, e.to_string()),
        }
    }

    async fn worker(&self, n: usize) {
        let mut i = n;
        while !self.stop.get() {
            i += 1;
            let op = match i % 8 {
                0..=2 => Op::Token,
                3 | 4 => Op::IntrospectLive,
                5 | 6 => Op::IntrospectRevoked,
                _ => Op::Revoke,
            };
            self.step(op).await;
        }
    }

    async fn step(&self, op: Op) {
        let began = self.now();
        let mut victim = None;
        let (status, retry, body) = match op {
            Op::Token => {
                self.call("/oauth2/token", &[("grant_type", "client_credentials")])
                    .await
            }
            Op::IntrospectLive => {
                self.call("/oauth2/introspect", &[("token", &self.live)])
                    .await
            }
            Op::IntrospectRevoked => {
                self.call("/oauth2/introspect", &[("token", &self.revoked)])
                    .await
            }
            Op::Revoke => {
                let Some(token) = self.tally.borrow_mut().issued.pop() else {
                    return;
                };
                let answer = self.call("/oauth2/revoke", &[("token", &token)]).await;
                victim = Some(token);
                answer
            }
        };
        let at = self.now();
        let mut t = self.tally.borrow_mut();
        t.samples.push(Sample {
            at,
            op,
            status,
            took: at - began,
        });
        if let Some(v) = judge(status, retry, &body) {
            t.violations.push(format!("{at:.2}s {op:?}: {v}"));
        }
        let json = || serde_json::from_str::<Value>(&body).unwrap_or_default();
        match (op, status) {
            (Op::Token, 200) => match json()["access_token"].as_str() {
                Some(token) => t.issued.push(token.to_owned()),
                None => t
                    .violations
                    .push(format!("{at:.2}s a 200 without a token: {body}")),
            },
            (Op::IntrospectLive, 200) if json()["active"] != true => t.violations.push(format!(
                "{at:.2}s the live token introspected as inactive: {body}"
            )),
            (Op::IntrospectRevoked, 200) if json()["active"] != false => t.violations.push(
                format!("{at:.2}s the revoked token introspected as active: {body}"),
            ),
            (Op::Revoke, 200) => t.revoked.extend(victim),
            (Op::Revoke, _) => t.unsure += 1,
            _ => {}
        }
    }

    /// Runs the workers until `controller` returns, then stops them; its result.
    async fn run<T>(&self, controller: impl std::future::Future<Output = T>) -> T {
        let workers = (0..WORKERS).map(|n| self.worker(n)).collect();
        let controlled = async {
            let out = controller.await;
            self.stop.set(true);
            out
        };
        let (out, _) = tokio::join!(controlled, join_all(workers));
        out
    }

    /// Waits until a 2 s window starting at or after `since` has more than 99 % successes
    /// (seconds after `since`, on a 0.25 s grid), or until the window could no longer start
    /// within `limit` seconds.
    async fn recovery(&self, since: f64, limit: f64) -> Option<f64> {
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let now = self.now();
            if let Some(after) = first_good_window(&self.tally.borrow().samples, since, now) {
                return Some(after);
            }
            if now > since + limit + 2.0 {
                return None;
            }
        }
    }

    /// Every token returned with a 200 still introspects as active, every token revoked with
    /// a 200 as inactive; the failures.
    async fn check_tokens(&self) -> (usize, Vec<String>) {
        let (issued, revoked) = {
            let mut t = self.tally.borrow_mut();
            (
                std::mem::take(&mut t.issued),
                std::mem::take(&mut t.revoked),
            )
        };
        let jobs: Vec<(String, bool)> = issued
            .into_iter()
            .map(|t| (t, true))
            .chain(revoked.into_iter().map(|t| (t, false)))
            .collect();
        let failures = RefCell::new(Vec::new());
        let size = jobs.len().div_ceil(WORKERS).max(1);
        let checks = jobs
            .chunks(size)
            .map(|chunk| {
                let failures = &failures;
                async move {
                    for (token, want) in chunk {
                        let (status, _, body) =
                            self.call("/oauth2/introspect", &[("token", token)]).await;
                        let active = serde_json::from_str::<Value>(&body).unwrap_or_default()
                            ["active"]
                            == true;
                        if status != 200 || active != *want {
                            failures.borrow_mut().push(format!(
                                "expected active={want}, got {status} {body}"
                            ));
                        }
                    }
                }
            })
            .collect();
        join_all(checks).await;
        (jobs.len(), failures.into_inner())
    }

    /// Counts by operation and status, between `from` and `to` seconds.
    fn counts(&self, from: f64, to: f64) -> BTreeMap<(Op, u16), usize> {
        let mut out = BTreeMap::new();
        for s in self.tally.borrow().samples.iter() {
            if s.at >= from && s.at < to {
                *out.entry((s.op, s.status)).or_insert(0) += 1;
            }
        }
        out
    }

    fn statuses(&self) -> BTreeMap<u16, usize> {
        let mut out = BTreeMap::new();
        for s in self.tally.borrow().samples.iter() {
            *out.entry(s.status).or_insert(0) += 1;
        }
        out
    }

    fn last_failure_after(&self, since: f64) -> Option<f64> {
        self.tally
            .borrow()
            .samples
            .iter()
            .filter(|s| s.at >= since && s.status != 200)
            .map(|s| s.at - since)
            .reduce(f64::max)
    }

    fn assert_no_violations(&self) {
        let t = self.tally.borrow();
        assert!(
            t.violations.is_empty(),
            "{} wrong answers, the first: {:#?}",
            t.violations.len(),
            &t.violations[..t.violations.len().min(10)]
        );
    }
}

/// Every token answered with a 200 validated afterwards, and success came back above 99 %
/// within 10 s of the fault's end.
fn assert_valid_and_recovered(failures: &[String], recovered: Option<f64>, what: &str) {
    assert!(
        failures.is_empty(),
        "tokens answered with 200 must validate: {:?}",
        &failures[..failures.len().min(5)]
    );
    let after = recovered.unwrap_or_else(|| panic!("{what}"));
    assert!(after <= 10.0, "{what}: recovered only after {after:.2} s");
}

/// The start (seconds after `since`) of the first 2 s window, on a 0.25 s grid, that has
/// ended by `now`, holds at least 20 answers and more than 99 % of them 200.
fn first_good_window(samples: &[Sample], since: f64, now: f64) -> Option<f64> {
    let mut start = since;
    while start + 2.0 <= now {
        let window = samples
            .iter()
            .filter(|s| s.at >= start && s.at < start + 2.0);
        let (ok, all) = window.fold((0usize, 0usize), |(ok, all), s| {
            (ok + usize::from(s.status == 200), all + 1)
        });
        if all >= 20 && ok * 100 > all * 99 {
            return Some(start - since);
        }
        start += 0.25;
    }
    None
}

/// Terminates every other backend of the database at `url`; how many.
async fn terminate_backends(url: String) -> i64 {
    #[derive(diesel::QueryableByName)]
    struct Terminated {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        terminated: i64,
    }
    tokio::task::spawn_blocking(move || {
        use diesel::RunQueryDsl;
        let mut conn = diesel::PgConnection::establish(&url).unwrap();
        let rows: Vec<Terminated> = diesel::sql_query(
            "WITH t AS (SELECT pg_terminate_backend(pid) AS done FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()) \
             SELECT count(*) FILTER (WHERE done) AS terminated FROM t",
        )
        .load(&mut conn)
        .unwrap();
        rows[0].terminated
    })
    .await
    .unwrap()
}

fn postgres_only(test: &str) -> bool {
    if TestDatabase::postgres_admin_url().is_none() {
        eprintln!("skipped {test}: PostgreSQL only (set PORTCULLIS_TEST_POSTGRES_URL)");
        return false;
    }
    true
}

#[tokio::test]
async fn f3_postgres_connections_terminated_under_load() {
    if !postgres_only("f3_postgres_connections_terminated_under_load") {
        return;
    }
    let app = spawn_app().await;
    let load = Load::new(&app).await;
    let terminated = RefCell::new(Vec::new());
    let recovered = load
        .run(async {
            // Twice, 1.5 s apart; then a burst, every 100 ms for 1 s, so that some
            // terminations land on queries in flight rather than on idle connections.
            let burst = (0..10).map(|k| 4.0 + f64::from(k) * 0.1);
            for at in [1.5, 3.0].into_iter().chain(burst) {
                load.sleep_until(at).await;
                let n = terminate_backends(app.db.raw_url().to_owned()).await;
                terminated.borrow_mut().push((load.now(), n));
            }
            let last = terminated.borrow().last().unwrap().0;
            (last, load.recovery(last, 10.0).await)
        })
        .await;
    let (last, recovered) = recovered;
    let end = load.now();
    let (checked, failures) = load.check_tokens().await;
    let times: Vec<String> = terminated
        .borrow()
        .iter()
        .map(|(at, n)| format!("{at:.1}s:{n}"))
        .collect();
    eprintln!(
        "F3 pg_terminate_backend: {} requests in {end:.1}s; by status {:?}; terminated (when: \
         how many) {}; after the last: last non-200 at {:?} s, 2 s window > 99 % from {:?} s; \
         {} revocations unanswered; {checked} tokens checked afterwards, {} wrong",
        load.tally.borrow().samples.len(),
        load.statuses(),
        times.join(" "),
        load.last_failure_after(last),
        recovered,
        load.tally.borrow().unsure,
        failures.len(),
    );
    eprintln!("  by operation: {:?}", load.counts(0.0, end));
    load.assert_no_violations();
    assert!(
        terminated.borrow().iter().all(|(_, n)| *n > 0),
        "the node held connections to terminate: {:?}",
        terminated.borrow()
    );
    assert_valid_and_recovered(
        &failures,
        recovered,
        "back above 99 % within 10 s of the last termination",
    );
}

/// A TCP proxy on 127.0.0.1 in front of a server, whose link can be cut (connections
/// dropped, new ones closed at once) or slowed (each chunk held before it is passed on).
struct Proxy {
    address: SocketAddr,
    state: Arc<ProxyState>,
}

#[derive(Default)]
struct ProxyState {
    /// None: passing; Some(None): cut; Some(Some(d)): each chunk held `d`.
    fault: Mutex<Option<Option<Duration>>>,
    open: Mutex<Vec<TcpStream>>,
    closed: AtomicBool,
}

impl ProxyState {
    fn fault(&self) -> Option<Option<Duration>> {
        *self.fault.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set(&self, fault: Option<Option<Duration>>) {
        *self.fault.lock().unwrap_or_else(PoisonError::into_inner) = fault;
    }

    fn drop_all(&self) {
        for s in self
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

impl Proxy {
    fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let state = Arc::new(ProxyState::default());
        let st = state.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if st.closed.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                if st.fault() == Some(None) {
                    continue; // cut: closed at once
                }
                let Ok(server) = TcpStream::connect(upstream) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                {
                    let mut open = st.open.lock().unwrap_or_else(PoisonError::into_inner);
                    open.push(client.try_clone().unwrap());
                    open.push(server.try_clone().unwrap());
                }
                for (from, to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let st = st.clone();
                    std::thread::spawn(move || pump(from, to, &st));
                }
            }
        });
        Self { address, state }
    }

    fn cut(&self) {
        self.state.set(Some(None));
        self.state.drop_all();
    }

    fn slow(&self, by: Duration) {
        self.state.set(Some(Some(by)));
    }

    fn restore(&self) {
        self.state.set(None);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.state.closed.store(true, Ordering::SeqCst);
        self.state.drop_all();
        let _ = TcpStream::connect(self.address);
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, state: &ProxyState) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(Some(delay)) = state.fault() {
            std::thread::sleep(delay);
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

/// `url` (postgres:// or redis://) with its host and port replaced by `address`, and the
/// address it named.
fn through(url: &str, address: SocketAddr) -> (String, SocketAddr) {
    let mut parsed = url::Url::parse(url).unwrap();
    let host = parsed.host_str().unwrap().to_owned();
    let port = parsed
        .port_or_known_default()
        .unwrap_or(match parsed.scheme() {
            "redis" => 6379,
            _ => 5432,
        });
    let upstream = std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port))
        .unwrap()
        .next()
        .unwrap();
    parsed.set_host(Some("127.0.0.1")).unwrap();
    parsed.set_port(Some(address.port())).unwrap();
    (parsed.to_string(), upstream)
}

/// A node whose database link runs through a proxy (PostgreSQL).
async fn node_behind_proxy(db: Arc<TestDatabase>) -> (TestApp, Proxy) {
    let (_, upstream) = through(db.raw_url(), "127.0.0.1:1".parse().unwrap());
    let proxy = Proxy::start(upstream);
    let mut settings = test_settings(&db);
    settings.database.url = through(db.raw_url(), proxy.address).0;
    let app = spawn_with(db, settings).await.unwrap();
    (app, proxy)
}

async fn readyz(node: &TestApp) -> (u16, bool, Value) {
    let res = node.http.get(node.url("/readyz")).send().await.unwrap();
    let status = res.status().as_u16();
    let retry = res.headers().contains_key("retry-after");
    let body = res.text().await.unwrap();
    if let Some(v) = judge(status, retry, &body) {
        panic!("/readyz: {v}");
    }
    (status, retry, serde_json::from_str(&body).unwrap())
}

#[tokio::test]
async fn f3_postgres_unreachable_for_three_seconds_under_load() {
    if !postgres_only("f3_postgres_unreachable_for_three_seconds_under_load") {
        return;
    }
    let db = Arc::new(TestDatabase::from_env().unwrap());
    let (app, proxy) = node_behind_proxy(db).await;
    let load = Load::new(&app).await;
    let (cut, back, ready_during, recovered) = load
        .run(async {
            load.sleep_until(1.5).await;
            proxy.cut();
            let cut = load.now();
            load.sleep_until(cut + 1.5).await;
            let ready_during = readyz(&app).await;
            load.sleep_until(cut + 3.0).await;
            proxy.restore();
            let back = load.now();
            (cut, back, ready_during, load.recovery(back, 10.0).await)
        })
        .await;
    let end = load.now();
    let ready_after = readyz(&app).await;
    let (checked, failures) = load.check_tokens().await;
    let during = load.counts(cut + 0.1, back);
    eprintln!(
        "F3 link cut {:.1}s: {} requests in {end:.1}s; by status {:?}; during the cut {:?}; \
         after: last non-200 at {:?} s, 2 s window > 99 % from {:?} s; {checked} tokens \
         checked afterwards, {} wrong",
        back - cut,
        load.tally.borrow().samples.len(),
        load.statuses(),
        during,
        load.last_failure_after(back),
        recovered,
        failures.len(),
    );
    load.assert_no_violations();
    assert_eq!(ready_during.0, 503, "not ready while the database is away");
    assert_eq!(ready_after.0, 200, "ready again, without a restart");
    assert!(
        during.keys().any(|(_, status)| *status == 503),
        "the cut was felt: {during:?}"
    );
    assert_valid_and_recovered(
        &failures,
        recovered,
        "back above 99 % within 10 s of the database's return",
    );
}

#[tokio::test]
async fn f9_a_slow_database_does_not_starve_discovery_and_recovers() {
    if !postgres_only("f9_a_slow_database_does_not_starve_discovery_and_recovers") {
        return;
    }
    let db = Arc::new(TestDatabase::from_env().unwrap());
    let (app, proxy) = node_behind_proxy(db).await;
    let load = Load::new(&app).await;
    let probes = RefCell::new(Vec::<(f64, u16, f64)>::new());
    let prober = async {
        let http = reqwest::Client::new();
        while !load.stop.get() {
            for path in ["/.well-known/openid-configuration", "/healthz"] {
                let began = load.now();
                let status = match http.get(app.url(path)).send().await {
                    Ok(res) => res.status().as_u16(),
                    Err(_) => 0,
                };
                probes
                    .borrow_mut()
                    .push((began, status, load.now() - began));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    const DELAY: Duration = Duration::from_millis(1000);
    let ((slowed, back, recovered), ()) = tokio::join!(
        load.run(async {
            load.sleep_until(1.0).await;
            proxy.slow(DELAY);
            let slowed = load.now();
            load.sleep_until(slowed + 4.0).await;
            proxy.restore();
            let back = load.now();
            (slowed, back, load.recovery(back, 10.0).await)
        }),
        prober
    );
    let end = load.now();
    let (checked, failures) = load.check_tokens().await;
    let slow_probes: Vec<_> = probes
        .borrow()
        .iter()
        .filter(|(at, _, _)| *at >= slowed && *at < back)
        .copied()
        .collect();
    let worst_probe = slow_probes.iter().map(|p| p.2).fold(0.0, f64::max);
    let (worst_db, worst_db_status) = load
        .tally
        .borrow()
        .samples
        .iter()
        .filter(|s| s.at >= slowed && s.at < back + 1.0)
        .map(|s| (s.took, s.status))
        .fold((0.0, 0), |a, b| if b.0 > a.0 { b } else { a });
    eprintln!(
        "F9 link slowed by {DELAY:?} each way for {:.1}s: {} requests in {end:.1}s; by status \
         {:?}; while slow {:?}; slowest answer while slow {worst_db:.2}s ({worst_db_status}); {} discovery/healthz \
         probes while slow, slowest {worst_probe:.3}s; after: last non-200 at {:?} s, 2 s \
         window > 99 % from {:?} s; {checked} tokens checked afterwards, {} wrong",
        back - slowed,
        load.tally.borrow().samples.len(),
        load.statuses(),
        load.counts(slowed, back),
        slow_probes.len(),
        load.last_failure_after(back),
        recovered,
        failures.len(),
    );
    load.assert_no_violations();
    assert!(
        slow_probes.iter().all(|p| p.1 == 200),
        "discovery and health answer: {slow_probes:?}"
    );
    assert!(slow_probes.len() > 10, "the probes ran");
    assert!(
        worst_probe < 1.0,
        "no starvation: discovery and /healthz answered within 1 s, slowest {worst_probe:.3}s"
    );
    assert_valid_and_recovered(
        &failures,
        recovered,
        "back above 99 % within 10 s of the latency's end",
    );
}

#[tokio::test]
async fn f3_sqlite_write_lock_held_past_the_busy_timeout() {
    let db = Arc::new(TestDatabase::from_env().unwrap());
    let DatabaseUrl::Sqlite(path) = db.url().clone() else {
        eprintln!("skipped f3_sqlite_write_lock_held_past_the_busy_timeout: SQLite only");
        return;
    };
    let mut settings = test_settings(&db);
    settings.database.sqlite_busy_timeout = portcullis_web::settings::Seconds(1);
    let app = spawn_with(db, settings).await.unwrap();
    let load = Load::new(&app).await;
    let (locked, released, recovered) = load
        .run(async {
            load.sleep_until(1.0).await;
            // Another process's writer: BEGIN EXCLUSIVE and hold it 3 s.
            let (tx, rx) = tokio::sync::oneshot::channel();
            let holder = std::thread::spawn(move || {
                let mut conn =
                    diesel::SqliteConnection::establish(&path.to_string_lossy()).unwrap();
                conn.batch_execute("PRAGMA busy_timeout = 5000; BEGIN EXCLUSIVE;")
                    .unwrap();
                let _ = tx.send(());
                std::thread::sleep(Duration::from_secs(3));
                conn.batch_execute("COMMIT;").unwrap();
            });
            rx.await.unwrap();
            let locked = load.now();
            while !holder.is_finished() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let released = load.now();
            (locked, released, load.recovery(released, 10.0).await)
        })
        .await;
    let end = load.now();
    let (checked, failures) = load.check_tokens().await;
    let during = load.counts(locked, released);
    eprintln!(
        "F3 SQLite lock {:.1}s (busy_timeout 1s): {} requests in {end:.1}s; by status {:?}; \
         during the lock {:?}; after: last non-200 at {:?} s, 2 s window > 99 % from {:?} s; \
         {checked} tokens checked afterwards, {} wrong",
        released - locked,
        load.tally.borrow().samples.len(),
        load.statuses(),
        during,
        load.last_failure_after(released),
        recovered,
        failures.len(),
    );
    load.assert_no_violations();
    assert!(
        during.contains_key(&(Op::Revoke, 503)),
        "writers waited past the busy timeout and were told to retry: {during:?}"
    );
    assert_valid_and_recovered(
        &failures,
        recovered,
        "back above 99 % within 10 s of the lock's release",
    );
}

#[tokio::test]
async fn redis_lost_mid_run_the_node_serves_on_and_goes_back_to_it() {
    let Some(redis) = redis_url() else {
        eprintln!(
            "skipped redis_lost_mid_run_the_node_serves_on_and_goes_back_to_it: \
             PORTCULLIS_TEST_REDIS_URL is not set"
        );
        return;
    };
    let (_, upstream) = through(&redis, "127.0.0.1:1".parse().unwrap());
    let proxy = Proxy::start(upstream);
    let db = Arc::new(TestDatabase::from_env().unwrap());
    let mut settings = test_settings(&db);
    settings.rate_limit.redis_url = Some(through(&redis, proxy.address).0);
    let app = spawn_with(db, settings).await.unwrap();
    let (id, secret) = app.service_client(&unique("Service"));
    let token = |started: Instant| {
        let (app, id, secret) = (&app, &id, &secret);
        async move {
            let res = app.client_credentials(id, secret).await;
            (res.status().as_u16(), started.elapsed().as_secs_f64())
        }
    };
    let limiter = || async { readyz(&app).await.2["checks"]["rate_limiter"].clone() };
    let median = |mut took: Vec<f64>| {
        took.sort_by(f64::total_cmp);
        took.get(took.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let mut before = Vec::new();
    for _ in 0..20 {
        let (status, took) = token(Instant::now()).await;
        assert_eq!(status, 200);
        before.push(took);
    }
    assert_eq!(limiter().await, "redis");

    // Redis goes away (connections dropped, new ones closed at once) for 3 s.
    proxy.cut();
    let cut = Instant::now();
    let mut during = Vec::new();
    while cut.elapsed() < Duration::from_secs(3) {
        during.push(token(Instant::now()).await);
    }
    let reported_down = limiter().await;
    proxy.restore();
    let back = Instant::now();
    let mut shared_again = None;
    while back.elapsed() < Duration::from_secs(12) {
        assert_eq!(token(Instant::now()).await.0, 200);
        if limiter().await == "redis" {
            shared_again = Some(back.elapsed().as_secs_f64());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The first request finds Redis gone; the rest should count locally at once.
    let known_down = median(during.iter().skip(1).map(|d| d.1).collect());
    eprintln!(
        "Redis cut for 3s: {} token requests, statuses {:?}, median {:.3}s after the first \
         (before the cut {:.3}s), slowest {:.3}s; readyz said {reported_down}; back to redis \
         {shared_again:?} s after it returned",
        during.len(),
        during
            .iter()
            .map(|d| d.0)
            .collect::<std::collections::BTreeSet<_>>(),
        known_down,
        median(before),
        during.iter().map(|d| d.1).fold(0.0, f64::max),
    );
    assert!(
        during.iter().all(|d| d.0 == 200),
        "the node serves on without Redis"
    );
    assert_eq!(reported_down, "memory (redis unavailable)");
    assert!(
        shared_again.is_some(),
        "the node goes back to Redis within 12 s of its return"
    );
    // REDIS_TIMEOUT (250 ms) is how long one call may wait before the local counters are
    // used; once Redis is known to be down, a request should not wait on it again and again.
    assert!(
        during.len() > 10 && known_down < 0.25,
        "with Redis known to be down, requests still wait on it: {} requests in 3 s, median \
         {known_down:.3}s each",
        during.len()
    );
}

/// F1 over two nodes: 32 parallel redemptions of one code, half on each node.
#[tokio::test]
async fn f1_thirty_two_redemptions_of_one_code_across_two_nodes() {
    let (a, b) = two_nodes(|_| {}).await;
    let user = unique("alice");
    add_user(&a, &user);
    let rp = web_client(&a, "RP1");
    let mut outcomes = BTreeMap::new();
    let mut surviving = 0;
    for round in 0..10 {
        let pkce = pkce();
        let start = authorize_url(&a, &rp, &pkce, &[]);
        let back = if round == 0 {
            sign_in_and_allow(&a, &start, &user).await
        } else {
            // Signed in and consented: a code at once.
            crate::helpers::location(&a.http.get(start).send().await.unwrap())
        };
        let code = query_param(&back, "code").unwrap_or_else(|| panic!("no code: {back}"));
        let attempts = (0..32)
            .map(|i| {
                let node = if i % 2 == 0 { &a } else { &b };
                let (rp, code, verifier) = (&rp, &code, &pkce.verifier);
                async move {
                    let res = exchange(node, rp, code, verifier).await;
                    let status = res.status().as_u16();
                    (status, res.json::<Value>().await.unwrap_or_default())
                }
            })
            .collect();
        let results = join_all(attempts).await;
        let winners: Vec<&Value> = results
            .iter()
            .filter(|(s, _)| *s == 200)
            .map(|(_, body)| body)
            .collect();
        for (status, body) in &results {
            let key = format!("{status} {}", body["error"].as_str().unwrap_or("token"));
            *outcomes.entry(key).or_insert(0) += 1;
        }
        assert_eq!(winners.len(), 1, "round {round}: exactly one success");
        for (status, body) in results.iter().filter(|(s, _)| *s != 200) {
            assert_eq!(
                (*status, body["error"].as_str()),
                (400, Some("invalid_grant")),
                "round {round}: {body}"
            );
        }
        // Case 23: no token but the winner's exists; the replays may have revoked it too.
        let access = winners[0]["access_token"].as_str().unwrap();
        if introspect_active(&b, &rp, access).await {
            surviving += 1;
        }
    }
    eprintln!(
        "F1 two nodes, 10 codes x 32: {outcomes:?}; winners' tokens still active: {surviving}"
    );
}

/// F2 over two nodes: 8 parallel refreshes of one refresh token; the family never forks.
#[tokio::test]
async fn f2_eight_parallel_refreshes_of_one_token_never_fork_the_family() {
    let (a, b) = two_nodes(|_| {}).await;
    let user = unique("alice");
    add_user(&a, &user);
    let rp = web_client(&a, "RP1");
    let mut outcomes = BTreeMap::new();
    for round in 0..5 {
        let pkce = pkce();
        let start = authorize_url(&a, &rp, &pkce, &[]);
        let back = if round == 0 {
            sign_in_and_allow(&a, &start, &user).await
        } else {
            crate::helpers::location(&a.http.get(start).send().await.unwrap())
        };
        let code = query_param(&back, "code").unwrap();
        let tokens: Value = exchange(&b, &rp, &code, &pkce.verifier)
            .await
            .json()
            .await
            .unwrap();
        let refresh = tokens["refresh_token"].as_str().unwrap();
        let attempts = (0..8)
            .map(|i| refresh_with(if i % 2 == 0 { &a } else { &b }, &rp, refresh, None))
            .collect();
        let results = join_all(attempts).await;
        for r in &results {
            let key = r["error"].as_str().unwrap_or("refreshed").to_owned();
            *outcomes.entry(key).or_insert(0) += 1;
        }
        let winners: Vec<&Value> = results
            .iter()
            .filter(|r| r["refresh_token"].is_string())
            .collect();
        assert!(winners.len() <= 1, "round {round}: forked: {results:?}");
        assert!(
            results
                .iter()
                .all(|r| r["refresh_token"].is_string() || r["error"] == "invalid_grant"),
            "round {round}: {results:?}"
        );
        // Strict reuse detection: the other seven were replays, so the family is dead,
        // the winner's new tokens included.
        for w in winners {
            let next = refresh_with(&a, &rp, w["refresh_token"].as_str().unwrap(), None).await;
            assert_eq!(next["error"], "invalid_grant", "round {round}: {next}");
            assert!(!introspect_active(&b, &rp, w["access_token"].as_str().unwrap()).await);
        }
        assert_eq!(
            refresh_with(&b, &rp, refresh, None).await["error"],
            "invalid_grant"
        );
    }
    eprintln!("F2 two nodes, 5 grants x 8 parallel refreshes: {outcomes:?}");
}

/// The fixed issuer of the killed node: it listens on a new port after the restart, and
/// tokens name the issuer that made them.
const KILLED_ISSUER: &str = "http://127.0.0.1:8080";

#[tokio::test]
async fn f6_kill_9_mid_traffic_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(TestDatabase::from_env().unwrap());
    let master_key = portcullis_core::keys::MasterKey::generate(&portcullis_core::OsRandom)
        .unwrap()
        .to_base64();
    let node_cmd = || {
        let mut cmd = command(dir.path());
        cmd.env("PORTCULLIS__DATABASE__URL", db.raw_url())
            .env("PORTCULLIS__SECURITY__BCRYPT_COST", "4")
            .env("PORTCULLIS__KEYS__MASTER_KEY", &master_key)
            .env("PORTCULLIS__SERVER__ISSUER", KILLED_ISSUER)
            .env("PORTCULLIS__RATE_LIMIT__PER_IP", "1000000/1m")
            .env("PORTCULLIS__RATE_LIMIT__PER_CLIENT", "1000000/1m");
        cmd
    };
    let cli = |args: &[&str], stdin: Option<&str>| {
        let out = run(node_cmd(), args, stdin);
        assert_eq!(out.code, 0, "{args:?}: {}", out.stderr);
        out
    };
    let mut server = Server::start(node_cmd());
    let service = cli(
        &[
            "client",
            "create",
            "--name",
            "Batch job",
            "--grant-type",
            "client_credentials",
            "--scopes",
            "api:read",
            "--json",
        ],
        None,
    )
    .json();
    let made = cli(
        &[
            "client",
            "create",
            "--name",
            "RP1",
            "--redirect-uri",
            REDIRECT,
            "--json",
        ],
        None,
    )
    .json();
    let rp = Rp {
        id: made["client_id"].as_str().unwrap().to_owned(),
        secret: made["client_secret"].as_str().map(str::to_owned),
    };
    cli(
        &[
            "user",
            "create",
            "--username",
            "alice",
            "--email",
            "alice@example.com",
            "--password-stdin",
        ],
        Some(&format!("{PASSWORD}\n")),
    );
    let node = |address: SocketAddr, http: reqwest::Client| TestApp {
        address,
        base: KILLED_ISSUER.to_owned(),
        http,
        db: db.clone(),
        master_key: master_key.clone(),
    };
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .cookie_store(true)
        .build()
        .unwrap();
    let app = node(server.address, browser.clone());
    let (id, secret) = (
        service["client_id"].as_str().unwrap().to_owned(),
        service["client_secret"].as_str().unwrap().to_owned(),
    );

    // Grant 1: a code redeemed before the kill.
    let pkce1 = pkce();
    let back = sign_in_and_allow(&app, &authorize_url(&app, &rp, &pkce1, &[]), "alice").await;
    let code1 = query_param(&back, "code").unwrap();
    let res = exchange(&app, &rp, &code1, &pkce1.verifier).await;
    assert_eq!(res.status(), 200);
    let grant1: Value = res.json().await.unwrap();
    // Grant 2: its refresh token rotated before the kill.
    let pkce2 = pkce();
    let res = browser
        .get(authorize_url(&app, &rp, &pkce2, &[]))
        .send()
        .await
        .unwrap();
    let code2 = query_param(&crate::helpers::location(&res), "code").unwrap();
    let grant2: Value = exchange(&app, &rp, &code2, &pkce2.verifier)
        .await
        .json()
        .await
        .unwrap();
    let r1 = grant2["refresh_token"].as_str().unwrap().to_owned();
    let rotated = refresh_with(&app, &rp, &r1, None).await;
    let r2 = rotated["refresh_token"].as_str().unwrap().to_owned();
    let mut before_kill = vec![
        grant1["access_token"].as_str().unwrap().to_owned(),
        grant2["access_token"].as_str().unwrap().to_owned(),
        rotated["access_token"].as_str().unwrap().to_owned(),
    ];

    // Load: client-credentials tokens from 8 clients; SIGKILL after 1 s.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let started = Instant::now();
    let killed = Cell::new(false);
    let returned = RefCell::new(Vec::new());
    let errors = Cell::new(0usize);
    let worker = || async {
        loop {
            let res = http
                .post(app.url("/oauth2/token"))
                .basic_auth(&id, Some(&secret))
                .form(&[("grant_type", "client_credentials")])
                .send()
                .await;
            let body = match res {
                Ok(res) if res.status() == 200 => res.json::<Value>().await.ok(),
                Ok(res) => panic!("before the kill: {}", res.status()),
                Err(_) => None,
            };
            match body.as_ref().and_then(|b| b["access_token"].as_str()) {
                Some(token) => returned.borrow_mut().push(token.to_owned()),
                None => {
                    assert!(killed.get(), "a failure before the kill");
                    errors.set(errors.get() + 1);
                    return;
                }
            }
        }
    };
    let kill = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        server.child.kill().unwrap();
        killed.set(true);
        let status = server.child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9)
        );
        returned.borrow().len()
    };
    let (at_kill, _) = tokio::join!(kill, join_all((0..WORKERS).map(|_| worker()).collect()));
    let load_tokens = returned.into_inner();
    eprintln!(
        "F6 kill -9 after {:.2}s of load: {} tokens returned ({at_kill} when the signal was \
         sent), {} requests cut off",
        started.elapsed().as_secs_f64(),
        load_tokens.len(),
        errors.get()
    );
    assert!(load_tokens.len() > 20, "the load ran");
    before_kill.extend(load_tokens);

    // The same database, a new process.
    let restarted = Instant::now();
    drop(server);
    let server = Server::start(node_cmd());
    let app = node(server.address, browser.clone());
    eprintln!("F6 restarted in {:.2}s", restarted.elapsed().as_secs_f64());
    let inactive = RefCell::new(Vec::new());
    let size = before_kill.len().div_ceil(WORKERS);
    let checks = before_kill
        .chunks(size)
        .map(|chunk| {
            let (app, inactive, id, secret, rp) = (&app, &inactive, &id, &secret, &rp);
            async move {
                for token in chunk {
                    // The code-flow tokens belong to RP1, the rest to the service client.
                    let active = app.is_active(id, secret, token).await
                        || introspect_active(app, rp, token).await;
                    if !active {
                        inactive.borrow_mut().push(token.clone());
                    }
                }
            }
        })
        .collect();
    join_all(checks).await;
    assert!(
        inactive.borrow().is_empty(),
        "{} of {} tokens returned before the kill are inactive",
        inactive.borrow().len(),
        before_kill.len()
    );
    // The session lives in the database: the browser is still signed in.
    let pkce3 = pkce();
    let res = browser
        .get(authorize_url(&app, &rp, &pkce3, &[]))
        .send()
        .await
        .unwrap();
    assert!(
        query_param(&crate::helpers::location(&res), "code").is_some(),
        "still signed in after the restart: {}",
        crate::helpers::location(&res)
    );
    // The code redeemed before the kill is spent, and its replay revokes its grant.
    let replay = exchange(&app, &rp, &code1, &pkce1.verifier).await;
    assert_eq!(replay.status(), 400);
    assert_eq!(
        replay.json::<Value>().await.unwrap()["error"],
        "invalid_grant"
    );
    assert!(!introspect_active(&app, &rp, grant1["access_token"].as_str().unwrap()).await);
    // The refresh token rotated before the kill, replayed: refused, and the family revoked.
    let replay = refresh_with(&app, &rp, &r1, None).await;
    assert_eq!(replay["error"], "invalid_grant", "{replay}");
    let after = refresh_with(&app, &rp, &r2, None).await;
    assert_eq!(
        after["error"], "invalid_grant",
        "the family is revoked: {after}"
    );
    assert!(!introspect_active(&app, &rp, rotated["access_token"].as_str().unwrap()).await);
    // No torn audit record.
    let verified = run(node_cmd(), &["audit", "verify"], None);
    assert_eq!(verified.code, 0, "{}{}", verified.stdout, verified.stderr);
    let (code, _) = server.stop();
    assert_eq!(code, 0);
}

/// F8, bounded: while 200 connections trickle a request head that never ends, 20 token
/// requests trickle their bodies and 3 claim 10 MB bodies, a normal client is served as usual.
#[tokio::test]
async fn f8_slow_and_oversized_clients_do_not_starve_a_normal_one() {
    const LORIS: usize = 200;
    const SLOW_BODIES: usize = 20;
    let app = spawn_app().await;
    let (id, secret) = app.service_client("Service");
    let address = app.address;
    let stop = Arc::new(AtomicBool::new(false));
    let trickle = |head: String, drip: &'static [u8], count: usize| {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut conns: Vec<TcpStream> = (0..count)
                .filter_map(|_| TcpStream::connect(address).ok())
                .collect();
            for c in &mut conns {
                let _ = c.write_all(head.as_bytes());
            }
            let opened = conns.len();
            let opened_at = Instant::now();
            // Until the normal client is done, and at least 6 s (actix's client request
            // timeout is 5 s).
            while !stop.load(Ordering::SeqCst) || opened_at.elapsed() < Duration::from_secs(6) {
                std::thread::sleep(Duration::from_millis(500));
                for c in &mut conns {
                    let _ = c.write_all(drip);
                }
            }
            // Those the server has given up on read as closed (or with its answer).
            let ended = conns
                .iter_mut()
                .map(|c| {
                    c.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
                    let mut buf = [0u8; 512];
                    match c.read(&mut buf) {
                        // Closed, or answered (408) before closing.
                        Ok(n) => n == 0 || buf.starts_with(b"HTTP/1.1 "),
                        Err(e) => !matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ),
                    }
                })
                .filter(|ended| *ended)
                .count();
            (opened, ended)
        })
    };
    let loris = trickle(
        format!("GET /healthz HTTP/1.1\r\nHost: {address}\r\n"),
        b"X-Slow: 1\r\n",
        LORIS,
    );
    let basic = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("{id}:{secret}"),
    );
    let slow_bodies = trickle(
        format!(
            "POST /oauth2/token HTTP/1.1\r\nHost: {address}\r\nAuthorization: Basic {basic}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 4000\r\n\r\n\
             grant_type=client_credentials&x="
        ),
        b"aaaaaaaaaa",
        SLOW_BODIES,
    );
    let big = std::thread::spawn(move || {
        (0..3)
            .map(|_| {
                let began = Instant::now();
                let mut c = TcpStream::connect(address).unwrap();
                c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let head = format!(
                    "POST /oauth2/token HTTP/1.1\r\nHost: {address}\r\n\
                     Content-Type: application/x-www-form-urlencoded\r\n\
                     Content-Length: 10485760\r\n\r\n"
                );
                c.write_all(head.as_bytes()).unwrap();
                let _ = c.write_all(&[b'a'; 64 * 1024]);
                let mut buf = [0u8; 64];
                let status = match c.read(&mut buf) {
                    Ok(n) => String::from_utf8_lossy(&buf[..n])
                        .split(' ')
                        .nth(1)
                        .and_then(|s| s.parse::<u16>().ok())
                        .unwrap_or(0),
                    Err(_) => 0,
                };
                (status, began.elapsed().as_secs_f64())
            })
            .collect::<Vec<_>>()
    });
    // The normal client, meanwhile (after the others have connected).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let mut normal = Vec::new();
    while started.elapsed() < Duration::from_secs(4) {
        for path in ["/oauth2/token", "/.well-known/openid-configuration"] {
            let began = Instant::now();
            let status = if path == "/oauth2/token" {
                app.post_basic(path, &id, &secret, &[("grant_type", "client_credentials")])
                    .await
                    .status()
            } else {
                app.http.get(app.url(path)).send().await.unwrap().status()
            };
            normal.push((status.as_u16(), began.elapsed().as_secs_f64()));
        }
    }
    stop.store(true, Ordering::SeqCst);
    let (loris_open, loris_ended) = loris.join().unwrap();
    let (slow_open, slow_ended) = slow_bodies.join().unwrap();
    let big = big.join().unwrap();
    let mut took: Vec<f64> = normal.iter().map(|n| n.1).collect();
    took.sort_by(f64::total_cmp);
    let p99 = took[(took.len() * 99 / 100).min(took.len() - 1)];
    eprintln!(
        "F8: {loris_open} slow heads ({loris_ended} ended by the server within 6 s), \
         {slow_open} slow bodies ({slow_ended} ended), 10 MB bodies answered {big:?}; normal \
         client: {} requests, p99 {p99:.3}s, slowest {:.3}s",
        normal.len(),
        took.last().unwrap(),
    );
    assert_eq!((loris_open, slow_open), (LORIS, SLOW_BODIES));
    assert_eq!(
        loris_ended, LORIS,
        "a request head that never ends is given up on (actix's client request timeout)"
    );
    assert!(
        normal.iter().all(|n| n.0 == 200),
        "the normal client is served"
    );
    assert!(normal.len() > 50, "the normal client got through");
    assert!(p99 < 1.0, "p99 {p99:.3}s");
    for (status, secs) in &big {
        assert_eq!(*status, 413, "a 10 MB body is refused from its length");
        assert!(*secs < 2.0, "at once, not after reading it: {secs:.2}s");
    }
    // The server still answers as before.
    assert!(!app.token_for(&id, &secret).await.is_empty());
}
