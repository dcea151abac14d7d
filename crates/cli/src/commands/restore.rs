//! `s3mover restore`: restore a backup to a device or file, or to standard output when it is
//! redirected to one.

use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::Result;
use s3mover_engine::restore::{self, RestoreOptions};
use s3mover_engine::Error as EngineError;

use crate::cli::{GlobalArgs, OutputFormat, RestoreArgs, EXIT_OK};
use crate::output::{human_bytes, shown};

/// Where standard output's open file can be opened again by path.
const STDOUT_PATH: &str = "/proc/self/fd/1";

pub async fn run(global: &GlobalArgs, args: &RestoreArgs) -> Result<u8> {
    let to_stdout = names_stdout(&args.target);
    let target = if to_stdout {
        stdout_target()?
    } else {
        args.target.clone()
    };
    let repo = super::open_repository(global, &args.store).await?;
    let manifest = repo
        .resolve_backup(&args.backup, args.volume.as_deref())
        .await?;
    let options = RestoreOptions {
        target,
        assume_zeroed: args.assume_zeroed,
        overwrite: args.overwrite,
        concurrency: args.concurrency,
        force: args.force,
        progress: crate::output::progress_bar(
            "restore",
            global.quiet,
            global.output == OutputFormat::Json,
        ),
    };
    let mut report = restore::restore(&repo, &manifest, options).await?;
    // The image is on standard output: everything else goes to standard error.
    let mut out: Box<dyn Write> = if to_stdout {
        report.target = "standard output".into();
        Box::new(std::io::stderr())
    } else {
        Box::new(std::io::stdout())
    };
    if global.output == OutputFormat::Json {
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
        crate::output::write_result(&serde_json::to_value(&report)?);
    } else if !global.quiet {
        writeln!(
            out,
            "restored backup {} of volume {} to {}: {} in {:.1}s ({:.0} MiB/s), {} of data, {} zero",
            report.id,
            shown(&report.volume),
            report.target,
            human_bytes(report.size_bytes),
            report.seconds,
            report.throughput_bytes_per_second / (1 << 20) as f64,
            human_bytes(report.bytes_written),
            human_bytes(report.zero_bytes)
        )?;
        writeln!(
            out,
            "  every chunk's hash checked; backup digest {}",
            report.digest
        )?;
    }
    Ok(EXIT_OK)
}

/// True when `target` is `-` or names the file standard output is open on (`/dev/stdout`,
/// `/proc/self/fd/1`, or the very file it was redirected to).
fn names_stdout(target: &Path) -> bool {
    if target.as_os_str() == "-" {
        return true;
    }
    match (std::fs::metadata(target), std::fs::metadata(STDOUT_PATH)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// The path to restore to when the target is standard output: a regular file or a block
/// device can be written at any offset through it; a pipe, terminal or socket cannot, and is
/// refused before anything is read.
fn stdout_target() -> Result<PathBuf> {
    let meta = std::fs::metadata(STDOUT_PATH)
        .map_err(|e| EngineError::Invalid(format!("cannot restore to standard output: {e}")))?;
    let kind = meta.file_type();
    if kind.is_file() || kind.is_block_device() {
        return Ok(PathBuf::from(STDOUT_PATH));
    }
    let what = if kind.is_fifo() {
        "a pipe"
    } else if kind.is_char_device() {
        "a terminal or character device"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "not a file"
    };
    Err(EngineError::Invalid(format!(
        "standard output is {what}; restore writes out of order and needs a file or block device: redirect it to a file (--target - > disk.img) or give --target FILE"
    ))
    .into())
}
