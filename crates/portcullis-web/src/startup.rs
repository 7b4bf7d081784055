//! Composition: the one place (besides tests) that touches storage. It opens the database,
//! applies migrations, creates the first administrator and builds the HTTP server.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::{DefaultHeaders, ErrorHandlers, from_fn};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use anyhow::Context as _;
use portcullis_core::bootstrap::{InitialAdmin, ensure_initial_admin};
use portcullis_core::client_cache::{CachingClients, ClientCache};
use portcullis_core::domain::IssuerUrl;
use portcullis_core::key_lifecycle::Actor;
use portcullis_core::password::PasswordHasher;
use portcullis_core::store::ClientStore;
use portcullis_core::{OsRandom, SystemClock};
use portcullis_storage::{Database, DieselStore, Stores};
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::key_maintenance::KeyMaintenance;
use crate::rate_limit::RateLimiter;
use crate::settings::Config;
use crate::state::AppState;
use crate::{errors, paths, rate_limit, request_id, routes, tls};

/// Opens the database named in the configuration and applies pending migrations.
pub fn open_stores(config: &Config) -> anyhow::Result<Stores> {
    let db = Database::open(&config.database, &config.pool)?;
    let applied = db.migrate()?;
    for version in &applied {
        tracing::info!(
            version,
            backend = config.database.backend(),
            "applied migration"
        );
    }
    Ok(Stores::new(DieselStore::new(db)))
}

/// Applies pending migrations and returns their versions (the `migrate` command).
pub fn migrate(config: &Config) -> anyhow::Result<Vec<String>> {
    let db = Database::open(&config.database, &config.pool)?;
    Ok(db.migrate()?)
}

/// A built server, bound and ready to run.
pub struct Application {
    server: Server,
    address: SocketAddr,
    issuer: IssuerUrl,
    initial_admin: Option<InitialAdmin>,
    stop_signals: StopSignals,
    maintenance: KeyMaintenance,
    pruner: Option<crate::audit::Pruner>,
    purger: crate::purge::Purger,
    client_refresh: Option<ClientRefresh>,
    certificate: Option<Arc<tls::ReloadableCert>>,
}

/// SIGTERM and SIGINT, listened for from the moment the application is built. (actix would
/// install its own handlers only once the server is first polled, after it already accepts
/// connections: a SIGTERM in between would kill the process instead of stopping it.)
struct StopSignals {
    terminate: Signal,
    interrupt: Signal,
    /// SIGHUP: read the TLS certificate and key again.
    hangup: Signal,
}

enum SignalEvent {
    Stop(&'static str),
    Reload,
}

impl StopSignals {
    fn install() -> std::io::Result<Self> {
        Ok(Self {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
            hangup: signal(SignalKind::hangup())?,
        })
    }

    async fn recv(&mut self) -> SignalEvent {
        tokio::select! {
            _ = self.terminate.recv() => SignalEvent::Stop("SIGTERM"),
            _ = self.interrupt.recv() => SignalEvent::Stop("SIGINT"),
            _ = self.hangup.recv() => SignalEvent::Reload,
        }
    }
}

impl Application {
    pub fn build(config: &Config) -> anyhow::Result<Self> {
        // Bind first: a port in use is the quickest mistake to report.
        let listener = TcpListener::bind(config.listen)
            .with_context(|| format!("cannot listen on {} (server.listen)", config.listen))?;
        let address = listener
            .local_addr()
            .context("cannot read the bound address")?;
        let issuer = config.issuer_for(address)?;
        // Then the certificate, before anything is written: a wrong file stops the start early.
        let certificate = match &config.tls {
            Some(files) => Some(Arc::new(tls::ReloadableCert::load(files.clone())?)),
            None => None,
        };

        let stores = open_stores(config)?;
        let rng: Arc<dyn portcullis_core::Random> = Arc::new(OsRandom);
        let clock: Arc<dyn portcullis_core::Clock> = Arc::new(SystemClock);
        let hasher =
            Arc::new(PasswordHasher::new(config.bcrypt_cost).context("security.bcrypt_cost")?);
        let initial_admin = ensure_initial_admin(
            stores.users.as_ref(),
            &hasher,
            rng.as_ref(),
            clock.as_ref(),
            config.admin_username.clone(),
            config.admin_password.as_ref(),
        )
        .context("cannot create the initial administrator")?;
        let masters = Arc::new(crate::master_key::load_all(config, rng.as_ref())?);
        let mut maintenance =
            KeyMaintenance::new(config, &stores, masters.clone(), rng.clone(), clock.clone())?;
        let ttl = maintenance.longest_token_ttl()?;
        maintenance.keys = Arc::new(
            maintenance
                .rotator()
                .start(ttl, Actor("system"))
                .context("cannot open the signing keys (keys.master_key)")?,
        );
        tracing::info!(master_key_id = masters.current().id(), "signing keys ready");
        if let Some(admin) = &initial_admin {
            tracing::info!(username = %admin.username, "created the initial administrator");
        }

        let purger = crate::purge::Purger {
            store: stores.flow.clone(),
            clock: clock.clone(),
            interval: config.purge_interval,
        };
        let pruner = config
            .audit_retention
            .map(|retention| crate::audit::Pruner {
                store: stores.audit.clone(),
                clock: clock.clone(),
                retention,
                interval: config.audit_prune_interval,
            });
        let client_cache = Arc::new(ClientCache::new(config.client_cache_refresh.is_some()));
        client_cache.observe(stores.clients.client_generation());
        let client_refresh = config.client_cache_refresh.map(|interval| ClientRefresh {
            store: stores.clients.clone(),
            cache: client_cache.clone(),
            interval,
        });
        let state = web::Data::new(AppState {
            issuer: issuer.clone(),
            users: stores.users.clone(),
            clients: Arc::new(CachingClients::new(
                stores.clients.clone(),
                client_cache.clone(),
            )),
            client_cache,
            health: stores.health.clone(),
            grants: stores.grants.clone(),
            flow: stores.flow.clone(),
            keys: maintenance.keys.clone(),
            key_maintenance: maintenance.clone(),
            registration: config.registration.clone(),
            metrics: Arc::default(),
            metrics_token: config.metrics_token.clone(),
            jwks_cache_control: HeaderValue::from_str(&format!(
                "public, max-age={}",
                config.jwks_max_age.as_secs()
            ))?,
            metadata: web::Bytes::from(metadata(&issuer, config.registration.is_some())),
            hasher,
            limiter: Arc::new(
                RateLimiter::new(config.rate_limits.redis_url.as_deref(), clock.clone())
                    .context("rate_limit.redis_url")?,
            ),
            limits: Arc::new(config.rate_limits.clone()),
            totp: stores.totp.clone(),
            audit: stores.audit.clone(),
            roles: stores.roles.clone(),
            api_keys: stores.api_keys.clone(),
            masters: masters.clone(),
            client_quotas: Arc::default(),
            access_token_alg: config.access_token_alg,
            clock,
            rng,
        });
        let max_body = config.max_body_bytes;
        // Responses reach browsers over https when the issuer is https (TLS here or at a
        // proxy in front): HSTS then tells them never to try plain http.
        let hsts = issuer.is_https().then(|| {
            format!(
                "max-age={}; includeSubDomains",
                config.hsts_max_age.as_secs()
            )
        });
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .app_data(web::PayloadConfig::new(max_body))
                .app_data(web::FormConfig::default().limit(max_body))
                .app_data(web::JsonConfig::default().limit(max_body))
                .wrap(from_fn(rate_limit::per_ip))
                .wrap(from_fn(move |req, next| {
                    read_body_first(req, next, max_body)
                }))
                .wrap(from_fn(refuse_oversized))
                .wrap(security_headers(hsts.clone()))
                .wrap(ErrorHandlers::new().default_handler(errors::replace_framework_errors))
                .wrap(from_fn(crate::metrics::middleware))
                .wrap(from_fn(request_id::middleware))
                .wrap(from_fn(rate_limit::slow_failing_connections))
                .configure(|cfg| routes::configure(cfg, max_body))
                .default_service(web::to(not_found))
        })
        .on_connect(|_, data| {
            data.insert(rate_limit::Strikes::default());
        })
        .disable_signals()
        .shutdown_timeout(config.shutdown_timeout.as_secs());
        if config.workers > 0 {
            server = server.workers(config.workers);
        }
        let server = match &certificate {
            Some(cert) => server
                .listen_rustls_0_23(listener, tls::server_config(cert.clone())?)
                .context("cannot start the HTTPS server")?,
            None => server
                .listen(listener)
                .context("cannot start the HTTP server")?,
        }
        .run();
        let stop_signals =
            StopSignals::install().context("cannot listen for SIGTERM and SIGINT")?;
        Ok(Self {
            server,
            address,
            issuer,
            initial_admin,
            stop_signals,
            maintenance,
            pruner,
            purger,
            client_refresh,
            certificate,
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn issuer(&self) -> &IssuerUrl {
        &self.issuer
    }

    /// The administrator created on this start, if the database was empty.
    pub fn initial_admin(&self) -> Option<&InitialAdmin> {
        self.initial_admin.as_ref()
    }

    /// Serves until SIGINT or SIGTERM, then stops accepting connections and lets requests in
    /// flight finish (up to `server.shutdown_timeout`).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let Self {
            server,
            mut stop_signals,
            maintenance,
            pruner,
            purger,
            client_refresh,
            certificate,
            ..
        } = self;
        let (stop_background, stopped) = tokio::sync::watch::channel(false);
        let schedule = tokio::spawn(maintenance.run(stopped.clone()));
        let purging = tokio::spawn(purger.run(stopped.clone()));
        let refreshing = client_refresh.map(|r| tokio::spawn(r.run(stopped.clone())));
        let pruning = pruner.map(|p| tokio::spawn(p.run(stopped)));
        let handle = server.handle();
        tokio::spawn(async move {
            loop {
                match stop_signals.recv().await {
                    SignalEvent::Stop(which) => {
                        tracing::info!(signal = which, "stopping: finishing requests in flight");
                        handle.stop(true).await;
                        return;
                    }
                    SignalEvent::Reload => match &certificate {
                        Some(cert) => match cert.reload() {
                            Ok(()) => tracing::info!("TLS certificate reloaded"),
                            Err(e) => tracing::error!(
                                error = format!("{e:#}"),
                                "TLS certificate not reloaded; the one in use stays"
                            ),
                        },
                        None => tracing::info!("SIGHUP: no TLS certificate to reload"),
                    },
                }
            }
        });
        let served = server.await;
        // Let the background work finish what it is doing, rather than exit under it: a
        // database connection in use on another thread at exit can crash the process.
        let _ = stop_background.send(true);
        let _ = schedule.await;
        let _ = purging.await;
        if let Some(pruning) = pruning {
            let _ = pruning.await;
        }
        if let Some(refreshing) = refreshing {
            let _ = refreshing.await;
        }
        served
    }
}

/// Reads the store's client generation every `interval`, so that a client changed on another
/// node or with the CLI is not served from this node's memory for longer than that.
struct ClientRefresh {
    store: Arc<dyn ClientStore>,
    cache: Arc<ClientCache>,
    interval: std::time::Duration,
}

impl ClientRefresh {
    async fn run(self, stop: tokio::sync::watch::Receiver<bool>) {
        let Self {
            store,
            cache,
            interval,
        } = self;
        crate::background::every("client refresh", interval, false, stop, move || {
            let generation = store.client_generation();
            if let Err(e) = &generation {
                tracing::warn!(error = %e, "cannot read the client generation; clients are read from the database until it can");
            }
            cache.observe(generation);
        })
        .await;
    }
}

/// The authorization server metadata (RFC 8414), serialised once. Only what is implemented is
/// advertised.
fn metadata(issuer: &IssuerUrl, registration: bool) -> Vec<u8> {
    let url = |path: &str| format!("{issuer}{path}");
    let client_auth = ["client_secret_basic", "client_secret_post"];
    let mut document = serde_json::json!({
        "issuer": issuer.as_str(),
        "authorization_endpoint": url(paths::AUTHORIZE),
        "token_endpoint": url(paths::TOKEN),
        "userinfo_endpoint": url(paths::USERINFO),
        "jwks_uri": url(paths::JWKS),
        "introspection_endpoint": url(paths::INTROSPECT),
        "revocation_endpoint": url(paths::REVOKE),
        "end_session_endpoint": url(paths::END_SESSION),
        "scopes_supported": ["openid", "profile", "email", "offline_access", "roles"],
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "introspection_endpoint_auth_methods_supported": client_auth,
        // RFC 7009 §2.1: a public client may revoke its own tokens with its client_id alone.
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "at_hash", "azp", "sid", "name", "preferred_username", "email", "email_verified", "updated_at", "roles"],
        "prompt_values_supported": ["none", "login", "consent"],
        "authorization_response_iss_parameter_supported": true,
        "request_parameter_supported": false,
        "request_uri_parameter_supported": false,
        "claims_parameter_supported": false,
    });
    if registration {
        document["registration_endpoint"] = url(paths::REGISTER).into();
    }
    serde_json::to_vec(&document).unwrap_or_default()
}

/// Headers for every response. The CSP has no `form-action`: Chrome and Safari apply it to
/// the redirects after a form post too, and the sign-in and consent forms end, by design, in a
/// redirect to the client's (registered, exactly matched) redirect URI on another origin.
fn security_headers(hsts: Option<String>) -> DefaultHeaders {
    let headers = match hsts.and_then(|v| HeaderValue::from_str(&v).ok()) {
        Some(value) => DefaultHeaders::new().add((header::STRICT_TRANSPORT_SECURITY, value)),
        None => DefaultHeaders::new(),
    };
    headers
        .add((header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")))
        .add((header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")))
        .add((header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")))
        .add((
            header::HeaderName::from_static("cross-origin-opener-policy"),
            HeaderValue::from_static("same-origin"),
        ))
        .add((
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; frame-ancestors 'none'; base-uri 'none'",
            ),
        ))
}

/// The longest request target accepted (414 beyond it).
const MAX_TARGET: usize = 8 * 1024;
/// The longest header value, and all headers together, accepted (431 beyond them).
const MAX_HEADER: usize = 8 * 1024;
const MAX_HEADERS: usize = 32 * 1024;

/// Refuses oversized request targets and headers before any handler reads them. (A request
/// line longer than the HTTP parser's buffer, about 32 KiB, is refused by the parser with a
/// 400 before this runs.)
async fn refuse_oversized(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody + 'static>,
) -> Result<actix_web::dev::ServiceResponse<actix_web::body::BoxBody>, actix_web::Error> {
    use actix_web::http::StatusCode;
    let uri = req.uri();
    let target = uri.path_and_query().map_or(0, |p| p.as_str().len())
        + uri.authority().map_or(0, |a| a.as_str().len());
    let status = if target > MAX_TARGET {
        Some(StatusCode::URI_TOO_LONG)
    } else {
        let mut total = 0;
        let too_large = req.headers().iter().any(|(name, value)| {
            total += name.as_str().len() + value.len();
            value.len() > MAX_HEADER || total > MAX_HEADERS
        });
        too_large.then_some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
    };
    match status {
        Some(status) => {
            let res = errors::error_response(req.request(), status);
            Ok(req.into_response(res))
        }
        None => Ok(next.call(req).await?.map_into_boxed_body()),
    }
}

/// Reads a request's body (one with a `Content-Length` of at most `max` bytes) before anything
/// answers it, and hands it on from memory. Whatever then answers early (a rate limit, a
/// wrong content type, a refusal before the form is read), the connection has no unread
/// bytes left and stays open: actix closes a keep-alive connection whose request body was
/// not read. Larger or chunked bodies pass as they are, to the extractor's own limit.
async fn read_body_first(
    mut req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody + 'static>,
    max: usize,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    use actix_web::HttpMessage as _;
    use futures_util::StreamExt as _;
    let length = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if let Some(length @ 1..) = length
        && length <= max
    {
        let mut payload = req.take_payload();
        let mut body = web::BytesMut::with_capacity(length);
        while let Some(chunk) = payload.next().await {
            let chunk: web::Bytes = chunk?;
            body.extend_from_slice(&chunk);
        }
        req.set_payload(actix_web::dev::Payload::from(body.freeze()));
    }
    next.call(req).await
}

async fn not_found(req: HttpRequest) -> HttpResponse {
    errors::error_response(&req, actix_web::http::StatusCode::NOT_FOUND)
}
