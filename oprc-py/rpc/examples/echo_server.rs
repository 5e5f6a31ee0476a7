//! The benchmark's floor: an `oprc.OprcFunction` server that answers every call with
//! `OKAY` and the request's payload (no Python, no state).
//!
//! `cargo run --release --example echo_server -- [--host 127.0.0.1] [--port 0]`: prints
//! `listening on HOST:PORT` once serving; stops on SIGTERM or SIGINT.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use oprc_rpc::{start, EchoInvoker, ServerConfig};

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.to_string())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let host = arg(&args, "--host", "127.0.0.1");
    let port = arg(&args, "--port", "0");
    let addr: SocketAddr = match format!("{host}:{port}").parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("echo_server: bad address {host}:{port}: {e}");
            return ExitCode::from(2);
        }
    };
    let server = match start(addr, EchoInvoker, ServerConfig::default()).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("echo_server: cannot bind {addr}: {e}");
            return ExitCode::from(1);
        }
    };
    println!("listening on {}", server.local_addr());
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("echo_server: {e}");
            return ExitCode::from(1);
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    server.stop(Some(Duration::from_secs(5))).await;
    ExitCode::SUCCESS
}
