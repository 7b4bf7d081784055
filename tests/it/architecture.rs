//! Architecture invariant: portcullis-core knows no HTTP, SQL or HTML. Checked on the resolved
//! dependency graph, so a transitive dependency counts too.

use std::collections::BTreeSet;
use std::process::Command;

const FORBIDDEN: &[&str] = &[
    "actix",
    "diesel",
    "askama",
    "hyper",
    "http",
    "reqwest",
    "axum",
    "tower",
    "pq-sys",
    "libsqlite3-sys",
    "sqlx",
    "rusqlite",
    "postgres",
    "tera",
    "handlebars",
];

fn normal_dependencies_of(package: &str) -> BTreeSet<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.toml");
    // `cargo tree` resolves for this platform, transitively, and needs no network.
    let out = Command::new(cargo)
        .args([
            "tree",
            "--offline",
            "--edges",
            "normal",
            "--prefix",
            "none",
            "--format",
            "{p}",
            "--package",
            package,
        ])
        .args(["--manifest-path", manifest])
        .output()
        .expect("cargo tree");
    assert!(
        out.status.success(),
        "cargo tree: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != package)
        .map(str::to_owned)
        .collect()
}

fn forbidden(name: &str) -> bool {
    FORBIDDEN.iter().any(|f| {
        name == *f || name.starts_with(&format!("{f}-")) || name.starts_with(&format!("{f}_"))
    })
}

#[test]
fn core_depends_on_no_web_sql_or_template_crate() {
    let deps = normal_dependencies_of("portcullis-core");
    assert!(
        deps.contains("bcrypt"),
        "the walk found core's dependencies: {deps:?}"
    );
    let bad: Vec<_> = deps.iter().filter(|d| forbidden(d)).collect();
    assert!(bad.is_empty(), "portcullis-core must not depend on {bad:?}");
}

#[test]
fn the_check_would_catch_a_violation() {
    // The same walk over the web crate finds what core must never have.
    let deps = normal_dependencies_of("portcullis-web");
    assert!(deps.iter().any(|d| d.starts_with("actix")));
    assert!(deps.iter().any(|d| d.starts_with("diesel")));
    assert!(deps.iter().any(|d| d.starts_with("askama")));
}
