//! Runs the fault-injecting, request-counting proxy in front of an S3 server, for scripts.
//!
//! Usage: `s3mover-fault-proxy --upstream HOST:PORT [--listen ADDR:PORT] [--rate R] [--seed S]`
//!
//! Prints its endpoint (`http://127.0.0.1:PORT`) on stdout, then serves until SIGTERM or
//! SIGINT. `GET /__faultproxy/counts` answers the request counts as JSON,
//! `/__faultproxy/reset` zeroes them, `/__faultproxy/faults?rate=R&seed=S` changes the faults.

use std::io::Write;

use s3mover_testkit::{FaultProxy, Faults};

fn main() -> std::process::ExitCode {
    let mut upstream = None;
    let mut listen = "127.0.0.1:0".to_string();
    let mut rate = 0.0f64;
    let mut seed = 1u64;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next();
        match (arg.as_str(), value) {
            ("--upstream", Some(v)) => upstream = Some(v),
            ("--listen", Some(v)) => listen = v,
            ("--rate", Some(v)) => match v.parse() {
                Ok(r) => rate = r,
                Err(_) => return usage(&format!("--rate {v} is not a number")),
            },
            ("--seed", Some(v)) => match v.parse() {
                Ok(s) => seed = s,
                Err(_) => return usage(&format!("--seed {v} is not a number")),
            },
            (other, _) => return usage(&format!("unexpected argument {other}")),
        }
    }
    let Some(upstream) = upstream else {
        return usage("--upstream HOST:PORT is required");
    };
    let proxy = match FaultProxy::start_on(&listen, &upstream, Faults::mixed(rate, seed)) {
        Ok(proxy) => proxy,
        Err(e) => {
            eprintln!("s3mover-fault-proxy: cannot listen on {listen}: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", proxy.endpoint());
    let _ = out.flush();
    drop(out);
    s3mover_testkit::wait_for_termination();
    drop(proxy);
    std::process::ExitCode::SUCCESS
}

fn usage(problem: &str) -> std::process::ExitCode {
    eprintln!("s3mover-fault-proxy: {problem}\nusage: s3mover-fault-proxy --upstream HOST:PORT [--listen ADDR:PORT] [--rate R] [--seed S]");
    std::process::ExitCode::from(2)
}
