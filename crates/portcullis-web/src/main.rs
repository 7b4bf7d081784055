//! The `portcullis` binary.

use std::process::ExitCode;

fn main() -> ExitCode {
    portcullis_web::main_with_args(std::env::args_os())
}
