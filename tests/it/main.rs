//! End-to-end tests: the real server on 127.0.0.1:0 with a fresh database (SQLite, or
//! PostgreSQL when `PORTCULLIS_TEST_POSTGRES_URL` is set), driven over HTTP, and the real
//! `portcullis` binary driven as an operator would.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

mod account;
mod admin;
mod admin_api;
mod admin_ui;
mod architecture;
mod audit;
mod catalogue;
mod cli;
mod cluster;
mod config_doc;
mod deploy;
mod faults;
mod flow;
mod health;
mod helpers;
mod keys;
mod limits;
mod oauth;
mod observability;
mod openapi;
mod registration;
mod rotation;
mod serve;
mod tls;
mod totp;
