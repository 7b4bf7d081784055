//! What each command does. Output for people by default, JSON with `--json`; errors go back to
//! `main` as one line.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{Context as _, anyhow, bail};
use std::sync::Arc;

use portcullis_core::clients::{ClientRegistration, register_client, rotate_secret};
use portcullis_core::domain::{
    ClientAuthMethod, ClientId, ClientName, DisplayName, Email, GrantType, RedirectUri, ScopeSet,
    TierName, Username,
};
use portcullis_core::key_lifecycle::{Actor, KeyChanges};
use portcullis_core::keys::{KeySet, SigningAlg, StoredKey};
use portcullis_core::model::{Client, NewUser, RoleName, TokenSettings, User, UserStatus};
use portcullis_core::password::{Password, PasswordHasher};
use portcullis_core::users::{UserRegistration, create_user};
use portcullis_core::{Clock, OsRandom, SystemClock, UnixTime};
use serde_json::{Value, json};

use crate::cli::{
    AuditCommand, ClientCommand, ClientCreate, ConfigCommand, KeysCommand, UserCommand, UserCreate,
};
use crate::key_maintenance::KeyMaintenance;
use crate::settings::{Config, Seconds, Settings};
use crate::startup;

const PAGE: u32 = 500;

pub fn migrate(config: &Config) -> anyhow::Result<()> {
    let applied = startup::migrate(config)?;
    if applied.is_empty() {
        println!(
            "The {} database at {} is up to date.",
            config.database.backend(),
            config.database
        );
    } else {
        for version in &applied {
            println!("applied {version}");
        }
        println!(
            "Applied {} migration(s) to {}.",
            applied.len(),
            config.database
        );
    }
    Ok(())
}

pub fn user(config: &Config, command: UserCommand) -> anyhow::Result<()> {
    match command {
        UserCommand::Create(args) => user_create(config, args),
        UserCommand::List(args) => {
            let stores = startup::open_stores(config)?;
            let users = all_pages(|after: Option<&User>| {
                stores
                    .users
                    .list_users(after.map(|u| &u.username), PAGE, None)
            })?;
            if args.json {
                return print_json(&Value::Array(users.iter().map(user_json).collect()));
            }
            let rows = users
                .iter()
                .map(|u| {
                    let roles: Vec<&str> = u.roles.iter().map(RoleName::as_str).collect();
                    vec![
                        u.username.to_string(),
                        u.status.as_str().to_owned(),
                        roles.join(","),
                        u.email
                            .as_ref()
                            .map(ToString::to_string)
                            .unwrap_or_default(),
                        rfc3339(u.created_at),
                    ]
                })
                .collect();
            print_table(&["USERNAME", "STATUS", "ROLES", "EMAIL", "CREATED"], rows);
            Ok(())
        }
        UserCommand::Disable(r) => set_status(config, &r.username, UserStatus::Disabled),
        UserCommand::Enable(r) => set_status(config, &r.username, UserStatus::Active),
        UserCommand::ResetTotp(r) => {
            let username = Username::parse(&r.username).context("username")?;
            let stores = startup::open_stores(config)?;
            let user = stores
                .users
                .find_user_by_username(&username)?
                .ok_or_else(|| anyhow!("there is no user named {username}"))?;
            let event = portcullis_core::audit::AuditEvent::new(
                "user.totp_reset",
                "cli",
                format!("user:{}", user.id),
                json!({ "username": username.as_str(), "was_enabled": user.totp_enabled }),
            );
            if !stores.totp.reset_totp(user.id, &event, SystemClock.now())? {
                bail!("there is no user named {username}");
            }
            println!("Two-step verification of {username} is off; they can set it up again.");
            Ok(())
        }
    }
}

fn user_create(config: &Config, args: UserCreate) -> anyhow::Result<()> {
    let username = Username::parse(&args.username).context("--username")?;
    let email = args
        .email
        .as_deref()
        .map(Email::parse)
        .transpose()
        .context("--email")?;
    let display_name = args
        .display_name
        .as_deref()
        .map(DisplayName::parse)
        .transpose()
        .context("--display-name")?;
    let roles = args
        .roles
        .iter()
        .map(|r| RoleName::parse(r))
        .collect::<Result<Vec<_>, _>>()
        .context("--role")?;
    let (password, generated) = read_password(&args)?;
    let stores = startup::open_stores(config)?;
    let hasher = PasswordHasher::new(config.bcrypt_cost)?;
    let user = create_user(
        stores.users.as_ref(),
        &hasher,
        &OsRandom,
        &SystemClock,
        UserRegistration {
            username,
            email,
            display_name,
            password: &password,
            roles,
            password_change_required: args.require_password_change,
        },
        Some(&|new: &NewUser| {
            portcullis_core::audit::AuditEvent::new(
                "user.created",
                "cli",
                format!("user:{}", new.id),
                json!({ "username": new.username.as_str(), "roles": &args.roles }),
            )
        }),
    )?;
    if args.json {
        let mut out = user_json(&user);
        if generated {
            out["password"] = Value::String(password.reveal().to_owned());
        }
        return print_json(&out);
    }
    println!("Created user {} ({}).", user.username, user.id);
    if generated {
        println!("Password (shown once): {}", password.reveal());
    }
    Ok(())
}

fn read_password(args: &UserCreate) -> anyhow::Result<(Password, bool)> {
    if args.generate_password {
        return Ok((Password::generate(&OsRandom)?, true));
    }
    let raw = if args.password_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("cannot read the password from standard input")?;
        let line = line.strip_suffix('\n').unwrap_or(&line);
        let line = line.strip_suffix('\r').unwrap_or(line).to_owned();
        if line.is_empty() {
            bail!("standard input held no password");
        }
        line
    } else if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ").context("cannot read the password")?;
        let again =
            rpassword::prompt_password("Repeat it: ").context("cannot read the password")?;
        if first != again {
            bail!("the two passwords differ");
        }
        first
    } else {
        bail!("no password given: use --password-stdin, --generate-password, or run in a terminal");
    };
    Ok((
        Password::parse(&raw).map_err(|e| anyhow!("password: {e}"))?,
        false,
    ))
}

fn set_status(config: &Config, raw: &str, status: UserStatus) -> anyhow::Result<()> {
    let username = Username::parse(raw).context("username")?;
    let stores = startup::open_stores(config)?;
    let user = stores
        .users
        .find_user_by_username(&username)?
        .ok_or_else(|| anyhow!("there is no user named {username}"))?;
    let event = portcullis_core::audit::AuditEvent::new(
        portcullis_core::users::status_event(status),
        "cli",
        format!("user:{}", user.id),
        json!({ "username": username.as_str() }),
    );
    if !stores
        .users
        .set_status(user.id, status, SystemClock.now(), &event)?
    {
        bail!("there is no user named {username}");
    }
    println!("User {username} is now {}.", status.as_str());
    Ok(())
}

pub fn client(config: &Config, command: ClientCommand) -> anyhow::Result<()> {
    match command {
        ClientCommand::Create(args) => client_create(config, args),
        ClientCommand::List(args) => {
            let stores = startup::open_stores(config)?;
            let clients = all_pages(|after: Option<&Client>| {
                stores
                    .clients
                    .list_clients(after.map(|c| &c.id), PAGE, None)
            })?;
            if args.json {
                return print_json(&Value::Array(
                    clients
                        .iter()
                        .map(crate::client_metadata::client_json)
                        .collect(),
                ));
            }
            let rows = clients
                .iter()
                .map(|c| {
                    let grants: Vec<&str> = c.grant_types.iter().map(|g| g.as_str()).collect();
                    vec![
                        c.id.to_string(),
                        c.name.to_string(),
                        c.auth_method.to_string(),
                        grants.join(","),
                        rfc3339(c.created_at),
                    ]
                })
                .collect();
            print_table(&["CLIENT_ID", "NAME", "AUTH", "GRANTS", "CREATED"], rows);
            Ok(())
        }
        ClientCommand::Show(args) => {
            let id = ClientId::parse(&args.client_id).context("client_id")?;
            let stores = startup::open_stores(config)?;
            let client = stores
                .clients
                .find_client(&id)?
                .ok_or_else(|| anyhow!("there is no client {id}"))?;
            let secrets = stores.clients.client_secrets(&id, SystemClock.now())?;
            let secret_json = |s: &portcullis_core::model::ClientSecretRecord| {
                json!({
                    "secret_id": s.id.hyphenated().to_string(),
                    "created_at": rfc3339(s.created_at),
                    "expires_at": s.expires_at.map(rfc3339),
                })
            };
            if args.json {
                let mut out = crate::client_metadata::client_json(&client);
                out["secrets"] = secrets.iter().map(secret_json).collect();
                return print_json(&out);
            }
            print_client(&client);
            for s in &secrets {
                println!(
                    "secret:         {} created {}{}",
                    s.id.hyphenated(),
                    rfc3339(s.created_at),
                    s.expires_at
                        .map(|e| format!(", valid until {}", rfc3339(e)))
                        .unwrap_or_default()
                );
            }
            Ok(())
        }
        ClientCommand::Delete(args) => {
            let id = ClientId::parse(&args.client_id).context("client_id")?;
            let stores = startup::open_stores(config)?;
            let event = portcullis_core::audit::AuditEvent::new(
                "client.deleted",
                "cli",
                format!("client:{id}"),
                json!({}),
            )
            .for_client(id.as_str());
            if !stores
                .clients
                .delete_client(&id, SystemClock.now(), &event)?
            {
                bail!("there is no client {id}");
            }
            println!("Deleted client {id}.");
            Ok(())
        }
        ClientCommand::RotateSecret(args) => {
            let id = ClientId::parse(&args.client_id).context("client_id")?;
            let overlap = Seconds::parse(&args.overlap)
                .map_err(|e| anyhow!("--overlap: {e}"))?
                .duration();
            let stores = startup::open_stores(config)?;
            let (record, secret) = rotate_secret(
                stores.clients.as_ref(),
                &OsRandom,
                &SystemClock,
                &id,
                overlap,
                "cli",
            )?;
            let previous_until = rfc3339(record.created_at.plus(overlap));
            if args.json {
                return print_json(&json!({
                    "client_id": id.as_str(),
                    "secret_id": record.id.hyphenated().to_string(),
                    "client_secret": secret.reveal(),
                    "previous_secret_valid_until": previous_until,
                }));
            }
            println!("New secret for {id} (id {}):", record.id.hyphenated());
            println!();
            println!("  {}", secret.reveal());
            println!();
            println!(
                "It is shown only this once. The previous secret works until {previous_until}."
            );
            Ok(())
        }
        ClientCommand::RevokeSecret(args) => {
            let id = ClientId::parse(&args.client_id).context("client_id")?;
            let secret_id = uuid::Uuid::parse_str(&args.secret_id)
                .map_err(|_| anyhow!("secret_id: {:?} is not a secret id", args.secret_id))?;
            let stores = startup::open_stores(config)?;
            let event = portcullis_core::audit::AuditEvent::new(
                "client.secret_revoked",
                "cli",
                format!("client:{id}"),
                json!({ "secret_id": secret_id.hyphenated().to_string() }),
            )
            .for_client(id.as_str());
            if !stores
                .clients
                .revoke_client_secret(&id, secret_id, SystemClock.now(), &event)?
            {
                bail!("client {id} has no live secret {secret_id}");
            }
            println!("Revoked secret {secret_id} of client {id}.");
            Ok(())
        }
    }
}

pub fn audit(config: &Config, command: AuditCommand) -> anyhow::Result<()> {
    let stores = startup::open_stores(config)?;
    if let AuditCommand::Prune(args) = command {
        let retention = match &args.older_than {
            Some(raw) => crate::settings::Seconds::parse(raw)
                .map_err(|e| anyhow!("--older-than: {e}"))?
                .duration(),
            None => config.audit_retention.ok_or_else(|| {
                anyhow!("audit.retention is 0 (keep for ever): give --older-than to prune")
            })?,
        };
        let removed = crate::audit::prune_older_than(
            stores.audit.as_ref(),
            SystemClock.now(),
            retention,
            "cli",
        )?;
        println!("Pruned {removed} audit record(s).");
        return Ok(());
    }
    // After pruning, the trail starts from the checkpoint the pruning left.
    let checkpoint = stores.audit.audit_checkpoint()?;
    let mut last = checkpoint.as_ref().map(|c| c.point.clone());
    let mut count = 0usize;
    loop {
        let after = last.as_ref().map_or(0, |p| p.seq);
        let page = stores.audit.audit_records(after, 1000)?;
        if page.is_empty() {
            break;
        }
        portcullis_core::audit::verify_chain(last.as_ref(), &page)
            .map_err(|broken| anyhow!("the audit trail is broken: {broken}"))?;
        count += page.len();
        last = page.last().map(portcullis_core::audit::AuditRecord::point);
    }
    println!("The audit trail is intact: {count} record(s), each following from the one before.");
    if let Some(c) = checkpoint {
        println!(
            "It starts after record {} ({} older record(s) pruned, the last on {}).",
            c.point.seq,
            c.pruned,
            rfc3339(c.created_at)
        );
    }
    if let Some(head) = last {
        // Removing the newest records leaves a shorter chain that is still whole: compare
        // the head with one noted earlier to tell.
        println!("Head: record {} with hash {}.", head.seq, head.hash);
    }
    Ok(())
}

pub fn keys(config: &Config, command: KeysCommand) -> anyhow::Result<()> {
    let stores = startup::open_stores(config)?;
    // Listing reads public facts only; changing keys needs the master keys.
    let maintenance = || -> anyhow::Result<KeyMaintenance> {
        let masters = Arc::new(crate::master_key::load_all(config, &OsRandom)?);
        KeyMaintenance::new(
            config,
            &stores,
            masters,
            Arc::new(OsRandom),
            Arc::new(SystemClock),
        )
    };
    match command {
        KeysCommand::List(args) => {
            let keys = stores.keys.signing_keys()?;
            if args.json {
                return print_json(&Value::Array(keys.iter().map(key_json).collect()));
            }
            let at = |t: Option<UnixTime>| t.map(rfc3339).unwrap_or_default();
            let rows = keys
                .iter()
                .map(|k| {
                    vec![
                        k.kid.clone(),
                        k.alg.to_string(),
                        k.state.as_str().to_owned(),
                        rfc3339(k.created_at),
                        at(k.activates_at),
                        at(k.retired_at),
                        at(k.remove_after),
                    ]
                })
                .collect();
            print_table(
                &[
                    "KID",
                    "ALG",
                    "STATE",
                    "CREATED",
                    "SIGNS FROM",
                    "RETIRED",
                    "REMOVE AFTER",
                ],
                rows,
            );
            Ok(())
        }
        KeysCommand::Rotate(args) => {
            let algs = if args.algs.is_empty() {
                SigningAlg::ALL.to_vec()
            } else {
                args.algs
                    .iter()
                    .map(|a| {
                        SigningAlg::parse(a).ok_or_else(|| {
                            anyhow!("--alg: {a:?} is not one of RS256, ES256, EdDSA")
                        })
                    })
                    .collect::<anyhow::Result<_>>()?
            };
            let maintenance = maintenance()?;
            // Keys this process cannot open are not changed: the configured master key must
            // be the one the keys were sealed with.
            KeySet::load(stores.keys.signing_keys()?, &maintenance.masters)?;
            let ttl = maintenance.longest_token_ttl()?;
            let changes = maintenance
                .rotator()
                .rotate(&algs, args.now, ttl, Actor("cli"))?;
            report_key_changes(&changes, args.json, config)
        }
        KeysCommand::Rewrap => {
            let maintenance = maintenance()?;
            let changes = maintenance.rotator().rewrap(Actor("cli"))?;
            // TOTP secrets are sealed under the master key too.
            let mut secrets = 0;
            for (user, sealed) in stores.totp.sealed_totp_secrets()? {
                let context = portcullis_core::totp::sealing_context(user);
                if let Some(fresh) = maintenance
                    .masters
                    .reseal_value(&context, &sealed, &OsRandom)
                    .with_context(|| format!("the TOTP secret of user {user}"))?
                    && stores.totp.reseal_totp_secret(user, &sealed, &fresh)?
                {
                    secrets += 1;
                }
            }
            if changes.update.is_empty() && secrets == 0 {
                println!("Everything is already sealed under the configured master key.");
            } else {
                println!(
                    "Resealed {} signing key(s) and {secrets} TOTP secret(s) under master key {}. keys.previous_master_key can now be removed.",
                    changes.update.len(),
                    maintenance.masters.current().id()
                );
            }
            Ok(())
        }
    }
}

fn report_key_changes(changes: &KeyChanges, json: bool, config: &Config) -> anyhow::Result<()> {
    if json {
        return print_json(&Value::Array(
            changes
                .events
                .iter()
                .map(|e| {
                    json!({
                        "event": e.event_type,
                        "key": e.subject.as_deref().unwrap_or_default().trim_start_matches("signing_key:"),
                        "details": e.details,
                    })
                })
                .collect(),
        ));
    }
    if changes.events.is_empty() {
        println!("Nothing to do: each successor is already published and signs as soon as it may.");
    }
    for e in &changes.events {
        println!(
            "{}  {}  {}",
            e.event_type,
            e.subject
                .as_deref()
                .unwrap_or_default()
                .trim_start_matches("signing_key:"),
            e.details
        );
    }
    println!(
        "Running servers pick this up within {}s (keys.reload_interval).",
        config.key_reload_interval.as_secs()
    );
    Ok(())
}

pub(crate) fn key_json(k: &StoredKey) -> Value {
    let at = |t: Option<UnixTime>| t.map(rfc3339);
    json!({
        "kid": k.kid,
        "alg": k.alg.as_str(),
        "state": k.state.as_str(),
        "created_at": rfc3339(k.created_at),
        "activates_at": at(k.activates_at),
        "retired_at": at(k.retired_at),
        "remove_after": at(k.remove_after),
        "master_key_id": k.master_key_id,
    })
}

fn client_create(config: &Config, args: ClientCreate) -> anyhow::Result<()> {
    let parse_uris = |uris: &[String], flag: &str| -> anyhow::Result<Vec<RedirectUri>> {
        uris.iter()
            .map(|u| RedirectUri::parse(u).with_context(|| flag.to_owned()))
            .collect()
    };
    let grant_types = if args.grant_types.is_empty() {
        vec![GrantType::AuthorizationCode, GrantType::RefreshToken]
    } else {
        args.grant_types
            .iter()
            .map(|g| GrantType::parse(g))
            .collect::<Result<_, _>>()
            .context("--grant-type")?
    };
    let defaults = TokenSettings::default();
    let ttl = |raw: &Option<String>, flag: &str, default| -> anyhow::Result<_> {
        match raw {
            Some(raw) => match Seconds::parse(raw) {
                Ok(s) if s.0 > 0 => Ok(s.duration()),
                Ok(_) => Err(anyhow!("{flag}: must be longer than 0s")),
                Err(e) => Err(anyhow!("{flag}: {e}")),
            },
            None => Ok(default),
        }
    };
    let registration = ClientRegistration {
        name: ClientName::parse(&args.name).context("--name")?,
        redirect_uris: parse_uris(&args.redirect_uris, "--redirect-uri")?,
        post_logout_redirect_uris: parse_uris(
            &args.post_logout_redirect_uris,
            "--post-logout-redirect-uri",
        )?,
        grant_types,
        auth_method: ClientAuthMethod::parse(&args.auth_method).context("--auth-method")?,
        allowed_scopes: ScopeSet::parse(&args.scopes).context("--scopes")?,
        first_party: args.first_party,
        token_settings: TokenSettings {
            access_token_ttl: ttl(
                &args.access_token_ttl,
                "--access-token-ttl",
                defaults.access_token_ttl,
            )?,
            id_token_ttl: ttl(&args.id_token_ttl, "--id-token-ttl", defaults.id_token_ttl)?,
            refresh_token_ttl: ttl(
                &args.refresh_token_ttl,
                "--refresh-token-ttl",
                defaults.refresh_token_ttl,
            )?,
        },
        rate_limit_tier: match &args.rate_limit_tier {
            Some(raw) => {
                let tier = TierName::parse(raw).context("--rate-limit-tier")?;
                if !config.rate_limits.tiers.contains_key(tier.as_str()) {
                    bail!("--rate-limit-tier: there is no tier {tier:?} in rate_limit.tiers");
                }
                Some(tier)
            }
            None => None,
        },
        roles_claim: args.roles_claim,
    };
    registration.check()?;
    let stores = startup::open_stores(config)?;
    let made = register_client(
        stores.clients.as_ref(),
        &OsRandom,
        &SystemClock,
        registration,
        Some(&|c: &Client| {
            portcullis_core::audit::AuditEvent::new(
                "client.created",
                "cli",
                format!("client:{}", c.id),
                portcullis_core::clients::summary(c),
            )
            .for_client(c.id.as_str())
        }),
        false,
    )?;
    if args.json {
        let mut out = crate::client_metadata::client_json(&made.client);
        if let Some(secret) = &made.secret {
            out["client_secret"] = Value::String(secret.reveal().to_owned());
        }
        return print_json(&out);
    }
    print_client(&made.client);
    if let Some(secret) = &made.secret {
        println!("client_secret:  {}", secret.reveal());
        println!("\nStore the secret now: it is shown only once and kept only as a hash.");
    }
    Ok(())
}

pub fn config(settings: &Settings, config: &Config, command: ConfigCommand) -> anyhow::Result<()> {
    let ConfigCommand::Check(args) = command;
    let issuer = config.issuer_for(config.listen)?;
    if args.json {
        let mut shown = serde_json::to_value(settings)?;
        shown["database"]["url"] = Value::String(config.database.to_string());
        shown["server"]["issuer"] = Value::String(issuer.to_string());
        return print_json(&shown);
    }
    println!("The configuration is valid.");
    println!("  listen:    {}", config.listen);
    println!(
        "  issuer:    {issuer}{}",
        if issuer.is_dev() {
            " (development: http on loopback)"
        } else {
            ""
        }
    );
    println!(
        "  database:  {} ({})",
        config.database,
        config.database.backend()
    );
    println!(
        "  log:       {:?}, level {}",
        config.log_format, config.log_level
    );
    println!("  bcrypt:    cost {}", config.bcrypt_cost);
    Ok(())
}

/// Reads every page of a keyset-paginated listing.
fn all_pages<T>(
    mut page: impl FnMut(Option<&T>) -> Result<Vec<T>, portcullis_core::store::StoreError>,
) -> anyhow::Result<Vec<T>> {
    let mut all: Vec<T> = Vec::new();
    loop {
        let next = page(all.last())?;
        let done = next.len() < PAGE as usize;
        all.extend(next);
        if done {
            return Ok(all);
        }
    }
}

pub(crate) fn rfc3339(t: UnixTime) -> String {
    time::OffsetDateTime::from_unix_timestamp(t.as_secs())
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| t.to_string())
}

fn user_json(u: &User) -> Value {
    json!({
        "id": u.id.to_string(),
        "username": u.username.as_str(),
        "email": u.email.as_ref().map(Email::as_str),
        "display_name": u.display_name.as_ref().map(DisplayName::as_str),
        "status": u.status.as_str(),
        "roles": u.roles.iter().map(RoleName::as_str).collect::<Vec<_>>(),
        "totp_enabled": u.totp_enabled,
        "password_change_required": u.password_change_required,
        "created_at": rfc3339(u.created_at),
        "updated_at": rfc3339(u.updated_at),
    })
}

fn print_client(c: &Client) {
    let list = |uris: &[RedirectUri]| {
        uris.iter()
            .map(RedirectUri::as_str)
            .collect::<Vec<_>>()
            .join(" ")
    };
    let grants: Vec<&str> = c.grant_types.iter().map(|g| g.as_str()).collect();
    println!("client_id:      {}", c.id);
    println!("name:           {}", c.name);
    println!("auth method:    {}", c.auth_method);
    println!("grant types:    {}", grants.join(" "));
    println!("redirect URIs:  {}", list(&c.redirect_uris));
    println!("logout URIs:    {}", list(&c.post_logout_redirect_uris));
    println!("scopes:         {}", c.allowed_scopes);
    println!("first party:    {}", c.first_party);
    println!(
        "token TTLs:     access {}s, id {}s, refresh {}s",
        c.token_settings.access_token_ttl.as_secs(),
        c.token_settings.id_token_ttl.as_secs(),
        c.token_settings.refresh_token_ttl.as_secs()
    );
    println!("created:        {}", rfc3339(c.created_at));
}

fn print_json(value: &Value) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

fn print_table(headers: &[&str], rows: Vec<Vec<String>>) {
    let widths: Vec<usize> = headers
        .iter()
        .enumerate()
        .map(|(i, h)| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([h.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(headers.to_vec());
    for row in &rows {
        line(row.iter().map(String::as_str).collect());
    }
}
