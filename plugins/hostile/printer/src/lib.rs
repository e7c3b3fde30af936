//! Hostile test plugin (`route`): uses WASI the way guest runtimes do.
//!
//! The payload says what to do:
//! - `print`: one line to stdout and one to stderr, then delivers;
//! - `flood`: 1 MiB to stdout without a line break, then delivers;
//! - `exit`: calls `exit(3)`;
//! - `clock`: reads the WASI wall clock a million times (a host call each,
//!   which fuel alone does not bound), then delivers;
//! - `probe`: drops the message with a reason that lists what the sandbox
//!   let it see: environment variables, arguments, the root directory,
//!   and stdin.

use std::io::{Read, Write};

use switchyard_plugin::{Message, Route, RouteDecision, export_route};

/// The plugin state: none.
struct Printer;

impl Route for Printer {
    fn new(_config: &str) -> Result<Self, String> {
        println!("printer: init");
        Ok(Printer)
    }

    fn route(&mut self, msg: Message) -> RouteDecision {
        match msg.payload.as_slice() {
            b"print" => {
                println!("printer: to stdout on {}", msg.topic);
                eprintln!("printer: to stderr on {}", msg.topic);
                RouteDecision::Deliver
            }
            b"flood" => {
                let block = vec![b'y'; 64 * 1024];
                let mut out = std::io::stdout();
                for _ in 0..16 {
                    let _ = out.write_all(&block);
                }
                let _ = out.flush();
                RouteDecision::Deliver
            }
            b"clock" => {
                let mut latest = std::time::UNIX_EPOCH;
                for _ in 0..1_000_000 {
                    latest = latest.max(std::time::SystemTime::now());
                }
                println!("printer: read the clock up to {latest:?}");
                RouteDecision::Deliver
            }
            b"exit" => {
                eprintln!("printer: exiting");
                std::process::exit(3)
            }
            b"probe" => {
                let mut stdin = Vec::new();
                let stdin = std::io::stdin()
                    .read_to_end(&mut stdin)
                    .map(|_| stdin.len());
                RouteDecision::Drop(format!(
                    "env={} args={} root={} file={} stdin={:?}",
                    std::env::vars().count(),
                    std::env::args().count(),
                    std::fs::read_dir("/").is_ok(),
                    std::fs::read("/etc/passwd").is_ok(),
                    stdin.ok(),
                ))
            }
            _ => RouteDecision::Deliver,
        }
    }
}

export_route!(Printer);
