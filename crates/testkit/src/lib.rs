//! Test support for s3mover's integration tests and benchmarks: a real Garage S3 server on
//! loopback ([`garage`]) and a fault-injecting, request-counting HTTP proxy to put in front of
//! it ([`proxy`]). No S3 behaviour is mocked: every request ends at a real Garage.

pub mod garage;
pub mod proxy;

pub use garage::{find_garage, free_port, garage_or_skip, Garage, GarageError};
pub use proxy::{FaultKind, FaultProxy, Faults, RequestCounts};
