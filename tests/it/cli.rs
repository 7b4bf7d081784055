//! The `portcullis` command line, as an operator scripts it.

use diesel::prelude::*;
use portcullis_storage::schema::client_secrets;
use portcullis_storage::{Database, DatabaseUrl, PoolOptions};

use crate::helpers::{Cli, command, run};

#[test]
fn every_command_has_help() {
    let cli = Cli::new();
    let commands: &[&[&str]] = &[
        &[],
        &["serve"],
        &["migrate"],
        &["user"],
        &["user", "create"],
        &["user", "list"],
        &["user", "disable"],
        &["user", "enable"],
        &["client"],
        &["client", "create"],
        &["client", "list"],
        &["client", "show"],
        &["client", "delete"],
        &["config"],
        &["config", "check"],
    ];
    for args in commands {
        let mut with_help = args.to_vec();
        with_help.push("--help");
        let out = cli.run(&with_help);
        assert_eq!(out.code, 0, "{args:?}: {}", out.stderr);
        assert!(
            out.stdout.contains("Usage: portcullis"),
            "{args:?}: {}",
            out.stdout
        );
    }
    let version = cli.run(&["--version"]);
    assert_eq!(version.code, 0);
    assert!(version.stdout.starts_with("portcullis "));
}

#[test]
fn unknown_flags_and_missing_arguments_are_one_line_and_exit_2() {
    let cli = Cli::new();
    cli.run(&["serve", "--bogus"])
        .assert_one_line_failure(2, "--bogus");
    cli.run(&["frobnicate"])
        .assert_one_line_failure(2, "frobnicate");
    cli.run(&["client", "create"])
        .assert_one_line_failure(2, "--name");
    // There is no way to put a password on the command line.
    cli.run(&["user", "create", "--username", "a", "--password", "x"])
        .assert_one_line_failure(2, "--password");
}

#[test]
fn migrate_applies_once() {
    let cli = Cli::new();
    let first = cli.run(&["migrate"]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert!(
        first.stdout.contains("applied 20261123000000")
            && first.stdout.contains("applied 20261124000000"),
        "{}",
        first.stdout
    );
    let second = cli.run(&["migrate"]);
    assert_eq!(second.code, 0);
    assert!(second.stdout.contains("up to date"), "{}", second.stdout);
}

#[test]
fn user_lifecycle() {
    let cli = Cli::new();
    let made = cli.run_stdin(
        &[
            "user",
            "create",
            "--username",
            "Alice",
            "--email",
            "alice@example.com",
            "--password-stdin",
            "--json",
        ],
        "correct horse battery\n",
    );
    assert_eq!(made.code, 0, "{}", made.stderr);
    let user = made.json();
    assert_eq!(user["username"], "alice");
    assert_eq!(user["status"], "active");
    assert!(
        user.get("password").is_none(),
        "a password we were given is not echoed"
    );
    assert!(!made.stdout.contains("correct horse"));

    cli.run_stdin(
        &["user", "create", "--username", "alice", "--password-stdin"],
        "another password\n",
    )
    .assert_one_line_failure(1, "a user named alice already exists");
    cli.run_stdin(
        &["user", "create", "--username", "bob", "--password-stdin"],
        "short\n",
    )
    .assert_one_line_failure(1, "at least 8 characters");
    cli.run_stdin(
        &["user", "create", "--username", "bob", "--password-stdin"],
        &format!("{}\n", "x".repeat(72)),
    )
    .assert_one_line_failure(1, "at most 71 bytes");
    cli.run_stdin(
        &["user", "create", "--username", "bob", "--password-stdin"],
        "",
    )
    .assert_one_line_failure(1, "no password");
    cli.run(&["user", "create", "--username", "bob"])
        .assert_one_line_failure(1, "--password-stdin");
    cli.run_stdin(
        &["user", "create", "--username", "b ob", "--password-stdin"],
        "long enough pw\n",
    )
    .assert_one_line_failure(1, "--username");
    cli.run_stdin(
        &[
            "user",
            "create",
            "--username",
            "bob",
            "--role",
            "billing",
            "--password-stdin",
        ],
        "long enough pw\n",
    )
    .assert_one_line_failure(1, "role billing does not exist");

    let generated = cli.run(&[
        "user",
        "create",
        "--username",
        "carol",
        "--role",
        "admin",
        "--generate-password",
        "--json",
    ]);
    assert_eq!(generated.code, 0, "{}", generated.stderr);
    let carol = generated.json();
    assert_eq!(carol["password"].as_str().unwrap().len(), 20);
    assert_eq!(carol["roles"], serde_json::json!(["admin"]));

    let disabled = cli.run(&["user", "disable", "CAROL"]);
    assert_eq!(disabled.code, 0, "{}", disabled.stderr);
    cli.run(&["user", "disable", "nobody"])
        .assert_one_line_failure(1, "no user named nobody");

    let list = cli.run(&["user", "list", "--json"]);
    assert_eq!(list.code, 0);
    let users = list.json();
    let names: Vec<_> = users
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alice", "carol"], "bob was never half-created");
    assert_eq!(users[1]["status"], "disabled");
    assert!(
        !list.stdout.contains("$2b$"),
        "no password hash in any output"
    );

    let table = cli.run(&["user", "list"]);
    assert!(table.stdout.starts_with("USERNAME"));
    assert!(table.stdout.contains("carol") && table.stdout.contains("disabled"));
    assert!(
        cli.run(&["user", "enable", "carol"])
            .stdout
            .contains("active")
    );
}

#[test]
fn client_lifecycle() {
    let cli = Cli::new();
    let made = cli.run(&[
        "client",
        "create",
        "--name",
        "Example App",
        "--redirect-uri",
        "https://rp1.test/cb",
        "--redirect-uri",
        "http://127.0.0.1/cb",
        "--post-logout-redirect-uri",
        "https://rp1.test/bye",
        "--access-token-ttl",
        "5m",
        "--json",
    ]);
    assert_eq!(made.code, 0, "{}", made.stderr);
    let client = made.json();
    let id = client["client_id"].as_str().unwrap().to_owned();
    let secret = client["client_secret"].as_str().unwrap().to_owned();
    assert_eq!(secret.len(), 43, "256 bits, base64url");
    assert_eq!(client["token_endpoint_auth_method"], "client_secret_basic");
    assert_eq!(
        client["grant_types"],
        serde_json::json!(["authorization_code", "refresh_token"])
    );
    assert_eq!(client["access_token_ttl"], 300);
    assert_eq!(client["require_pkce"], true);

    // Stored only as a hash.
    let db = Database::open(
        &DatabaseUrl::parse(cli.db.raw_url()).unwrap(),
        &PoolOptions::default(),
    )
    .unwrap();
    let hashes: Vec<String> = client_secrets::table
        .select(client_secrets::secret_hash)
        .load(&mut *db.conn().unwrap())
        .unwrap();
    assert_eq!(hashes.len(), 1);
    assert_ne!(hashes[0], secret);
    assert!(portcullis_core::secret::TokenHash::from_stored(hashes[0].clone()).matches(&secret));

    let shown = cli.run(&["client", "show", &id, "--json"]);
    assert_eq!(shown.code, 0, "{}", shown.stderr);
    assert_eq!(shown.json()["client_name"], "Example App");
    assert!(
        !shown.stdout.contains(&secret) && !shown.stdout.contains(&hashes[0]),
        "the secret is shown once"
    );
    assert!(!cli.run(&["client", "list"]).stdout.contains(&secret));

    cli.run(&[
        "client",
        "create",
        "--name",
        "Example App",
        "--redirect-uri",
        "https://rp1.test/cb",
    ])
    .assert_one_line_failure(1, "a client named Example App already exists");
    cli.run(&[
        "client",
        "create",
        "--name",
        "Evil",
        "--redirect-uri",
        "http://evil.test/cb",
    ])
    .assert_one_line_failure(1, "--redirect-uri");
    cli.run(&[
        "client",
        "create",
        "--name",
        "Frag",
        "--redirect-uri",
        "https://rp1.test/cb#x",
    ])
    .assert_one_line_failure(1, "fragment");
    cli.run(&["client", "create", "--name", "NoUri"])
        .assert_one_line_failure(1, "redirect URI");
    cli.run(&[
        "client",
        "create",
        "--name",
        "Pw",
        "--grant-type",
        "password",
    ])
    .assert_one_line_failure(1, "password");
    cli.run(&[
        "client",
        "create",
        "--name",
        "Pub",
        "--grant-type",
        "client_credentials",
        "--auth-method",
        "none",
    ])
    .assert_one_line_failure(1, "confidential");
    cli.run(&[
        "client",
        "create",
        "--name",
        "Ttl",
        "--redirect-uri",
        "https://a.test/cb",
        "--access-token-ttl",
        "5w",
    ])
    .assert_one_line_failure(1, "--access-token-ttl");

    let public = cli.run(&[
        "client",
        "create",
        "--name",
        "Native",
        "--redirect-uri",
        "http://127.0.0.1/cb",
        "--auth-method",
        "none",
        "--json",
    ]);
    assert_eq!(public.code, 0, "{}", public.stderr);
    assert!(public.json().get("client_secret").is_none());

    let service = cli.run(&[
        "client",
        "create",
        "--name",
        "Service",
        "--grant-type",
        "client_credentials",
        "--scopes",
        "api:read",
        "--json",
    ]);
    assert_eq!(service.code, 0, "{}", service.stderr);
    assert_eq!(service.json()["scope"], "api:read");

    let list = cli.run(&["client", "list", "--json"]);
    assert_eq!(list.json().as_array().unwrap().len(), 3);

    assert_eq!(cli.run(&["client", "delete", &id]).code, 0);
    cli.run(&["client", "delete", &id])
        .assert_one_line_failure(1, "no client");
    cli.run(&["client", "show", &id])
        .assert_one_line_failure(1, "no client");
    cli.run(&["client", "show", "' OR '1'='1"])
        .assert_one_line_failure(1, "client_id");
    let hashes: i64 = client_secrets::table
        .count()
        .get_result(&mut *db.conn().unwrap())
        .unwrap();
    assert_eq!(
        hashes, 1,
        "the deleted client's secret went with it; the service's remains"
    );
}

#[test]
fn config_check_with_no_configuration_shows_the_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(command(dir.path()), &["config", "check", "--json"], None);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let shown = out.json();
    assert_eq!(shown["server"]["listen"], "127.0.0.1:8080");
    assert_eq!(shown["server"]["issuer"], "http://127.0.0.1:8080");
    assert_eq!(shown["database"]["url"], "sqlite://./data/portcullis.db");
    assert!(
        !dir.path().join("data").exists(),
        "checking the configuration writes nothing"
    );
    let text = run(command(dir.path()), &["config", "check"], None);
    assert!(text.stdout.contains("The configuration is valid."));
}

#[test]
fn bad_configuration_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("portcullis.toml");
    let check = |toml: &str, env: &[(&str, &str)], needle: &str| {
        std::fs::write(&file, toml).unwrap();
        let mut cmd = command(dir.path());
        cmd.env("PORTCULLIS_CONFIG", &file);
        for (k, v) in env {
            cmd.env(k, v);
        }
        run(cmd, &["config", "check"], None).assert_one_line_failure(1, needle);
    };
    check("[server]\nlisten_addr = \"x\"\n", &[], "listen_addr");
    check("[sever]\n", &[], "sever");
    check("[server]\nlisten = 8080\n", &[], "server.listen");
    check("[server]\nlisten = \"localhost\"\n", &[], "server.listen");
    check(
        "[server]\nissuer = \"http://id.example.com\"\n",
        &[],
        "server.issuer",
    );
    check(
        "[server]\nlisten = \"0.0.0.0:8080\"\n",
        &[],
        "server.issuer",
    );
    check("[server\n", &[], "portcullis.toml");
    check("[database]\nurl = \"mysql://db\"\n", &[], "database.url");
    check(
        "[database]\nconnect_timeout = \"5 fortnights\"\n",
        &[],
        "database.connect_timeout",
    );
    check(
        "",
        &[("PORTCULLIS__SERVER__LISTEN", "nope")],
        "server.listen",
    );
    check(
        "",
        &[("PORTCULLIS__SECURITY__BCRYPT_COST", "99")],
        "security.bcrypt_cost",
    );
    check("", &[("PORTCULLIS__LOG__FORMAT", "xml")], "log.format");
    check(
        "",
        &[("PORTCULLIS__BOOTSTRAP__ADMIN_PASSWORD", "short")],
        "bootstrap.admin_password",
    );
    // The environment overrides the file.
    std::fs::write(&file, "[server]\nlisten = \"127.0.0.1:9000\"\n").unwrap();
    let mut cmd = command(dir.path());
    cmd.env("PORTCULLIS_CONFIG", &file)
        .env("PORTCULLIS__SERVER__LISTEN", "127.0.0.1:9001");
    assert_eq!(
        run(cmd, &["config", "check", "--json"], None).json()["server"]["listen"],
        "127.0.0.1:9001"
    );
    // --config wins over PORTCULLIS_CONFIG, and a missing file is named.
    let mut cmd = command(dir.path());
    cmd.env("PORTCULLIS_CONFIG", &file);
    run(cmd, &["--config", "missing.toml", "config", "check"], None)
        .assert_one_line_failure(1, "missing.toml does not exist");
}

#[test]
fn database_problems_are_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let with_db = |url: &str| {
        let mut cmd = command(dir.path());
        cmd.env("PORTCULLIS__DATABASE__URL", url)
            .env("PORTCULLIS__DATABASE__CONNECT_TIMEOUT", "1");
        cmd
    };
    run(
        with_db("postgres://postgres:secret@127.0.0.1:1/portcullis"),
        &["migrate"],
        None,
    )
    .assert_one_line_failure(
        1,
        "cannot connect to PostgreSQL at postgres://postgres:***@127.0.0.1:1/portcullis",
    );
    let out = run(
        with_db("postgres://postgres:secret@127.0.0.1:1/portcullis"),
        &["migrate"],
        None,
    );
    assert!(!out.stderr.contains("secret"), "the password is redacted");
    // A data folder that cannot be created (under a file; and under /proc, which even root
    // cannot write).
    std::fs::write(dir.path().join("a-file"), "").unwrap();
    run(with_db("sqlite://./a-file/data/p.db"), &["migrate"], None)
        .assert_one_line_failure(1, "cannot create the data folder");
    run(
        with_db("sqlite:///proc/portcullis/p.db"),
        &["migrate"],
        None,
    )
    .assert_one_line_failure(1, "cannot create the data folder");
    // A database path that is a folder.
    std::fs::create_dir(dir.path().join("folder.db")).unwrap();
    run(with_db("sqlite://./folder.db"), &["migrate"], None)
        .assert_one_line_failure(1, "cannot open the SQLite database");
}
