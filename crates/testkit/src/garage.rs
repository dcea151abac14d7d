//! A real Garage S3 server for tests: one single-node instance per test on free loopback ports,
//! in its own temporary directory, stopped when the handle is dropped.
//!
//! The recipe is the architecture page's §5: a config with sqlite metadata and
//! `replication_factor = 1`, then `garage server --single-node --default-bucket` with the
//! `GARAGE_DEFAULT_*` variables, so no setup calls are needed. Garage creates the key and the
//! bucket before its S3 port listens, so the port answering means the server is ready.
//!
//! Garage's own defaults are kept, including `compression_level = 1` (it zstd-compresses every
//! block it stores). `GARAGE_COMPRESSION_LEVEL` overrides that (`none`, or a zstd level), for
//! benchmarks that want to see how much of a run's time the server's compression took.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The region the test Garage is configured with.
pub const REGION: &str = "garage";

/// Why a Garage server could not be started.
#[derive(Debug, thiserror::Error)]
pub enum GarageError {
    /// No `garage` binary was found.
    #[error("garage binary not found (looked at $GARAGE_BIN, PATH and ~/.cargo/bin); install it with .ci/install-garage.sh (cargo install garage --locked)")]
    NotInstalled,
    /// Something else went wrong.
    #[error("{0}")]
    Failed(String),
}

/// A running single-node Garage server.
pub struct Garage {
    child: Child,
    dir: tempfile::TempDir,
    s3_port: u16,
    bucket: String,
    access_key: String,
    secret_key: String,
}

impl std::fmt::Debug for Garage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Garage")
            .field("endpoint", &self.endpoint())
            .field("bucket", &self.bucket)
            .finish_non_exhaustive()
    }
}

/// The `garage` binary: `$GARAGE_BIN`, then `PATH`, then `~/.cargo/bin/garage`.
pub fn find_garage() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("GARAGE_BIN") {
        let bin = PathBuf::from(bin);
        if bin.is_file() {
            return Some(bin);
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("garage");
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    let home = std::env::var_os("HOME")?;
    let candidate = Path::new(&home).join(".cargo/bin/garage");
    candidate.is_file().then_some(candidate)
}

/// Starts a Garage for a test, or decides the test cannot run here.
///
/// When Garage is not installed: with `CI=true` this panics (CI must run the S3 tests);
/// elsewhere it prints `SKIPPED: <reason>` to stderr and returns `None`, and the test returns.
/// Any other failure to start panics with Garage's log.
pub fn garage_or_skip(test: &str) -> Option<Garage> {
    match Garage::start() {
        Ok(garage) => Some(garage),
        Err(GarageError::NotInstalled) if !in_ci() => {
            eprintln!("SKIPPED: {test}: {}", GarageError::NotInstalled);
            None
        }
        Err(e) => panic!("{test}: cannot start Garage: {e}"),
    }
}

pub(crate) fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Two different ports that were free a moment ago: both listeners are held while the second
/// is picked, so the kernel cannot hand out the same port twice (the S3 API would then fail to
/// bind while the RPC listener on that port answered the readiness probe).
fn two_free_ports() -> std::io::Result<(u16, u16)> {
    let first = TcpListener::bind("127.0.0.1:0")?;
    let second = TcpListener::bind("127.0.0.1:0")?;
    Ok((first.local_addr()?.port(), second.local_addr()?.port()))
}

fn random_hex(bytes: usize) -> String {
    use rand::RngCore;
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

impl Garage {
    /// Starts a fresh server with one bucket (`s3mover-test`) and one key allowed on it.
    pub fn start() -> Result<Garage, GarageError> {
        let binary = find_garage().ok_or(GarageError::NotInstalled)?;
        let mut last_error = String::new();
        // Ports are picked free but may be taken before Garage binds them: try a few times.
        for _ in 0..3 {
            match Self::start_once(&binary) {
                Ok(garage) => return Ok(garage),
                Err(e) => last_error = e,
            }
        }
        Err(GarageError::Failed(last_error))
    }

    fn start_once(binary: &Path) -> Result<Garage, String> {
        let dir = tempfile::Builder::new()
            .prefix("s3mover-garage-")
            .tempdir()
            .map_err(|e| format!("cannot create a temp dir: {e}"))?;
        let (s3_port, rpc_port) = two_free_ports().map_err(|e| format!("no free port: {e}"))?;
        let root = dir.path();
        let compression = match std::env::var("GARAGE_COMPRESSION_LEVEL") {
            Ok(level) if level == "none" => "compression_level = \"none\"\n".to_string(),
            Ok(level) if level.parse::<i32>().is_ok() => format!("compression_level = {level}\n"),
            Ok(other) => {
                return Err(format!(
                    "GARAGE_COMPRESSION_LEVEL={other:?} is neither `none` nor a zstd level"
                ))
            }
            Err(_) => String::new(),
        };
        let config = format!(
            r#"metadata_dir = "{meta}"
data_dir = "{data}"
db_engine = "sqlite"
replication_factor = 1
{compression}rpc_bind_addr = "127.0.0.1:{rpc_port}"
rpc_public_addr = "127.0.0.1:{rpc_port}"
rpc_secret = "{secret}"

[s3_api]
s3_region = "{REGION}"
api_bind_addr = "127.0.0.1:{s3_port}"
root_domain = ".s3.garage.localhost"
"#,
            meta = root.join("meta").display(),
            data = root.join("data").display(),
            secret = random_hex(32),
        );
        let config_path = root.join("garage.toml");
        std::fs::write(&config_path, config).map_err(|e| format!("cannot write config: {e}"))?;
        let log_path = root.join("garage.log");
        let log =
            std::fs::File::create(&log_path).map_err(|e| format!("cannot create log: {e}"))?;
        let log_err = log
            .try_clone()
            .map_err(|e| format!("cannot create log: {e}"))?;

        let bucket = "s3mover-test".to_string();
        let access_key = format!("GK{}", random_hex(12));
        let secret_key = random_hex(32);
        let child = Command::new(binary)
            .arg("-c")
            .arg(&config_path)
            .args(["server", "--single-node", "--default-bucket"])
            .env("GARAGE_DEFAULT_ACCESS_KEY", &access_key)
            .env("GARAGE_DEFAULT_SECRET_KEY", &secret_key)
            .env("GARAGE_DEFAULT_BUCKET", &bucket)
            .env("RUST_LOG", "garage=warn")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
        let mut garage = Garage {
            child,
            dir,
            s3_port,
            bucket,
            access_key,
            secret_key,
        };
        garage.wait_ready(Duration::from_secs(30))?;
        Ok(garage)
    }

    fn wait_ready(&mut self, limit: Duration) -> Result<(), String> {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "garage exited with {status} before it was ready; log:\n{}",
                    self.log_tail()
                ));
            }
            if self.log_tail().contains("S3 API server exited with error") {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return Err(format!(
                    "garage's S3 API did not start; log:\n{}",
                    self.log_tail()
                ));
            }
            if TcpStream::connect(("127.0.0.1", self.s3_port)).is_ok() {
                return Ok(());
            }
            if start.elapsed() > limit {
                return Err(format!(
                    "garage did not listen on port {} within {limit:?}; log:\n{}",
                    self.s3_port,
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last lines Garage logged.
    pub fn log_tail(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = std::fs::File::open(self.dir.path().join("garage.log")) {
            let _ = file.read_to_string(&mut text);
        }
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    /// The S3 API port.
    pub fn port(&self) -> u16 {
        self.s3_port
    }

    /// The bucket the server was started with.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The access key id allowed on the bucket.
    pub fn access_key(&self) -> &str {
        &self.access_key
    }

    /// The secret key of [`Self::access_key`].
    pub fn secret_key(&self) -> &str {
        &self.secret_key
    }

    /// The region Garage answers for.
    pub fn region(&self) -> &str {
        REGION
    }

    /// The environment an S3 client needs to reach this server directly: endpoint, region
    /// and keys, as `AWS_*` variables.
    pub fn env(&self) -> Vec<(String, String)> {
        self.env_for_endpoint(&self.endpoint())
    }

    /// Like [`Self::env`], with another endpoint (e.g. a proxy in front of this server).
    pub fn env_for_endpoint(&self, endpoint: &str) -> Vec<(String, String)> {
        vec![
            ("AWS_ENDPOINT_URL".into(), endpoint.to_string()),
            ("AWS_REGION".into(), REGION.into()),
            ("AWS_ACCESS_KEY_ID".into(), self.access_key.clone()),
            ("AWS_SECRET_ACCESS_KEY".into(), self.secret_key.clone()),
        ]
    }

    /// The temporary directory the server keeps its data in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// How many multipart uploads in the bucket were created and neither completed nor
    /// aborted (parts a real S3 would keep billing for), from `garage bucket info`.
    pub fn unfinished_multipart_uploads(&self) -> Result<u64, GarageError> {
        let binary = find_garage().ok_or(GarageError::NotInstalled)?;
        let output = Command::new(binary)
            .arg("-c")
            .arg(self.dir.path().join("garage.toml"))
            .args(["bucket", "info", &self.bucket])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| GarageError::Failed(format!("cannot run garage bucket info: {e}")))?;
        if !output.status.success() {
            return Err(GarageError::Failed(format!(
                "garage bucket info failed with {}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        parse_unfinished_multipart(&String::from_utf8_lossy(&output.stdout))
    }
}

/// The count in `garage bucket info`'s `Unfinished uploads: N multipart uploads` line; Garage
/// leaves the line out when there are none. Anything else on that line is an error, so a
/// changed output format fails loudly instead of reading as zero.
fn parse_unfinished_multipart(info: &str) -> Result<u64, GarageError> {
    if !info.contains("BUCKET INFORMATION") {
        return Err(GarageError::Failed(format!(
            "garage bucket info printed something unexpected: {}",
            info.lines().next().unwrap_or("")
        )));
    }
    let Some(line) = info
        .lines()
        .find(|l| l.trim_start().starts_with("Unfinished uploads:"))
    else {
        return Ok(0);
    };
    let rest = line.trim_start()["Unfinished uploads:".len()..].trim();
    rest.strip_suffix("multipart uploads")
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| {
            GarageError::Failed(format!(
                "cannot read the multipart upload count in garage bucket info's line {line:?}"
            ))
        })
}

impl Drop for Garage {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_unfinished_upload_count() {
        let none = "==== BUCKET INFORMATION ====\nBucket: e1\nObjects: 0\n";
        assert_eq!(parse_unfinished_multipart(none).ok(), Some(0));
        let two = "==== BUCKET INFORMATION ====\nObjects: 0\nUnfinished uploads:          2 multipart uploads\n                               3 including regular uploads\n";
        assert_eq!(parse_unfinished_multipart(two).ok(), Some(2));
        let odd = "==== BUCKET INFORMATION ====\nUnfinished uploads: many\n";
        assert!(parse_unfinished_multipart(odd).is_err());
        assert!(parse_unfinished_multipart("error").is_err());
    }
}
