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
    let normal = |s: &str| {
        s.split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_uppercase()
    };
    // A `;` inside a function body (`$$ … $$`) or a trigger's `BEGIN … END` ends nothing.
    let mut statements = Vec::new();
    let mut current = String::new();
    for piece in code.split_inclusive(';') {
        current.push_str(piece);
        let upper = normal(current.trim_end_matches(';'));
        let in_dollars = current.matches("$$").count() % 2 == 1;
        let in_trigger = upper.starts_with("CREATE TRIGGER ")
            && upper.contains(" BEGIN ")
            && !upper.ends_with(" END");
        if in_dollars || in_trigger {
            continue;
        }
        if !upper.is_empty() {
            statements.push(upper);
        }
        current.clear();
    }
    statements
}

/// The tables a statement writes to (`UPDATE t`, `INSERT INTO t`, `DELETE FROM t`).
fn written(statement: &str) -> Vec<&str> {
    let words: Vec<&str> = statement.split_whitespace().collect();
    words
        .windows(2)
        .filter_map(|w| match w {
            ["UPDATE", t] | ["INTO", t] | ["FROM", t] => Some(*t),
            _ => None,
        })
        .filter(|t| !t.starts_with('('))
        .collect()
}

/// What an additive migration may do, and why anything else is refused.
fn refusal(statement: &str) -> Option<&'static str> {
    let allowed = [
        "CREATE TABLE ",
        "CREATE INDEX ",
        "CREATE UNIQUE INDEX ",
        "INSERT INTO ",
        // Checked below: they may write only to tables the same migration creates.
        "CREATE TRIGGER ",
        "CREATE FUNCTION ",
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
            let statements = statements(&dir.join("up.sql"));
            let created: Vec<&str> = statements
                .iter()
                .filter_map(|s| s.strip_prefix("CREATE TABLE "))
                .filter_map(|rest| rest.split_whitespace().next())
                .collect();
            for statement in &statements {
                if let Some(why) = refusal(statement) {
                    panic!("{}: {statement}: {why}", dir.display());
                }
                // A trigger or function on old tables must not change what old nodes see.
                if statement.starts_with("CREATE TRIGGER ")
                    || statement.starts_with("CREATE FUNCTION ")
                {
                    // A PostgreSQL trigger has no body of its own: its function is checked.
                    let body = statement.split_once(" BEGIN ").map_or("", |b| b.1);
                    for table in written(body) {
                        assert!(
                            created.contains(&table),
                            "{}: {statement}: a trigger may write only to tables this migration creates, not {table}",
                            dir.display()
                        );
                    }
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
