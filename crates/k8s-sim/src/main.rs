//! `s3mover-k8s-sim`: runs the simulated Kubernetes cluster until interrupted, and writes a
//! kubeconfig for it, so `kubectl` and `s3mover k8s ...` can be pointed at it by hand.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use s3mover_k8s_sim::{DriverOptions, SimCluster, SimOptions};

/// Runs a simulated Kubernetes cluster on loopback.
#[derive(Parser, Debug)]
#[command(name = "s3mover-k8s-sim", version)]
struct Args {
    /// Directory for the cluster's files (volume images); a temporary one if not given.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Address to listen on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Where to write the admin kubeconfig.
    #[arg(long, default_value = "sim-kubeconfig")]
    kubeconfig: PathBuf,
    /// The kubeconfig context's namespace.
    #[arg(long, short = 'n', default_value = "default")]
    namespace: String,
    /// CSI drivers, `NAME` (with CBT) or `NAME:nocbt`; repeatable.
    #[arg(long = "driver")]
    drivers: Vec<String>,
    /// Serve the API only: no controllers or kubelet.
    #[arg(long)]
    api_only: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let (state_dir, _temp) = match args.state_dir {
        Some(d) => {
            std::fs::create_dir_all(&d).with_context(|| format!("{}", d.display()))?;
            (d, None)
        }
        None => {
            let t = tempfile::tempdir().context("making a state directory")?;
            (t.path().to_path_buf(), Some(t))
        }
    };
    let mut opts = SimOptions::new(state_dir);
    opts.listen = args.listen;
    opts.run_controllers = !args.api_only;
    if !args.drivers.is_empty() {
        opts.drivers = args
            .drivers
            .iter()
            .map(|d| match d.split_once(':') {
                Some((name, "nocbt")) => Ok(DriverOptions {
                    name: name.into(),
                    cbt: false,
                }),
                Some((_, other)) => {
                    anyhow::bail!("--driver {d}: unknown flag {other:?} (only \"nocbt\")")
                }
                None => Ok(DriverOptions {
                    name: d.clone(),
                    cbt: true,
                }),
            })
            .collect::<anyhow::Result<_>>()?;
    }
    let cluster = SimCluster::start(opts)
        .await
        .context("starting the cluster")?;
    cluster.write_kubeconfig(&args.kubeconfig, &args.namespace)?;
    println!("API server: {}", cluster.url());
    println!("kubeconfig: {}", args.kubeconfig.display());
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    cluster.shutdown().await;
    Ok(())
}
