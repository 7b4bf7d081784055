//! The rule that lets nodes be upgraded one at a time: migrations only add. A node of the
//! previous release keeps serving while the new schema lands (it never reads what is new, and
//! nothing it reads or writes is taken away or made stricter), so the migration runs first
//! and the nodes roll afterwards. docs/upgrades.md explains the rule; this test keeps it.

#![expect(clippy::unwrap_used, reason = "tests")]

use std::path::{Path, PathBuf};

fn migrations(backend: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../migrations")
        .join(backend);
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

/// The statements of a file, comments removed, upper-cased and on one line each.
fn statements(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let code: String = text
        .lines()
        .map(|l| l.split("--").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join(" ");
    code.split(';')
        .map(|s| {
            s.split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .to_uppercase()
        })
        .filter(|s| !s.is_empty())
        .collect()
}

/// What an additive migration may do, and why anything else is refused.
fn refusal(statement: &str) -> Option<&'static str> {
    let allowed = [
        "CREATE TABLE ",
        "CREATE INDEX ",
        "CREATE UNIQUE INDEX ",
        "INSERT INTO ",
    ];
    if allowed.iter().any(|a| statement.starts_with(a)) {
        return None;
    }
    if let Some(rest) = statement.strip_prefix("ALTER TABLE ") {
        if !rest.contains(" ADD COLUMN ") {
            return Some("an ALTER TABLE other than ADD COLUMN changes what old nodes use");
        }
        if rest.contains("NOT NULL") && !rest.contains("DEFAULT") {
            return Some("a NOT NULL column without a DEFAULT breaks old nodes' inserts");
        }
        return None;
    }
    Some(
        "only CREATE TABLE, CREATE [UNIQUE] INDEX, INSERT and ALTER TABLE … ADD COLUMN are additive",
    )
}

#[test]
fn both_backends_have_the_same_migrations() {
    let names = |backend| -> Vec<String> {
        migrations(backend)
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect()
    };
    assert_eq!(names("sqlite"), names("postgres"));
}

#[test]
fn migrations_after_the_first_release_only_add() {
    for backend in ["sqlite", "postgres"] {
        // The first migration is the initial schema; every later one must be additive.
        for dir in migrations(backend).iter().skip(1) {
            for statement in statements(&dir.join("up.sql")) {
                if let Some(why) = refusal(&statement) {
                    panic!("{}: {statement}: {why}", dir.display());
                }
            }
        }
    }
}

#[test]
fn the_rule_refuses_what_it_should() {
    for bad in [
        "DROP TABLE USERS",
        "ALTER TABLE USERS DROP COLUMN EMAIL",
        "ALTER TABLE USERS RENAME COLUMN EMAIL TO MAIL",
        "ALTER TABLE USERS ADD COLUMN X TEXT NOT NULL",
        "ALTER TABLE USERS ALTER COLUMN EMAIL SET NOT NULL",
        "UPDATE USERS SET EMAIL = NULL",
        "DELETE FROM USERS",
    ] {
        assert!(refusal(bad).is_some(), "{bad}");
    }
    for good in [
        "CREATE TABLE T (ID TEXT PRIMARY KEY)",
        "ALTER TABLE USERS ADD COLUMN X TEXT",
        "ALTER TABLE USERS ADD COLUMN X BOOLEAN NOT NULL DEFAULT FALSE",
        "CREATE UNIQUE INDEX I ON T (ID)",
    ] {
        assert!(refusal(good).is_none(), "{good}");
    }
}
