//! Starts a throwaway single-node Garage for scripts (benchmarks, manual tests): prints the
//! `AWS_*` settings and the bucket as `KEY=VALUE` lines on stdout, then serves until SIGTERM or
//! SIGINT, when it stops Garage and removes its data.
//!
//! Usage: `s3mover-test-garage > garage.env &` then `set -a; . garage.env; set +a`.

use std::io::Write;

fn main() -> std::process::ExitCode {
    let garage = match s3mover_testkit::Garage::start() {
        Ok(garage) => garage,
        Err(e) => {
            eprintln!("s3mover-test-garage: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let mut out = std::io::stdout().lock();
    let mut lines: Vec<(String, String)> = garage.env();
    lines.push(("S3_BUCKET".into(), garage.bucket().into()));
    lines.push(("GARAGE_PORT".into(), garage.port().to_string()));
    for (key, value) in lines {
        let _ = writeln!(out, "{key}={value}");
    }
    let _ = out.flush();
    drop(out);
    s3mover_testkit::wait_for_termination();
    drop(garage);
    std::process::ExitCode::SUCCESS
}
