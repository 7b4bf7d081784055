//! Starting the server and the binary for tests.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use portcullis_core::clients::{ClientRegistration, register_client};
use portcullis_core::domain::{
    ClientAuthMethod, ClientName, Email, GrantType, RedirectUri, ScopeSet, Username,
};
use portcullis_core::model::TokenSettings;
use portcullis_core::password::{Password, PasswordHasher};
use portcullis_core::users::{UserRegistration, create_user};
use portcullis_core::{OsRandom, SystemClock};
use portcullis_storage::test_db::TestDatabase;
use portcullis_storage::{Database, DieselStore, PoolOptions};
use portcullis_web::settings::{Config, Settings};
use portcullis_web::startup::Application;
use reqwest::header::LOCATION;

pub const ADMIN_PASSWORD: &str = "bootstrap-admin-password";

pub struct TestApp {
    pub address: SocketAddr,
    pub base: String,
    pub http: reqwest::Client,
    pub db: Arc<TestDatabase>,
    pub master_key: String,
}

/// Settings for a test server on a fresh database: an ephemeral port, cheap bcrypt.
pub fn test_settings(db: &TestDatabase) -> Settings {
    let mut s = Settings::default();
    s.server.listen = "127.0.0.1:0".into();
    s.server.workers = 1;
    s.database.url = db.raw_url().to_owned();
    s.database.max_connections = 4;
    s.database.connect_timeout = portcullis_web::settings::Seconds(1);
    s.bootstrap.admin_password = Some(ADMIN_PASSWORD.into());
    s.security.bcrypt_cost = 4;
    // Load tests send thousands of requests from 127.0.0.1; the rate-limit tests set their own.
    s.rate_limit.per_ip = "1000000/1m".into();
    s.rate_limit.per_client = "1000000/1m".into();
    // Tests send bad requests on purpose, many on one connection: slowing them is tested
    // on its own (limits.rs).
    s.rate_limit.slow_failing_connections_after = 0;
    s.keys.master_key = Some(
        portcullis_core::keys::MasterKey::generate(&portcullis_core::OsRandom)
            .unwrap()
            .to_base64(),
    );
    s
}

/// Starts a server on `db` with `settings` (see `test_settings`).
pub async fn spawn_with(db: Arc<TestDatabase>, settings: Settings) -> anyhow::Result<TestApp> {
    let config = Config::from_settings(&settings)?;
    let app = Application::build(&config)?;
    let address = app.address();
    let base = app.issuer().to_string();
    tokio::spawn(app.run_until_stopped());
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .cookie_store(true)
        .build()?;
    let master_key = settings.keys.master_key.unwrap_or_default();
    Ok(TestApp {
        address,
        base,
        http,
        db,
        master_key,
    })
}

pub async fn spawn_app() -> TestApp {
    let db = Arc::new(TestDatabase::from_env().expect("test database"));
    let settings = test_settings(&db);
    spawn_with(db, settings).await.expect("the server starts")
}

impl TestApp {
    /// `path` on this node, by the address it is bound to (several nodes share one issuer).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// Registers a client straight through the store; returns its id and secret.
    pub fn register(
        &self,
        name: &str,
        grants: &[GrantType],
        auth: ClientAuthMethod,
        scopes: &str,
    ) -> (String, Option<String>) {
        let store =
            DieselStore::new(Database::open(self.db.url(), &PoolOptions::default()).unwrap());
        let redirect = grants.contains(&GrantType::AuthorizationCode);
        let made = register_client(
            &store,
            &OsRandom,
            &SystemClock,
            ClientRegistration {
                name: ClientName::parse(name).unwrap(),
                redirect_uris: if redirect {
                    vec![RedirectUri::parse("https://rp1.test/cb").unwrap()]
                } else {
                    vec![]
                },
                post_logout_redirect_uris: vec![],
                grant_types: grants.to_vec(),
                auth_method: auth,
                allowed_scopes: ScopeSet::parse(scopes).unwrap(),
                first_party: false,
                token_settings: TokenSettings::default(),
                rate_limit_tier: None,
                roles_claim: false,
            },
            None,
            false,
        )
        .unwrap();
        (
            made.client.id.to_string(),
            made.secret.map(|s| s.reveal().to_owned()),
        )
    }

    /// A service client (client_credentials, client_secret_basic, scopes api:read api:write).
    pub fn service_client(&self, name: &str) -> (String, String) {
        let (id, secret) = self.register(
            name,
            &[GrantType::ClientCredentials],
            ClientAuthMethod::ClientSecretBasic,
            "api:read api:write",
        );
        (id, secret.unwrap())
    }

    /// POSTs a form with the browser's cookies.
    pub async fn post_form(&self, path: &str, form: &impl serde::Serialize) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .form(form)
            .send()
            .await
            .unwrap()
    }

    /// POSTs a form with Basic credentials.
    pub async fn post_basic(
        &self,
        path: &str,
        id: &str,
        secret: &str,
        form: &[(&str, &str)],
    ) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .basic_auth(id, Some(secret))
            .form(form)
            .send()
            .await
            .unwrap()
    }

    /// GETs `path` and parses the JSON body.
    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        let res = self.http.get(self.url(path)).send().await.unwrap();
        assert!(res.status().is_success(), "{path}: {}", res.status());
        res.json().await.unwrap()
    }

    /// Whether `token` introspects as active for the client `id`.
    pub async fn is_active(&self, id: &str, secret: &str, token: &str) -> bool {
        let res = self
            .post_basic("/oauth2/introspect", id, secret, &[("token", token)])
            .await;
        res.json::<serde_json::Value>().await.unwrap()["active"] == true
    }

    /// A client_credentials token request of the client, as sent.
    pub async fn client_credentials(&self, id: &str, secret: &str) -> reqwest::Response {
        self.post_basic(
            "/oauth2/token",
            id,
            secret,
            &[("grant_type", "client_credentials")],
        )
        .await
    }

    /// A client_credentials access token for the client.
    /// The status of a client-credentials request.
    pub async fn client_credentials_status(&self, id: &str, secret: &str) -> u16 {
        self.client_credentials(id, secret).await.status().as_u16()
    }

    pub async fn token_for(&self, id: &str, secret: &str) -> String {
        let res = self.client_credentials(id, secret).await;
        assert_eq!(res.status(), 200);
        res.json::<serde_json::Value>().await.unwrap()["access_token"]
            .as_str()
            .unwrap()
            .to_owned()
    }
}

/// A folder for one test, with the `portcullis` binary run inside it.
pub struct Cli {
    pub dir: tempfile::TempDir,
    pub db: TestDatabase,
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }

    /// A failure reported as exactly one line, with no panic or backtrace.
    pub fn assert_one_line_failure(&self, code: i32, needle: &str) {
        assert_eq!(self.code, code, "exit code; stderr: {}", self.stderr);
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line on stderr, got: {:?}", self.stderr);
        assert!(
            lines[0].contains(needle),
            "{:?} should mention {needle:?}",
            lines[0]
        );
        assert!(!self.stderr.contains("panicked") && !self.stderr.contains("backtrace"));
    }
}

pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_portcullis"))
}

/// The binary in `dir` with no inherited Portcullis configuration.
pub fn command(dir: &Path) -> Command {
    let mut cmd = Command::new(binary());
    cmd.current_dir(dir);
    for (key, _) in std::env::vars() {
        if key.starts_with("PORTCULLIS_") && key != "PORTCULLIS_TEST_POSTGRES_URL" {
            cmd.env_remove(key);
        }
    }
    cmd.env_remove("RUST_LOG").env("NO_COLOR", "1");
    cmd
}

impl Cli {
    /// A folder and a fresh database (PostgreSQL in the PostgreSQL pass).
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            db: TestDatabase::from_env().unwrap(),
        }
    }

    pub fn cmd(&self) -> Command {
        let mut cmd = command(self.dir.path());
        cmd.env("PORTCULLIS__DATABASE__URL", self.db.raw_url())
            .env("PORTCULLIS__SECURITY__BCRYPT_COST", "4");
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Run {
        self.run_with(self.cmd(), args, None)
    }

    pub fn run_stdin(&self, args: &[&str], stdin: &str) -> Run {
        self.run_with(self.cmd(), args, Some(stdin))
    }

    pub fn run_with(&self, cmd: Command, args: &[&str], stdin: Option<&str>) -> Run {
        run(cmd, args, stdin)
    }
}

/// The exit code, or 128 + the signal that ended the process, as a shell reports it.
fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

pub fn run(mut cmd: Command, args: &[&str], stdin: Option<&str>) -> Run {
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn portcullis");
    {
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).unwrap();
        }
    }
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().unwrap();
    Run {
        code: exit_code(status),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// A `portcullis serve` process, with its stderr lines collected as they come.
pub struct Server {
    pub child: Child,
    pub address: SocketAddr,
    pub lines: Vec<String>,
    rx: mpsc::Receiver<String>,
}

impl Server {
    /// Starts `serve` with JSON logs and waits (up to 30 s) for its `listening` line.
    pub fn start(mut cmd: Command) -> Self {
        cmd.args(["--log-format", "json", "serve"])
            .env("PORTCULLIS__SERVER__LISTEN", "127.0.0.1:0")
            .env("PORTCULLIS__SERVER__WORKERS", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn portcullis serve");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut lines = Vec::new();
        loop {
            let line = rx
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("no `listening` line; stderr so far: {lines:#?}")
                });
            lines.push(line.clone());
            let event = serde_json::from_str::<serde_json::Value>(&line).unwrap_or_default();
            if event["message"] == "listening" {
                let address = event["address"].as_str().unwrap().parse().unwrap();
                return Self {
                    child,
                    address,
                    lines,
                    rx,
                };
            }
        }
    }

    /// SIGTERM, then the exit code and the rest of stderr.
    pub fn stop(mut self) -> (i32, Vec<String>) {
        let pid = self.child.id().to_string();
        let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(killed.success());
        let status = self.child.wait().unwrap();
        let mut lines = std::mem::take(&mut self.lines);
        lines.extend(self.rx.iter());
        (exit_code(status), lines)
    }
}

impl Drop for Server {
    /// A test that fails half-way leaves no server behind.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A minimal HTTP/1.1 GET, for tests that drive a separate process without an async runtime.
pub fn http_get(address: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The password of every user `add_user` makes.
pub const PASSWORD: &str = "alice's long password";

pub fn add_user(app: &TestApp, name: &str) -> String {
    add_user_with_roles(app, name, &[])
}

/// A user with `roles` (which must exist), made through the store; their id.
pub fn add_user_with_roles(app: &TestApp, name: &str, roles: &[&str]) -> String {
    let store = DieselStore::new(Database::open(app.db.url(), &PoolOptions::default()).unwrap());
    let user = create_user(
        &store,
        &PasswordHasher::new(4).unwrap(),
        &OsRandom,
        &SystemClock,
        UserRegistration {
            username: Username::parse(name).unwrap(),
            email: Some(Email::parse(&format!("{name}@example.com")).unwrap()),
            display_name: None,
            password: &Password::parse(PASSWORD).unwrap(),
            roles: roles
                .iter()
                .map(|r| portcullis_core::model::RoleName::parse(r).unwrap())
                .collect(),
            password_change_required: false,
        },
        None,
    )
    .unwrap();
    user.id.to_string()
}

pub fn location(res: &reqwest::Response) -> String {
    res.headers()
        .get(LOCATION)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// A query parameter of an absolute URL or of a path.
pub fn query_param(url: &str, name: &str) -> Option<String> {
    let absolute = if url.starts_with('/') {
        format!("http://x{url}")
    } else {
        url.to_owned()
    };
    let parsed = url::Url::parse(&absolute).ok()?;
    parsed
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

pub fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in {html}"))
        + marker.len();
    let end = html[start..].find('"').unwrap() + start;
    unescape(&html[start..end])
}

/// Decodes HTML character references as a browser does for an attribute value.
pub fn unescape(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let Some(end) = after.find(';') else {
            out.push_str(&rest[i..]);
            return out;
        };
        let entity = &after[..end];
        let decoded = match entity {
            "amp" => Some('&'),
            "quot" => Some('"'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .or_else(|| entity.strip_prefix("#X"))
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => out.push(c),
            None => out.push_str(&rest[i..i + end + 2]),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}
