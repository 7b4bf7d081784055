//! TLS served by the binary itself: HTTP/2 by ALPN, HSTS, and a certificate read again on
//! SIGHUP without dropping the connections already open.

use std::path::Path;
use std::process::Command;

use crate::helpers::{Cli, Server};

/// A self-signed certificate for 127.0.0.1, written as PEM files; returns its DER.
fn write_certificate(dir: &Path, name: &str) -> Vec<u8> {
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(dir.join(format!("{name}.crt")), cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    cert.der().to_vec()
}

fn client(ca: &[u8]) -> reqwest::Client {
    let pem = format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        base64_lines(ca)
    );
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).unwrap())
        .tls_info(true)
        .build()
        .unwrap()
}

fn base64_lines(der: &[u8]) -> String {
    use base64::Engine as _;
    let text = base64::engine::general_purpose::STANDARD.encode(der);
    text.as_bytes()
        .chunks(64)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The certificate the server presented on this response's connection.
fn presented(res: &reqwest::Response) -> Vec<u8> {
    res.extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|info| info.peer_certificate())
        .unwrap()
        .to_vec()
}

#[tokio::test]
async fn tls_with_http2_hsts_and_a_certificate_reloaded_on_sighup() {
    let cli = Cli::new();
    let dir = cli.dir.path();
    let first = write_certificate(dir, "first");
    // The server reads these two paths; SIGHUP makes it read them again.
    std::fs::copy(dir.join("first.crt"), dir.join("server.crt")).unwrap();
    std::fs::copy(dir.join("first.key"), dir.join("server.key")).unwrap();
    let mut cmd = cli.cmd();
    // Idle HTTP/2 connections of the test's clients would hold a graceful stop for seconds.
    cmd.env("PORTCULLIS__SERVER__SHUTDOWN_TIMEOUT", "1")
        .env("PORTCULLIS__SERVER__TLS_CERT_FILE", dir.join("server.crt"))
        .env("PORTCULLIS__SERVER__TLS_KEY_FILE", dir.join("server.key"))
        .env(
            "PORTCULLIS__KEYS__MASTER_KEY",
            portcullis_core::keys::MasterKey::generate(&portcullis_core::OsRandom)
                .unwrap()
                .to_base64(),
        );
    let server = Server::start(cmd);
    let base = format!("https://127.0.0.1:{}", server.address.port());

    let old_client = client(&first);
    let res = old_client
        .get(format!("{base}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.version(), reqwest::Version::HTTP_2, "HTTP/2 by ALPN");
    let hsts = res.headers()["strict-transport-security"].to_str().unwrap();
    let max_age: u64 = hsts
        .split(';')
        .find_map(|p| p.trim().strip_prefix("max-age="))
        .unwrap()
        .parse()
        .unwrap();
    assert!(max_age >= 31_536_000, "{hsts}");
    assert_eq!(presented(&res), first);
    let discovery: serde_json::Value = old_client
        .get(format!("{base}/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(discovery["issuer"], base, "the issuer is https");

    // A new certificate in place, then SIGHUP.
    let second = write_certificate(dir, "second");
    std::fs::copy(dir.join("second.crt"), dir.join("server.crt")).unwrap();
    std::fs::copy(dir.join("second.key"), dir.join("server.key")).unwrap();
    let pid = server.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    let new_client = client(&second);
    let mut reloaded = false;
    for _ in 0..50 {
        if let Ok(res) = new_client.get(format!("{base}/healthz")).send().await {
            assert_eq!(presented(&res), second);
            reloaded = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(reloaded, "new connections get the new certificate");
    // The connection opened before the reload is still served.
    let res = old_client
        .get(format!("{base}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(presented(&res), first, "the same connection as before");

    // A broken file on SIGHUP keeps the certificate in use.
    std::fs::write(dir.join("server.crt"), "not a certificate").unwrap();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let last = client(&second);
    let res = last.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    drop((old_client, new_client, last, res));
    let (code, lines) = server.stop();
    assert_eq!(code, 0);
    assert!(
        lines.iter().any(|l| l.contains("TLS certificate reloaded")),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("TLS certificate not reloaded")),
        "{lines:#?}"
    );
}

#[test]
fn a_certificate_without_its_key_stops_the_start() {
    let cli = Cli::new();
    let mut cmd = cli.cmd();
    cmd.env(
        "PORTCULLIS__SERVER__TLS_CERT_FILE",
        cli.dir.path().join("missing.crt"),
    );
    let out = crate::helpers::run(cmd, &["serve"], None);
    out.assert_one_line_failure(1, "server.tls_cert_file");
    // Both set, but the key is not there: the start stops and names the setting.
    write_certificate(cli.dir.path(), "only");
    let mut cmd = cli.cmd();
    cmd.env(
        "PORTCULLIS__SERVER__TLS_CERT_FILE",
        cli.dir.path().join("only.crt"),
    )
    .env(
        "PORTCULLIS__SERVER__TLS_KEY_FILE",
        cli.dir.path().join("missing.key"),
    )
    .env(
        "PORTCULLIS__KEYS__MASTER_KEY",
        portcullis_core::keys::MasterKey::generate(&portcullis_core::OsRandom)
            .unwrap()
            .to_base64(),
    )
    .env("PORTCULLIS__SERVER__LISTEN", "127.0.0.1:0");
    let out = crate::helpers::run(cmd, &["serve"], None);
    out.assert_one_line_failure(1, "server.tls_key_file");
}
