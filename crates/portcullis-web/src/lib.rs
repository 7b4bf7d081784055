//! Portcullis web: the actix-web application, its pages, configuration, and the commands of
//! the `portcullis` binary. `startup` composes everything; handlers see only core's traits.

pub mod admin;
pub mod admin_ui;
pub mod audit;
pub mod background;
pub mod cli;
pub mod client_ip;
pub mod client_metadata;
pub mod commands;
pub mod errors;
pub mod key_maintenance;
pub mod master_key;
pub mod metrics;
pub mod pages;
pub mod paths;
pub mod purge;
pub mod rate_limit;
pub mod request_id;
pub(crate) mod routes;
pub mod session;
pub mod settings;
pub mod startup;
pub mod state;
pub mod telemetry;
pub mod tls;

use std::process::ExitCode;

use clap::Parser as _;

use crate::cli::{Cli, Command};
use crate::settings::{Config, Settings};

/// Runs the command line and returns the process's exit code: 0 on success, 1 when the
/// command failed, 2 when it was called wrongly. Failures are one line on stderr.
pub fn main_with_args(args: impl IntoIterator<Item = std::ffi::OsString>) -> ExitCode {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // clap's message, without usage and tips, on one line.
            let rendered = e.to_string();
            let message: Vec<&str> = rendered
                .lines()
                .take_while(|l| !l.starts_with("Usage:"))
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with("tip:"))
                .collect();
            eprintln!("{} (see portcullis --help)", message.join(" "));
            return ExitCode::from(2);
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// The cause chain on one line. Some errors print their cause and also return it as their
/// source; a cause already said is not said again. Line breaks from any source are folded.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause
            .to_string()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        if text.is_empty() || line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let settings = Settings::load(cli.config.as_deref())?;
    let config = Config::from_settings(&settings)?;
    let format = cli.log_format.unwrap_or(config.log_format);
    match cli.command {
        Command::Serve => {
            telemetry::init(format, &config.log_level);
            serve(&config)
        }
        command => {
            // Commands print their results on stdout; the log keeps to warnings.
            telemetry::init(format, "warn");
            match command {
                Command::Serve => serve(&config),
                Command::Migrate => commands::migrate(&config),
                Command::User(c) => commands::user(&config, c),
                Command::Client(c) => commands::client(&config, c),
                Command::Keys(c) => commands::keys(&config, c),
                Command::Audit(c) => commands::audit(&config, c),
                Command::Config(c) => commands::config(&settings, &config, c),
            }
        }
    }
}

fn serve(config: &Config) -> anyhow::Result<()> {
    actix_web::rt::System::new().block_on(async {
        let app = startup::Application::build(config)?;
        if let Some(admin) = app.initial_admin() {
            announce_initial_admin(admin, app.issuer());
        }
        tracing::info!(address = %app.address(), issuer = %app.issuer(), backend = config.database.backend(), "listening");
        app.run_until_stopped().await?;
        tracing::info!("stopped");
        Ok(())
    })
}

/// The one time the generated password is ever shown.
fn announce_initial_admin(
    admin: &portcullis_core::bootstrap::InitialAdmin,
    issuer: &portcullis_core::domain::IssuerUrl,
) {
    match &admin.generated_password {
        Some(password) => eprintln!(
            "\n  Portcullis created the first administrator.\n\n    username: {}\n    password: {}\n\n  \
             This password is shown only once; sign in at {issuer} and choose a new one.\n",
            admin.username,
            password.reveal()
        ),
        None => eprintln!(
            "\n  Portcullis created the first administrator {} with the configured password \
             (bootstrap.admin_password); it must be changed at first sign-in.\n",
            admin.username
        ),
    }
}
