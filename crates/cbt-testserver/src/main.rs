//! `cbt-testserver`: runs the conformance test server until killed, for trying `s3mover cbt`
//! by hand or from scripts. Prints one JSON line with the address, CA file and socket.
//!
//! Example: `cbt-testserver --snapshot default/snap-1=handle-1=/tmp/a.img --token t`
//! then `s3mover cbt list --address ADDR --ca-cert CA --token t -n default -s snap-1`.

use clap::Parser;
use s3mover_cbt_testserver::{Quirks, TestServer};

#[derive(Parser, Debug)]
#[command(about = "SnapshotMetadata conformance test server (TLS + unix socket)")]
struct Args {
    /// NAMESPACE/NAME=HANDLE=IMAGE_PATH; repeatable
    #[arg(long = "snapshot", value_name = "NS/NAME=HANDLE=PATH")]
    snapshots: Vec<String>,
    /// Token accepted for the audience in the snapshots' namespaces; repeatable
    #[arg(long = "token")]
    tokens: Vec<String>,
    /// Driver preset: hostpath, ceph or vsphere
    #[arg(long, default_value = "hostpath")]
    driver: String,
    /// Abort every call after N messages
    #[arg(long)]
    abort_every: Option<u32>,
    /// TCP bind address
    #[arg(long, default_value = "127.0.0.1:0")]
    bind: String,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let mut quirks = match args.driver.as_str() {
        "hostpath" => Quirks::hostpath(),
        "ceph" => Quirks::ceph(),
        "vsphere" => Quirks::vsphere(),
        other => {
            return Err(format!("unknown --driver {other:?}: hostpath, ceph or vsphere").into())
        }
    };
    quirks.abort_every = args.abort_every;
    let server = TestServer::start_on(&args.bind, quirks)?;
    let mut namespaces = Vec::new();
    for spec in &args.snapshots {
        let bad = || format!("--snapshot {spec:?} must be NAMESPACE/NAME=HANDLE=PATH");
        let (name_part, rest) = spec.split_once('=').ok_or_else(bad)?;
        let (handle, path) = rest.split_once('=').ok_or_else(bad)?;
        let (ns, name) = name_part.split_once('/').ok_or_else(bad)?;
        server.add_snapshot(ns, name, handle, std::path::Path::new(path));
        namespaces.push(ns.to_string());
    }
    let ns: Vec<&str> = namespaces.iter().map(String::as_str).collect();
    for t in &args.tokens {
        server.grant(t, &ns);
    }
    println!(
        "{{\"address\":\"{}\",\"caCert\":\"{}\",\"socket\":\"{}\"}}",
        server.address(),
        server.ca_file().display(),
        server.socket().display()
    );
    loop {
        std::thread::park();
    }
}
