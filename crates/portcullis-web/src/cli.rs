//! The command line: `portcullis serve`, and the commands operators script.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::settings::LogFormat;

#[derive(Debug, Parser)]
#[command(
    name = "portcullis",
    version,
    about = "Portcullis: an OAuth 2.0 and OpenID Connect identity server",
    long_about = "Portcullis: an OAuth 2.0 and OpenID Connect identity server.\n\n\
        With no configuration it serves http://127.0.0.1:8080 from ./data/portcullis.db (SQLite).\n\
        Settings come from defaults, then the TOML file given by --config or PORTCULLIS_CONFIG,\n\
        then PORTCULLIS__SECTION__KEY environment variables."
)]
pub struct Cli {
    /// TOML configuration file.
    #[arg(long, global = true, env = "PORTCULLIS_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Log format, overriding log.format.
    #[arg(long, global = true, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (applies pending migrations and, on an empty database, creates the first
    /// administrator).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage client applications.
    #[command(subcommand)]
    Client(ClientCommand),
    /// Manage the signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Read the audit trail.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Inspect the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check that no audit record was removed or changed: every record's hash must cover its
    /// fields and the record before it. Names the first broken record and exits 1 if not.
    Verify,
    /// Remove records older than the retention (audit.retention, or --older-than). The newest
    /// record always stays, and a checkpoint keeps the rest of the trail verifiable.
    Prune(PruneArgs),
}

#[derive(Debug, clap::Args)]
pub struct PruneArgs {
    /// Remove records older than this (e.g. 90d) instead of audit.retention.
    #[arg(long, value_name = "DURATION")]
    pub older_than: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// List the signing keys: kid, algorithm, state and dates.
    List(ListArgs),
    /// Rotate signing keys.
    ///
    /// The successor is published now and signs once keys.publish_ahead
    /// has passed, so that relying parties already hold it. With --now (a compromised key), the
    /// signing key stops signing and verifying at once; running servers follow within
    /// keys.reload_interval.
    Rotate(KeysRotate),
    /// Reseal every signing key under keys.master_key.
    ///
    /// To change the master key, configure the
    /// new one as keys.master_key and the old one as keys.previous_master_key, run this, then
    /// remove keys.previous_master_key. Tokens stay valid: the signing keys do not change.
    Rewrap,
}

#[derive(Debug, Args)]
pub struct KeysRotate {
    /// An algorithm to rotate (RS256, ES256, EdDSA); repeat for several [default: all].
    #[arg(long = "alg", value_name = "ALG")]
    pub algs: Vec<String>,
    /// Emergency: revoke the signing key now instead of phasing it out.
    #[arg(long)]
    pub now: bool,
    /// Print the changes as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user. The password is read from standard input (--password-stdin), generated
    /// (--generate-password), or asked for at a prompt; never taken from the command line.
    Create(UserCreate),
    /// List users.
    List(ListArgs),
    /// Disable a user: they can no longer sign in.
    Disable(UserRef),
    /// Enable a disabled user.
    Enable(UserRef),
    /// Turn off a user's two-step verification (a lost device): their TOTP secret and
    /// recovery codes are removed, and the audit log records it. They can enrol again after
    /// signing in with their password.
    ResetTotp(UserRef),
}

#[derive(Debug, Args)]
pub struct UserCreate {
    /// Login name (letters, digits and . _ - @ +; case-insensitive).
    #[arg(long)]
    pub username: String,
    #[arg(long)]
    pub email: Option<String>,
    #[arg(long)]
    pub display_name: Option<String>,
    /// A role to grant; repeat for several (e.g. --role admin).
    #[arg(long = "role", value_name = "ROLE")]
    pub roles: Vec<String>,
    /// Read the password from the first line of standard input.
    #[arg(long, conflicts_with = "generate_password")]
    pub password_stdin: bool,
    /// Generate a strong password and print it once.
    #[arg(long)]
    pub generate_password: bool,
    /// Make the user choose a new password at first sign-in.
    #[arg(long)]
    pub require_password_change: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct UserRef {
    pub username: String,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Register a client. Its id and, for a confidential client, a 256-bit secret are
    /// generated; the secret is shown once and stored only as a hash.
    Create(ClientCreate),
    /// List clients.
    List(ListArgs),
    /// Show one client.
    Show(ClientRef),
    /// Delete a client and everything issued to it.
    Delete(ClientDelete),
    /// Give a confidential client a new secret, shown once.
    ///
    /// The previous secret keeps working
    /// for --overlap; any older one is revoked at once.
    RotateSecret(ClientRotateSecret),
    /// Revoke one of a client's secrets at once (its id is in `client show`).
    RevokeSecret(ClientRevokeSecret),
}

#[derive(Debug, Args)]
pub struct ClientRotateSecret {
    pub client_id: String,
    /// How long the previous secret keeps working, e.g. 24h; 0s revokes it now.
    #[arg(long, default_value = "24h", value_name = "DURATION")]
    pub overlap: String,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ClientRevokeSecret {
    pub client_id: String,
    pub secret_id: String,
}

#[derive(Debug, Args)]
pub struct ClientCreate {
    /// Name shown to people on the consent page; unique.
    #[arg(long)]
    pub name: String,
    /// An allowed redirect URI (exact match); repeat for several.
    #[arg(long = "redirect-uri", value_name = "URI")]
    pub redirect_uris: Vec<String>,
    /// An allowed post-logout redirect URI; repeat for several.
    #[arg(long = "post-logout-redirect-uri", value_name = "URI")]
    pub post_logout_redirect_uris: Vec<String>,
    /// A grant type; repeat for several [default: authorization_code and refresh_token].
    #[arg(long = "grant-type", value_name = "GRANT")]
    pub grant_types: Vec<String>,
    /// Token endpoint authentication: client_secret_basic, client_secret_post, or none (public).
    #[arg(long, default_value = "client_secret_basic", value_name = "METHOD")]
    pub auth_method: String,
    /// Scopes the client may request, space-separated.
    #[arg(
        long,
        default_value = "openid profile email offline_access",
        value_name = "SCOPES"
    )]
    pub scopes: String,
    /// A first-party client skips the consent page.
    #[arg(long)]
    pub first_party: bool,
    /// Its rate-limit tier, one of rate_limit.tiers [default: rate_limit.per_client].
    #[arg(long, value_name = "TIER")]
    pub rate_limit_tier: Option<String>,
    /// Send the client the `roles` claim even when it does not ask for the `roles` scope.
    #[arg(long)]
    pub roles_claim: bool,
    /// Access-token lifetime, e.g. 15m.
    #[arg(long, value_name = "DURATION")]
    pub access_token_ttl: Option<String>,
    /// ID-token lifetime, e.g. 15m.
    #[arg(long, value_name = "DURATION")]
    pub id_token_ttl: Option<String>,
    /// Refresh-token lifetime, e.g. 30d.
    #[arg(long, value_name = "DURATION")]
    pub refresh_token_ttl: Option<String>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ClientRef {
    pub client_id: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ClientDelete {
    pub client_id: String,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check the configuration and print it (secrets redacted).
    Check(ListArgs),
}
