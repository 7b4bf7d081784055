//! `portcullis serve` as a process: first start, logs, graceful stop.

use std::net::TcpListener;

use crate::helpers::{Cli, Server, command, http_get, run};

fn banner_password(lines: &[String]) -> Option<String> {
    lines
        .iter()
        .find_map(|l| l.trim().strip_prefix("password: ").map(str::to_owned))
}

#[test]
fn first_start_creates_one_administrator_and_stops_gracefully() {
    let cli = Cli::new();
    let server = Server::start(cli.cmd());
    let password = banner_password(&server.lines).expect("the generated password is printed once");
    assert_eq!(password.len(), 20);
    assert!(server.lines.iter().any(|l| l.trim() == "username: admin"));
    let (status, body) = http_get(server.address, "/readyz");
    assert_eq!(status, 200, "{body}");
    let (code, lines) = server.stop();
    assert_eq!(code, 0, "SIGTERM is a clean exit: {lines:#?}");
    assert!(
        lines.iter().any(|l| l.contains("\"message\":\"stopped\"")),
        "{lines:#?}"
    );
    // The password appears in the banner only, never in a log event.
    assert_eq!(lines.iter().filter(|l| l.contains(&password)).count(), 1);

    let again = Server::start(cli.cmd());
    assert!(
        banner_password(&again.lines).is_none(),
        "a second start creates nobody"
    );
    let (code, _) = again.stop();
    assert_eq!(code, 0);

    let users = cli.run(&["user", "list", "--json"]).json();
    let users = users.as_array().unwrap();
    assert_eq!(users.len(), 1);
    assert_eq!(users[0]["username"], "admin");
    assert_eq!(users[0]["roles"], serde_json::json!(["admin"]));
    assert_eq!(users[0]["password_change_required"], true);
}

#[test]
fn a_configured_admin_password_is_used_and_never_printed() {
    let cli = Cli::new();
    let mut cmd = cli.cmd();
    // All digits: the environment hands it over as a number, and it must still be a password.
    cmd.env("PORTCULLIS__BOOTSTRAP__ADMIN_PASSWORD", "123456789012")
        .env("PORTCULLIS__BOOTSTRAP__ADMIN_USERNAME", "root");
    let server = Server::start(cmd);
    let (code, lines) = server.stop();
    assert_eq!(code, 0);
    assert!(banner_password(&lines).is_none());
    assert!(
        lines.iter().any(|l| l.contains("first administrator root")),
        "{lines:#?}"
    );
    assert!(!lines.iter().any(|l| l.contains("123456789012")));
}

#[test]
fn with_no_configuration_the_database_goes_to_data() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(command(dir.path()));
    assert!(dir.path().join("data/portcullis.db").is_file());
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.path().join("data"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(
        mode & 0o777,
        0o700,
        "the data folder is private to the server's user"
    );
    let key = dir.path().join("data/master.key");
    let key_mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key).unwrap().permissions());
    assert_eq!(
        key_mode & 0o777,
        0o600,
        "the development master key is private"
    );
    let (status, _) = http_get(server.address, "/healthz");
    assert_eq!(status, 200);
    let (code, lines) = server.stop();
    assert_eq!(code, 0);
    let listening = lines
        .iter()
        .find(|l| l.contains("\"message\":\"listening\""))
        .unwrap();
    assert!(listening.contains("\"backend\":\"sqlite\""), "{listening}");
    assert!(
        listening.contains("\"issuer\":\"http://127.0.0.1:"),
        "{listening}"
    );
}

#[test]
fn json_logs_carry_request_ids() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(command(dir.path()));
    http_get(server.address, "/no-such-page");
    let (_, lines) = server.stop();
    let served: serde_json::Value = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["message"] == "served" && e["status"] == 404)
        .expect("an access log line");
    assert!(
        uuid::Uuid::parse_str(served["span"]["request_id"].as_str().unwrap()).is_ok(),
        "{served}"
    );
    assert_eq!(served["span"]["path"], "/no-such-page");
}

#[test]
fn a_port_in_use_is_one_line() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = command(dir.path());
    cmd.env("PORTCULLIS__SERVER__LISTEN", &address);
    run(cmd, &["serve"], None).assert_one_line_failure(1, &format!("cannot listen on {address}"));
    assert!(!dir.path().join("data").exists(), "nothing was written");
}
