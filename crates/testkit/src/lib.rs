//! Test support for s3mover's integration tests and benchmarks: a real Garage S3 server on
//! loopback ([`garage`]) and a fault-injecting, request-counting HTTP proxy to put in front of
//! it ([`proxy`]). No S3 behaviour is mocked: every request ends at a real Garage. Also a
//! loop-mounted reflink filesystem ([`reflink`]) for copy-on-write storage.

pub mod garage;
pub mod proxy;
pub mod reflink;

pub use garage::{find_garage, free_port, garage_or_skip, Garage, GarageError};
pub use proxy::{FailRule, FaultKind, FaultProxy, Faults, RequestCounts, StallPoint, StallRule};
pub use reflink::{reflink_or_skip, ReflinkError, ReflinkFs};

/// Blocks until the process gets SIGTERM or SIGINT (for the script-facing binaries, which
/// must stop Garage and the proxy cleanly rather than die with them running).
pub fn wait_for_termination() {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    runtime.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    });
}
