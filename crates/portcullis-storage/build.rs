//! The migrations are embedded (`embed_migrations!` in db.rs): a new or changed one must
//! rebuild this crate, which cargo does not know without being told.

fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
